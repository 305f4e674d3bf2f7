//! Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`, `/version`, and the health
//! endpoints. Built from the resource table, so what is served is what is advertised.

use api_types::{resources, Subresource, RESOURCES};
use serde_json::{json, Value};

/// The server's version: Kubernetes v1.33 semantics (k8s-openapi's `v1_33`), kplane's build.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kplane",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// `/api`: the legacy core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis`: every named group.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one group.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = resources::group_versions().into_iter().find(|(g, _)| *g == group && !g.is_empty())?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}),
    )
}

/// `/api/v1`, `/apis/<g>/<v>`: the resources of a group-version, with their subresources.
pub fn api_resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        if r.stored {
            entry["storageVersionHash"] = json!(storage_version_hash(r.group, r.version, r.kind));
        }
        list.push(entry);
        for sub in r.subresources {
            let (kind, verbs, group_override): (&str, &[&str], Option<(&str, &str)>) = match sub {
                Subresource::Status => (r.kind, &["get", "patch", "update"], None),
                Subresource::Scale => ("Scale", &["get", "patch", "update"], Some(("autoscaling", "v1"))),
                Subresource::Binding => ("Binding", &["create"], None),
                Subresource::Log => ("Pod", &["get"], None),
                Subresource::Finalize => (r.kind, &["update"], None),
                Subresource::Token => ("TokenRequest", &["create"], Some(("authentication.k8s.io", "v1"))),
            };
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some((g, v)) = group_override {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            list.push(e);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

/// Upstream's storageVersionHash: a short stable digest of group/version/kind (kubectl only compares
/// it for equality).
fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    // FNV-1a, 64 bits, rendered like upstream's 8-byte base64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{group}/{version}/{kind}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h.to_be_bytes())
}
