//! The pure rules of a Job sync: upstream's pod-failure back-off, `podFailurePolicy` matching,
//! `successPolicy` matching, and the OnFailure restart count against `backoffLimit`.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{PodFailurePolicy, SuccessPolicy};
use k8s_openapi::api::core::v1::Pod;

use super::indexed;

/// Upstream's `DefaultJobPodFailureBackOff`: the delay after the first failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The cap of the doubling delay (six minutes, as the Job documentation states).
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 60);

/// The delay before a replacement pod after `failures` consecutive failures (since the last
/// success): 0, 10 s, 20 s, 40 s, … capped.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(20);
    BACKOFF_BASE.saturating_mul(1u32 << shift).min(BACKOFF_MAX)
}

/// What a matching `podFailurePolicy` rule does with a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    FailJob(String),
    FailIndex,
    Ignore,
    Count,
}

/// Upstream's `matchPodFailurePolicy`: the first rule (in order) that matches the failed pod, with
/// the message a FailJob rule puts on the FailureTarget/Failed conditions. `None`: no rule matched
/// (the failure counts).
pub fn match_failure_policy(policy: &PodFailurePolicy, pod: &Pod) -> Option<Action> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut message = None;
        if let Some(req) = &rule.on_exit_codes {
            let statuses = status.into_iter().flat_map(|s| {
                s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten())
            });
            for cs in statuses {
                if req.container_name.as_deref().is_some_and(|c| c != cs.name) {
                    continue;
                }
                let Some(code) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code)
                else {
                    continue;
                };
                // Exit code 0 never matches (upstream).
                if code == 0 {
                    continue;
                }
                let listed = req.values.contains(&code);
                let hit = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                if hit {
                    message = Some(format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        cs.name, rule.action
                    ));
                    break;
                }
            }
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conds = status.and_then(|s| s.conditions.as_ref());
            'p: for p in patterns {
                for c in conds.into_iter().flatten() {
                    if c.type_ == p.type_ && c.status == p.status {
                        message = Some(format!(
                            "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                            c.type_, rule.action
                        ));
                        break 'p;
                    }
                }
            }
        }
        if let Some(m) = message {
            return Some(match rule.action.as_str() {
                "FailJob" => Action::FailJob(m),
                "FailIndex" => Action::FailIndex,
                "Ignore" => Action::Ignore,
                _ => Action::Count,
            });
        }
    }
    None
}

/// Upstream's `matchSuccessPolicy`: the index of the first rule the succeeded indexes satisfy.
pub fn match_success_policy(
    policy: &SuccessPolicy,
    succeeded: &BTreeSet<i32>,
    completions: i32,
) -> Option<usize> {
    for (i, rule) in policy.rules.iter().enumerate() {
        let hit = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(ix), count) => {
                let want = indexed::parse(ix, completions);
                let have = want.intersection(succeeded).count() as i32;
                match count {
                    Some(c) => have >= c,
                    None => !want.is_empty() && have == want.len() as i32,
                }
            }
            (None, Some(c)) => succeeded.len() as i32 >= c,
            (None, None) => false,
        };
        if hit {
            return Some(i);
        }
    }
    None
}

/// Upstream's `pastBackoffLimitOnFailure`: with restartPolicy OnFailure, the restarts of the
/// containers of active pods count against backoffLimit.
pub fn past_backoff_limit_on_failure(active: &[&Pod], backoff_limit: i32) -> bool {
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum();
    if backoff_limit == 0 {
        return restarts > 0;
    }
    restarts >= backoff_limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
        SuccessPolicyRule,
    };
    use serde_json::json;

    #[test]
    fn backoff_doubles_from_ten_seconds_to_the_cap() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(6), Duration::from_secs(320));
        assert_eq!(backoff_delay(7), BACKOFF_MAX);
        assert_eq!(backoff_delay(1000), BACKOFF_MAX);
    }

    fn failed_pod(code: i32, conds: &[(&str, &str)]) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed",
                "conditions": conds.iter().map(|(t, s)| json!({"type": t, "status": s})).collect::<Vec<_>>(),
                "containerStatuses": [
                    {"name": "ok", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0}}},
                    {"name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": code}}}]}
        }))
        .unwrap()
    }

    fn rule(action: &str, op: &str, values: &[i32]) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn failure_policy_rules_match_in_order() {
        let policy = PodFailurePolicy {
            rules: vec![
                rule("Ignore", "In", &[1]),
                rule("FailJob", "In", &[42]),
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        status: "True".into(),
                        type_: "DisruptionTarget".into(),
                    }]),
                },
                rule("Count", "NotIn", &[7]),
            ],
        };
        assert_eq!(match_failure_policy(&policy, &failed_pod(1, &[])), Some(Action::Ignore));
        assert_eq!(
            match_failure_policy(&policy, &failed_pod(42, &[])),
            Some(Action::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1".into()
            ))
        );
        assert_eq!(
            match_failure_policy(&policy, &failed_pod(7, &[("DisruptionTarget", "True")])),
            Some(Action::Ignore)
        );
        assert_eq!(match_failure_policy(&policy, &failed_pod(7, &[("DisruptionTarget", "False")])), None);
        assert_eq!(match_failure_policy(&policy, &failed_pod(3, &[])), Some(Action::Count));
    }

    #[test]
    fn success_policy_by_indexes_and_count() {
        let set: BTreeSet<i32> = [0, 2, 3].into_iter().collect();
        let p = |ix: Option<&str>, c: Option<i32>| SuccessPolicy {
            rules: vec![SuccessPolicyRule { succeeded_indexes: ix.map(str::to_string), succeeded_count: c }],
        };
        assert_eq!(match_success_policy(&p(Some("0,2-3"), None), &set, 5), Some(0));
        assert_eq!(match_success_policy(&p(Some("0-1"), None), &set, 5), None);
        assert_eq!(match_success_policy(&p(Some("0-4"), Some(3)), &set, 5), Some(0));
        assert_eq!(match_success_policy(&p(None, Some(4)), &set, 5), None);
        assert_eq!(match_success_policy(&p(None, Some(3)), &set, 5), Some(0));
    }
}
