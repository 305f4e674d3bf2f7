//! Ranking the feasible nodes as upstream's default profile does: each score plugin gives every
//! feasible node 0..=100 (normalised as upstream's plugin does), the weighted sum ranks them, and
//! ties are broken at random ([`select_host`], upstream's reservoir sampling in `selectHost`).
//!
//! Plugins and weights (upstream `apis/config/v1/default_plugins.go`): TaintToleration 3,
//! NodeAffinity 2, NodeResourcesFit (LeastAllocated, cpu and memory weight 1) 1, PodTopologySpread 2
//! (`spread.rs`), InterPodAffinity 2 (`interpod.rs`), NodeResourcesBalancedAllocation 1.
//! ImageLocality (weight 1) is left out: simulated nodes hold no images.

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use rand::Rng;

use super::cache::{NodeInfo, Resources};
use super::filter;

pub const MAX_NODE_SCORE: i64 = 100;
pub const WEIGHT_TAINT_TOLERATION: i64 = 3;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_RESOURCES_FIT: i64 = 1;
pub const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;
pub const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
pub const WEIGHT_BALANCED_ALLOCATION: i64 = 1;

/// NodeResourcesFit, LeastAllocated strategy: per resource `(allocatable − requested) × 100 /
/// allocatable` (0 when over), averaged with weights cpu 1, memory 1. `nonzero_req` is the pod's
/// requests with the non-zero defaults; the node's side uses its pods' non-zero requests too.
pub fn least_allocated(nonzero_req: &Resources, info: &NodeInfo) -> i64 {
    let one = |alloc: i64, requested: i64| {
        if alloc == 0 || requested > alloc {
            0
        } else {
            (alloc - requested) * MAX_NODE_SCORE / alloc
        }
    };
    let cpu = one(info.allocatable.milli_cpu, info.nonzero_requested.milli_cpu + nonzero_req.milli_cpu);
    let mem = one(info.allocatable.memory, info.nonzero_requested.memory + nonzero_req.memory);
    (cpu + mem) / 2
}

/// Whether the pod requests neither cpu nor memory: upstream's BalancedAllocation skips those
/// (kubernetes#129138), so it gives every node 0.
pub fn is_best_effort(req: &Resources) -> bool {
    req.milli_cpu == 0 && req.memory == 0
}

/// NodeResourcesBalancedAllocation: `(1 − |cpu fraction − memory fraction| / 2) × 100`, with the
/// node's actual requests plus the pod's (fractions capped at 1; a resource with no allocatable is
/// left out).
pub fn balanced_allocation(req: &Resources, info: &NodeInfo) -> i64 {
    let mut fractions = Vec::with_capacity(2);
    for (alloc, requested) in [
        (info.allocatable.milli_cpu, info.requested.milli_cpu + req.milli_cpu),
        (info.allocatable.memory, info.requested.memory + req.memory),
    ] {
        if alloc != 0 {
            fractions.push((requested as f64 / alloc as f64).min(1.0));
        }
    }
    let std = if fractions.len() == 2 { ((fractions[0] - fractions[1]) / 2.0).abs() } else { 0.0 };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// TaintToleration's raw score: how many PreferNoSchedule taints of the node the pod does not
/// tolerate (only tolerations with an empty or PreferNoSchedule effect count). Normalised reversed.
pub fn intolerable_prefer_no_schedule(tolerations: &[Toleration], node: &Node) -> i64 {
    let relevant: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .collect();
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !relevant.iter().any(|tol| filter::tolerates(tol, t)))
        .count() as i64
}

/// NodeAffinity's raw score: the sum of the weights of the pod's preferred node affinity terms the
/// node matches. Normalised with [`default_normalize`].
pub fn preferred_node_affinity(pod: &Pod, node: &Node) -> i64 {
    let prefs = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default();
    prefs
        .iter()
        .filter(|p| p.weight != 0 && filter::term_matches_node(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// Upstream's `helper.DefaultNormalizeScore(100, reverse, scores)`: scaled so the largest is 100
/// (reversed: 100 − that); all 0 (reversed: 100) when the largest is 0.
pub fn default_normalize(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max == 0 {
                return if reverse { MAX_NODE_SCORE } else { 0 };
            }
            let s = MAX_NODE_SCORE * s / max;
            if reverse {
                MAX_NODE_SCORE - s
            } else {
                s
            }
        })
        .collect()
}

/// Upstream's `selectHost`: the highest total wins; among equal totals each is chosen with equal
/// probability (reservoir sampling in one pass). None for an empty list.
pub fn select_host<'a>(scored: &[(&'a str, i64)], rng: &mut impl Rng) -> Option<&'a str> {
    let (mut best, mut max) = (scored.first()?.0, scored[0].1);
    let mut ties = 1u32;
    for &(name, s) in &scored[1..] {
        if s > max {
            (best, max, ties) = (name, s, 1);
        } else if s == max {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = name;
            }
        }
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;

    fn node_info(cpu: i64, mem: i64, used: Resources, nonzero_used: Resources) -> NodeInfo {
        NodeInfo {
            allocatable: Resources { milli_cpu: cpu, memory: mem, ephemeral_storage: 0 },
            requested: used,
            nonzero_requested: nonzero_used,
            ..Default::default()
        }
    }
    fn r(cpu: i64, mem: i64) -> Resources {
        Resources { milli_cpu: cpu, memory: mem, ephemeral_storage: 0 }
    }

    #[test]
    fn least_allocated_matches_upstreams_examples() {
        // least_allocated_test.go "nothing scheduled, resources requested, differently sized nodes":
        // node1 4000m/10000, node2 6000m/10000, pod 3000m/5000 → cpu (4000-3000)*100/4000 = 25,
        // mem 50 → 37; node2: cpu 50, mem 50 → 50.
        let pod = r(3000, 5000);
        assert_eq!(least_allocated(&pod, &node_info(4000, 10000, r(0, 0), r(0, 0))), 37);
        assert_eq!(least_allocated(&pod, &node_info(6000, 10000, r(0, 0), r(0, 0))), 50);
        // Requested beyond allocatable scores 0 for that resource.
        assert_eq!(least_allocated(&r(5000, 0), &node_info(4000, 10000, r(0, 0), r(0, 0))), 50);
        // A best-effort pod counts 100m/200Mi: the node holding five of them scores lower.
        let be = r(100, 200 * MI);
        let busy = node_info(4000, 8 * GI, r(0, 0), r(500, 1000 * MI));
        let idle = node_info(4000, 8 * GI, r(0, 0), r(0, 0));
        assert_eq!(least_allocated(&be, &idle), (97 + 97) / 2);
        assert_eq!(least_allocated(&be, &busy), (85 + 85) / 2);
    }

    #[test]
    fn balanced_allocation_matches_upstreams_examples() {
        // balanced_allocation_test.go "nothing scheduled, resources requested, differently sized
        // nodes": pod 3000m/5000; node1 4000m/10000 → fractions 0.75/0.5, std 0.125 → 87;
        // node2 6000m/10000 → 0.5/0.5 → 100.
        let pod = r(3000, 5000);
        assert_eq!(balanced_allocation(&pod, &node_info(4000, 10000, r(0, 0), r(0, 0))), 87);
        assert_eq!(balanced_allocation(&pod, &node_info(6000, 10000, r(0, 0), r(0, 0))), 100);
        // The node's actual requests count (not the non-zero ones).
        let n = node_info(4000, 10000, r(3000, 0), r(3000, 5000));
        assert_eq!(balanced_allocation(&r(0, 5000), &n), 87);
        assert!(is_best_effort(&r(0, 0)) && !is_best_effort(&r(1, 0)));
    }

    #[test]
    fn taint_toleration_counts_untolerated_prefer_no_schedule_and_normalises_reversed() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "a", "value": "1", "effect": "PreferNoSchedule"},
            {"key": "b", "value": "1", "effect": "PreferNoSchedule"},
            {"key": "c", "value": "1", "effect": "NoSchedule"}]}}))
        .unwrap();
        let tol = |v: serde_json::Value| -> Vec<Toleration> { serde_json::from_value(v).unwrap() };
        assert_eq!(intolerable_prefer_no_schedule(&[], &node), 2);
        assert_eq!(
            intolerable_prefer_no_schedule(
                &tol(json!([{"key": "a", "operator": "Equal", "value": "1", "effect": "PreferNoSchedule"}])),
                &node
            ),
            1
        );
        // A NoSchedule toleration does not help against PreferNoSchedule.
        assert_eq!(
            intolerable_prefer_no_schedule(
                &tol(json!([{"key": "a", "operator": "Exists", "effect": "NoSchedule"}])),
                &node
            ),
            2
        );
        assert_eq!(intolerable_prefer_no_schedule(&tol(json!([{"operator": "Exists"}])), &node), 0);
        // Upstream taint_toleration_test.go: counts 0, 1, 2 → 100, 50, 0.
        assert_eq!(default_normalize(&[0, 1, 2], true), vec![100, 50, 0]);
        assert_eq!(default_normalize(&[0, 0], true), vec![100, 100]);
    }

    #[test]
    fn preferred_node_affinity_sums_matching_weights() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 2, "preference": {"matchExpressions": [{"key": "foo", "operator": "In", "values": ["bar"]}]}},
                {"weight": 4, "preference": {"matchExpressions": [{"key": "key", "operator": "In", "values": ["value"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [
                    {"key": "foo", "operator": "In", "values": ["bar"]},
                    {"key": "key", "operator": "In", "values": ["value"]},
                    {"key": "az", "operator": "In", "values": ["az1"]}]}}]}}}}))
        .unwrap();
        let node = |l: serde_json::Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n", "labels": l}})).unwrap()
        };
        // Upstream node_affinity_test.go "all nodes matches the preferred scheduling requirements":
        // machine1 {foo: bar} → 2, machine2 {key: value} → 4, machine5 all three → 11;
        // normalised: 18, 36, 100.
        let raw = [
            preferred_node_affinity(&pod, &node(json!({"foo": "bar"}))),
            preferred_node_affinity(&pod, &node(json!({"key": "value"}))),
            preferred_node_affinity(&pod, &node(json!({"foo": "bar", "key": "value", "az": "az1"}))),
        ];
        assert_eq!(raw, [2, 4, 11]);
        assert_eq!(default_normalize(&raw, false), vec![18, 36, 100]);
        assert_eq!(default_normalize(&[0, 0], false), vec![0, 0]);
    }

    #[test]
    fn select_host_takes_the_best_and_breaks_ties_at_random() {
        let mut rng = rand::rng();
        assert_eq!(select_host(&[], &mut rng), None);
        assert_eq!(select_host(&[("a", 1), ("b", 5), ("c", 3)], &mut rng), Some("b"));
        let mut seen = std::collections::HashMap::new();
        for _ in 0..3000 {
            let h = select_host(&[("a", 7), ("b", 9), ("c", 9), ("d", 9)], &mut rng).unwrap();
            *seen.entry(h).or_insert(0) += 1;
        }
        assert!(!seen.contains_key("a"));
        // Each of the three tied nodes is chosen about a third of the time (binomial: 1000 ± 26).
        for n in ["b", "c", "d"] {
            let c = seen[n];
            assert!((800..1200).contains(&c), "{n} chosen {c} times of 3000: {seen:?}");
        }
    }
}
