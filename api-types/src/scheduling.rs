//! Pure scheduling predicates shared by the scheduler (`nodes`) and the DaemonSet controller
//! (`controller-manager`): taints against tolerations (upstream's `Toleration.ToleratesTaint`,
//! `FindMatchingUntoleratedTaint`) and a pod's nodeSelector plus required node affinity against a
//! node (upstream's `nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)`), matchFields included.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Upstream's `FindMatchingUntoleratedTaint`: the first taint passing `filter` that no toleration
/// tolerates.
pub fn find_untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints.iter().filter(|t| filter(t)).find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// `spec.nodeSelector` (every pair must be a node label) and required node affinity (any term).
pub fn matches_node_affinity(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(spec) = pod.spec.as_ref() else { return true };
    if let Some(sel) = spec.node_selector.as_ref() {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            sel.node_selector_terms.iter().any(|t| term_matches(t, labels, name))
        }
    }
}

/// One node selector term: all its expressions and fields must match; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

/// One requirement against a value (`None`: the label is absent).
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(int), values.first().and_then(|s| int(s))) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }
    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_selector_and_affinity_terms() {
        let n = node(json!({"metadata": {"name": "w1", "labels": {"zone": "a", "gen": "5"}}}));
        let with = |exprs: serde_json::Value, fields: serde_json::Value| {
            pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": exprs, "matchFields": fields}]}}}}}))
        };
        let ok = |e, f| matches_node_affinity(&with(e, f), &n);
        assert!(ok(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}]), json!([])));
        assert!(!ok(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}]), json!([])));
        assert!(ok(json!([{"key": "zone", "operator": "Exists"}]), json!([])));
        assert!(ok(json!([{"key": "disk", "operator": "DoesNotExist"}]), json!([])));
        assert!(ok(json!([{"key": "gen", "operator": "Gt", "values": ["4"]}]), json!([])));
        assert!(!ok(json!([{"key": "gen", "operator": "Lt", "values": ["5"]}]), json!([])));
        assert!(ok(json!([]), json!([{"key": "metadata.name", "operator": "In", "values": ["w1"]}])));
        assert!(!ok(json!([]), json!([{"key": "metadata.name", "operator": "In", "values": ["w2"]}])));
        assert!(!ok(json!([]), json!([])), "an empty term matches nothing");
        let sel = |s: serde_json::Value| pod(json!({"spec": {"containers": [], "nodeSelector": s}}));
        assert!(matches_node_affinity(&sel(json!({"zone": "a"})), &n));
        assert!(!matches_node_affinity(&sel(json!({"zone": "b"})), &n));
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let t = |v: serde_json::Value| serde_json::from_value::<Toleration>(v).unwrap();
        assert!(tolerates(&t(json!({"key": "k", "operator": "Equal", "value": "v"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Equal", "value": "w"})), &taint));
        assert!(tolerates(&t(json!({"key": "k", "operator": "Exists"})), &taint));
        assert!(tolerates(&t(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})), &taint));
    }

    #[test]
    fn untolerated_taints_by_effect() {
        let taints: Vec<Taint> = serde_json::from_value(json!([
            {"key": "a", "effect": "PreferNoSchedule"},
            {"key": "b", "value": "x", "effect": "NoSchedule"},
        ]))
        .unwrap();
        let hard = |t: &Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
        assert_eq!(find_untolerated_taint(&taints, &[], hard).map(|t| t.key.as_str()), Some("b"));
        let tol: Vec<Toleration> = serde_json::from_value(json!([{"key": "b", "value": "x"}])).unwrap();
        assert!(find_untolerated_taint(&taints, &tol, hard).is_none());
        let wrong: Vec<Toleration> =
            serde_json::from_value(json!([{"key": "b", "operator": "Exists", "effect": "NoExecute"}])).unwrap();
        assert!(find_untolerated_taint(&taints, &wrong, hard).is_some());
        assert!(find_untolerated_taint(&taints, &[], |t| t.effect == "NoExecute").is_none());
    }
}
