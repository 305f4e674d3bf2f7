//! Pure deployment helpers: pod-template-hash, revisions, surge/unavailable fenceposts, template
//! equality, replica sums.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Upstream's `rand.SafeEncodeString` alphabet: no vowels (no words), no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32a over the template's JSON plus the collision count, rendered like upstream's
/// `ComputeHash`: the decimal digits mapped through the safe alphabet.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut t = template.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    let bytes = serde_json::to_vec(&t).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    bytes.iter().for_each(|b| feed(*b));
    if let Some(c) = collision_count {
        c.to_le_bytes().iter().for_each(|b| feed(*b));
    }
    h.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// Templates equal once the pod-template-hash label is ignored (upstream's `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(HASH_LABEL);
                if l.is_empty() {
                    m.labels = None;
                }
            }
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0)
}

pub fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// (maxSurge, maxUnavailable) for `d`: percentages of replicas, surge rounded up, unavailable
/// rounded down; both zero becomes unavailable = 1 (upstream's `ResolveFenceposts`).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if is_recreate(d) {
        return (0, 0);
    }
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String("25%".into());
    let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default);
    let unavail = ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&default);
    let n = replicas(d);
    let s = scaled(surge, n, true);
    let u = scaled(unavail, n, false);
    if s == 0 && u == 0 {
        (0, 1)
    } else {
        (s, u)
    }
}

fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => (*i).max(0),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else { return 0 };
            let num = p.max(0) * i64::from(total);
            let r = if round_up { (num + 99) / 100 } else { num / 100 };
            r.min(i64::from(i32::MAX)) as i32
        }
    }
}

/// Annotations an RS carries for its deployment.
pub fn replica_annotations(d: &Deployment, surge: i32) -> BTreeMap<String, String> {
    let n = replicas(d);
    BTreeMap::from([
        (DESIRED_REPLICAS.to_string(), n.to_string()),
        (MAX_REPLICAS.to_string(), (i64::from(n) + i64::from(surge)).to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(replicas: i32, surge: serde_json::Value, unavail: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"replicas": replicas,
            "selector": {}, "template": {},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}}))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        assert_eq!(fenceposts(&d(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(fenceposts(&d(3, json!("25%"), json!("25%"))), (1, 0));
        assert_eq!(fenceposts(&d(3, json!(0), json!(0))), (0, 1));
        assert_eq!(fenceposts(&d(4, json!(2), json!("50%"))), (2, 2));
    }

    #[test]
    fn hash_is_stable_safe_and_ignores_its_own_label() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}}})).unwrap();
        let mut t2 = t.clone();
        t2.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(HASH_LABEL.into(), "x".into());
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t2, None));
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        assert!(equal_ignore_hash(&t, &t2));
    }
}
