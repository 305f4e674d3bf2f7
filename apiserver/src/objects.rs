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

/// The bytes stored for an object: its JSON without `metadata.resourceVersion`, in storage form,
/// in upstream's field order (`api_types::goorder`), so etcdctl shows what kube-apiserver's
/// encoder would have written (custom resources sorted, as upstream's unstructured encoder).
pub fn encode(res: &ResourceDef, obj: &Value) -> Vec<u8> {
    // Custom resources are stored in their CRD's storage version (conversion None: only the
    // apiVersion changes), whichever served version they were written through.
    if let Some(cr) = crate::crd::custom(res).filter(|cr| cr.spec.version != cr.spec.storage_version) {
        let mut o = obj.clone();
        meta::remove(&mut o, "resourceVersion");
        if let Some(m) = o.as_object_mut() {
            m.insert("apiVersion".into(), json!(format!("{}/{}", cr.spec.group, cr.spec.storage_version)));
        }
        return api_types::goorder::to_vec(&o);
    }
    if !converts(res) && meta::resource_version(obj).is_none() {
        // Nothing to strip or convert: no copy needed (every create takes this path).
        return api_types::goorder::to_vec(obj);
    }
    let mut o = if stored_as_core_event(res) {
        api_types::events::to_core(obj)
    } else if stored_as_hpa_v2(res) {
        api_types::hpa::from_v1(obj)
    } else {
        obj.clone()
    };
    meta::remove(&mut o, "resourceVersion");
    api_types::goorder::to_vec(&o)
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

/// The stored object as served, without building a `Value`: the top level and `metadata` are parsed
/// only into raw values in the order stored, `apiVersion`/`kind` are set and the resourceVersion is
/// inserted where upstream's order puts it (after `uid` in ObjectMeta's Go order; among the sorted
/// keys of a custom resource). Built-in kinds get `kind, apiVersion` first. None when the stored
/// bytes are not a plain object with an object `metadata` lacking a resourceVersion, or have escaped
/// keys (the caller then takes the decoding path and its errors).
pub fn splice(res: &ResourceDef, kv: &KeyValue) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(kv.value.len() + 64);
    splice_into(res, kv, &mut out).then_some(out)
}

/// [`splice`], appending to `out` (a list's body); false, with `out` as it was, where `splice` is
/// None.
pub fn splice_into(res: &ResourceDef, kv: &KeyValue, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let ok = write_spliced(res, kv, out).is_some();
    if !ok {
        out.truncate(start);
    }
    ok
}

fn write_spliced(res: &ResourceDef, kv: &KeyValue, out: &mut Vec<u8>) -> Option<()> {
    let top: RawPairs<'_> = serde_json::from_slice(&kv.value).ok()?;
    let meta = top.get("metadata")?.get();
    let api_version = res.api_version();
    let built_in = api_types::goorder::knows(&api_version, res.kind);
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, k: &str| {
        out.extend_from_slice(if first { b"{\"" } else { b",\"" });
        first = false;
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
    };
    let string = |out: &mut Vec<u8>, v: &str| serde_json::to_writer(out, v).ok();
    if built_in {
        key(out, "kind");
        string(out, res.kind)?;
        key(out, "apiVersion");
        string(out, &api_version)?;
    } else {
        // Sorted, as stored: apiVersion and kind lead (unless a custom field sorts before them).
        for (k, v) in [("apiVersion", api_version.as_str()), ("kind", res.kind)] {
            if top.get(k).is_none() {
                key(out, k);
                string(out, v)?;
            }
        }
    }
    for (k, v) in &top.0 {
        match *k {
            "kind" | "apiVersion" if built_in => {}
            "kind" => {
                key(out, k);
                string(out, res.kind)?;
            }
            "apiVersion" => {
                key(out, k);
                string(out, &api_version)?;
            }
            "metadata" => {
                key(out, k);
                write_metadata_with_rv(built_in, meta, kv.mod_revision, out)?;
            }
            _ => {
                key(out, k);
                out.extend_from_slice(v.get().as_bytes());
            }
        }
    }
    out.push(b'}');
    Some(())
}

/// A stored object's `metadata` text (Go order for built-in kinds, sorted for custom resources)
/// with its resourceVersion inserted where upstream's order puts it. None when the text is not an
/// object lacking a resourceVersion, or its leading members are not the plain strings expected.
pub fn metadata_with_rv(res: &ResourceDef, meta: &str, revision: i64) -> Option<String> {
    let built_in = api_types::goorder::knows(&res.api_version(), res.kind);
    let mut out = Vec::with_capacity(meta.len() + 32);
    write_metadata_with_rv(built_in, meta, revision, &mut out)?;
    String::from_utf8(out).ok()
}

fn write_metadata_with_rv(built_in: bool, meta: &str, revision: i64, out: &mut Vec<u8>) -> Option<()> {
    use std::io::Write;
    let body = meta.strip_prefix('{')?;
    if body.contains("\"resourceVersion\"") {
        return None;
    }
    if built_in {
        // Stored in Go order: the resourceVersion goes after the leading name/namespace/uid members,
        // found by scanning just those (their values are plain strings).
        let (at, follows, any_before) = go_rv_position(body)?;
        let (head, tail) = body.split_at(at);
        out.push(b'{');
        out.extend_from_slice(head.as_bytes());
        if any_before && !follows {
            out.push(b',');
        }
        write!(out, "\"resourceVersion\":\"{revision}\"").ok()?;
        if follows {
            out.push(b',');
        }
        out.extend_from_slice(tail.as_bytes());
    } else {
        // Custom resources are sorted (upstream's unstructured encoding): among the sorted keys.
        let pairs: RawPairs<'_> = serde_json::from_str(meta).ok()?;
        let at = pairs.0.iter().position(|(k, _)| *k > "resourceVersion").unwrap_or(pairs.0.len());
        let rv_value = serde_json::value::RawValue::from_string(format!("\"{revision}\"")).ok()?;
        let mut pairs = pairs.0;
        pairs.insert(at, ("resourceVersion", &rv_value));
        out.extend_from_slice(write_pairs(&pairs).as_bytes());
    }
    Some(())
}

/// Where ObjectMeta's resourceVersion goes in a Go-ordered metadata object's text after its `{`:
/// the offset of the first member that follows it in Go order (`follows`), or of the closing `}`;
/// and whether members precede it. Only the members before it are read (`name`, `generateName`,
/// `namespace`, `selfLink`, `uid`: strings); anything unexpected is None (the caller decodes).
fn go_rv_position(body: &str) -> Option<(usize, bool, bool)> {
    let b = body.as_bytes();
    let ws = |mut i: usize| {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    // The end of the JSON string starting at `i` (its opening quote): the index after its closing
    // quote, and whether it had escapes.
    let string_end = |i: usize| -> Option<(usize, bool)> {
        let mut j = i + 1;
        let mut escaped = false;
        loop {
            match b.get(j)? {
                b'"' => return Some((j + 1, escaped)),
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                _ => j += 1,
            }
        }
    };
    let mut i = ws(0);
    let mut any_before = false;
    loop {
        match b.get(i)? {
            b'}' => return Some((i, false, any_before)),
            b'"' => {}
            _ => return None,
        }
        let (key_end, escaped) = string_end(i)?;
        if escaped {
            return None;
        }
        let key = body.get(i + 1..key_end - 1)?;
        if !matches!(key, "name" | "generateName" | "namespace" | "selfLink" | "uid") {
            return Some((i, true, any_before));
        }
        let colon = ws(key_end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let value = ws(colon + 1);
        if b.get(value) != Some(&b'"') {
            return None;
        }
        let (value_end, _) = string_end(value)?;
        any_before = true;
        let next = ws(value_end);
        match b.get(next)? {
            b',' => i = ws(next + 1),
            b'}' => return Some((next, false, true)),
            _ => return None,
        }
    }
}

/// A JSON object's members as raw values, in the order written. Keys are borrowed, so a key with
/// an escape fails to parse (splice then falls back to decoding).
struct RawPairs<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'a> RawPairs<'a> {
    fn get(&self, key: &str) -> Option<&'a serde_json::value::RawValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawPairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = RawPairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(pair) = m.next_entry::<&'de str, &'de serde_json::value::RawValue>()? {
                    out.push(pair);
                }
                Ok(RawPairs(out))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// `{"k":v,...}` from borrowed keys (which had no escapes, so are written as they were read).
fn write_pairs(pairs: &[(&str, &serde_json::value::RawValue)]) -> String {
    let mut s =
        String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + 2);
    s.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        s.push_str(k);
        s.push_str("\":");
        s.push_str(v.get());
    }
    s.push('}');
    s
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
        // What encode stores, splice serves byte for byte as the ordered encoder writes the
        // decoded object: built-in kinds in Go order, resourceVersion after uid.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "default",
            "uid": "u", "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Always"}, "status": {}});
        let stored = String::from_utf8(encode(pods, &pod)).unwrap();
        assert!(stored.starts_with(r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"default","uid":"u","creationTimestamp""#), "{stored}");
        let fast = String::from_utf8(splice(pods, &kv(&stored)).unwrap()).unwrap();
        assert_eq!(fast, api_types::goorder::to_string(&decode(pods, &kv(&stored)).unwrap()));
        assert!(fast.contains(r#""uid":"u","resourceVersion":"9","creationTimestamp""#), "{fast}");
        // Stored before the order was kept (sorted): still kind and apiVersion first.
        let old = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{}}"#;
        let fast = String::from_utf8(splice(pods, &kv(old)).unwrap()).unwrap();
        assert_eq!(
            fast,
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"b","resourceVersion":"9"},"spec":{}}"#
        );
        for odd in [
            r#"[1]"#,
            r#"{"metadata":[]}"#,
            r#"{"metadata":{"resourceVersion":"3"}}"#,
            "not json",
            r#"{"spec":{}}"#,
            r#"{"metadata":{"na\u006de":"x"}}"#,
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
