//! Objects serialized in upstream's field order: the order of the Go struct fields, which is the
//! order kube-apiserver's JSON encoder writes (`kind, apiVersion, metadata, spec, status`;
//! ObjectMeta `name, generateName, namespace, ..., managedFields`; PodSpec `volumes,
//! initContainers, containers, ...`). `serde_json::Value` keeps its keys sorted, so this is a
//! `Serialize` wrapper that walks a value beside its kind's shape instead of reordering maps.
//!
//! The shapes come from the protobuf field table (`protobuf/fields.rs`, generated from k8s-pb,
//! whose prost structs keep `generated.proto`'s field order, which is the Go struct's): each message's
//! fields in tag order, or in the order `GO_ORDER` gives where the two differ; inlined structs
//! (`json:",inline"`) are flattened in place. Every kind the table knows is covered, nested types
//! included. Keys a shape does not know follow the known ones, sorted.
//!
//! CustomResourceDefinitions, outside the table (their bodies are never decoded from protobuf),
//! have a hand-written order here (`CRD`, JSON schemas included).
//!
//! Other kinds outside the table are written sorted, as today: custom resources, which upstream encodes
//! from `map[string]interface{}` with Go's `encoding/json`, which sorts map keys — so sorted is
//! upstream's order for them — and API-machinery documents with their own serializers.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

use crate::protobuf::fields::{GO_ORDER, KINDS};
use crate::protobuf::table::{Kind, Label, Message};

/// A hand-written key order, for the few documents outside the protobuf table that clients see:
/// ListMeta, Status (a deleted object's, or one returned as an object), aggregated discovery, and
/// `meta.k8s.io` Tables and PartialObjectMetadata.
type Fixed = [(&'static str, Sub)];

/// What a [`Fixed`] key's value is written as.
#[derive(Clone, Copy, Debug)]
enum Sub {
    Plain,
    Fixed(&'static Fixed),
    /// metav1.ObjectMeta, by the table's shape.
    ObjectMeta,
    /// An embedded object (a RawExtension), by its own `apiVersion` and `kind`.
    Own,
    /// A map whose values are written by a hand-written order (a JSON schema's `properties`).
    FixedMap(&'static Fixed),
}

const P: Sub = Sub::Plain;

static LIST_META: &Fixed =
    &[("selfLink", P), ("resourceVersion", P), ("continue", P), ("remainingItemCount", P)];

static STATUS_CAUSE: &Fixed = &[("reason", P), ("message", P), ("field", P)];
static STATUS_DETAILS: &Fixed = &[
    ("name", P),
    ("group", P),
    ("kind", P),
    ("uid", P),
    ("causes", Sub::Fixed(STATUS_CAUSE)),
    ("retryAfterSeconds", P),
];
static STATUS: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("metadata", Sub::Fixed(LIST_META)),
    ("status", P),
    ("message", P),
    ("reason", P),
    ("details", Sub::Fixed(STATUS_DETAILS)),
    ("code", P),
];

// Legacy discovery: /api, /apis, /apis/<group>.
static SERVER_ADDRESS: &Fixed = &[("clientCIDR", P), ("serverAddress", P)];
static GROUP_VERSION: &Fixed = &[("groupVersion", P), ("version", P)];
static API_GROUP: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("name", P),
    ("versions", Sub::Fixed(GROUP_VERSION)),
    ("preferredVersion", Sub::Fixed(GROUP_VERSION)),
    ("serverAddressByClientCIDRs", Sub::Fixed(SERVER_ADDRESS)),
];
static API_GROUP_LIST: &Fixed = &[("kind", P), ("apiVersion", P), ("groups", Sub::Fixed(API_GROUP))];
static API_VERSIONS: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("versions", P),
    ("serverAddressByClientCIDRs", Sub::Fixed(SERVER_ADDRESS)),
];

// apidiscovery.k8s.io v2 (and v2beta1, the same types).
static GVK: &Fixed = &[("group", P), ("version", P), ("kind", P)];
static SUBRESOURCE_DISCOVERY: &Fixed =
    &[("subresource", P), ("responseKind", Sub::Fixed(GVK)), ("acceptedTypes", Sub::Fixed(GVK)), ("verbs", P)];
static RESOURCE_DISCOVERY: &Fixed = &[
    ("resource", P),
    ("responseKind", Sub::Fixed(GVK)),
    ("scope", P),
    ("singularResource", P),
    ("verbs", P),
    ("shortNames", P),
    ("categories", P),
    ("subresources", Sub::Fixed(SUBRESOURCE_DISCOVERY)),
];
static VERSION_DISCOVERY: &Fixed =
    &[("version", P), ("resources", Sub::Fixed(RESOURCE_DISCOVERY)), ("freshness", P)];
static GROUP_DISCOVERY: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("metadata", Sub::ObjectMeta),
    ("versions", Sub::Fixed(VERSION_DISCOVERY)),
];
static GROUP_DISCOVERY_LIST: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("metadata", Sub::Fixed(LIST_META)),
    ("items", Sub::Fixed(GROUP_DISCOVERY)),
];

// meta.k8s.io/v1 (and v1beta1) Table, as `kubectl get` receives it, and PartialObjectMetadata.
static TABLE_COLUMN: &Fixed = &[("name", P), ("type", P), ("format", P), ("description", P), ("priority", P)];
static TABLE_ROW_CONDITION: &Fixed = &[("type", P), ("status", P), ("reason", P), ("message", P)];
static TABLE_ROW: &Fixed =
    &[("cells", P), ("conditions", Sub::Fixed(TABLE_ROW_CONDITION)), ("object", Sub::Own)];
static TABLE: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("metadata", Sub::Fixed(LIST_META)),
    ("columnDefinitions", Sub::Fixed(TABLE_COLUMN)),
    ("rows", Sub::Fixed(TABLE_ROW)),
];
static PARTIAL_OBJECT_METADATA: &Fixed = &[("kind", P), ("apiVersion", P), ("metadata", Sub::ObjectMeta)];
static PARTIAL_OBJECT_METADATA_LIST: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("metadata", Sub::Fixed(LIST_META)),
    ("items", Sub::Fixed(PARTIAL_OBJECT_METADATA)),
];

// apiextensions.k8s.io/v1 CustomResourceDefinition: not in the protobuf table (its bodies are
// never decoded from protobuf), so its order is written out here, from the Go structs (the order
// of k8s-pb's apiextensions messages, which keep generated.proto's).
static CRD_NAMES: &Fixed =
    &[("plural", P), ("singular", P), ("shortNames", P), ("kind", P), ("listKind", P), ("categories", P)];
static CRD_SERVICE_REFERENCE: &Fixed = &[("namespace", P), ("name", P), ("path", P), ("port", P)];
static CRD_CLIENT_CONFIG: &Fixed =
    &[("url", P), ("service", Sub::Fixed(CRD_SERVICE_REFERENCE)), ("caBundle", P)];
static CRD_WEBHOOK_CONVERSION: &Fixed =
    &[("clientConfig", Sub::Fixed(CRD_CLIENT_CONFIG)), ("conversionReviewVersions", P)];
static CRD_CONVERSION: &Fixed = &[("strategy", P), ("webhook", Sub::Fixed(CRD_WEBHOOK_CONVERSION))];
static CRD_VALIDATION_RULE: &Fixed = &[
    ("rule", P),
    ("message", P),
    ("messageExpression", P),
    ("reason", P),
    ("fieldPath", P),
    ("optionalOldSelf", P),
];
static CRD_EXTERNAL_DOCS: &Fixed = &[("description", P), ("url", P)];
/// JSONSchemaProps. Its `default`, `enum` and `example` values are raw JSON upstream, kept as the
/// client sent them; here they are written sorted.
static JSON_SCHEMA_PROPS: [(&str, Sub); 44] = [
    ("id", P),
    ("$schema", P),
    ("$ref", P),
    ("description", P),
    ("type", P),
    ("format", P),
    ("title", P),
    ("default", P),
    ("maximum", P),
    ("exclusiveMaximum", P),
    ("minimum", P),
    ("exclusiveMinimum", P),
    ("maxLength", P),
    ("minLength", P),
    ("pattern", P),
    ("maxItems", P),
    ("minItems", P),
    ("uniqueItems", P),
    ("multipleOf", P),
    ("enum", P),
    ("maxProperties", P),
    ("minProperties", P),
    ("required", P),
    // JSONSchemaPropsOrArray: one schema or a list of them.
    ("items", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("allOf", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("oneOf", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("anyOf", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("not", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("properties", Sub::FixedMap(&JSON_SCHEMA_PROPS)),
    // JSONSchemaPropsOrBool: a schema or a boolean.
    ("additionalProperties", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("patternProperties", Sub::FixedMap(&JSON_SCHEMA_PROPS)),
    // JSONSchemaPropsOrStringArray values: a schema or a list of names.
    ("dependencies", Sub::FixedMap(&JSON_SCHEMA_PROPS)),
    ("additionalItems", Sub::Fixed(&JSON_SCHEMA_PROPS)),
    ("definitions", Sub::FixedMap(&JSON_SCHEMA_PROPS)),
    ("externalDocs", Sub::Fixed(CRD_EXTERNAL_DOCS)),
    ("example", P),
    ("nullable", P),
    ("x-kubernetes-preserve-unknown-fields", P),
    ("x-kubernetes-embedded-resource", P),
    ("x-kubernetes-int-or-string", P),
    ("x-kubernetes-list-map-keys", P),
    ("x-kubernetes-list-type", P),
    ("x-kubernetes-map-type", P),
    ("x-kubernetes-validations", Sub::Fixed(CRD_VALIDATION_RULE)),
];
static CRD_VALIDATION: &Fixed = &[("openAPIV3Schema", Sub::Fixed(&JSON_SCHEMA_PROPS))];
static CRD_SCALE: &Fixed = &[("specReplicasPath", P), ("statusReplicasPath", P), ("labelSelectorPath", P)];
static CRD_SUBRESOURCES: &Fixed = &[("status", P), ("scale", Sub::Fixed(CRD_SCALE))];
static CRD_COLUMN: &Fixed =
    &[("name", P), ("type", P), ("format", P), ("description", P), ("priority", P), ("jsonPath", P)];
static CRD_SELECTABLE_FIELD: &Fixed = &[("jsonPath", P)];
static CRD_VERSION: &Fixed = &[
    ("name", P),
    ("served", P),
    ("storage", P),
    ("deprecated", P),
    ("deprecationWarning", P),
    ("schema", Sub::Fixed(CRD_VALIDATION)),
    ("subresources", Sub::Fixed(CRD_SUBRESOURCES)),
    ("additionalPrinterColumns", Sub::Fixed(CRD_COLUMN)),
    ("selectableFields", Sub::Fixed(CRD_SELECTABLE_FIELD)),
];
static CRD_SPEC: &Fixed = &[
    ("group", P),
    ("names", Sub::Fixed(CRD_NAMES)),
    ("scope", P),
    ("versions", Sub::Fixed(CRD_VERSION)),
    ("conversion", Sub::Fixed(CRD_CONVERSION)),
    ("preserveUnknownFields", P),
];
static CRD_CONDITION: &Fixed = &[
    ("type", P),
    ("status", P),
    ("lastTransitionTime", P),
    ("reason", P),
    ("message", P),
    ("observedGeneration", P),
];
static CRD_STATUS: &Fixed = &[
    ("conditions", Sub::Fixed(CRD_CONDITION)),
    ("acceptedNames", Sub::Fixed(CRD_NAMES)),
    ("storedVersions", P),
    ("observedGeneration", P),
];
static CRD: &Fixed = &[
    ("kind", P),
    ("apiVersion", P),
    ("metadata", Sub::ObjectMeta),
    ("spec", Sub::Fixed(CRD_SPEC)),
    ("status", Sub::Fixed(CRD_STATUS)),
];
static CRD_LIST: &Fixed =
    &[("kind", P), ("apiVersion", P), ("metadata", Sub::Fixed(LIST_META)), ("items", Sub::Fixed(CRD))];

/// The hand-written order of a kind outside the protobuf table, if there is one.
fn fixed_kind(api_version: &str, kind: &str) -> Option<&'static Fixed> {
    match (api_version, kind) {
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => Some(CRD),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinitionList") => Some(CRD_LIST),
        _ => None,
    }
}

/// How a value is written.
#[derive(Clone, Copy, Debug)]
enum How {
    /// As `serde_json` writes it (sorted keys).
    Plain,
    /// An object of a known message (`top`: a kind, so `kind, apiVersion` come first); an array
    /// of them for repeated fields.
    Shape { shape: usize, top: bool },
    /// A `map<string, message>`: each value by the shape.
    MapOf(usize),
    /// A list kind (`PodList`): `kind, apiVersion, metadata, items`, the items by their kind.
    List(Option<usize>),
    /// A hand-written order (an array of such objects for a list field).
    Fixed(&'static Fixed),
    /// By the value's own `apiVersion` and `kind` (an embedded object).
    Own,
    /// A map whose values are each written by a hand-written order.
    FixedMap(&'static Fixed),
}

/// One field of a shape.
#[derive(Clone, Copy, Debug)]
struct FieldShape {
    json: &'static str,
    how: How,
}

struct Shapes {
    shapes: Vec<Vec<FieldShape>>,
    kinds: HashMap<(&'static str, &'static str, &'static str), usize>,
}

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(build)
}

fn build() -> Shapes {
    let go_order: HashMap<*const Message, &'static [u32]> =
        GO_ORDER.iter().map(|(m, tags)| (*m as *const Message, *tags)).collect();
    let mut b = Builder { go_order, shapes: Vec::new(), index: HashMap::new() };
    let mut kinds = HashMap::new();
    for (g, v, k, m) in KINDS {
        let shape = b.shape_of(m);
        kinds.insert((*g, *v, *k), shape);
    }
    Shapes { shapes: b.shapes, kinds }
}

struct Builder {
    go_order: HashMap<*const Message, &'static [u32]>,
    shapes: Vec<Vec<FieldShape>>,
    index: HashMap<*const Message, usize>,
}

impl Builder {
    fn shape_of(&mut self, m: &'static Message) -> usize {
        if let Some(i) = self.index.get(&(m as *const Message)) {
            return *i;
        }
        // Reserved first, so a message reaching itself (through a field) finds its index.
        let i = self.shapes.len();
        self.shapes.push(Vec::new());
        self.index.insert(m as *const Message, i);
        let fields = self.fields_of(m);
        if let Some(slot) = self.shapes.get_mut(i) {
            *slot = fields;
        }
        i
    }

    fn fields_of(&mut self, m: &'static Message) -> Vec<FieldShape> {
        let ordered: Vec<&'static crate::protobuf::table::Field> =
            match self.go_order.get(&(m as *const Message)).copied() {
                Some(tags) => tags.iter().filter_map(|t| m.field(*t)).collect(),
                None => m.fields.iter().collect(),
            };
        let mut out = Vec::with_capacity(ordered.len());
        for f in ordered {
            match (f.label, f.kind) {
                (Label::Inline, Kind::Message(inner)) => {
                    // Go's `json:",inline"`: the embedded struct's fields, in place.
                    let s = self.shape_of(inner);
                    out.extend(self.shapes.get(s).cloned().unwrap_or_default());
                }
                (Label::Map, Kind::Message(inner)) => {
                    out.push(FieldShape { json: f.json, how: How::MapOf(self.shape_of(inner)) })
                }
                (_, Kind::Message(inner)) => out.push(FieldShape {
                    json: f.json,
                    how: How::Shape { shape: self.shape_of(inner), top: false },
                }),
                _ => out.push(FieldShape { json: f.json, how: How::Plain }),
            }
        }
        out
    }
}

/// The shape of a kind's object, if the table knows the kind.
fn kind_shape(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kinds: &HashMap<(&str, &str, &str), usize> = &shapes().kinds;
    kinds.get(&(group, version, kind)).copied()
}

/// How a top-level value is written, from its own `apiVersion` and `kind`.
fn how_for(v: &Value) -> How {
    match (v.get("kind").and_then(Value::as_str), v.get("apiVersion").and_then(Value::as_str)) {
        (Some("APIVersions"), None | Some("v1")) => return How::Fixed(API_VERSIONS),
        (Some("APIGroupList"), None | Some("v1")) => return How::Fixed(API_GROUP_LIST),
        (Some("APIGroup"), None | Some("v1")) => return How::Fixed(API_GROUP),
        (Some(kind), Some("meta.k8s.io/v1" | "meta.k8s.io/v1beta1")) => match kind {
            "Table" => return How::Fixed(TABLE),
            "PartialObjectMetadata" => return How::Fixed(PARTIAL_OBJECT_METADATA),
            "PartialObjectMetadataList" => return How::Fixed(PARTIAL_OBJECT_METADATA_LIST),
            _ => {}
        },
        _ => {}
    }
    let (Some(api_version), Some(kind)) =
        (v.get("apiVersion").and_then(Value::as_str), v.get("kind").and_then(Value::as_str))
    else {
        return How::Plain;
    };
    if let Some(shape) = kind_shape(api_version, kind) {
        return How::Shape { shape, top: true };
    }
    if let Some(order) = fixed_kind(api_version, kind) {
        return How::Fixed(order);
    }
    if kind == "Status" && api_version == "v1" {
        return How::Fixed(STATUS);
    }
    if kind == "APIGroupDiscoveryList" && api_version.starts_with("apidiscovery.k8s.io/") {
        return How::Fixed(GROUP_DISCOVERY_LIST);
    }
    match kind.strip_suffix("List") {
        Some(item) if v.get("items").is_some_and(Value::is_array) => {
            match kind_shape(api_version, item) {
                Some(shape) => How::List(Some(shape)),
                // A custom resource list: upstream's unstructured encoder sorts it.
                None => How::Plain,
            }
        }
        _ => How::Plain,
    }
}

/// A value written in upstream's field order (see the module docs). Values of kinds outside the
/// table are written exactly as `serde_json` writes them.
pub struct Ordered<'a> {
    value: &'a Value,
    how: How,
}

/// `v` in upstream's order, its kind taken from its own `apiVersion` and `kind`.
pub fn ordered(v: &Value) -> Ordered<'_> {
    Ordered { value: v, how: how_for(v) }
}

/// `v`'s JSON in upstream's field order.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing a `Value` to a Vec cannot fail (keys are strings, numbers are finite).
    let _ = serde_json::to_writer(&mut out, &ordered(v));
    out
}

/// `v`'s JSON in upstream's field order, as a String.
pub fn to_string(v: &Value) -> String {
    String::from_utf8(to_vec(v)).unwrap_or_default()
}

/// A ListMeta (`{"resourceVersion":..,"continue":..}`) in Go order.
pub fn list_meta_to_string(meta: &Value) -> String {
    let o = Ordered { value: meta, how: How::Fixed(LIST_META) };
    serde_json::to_string(&o).unwrap_or_default()
}

/// Where a key of a shaped object sits in upstream's order: its index among the known keys,
/// None for unknown ones. Used to insert a key into already-ordered JSON (the resourceVersion a
/// stored object's bytes lack).
pub fn object_meta_position(key: &str) -> Option<usize> {
    let meta = object_meta_shape().and_then(|s| shapes().shapes.get(s))?;
    meta.iter().position(|f| f.json == key)
}

/// ObjectMeta's shape (found as a ConfigMap's `metadata`).
fn object_meta_shape() -> Option<usize> {
    let fields = kind_shape("v1", "ConfigMap").and_then(|s| shapes().shapes.get(s))?;
    match fields.iter().find(|f| f.json == "metadata")?.how {
        How::Shape { shape, .. } => Some(shape),
        _ => None,
    }
}

/// Whether the table knows the kind (so its objects are written in Go order rather than sorted).
pub fn knows(api_version: &str, kind: &str) -> bool {
    kind_shape(api_version, kind).is_some() || fixed_kind(api_version, kind).is_some()
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.value, self.how) {
            (_, How::Own) => ordered(self.value).serialize(s),
            (_, How::Plain) | (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_), _) => {
                self.value.serialize(s)
            }
            (Value::Array(items), how) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    let how = match how {
                        // List items carry their own kind when set (kplane's lists do).
                        How::List(_) => how,
                        How::Shape { shape, .. } => How::Shape { shape, top: false },
                        other => other,
                    };
                    seq.serialize_element(&Ordered { value: item, how })?;
                }
                seq.end()
            }
            (Value::Object(map), How::Shape { shape, top }) => {
                let fields = shapes().shapes.get(shape).map(Vec::as_slice).unwrap_or_default();
                let head: &[&str] = if top { &["kind", "apiVersion"] } else { &[] };
                write_object(s, map, head, fields.iter().map(|f| (f.json, f.how)))
            }
            (Value::Object(map), How::FixedMap(order)) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, &Ordered { value: v, how: How::Fixed(order) })?;
                }
                m.end()
            }
            (Value::Object(map), How::MapOf(shape)) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, &Ordered { value: v, how: How::Shape { shape, top: false } })?;
                }
                m.end()
            }
            (Value::Object(map), How::List(item)) => {
                let item_how = |v: &Value| match how_for(v) {
                    How::Shape { shape, .. } => How::Shape { shape, top: true },
                    _ => item.map_or(How::Plain, |shape| How::Shape { shape, top: true }),
                };
                let mut m = s.serialize_map(Some(map.len()))?;
                let mut written = 0;
                for k in ["kind", "apiVersion"] {
                    if let Some(v) = map.get(k) {
                        m.serialize_entry(k, v)?;
                        written += 1;
                    }
                }
                if let Some(v) = map.get("metadata") {
                    m.serialize_entry("metadata", &Ordered { value: v, how: How::Fixed(LIST_META) })?;
                    written += 1;
                }
                if let Some(Value::Array(items)) = map.get("items") {
                    m.serialize_entry("items", &Items { items, item_how: &item_how })?;
                    written += 1;
                }
                if written < map.len() {
                    for (k, v) in map {
                        if !matches!(k.as_str(), "kind" | "apiVersion" | "metadata" | "items") {
                            m.serialize_entry(k, v)?;
                        }
                    }
                }
                m.end()
            }
            (Value::Object(map), How::Fixed(order)) => {
                let how_of = |sub: Sub| match sub {
                    Sub::Plain => How::Plain,
                    Sub::Fixed(f) => How::Fixed(f),
                    Sub::ObjectMeta => {
                        object_meta_shape().map_or(How::Plain, |shape| How::Shape { shape, top: false })
                    }
                    Sub::Own => How::Own,
                    Sub::FixedMap(f) => How::FixedMap(f),
                };
                write_object(s, map, &[], order.iter().map(|(k, sub)| (*k, how_of(*sub))))
            }
        }
    }
}

/// An object: the `head` keys, then the known fields in order, then any other keys (sorted).
fn write_object<S: Serializer>(
    s: S,
    map: &Map<String, Value>,
    head: &[&str],
    fields: impl Iterator<Item = (&'static str, How)> + Clone,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(map.len()))?;
    let mut written = 0;
    for k in head {
        if let Some(v) = map.get(*k) {
            m.serialize_entry(k, v)?;
            written += 1;
        }
    }
    for (k, how) in fields.clone() {
        if let Some(v) = map.get(k) {
            m.serialize_entry(k, &Ordered { value: v, how })?;
            written += 1;
        }
    }
    if written < map.len() {
        for (k, v) in map {
            let known = head.contains(&k.as_str()) || fields.clone().any(|(f, _)| f == k);
            if !known {
                m.serialize_entry(k, v)?;
            }
        }
    }
    m.end()
}

/// A list's items, each by its own kind when the table knows it.
struct Items<'a, F: Fn(&Value) -> How> {
    items: &'a [Value],
    item_how: &'a F,
}

impl<F: Fn(&Value) -> How> Serialize for Items<'_, F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for item in self.items {
            seq.serialize_element(&Ordered { value: item, how: (self.item_how)(item) })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The keys of one object of `text`, in the order written: the first object at or after the
    /// value of the key path `path` (each key looked for after the previous; into the first item
    /// of an array).
    fn keys_of(text: &str, path: &[&str]) -> Vec<String> {
        let mut at = 0;
        for p in path {
            let needle = format!("\"{p}\":");
            at += text[at..].find(&needle).unwrap() + needle.len();
        }
        let bytes = text.as_bytes();
        let (mut i, mut depth, mut in_str, mut escape) =
            (at + text[at..].find('{').unwrap(), 0usize, false, false);
        let (mut key_start, mut out) = (0, Vec::new());
        while let Some(&c) = bytes.get(i) {
            if in_str {
                if escape {
                    escape = false;
                } else if c == b'\\' {
                    escape = true;
                } else if c == b'"' {
                    in_str = false;
                    if depth == 1 && text[i + 1..].starts_with(':') {
                        out.push(text[key_start..i].to_string());
                    }
                }
            } else {
                match c {
                    b'"' => {
                        in_str = true;
                        key_start = i + 1;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        out
    }

    #[test]
    fn custom_resource_definitions_are_written_in_go_order() {
        let crd = json!({
            "status": {"storedVersions": ["v1"], "conditions": [{"message": "m", "reason": "r", "status": "True",
                        "type": "Established", "lastTransitionTime": "t"}],
                       "acceptedNames": {"kind": "W", "plural": "ws"}},
            "spec": {"versions": [{"subresources": {"status": {}, "scale": {"statusReplicasPath": ".s", "specReplicasPath": ".r"}},
                                   "storage": true, "served": true, "name": "v1",
                                   "additionalPrinterColumns": [{"type": "string", "name": "N", "jsonPath": ".x"}],
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "spec": {"x-kubernetes-validations": [{"rule": "true", "message": "m"}],
                                                "required": ["a"], "type": "object", "description": "d",
                                                "properties": {"a": {"minimum": 1, "type": "integer", "default": 2}},
                                                "additionalProperties": false},
                                       "list": {"x-kubernetes-list-type": "map", "items": {"type": "object", "format": "f"},
                                                "type": "array"}}}}}],
                     "scope": "Namespaced", "names": {"kind": "W", "plural": "ws", "shortNames": ["w"], "listKind": "WList"},
                     "group": "example.com", "conversion": {"strategy": "None"}},
            "metadata": {"name": "ws.example.com", "uid": "u"},
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
        });
        let text = to_string(&crd);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "spec", "status"], "{text}");
        assert_eq!(keys_of(&text, &["metadata"]), ["name", "uid"]);
        assert_eq!(keys_of(&text, &["spec"]), ["group", "names", "scope", "versions", "conversion"]);
        assert_eq!(keys_of(&text, &["names"]), ["plural", "shortNames", "kind", "listKind"]);
        assert_eq!(
            keys_of(&text, &["versions"]),
            ["name", "served", "storage", "schema", "subresources", "additionalPrinterColumns"]
        );
        assert_eq!(keys_of(&text, &["scale"]), ["specReplicasPath", "statusReplicasPath"]);
        assert_eq!(keys_of(&text, &["additionalPrinterColumns"]), ["name", "type", "jsonPath"]);
        assert_eq!(keys_of(&text, &["openAPIV3Schema"]), ["type", "properties"]);
        // A schema's properties: the map sorted (Go sorts map keys), each value in Go order.
        assert_eq!(keys_of(&text, &["openAPIV3Schema", "properties"]), ["list", "spec"]);
        assert_eq!(
            keys_of(&text, &["properties", "spec"]),
            [
                "description",
                "type",
                "required",
                "properties",
                "additionalProperties",
                "x-kubernetes-validations"
            ]
        );
        assert_eq!(keys_of(&text, &["properties", "spec", "properties", "a"]), ["type", "default", "minimum"]);
        assert_eq!(keys_of(&text, &["list"]), ["type", "items", "x-kubernetes-list-type"]);
        assert_eq!(keys_of(&text, &["list", "items"]), ["type", "format"]);
        assert_eq!(keys_of(&text, &["x-kubernetes-validations"]), ["rule", "message"]);
        // (The first "status" in the text is a version's status subresource.)
        let status =
            to_string(&json!({"kind": "CustomResourceDefinition", "apiVersion": "apiextensions.k8s.io/v1",
                                       "status": crd["status"]}));
        assert_eq!(keys_of(&status, &["status"]), ["conditions", "acceptedNames", "storedVersions"]);
        assert_eq!(
            keys_of(&text, &["conditions"]),
            ["type", "status", "lastTransitionTime", "reason", "message"]
        );
        assert_eq!(keys_of(&text, &["acceptedNames"]), ["plural", "kind"]);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), crd);
        assert!(knows("apiextensions.k8s.io/v1", "CustomResourceDefinition"));
        let list = json!({"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
                          "metadata": {"resourceVersion": "3"}, "items": [crd]});
        let text = to_string(&list);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "items"]);
        assert!(text.contains(r#""items":[{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name""#), "{text}");
    }

    #[test]
    fn pods_are_written_in_go_order() {
        let pod = json!({
            "status": {"phase": "Running", "conditions": [], "hostIP": "127.0.0.1",
                       "containerStatuses": [{"ready": true, "name": "c", "image": "x", "state": {}}]},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {}, "args": ["a"], "zzz": 1}],
                     "volumes": [], "restartPolicy": "Always", "initContainers": []},
            "metadata": {"uid": "u", "resourceVersion": "5", "name": "p", "namespace": "default",
                         "labels": {"b": "1", "a": "2"}, "creationTimestamp": "2024-01-01T00:00:00Z",
                         "managedFields": [{"time": "t", "manager": "m", "operation": "Update"}]},
            "kind": "Pod",
            "apiVersion": "v1",
        });
        let text = to_string(&pod);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "spec", "status"], "{text}");
        assert_eq!(
            keys_of(&text, &["metadata"]),
            ["name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels", "managedFields"]
        );
        assert_eq!(keys_of(&text, &["spec"]), ["volumes", "initContainers", "containers", "restartPolicy"]);
        assert_eq!(keys_of(&text, &["containers"]), ["name", "image", "args", "resources", "zzz"]);
        assert_eq!(keys_of(&text, &["managedFields"]), ["manager", "operation", "time"]);
        assert_eq!(keys_of(&text, &["status"]), ["phase", "conditions", "hostIP", "containerStatuses"]);
        assert_eq!(keys_of(&text, &["containerStatuses"]), ["name", "state", "ready", "image"]);
        // Maps keep their (sorted) keys: Go's encoder sorts map keys.
        assert_eq!(keys_of(&text, &["labels"]), ["a", "b"]);
        // Same value, whatever the order.
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), pod);
    }

    #[test]
    fn kinds_without_spec_and_lists() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "binaryData": {}, "data": {"k": "v"},
                        "immutable": true, "metadata": {"name": "c"}});
        assert_eq!(
            keys_of(&to_string(&cm), &[]),
            ["kind", "apiVersion", "metadata", "immutable", "data", "binaryData"]
        );
        let secret =
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {}, "metadata": {}});
        assert_eq!(keys_of(&to_string(&secret), &[]), ["kind", "apiVersion", "metadata", "data", "type"]);
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList", "items": [cm],
                          "metadata": {"resourceVersion": "9", "continue": "x", "remainingItemCount": 1}});
        let text = to_string(&list);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "items"]);
        assert_eq!(keys_of(&text, &["metadata"]), ["resourceVersion", "continue", "remainingItemCount"]);
        assert!(text.contains(r#""items":[{"kind":"ConfigMap","apiVersion":"v1","metadata""#), "{text}");
    }

    #[test]
    fn inlined_structs_are_flattened_in_place() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}, "spec": {
            "template": {"spec": {"containers": [{"name": "c", "readinessProbe":
                {"periodSeconds": 1, "httpGet": {"port": 80}, "initialDelaySeconds": 2}}]}, "metadata": {}},
            "selector": {}, "replicas": 1, "strategy": {}}});
        let text = to_string(&d);
        assert_eq!(keys_of(&text, &["spec"]), ["replicas", "selector", "template", "strategy"]);
        assert_eq!(keys_of(&text, &["spec", "template"]), ["metadata", "spec"]);
        assert_eq!(keys_of(&text, &["readinessProbe"]), ["httpGet", "initialDelaySeconds", "periodSeconds"]);
    }

    #[test]
    fn unknown_kinds_and_custom_resources_stay_sorted() {
        for v in [
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"b": 1, "a": 2}, "metadata": {"name": "w", "a": 1}}),
            json!({"apiVersion": "example.com/v1", "kind": "WidgetList", "items": [], "metadata": {}}),
            json!({"z": 1, "a": [1, {"y": 2, "b": 3}]}),
            json!([1, "x", null]),
        ] {
            assert_eq!(to_string(&v), v.to_string());
        }
    }

    #[test]
    fn tables_and_partial_object_metadata_are_written_in_go_order() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n"},
            "metadata": {"uid": "u", "namespace": "d", "name": "p", "labels": {"a": "b"}}});
        let partial = json!({"metadata": {"uid": "u", "name": "p", "namespace": "d"},
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata"});
        let table = json!({"rows": [{"object": partial, "cells": ["p", 1]}, {"object": pod, "cells": ["p", 2]}],
            "metadata": {"resourceVersion": "7"}, "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [{"type": "string", "priority": 0, "name": "Name", "format": "name", "description": "d"}]});
        let text = to_string(&table);
        assert_eq!(keys_of(&text, &[]), ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]);
        assert_eq!(
            keys_of(&text, &["columnDefinitions"]),
            ["name", "type", "format", "description", "priority"]
        );
        assert_eq!(keys_of(&text, &["rows"]), ["cells", "object"]);
        assert!(text.contains(r#""object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"p","namespace":"d","uid":"u"}}"#), "{text}");
        // includeObject=Object: the row's object by its own kind.
        assert!(text.contains(r#""object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"d","uid":"u","labels":{"a":"b"}},"spec":{"containers""#), "{text}");
        let list = json!({"items": [partial], "metadata": {}, "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList"});
        assert_eq!(keys_of(&to_string(&list), &[]), ["kind", "apiVersion", "metadata", "items"]);
    }

    #[test]
    fn status_is_written_in_go_order() {
        let st = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                        "details": {"uid": "u", "name": "n", "kind": "pods"}});
        assert_eq!(
            to_string(&st),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"n","kind":"pods","uid":"u"}}"#
        );
    }

    #[test]
    fn legacy_discovery_documents_are_written_in_go_order() {
        let apis = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps",
            "preferredVersion": {"version": "v1", "groupVersion": "apps/v1"},
            "versions": [{"version": "v1", "groupVersion": "apps/v1"}]}]});
        assert_eq!(
            to_string(&apis),
            r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"apps","versions":[{"groupVersion":"apps/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apps/v1","version":"v1"}}]}"#
        );
        let api = json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"serverAddress": "127.0.0.1:6443", "clientCIDR": "0.0.0.0/0"}]});
        assert_eq!(
            to_string(&api),
            r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:6443"}]}"#
        );
    }

    #[test]
    fn aggregated_discovery_is_written_in_go_order() {
        let doc = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": [{"metadata": {"name": "apps", "creationTimestamp": null}, "versions": [{"version": "v1",
                "freshness": "Current", "resources": [{"verbs": ["get"], "singularResource": "deployment",
                "scope": "Namespaced", "shortNames": ["deploy"], "resource": "deployments", "categories": ["all"],
                "responseKind": {"kind": "Deployment", "version": "v1", "group": "apps"},
                "subresources": [{"verbs": ["get"], "subresource": "scale",
                    "responseKind": {"kind": "Scale", "version": "v1", "group": "autoscaling"}}]}]}]}]});
        let text = to_string(&doc);
        assert!(text.starts_with(r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":"apps","creationTimestamp":null},"versions":[{"version":"v1","resources":[{"resource":"deployments","responseKind":{"group":"apps","version":"v1","kind":"Deployment"},"scope":"Namespaced","singularResource":"deployment","verbs":["get"],"shortNames":["deploy"],"categories":["all"],"subresources":[{"subresource":"scale","responseKind":{"group":"autoscaling","version":"v1","kind":"Scale"},"verbs":["get"]}]}],"freshness":"Current"}]}]}"#), "{text}");
    }

    #[test]
    fn every_kind_in_the_table_has_a_shape_with_metadata() {
        for (g, v, k, _) in KINDS {
            let av = if g.is_empty() { v.to_string() } else { format!("{g}/{v}") };
            assert!(knows(&av, k), "{av} {k}");
        }
        assert_eq!(object_meta_position("name"), Some(0));
        assert_eq!(object_meta_position("resourceVersion"), Some(5));
        assert_eq!(object_meta_position("managedFields"), Some(14));
        assert_eq!(object_meta_position("bogus"), None);
    }
}
