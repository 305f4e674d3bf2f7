//! Upstream's PodTopologySpread plugin: `topologySpreadConstraints` with `DoNotSchedule` filter
//! (skew = matching pods in the node's domain + self − the global minimum ≤ maxSkew), those with
//! `ScheduleAnyway` score; a pod with no constraints of its own gets the system defaults
//! (hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway) over the selector of the Services and
//! controller that select it. Pure functions over the cache's nodes.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::cache::{NodeInfo, Owners};
use super::filter;
use super::selector::{self, Selector};

pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const REASON_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

#[derive(Clone, Debug)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// None selects nothing.
    pub selector: Option<Selector>,
    pub min_domains: i64,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node affinity count.
    pub honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints the pod tolerates count.
    pub honor_taints: bool,
}

impl Constraint {
    fn counts(&self, pod: &Pod, info: &NodeInfo) -> i64 {
        let Some(sel) = &self.selector else { return 0 };
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        info.spread_groups
            .iter()
            .filter(|((group_ns, labels), _)| group_ns == ns && sel.matches(labels))
            .map(|(_, n)| n)
            .sum()
    }

    fn includes(&self, pod: &Pod, node: &Node) -> bool {
        if self.honor_affinity && !filter::matches_node_affinity(pod, node) {
            return false;
        }
        if self.honor_taints {
            let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
            let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
            return taints
                .iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .all(|t| tolerations.iter().any(|tol| filter::tolerates(tol, t)));
        }
        true
    }
}

/// The pod's constraints with this `whenUnsatisfiable` (upstream's `filterTopologySpreadConstraints`,
/// `matchLabelKeys` merged into the selector).
pub fn explicit(pod: &Pod, when: &str) -> Vec<Constraint> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let cs = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_deref()).unwrap_or_default();
    cs.iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| {
            let mut sel = selector::of(c.label_selector.as_ref());
            if let Some(s) = sel.as_mut() {
                for k in c.match_label_keys.iter().flatten() {
                    if let Some(v) = labels.get(k) {
                        s.add(Selector::from_map(&BTreeMap::from([(k.clone(), v.clone())])));
                    }
                }
            }
            Constraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                selector: sel,
                min_domains: c.min_domains.map(i64::from).unwrap_or(1),
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

/// Upstream's system default constraints (`DefaultConstraints` of the default profile), over the
/// pod's default selector; none when nothing selects the pod.
pub fn system_default(pod: &Pod, owners: &Owners) -> Vec<Constraint> {
    let sel = owners.default_selector(pod);
    if sel.is_empty() {
        return Vec::new();
    }
    [(HOSTNAME, 3), (ZONE, 5)]
        .into_iter()
        .map(|(key, skew)| Constraint {
            max_skew: skew,
            topology_key: key.to_string(),
            selector: Some(sel.clone()),
            min_domains: 1,
            honor_affinity: true,
            honor_taints: false,
        })
        .collect()
}

fn has_all_keys(labels: &BTreeMap<String, String>, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| labels.contains_key(&c.topology_key))
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

fn labels_of(info: &NodeInfo) -> &BTreeMap<String, String> {
    info.labels().unwrap_or(&NO_LABELS)
}

/// PreFilter + Filter for the `DoNotSchedule` constraints: computed once over all nodes, then
/// [`Hard::check`] per node.
pub struct Hard {
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per topology value.
    counts: Vec<HashMap<String, i64>>,
}

impl Hard {
    pub fn new(pod: &Pod, nodes: &[&NodeInfo]) -> Hard {
        let constraints = explicit(pod, "DoNotSchedule");
        let mut counts = vec![HashMap::new(); constraints.len()];
        if !constraints.is_empty() {
            for info in nodes {
                let Some(node) = info.node.as_ref() else { continue };
                let labels = labels_of(info);
                if !has_all_keys(labels, &constraints) {
                    continue;
                }
                for (i, c) in constraints.iter().enumerate() {
                    if c.includes(pod, node) {
                        *counts[i].entry(labels[&c.topology_key].clone()).or_default() += c.counts(pod, info);
                    }
                }
            }
        }
        Hard { constraints, counts }
    }

    /// None when the node passes; else the reason and whether preemption could help.
    pub fn check(&self, pod: &Pod, info: &NodeInfo) -> Option<(&'static str, bool)> {
        let labels = labels_of(info);
        let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else { return Some((REASON_MISSING_LABEL, false)) };
            let mut min = self.counts[i].values().copied().min().unwrap_or(i64::from(i32::MAX));
            if (self.counts[i].len() as i64) < c.min_domains {
                min = 0;
            }
            let own = i64::from(c.selector.as_ref().is_some_and(|s| s.matches(pod_labels)));
            let skew = self.counts[i].get(value).copied().unwrap_or(0) + own - min;
            if skew > c.max_skew {
                return Some((REASON_NOT_MATCH, true));
            }
        }
        None
    }
}

/// PreScore + Score + NormalizeScore for the `ScheduleAnyway` constraints (or the system defaults
/// when the pod has no constraints at all): 0..=100 per feasible node, fewer matching pods better.
pub fn scores(pod: &Pod, owners: &Owners, all: &[&NodeInfo], feasible: &[&NodeInfo]) -> Vec<i64> {
    let has_own =
        pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref()).is_some_and(|c| !c.is_empty());
    let constraints = if has_own { explicit(pod, "ScheduleAnyway") } else { system_default(pod, owners) };
    if constraints.is_empty() {
        return vec![0; feasible.len()];
    }
    // Only user-given constraints need every topology key on a node; the defaults let nodes
    // without a zone label still spread by hostname.
    let require_all = has_own;
    let mut ignored = HashSet::new();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for (n, info) in feasible.iter().enumerate() {
        let labels = labels_of(info);
        if require_all && !has_all_keys(labels, &constraints) {
            ignored.insert(n);
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key != HOSTNAME {
                counts[i].entry(labels.get(&c.topology_key).cloned().unwrap_or_default()).or_default();
            }
        }
    }
    let weights: Vec<f64> = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size =
                if c.topology_key == HOSTNAME { feasible.len() - ignored.len() } else { counts[i].len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    for info in all {
        let Some(node) = info.node.as_ref() else { continue };
        let labels = labels_of(info);
        if require_all && !has_all_keys(labels, &constraints) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key == HOSTNAME || !c.includes(pod, node) {
                continue;
            }
            let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
            if let Some(slot) = counts[i].get_mut(&value) {
                *slot += c.counts(pod, info);
            }
        }
    }
    let raw: Vec<Option<i64>> = feasible
        .iter()
        .enumerate()
        .map(|(n, info)| {
            if ignored.contains(&n) {
                return None;
            }
            let labels = labels_of(info);
            let mut score = 0.0;
            for (i, c) in constraints.iter().enumerate() {
                let Some(value) = labels.get(&c.topology_key) else { continue };
                let cnt = if c.topology_key == HOSTNAME {
                    c.counts(pod, info)
                } else {
                    counts[i].get(value).copied().unwrap_or(0)
                };
                score += score_for_count(cnt, c.max_skew, weights[i]);
            }
            Some(score.round() as i64)
        })
        .collect();
    normalize(&raw)
}

/// Upstream's `scoreForCount`: `maxSkew − 1` waters down small differences.
pub fn score_for_count(cnt: i64, max_skew: i64, weight: f64) -> f64 {
    cnt as f64 * weight + (max_skew - 1) as f64
}

/// Upstream's NormalizeScore: ignored nodes 0; else `100 × (max + min − s) / max`.
pub fn normalize(raw: &[Option<i64>]) -> Vec<i64> {
    let vals = raw.iter().flatten();
    let min = vals.clone().copied().min().unwrap_or(i64::MAX);
    let max = vals.copied().max().unwrap_or(0).max(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => 100,
            Some(s) => 100 * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::cache::testing::{cache, infos, node, pod};
    use super::*;
    use serde_json::json;

    fn foo(name: &str) -> Pod {
        pod(name, json!({"foo": ""}), json!({}))
    }

    #[test]
    fn score_one_constraint_on_node_as_upstream() {
        // scoring_test.go "one constraint on node, all 4 nodes are candidates": maxSkew 1 on the
        // "node" key, pods a:2 b:1 c:0 d:3; weight ln(4+2); raw 4, 2, 0, 5 → 20, 60, 100, 0.
        let nodes = ["node-a", "node-b", "node-c", "node-d"].map(|n| node(n, json!({"node": n})));
        let placed = vec![
            ("node-a", foo("a1")),
            ("node-a", foo("a2")),
            ("node-b", foo("b1")),
            ("node-d", foo("d1")),
            ("node-d", foo("d2")),
            ("node-d", foo("d3")),
        ];
        let c = cache(nodes.to_vec(), placed);
        let incoming = pod(
            "p",
            json!({"foo": ""}),
            json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "node", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}}]}),
        );
        let all = infos(&c);
        assert_eq!(scores(&incoming, &c.owners, &all, &all), vec![20, 60, 100, 0]);
        // Only DoNotSchedule constraints: no soft ones, and no system defaults either.
        let hard_only = pod(
            "q",
            json!({"foo": ""}),
            json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}}]}),
        );
        assert_eq!(scores(&hard_only, &c.owners, &all, &all), vec![0, 0, 0, 0]);
    }

    #[test]
    fn system_defaults_spread_pods_of_a_replicaset_by_hostname_without_zone_labels() {
        let nodes = ["w0", "w1", "w2"].map(|n| node(n, json!({})));
        let rs = |name: &str, app: &str| {
            let mut p = pod(name, json!({"app": app}), json!({}));
            p.metadata.owner_references = Some(vec![serde_json::from_value(json!({"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": format!("{app}-rs"), "uid": format!("{app}-uid"),
                "controller": true}))
            .unwrap()]);
            p
        };
        let mut c =
            cache(nodes.to_vec(), vec![("w0", rs("a", "web")), ("w0", rs("b", "web")), ("w1", rs("c", "web"))]);
        let incoming = rs("p", "web");
        let all = infos(&c);
        // Nothing selects the pod yet (the ReplicaSet is unknown): no default spreading.
        assert_eq!(scores(&incoming, &c.owners, &all, &all), vec![0, 0, 0]);
        drop(all);
        c.owners.replicasets.insert(
            ("default".into(), "web-rs".into()),
            Selector::from_label_selector(
                &serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap(),
            ),
        );
        let all = infos(&c);
        // hostname maxSkew 3, weight ln(5): raw round(2×1.609+2)=5, round(1.609+2)=4, 2 →
        // 100×(5+2−s)/5 = 40, 60, 100. The zone constraint adds nothing: no node has the label.
        assert_eq!(scores(&incoming, &c.owners, &all, &all), vec![40, 60, 100]);
        // A Service selecting the pods is enough on its own too.
        let mut only_svc = super::super::cache::Owners::default();
        only_svc
            .services_flat
            .insert(("default".into(), "web".into()), [("app".to_string(), "web".to_string())].into());
        assert_eq!(scores(&incoming, &only_svc, &all, &all), vec![40, 60, 100]);
        // Pods of another namespace do not count.
        let mut other = incoming.clone();
        other.metadata.namespace = Some("other".into());
        assert_eq!(scores(&other, &only_svc, &all, &all), vec![0, 0, 0]);
    }

    #[test]
    fn do_not_schedule_filters_by_skew_and_missing_labels() {
        // filtering_test.go-style: zone1 = {a, b}, zone2 = {x, y}; matching pods a:1 b:1 x:1 →
        // zone1 holds 2, zone2 1; maxSkew 1: zone1 would reach skew 2, zone2 skew 1.
        let nodes = vec![
            node("a", json!({"zone": "zone1"})),
            node("b", json!({"zone": "zone1"})),
            node("x", json!({"zone": "zone2"})),
            node("y", json!({"zone": "zone2"})),
            node("nolabel", json!({})),
        ];
        let c = cache(nodes, vec![("a", foo("p1")), ("b", foo("p2")), ("x", foo("p3"))]);
        let incoming = pod(
            "p",
            json!({"foo": ""}),
            json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}}]}),
        );
        let all = infos(&c);
        let hard = Hard::new(&incoming, &all);
        let got: Vec<Option<&str>> = all.iter().map(|i| hard.check(&incoming, i).map(|(r, _)| r)).collect();
        assert_eq!(
            got,
            vec![Some(REASON_NOT_MATCH), Some(REASON_NOT_MATCH), Some(REASON_MISSING_LABEL), None, None],
            "nodes in name order: a, b, nolabel, x, y"
        );
        // maxSkew 2 lets zone1 take it as well.
        let mut loose = incoming.clone();
        loose.spec.as_mut().unwrap().topology_spread_constraints.as_mut().unwrap()[0].max_skew = 2;
        let hard = Hard::new(&loose, &all);
        assert!(hard.check(&loose, all[0]).is_none());
        // minDomains 3 with only 2 domains: the global minimum is 0, so zone2 (1+1) fails too.
        let mut min3 = incoming.clone();
        min3.spec.as_mut().unwrap().topology_spread_constraints.as_mut().unwrap()[0].min_domains = Some(3);
        let hard = Hard::new(&min3, &all);
        assert_eq!(hard.check(&min3, all[3]).map(|(r, _)| r), Some(REASON_NOT_MATCH));
    }
}
