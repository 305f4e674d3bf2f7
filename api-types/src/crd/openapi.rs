//! OpenAPI for custom resources: each served version's definitions (the kind and its list, named
//! as upstream names them: `<reversed group>.<version>.<Kind>`), and the OpenAPI v3 document of a
//! CRD group-version, which is what `kubectl explain` (1.32) reads: the GVK on the operations, then
//! the schema whose `x-kubernetes-group-version-kind` has it.
//!
//! [`definitions`] is the schema source for any OpenAPI form (v3 here; v2 can reuse it, with
//! `#/definitions/` refs).

use serde_json::{json, Map, Value};

use super::CustomResource;
use crate::schema::{self, GVK_EXTENSION, REF_PREFIX};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// `com.example.stable.v1.CronTab` for group `stable.example.com`.
pub fn definition_name(cr: &CustomResource, kind: &str) -> String {
    let mut parts: Vec<&str> = cr.spec.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{kind}", parts.join("."), cr.spec.version)
}

/// The definitions one served version contributes (the kind and its list), with `$ref`s made with
/// `ref_prefix` (`#/components/schemas/` for v3, `#/definitions/` for v2).
pub fn definitions(cr: &CustomResource, ref_prefix: &str) -> Map<String, Value> {
    let (g, v, k) = (&cr.spec.group, &cr.spec.version, &cr.spec.kind);
    let mut item = match &cr.spec.schema {
        Value::Object(_) => cr.spec.schema.clone(),
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    };
    if let Some(map) = item.as_object_mut() {
        let props = map.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("{ref_prefix}{OBJECT_META}")}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        map.insert(GVK_EXTENSION.into(), json!([{"group": g, "version": v, "kind": k}]));
    }
    let list_kind = cr.spec.list_kind.clone();
    let list = json!({
        "description": format!("{list_kind} is a list of {k}"),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "items": {"type": "array", "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", cr.spec.plural),
                      "items": {"$ref": format!("{ref_prefix}{}", definition_name(cr, k))}},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"allOf": [{"$ref": format!("{ref_prefix}{LIST_META}")}], "description": "Standard list metadata."},
        },
        GVK_EXTENSION: [{"group": g, "version": v, "kind": list_kind}],
    });
    let mut out = Map::new();
    out.insert(definition_name(cr, k), item);
    out.insert(definition_name(cr, &list_kind), list);
    out
}

fn op(cr: &CustomResource, action: &str, id: &str, schema: &Value, with_body: bool) -> Value {
    let content = json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}});
    let mut o = json!({
        "tags": [format!("{}_{}", cr.spec.group, cr.spec.version)],
        "operationId": id,
        "parameters": [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}},
        ],
        "responses": {"200": {"description": "OK", "content": content}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        GVK_EXTENSION: {"group": cr.spec.group, "version": cr.spec.version, "kind": cr.spec.kind},
    });
    if with_body {
        let body = if action == "patch" {
            json!({"content": {
                "application/json-patch+json": {"schema": {"$ref": format!("{REF_PREFIX}{PATCH}")}},
                "application/merge-patch+json": {"schema": {"$ref": format!("{REF_PREFIX}{PATCH}")}},
                "application/apply-patch+yaml": {"schema": {"$ref": format!("{REF_PREFIX}{PATCH}")}},
            }, "required": true})
        } else {
            json!({"content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}, "required": true})
        };
        o["requestBody"] = body;
    }
    o
}

/// The OpenAPI v3 document of one CRD group-version: `crs` are the served versions in it.
pub fn v3_document(group: &str, version: &str, crs: &[&CustomResource]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for cr in crs {
        let defs = definitions(cr, REF_PREFIX);
        let item_ref = json!({"$ref": format!("{REF_PREFIX}{}", definition_name(cr, &cr.spec.kind))});
        let list_ref = json!({"$ref": format!("{REF_PREFIX}{}", definition_name(cr, &cr.spec.list_kind))});
        schemas.extend(defs);
        let base = format!("/apis/{group}/{version}");
        let k = &cr.spec.kind;
        let scope = if cr.def.namespaced { "Namespaced" } else { "" };
        let collection = if cr.def.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", cr.spec.plural)
        } else {
            format!("{base}/{}", cr.spec.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": op(cr, "list", &format!("list{scope}{k}"), &list_ref, false),
                "post": op(cr, "post", &format!("create{scope}{k}"), &item_ref, true),
                "delete": op(cr, "deletecollection", &format!("deletecollection{scope}{k}"), &json!({"$ref": format!("{REF_PREFIX}{STATUS}")}), false),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": op(cr, "get", &format!("read{scope}{k}"), &item_ref, false),
                "put": op(cr, "put", &format!("replace{scope}{k}"), &item_ref, true),
                "patch": op(cr, "patch", &format!("patch{scope}{k}"), &item_ref, true),
                "delete": op(cr, "delete", &format!("delete{scope}{k}"), &json!({"$ref": format!("{REF_PREFIX}{STATUS}")}), false),
            }),
        );
        if cr.spec.status {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({
                    "get": op(cr, "get", &format!("read{scope}{k}Status"), &item_ref, false),
                    "put": op(cr, "put", &format!("replace{scope}{k}Status"), &item_ref, true),
                    "patch": op(cr, "patch", &format!("patch{scope}{k}Status"), &item_ref, true),
                }),
            );
        }
    }
    let paths = Value::Object(paths);
    let refs = schema::referenced_definitions([&paths, &Value::Object(schemas.clone())]);
    for name in refs {
        if !schemas.contains_key(&name) {
            if let Some(def) = schema::definition(&name) {
                schemas.insert(name, def.clone());
            }
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// A stable hash of a document (the index's `hash` and the ETag).
pub fn hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}
