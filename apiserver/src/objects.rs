//! The registry's storage side: objects in and out of the store as JSON, with upstream's conventions —
//! `resourceVersion` is the key's mod_revision and is never stored inside the value.

use api_types::ResourceDef;
use serde_json::{json, Value};
use store::KeyValue;

use crate::error::{ApiError, ApiResult};
use crate::meta;

/// Whether the resource is served in another form than it is stored (events.k8s.io Events are
/// stored as core/v1 Events).
pub fn stored_as_core_event(res: &ResourceDef) -> bool {
    res.group == "events.k8s.io" && res.kind == "Event"
}

/// Whether the resource is autoscaling/v1 HorizontalPodAutoscalers, stored as autoscaling/v2.
pub fn stored_as_hpa_v2(res: &ResourceDef) -> bool {
    res.group == "autoscaling" && res.version == "v1" && res.kind == "HorizontalPodAutoscaler"
}

/// Whether the resource is served in another form than it is stored, so every read and write
/// converts (and the raw-bytes fast paths do not apply).
pub fn converts(res: &ResourceDef) -> bool {
    stored_as_core_event(res) || stored_as_hpa_v2(res)
}

/// The bytes stored for an object: its JSON without `metadata.resourceVersion`, in storage form.
pub fn encode(res: &ResourceDef, obj: &Value) -> Vec<u8> {
    // Custom resources are stored in their CRD's storage version (conversion None: only the
    // apiVersion changes), whichever served version they were written through.
    if let Some(cr) = crate::crd::custom(res).filter(|cr| cr.spec.version != cr.spec.storage_version) {
        let mut o = obj.clone();
        meta::remove(&mut o, "resourceVersion");
        if let Some(m) = o.as_object_mut() {
            m.insert("apiVersion".into(), json!(format!("{}/{}", cr.spec.group, cr.spec.storage_version)));
        }
        return serde_json::to_vec(&o).unwrap_or_default();
    }
    if !converts(res) && meta::resource_version(obj).is_none() {
        // Nothing to strip or convert: no copy needed (every create takes this path).
        return serde_json::to_vec(obj).unwrap_or_default();
    }
    let mut o = if stored_as_core_event(res) {
        api_types::events::to_core(obj)
    } else if stored_as_hpa_v2(res) {
        api_types::hpa::from_v1(obj)
    } else {
        obj.clone()
    };
    meta::remove(&mut o, "resourceVersion");
    serde_json::to_vec(&o).unwrap_or_default()
}

/// The object stored in `kv`, with its resourceVersion.
pub fn decode(res: &ResourceDef, kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object at {} is not valid JSON: {e}", kv.key)))?;
    if stored_as_core_event(res) {
        obj = api_types::events::from_core(&obj);
    } else if stored_as_hpa_v2(res) {
        obj = api_types::hpa::to_v1(&obj);
    }
    set_kind(res, &mut obj);
    meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
    Ok(obj)
}

/// The object at `key`, from the watch cache when it holds it, else from the store (a cache miss
/// may only mean the cache is warming up or behind). None if it does not exist or cannot be read.
pub async fn read_cached(
    st: &crate::AppState,
    res: &'static ResourceDef,
    key: &str,
) -> Option<std::sync::Arc<Value>> {
    if let Some(hit) = st.cacher.cache(&st.store, res).and_then(|c| c.get(key)) {
        return Some(hit);
    }
    let kv = st.store.get(key).await.ok()?;
    decode(res, &kv).ok().map(std::sync::Arc::new)
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

/// The stored object as served, without building a `Value`: the top level is parsed only into raw
/// values, `apiVersion`/`kind` are set and the resourceVersion is spliced into `metadata`. None
/// when the stored bytes are not a plain object with an object `metadata` lacking a
/// resourceVersion (the caller then takes the decoding path and its errors).
pub fn splice(res: &ResourceDef, kv: &KeyValue) -> Option<Vec<u8>> {
    use serde_json::value::RawValue;
    let mut top: std::collections::BTreeMap<&str, &RawValue> = serde_json::from_slice(&kv.value).ok()?;
    let meta = top.get("metadata")?.get();
    let inner = meta.strip_prefix('{')?.trim_start();
    if inner.contains("\"resourceVersion\"") {
        return None;
    }
    let rv = format!("\"resourceVersion\":\"{}\"", kv.mod_revision);
    let spliced = if inner.starts_with('}') { format!("{{{rv}}}") } else { format!("{{{rv},{inner}") };
    let spliced = RawValue::from_string(spliced).ok()?;
    let api_version = RawValue::from_string(serde_json::to_string(&res.api_version()).ok()?).ok()?;
    let kind = RawValue::from_string(serde_json::to_string(res.kind).ok()?).ok()?;
    top.insert("metadata", &spliced);
    top.insert("apiVersion", &api_version);
    top.insert("kind", &kind);
    serde_json::to_vec(&top).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str) -> KeyValue {
        KeyValue {
            key: "/registry/pods/default/a".into(),
            value: value.as_bytes().to_vec(),
            create_revision: 5,
            mod_revision: 9,
            version: 2,
            lease: 0,
        }
    }

    #[test]
    fn splice_equals_decode() {
        let pods = api_types::resources::lookup("", "v1", "pods").unwrap();
        for stored in [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"default"},"spec":{"x":[1,{"y":"}"}]}}"#,
            r#"{"metadata":{},"spec":{}}"#,
            r#"{"metadata":{ "name":"b" }}"#,
        ] {
            let fast: Value = serde_json::from_slice(&splice(pods, &kv(stored)).unwrap()).unwrap();
            assert_eq!(fast, decode(pods, &kv(stored)).unwrap(), "{stored}");
        }
        for odd in [
            r#"[1]"#,
            r#"{"metadata":[]}"#,
            r#"{"metadata":{"resourceVersion":"3"}}"#,
            "not json",
            r#"{"spec":{}}"#,
        ] {
            assert!(splice(pods, &kv(odd)).is_none(), "{odd}");
        }
    }

    /// Regression: events.k8s.io/v1 reads served the stored core/v1 fields (`message`,
    /// `involvedObject`) under the events.k8s.io apiVersion, so `note` and `regarding` came back empty.
    #[test]
    fn events_k8s_io_reads_convert_from_the_stored_core_form() {
        let events = api_types::resources::lookup("events.k8s.io", "v1", "events").unwrap();
        let stored = kv(
            r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},"message":"hi","involvedObject":{"kind":"Pod","name":"p"},"reason":"R"}"#,
        );
        let served = decode(events, &stored).unwrap();
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        assert_eq!(served["note"], "hi");
        assert_eq!(served["regarding"]["name"], "p");
        assert!(served.get("message").is_none() && served.get("involvedObject").is_none(), "{served}");
        let round: Value = serde_json::from_slice(&encode(events, &served)).unwrap();
        assert_eq!(round["message"], "hi");
        assert_eq!(round["involvedObject"]["name"], "p");
    }
}
