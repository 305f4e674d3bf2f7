//! Upstream's InterPodAffinity plugin. Filter: the pod's required affinity (some pod matching all
//! its terms in the node's domain, or none anywhere when the pod matches its own terms), its
//! required anti-affinity (no matching pod in the domain), and the symmetry — no existing pod whose
//! required anti-affinity matches this pod in the domain. Score: preferred terms both ways, and
//! existing pods' required affinity at `hardPodAffinityWeight` 1, normalised to 0..=100.

use std::collections::{BTreeMap, HashMap};

use super::cache::{AffinityTerm, NodeInfo, PodAffinityTerms, PodUsage};

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

type Pair = (String, String);

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

fn labels_of(info: &NodeInfo) -> &BTreeMap<String, String> {
    info.labels().unwrap_or(&NO_LABELS)
}

fn matches_all(terms: &[AffinityTerm], p: &PodUsage) -> bool {
    terms.iter().all(|t| t.matches(&p.namespace, &p.labels))
}

/// PreFilter state: counts of matching pods per (topology key, value).
pub struct Hard {
    affinity: HashMap<Pair, i64>,
    anti: HashMap<Pair, i64>,
    existing_anti: HashMap<Pair, i64>,
    terms: PodAffinityTerms,
    self_match: bool,
}

impl Hard {
    /// `pod` is the incoming pod (its usage and terms); `nodes` every node of the cache.
    pub fn new(pod: &PodUsage, any_existing_affinity: bool, nodes: &[&NodeInfo]) -> Hard {
        let terms = pod.affinity.as_deref().cloned().unwrap_or_default();
        let mut h = Hard {
            affinity: HashMap::new(),
            anti: HashMap::new(),
            existing_anti: HashMap::new(),
            self_match: matches_all(&terms.required_affinity, pod),
            terms,
        };
        let own = !h.terms.required_affinity.is_empty() || !h.terms.required_anti.is_empty();
        if !own && !any_existing_affinity {
            return h;
        }
        for info in nodes {
            if info.node.is_none() || (!own && info.with_affinity == 0) {
                continue;
            }
            let labels = labels_of(info);
            let bump = |m: &mut HashMap<Pair, i64>, key: &str| {
                if let Some(v) = labels.get(key) {
                    *m.entry((key.to_string(), v.clone())).or_default() += 1;
                }
            };
            for p in info.pods.values() {
                if let Some(et) = p.affinity.as_deref() {
                    for t in &et.required_anti {
                        if t.matches(&pod.namespace, &pod.labels) {
                            bump(&mut h.existing_anti, &t.topology_key);
                        }
                    }
                }
                if !h.terms.required_affinity.is_empty() && matches_all(&h.terms.required_affinity, p) {
                    for t in &h.terms.required_affinity {
                        bump(&mut h.affinity, &t.topology_key);
                    }
                }
                for t in &h.terms.required_anti {
                    if t.matches(&p.namespace, &p.labels) {
                        bump(&mut h.anti, &t.topology_key);
                    }
                }
            }
        }
        h
    }

    /// None when the node passes; else the reason and whether preemption could help.
    pub fn check(&self, info: &NodeInfo) -> Option<(&'static str, bool)> {
        let labels = labels_of(info);
        let count = |m: &HashMap<Pair, i64>, k: &str, v: &str| m.get(&(k.to_string(), v.to_string())).copied();
        let mut pods_exist = true;
        for t in &self.terms.required_affinity {
            let Some(v) = labels.get(&t.topology_key) else { return Some((REASON_AFFINITY, false)) };
            if count(&self.affinity, &t.topology_key, v).unwrap_or(0) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere.
        let first_of_group = self.affinity.is_empty() && self.self_match;
        if !pods_exist && !first_of_group {
            return Some((REASON_AFFINITY, false));
        }
        for t in &self.terms.required_anti {
            if let Some(v) = labels.get(&t.topology_key) {
                if count(&self.anti, &t.topology_key, v).unwrap_or(0) > 0 {
                    return Some((REASON_ANTI_AFFINITY, true));
                }
            }
        }
        if !self.existing_anti.is_empty()
            && labels.iter().any(|(k, v)| count(&self.existing_anti, k, v).unwrap_or(0) > 0)
        {
            return Some((REASON_EXISTING_ANTI_AFFINITY, true));
        }
        None
    }
}

/// PreScore + Score + NormalizeScore: 0..=100 per feasible node.
pub fn scores(
    pod: &PodUsage,
    any_existing_affinity: bool,
    all: &[&NodeInfo],
    feasible: &[&NodeInfo],
) -> Vec<i64> {
    let terms = pod.affinity.as_deref().cloned().unwrap_or_default();
    let own = !terms.preferred_affinity.is_empty() || !terms.preferred_anti.is_empty();
    if !own && !any_existing_affinity {
        return vec![0; feasible.len()];
    }
    let mut topo: HashMap<Pair, i64> = HashMap::new();
    for info in all {
        if info.node.is_none() || (!own && info.with_affinity == 0) {
            continue;
        }
        let labels = labels_of(info);
        let mut add = |t: &AffinityTerm, sign: i64| {
            if let Some(v) = labels.get(&t.topology_key) {
                *topo.entry((t.topology_key.clone(), v.clone())).or_default() += sign * t.weight;
            }
        };
        for p in info.pods.values() {
            for t in &terms.preferred_affinity {
                if t.matches(&p.namespace, &p.labels) {
                    add(t, 1);
                }
            }
            for t in &terms.preferred_anti {
                if t.matches(&p.namespace, &p.labels) {
                    add(t, -1);
                }
            }
            let Some(et) = p.affinity.as_deref() else { continue };
            for t in &et.required_affinity {
                if t.matches(&pod.namespace, &pod.labels) {
                    add(&AffinityTerm { weight: HARD_POD_AFFINITY_WEIGHT, ..t.clone() }, 1);
                }
            }
            for t in &et.preferred_affinity {
                if t.matches(&pod.namespace, &pod.labels) {
                    add(t, 1);
                }
            }
            for t in &et.preferred_anti {
                if t.matches(&pod.namespace, &pod.labels) {
                    add(t, -1);
                }
            }
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|info| {
            labels_of(info).iter().map(|(k, v)| topo.get(&(k.clone(), v.clone())).copied().unwrap_or(0)).sum()
        })
        .collect();
    normalize(&raw)
}

/// Upstream's NormalizeScore: `100 × (s − min) / (max − min)`, all 0 when they are equal.
pub fn normalize(raw: &[i64]) -> Vec<i64> {
    let (Some(min), Some(max)) = (raw.iter().min(), raw.iter().max()) else { return Vec::new() };
    let diff = max - min;
    raw.iter().map(|s| if diff > 0 { (100.0 * ((s - min) as f64 / diff as f64)) as i64 } else { 0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::cache::testing::{cache, infos, node, pod};
    use super::*;
    use serde_json::{json, Value};

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn check_all(
        incoming: &k8s_openapi::api::core::v1::Pod,
        c: &super::super::cache::Cache,
    ) -> Vec<Option<&'static str>> {
        let all = infos(c);
        let usage = PodUsage::of(incoming);
        let hard = Hard::new(&usage, c.with_affinity > 0, &all);
        all.iter().map(|i| hard.check(i).map(|(r, _)| r)).collect()
    }

    #[test]
    fn required_anti_affinity_on_hostname_keeps_one_per_node() {
        let nodes = ["n1", "n2", "n3"].map(|n| node(n, json!({}))).to_vec();
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [term("web", "kubernetes.io/hostname")]}}});
        let c = cache(nodes, vec![("n1", pod("w1", json!({"app": "web"}), anti.clone()))]);
        let incoming = pod("w2", json!({"app": "web"}), anti);
        assert_eq!(check_all(&incoming, &c), vec![Some(REASON_ANTI_AFFINITY), None, None]);
        // A pod of another app is not repelled by its own (empty) rules, but by the existing
        // pod's? No: w1's anti-affinity selects app=web only.
        let other = pod("db", json!({"app": "db"}), json!({}));
        assert_eq!(check_all(&other, &c), vec![None, None, None]);
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let nodes = vec![
            node("n1", json!({"zone": "z1"})),
            node("n2", json!({"zone": "z1"})),
            node("n3", json!({"zone": "z2"})),
        ];
        let repels_db = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [term("db", "zone")]}}});
        let c = cache(nodes, vec![("n1", pod("web", json!({"app": "web"}), repels_db))]);
        let db = pod("db", json!({"app": "db"}), json!({}));
        assert_eq!(
            check_all(&db, &c),
            vec![Some(REASON_EXISTING_ANTI_AFFINITY), Some(REASON_EXISTING_ANTI_AFFINITY), None]
        );
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_domain_except_for_the_first_of_a_group() {
        let nodes = vec![
            node("n1", json!({"zone": "z1"})),
            node("n2", json!({"zone": "z1"})),
            node("n3", json!({"zone": "z2"})),
            node("n4", json!({})),
        ];
        let wants_cache = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [term("cache", "zone")]}}});
        let c = cache(nodes.clone(), vec![("n1", pod("c1", json!({"app": "cache"}), json!({})))]);
        let web = pod("web", json!({"app": "web"}), wants_cache.clone());
        assert_eq!(check_all(&web, &c), vec![None, None, Some(REASON_AFFINITY), Some(REASON_AFFINITY)]);
        // No cache pod anywhere: a web pod cannot go anywhere...
        let empty = cache(nodes, vec![]);
        assert_eq!(check_all(&web, &empty), vec![Some(REASON_AFFINITY); 4]);
        // ...but a cache pod with affinity to its own kind may (not where the key is missing).
        let first = pod("c0", json!({"app": "cache"}), wants_cache);
        assert_eq!(check_all(&first, &empty), vec![None, None, None, Some(REASON_AFFINITY)]);
    }

    #[test]
    fn preferred_terms_score_both_ways_and_normalise() {
        let nodes = ["n1", "n2", "n3"].map(|n| node(n, json!({}))).to_vec();
        let host = "kubernetes.io/hostname";
        let existing_pref_anti = json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [{"weight": 10, "podAffinityTerm": term("web", host)}]}}});
        let c = cache(
            nodes,
            vec![
                ("n1", pod("c1", json!({"app": "cache"}), json!({}))),
                ("n2", pod("x", json!({"app": "x"}), existing_pref_anti)),
            ],
        );
        let all = infos(&c);
        let score =
            |p: &k8s_openapi::api::core::v1::Pod| scores(&PodUsage::of(p), c.with_affinity > 0, &all, &all);
        // Incoming preferred affinity (weight 5) to cache: n1 = 5, n2 = −10 (x's preferred
        // anti-affinity against web), n3 = 0 → 100 × (s − min) / 15 = 100, 0, 66.
        let web = pod(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [{"weight": 5, "podAffinityTerm": term("cache", host)}]}}}),
        );
        assert_eq!(score(&web), vec![100, 0, 66]);
        // Preferred anti-affinity to cache: n1 = −5, n2 = −10, n3 = 0.
        let web2 = pod(
            "web2",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [{"weight": 5, "podAffinityTerm": term("cache", host)}]}}}),
        );
        assert_eq!(score(&web2), vec![50, 0, 100]);
        // A pod nobody's terms mention: all equal, all 0.
        assert_eq!(score(&pod("z", json!({"app": "z"}), json!({}))), vec![0, 0, 0]);
        assert_eq!(normalize(&[3, 3]), vec![0, 0]);
    }
}
