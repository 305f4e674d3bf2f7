//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) over api-types' decoders of network
//! input. Each takes arbitrary bytes and must return, never panic, whatever they hold; the
//! `fuzz_corpus` test replays every stored input in `fuzz/corpus/<target>/` through the same
//! functions, so a crash once found stays a regression test.

use serde_json::{json, Value};

use crate::apply::{self, Node, Writer};
use crate::patch::{self, NoSchema, PatchType};
use crate::typecheck::{self, Dialect};
use crate::{FieldSelector, LabelSelector};

/// The kinds the body targets decode into: core, apps, a kind with a map-keyed list
/// (Service ports keyed by port and protocol), and one with quantities and taints (Node).
pub const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Pod"),
    ("", "v1", "ConfigMap"),
    ("apps", "v1", "Deployment"),
    ("", "v1", "Service"),
    ("", "v1", "Node"),
];

/// The `(group, version, kind)` a selector byte picks.
pub fn kind_of(byte: u8) -> (&'static str, &'static str, &'static str) {
    KINDS[usize::from(byte) % KINDS.len()]
}

/// `?labelSelector=` and `?fieldSelector=` strings: parse, print, parse again.
pub fn selectors(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(sel) = LabelSelector::parse(s) {
        let _ = LabelSelector::parse(&sel.to_string());
    }
    if let Ok(sel) = FieldSelector::parse(s) {
        let _ = FieldSelector::parse(&sel.to_string());
    }
}

/// `application/vnd.kubernetes.protobuf` bodies, for kinds with nested messages, maps and
/// repeated fields.
pub fn protobuf_body(data: &[u8]) {
    for (group, version, kind) in
        [("", "v1", "Pod"), ("", "v1", "ConfigMap"), ("apps", "v1", "Deployment"), ("", "v1", "DeleteOptions")]
    {
        let _ = crate::protobuf::decode_to_json(data, group, version, kind);
    }
}

/// The three patch types on a Pod, with and without its patch schema. The first byte picks the
/// patch type, the rest is the body.
pub fn patches(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let original = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}
    });
    let patch_type = match which % 3 {
        0 => PatchType::Json,
        1 => PatchType::Merge,
        _ => PatchType::StrategicMerge,
    };
    let _ = patch::apply(patch_type, &original, body, &NoSchema);
    if let Some(schema) = crate::patchmeta::patch_schema("", "v1", "Pod") {
        if let Ok(patched) = patch::apply(patch_type, &original, body, &schema) {
            // What the patch handler does next: decode the result as the kind.
            let mut obj = patched;
            let _ = typecheck::check_kind("", "v1", "Pod", &mut obj, Dialect::Unstructured);
        }
    }
}

/// The typed decode of a JSON body (what the API server runs after parsing any body): the type
/// check and normalisation by the kind's schema, and field validation's scan of the raw bytes for
/// unknown and duplicate fields. The first byte picks the kind.
pub fn typed_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let (group, version, kind) = kind_of(which);
    let _ = crate::fieldcheck::strict_findings(group, version, kind, body);
    let _ = crate::fieldcheck::duplicate_fields(body);
    if let Ok(mut obj) = serde_json::from_slice::<Value>(body) {
        let _ = typecheck::check_kind(group, version, kind, &mut obj, Dialect::Json);
    }
}

/// Server-side apply of a random configuration to a random live object: the input is
/// `<kind byte><live JSON>\xff<applied JSON>`. Both are type-checked first, as the API server does
/// (live objects were stored checked; the configuration is decoded as the kind), unless the kind
/// byte's top bit asks for them raw, which the merge must refuse with a shape error rather than
/// panic on. Then: apply as one manager, an update by another, and a forced apply by a third.
pub fn apply(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let Some(split) = rest.iter().position(|&b| b == 0xff) else { return };
    let (Ok(mut live), Ok(mut config)) =
        (serde_json::from_slice::<Value>(&rest[..split]), serde_json::from_slice::<Value>(&rest[split + 1..]))
    else {
        return;
    };
    let (group, version, kind) = kind_of(which & 0x7f);
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    if which & 0x80 == 0 {
        for obj in [&mut live, &mut config] {
            if typecheck::check_kind(group, version, kind, obj, Dialect::Json).is_err() {
                return;
            }
        }
    }
    let schema = crate::schema::schema_of(group, version, kind);
    let node = schema.map(Node::root).unwrap_or_else(Node::untyped);
    let w = |manager| Writer {
        manager,
        subresource: None,
        api_version: &api_version,
        time: "2026-12-07T00:00:00Z",
    };
    let Ok(applied) = apply::apply(&live, &config, &node, &w("fuzz-apply"), false) else { return };
    // Another writer adds a label (an `Update`), then two more applies meet its field.
    let mut updated = applied.object.clone();
    if let Some(meta) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("fuzz".into(), json!("update"));
        }
    }
    let _ = apply::record_update(Some(&applied.object), &mut updated, false, &node, &w("fuzz-update"));
    let _ = apply::apply(&updated, &config, &node, &w("kubectl"), false);
    let _ = apply::apply(&updated, &live, &node, &w("fuzz-force"), true);
}

/// A fuzz entry point: arbitrary bytes in, never a panic.
pub type Entry = fn(&[u8]);

/// The api-types targets, by name (the name of their `fuzz/corpus/` directory).
pub const TARGETS: &[(&str, Entry)] = &[
    ("selectors", selectors),
    ("protobuf_body", protobuf_body),
    ("patches", patches),
    ("typed_json", typed_json),
    ("apply", apply),
];
