//! Small accessors for `metadata` on objects held as JSON. The registry works on JSON so that one
//! code path serves every resource; typed k8s-openapi structs are used where a strategy needs them.

use serde_json::{Map, Value};

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// `metadata`, created if missing (or replaced if it is not an object). None only when `obj`
/// itself is not an object, which it is made into first, so callers may ignore that case.
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let m = obj.as_object_mut()?.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

pub fn str_field<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name(obj: &Value) -> Option<&str> {
    str_field(obj, "name").filter(|s| !s.is_empty())
}

pub fn namespace(obj: &Value) -> Option<&str> {
    str_field(obj, "namespace").filter(|s| !s.is_empty())
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    str_field(obj, "resourceVersion").filter(|s| !s.is_empty())
}

pub fn uid(obj: &Value) -> Option<&str> {
    str_field(obj, "uid").filter(|s| !s.is_empty())
}

pub fn set(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = meta_mut(obj) {
        m.insert(field.to_string(), value);
    }
}

pub fn remove(obj: &mut Value, field: &str) -> Option<Value> {
    meta_mut(obj)?.remove(field)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    str_field(obj, "deletionTimestamp")
}

/// The RFC 3339 timestamp upstream writes (seconds precision, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
