//! The Swagger 2.0 document served at `/openapi/v2`, as JSON and as gnostic's `openapi.v2.Document`
//! protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, what kubectl asks for).
//!
//! kubectl up to 1.28 reads this document for `apply` (strategic-merge metadata and the GVK of each
//! kind, found through `x-kubernetes-group-version-kind`), `explain` with `--output
//! plaintext-openapiv2`, and its query-parameter checks (`fieldValidation` listed on a PATCH).
//!
//! It is not a second description of the API: [`document_from_v3`] converts whatever OpenAPI v3
//! documents it is given (the per-group-version documents of [`crate::openapi`], so it follows the
//! resource table or a registry that replaces it) into one Swagger 2.0 document, as upstream's
//! single v2 document covers every group-version:
//!
//! - `#/components/schemas/X` refs become `#/definitions/X`; a `$ref` wrapped in a one-element
//!   `allOf` (v3's way of giving a ref a description) becomes a bare `$ref` beside its siblings,
//!   as upstream's v2 writes it; `nullable` and `oneOf`/`anyOf` (which Swagger 2.0 lacks) are dropped.
//! - Upstream's strategic-merge extensions (`x-kubernetes-patch-strategy`,
//!   `x-kubernetes-patch-merge-key`) are put on the fields [`crate::patchmeta::PATCH_META`] lists.
//! - Operations keep their `operationId`, tags, `x-kubernetes-action` and GVK; a v3 `requestBody`
//!   becomes the `body` parameter, query and path parameters carry their type inline, responses
//!   their schema, and `consumes`/`produces` list the media types.
//!
//! [`to_protobuf`] encodes the JSON form with the hand-written prost messages of [`proto`] (the
//! subset of gnostic's `OpenAPIv2.proto` this document uses; oneof members are written as the plain
//! optional fields they are on the wire). Extension values, defaults and enums are gnostic `Any`s
//! holding YAML text; JSON text is valid YAML, so that is what they hold.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::openapi;
use crate::resources;
use crate::schema::REF_PREFIX;

/// Where definitions live in a Swagger 2.0 document.
pub const DEFINITIONS_PREFIX: &str = "#/definitions/";

/// The protobuf media type kubectl asks for.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// Its other spelling, which is also what a response's Content-Type says: `@` is not a valid
/// media-type character, and client-go parses every Content-Type.
pub const PROTOBUF_MEDIA_TYPE_OLD: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One strategic-merge annotation: (definition, field, strategy, merge key).
pub type PatchMetaEntry = (&'static str, &'static str, &'static str, Option<&'static str>);

/// The served document in both encodings, built once from the resource table.
pub struct Served {
    pub json: Vec<u8>,
    pub protobuf: Vec<u8>,
}

/// `/openapi/v2` for the resource table: the v3 documents of every served group-version, converted.
pub fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let v3: Vec<Value> =
            resources::group_versions().into_iter().filter_map(|(g, v)| openapi::v3_document(g, v)).collect();
        let doc = document_from_v3(&v3, crate::patchmeta::PATCH_META);
        // Serializing a Value cannot fail (its keys are strings).
        let json = serde_json::to_vec(&doc).unwrap_or_default();
        let protobuf = to_protobuf(&doc);
        Served { json, protobuf }
    })
}

/// One Swagger 2.0 document from OpenAPI v3 documents (one per group-version, as
/// [`crate::openapi::v3_document`] builds them), with the strategic-merge annotations `patch_meta`.
pub fn document_from_v3(v3_documents: &[Value], patch_meta: &[PatchMetaEntry]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for doc in v3_documents {
        if let Some(p) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in p {
                paths.insert(path.clone(), path_item(item));
            }
        }
        if let Some(s) = doc.pointer("/components/schemas").and_then(Value::as_object) {
            for (name, def) in s {
                if !definitions.contains_key(name) {
                    definitions.insert(name.clone(), schema(def));
                }
            }
        }
    }
    for (def, field, strategy, key) in patch_meta {
        let Some(Value::Object(prop)) =
            definitions.get_mut(*def).and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
        else {
            continue;
        };
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if let Some(key) = key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// A v3 schema as Swagger 2.0 writes it (see the module docs).
fn schema(s: &Value) -> Value {
    let Value::Object(map) = s else { return s.clone() };
    let mut out = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "$ref" => {
                if let Some(r) = v.as_str() {
                    out.insert(k.clone(), json!(v2_ref(r)));
                }
            }
            "allOf" => match v.as_array().map(Vec::as_slice) {
                Some([only]) if only.get("$ref").is_some() => {
                    if let Some(r) = only["$ref"].as_str() {
                        out.insert("$ref".into(), json!(v2_ref(r)));
                    }
                }
                Some(all) => {
                    out.insert(k.clone(), Value::Array(all.iter().map(schema).collect()));
                }
                None => {}
            },
            "nullable" | "oneOf" | "anyOf" | "not" => {}
            "type" => {
                // OpenAPI 3.1-style type lists: Swagger 2.0 and kubectl take one type.
                let t = match v {
                    Value::Array(ts) => ts.iter().find(|t| *t != "null").cloned(),
                    other => Some(other.clone()),
                };
                if let Some(t) = t {
                    out.insert(k.clone(), t);
                }
            }
            "properties" => {
                if let Some(props) = v.as_object() {
                    let props: Map<String, Value> = props.iter().map(|(n, p)| (n.clone(), schema(p))).collect();
                    out.insert(k.clone(), Value::Object(props));
                }
            }
            "items" | "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), schema(v));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn v2_ref(r: &str) -> String {
    match r.strip_prefix(REF_PREFIX) {
        Some(name) => format!("{DEFINITIONS_PREFIX}{name}"),
        None => r.to_string(),
    }
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    if let Some(params) = item.get("parameters").and_then(Value::as_array) {
        out.insert("parameters".into(), Value::Array(params.iter().map(parameter).collect()));
    }
    for m in METHODS {
        if let Some(op) = item.get(m) {
            out.insert(m.into(), operation(op));
        }
    }
    Value::Object(out)
}

/// A query or path parameter: v3's `schema` folded into the parameter.
fn parameter(p: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required"] {
        if let Some(v) = p.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Object(s)) = p.get("schema") {
        for (k, v) in s {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn media_types(content: Option<&Value>) -> Vec<String> {
    content.and_then(Value::as_object).map(|c| c.keys().cloned().collect()).unwrap_or_default()
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    for key in ["tags", "description", "operationId"] {
        if let Some(v) = op.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut params = Vec::new();
    let mut consumes = Vec::new();
    if let Some(body) = op.get("requestBody") {
        consumes = media_types(body.get("content"));
        let s = body
            .get("content")
            .and_then(Value::as_object)
            .and_then(|c| c.values().next())
            .map(|m| &m["schema"]);
        params.push(json!({
            "name": "body",
            "in": "body",
            "required": body.get("required").cloned().unwrap_or(json!(true)),
            "schema": s.map(schema).unwrap_or_else(|| json!({})),
        }));
    }
    if let Some(ps) = op.get("parameters").and_then(Value::as_array) {
        params.extend(ps.iter().map(parameter));
    }
    let mut produces: Vec<String> = Vec::new();
    let mut responses = Map::new();
    if let Some(rs) = op.get("responses").and_then(Value::as_object) {
        for (code, r) in rs {
            let mut resp = Map::new();
            resp.insert("description".into(), r.get("description").cloned().unwrap_or(json!("")));
            for mt in media_types(r.get("content")) {
                if !produces.contains(&mt) {
                    produces.push(mt);
                }
            }
            let s = r.get("content").and_then(Value::as_object).and_then(|c| c.values().next());
            if let Some(s) = s.and_then(|m| m.get("schema")) {
                resp.insert("schema".into(), schema(s));
            }
            responses.insert(code.clone(), Value::Object(resp));
        }
    }
    if !consumes.is_empty() {
        out.insert("consumes".into(), json!(consumes));
    }
    if !produces.is_empty() {
        out.insert("produces".into(), json!(produces));
    }
    out.insert("schemes".into(), json!(["https"]));
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    out.insert("responses".into(), Value::Object(responses));
    if let Some(ops) = op.as_object() {
        for (k, v) in ops.iter().filter(|(k, _)| k.starts_with("x-")) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The subset of gnostic's `openapi.v2` messages (OpenAPIv2.proto) this document needs, with
/// gnostic's field numbers. A `oneof` is written as its members' optional fields: the wire format
/// is the same, and at most one is ever set.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(string, repeated, tag = "6")]
        pub consumes: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub produces: Vec<String>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
        #[prost(message, repeated, tag = "12")]
        pub security: Vec<SecurityRequirement>,
        #[prost(message, optional, tag = "13")]
        pub security_definitions: Option<SecurityDefinitions>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(message, optional, tag = "2")]
        pub get: Option<Operation>,
        #[prost(message, optional, tag = "3")]
        pub put: Option<Operation>,
        #[prost(message, optional, tag = "4")]
        pub post: Option<Operation>,
        #[prost(message, optional, tag = "5")]
        pub delete: Option<Operation>,
        #[prost(message, optional, tag = "6")]
        pub options: Option<Operation>,
        #[prost(message, optional, tag = "7")]
        pub head: Option<Operation>,
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
        #[prost(message, repeated, tag = "9")]
        pub parameters: Vec<ParametersItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, repeated, tag = "1")]
        pub tags: Vec<String>,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "5")]
        pub operation_id: String,
        #[prost(string, repeated, tag = "6")]
        pub produces: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub consumes: Vec<String>,
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, optional, tag = "9")]
        pub responses: Option<Responses>,
        #[prost(string, repeated, tag = "10")]
        pub schemes: Vec<String>,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// oneof { Parameter parameter = 1; JsonReference json_reference = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(message, optional, tag = "1")]
        pub parameter: Option<Parameter>,
    }

    /// oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(message, optional, tag = "1")]
        pub body_parameter: Option<BodyParameter>,
        #[prost(message, optional, tag = "2")]
        pub non_body_parameter: Option<NonBodyParameter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BodyParameter {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub r#in: String,
        #[prost(bool, tag = "4")]
        pub required: bool,
        #[prost(message, optional, tag = "5")]
        pub schema: Option<Schema>,
    }

    /// oneof { header = 1; form_data = 2; QueryParameterSubSchema query = 3; PathParameterSubSchema path = 4; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(message, optional, tag = "3")]
        pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
        #[prost(message, optional, tag = "4")]
        pub path_parameter_sub_schema: Option<PathParameterSubSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "6")]
        pub r#type: String,
        #[prost(bool, tag = "20")]
        pub unique_items: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub r#type: String,
        #[prost(bool, tag = "19")]
        pub unique_items: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Responses {
        #[prost(message, repeated, tag = "1")]
        pub response_code: Vec<NamedResponseValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedResponseValue {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<ResponseValue>,
    }

    /// oneof { Response response = 1; JsonReference json_reference = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseValue {
        #[prost(message, optional, tag = "1")]
        pub response: Option<Response>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(message, optional, tag = "2")]
        pub schema: Option<SchemaItem>,
    }

    /// oneof { Schema schema = 1; FileSchema file_schema = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchemaItem {
        #[prost(message, optional, tag = "1")]
        pub schema: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "3")]
        pub title: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(message, optional, tag = "5")]
        pub default: Option<Any>,
        #[prost(double, tag = "6")]
        pub multiple_of: f64,
        #[prost(double, tag = "7")]
        pub maximum: f64,
        #[prost(bool, tag = "8")]
        pub exclusive_maximum: bool,
        #[prost(double, tag = "9")]
        pub minimum: f64,
        #[prost(bool, tag = "10")]
        pub exclusive_minimum: bool,
        #[prost(int64, tag = "11")]
        pub max_length: i64,
        #[prost(int64, tag = "12")]
        pub min_length: i64,
        #[prost(string, tag = "13")]
        pub pattern: String,
        #[prost(int64, tag = "14")]
        pub max_items: i64,
        #[prost(int64, tag = "15")]
        pub min_items: i64,
        #[prost(bool, tag = "16")]
        pub unique_items: bool,
        #[prost(int64, tag = "17")]
        pub max_properties: i64,
        #[prost(int64, tag = "18")]
        pub min_properties: i64,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, repeated, tag = "20")]
        pub r#enum: Vec<Any>,
        #[prost(message, optional, boxed, tag = "21")]
        pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, repeated, tag = "24")]
        pub all_of: Vec<Schema>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(bool, tag = "27")]
        pub read_only: bool,
        #[prost(message, optional, tag = "30")]
        pub example: Option<Any>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// oneof { Schema schema = 1; bool boolean = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(message, optional, tag = "1")]
        pub schema: Option<Schema>,
        #[prost(bool, optional, tag = "2")]
        pub boolean: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    /// gnostic's `Any`: field 1 (a google.protobuf.Any) is never set; `yaml` holds the value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecurityRequirement {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedStringArray>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedStringArray {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<StringArray>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringArray {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecurityDefinitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSecurityDefinitionsItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<SecurityDefinitionsItem>,
    }

    /// oneof { basic = 1; ApiKeySecurity api_key_security = 2; oauth2 … }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecurityDefinitionsItem {
        #[prost(message, optional, tag = "2")]
        pub api_key_security: Option<ApiKeySecurity>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ApiKeySecurity {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub r#in: String,
        #[prost(string, tag = "4")]
        pub description: String,
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn texts(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A value as gnostic's `Any`: its YAML text (JSON is YAML), newline-terminated as gnostic writes it.
fn any(v: &Value) -> proto::Any {
    proto::Any { yaml: format!("{v}\n") }
}

fn extensions(v: &Value) -> Vec<proto::NamedAny> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| proto::NamedAny { name: k.clone(), value: Some(any(v)) })
        .collect()
}

/// The JSON document (as [`document_from_v3`] builds it) as a gnostic `openapi.v2.Document`.
pub fn to_protobuf(doc: &Value) -> Vec<u8> {
    use prost::Message;
    document_message(doc).encode_to_vec()
}

/// The message [`to_protobuf`] encodes.
pub fn document_message(doc: &Value) -> proto::Document {
    let info = doc.get("info").map(|i| proto::Info { title: text(i, "title"), version: text(i, "version") });
    let paths = doc.get("paths").and_then(Value::as_object).map(|p| proto::Paths {
        path: p
            .iter()
            .map(|(name, item)| proto::NamedPathItem {
                name: name.clone(),
                value: Some(path_item_message(item)),
            })
            .collect(),
    });
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .map(|d| proto::Definitions { additional_properties: named_schemas(d) });
    let security = doc
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|req| proto::SecurityRequirement {
            additional_properties: req
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, scopes)| proto::NamedStringArray {
                    name: name.clone(),
                    value: Some(proto::StringArray {
                        value: scopes
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect(),
                    }),
                })
                .collect(),
        })
        .collect();
    let security_definitions =
        doc.get("securityDefinitions").and_then(Value::as_object).map(|s| proto::SecurityDefinitions {
            additional_properties: s
                .iter()
                .map(|(name, d)| proto::NamedSecurityDefinitionsItem {
                    name: name.clone(),
                    value: Some(proto::SecurityDefinitionsItem {
                        api_key_security: Some(proto::ApiKeySecurity {
                            r#type: text(d, "type"),
                            name: text(d, "name"),
                            r#in: text(d, "in"),
                            description: text(d, "description"),
                        }),
                    }),
                })
                .collect(),
        });
    proto::Document {
        swagger: text(doc, "swagger"),
        info,
        consumes: texts(doc, "consumes"),
        produces: texts(doc, "produces"),
        paths,
        definitions,
        security,
        security_definitions,
    }
}

fn named_schemas(m: &Map<String, Value>) -> Vec<proto::NamedSchema> {
    m.iter()
        .map(|(name, s)| proto::NamedSchema { name: name.clone(), value: Some(schema_message(s)) })
        .collect()
}

fn schema_message(s: &Value) -> proto::Schema {
    let num = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let int = |k: &str| s.get(k).and_then(Value::as_i64).unwrap_or(0);
    let additional_properties = match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            Some(Box::new(proto::AdditionalPropertiesItem { schema: None, boolean: Some(*b) }))
        }
        Some(v @ Value::Object(_)) => {
            Some(Box::new(proto::AdditionalPropertiesItem { schema: Some(schema_message(v)), boolean: None }))
        }
        _ => None,
    };
    let r#type = match s.get("type") {
        Some(Value::String(t)) => Some(proto::TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(ts)) => {
            Some(proto::TypeItem { value: ts.iter().filter_map(Value::as_str).map(str::to_string).collect() })
        }
        _ => None,
    };
    let items = match s.get("items") {
        Some(v @ Value::Object(_)) => Some(proto::ItemsItem { schema: vec![schema_message(v)] }),
        Some(Value::Array(vs)) => Some(proto::ItemsItem { schema: vs.iter().map(schema_message).collect() }),
        _ => None,
    };
    proto::Schema {
        r#ref: text(s, "$ref"),
        format: text(s, "format"),
        title: text(s, "title"),
        description: text(s, "description"),
        default: s.get("default").map(any),
        multiple_of: num("multipleOf"),
        maximum: num("maximum"),
        exclusive_maximum: flag(s, "exclusiveMaximum"),
        minimum: num("minimum"),
        exclusive_minimum: flag(s, "exclusiveMinimum"),
        max_length: int("maxLength"),
        min_length: int("minLength"),
        pattern: text(s, "pattern"),
        max_items: int("maxItems"),
        min_items: int("minItems"),
        unique_items: flag(s, "uniqueItems"),
        max_properties: int("maxProperties"),
        min_properties: int("minProperties"),
        required: texts(s, "required"),
        r#enum: s.get("enum").and_then(Value::as_array).into_iter().flatten().map(any).collect(),
        additional_properties,
        r#type,
        items,
        all_of: s.get("allOf").and_then(Value::as_array).into_iter().flatten().map(schema_message).collect(),
        properties: s
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| proto::Properties { additional_properties: named_schemas(p) }),
        read_only: flag(s, "readOnly"),
        example: s.get("example").map(any),
        vendor_extension: extensions(s),
    }
}

fn path_item_message(item: &Value) -> proto::PathItem {
    let op = |m: &str| item.get(m).map(operation_message);
    proto::PathItem {
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: parameters_message(item),
    }
}

fn parameters_message(v: &Value) -> Vec<proto::ParametersItem> {
    v.get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let parameter = match p.get("in").and_then(Value::as_str)? {
                "body" => proto::Parameter {
                    body_parameter: Some(proto::BodyParameter {
                        description: text(p, "description"),
                        name: text(p, "name"),
                        r#in: "body".into(),
                        required: flag(p, "required"),
                        schema: p.get("schema").map(schema_message),
                    }),
                    non_body_parameter: None,
                },
                "query" => proto::Parameter {
                    body_parameter: None,
                    non_body_parameter: Some(proto::NonBodyParameter {
                        query_parameter_sub_schema: Some(proto::QueryParameterSubSchema {
                            required: flag(p, "required"),
                            r#in: "query".into(),
                            description: text(p, "description"),
                            name: text(p, "name"),
                            r#type: text(p, "type"),
                            unique_items: flag(p, "uniqueItems"),
                        }),
                        path_parameter_sub_schema: None,
                    }),
                },
                "path" => proto::Parameter {
                    body_parameter: None,
                    non_body_parameter: Some(proto::NonBodyParameter {
                        query_parameter_sub_schema: None,
                        path_parameter_sub_schema: Some(proto::PathParameterSubSchema {
                            required: flag(p, "required"),
                            r#in: "path".into(),
                            description: text(p, "description"),
                            name: text(p, "name"),
                            r#type: text(p, "type"),
                            unique_items: flag(p, "uniqueItems"),
                        }),
                    }),
                },
                // Header and form parameters: none in this API.
                _ => return None,
            };
            Some(proto::ParametersItem { parameter: Some(parameter) })
        })
        .collect()
}

fn operation_message(op: &Value) -> proto::Operation {
    let responses = op.get("responses").and_then(Value::as_object).map(|rs| proto::Responses {
        response_code: rs
            .iter()
            .map(|(code, r)| proto::NamedResponseValue {
                name: code.clone(),
                value: Some(proto::ResponseValue {
                    response: Some(proto::Response {
                        description: text(r, "description"),
                        schema: r.get("schema").map(|s| proto::SchemaItem { schema: Some(schema_message(s)) }),
                    }),
                }),
            })
            .collect(),
    });
    proto::Operation {
        tags: texts(op, "tags"),
        description: text(op, "description"),
        operation_id: text(op, "operationId"),
        produces: texts(op, "produces"),
        consumes: texts(op, "consumes"),
        parameters: parameters_message(op),
        responses,
        schemes: texts(op, "schemes"),
        vendor_extension: extensions(op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::GVK_EXTENSION;
    use prost::Message;

    fn doc() -> Value {
        serde_json::from_slice(&served().json).unwrap()
    }

    /// What kube-openapi's `proto.NewOpenAPIData` (kubectl's reader) rejects: dangling refs, several
    /// types, arrays without exactly one item schema, primitives of an unknown type.
    fn check_parseable(s: &Value, defs: &Map<String, Value>, at: &str) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix(DEFINITIONS_PREFIX).unwrap_or_else(|| panic!("{at}: ref {r}"));
            assert!(defs.contains_key(name), "{at}: unknown model in reference {r}");
            return;
        }
        assert!(s.get("allOf").is_none() && s.get("nullable").is_none(), "{at}: {s}");
        match s.get("type") {
            None => {}
            Some(Value::String(t)) => match t.as_str() {
                "object" => {}
                "array" => {
                    let items = s.get("items").unwrap_or_else(|| panic!("{at}: array without items"));
                    check_parseable(items, defs, &format!("{at}[]"));
                }
                "string" | "number" | "integer" | "boolean" => {}
                other => panic!("{at}: unknown type {other}"),
            },
            Some(other) => panic!("{at}: type {other}"),
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (n, p) in props {
                check_parseable(p, defs, &format!("{at}.{n}"));
            }
        }
        if let Some(a @ Value::Object(_)) = s.get("additionalProperties") {
            check_parseable(a, defs, &format!("{at}{{}}"));
        }
    }

    #[test]
    fn every_definition_parses_as_kubectl_reads_it() {
        let d = doc();
        assert_eq!(d["swagger"], "2.0");
        let defs = d["definitions"].as_object().unwrap();
        for (name, def) in defs {
            check_parseable(def, defs, name);
        }
        let mut refs = Vec::new();
        fn all_refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        out.push(r.to_string());
                    }
                    m.values().for_each(|v| all_refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| all_refs(v, out)),
                _ => {}
            }
        }
        all_refs(&d, &mut refs);
        assert!(refs.len() > 100);
        for r in refs {
            assert!(defs.contains_key(r.trim_start_matches(DEFINITIONS_PREFIX)), "{r}");
        }
    }

    #[test]
    fn kinds_carry_their_gvk_and_pod_containers_their_merge_key() {
        let d = doc();
        let pod = &d["definitions"]["io.k8s.api.core.v1.Pod"];
        assert!(pod[GVK_EXTENSION]
            .as_array()
            .unwrap()
            .contains(&json!({"group": "", "version": "v1", "kind": "Pod"})));
        let metadata = &pod["properties"]["metadata"];
        assert_eq!(metadata["$ref"], "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        assert!(metadata["description"].as_str().unwrap().contains("metadata"));
        let containers = &d["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["items"]["$ref"], "#/definitions/io.k8s.api.core.v1.Container");
        let deploy = &d["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert!(deploy[GVK_EXTENSION].as_array().unwrap().iter().any(|g| g["kind"] == "Deployment"));
    }

    #[test]
    fn paths_have_upstreams_operations_and_inline_parameters() {
        let d = doc();
        let pods = &d["paths"]["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(pods["get"]["operationId"], "listCoreV1NamespacedPod");
        assert_eq!(pods["get"]["x-kubernetes-action"], "list");
        assert_eq!(pods["post"]["operationId"], "createCoreV1NamespacedPod");
        let body = &pods["post"]["parameters"][0];
        assert_eq!((&body["name"], &body["in"]), (&json!("body"), &json!("body")));
        assert_eq!(body["schema"]["$ref"], "#/definitions/io.k8s.api.core.v1.Pod");
        let ns = pods["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "namespace").unwrap();
        assert_eq!((&ns["in"], &ns["type"], &ns["required"]), (&json!("path"), &json!("string"), &json!(true)));
        let item = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(item["patch"]["operationId"], "patchAppsV1NamespacedDeployment");
        let consumes = item["patch"]["consumes"].as_array().unwrap();
        assert!(consumes.contains(&json!("application/strategic-merge-patch+json")));
        let fv = item["patch"]["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation");
        assert!(fv, "kubectl's query-param verifier looks for fieldValidation on PATCH");
        assert_eq!(
            item["get"]["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            d["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"],
            "listAppsV1DeploymentForAllNamespaces"
        );
    }

    #[test]
    fn protobuf_decodes_to_the_same_document() {
        let d = doc();
        let msg = proto::Document::decode(served().protobuf.as_slice()).unwrap();
        assert_eq!(msg, document_message(&d));
        assert_eq!(msg.swagger, "2.0");
        let defs = msg.definitions.unwrap().additional_properties;
        assert_eq!(defs.len(), d["definitions"].as_object().unwrap().len());
        let spec = defs.iter().find(|n| n.name == "io.k8s.api.core.v1.PodSpec").unwrap().value.clone().unwrap();
        let containers = spec
            .properties
            .unwrap()
            .additional_properties
            .into_iter()
            .find(|p| p.name == "containers")
            .unwrap()
            .value
            .unwrap();
        assert_eq!(containers.r#type.unwrap().value, vec!["array".to_string()]);
        let ext: Vec<(String, String)> =
            containers.vendor_extension.into_iter().map(|e| (e.name, e.value.unwrap().yaml)).collect();
        assert!(ext.contains(&("x-kubernetes-patch-merge-key".into(), "\"name\"\n".into())), "{ext:?}");
        assert_eq!(containers.items.unwrap().schema[0].r#ref, "#/definitions/io.k8s.api.core.v1.Container");
        let paths = msg.paths.unwrap().path;
        let pods = paths.iter().find(|p| p.name == "/api/v1/namespaces/{namespace}/pods").unwrap();
        let list = pods.value.as_ref().unwrap().get.as_ref().unwrap();
        assert_eq!(list.operation_id, "listCoreV1NamespacedPod");
        let gvk = list.vendor_extension.iter().find(|e| e.name == GVK_EXTENSION).unwrap();
        let yaml: Value = serde_json::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(yaml, json!({"group": "", "version": "v1", "kind": "Pod"}));
    }

    #[test]
    fn conversion_handles_wrapped_refs_type_lists_and_free_form_maps() {
        let v3 = json!({
            "paths": {},
            "components": {"schemas": {"a.B": {
                "type": "object",
                "properties": {
                    "m": {"description": "d", "allOf": [{"$ref": "#/components/schemas/a.C"}]},
                    "n": {"type": ["string", "null"], "nullable": true},
                    "o": {"type": "object", "additionalProperties": true},
                    "p": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/a.C"}},
                },
            }, "a.C": {"type": "string"}}},
        });
        let d = document_from_v3(&[v3], &[("a.B", "m", "merge", Some("k"))]);
        let b = &d["definitions"]["a.B"]["properties"];
        assert_eq!(
            b["m"],
            json!({"description": "d", "$ref": "#/definitions/a.C",
                   "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "k"})
        );
        assert_eq!(b["n"], json!({"type": "string"}));
        assert_eq!(b["o"]["additionalProperties"], true);
        assert_eq!(b["p"]["additionalProperties"]["$ref"], "#/definitions/a.C");
        let msg = document_message(&d);
        let bytes = to_protobuf(&d);
        assert_eq!(proto::Document::decode(bytes.as_slice()).unwrap(), msg);
    }
}
