//! Mutating admission that upstream enables by default and kplane's components rely on.
//!
//! DefaultTolerationSeconds: every pod tolerates the `not-ready` and `unreachable` NoExecute taints for
//! a bounded time (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`,
//! 300 s upstream), so a node that stops reporting has its pods evicted after that long, not at once.

use api_types::ResourceDef;
use serde_json::{json, Value};

use crate::AppState;

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Applies the create-time admission mutations to `obj`.
pub fn on_create(st: &AppState, res: &ResourceDef, obj: &mut Value) {
    if res.kind == "Pod" {
        default_toleration_seconds(obj, st.config.default_not_ready_toleration_seconds, NOT_READY_TAINT);
        default_toleration_seconds(obj, st.config.default_unreachable_toleration_seconds, UNREACHABLE_TAINT);
    }
}

fn default_toleration_seconds(pod: &mut Value, seconds: i64, taint: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    let tolerated = list.iter().any(|t| {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        (key.is_empty() || key == taint) && (effect.is_empty() || effect == "NoExecute")
    });
    if !tolerated {
        list.push(
            json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_both_tolerations_once() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod, 300, NOT_READY_TAINT);
        default_toleration_seconds(&mut pod, 300, NOT_READY_TAINT);
        default_toleration_seconds(&mut pod, 7, UNREACHABLE_TAINT);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["tolerationSeconds"], 7);
    }

    #[test]
    fn an_existing_toleration_wins() {
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut pod, 300, UNREACHABLE_TAINT);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut pod = json!({"spec": {"tolerations": [{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}]}});
        default_toleration_seconds(&mut pod, 300, UNREACHABLE_TAINT);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }
}
