//! Pure StatefulSet helpers (upstream's `stateful_set_utils.go`): identities, ordinals, the pods
//! and claims made for an ordinal, revision patches, health and update fenceposts. No I/O here.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::Value;

use crate::history::{self, HASH_LABEL};
use crate::util;

/// Upstream's `StatefulSetPodNameLabel`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Upstream's `PodIndexLabel`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// `spec.ordinals.start` (0 when unset).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0).max(0)
}

pub fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// OrderedReady (the default) creates, deletes and waits one ordinal at a time; Parallel does not.
pub fn is_ordered(set: &StatefulSet) -> bool {
    set.spec.as_ref().and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel")
}

pub fn is_on_delete(set: &StatefulSet) -> bool {
    set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
}

/// The RollingUpdate partition (0 when unset or OnDelete).
pub fn partition(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0)
}

/// `rollingUpdate.maxUnavailable` scaled on `replicas`, rounded down, at least 1 (upstream's
/// `getStatefulSetMaxUnavailable`); 1 when unset.
pub fn max_unavailable(set: &StatefulSet, replicas: i32) -> i32 {
    let v = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    let n = match v {
        None => 1,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            (pct * i64::from(replicas) / 100) as i32
        }
    };
    n.max(1)
}

/// (whenDeleted is Delete, whenScaled is Delete).
pub fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let del = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (del(p.and_then(|p| p.when_deleted.as_ref())), del(p.and_then(|p| p.when_scaled.as_ref())))
}

pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The ordinal of a pod of `set` (upstream's `getParentNameAndOrdinal` + `isMemberOf`): the name
/// is `<set>-<digits>`; anything else is not a member.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// `<claim template>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{}", pod_name(set, ordinal))
}

pub fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or_default()
}

/// The revision's patch (upstream's `getPatch`): the template, replacing the set's wholesale.
pub fn revision_data(set: &StatefulSet) -> Value {
    history::template_patch(&set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default())
}

/// The pod of `ordinal` made from `template` at `revision` (upstream's `newStatefulSetPod` and
/// `initIdentity`, `updateStorage`, `setPodRevision`).
pub fn new_pod(
    set: &StatefulSet,
    owner: &OwnerReference,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Pod {
    let set_name = set.name_any();
    let name = pod_name(&set_name, ordinal);
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
    let claims = claim_templates(set);
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = spec
            .volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|c| c.metadata.name.as_deref() == Some(v.name.as_str())))
            .collect();
        for c in claims {
            let cname = c.name_any();
            volumes.push(Volume {
                name: cname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&cname, &set_name, ordinal),
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
        spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The claim of `template` for `ordinal` (upstream's `getPersistentVolumeClaims`): the template's
/// labels plus the set's matchLabels.
pub fn new_claim(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> PersistentVolumeClaim {
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    if let Some(ml) = set.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()) {
        labels.extend(ml.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(&template.name_any(), &set.name_any(), ordinal)),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(HASH_LABEL).map(String::as_str)
}

/// Upstream's `isRunningAndReady`.
pub fn running_and_ready(pod: &Pod) -> bool {
    util::pod_phase(pod) == "Running" && util::pod_is_ready(pod)
}

/// Upstream's `isRunningAndAvailable`.
pub fn running_and_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    util::pod_phase(pod) == "Running" && util::pod_is_available(pod, min_ready, now)
}

/// Upstream's `isHealthy`: running, ready and not terminating.
pub fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !util::is_terminating(&pod.metadata)
}

/// Failed or Succeeded: the pod is replaced (upstream's `isFailed`/`isSucceeded`).
pub fn finished(pod: &Pod) -> bool {
    matches!(util::pod_phase(pod), "Failed" | "Succeeded")
}

/// The owner references a claim should carry by the retention policy (upstream's
/// `updateClaimOwnerRefForSetAndPod`): the pod's alone when whenScaled is Delete and the pod is
/// being scaled away (the garbage collector deletes a dependent only once every owner is gone);
/// else the set's when whenDeleted is Delete. Other references are kept.
pub fn claim_refs(
    claim: &PersistentVolumeClaim,
    set_ref: &OwnerReference,
    want_set: bool,
    pod_ref: Option<&OwnerReference>,
) -> Option<Vec<OwnerReference>> {
    let have = claim.metadata.owner_references.clone().unwrap_or_default();
    let mut want: Vec<OwnerReference> = have
        .iter()
        .filter(|r| {
            r.uid != set_ref.uid
                && !(r.kind == "Pod" && r.api_version == "v1" && pod_ref.is_none_or(|p| p.name == r.name))
        })
        .cloned()
        .collect();
    if want_set && pod_ref.is_none() {
        want.push(set_ref.clone());
    }
    if let Some(p) = pod_ref {
        want.push(p.clone());
    }
    let key = |v: &[OwnerReference]| {
        let mut k: Vec<String> = v.iter().map(|r| r.uid.clone()).collect();
        k.sort();
        k
    };
    (key(&have) != key(&want)).then_some(want)
}

pub fn labels_of(set: &StatefulSet) -> Option<&BTreeMap<String, String>> {
    set.spec.as_ref()?.template.metadata.as_ref()?.labels.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(extra: Value) -> StatefulSet {
        let mut v = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "w"}},
                     "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference { name: "web".into(), uid: "u".into(), kind: "StatefulSet".into(), ..Default::default() }
    }

    #[test]
    fn ordinals_and_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-a-1"), None);
        assert_eq!(claim_name("www", "web", 3), "www-web-3");
        assert_eq!(start_ordinal(&set(json!({"spec": {"ordinals": {"start": 5}}}))), 5);
    }

    #[test]
    fn pod_identity_storage_and_revision() {
        let s =
            set(json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"t": "1"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}));
        let tpl = s.spec.as_ref().unwrap().template.clone();
        let p = new_pod(&s, &owner(), &tpl, 2, "web-abc");
        assert_eq!(p.name_any(), "web-2");
        let l = p.labels();
        assert_eq!(l[POD_NAME_LABEL], "web-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[HASH_LABEL], "web-abc");
        assert_eq!(l["app"], "w");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let v = &spec.volumes.unwrap()[0];
        assert_eq!(v.persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-2");
        let c = new_claim(&s, &claim_templates(&s)[0], 2);
        assert_eq!(c.name_any(), "www-web-2");
        assert_eq!(c.labels()["app"], "w");
        assert_eq!(c.labels()["t"], "1");
        let data = revision_data(&s);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(history::patch_template(&data).unwrap(), tpl);
    }

    #[test]
    fn strategy_fenceposts() {
        let s = set(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2, "maxUnavailable": "50%"}}}}),
        );
        assert_eq!(partition(&s), 2);
        assert_eq!(max_unavailable(&s, 5), 2);
        assert_eq!(max_unavailable(&s, 1), 1);
        assert!(is_ordered(&s));
        assert!(!is_on_delete(&s));
        let p =
            set(json!({"spec": {"podManagementPolicy": "Parallel", "updateStrategy": {"type": "OnDelete"}}}));
        assert!(!is_ordered(&p));
        assert!(is_on_delete(&p));
        assert_eq!(max_unavailable(&p, 3), 1);
    }

    #[test]
    fn claim_references_follow_the_retention_policy() {
        let set_ref = owner();
        let pod_ref = OwnerReference {
            name: "web-1".into(),
            uid: "p".into(),
            kind: "Pod".into(),
            api_version: "v1".into(),
            ..Default::default()
        };
        let c = PersistentVolumeClaim::default();
        assert!(claim_refs(&c, &set_ref, false, None).is_none());
        let with_set = claim_refs(&c, &set_ref, true, None).unwrap();
        assert_eq!(with_set.len(), 1);
        let mut c2 = c.clone();
        c2.metadata.owner_references = Some(with_set);
        assert!(claim_refs(&c2, &set_ref, true, None).is_none());
        let scaled = claim_refs(&c2, &set_ref, true, Some(&pod_ref)).unwrap();
        assert_eq!(scaled.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), ["p"]);
        assert_eq!(claim_refs(&c2, &set_ref, false, None).unwrap().len(), 0);
    }
}
