//! Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`, `/version`, and the health
//! endpoints. Built from the server's registry (the resource table plus CRDs), so what is served is
//! what is advertised, and a CRD appears and disappears with its definition.

use api_types::{Registry, ResourceDef, Subresource};
use serde::Serialize;
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

/// One group's versions (preferred first) as discovery lists them.
fn group_entry(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = registry
        .versions_of(group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// The named groups in upstream's discovery order: the aggregator's own group
/// (`apiregistration.k8s.io`) first, then by group priority, highest first (kube-apiserver's
/// `APIVersionPriorities`; CRD groups get the CRD registration controller's 1000), equal priorities
/// by name — the order kube-aggregator sorts APIServices in for both discovery forms.
fn groups(registry: &Registry) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (g, _) in registry.group_versions() {
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out.sort_by(|a, b| group_priority(b).cmp(&group_priority(a)).then(a.cmp(b)));
    out
}

/// A built-in group's discovery priority (upstream's `groupPriorityMinimum` of its APIService).
fn group_priority(group: &str) -> u32 {
    match group {
        "apiregistration.k8s.io" => 18100,
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "authentication.k8s.io" => 17700,
        "authorization.k8s.io" => 17600,
        "autoscaling" => 17500,
        "batch" => 17400,
        "certificates.k8s.io" => 17300,
        "networking.k8s.io" => 17200,
        "policy" => 17100,
        "rbac.authorization.k8s.io" => 17000,
        "storage.k8s.io" => 16800,
        "admissionregistration.k8s.io" | "apiextensions.k8s.io" => 16700,
        "scheduling.k8s.io" => 16600,
        "coordination.k8s.io" => 16500,
        "node.k8s.io" => 16300,
        "discovery.k8s.io" | "resource.k8s.io" => 16200,
        "flowcontrol.apiserver.k8s.io" => 16100,
        "internal.apiserver.k8s.io" => 16000,
        "storagemigration.k8s.io" => 15800,
        _ => 1000,
    }
}

/// `/apis`: every named group.
pub fn api_group_list(registry: &Registry) -> Value {
    let mut groups: Vec<Value> = groups(registry).into_iter().map(|g| group_entry(registry, g)).collect();
    groups.push(crate::metrics_api::group_entry());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one group.
pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    if group.is_empty() || !groups(registry).contains(&group) {
        return None;
    }
    let mut g = group_entry(registry, group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// One entry of an `APIResourceList`, with upstream's `metav1.APIResource` fields in its Go struct
/// order (and so its JSON text: kubectl's test-cmd greps `/api/v1` for runs such as
/// `"verbs":[...],"shortNames":["po"],"categories":["all"],"storageVersionHash":"..."`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    pub name: String,
    pub singular_name: &'static str,
    pub namespaced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub short_names: &'static [&'static str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub categories: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_version_hash: Option<String>,
}

/// `metav1.APIResourceList`, fields in upstream's order. Upstream's `/api/v1` has no `apiVersion`
/// (`{"kind":"APIResourceList","groupVersion":"v1",...}`); the named groups' lists have `"v1"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceList {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<&'static str>,
    pub group_version: String,
    pub resources: Vec<ApiResource>,
}

/// `/api/v1`, `/apis/<g>/<v>`: the resources of a group-version, with their subresources.
pub fn api_resource_list(registry: &Registry, group: &str, version: &str) -> ApiResourceList {
    let mut list = Vec::new();
    for r in registry.all().into_iter().filter(|r| r.group == group && r.version == version) {
        list.push(ApiResource {
            name: r.plural.to_string(),
            singular_name: r.singular,
            namespaced: r.namespaced,
            group: None,
            version: None,
            kind: r.kind,
            verbs: r.verbs(),
            short_names: r.short_names,
            categories: r.categories,
            storage_version_hash: r.stored.then(|| storage_version_hash(r.group, storage_version(r), r.kind)),
        });
        for sub in r.subresources {
            let (kind, verbs, group_override) = subresource(r, sub);
            list.push(ApiResource {
                name: format!("{}/{}", r.plural, sub.name()),
                singular_name: "",
                namespaced: r.namespaced,
                group: group_override.map(|(g, _)| g),
                version: group_override.map(|(_, v)| v),
                kind,
                verbs,
                short_names: &[],
                categories: &[],
                storage_version_hash: None,
            });
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    let api_version = (!group.is_empty()).then_some("v1");
    ApiResourceList { kind: "APIResourceList", api_version, group_version: gv, resources: list }
}

/// `shortNames` and `categories`, when the resource has any (both discovery forms omit empty ones).
fn short_names_and_categories(entry: &mut Value, r: &ResourceDef) {
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
}

/// A subresource's kind, verbs, and group/version when it is not its parent's.
fn subresource(
    r: &ResourceDef,
    sub: &Subresource,
) -> (&'static str, &'static [&'static str], Option<(&'static str, &'static str)>) {
    match sub {
        Subresource::Status => (r.kind, &["get", "patch", "update"], None),
        Subresource::Scale => ("Scale", &["get", "patch", "update"], Some(("autoscaling", "v1"))),
        Subresource::Binding => ("Binding", &["create"], None),
        Subresource::Eviction => ("Eviction", &["create"], Some(("policy", "v1"))),
        Subresource::Log => ("Pod", &["get"], None),
        Subresource::Finalize => (r.kind, &["update"], None),
        Subresource::Approval => (r.kind, &["get", "patch", "update"], None),
        Subresource::Token => ("TokenRequest", &["create"], Some(("authentication.k8s.io", "v1"))),
        Subresource::Exec => ("PodExecOptions", &["create", "get"], None),
        Subresource::Attach => ("PodAttachOptions", &["create", "get"], None),
        Subresource::PortForward => ("PodPortForwardOptions", &["create", "get"], None),
    }
}

/// Aggregated discovery (`apidiscovery.k8s.io`): what a client asks for by `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregated {
    V2,
    V2beta1,
}

impl Aggregated {
    /// The first aggregated form `accept` lists (kubectl lists v2, then v2beta1, then plain JSON),
    /// or `None` for the legacy documents.
    pub fn negotiate(accept: &str) -> Option<Aggregated> {
        accept.split(',').find_map(|media| {
            let mut params = media.split(';').map(str::trim);
            if params.next() != Some("application/json") {
                return None;
            }
            let (mut g, mut v, mut as_) = (None, None, None);
            for p in params {
                match p.split_once('=') {
                    Some(("g", x)) => g = Some(x),
                    Some(("v", x)) => v = Some(x),
                    Some(("as", x)) => as_ = Some(x),
                    _ => {}
                }
            }
            if g != Some("apidiscovery.k8s.io") || as_ != Some("APIGroupDiscoveryList") {
                return None;
            }
            match v {
                Some("v2") => Some(Aggregated::V2),
                Some("v2beta1") => Some(Aggregated::V2beta1),
                _ => None,
            }
        })
    }

    fn version(self) -> &'static str {
        match self {
            Aggregated::V2 => "v2",
            Aggregated::V2beta1 => "v2beta1",
        }
    }

    /// The response's Content-Type.
    pub fn content_type(self) -> String {
        format!("application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList", self.version())
    }

    /// `/api` (`legacy`: the core group) or `/apis` (every named group) as an
    /// APIGroupDiscoveryList: each group's versions with their resources, scope, verbs, short
    /// names, categories and subresources, from the same table as the legacy documents.
    pub fn document(self, registry: &Registry, legacy: bool) -> Value {
        let all = registry.all();
        let group_names: Vec<&'static str> = if legacy { vec![""] } else { groups(registry) };
        let mut items: Vec<Value> = group_names
            .into_iter()
            .map(|g| {
                let versions: Vec<&'static str> = if legacy { vec!["v1"] } else { registry.versions_of(g) };
                (g, versions)
            })
            .map(|(g, versions)| {
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|v| {
                        let resources: Vec<Value> = all
                            .iter()
                            .copied()
                            .filter(|r| r.group == g && r.version == v)
                            .map(|r| {
                                let subresources: Vec<Value> = r
                                    .subresources
                                    .iter()
                                    .map(|sub| {
                                        let (kind, verbs, gv) = subresource(r, sub);
                                        let (group, version) = gv.unwrap_or((r.group, r.version));
                                        json!({"subresource": sub.name(), "verbs": verbs,
                                       "responseKind": {"group": group, "version": version, "kind": kind}})
                                    })
                                    .collect();
                                let mut e = json!({
                                    "resource": r.plural,
                                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": r.singular,
                                    "verbs": r.verbs(),
                                });
                                short_names_and_categories(&mut e, r);
                                if !subresources.is_empty() {
                                    e["subresources"] = json!(subresources);
                                }
                                e
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect();
        if !legacy {
            // Aggregated APIs come after the built-in groups, as upstream's aggregator lists them.
            items.push(crate::metrics_api::aggregated_entry());
        }
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{}", self.version()),
               "metadata": {}, "items": items})
    }
}

/// The version a resource is stored in (autoscaling/v1 HorizontalPodAutoscalers are stored as v2,
/// so both versions report v2's hash, as upstream).
fn storage_version(r: &ResourceDef) -> &'static str {
    if crate::objects::stored_as_hpa_v2(r) {
        "v2"
    } else {
        r.version
    }
}

/// Upstream's storageVersionHash (`discovery.StorageVersionHash`): the first 8 bytes of the SHA-256
/// of `<group>/<version>/<kind>`, in standard base64 (`/v1/Pod` -> `xPOwRZ+Yhw8=`).
fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest.as_ref()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_keep_upstreams_field_order_and_hash() {
        assert_eq!(storage_version_hash("", "v1", "Pod"), "xPOwRZ+Yhw8=");
        let text = serde_json::to_string(&api_resource_list(&Registry::new(), "", "v1")).unwrap();
        assert!(text.starts_with(r#"{"kind":"APIResourceList","groupVersion":"v1","resources":["#));
        let pods = concat!(
            r#"{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","#,
            r#""verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"#,
            r#""shortNames":["po"],"categories":["all"],"storageVersionHash":"xPOwRZ+Yhw8="}"#
        );
        assert!(text.contains(pods), "{text}");
        let apps = serde_json::to_string(&api_resource_list(&Registry::new(), "apps", "v1")).unwrap();
        let head = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"apps/v1","resources":["#;
        assert!(apps.starts_with(head), "{apps}");
        let scale = r#"{"name":"deployments/scale","singularName":"","namespaced":true,"group":"autoscaling","version":"v1","kind":"Scale","verbs":["get","patch","update"]}"#;
        assert!(apps.contains(scale), "{apps}");
    }

    #[test]
    fn groups_are_in_upstreams_priority_order_in_both_forms() {
        let registry = Registry::new();
        let want = [
            "apiregistration.k8s.io",
            "apps",
            "events.k8s.io",
            "authentication.k8s.io",
            "authorization.k8s.io",
            "autoscaling",
            "batch",
            "certificates.k8s.io",
            "networking.k8s.io",
            "policy",
            "rbac.authorization.k8s.io",
            "storage.k8s.io",
            "admissionregistration.k8s.io",
            "apiextensions.k8s.io",
            "scheduling.k8s.io",
            "coordination.k8s.io",
            "node.k8s.io",
            "discovery.k8s.io",
            "flowcontrol.apiserver.k8s.io",
        ];
        let legacy = api_group_list(&registry);
        let legacy: Vec<&str> =
            legacy["groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
        let served: Vec<&str> = want.iter().copied().filter(|g| legacy.contains(g)).collect();
        assert!(served.len() >= 15, "{legacy:?}");
        assert_eq!(&legacy[..served.len()], served.as_slice());
        // The aggregated API (metrics.k8s.io, priority 100) comes last.
        assert_eq!(legacy.last(), Some(&"metrics.k8s.io"));
        let doc = Aggregated::V2.document(&registry, false);
        let aggregated: Vec<&str> =
            doc["items"].as_array().unwrap().iter().filter_map(|g| g["metadata"]["name"].as_str()).collect();
        assert_eq!(aggregated, legacy);
        let text = String::from_utf8(api_types::goorder::to_vec(&doc)).unwrap();
        assert!(
            text.starts_with(r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":"apiregistration.k8s.io","creationTimestamp":null},"versions":[{"version":"v1","resources":[{"resource":"#),
            "{text}"
        );
    }
}
