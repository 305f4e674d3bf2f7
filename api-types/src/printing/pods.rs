//! The pod row: upstream `printPod`, whose STATUS and RESTARTS logic is the most intricate of all
//! printers. The branches below follow upstream's order exactly; reordering them changes what users
//! see for pods with several containers in different states.

use super::duration::since;
use super::json::{arr_at, bool_at, creation, get, int_at, is_set, name, obj, str_at, time_at};
use super::Row;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

pub(crate) fn pod_row(pod: &Value, now: Timestamp) -> Row {
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    // Sidecars (init containers with restartPolicy Always) run alongside the app containers, so they
    // count towards READY's total.
    let restartable = |container_name: &str| {
        // Upstream indexes specs by name in a map, so the last spec with a name wins.
        init_specs
            .iter()
            .rev()
            .find(|c| str_at(c, &["name"]) == container_name)
            .is_some_and(|c| str_at(c, &["restartPolicy"]) == "Always")
    };
    let total = arr_at(pod, &["spec", "containers"]).len()
        + init_specs.iter().filter(|c| str_at(c, &["restartPolicy"]) == "Always").count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = match str_at(pod, &["status", "reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    let conditions = arr_at(pod, &["status", "conditions"]);
    if conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut row = Row::default();
    // Row conditions let clients tell finished pods apart without parsing STATUS.
    match phase {
        "Succeeded" => {
            row.conditions.push(completed_condition("Succeeded", "The pod has completed successfully."))
        }
        "Failed" => row.conditions.push(completed_condition("Failed", "The pod failed.")),
        _ => {}
    }

    let mut initializing = false;
    for (i, status) in arr_at(pod, &["status", "initContainerStatuses"]).iter().enumerate() {
        let count = int_at(status, &["restartCount"]);
        let finished = time_at(status, &["lastState", "terminated", "finishedAt"]);
        restarts = restarts.saturating_add(count);
        last_restart = later(last_restart, finished);
        let is_sidecar = restartable(str_at(status, &["name"]));
        if is_sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(count);
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = get(status, &["state", "terminated"]).filter(|t| t.is_object());
        match terminated {
            Some(t) if int_at(t, &["exitCode"]) == 0 => continue,
            _ if is_sidecar && bool_at(status, &["started"]) => {
                if bool_at(status, &["ready"]) {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                // Initialization failed.
                reason = match str_at(t, &["reason"]) {
                    "" if int_at(t, &["signal"]) != 0 => format!("Init:Signal:{}", int_at(t, &["signal"])),
                    "" => format!("Init:ExitCode:{}", int_at(t, &["exitCode"])),
                    r => format!("Init:{r}"),
                };
            }
            None => {
                let waiting = str_at(status, &["state", "waiting", "reason"]);
                reason = if obj(status, &["state", "waiting"]).is_some()
                    && !waiting.is_empty()
                    && waiting != "PodInitializing"
                {
                    format!("Init:{waiting}")
                } else {
                    format!("Init:{}/{}", i, init_specs.len())
                };
            }
        }
        initializing = true;
        break;
    }

    let initialized =
        conditions.iter().any(|c| str_at(c, &["type"]) == "Initialized" && str_at(c, &["status"]) == "True");
    if !initializing || initialized {
        // Once initialized, only sidecar restarts still matter among init containers.
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Upstream walks app containers from last to first, so the first container's state wins.
        for status in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int_at(status, &["restartCount"]));
            last_restart = later(last_restart, time_at(status, &["lastState", "terminated", "finishedAt"]));
            let waiting = str_at(status, &["state", "waiting", "reason"]);
            let terminated = obj(status, &["state", "terminated"]).is_some();
            let term_reason = str_at(status, &["state", "terminated", "reason"]);
            if obj(status, &["state", "waiting"]).is_some() && !waiting.is_empty() {
                reason = waiting.to_string();
            } else if terminated && !term_reason.is_empty() {
                reason = term_reason.to_string();
            } else if terminated {
                let signal = int_at(status, &["state", "terminated", "signal"]);
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{}", int_at(status, &["state", "terminated", "exitCode"]))
                };
            } else if bool_at(status, &["ready"]) && obj(status, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A "Completed" container next to a still-running one is not a completed pod.
        if reason == "Completed" && has_running {
            let pod_ready =
                conditions.iter().any(|c| str_at(c, &["type"]) == "Ready" && str_at(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if is_set(pod, &["metadata", "deletionTimestamp"]) {
        if str_at(pod, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_cell = match last_restart {
        Some(ts) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(ts), now)),
        _ => restarts.to_string(),
    };

    row.cells = vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        since(creation(pod), now).into(),
        pod_ip(pod).into(),
        or_none(str_at(pod, &["spec", "nodeName"])).into(),
        or_none(str_at(pod, &["status", "nominatedNodeName"])).into(),
        readiness_gates(pod, conditions).into(),
    ];
    row
}

fn completed_condition(reason: &str, message: &str) -> Value {
    json!({"type": "Completed", "status": "True", "reason": reason, "message": message})
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

/// The first pod IP. Upstream reads `podIPs` after v1-to-internal conversion, which fills it from the
/// legacy `podIP` when empty.
fn pod_ip(pod: &Value) -> &str {
    let ip = match arr_at(pod, &["status", "podIPs"]).first() {
        Some(first) => str_at(first, &["ip"]),
        None => str_at(pod, &["status", "podIP"]),
    };
    or_none(ip)
}

/// `true/total` over the spec's readiness gates, matching each to the first condition of its type.
fn readiness_gates(pod: &Value, conditions: &[Value]) -> String {
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let passing = gates
        .iter()
        .filter(|g| {
            let ty = str_at(g, &["conditionType"]);
            conditions
                .iter()
                .find(|c| str_at(c, &["type"]) == ty)
                .is_some_and(|c| str_at(c, &["status"]) == "True")
        })
        .count();
    format!("{passing}/{}", gates.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2024-05-01T12:00:00Z";

    fn cells(pod: Value) -> Vec<Value> {
        pod_row(&pod, NOW.parse().unwrap()).cells
    }

    /// READY, STATUS, RESTARTS.
    fn summary(pod: Value) -> (String, String, String) {
        let c = cells(pod);
        let s = |i: usize| c[i].as_str().unwrap().to_string();
        (s(1), s(2), s(3))
    }

    fn running(name: &str, restarts: i64) -> Value {
        json!({"name": name, "ready": true, "restartCount": restarts, "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}}})
    }

    fn pod(containers: usize, status: Value) -> Value {
        let specs: Vec<Value> =
            (0..containers).map(|i| json!({"name": format!("c{i}"), "image": "nginx"})).collect();
        json!({
            "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": "2024-04-29T12:00:00Z"},
            "spec": {"containers": specs, "nodeName": "worker0"},
            "status": status,
        })
    }

    #[test]
    fn running_pod_with_restarts_shows_last_restart_age() {
        let mut c1 = running("c1", 3);
        c1["lastState"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:55:00Z"}});
        let p = pod(
            2,
            json!({"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                   "containerStatuses": [running("c0", 0), c1]}),
        );
        assert_eq!(
            cells(p),
            vec![
                json!("web-0"),
                json!("2/2"),
                json!("Running"),
                json!("3 (5m ago)"),
                json!("2d"),
                json!("10.244.0.5"),
                json!("worker0"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn restarts_without_termination_time_are_a_bare_count() {
        let p = pod(1, json!({"phase": "Running", "containerStatuses": [running("c0", 4)]}));
        assert_eq!(summary(p).2, "4");
    }

    #[test]
    fn waiting_and_terminated_reasons() {
        let crash = json!({"name": "c0", "ready": false, "restartCount": 6,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:30Z"}}});
        assert_eq!(
            summary(pod(1, json!({"phase": "Running", "containerStatuses": [crash]}))),
            ("0/1".into(), "CrashLoopBackOff".into(), "6 (30s ago)".into())
        );

        let creating = json!({"name": "c0", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}});
        let p = pod(1, json!({"phase": "Pending", "containerStatuses": [creating]}));
        let c = cells(p);
        assert_eq!(c[2], json!("ContainerCreating"));
        assert_eq!(c[5], json!("<none>"), "no IP yet");

        let oom = json!({"name": "c0", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}});
        assert_eq!(summary(pod(1, json!({"phase": "Running", "containerStatuses": [oom]}))).1, "OOMKilled");
        let sig = json!({"name": "c0", "state": {"terminated": {"exitCode": 137, "signal": 9}}});
        assert_eq!(summary(pod(1, json!({"phase": "Running", "containerStatuses": [sig]}))).1, "Signal:9");
        let code = json!({"name": "c0", "state": {"terminated": {"exitCode": 2}}});
        assert_eq!(summary(pod(1, json!({"phase": "Running", "containerStatuses": [code]}))).1, "ExitCode:2");
        // Without any container status, STATUS is the phase.
        assert_eq!(summary(pod(1, json!({"phase": "Pending"}))), ("0/1".into(), "Pending".into(), "0".into()));
        // status.reason overrides the phase (e.g. Evicted).
        assert_eq!(summary(pod(1, json!({"phase": "Failed", "reason": "Evicted"}))).1, "Evicted");
    }

    #[test]
    fn the_first_container_state_wins() {
        // Statuses are walked last to first, so container 0's waiting reason is what shows.
        let a = json!({"name": "c0", "state": {"waiting": {"reason": "ImagePullBackOff"}}});
        let b = json!({"name": "c1", "state": {"waiting": {"reason": "ErrImagePull"}}});
        assert_eq!(
            summary(pod(2, json!({"phase": "Pending", "containerStatuses": [a, b]}))).1,
            "ImagePullBackOff"
        );
    }

    #[test]
    fn completed_pods_and_row_conditions() {
        let done = json!({"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let row =
            pod_row(&pod(1, json!({"phase": "Succeeded", "containerStatuses": [done]})), NOW.parse().unwrap());
        assert_eq!(row.cells[2], json!("Completed"));
        assert_eq!(
            row.conditions,
            vec![
                json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
            ]
        );
        let failed = pod_row(&pod(1, json!({"phase": "Failed"})), NOW.parse().unwrap());
        assert_eq!(failed.conditions[0]["reason"], json!("Failed"));
        assert_eq!(failed.conditions[0]["message"], json!("The pod failed."));
        assert!(pod_row(&pod(1, json!({"phase": "Running"})), NOW.parse().unwrap()).conditions.is_empty());
    }

    #[test]
    fn completed_container_next_to_running_one() {
        let done = json!({"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let statuses = json!([done, running("c1", 0)]);
        let ready = json!({"phase": "Running", "containerStatuses": statuses, "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(summary(pod(2, ready)), ("1/2".into(), "Running".into(), "0".into()));
        let not_ready = json!({"phase": "Running", "containerStatuses": statuses, "conditions": [{"type": "Ready", "status": "False"}]});
        assert_eq!(summary(pod(2, not_ready)).1, "NotReady");
    }

    fn with_init(mut p: Value, inits: Value, init_statuses: Value) -> Value {
        p["spec"]["initContainers"] = inits;
        p["status"]["initContainerStatuses"] = init_statuses;
        p
    }

    #[test]
    fn init_container_states() {
        let inits = json!([{"name": "i0"}, {"name": "i1"}]);
        let done = json!({"name": "i0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let app_waiting = json!([{"name": "c0", "state": {"waiting": {"reason": "PodInitializing"}}}]);
        let base = || pod(1, json!({"phase": "Pending", "containerStatuses": app_waiting}));

        let running_init = json!({"name": "i1", "state": {"running": {}}});
        let p = with_init(base(), inits.clone(), json!([done, running_init]));
        assert_eq!(summary(p), ("0/1".into(), "Init:1/2".into(), "0".into()));

        let first = json!({"name": "i0", "state": {"waiting": {"reason": "PodInitializing"}}});
        assert_eq!(summary(with_init(base(), inits.clone(), json!([first]))).1, "Init:0/2");

        let crash = json!({"name": "i1", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:00Z"}}});
        // While initializing, RESTARTS counts init containers' restarts and ignores app containers.
        assert_eq!(
            summary(with_init(base(), inits.clone(), json!([done, crash]))),
            ("0/1".into(), "Init:CrashLoopBackOff".into(), "2 (60s ago)".into())
        );

        let error = json!({"name": "i0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}});
        assert_eq!(summary(with_init(base(), inits.clone(), json!([error]))).1, "Init:Error");
        let signal = json!({"name": "i0", "state": {"terminated": {"exitCode": 1, "signal": 15}}});
        assert_eq!(summary(with_init(base(), inits.clone(), json!([signal]))).1, "Init:Signal:15");
        let exit = json!({"name": "i0", "state": {"terminated": {"exitCode": 3}}});
        assert_eq!(summary(with_init(base(), inits, json!([exit]))).1, "Init:ExitCode:3");
    }

    #[test]
    fn sidecars_count_towards_ready_and_restarts() {
        let inits = json!([{"name": "proxy", "restartPolicy": "Always"}]);
        let sidecar = json!({"name": "proxy", "started": true, "ready": true, "restartCount": 1,
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T09:00:00Z"}}});
        let p = with_init(
            pod(
                1,
                json!({"phase": "Running", "containerStatuses": [running("c0", 0)],
                "conditions": [{"type": "Initialized", "status": "True"}]}),
            ),
            inits,
            json!([sidecar]),
        );
        assert_eq!(summary(p), ("2/2".into(), "Running".into(), "1 (3h ago)".into()));
    }

    #[test]
    fn terminating_unknown_and_gated() {
        let mut p = pod(1, json!({"phase": "Running", "containerStatuses": [running("c0", 0)]}));
        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(summary(p.clone()).1, "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(summary(p.clone()).1, "Unknown");
        // A finished pod being deleted keeps its final status.
        let done = json!({"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let mut finished = pod(1, json!({"phase": "Succeeded", "containerStatuses": [done]}));
        finished["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(summary(finished).1, "Completed");

        let gated = pod(
            1,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(summary(gated).1, "SchedulingGated");
    }

    #[test]
    fn wide_cells_nominated_node_and_readiness_gates() {
        let mut p = pod(
            1,
            json!({"phase": "Running", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}],
            "nominatedNodeName": "worker1",
            "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "False"}]}),
        );
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
        let c = cells(p);
        assert_eq!(&c[5..], &[json!("fd00::5"), json!("worker0"), json!("worker1"), json!("1/2")]);
    }

    #[test]
    fn garbage_pods_print_zero_values() {
        for junk in [json!(null), json!("pod"), json!({"spec": 5, "status": {"containerStatuses": "x"}})] {
            assert_eq!(
                cells(junk),
                vec![
                    json!(""),
                    json!("0/0"),
                    json!(""),
                    json!("0"),
                    json!("<unknown>"),
                    json!("<none>"),
                    json!("<none>"),
                    json!("<none>"),
                    json!("<none>")
                ]
            );
        }
    }
}
