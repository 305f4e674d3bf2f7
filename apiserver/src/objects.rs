//! The registry's storage side: objects in and out of the store as JSON, with upstream's conventions —
//! `resourceVersion` is the key's mod_revision and is never stored inside the value.

use api_types::ResourceDef;
use serde_json::{json, Value};
use store::KeyValue;

use crate::error::{ApiError, ApiResult};
use crate::meta;

/// Whether the resource is served in another form than it is stored (events.k8s.io Events are
/// stored as core/v1 Events).
fn stored_as_core_event(res: &ResourceDef) -> bool {
    res.group == "events.k8s.io" && res.kind == "Event"
}

/// The bytes stored for an object: its JSON without `metadata.resourceVersion`, in storage form.
pub fn encode(res: &ResourceDef, obj: &Value) -> Vec<u8> {
    let mut o = if stored_as_core_event(res) { api_types::events::to_core(obj) } else { obj.clone() };
    meta::remove(&mut o, "resourceVersion");
    serde_json::to_vec(&o).unwrap_or_default()
}

/// The object stored in `kv`, with its resourceVersion.
pub fn decode(res: &ResourceDef, kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object at {} is not valid JSON: {e}", kv.key)))?;
    set_kind(res, &mut obj);
    meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
    Ok(obj)
}

/// Sets `apiVersion` and `kind` to the resource's (objects read through a group-version are served
/// in it; events.k8s.io events share core events' storage).
pub fn set_kind(res: &ResourceDef, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(res.api_version()));
        m.insert("kind".into(), json!(res.kind));
    }
}

/// Parses a resourceVersion sent by a client.
pub fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))
}
