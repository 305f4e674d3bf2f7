//! Strategic-merge metadata for the built-in types, and a [`PatchSchema`] over the generated schemas.
//!
//! Upstream keeps each list field's patch strategy and merge key in Go struct tags
//! (`patchStrategy:"merge" patchMergeKey:"name"`) and publishes them as `x-kubernetes-patch-*`
//! extensions. k8s-openapi's generated schemas do not carry those extensions, so the fields that have
//! them upstream are listed here, keyed by the definition that holds the field. The walk itself
//! follows the generated schemas.

use serde_json::Value;

use crate::patch::PatchSchema;
use crate::schema;

/// (definition, field, strategy, merge key), from upstream's types.go struct tags.
pub const PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", Some("uid")),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", Some("topologyKey")),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", Some("type")),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", Some("port")),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
];

/// The definition a (possibly wrapped) `$ref` schema names.
pub(crate) fn definition_of(s: &Value) -> Option<&str> {
    let mut cur = s;
    for _ in 0..4 {
        if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
            return r.strip_prefix(schema::REF_PREFIX);
        }
        match cur.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            Some([only]) => cur = only,
            _ => return None,
        }
    }
    None
}

/// A node of a kind's schema, with the patch metadata of the field that led to it.
pub struct SchemaPatchMeta {
    node: &'static Value,
    strategy: Option<&'static str>,
    merge_key: Option<&'static str>,
}

/// The strategic-merge schema of a served kind; [`crate::patch::NoSchema`] semantics if unknown.
pub fn patch_schema(group: &str, version: &str, kind: &str) -> Option<SchemaPatchMeta> {
    schema::schema_of(group, version, kind).map(|node| SchemaPatchMeta {
        node,
        strategy: None,
        merge_key: None,
    })
}

impl PatchSchema for SchemaPatchMeta {
    fn field(&self, name: &str) -> Option<Box<dyn PatchSchema + '_>> {
        let def = definition_of(self.node);
        let child = schema::property(self.node, name).or_else(|| schema::map_values(self.node))?;
        let meta = def.and_then(|d| PATCH_META.iter().find(|(pd, f, _, _)| *pd == d && *f == name));
        Some(Box::new(SchemaPatchMeta {
            node: child,
            strategy: meta.map(|m| m.2),
            merge_key: meta.and_then(|m| m.3),
        }))
    }

    fn items(&self) -> Option<Box<dyn PatchSchema + '_>> {
        let item = schema::items(self.node)?;
        Some(Box::new(SchemaPatchMeta { node: item, strategy: None, merge_key: None }))
    }

    fn strategy(&self) -> Option<&str> {
        self.strategy
    }

    fn merge_key(&self) -> Option<&str> {
        self.merge_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{apply, PatchType};
    use serde_json::json;

    #[test]
    fn set_image_keeps_the_other_container_fields() {
        let schema = patch_schema("apps", "v1", "Deployment").unwrap();
        let old = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let patch = br#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}}"#;
        let out = apply(PatchType::StrategicMerge, &old, patch, &schema).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0], json!({"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}));
        assert_eq!(cs[1]["name"], "side");
    }

    #[test]
    fn every_listed_definition_and_field_exists() {
        for (def, field, _, _) in PATCH_META {
            let d = schema::definition(def).unwrap_or_else(|| panic!("no definition {def}"));
            assert!(schema::property(d, field).is_some(), "{def} has no field {field}");
        }
    }
}
