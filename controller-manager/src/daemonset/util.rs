//! Pure DaemonSet helpers (upstream's `pkg/controller/daemon/util` and the decision halves of
//! `daemon_controller.go` / `update.go`): which nodes should run a daemon pod, the pod a node gets,
//! which pods are up to date, what a sync creates and deletes, what a rolling update replaces.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_types::scheduling::{find_untolerated_taint, matches_node_affinity};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::util as u;

/// The pod label holding the ControllerRevision hash of the template a pod was made from.
pub use crate::history::HASH_LABEL;
/// The pod label holding the DaemonSet's template generation (upstream's backward-compatible one).
pub const GENERATION_LABEL: &str = "pod-template-generation";
/// The DaemonSet annotation the API server keeps the template generation in.
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Upstream's `GetTemplateGeneration`: the annotation, if present and numeric.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata.annotations.as_ref()?.get(TEMPLATE_GENERATION)?.parse().ok()
}

fn exists_toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Upstream's `AddOrUpdateTolerationInPodSpec`: a toleration equal in key, operator, value and
/// effect is replaced (so a tolerationSeconds goes), otherwise it is appended.
fn add_or_update_toleration(tols: &mut Vec<Toleration>, t: Toleration) {
    let op = |x: &Toleration| x.operator.clone().filter(|o| !o.is_empty()).unwrap_or_else(|| "Equal".into());
    let same = |x: &Toleration| {
        x.key == t.key
            && op(x) == op(&t)
            && x.value.as_deref().unwrap_or_default() == t.value.as_deref().unwrap_or_default()
            && x.effect.as_deref().unwrap_or_default() == t.effect.as_deref().unwrap_or_default()
    };
    match tols.iter_mut().find(|x| same(x)) {
        Some(x) => *x = t,
        None => tols.push(t),
    }
}

/// Upstream's `AddOrUpdateDaemonPodTolerations`: daemon pods survive not-ready and unreachable
/// nodes (NoExecute, forever) and ignore the node-condition and cordon taints (NoSchedule);
/// hostNetwork pods also ignore network-unavailable.
pub fn add_daemon_tolerations(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    add_or_update_toleration(tols, exists_toleration(TAINT_NOT_READY, "NoExecute"));
    add_or_update_toleration(tols, exists_toleration(TAINT_UNREACHABLE, "NoExecute"));
    add_or_update_toleration(tols, exists_toleration(TAINT_DISK_PRESSURE, "NoSchedule"));
    add_or_update_toleration(tols, exists_toleration(TAINT_MEMORY_PRESSURE, "NoSchedule"));
    add_or_update_toleration(tols, exists_toleration(TAINT_PID_PRESSURE, "NoSchedule"));
    add_or_update_toleration(tols, exists_toleration(TAINT_UNSCHEDULABLE, "NoSchedule"));
    if spec.host_network == Some(true) {
        add_or_update_toleration(tols, exists_toleration(TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
}

/// Upstream's `CreatePodTemplate`: the template with the daemon tolerations and the generation and
/// hash labels.
pub fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    add_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
    let labels = t.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
    if let Some(g) = template_generation(ds) {
        labels.insert(GENERATION_LABEL.into(), g.to_string());
    }
    if !hash.is_empty() {
        labels.insert(HASH_LABEL.into(), hash.into());
    }
    t
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: required node affinity becomes exactly
/// one term, `matchFields: metadata.name In [node]`; preferred affinity and pod (anti-)affinity stay.
pub fn replace_node_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut a = affinity.unwrap_or_default();
    a.node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(selector);
    a
}

/// Upstream's `NewPod`: the pod a DaemonSet would run on `node`, for the predicates.
fn probe_pod(ds: &DaemonSet, node: &str) -> Pod {
    let t = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec.node_name = Some(node.into());
    Pod { metadata: t.metadata.unwrap_or_default(), spec: Some(spec), status: None }
}

/// Upstream's `NodeShouldRunDaemonPod`: (should run, should continue running). A node whose
/// name, nodeSelector or required affinity does not fit runs nothing; an untolerated NoSchedule
/// taint stops new pods but keeps a running one; an untolerated NoExecute taint stops both.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let pinned = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|s| s.node_name.as_deref());
    if pinned.is_some_and(|p| !p.is_empty() && p != name) {
        return (false, false);
    }
    let pod = probe_pod(ds, name);
    if !matches_node_affinity(&pod, node) {
        return (false, false);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let tols = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let hard = |t: &k8s_openapi::api::core::v1::Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
    if find_untolerated_taint(taints, tols, hard).is_none() {
        return (true, true);
    }
    (false, find_untolerated_taint(taints, tols, |t| t.effect == "NoExecute").is_none())
}

/// Upstream's `GetTargetNodeName`: `spec.nodeName`, or for a pod not yet bound the node its
/// `matchFields: metadata.name In [node]` term names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.into());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref().filter(|v| v.len() == 1))
        .map(|v| v[0].clone())
}

/// Upstream's `IsPodUpdated`: the pod carries the current hash, or the current template generation.
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let hash_matches = !hash.is_empty() && label(HASH_LABEL) == Some(hash);
    let gen_matches = generation.is_some_and(|g| label(GENERATION_LABEL) == Some(g.to_string().as_str()));
    hash_matches || gen_matches
}

fn rolling(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    let s = ds.spec.as_ref()?.update_strategy.as_ref()?;
    if s.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    s.rolling_update.as_ref()
}

pub fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `GetScaledValueFromIntOrPercent(v, total, roundUp=true)`; a malformed percentage is 0.
fn scaled_up(v: &IntOrString, total: usize) -> usize {
    match v {
        IntOrString::Int(i) => (*i).max(0) as usize,
        IntOrString::String(s) => {
            let p = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()).unwrap_or(0).max(0) as usize;
            (p * total).div_ceil(100)
        }
    }
}

/// Upstream's `SurgeCount` (0 unless RollingUpdate with maxSurge).
pub fn surge_count(ds: &DaemonSet, desired: usize) -> usize {
    rolling(ds).and_then(|r| r.max_surge.as_ref()).map(|v| scaled_up(v, desired)).unwrap_or(0)
}

/// Upstream's `UnavailableCount` (0 unless RollingUpdate; maxUnavailable defaults to 1).
pub fn unavailable_count(ds: &DaemonSet, desired: usize) -> usize {
    if !is_rolling_update(ds) {
        return 0;
    }
    let one = IntOrString::Int(1);
    let v = rolling(ds).and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&one);
    scaled_up(v, desired)
}

pub fn allows_surge(ds: &DaemonSet) -> bool {
    surge_count(ds, 1) > 0
}

pub fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// Upstream's `podByCreationTimestampAndPhase`: scheduled first, then oldest, then by name.
pub fn sort_by_creation(pods: &mut [&Pod]) {
    pods.sort_by_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        (!scheduled, created, p.metadata.name.clone().unwrap_or_default())
    });
}

/// What one node needs from a sync (upstream's `podsShouldBeOnNode`).
#[derive(Debug, Default, PartialEq)]
pub struct NodePlan {
    /// Create a daemon pod on this node.
    pub create: bool,
    /// Delete these pods (names).
    pub delete: Vec<String>,
    /// A failed pod waits for its back-off: look again after this long.
    pub retry_after: Option<Duration>,
    /// Failed pods being deleted (for the FailedDaemonPod warning).
    pub failed: Vec<String>,
}

/// Upstream's `podsShouldBeOnNode` for one node and the DaemonSet's non-deleted-terminal pods on it.
/// `backoff(pod)` says whether deleting a failed pod must wait (Some(delay)) or may go now (None,
/// and the back-off advances).
pub fn plan_node(
    ds: &DaemonSet,
    node: &Node,
    pods: &[&Pod],
    hash: &str,
    now: Timestamp,
    mut backoff: impl FnMut() -> Option<Duration>,
) -> NodePlan {
    let (should_run, should_continue) = node_should_run(node, ds);
    let mut plan = NodePlan::default();
    if should_run && pods.is_empty() {
        plan.create = true;
        return plan;
    }
    if !should_continue {
        plan.delete = pods.iter().filter(|p| !u::is_terminating(&p.metadata)).map(|p| name(p)).collect();
        return plan;
    }
    let mut running: Vec<&Pod> = Vec::new();
    for p in pods.iter().copied().filter(|p| !u::is_terminating(&p.metadata)) {
        match u::pod_phase(p) {
            "Failed" => match backoff() {
                Some(delay) => plan.retry_after = Some(plan.retry_after.map_or(delay, |d| d.min(delay))),
                None => {
                    plan.failed.push(name(p));
                    plan.delete.push(name(p));
                }
            },
            "Succeeded" => plan.delete.push(name(p)),
            _ => running.push(p),
        }
    }
    sort_by_creation(&mut running);
    if !allows_surge(ds) {
        // More than one: keep the oldest.
        plan.delete.extend(running.iter().skip(1).map(|p| name(p)));
        return plan;
    }
    if running.len() <= 1 {
        if running.is_empty() && should_run {
            plan.create = true;
        }
        return plan;
    }
    // Surging: keep the oldest new and the oldest old pod; the old one goes once it is not ready
    // or the new one is available.
    let (mut oldest_new, mut oldest_old) = (None, None);
    for p in running {
        let is_new =
            p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).map(String::as_str) == Some(hash);
        let slot = if is_new { &mut oldest_new } else { &mut oldest_old };
        if slot.is_none() {
            *slot = Some(p);
        } else {
            plan.delete.push(name(p));
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if !u::pod_is_ready(old) || u::pod_is_available(new, min_ready_seconds(ds), now) {
            plan.delete.push(name(old));
        }
    }
    plan
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Upstream's `findUpdatedPodsOnNode`: (new, old) among a node's non-deleted pods; None when
/// there are two of either (the manage step prunes those first).
fn updated_and_old<'a>(
    pods: &[&'a Pod],
    hash: &str,
    generation: Option<i64>,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().copied().filter(|p| !u::is_terminating(&p.metadata)) {
        let slot = if is_pod_updated(p, hash, generation) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// What one rolling-update step does: delete these old pods, create pods on these nodes.
#[derive(Debug, Default, PartialEq)]
pub struct RollPlan {
    pub delete: Vec<String>,
    pub create_on: Vec<String>,
}

/// Upstream's `rollingUpdate` decision. `by_node` maps every node that should run the daemon
/// (possibly with no pods) and every node that has its pods to those pods; `should_run(node)`
/// answers upstream's `NodeShouldRunDaemonPod(...).shouldRun`.
pub fn plan_rolling_update(
    ds: &DaemonSet,
    by_node: &BTreeMap<String, Vec<&Pod>>,
    desired: usize,
    hash: &str,
    now: Timestamp,
    should_run: impl Fn(&str) -> bool,
) -> RollPlan {
    let generation = template_generation(ds);
    let min_ready = min_ready_seconds(ds);
    let available = |p: &Pod| u::pod_is_available(p, min_ready, now);
    let max_surge = surge_count(ds, desired);
    let mut max_unavailable = unavailable_count(ds, desired);
    if desired > 0 && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let mut plan = RollPlan::default();
    if max_surge == 0 {
        // Delete just enough old pods to stay within maxUnavailable; the manage step recreates them.
        let mut unavailable = 0usize;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for pods in by_node.values() {
            let Some((new, old)) = updated_and_old(pods, hash, generation) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replace_now.push(name(old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name(old));
                    }
                }
            }
        }
        let room = max_unavailable.saturating_sub(unavailable).min(candidates.len());
        plan.delete = replace_now;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    // Surging: a new pod goes next to an old one (at most maxSurge at once; at once where the old
    // one is unavailable); the old one goes when the new one is available.
    let mut surging = 0usize;
    let mut available_count = 0usize;
    let mut allowed_new = Vec::new();
    let mut candidate_new = Vec::new();
    let mut misplaced = Vec::new();
    for (node, pods) in by_node {
        let Some((new, old)) = updated_and_old(pods, hash, generation) else {
            surging += 1;
            continue;
        };
        if let Some(p) = old.or(new) {
            if available(p) {
                available_count += 1;
            }
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                let runs = should_run(node);
                if !available(old) {
                    if runs {
                        allowed_new.push(node.clone());
                    } else {
                        plan.delete.push(name(old));
                    }
                } else if !runs {
                    misplaced.push(name(old));
                } else if surging < max_surge {
                    candidate_new.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    plan.delete.push(name(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    // With surge the owner expects full availability: pods on nodes that no longer fit go only
    // while more than the desired number are available.
    let deletable = available_count.saturating_sub(desired).min(misplaced.len());
    plan.delete.extend(misplaced.into_iter().take(deletable));
    let room = max_surge.saturating_sub(surging).min(candidate_new.len());
    plan.create_on = allowed_new;
    plan.create_on.extend(candidate_new.into_iter().take(room));
    plan
}

/// Upstream's failed-pods back-off (`flowcontrol.Backoff`, 1 s doubling to 15 min), keyed by
/// DaemonSet UID and node: deleting a failed daemon pod is rate-limited per node, so a pod the
/// node keeps rejecting does not hot-loop.
pub struct FailedBackoff {
    initial: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, (Duration, Instant)>>,
}

impl Default for FailedBackoff {
    fn default() -> Self {
        FailedBackoff::new(Duration::from_secs(1), Duration::from_secs(15 * 60))
    }
}

impl FailedBackoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        FailedBackoff { initial, max, entries: Mutex::new(HashMap::new()) }
    }

    /// None: go ahead now (and the next failure waits longer); Some(left): wait that long.
    pub fn check(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((delay, last)) = m.get(key).copied() {
            let since = now.saturating_duration_since(last);
            if since < delay {
                return Some(delay - since);
            }
            // Reset after a long quiet spell, as flowcontrol.Backoff does.
            let next = if since > 2 * self.max { self.initial } else { (delay * 2).min(self.max) };
            m.insert(key.into(), (next, now));
            return None;
        }
        m.insert(key.into(), (self.initial, now));
        None
    }

    /// Forgets the entries of a DaemonSet (by key prefix), e.g. once it is deleted.
    pub fn forget_prefix(&self, prefix: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| !k.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(v: serde_json::Value) -> DaemonSet {
        let mut base = json!({"metadata": {"name": "ds", "namespace": "default", "uid": "u1",
            "annotations": {TEMPLATE_GENERATION: "2"}},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        merge(&mut base, v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, ready_since: Option<&str>, created: &str) -> Pod {
        let conds = match ready_since {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created,
            "labels": {"app": "a", HASH_LABEL: hash}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": conds}}))
        .unwrap()
    }

    #[test]
    fn daemon_tolerations_are_upstreams() {
        let mut spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({"containers": [],
            "tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}))
        .unwrap();
        add_daemon_tolerations(&mut spec);
        let tols = spec.tolerations.clone().unwrap();
        assert_eq!(tols.len(), 6, "{tols:?}");
        assert!(
            tols.iter().all(|t| t.toleration_seconds.is_none()),
            "upstream drops tolerationSeconds: {tols:?}"
        );
        assert!(tols.iter().any(
            |t| t.key.as_deref() == Some(TAINT_UNSCHEDULABLE) && t.effect.as_deref() == Some("NoSchedule")
        ));
        spec.host_network = Some(true);
        add_daemon_tolerations(&mut spec);
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 7);
    }

    #[test]
    fn should_run_follows_selector_affinity_and_taints() {
        let d = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
        let n = |labels: serde_json::Value, taints: serde_json::Value| {
            node(json!({"metadata": {"name": "w1", "labels": labels}, "spec": {"taints": taints}}))
        };
        assert_eq!(node_should_run(&n(json!({"role": "edge"}), json!([])), &d), (true, true));
        assert_eq!(node_should_run(&n(json!({"role": "core"}), json!([])), &d), (false, false));
        // NoSchedule: no new pod, the running one stays; NoExecute: neither.
        let ns = json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]);
        assert_eq!(node_should_run(&n(json!({"role": "edge"}), ns), &d), (false, true));
        let ne = json!([{"key": "dedicated", "value": "x", "effect": "NoExecute"}]);
        assert_eq!(node_should_run(&n(json!({"role": "edge"}), ne.clone()), &d), (false, false));
        // The default tolerations cover cordoned, not-ready and unreachable nodes.
        let cond = json!([{"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}, {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}]);
        assert_eq!(node_should_run(&n(json!({"role": "edge"}), cond), &d), (true, true));
        // A toleration in the template lets it run on the tainted node.
        let tolerant = ds(
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}}}),
        );
        assert_eq!(node_should_run(&n(json!({}), ne), &tolerant), (true, true));
        // The template's own required affinity is honoured (matchFields too).
        let pinned = ds(
            json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["w2"]}]}]}}}}}}}),
        );
        assert_eq!(node_should_run(&n(json!({}), json!([])), &pinned), (false, false));
    }

    #[test]
    fn node_affinity_is_replaced_by_the_node_name_and_read_back() {
        let a: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["old"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]}}))
        .unwrap();
        let r = replace_node_affinity(Some(a), "w3");
        let na = r.node_affinity.as_ref().unwrap();
        let terms =
            &na.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].match_fields.as_ref().unwrap()[0].values.as_ref().unwrap(), &["w3".to_string()]);
        assert!(na.preferred_during_scheduling_ignored_during_execution.is_some());
        let p = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec { affinity: Some(r), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(target_node(&p).as_deref(), Some("w3"));
    }

    #[test]
    fn pod_template_carries_hash_generation_and_tolerations() {
        let t = pod_template(&ds(json!({})), "abc");
        let l = t.metadata.unwrap().labels.unwrap();
        assert_eq!(l[HASH_LABEL], "abc");
        assert_eq!(l[GENERATION_LABEL], "2");
        assert_eq!(t.spec.unwrap().tolerations.unwrap().len(), 6);
    }

    #[test]
    fn plan_node_creates_prunes_and_backs_off() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let d = ds(json!({}));
        let n = node(json!({"metadata": {"name": "w1"}}));
        let p = plan_node(&d, &n, &[], "h", now, || None);
        assert!(p.create && p.delete.is_empty());
        // Two running pods without surge: the oldest stays.
        let a = pod("a", "w1", "h", None, "2026-01-01T00:00:00Z");
        let b = pod("b", "w1", "h", None, "2026-01-01T00:01:00Z");
        assert_eq!(plan_node(&d, &n, &[&b, &a], "h", now, || None).delete, ["b"]);
        // A failed pod is deleted unless its back-off is running.
        let mut f = pod("f", "w1", "h", None, "2026-01-01T00:00:00Z");
        f.status.as_mut().unwrap().phase = Some("Failed".into());
        let p = plan_node(&d, &n, &[&f], "h", now, || None);
        assert_eq!((p.delete.clone(), p.failed.clone()), (vec!["f".to_string()], vec!["f".to_string()]));
        let p = plan_node(&d, &n, &[&f], "h", now, || Some(Duration::from_secs(4)));
        assert!(p.delete.is_empty() && p.retry_after == Some(Duration::from_secs(4)) && !p.create);
        // A node that no longer fits loses its pods.
        let sel = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
        assert_eq!(plan_node(&sel, &n, &[&a], "h", now, || None).delete, ["a"]);
        // Surge: the old pod goes once the new one is available.
        let surge = ds(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
        );
        let old = pod("old", "w1", "h0", Some("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z");
        let new_unready = pod("new", "w1", "h", None, "2026-01-01T00:05:00Z");
        assert!(plan_node(&surge, &n, &[&old, &new_unready], "h", now, || None).delete.is_empty());
        let new_ready = pod("new", "w1", "h", Some("2026-01-01T00:06:00Z"), "2026-01-01T00:05:00Z");
        assert_eq!(plan_node(&surge, &n, &[&old, &new_ready], "h", now, || None).delete, ["old"]);
    }

    fn by_node<'a>(pods: &[&'a Pod]) -> BTreeMap<String, Vec<&'a Pod>> {
        let mut m: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in pods {
            m.entry(p.spec.as_ref().unwrap().node_name.clone().unwrap()).or_default().push(*p);
        }
        m
    }

    #[test]
    fn rolling_update_respects_max_unavailable_and_max_surge() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let t0 = "2026-01-01T00:00:00Z";
        let olds: Vec<Pod> =
            (0..3).map(|i| pod(&format!("o{i}"), &format!("w{i}"), "h0", Some(t0), t0)).collect();
        let d = ds(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}}}),
        );
        let all: Vec<&Pod> = olds.iter().collect();
        let p = plan_rolling_update(&d, &by_node(&all), 3, "h1", now, |_| true);
        assert_eq!(p, RollPlan { delete: vec!["o0".into()], create_on: vec![] });
        // One node already replaced but its new pod not yet available: nothing more goes.
        let fresh = pod("n0", "w0", "h1", None, "2026-01-01T00:09:00Z");
        let p = plan_rolling_update(&d, &by_node(&[&fresh, &olds[1], &olds[2]]), 3, "h1", now, |_| true);
        assert!(p.delete.is_empty(), "{p:?}");
        // maxUnavailable 2 of 3 ("50%" rounds up).
        let d2 = ds(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}}}),
        );
        assert_eq!(plan_rolling_update(&d2, &by_node(&all), 3, "h1", now, |_| true).delete.len(), 2);
        // Surge 1: one new pod beside an old one; the old one goes once the new one is available.
        let s = ds(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
        );
        let p = plan_rolling_update(&s, &by_node(&all), 3, "h1", now, |_| true);
        assert_eq!(p, RollPlan { delete: vec![], create_on: vec!["w0".into()] });
        let p =
            plan_rolling_update(&s, &by_node(&[&olds[0], &fresh, &olds[1], &olds[2]]), 3, "h1", now, |_| true);
        assert_eq!(p, RollPlan::default(), "waits for the surged pod");
        let ready = pod("n0", "w0", "h1", Some("2026-01-01T00:09:30Z"), "2026-01-01T00:09:00Z");
        let p =
            plan_rolling_update(&s, &by_node(&[&olds[0], &ready, &olds[1], &olds[2]]), 3, "h1", now, |_| true);
        assert_eq!(p, RollPlan { delete: vec!["o0".into()], create_on: vec!["w1".into()] });
    }

    #[test]
    fn failed_pod_backoff_doubles() {
        let b = FailedBackoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let t = Instant::now();
        assert_eq!(b.check("k", t), None);
        assert_eq!(b.check("k", t + Duration::from_millis(500)), Some(Duration::from_millis(500)));
        assert_eq!(b.check("k", t + Duration::from_secs(1)), None);
        assert_eq!(b.check("k", t + Duration::from_secs(2)), Some(Duration::from_secs(1)));
        assert_eq!(b.check("k", t + Duration::from_secs(3)), None);
    }
}
