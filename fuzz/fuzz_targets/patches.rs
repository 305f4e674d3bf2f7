//! The three patch types on a Pod: any patch body applies or fails with an error, never a panic.
//! The first byte picks the patch type, the rest is the body.
#![no_main]

use api_types::patch::{apply, NoSchema, PatchType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let original = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}
    });
    let patch_type = match which % 3 {
        0 => PatchType::Json,
        1 => PatchType::Merge,
        _ => PatchType::StrategicMerge,
    };
    let _ = apply(patch_type, &original, body, &NoSchema);
    if let Some(schema) = api_types::patchmeta::patch_schema("", "v1", "Pod") {
        let _ = apply(patch_type, &original, body, &schema);
    }
});
