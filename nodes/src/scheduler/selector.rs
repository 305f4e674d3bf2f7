//! Label selectors as the scheduler evaluates them (upstream's `labels.Selector`): a conjunction of
//! requirements. Built from a `metav1.LabelSelector` (pod affinity terms, topology spread
//! constraints, ReplicaSet/StatefulSet selectors) or from a plain map (Service and
//! ReplicationController selectors).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

/// `None` in the places that hold one means "matches nothing" (upstream's `labels.Nothing()`, what
/// a nil or invalid LabelSelector becomes); an empty `Selector` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// `metav1.LabelSelectorAsSelector`: an unknown operator makes the selector invalid (`None`).
    pub fn from_label_selector(s: &LabelSelector) -> Option<Selector> {
        let mut reqs: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement { key: k.clone(), op: Op::In(vec![v.clone()]) })
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return None,
            };
            reqs.push(Requirement { key: e.key.clone(), op });
        }
        Some(Selector(reqs))
    }

    /// `labels.SelectorFromSet`: every pair must be present.
    pub fn from_map(m: &BTreeMap<String, String>) -> Selector {
        Selector(m.iter().map(|(k, v)| Requirement { key: k.clone(), op: Op::In(vec![v.clone()]) }).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add(&mut self, other: Selector) {
        self.0.extend(other.0);
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
                Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }
}

/// A nil LabelSelector matches nothing; an invalid one too.
pub fn of(s: Option<&LabelSelector>) -> Option<Selector> {
    s.and_then(Selector::from_label_selector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(v).unwrap()
    }
    fn sel(v: serde_json::Value) -> Option<Selector> {
        Selector::from_label_selector(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(sel(json!({})).unwrap().matches(&l), "an empty selector matches everything");
        assert!(sel(json!({"matchLabels": {"app": "web"}})).unwrap().matches(&l));
        assert!(!sel(json!({"matchLabels": {"app": "db"}})).unwrap().matches(&l));
        let e = |op: &str, vals: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": vals}]})).unwrap()
        };
        assert!(e("In", json!(["fe", "be"])).matches(&l));
        assert!(!e("NotIn", json!(["fe"])).matches(&l));
        assert!(e("Exists", json!([])).matches(&l));
        assert!(!e("DoesNotExist", json!([])).matches(&l));
        assert!(sel(json!({"matchExpressions": [{"key": "x", "operator": "Bogus"}]})).is_none());
        assert!(of(None).is_none(), "nil selects nothing");
    }
}
