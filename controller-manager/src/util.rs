//! Small pure helpers over Kubernetes objects shared by the controllers: selectors, pod state,
//! owner references, API error classification. No I/O here.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// Does `selector` match `labels`? An empty or absent selector matches nothing: every workload kind
/// we manage requires a non-empty selector, and matching everything would adopt the namespace.
pub fn selector_matches(selector: Option<&LabelSelector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = selector else { return false };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml = sel.match_labels.as_ref().filter(|m| !m.is_empty());
    let me = sel.match_expressions.as_ref().filter(|m| !m.is_empty());
    if ml.is_none() && me.is_none() {
        return false;
    }
    if let Some(ml) = ml {
        if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    if let Some(me) = me {
        for req in me {
            let have = labels.get(&req.key);
            let values = req.values.as_deref().unwrap_or_default();
            let ok = match req.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// A map selector (Service, ReplicationController): every pair must match; an empty map matches nothing.
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if selector.is_empty() {
        return false;
    }
    let Some(labels) = labels else { return false };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

pub fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Upstream's `IsPodActive`: not Succeeded, not Failed, not being deleted.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod_phase(pod);
    phase != "Succeeded" && phase != "Failed" && !is_terminating(&pod.metadata)
}

/// The Ready condition's status and last transition time.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conds.iter().find(|c| c.type_ == "Ready")?;
    if ready.status != "True" {
        return None;
    }
    Some(ready.last_transition_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH))
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Upstream's `IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// How many seconds until a ready-but-not-yet-available pod becomes available (for requeues).
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    let since = pod_ready_since(pod)?;
    let left = since.as_second() + i64::from(min_ready_seconds) - now.as_second();
    (left > 0).then_some(left)
}

pub fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref().filter(|ip| !ip.is_empty())
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// 0 → JSON null, so merge patches drop zero counters the way upstream's `omitempty` does.
pub fn nz(n: i32) -> serde_json::Value {
    if n == 0 {
        serde_json::Value::Null
    } else {
        serde_json::Value::from(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_semantics() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "a")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(Some(&sel), Some(&labels(&[("app", "a")]))));
        assert!(!selector_matches(Some(&sel), Some(&labels(&[("app", "a"), ("tier", "db")]))));
        assert!(!selector_matches(Some(&sel), Some(&labels(&[("app", "b")]))));
        assert!(!selector_matches(Some(&LabelSelector::default()), Some(&labels(&[("app", "a")]))));
        assert!(!map_selector_matches(&BTreeMap::new(), Some(&labels(&[("app", "a")]))));
    }
}
