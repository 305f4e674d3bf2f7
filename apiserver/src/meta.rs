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

/// Sets `obj.<path>` to `value`, making `obj` and every object on the way one first: a field a
/// client sent as something else (`"spec": 5`, a `status` string) is replaced, never indexed into.
/// Server-side writes into client data go through here, so none can panic on its shape.
pub fn set_path(obj: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *obj = value;
        return;
    };
    let mut cur = obj;
    for key in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(map) = cur.as_object_mut() else { return };
        cur = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Some(map) = cur.as_object_mut() {
        map.insert(last.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_path_replaces_what_is_not_an_object() {
        let mut v = json!({"spec": 5, "status": "x"});
        set_path(&mut v, &["spec", "finalizers"], json!(["kubernetes"]));
        set_path(&mut v, &["status", "conditions"], json!([]));
        assert_eq!(v, json!({"spec": {"finalizers": ["kubernetes"]}, "status": {"conditions": []}}));
        let mut v = json!([1]);
        set_path(&mut v, &["a", "b"], json!(1));
        assert_eq!(v, json!({"a": {"b": 1}}));
        let mut v = json!({"a": {"keep": true}});
        set_path(&mut v, &["a", "b"], json!(1));
        assert_eq!(v, json!({"a": {"keep": true, "b": 1}}));
    }
}
