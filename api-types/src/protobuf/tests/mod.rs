//! The decoder against bodies built as client-go builds them: k8s-pb's prost types (field for
//! field what kubectl's Go types hold, every non-pointer field present as gogo writes it), encoded
//! and wrapped in the `k8s\0` + `runtime.Unknown` envelope.

mod hostile;
mod objects;
mod synthetic;

use std::path::PathBuf;

use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message as _;
use serde_json::Value;

use super::{decode_to_json, gen, MAGIC};

/// A body as client-go's protobuf serializer writes one.
fn body(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// Encodes `object` for `group`/`version`/`kind` and decodes it back as JSON.
fn roundtrip(object: &impl prost::Message, group: &str, version: &str, kind: &str) -> Value {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    decode_to_json(&body(&api_version, kind, object.encode_to_vec()), group, version, kind).unwrap()
}

#[test]
fn fields_rs_is_up_to_date() {
    // k8s-pb is a dev-dependency, so cargo has unpacked its sources before this test runs; not
    // finding them is a failure, not a reason to skip.
    let dir = k8s_pb_src().expect("k8s-pb's sources are not in the cargo registry (CARGO_HOME)");
    let sources = gen::read_sources(&dir).unwrap();
    let generated = gen::generate(&sources).unwrap();
    assert!(
        generated == include_str!("../fields.rs"),
        "api-types/src/protobuf/fields.rs is stale; regenerate it with\n  cargo run -p api-types \
         --example gen_proto_fields -- {} > api-types/src/protobuf/fields.rs",
        dir.display()
    );
}

/// `<cargo home>/registry/src/<index>/k8s-pb-<version>/src` for the locked k8s-pb version, or the
/// newest one there when there is no lock file.
fn k8s_pb_src() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap_or_default();
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"k8s-pb\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"'))));
    let version_of = |name: &str| -> Option<Vec<u64>> {
        name.strip_prefix("k8s-pb-")?.split('.').map(|n| n.parse().ok()).collect()
    };
    let mut candidates = Vec::new();
    for index in std::fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        for krate in std::fs::read_dir(index.path()).ok()?.flatten() {
            let name = krate.file_name().to_string_lossy().into_owned();
            let Some(version) = version_of(&name) else { continue };
            if locked.is_none_or(|l| name == format!("k8s-pb-{l}")) {
                candidates.push((version, krate.path().join("src")));
            }
        }
    }
    candidates.into_iter().filter(|(_, p)| p.is_dir()).max().map(|(_, p)| p)
}

#[test]
fn every_table_kind_is_supported_and_served_kinds_are_covered() {
    for r in crate::RESOURCES {
        // The server never decodes a SelfSubjectReview's body; CRDs come as JSON (see the
        // generator's NOT_DECODED).
        if ["SelfSubjectReview", "CustomResourceDefinition"].contains(&r.kind) {
            assert!(!super::supports(r.group, r.version, r.kind), "{}", r.kind);
            continue;
        }
        assert!(super::supports(r.group, r.version, r.kind), "{}", r.kind);
    }
    for (g, v, k) in [
        ("", "v1", "Binding"),
        ("autoscaling", "v1", "Scale"),
        ("policy", "v1", "Eviction"),
        ("authentication.k8s.io", "v1", "TokenRequest"),
    ] {
        assert!(super::supports(g, v, k), "{k}");
    }
    assert!(super::supports("apps", "v1", "DeleteOptions"));
    assert!(super::supports("", "v1", "DeleteOptions"));
    assert!(!super::supports("", "v1", "PodList"));
    assert!(super::supports("batch", "v1", "Job"));
    assert!(!super::supports("batch", "v1", "JobList"));
}
