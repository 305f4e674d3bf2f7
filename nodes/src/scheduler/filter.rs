//! Feasibility: can this pod go on this node? Each check is one of upstream's filter plugins, in
//! upstream's order, and fails with upstream's reason text so that the "0/N nodes are available"
//! message reads the same.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, Pod, Taint, Toleration};

// The pure predicates live in api-types, shared with the DaemonSet controller.
pub use api_types::scheduling::{matches_node_affinity, tolerates};

use super::cache::{NodeInfo, Resources};

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take a pod: upstream's reasons from the first filter plugin that failed, and
/// whether preemption could help there (upstream's `Unschedulable`, as opposed to
/// `UnschedulableAndUnresolvable`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

impl Failure {
    pub fn new(reason: impl Into<String>, resolvable: bool) -> Failure {
        Failure { reasons: vec![reason.into()], resolvable }
    }
}

/// The node-local filters (NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit);
/// None when the node passes them. `req` is the pod's requests.
pub fn check(pod: &Pod, info: &NodeInfo, req: &Resources) -> Option<Failure> {
    let reasons = check_reasons(pod, info, req);
    if reasons.is_empty() {
        return None;
    }
    // Only NodeResourcesFit's failures are worth a preemption attempt.
    let resolvable = !reasons.iter().any(|r| {
        r == REASON_UNSCHEDULABLE
            || r == REASON_AFFINITY
            || r.starts_with("node(s) had untolerated taint")
            || r == REASON_NOT_FOUND
    });
    Some(Failure { reasons, resolvable })
}

const REASON_NOT_FOUND: &str = "node(s) not found";

fn check_reasons(pod: &Pod, info: &NodeInfo, req: &Resources) -> Vec<String> {
    let Some(node) = info.node.as_ref() else { return vec![REASON_NOT_FOUND.into()] };
    let tolerations: &[Toleration] =
        pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    // NodeUnschedulable.
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let taint =
            Taint { key: TAINT_UNSCHEDULABLE.into(), effect: "NoSchedule".into(), ..Default::default() };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return vec![REASON_UNSCHEDULABLE.into()];
        }
    }
    // TaintToleration (PreferNoSchedule only matters to scoring).
    for taint in effective_taints(node) {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, &taint))
        {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            )];
        }
    }
    // NodeAffinity (nodeSelector and required node affinity).
    if !matches_node_affinity(pod, node) {
        return vec![REASON_AFFINITY.into()];
    }
    // NodeResourcesFit.
    let mut reasons = Vec::new();
    if info.pods.len() as i64 + 1 > info.allocatable_pods {
        reasons.push("Too many pods".to_string());
    }
    let free = |alloc: i64, used: i64| alloc - used;
    if req.milli_cpu > 0 && req.milli_cpu > free(info.allocatable.milli_cpu, info.requested.milli_cpu) {
        reasons.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > free(info.allocatable.memory, info.requested.memory) {
        reasons.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > free(info.allocatable.ephemeral_storage, info.requested.ephemeral_storage)
    {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    reasons
}

/// The node's taints, plus the not-ready (or unreachable) NoSchedule taint implied by a Ready
/// condition that is not True, when the node lifecycle controller has not put it there yet.
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let implied = match ready {
        Some("True") => None,
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => Some(TAINT_NOT_READY),
    };
    if let Some(key) = implied {
        if !taints.iter().any(|t| t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE) {
            taints.push(Taint { key: key.into(), effect: "NoSchedule".into(), ..Default::default() });
        }
    }
    taints
}

/// One node selector term against a node (its labels and name).
pub fn term_matches_node(term: &NodeSelectorTerm, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    api_types::scheduling::term_matches(term, labels, node.metadata.name.as_deref().unwrap_or_default())
}

/// Upstream's FitError message: "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't
/// match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims
/// found for incoming pod, 2 Preemption is not helpful for scheduling." `reasons` counts nodes per
/// reason, `resolvable` is how many nodes failed only in ways preemption could address: kplane
/// does not preempt, and as upstream's preemption finds no victims among pods of equal priority
/// (every pod here), those nodes read "No preemption victims found for incoming pod".
pub fn fit_error(num_nodes: usize, reasons: &BTreeMap<String, usize>, resolvable: usize) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut pre = Vec::new();
    if resolvable > 0 {
        pre.push(format!("{resolvable} No preemption victims found for incoming pod"));
    }
    if num_nodes > resolvable {
        pre.push(format!("{} Preemption is not helpful for scheduling", num_nodes - resolvable));
    }
    pre.sort();
    format!(
        "0/{num_nodes} nodes are available: {}. preemption: 0/{num_nodes} nodes are available: {}.",
        parts.join(", "),
        pre.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_message_matches_upstream() {
        let mut r = BTreeMap::new();
        r.insert(REASON_AFFINITY.to_string(), 2);
        r.insert("Insufficient cpu".to_string(), 1);
        assert_eq!(
            fit_error(3, &r, 1),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
             2 Preemption is not helpful for scheduling."
        );
        let mut r = BTreeMap::new();
        r.insert("node(s) didn't match pod anti-affinity rules".to_string(), 3);
        assert_eq!(
            fit_error(3, &r, 3),
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
             preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
    }
}
