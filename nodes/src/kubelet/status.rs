//! The pod statuses a kubelet writes, built as JSON merge patches of `status` (the kubelet owns
//! every field it writes; the API server's qosClass is left alone).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

/// A simulated container's identity and life so far.
#[derive(Clone, Debug)]
pub struct ContainerRun {
    pub id: String,
    pub started_at: Timestamp,
    /// When its readiness probe first succeeds (None: no probe, ready when started).
    pub ready_at: Option<Timestamp>,
    /// Set when the container has exited: (exit code, finished at).
    pub exit: Option<(i32, Timestamp)>,
    /// Why it exited, as `state.terminated.message` (a port it could not bind, as the process
    /// would have printed it).
    pub message: Option<String>,
    /// How often it was restarted after failing.
    pub restart_count: i32,
    /// Set while it waits to be restarted after the exit above: `state.waiting` is then
    /// `CrashLoopBackOff` with this message, and the exit is `lastState.terminated`.
    pub back_off: Option<String>,
    /// `lastState` of a container running again after a failure.
    pub last_state: Option<Value>,
}

impl ContainerRun {
    pub fn new(id: String, started_at: Timestamp, ready_at: Option<Timestamp>) -> ContainerRun {
        ContainerRun {
            id,
            started_at,
            ready_at,
            exit: None,
            message: None,
            restart_count: 0,
            back_off: None,
            last_state: None,
        }
    }

    /// `state.terminated` of this run's exit, if it exited.
    pub fn terminated(&self) -> Option<Value> {
        let (code, at) = self.exit?;
        let mut t = json!({
            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": self.started_at.to_string(), "finishedAt": at.to_string(),
            "containerID": format!("kplane-sim://{}", self.id)});
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        Some(t)
    }
}

/// A condition, keeping the pod's current lastTransitionTime when its status does not change.
fn cond(
    pod: &Pod,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let transition = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": transition.to_string()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn image_id(c: &Container) -> String {
    format!("kplane-sim://{}", c.image.as_deref().unwrap_or_default())
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default()
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().and_then(|s| s.init_containers.as_deref()).unwrap_or_default()
}

fn start_time(pod: &Pod, now: Timestamp) -> String {
    pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(now).to_string()
}

fn ips(host: Ipv4Addr, pod_ip: Option<Ipv4Addr>) -> Value {
    let mut v = json!({"hostIP": host.to_string(), "hostIPs": [{"ip": host.to_string()}]});
    if let Some(ip) = pod_ip {
        v["podIP"] = json!(ip.to_string());
        v["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    v
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Pending, containers `ContainerCreating` (the sandbox is being made).
pub fn creating(pod: &Pod, host: Ipv4Addr, now: Timestamp) -> Value {
    let names: Vec<&str> = containers(pod).iter().map(|c| c.name.as_str()).collect();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    let waiting = |c: &Container| {
        json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
               "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}})
    };
    let has_init = !init_containers(pod).is_empty();
    let mut s = json!({
        "phase": "Pending",
        "startTime": start_time(pod, now),
        "conditions": [
            cond(pod, "PodReadyToStartContainers", false, None, None, now),
            cond(pod, "Initialized", !has_init, has_init.then_some("ContainersNotInitialized"),
                 has_init.then(|| "containers with incomplete status: [init]".to_string()), now),
            cond(pod, "Ready", false, Some("ContainersNotReady"), Some(unready.clone()), now),
            cond(pod, "ContainersReady", false, Some("ContainersNotReady"), Some(unready), now),
            cond(pod, "PodScheduled", true, None, None, now),
        ],
        "containerStatuses": containers(pod).iter().map(waiting).collect::<Vec<_>>(),
    });
    if has_init {
        s["initContainerStatuses"] = json!(init_containers(pod).iter().map(waiting).collect::<Vec<_>>());
    }
    merge(s, ips(host, None))
}

/// The status of started containers: running (ready or not yet), or exited. `terminal` gives the
/// pod phase once every container has exited.
pub fn started(
    pod: &Pod,
    host: Ipv4Addr,
    pod_ip: Option<Ipv4Addr>,
    runs: &HashMap<String, ContainerRun>,
    terminal: Option<&str>,
    now: Timestamp,
) -> Value {
    let cs = containers(pod);
    let ready_of = |c: &Container| {
        runs.get(&c.name).is_some_and(|r| r.exit.is_none() && r.ready_at.is_none_or(|t| t <= now))
    };
    let unready: Vec<&str> = cs.iter().filter(|c| !ready_of(c)).map(|c| c.name.as_str()).collect();
    let all_ready = unready.is_empty();
    let (reason, message) = match terminal {
        Some(_) => (Some("PodCompleted"), None),
        None if all_ready => (None, None),
        None => (
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: [{}]", unready.join(" "))),
        ),
    };
    let status_of = |c: &Container| {
        let run = runs.get(&c.name);
        let id = run.map(|r| format!("kplane-sim://{}", r.id)).unwrap_or_default();
        let started_at = run.map(|r| r.started_at).unwrap_or(now).to_string();
        let (state, last_state) = match run {
            // Crashed, waiting for its restart: upstream's CrashLoopBackOff.
            Some(r) if r.back_off.is_some() => (
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": r.back_off}}),
                r.terminated().map(|t| json!({"terminated": t})).unwrap_or(json!({})),
            ),
            Some(r) if r.exit.is_some() => {
                (json!({"terminated": r.terminated()}), r.last_state.clone().unwrap_or(json!({})))
            }
            _ => (
                json!({"running": {"startedAt": started_at}}),
                run.and_then(|r| r.last_state.clone()).unwrap_or(json!({})),
            ),
        };
        let running = run.is_some_and(|r| r.exit.is_none());
        let restarts = run.map_or(0, |r| r.restart_count);
        json!({"name": c.name, "image": c.image, "imageID": image_id(c), "containerID": id,
               "ready": ready_of(c), "started": running, "restartCount": restarts, "state": state,
               "lastState": last_state})
    };
    let init_status = |c: &Container| {
        let id = format!("kplane-sim://{}", super::random_hex(64));
        let at = start_time(pod, now);
        json!({"name": c.name, "image": c.image, "imageID": image_id(c), "containerID": id,
               "ready": true, "started": false, "restartCount": 0, "lastState": {},
               "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at, "containerID": id}}})
    };
    let mut s = json!({
        "phase": terminal.unwrap_or("Running"),
        "startTime": start_time(pod, now),
        "conditions": [
            cond(pod, "PodReadyToStartContainers", terminal.is_none(), None, None, now),
            cond(pod, "Initialized", true, terminal.map(|_| "PodCompleted"), None, now),
            cond(pod, "Ready", all_ready && terminal.is_none(), reason, message.clone(), now),
            cond(pod, "ContainersReady", all_ready && terminal.is_none(), reason, message, now),
            cond(pod, "PodScheduled", true, None, None, now),
        ],
        "containerStatuses": cs.iter().map(status_of).collect::<Vec<_>>(),
    });
    if !init_containers(pod).is_empty() {
        // Init containers are simulated as having completed at once; keep their earlier statuses.
        let existing = pod.status.as_ref().and_then(|s| s.init_container_statuses.clone());
        let done =
            existing.filter(|e| e.iter().all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some())));
        s["initContainerStatuses"] = match done {
            Some(e) => serde_json::to_value(e).unwrap_or_default(),
            None => json!(init_containers(pod).iter().map(init_status).collect::<Vec<_>>()),
        };
    }
    merge(s, ips(host, pod_ip))
}

/// The exit a container's command simulates, when the pod may complete (restartPolicy Never or
/// OnFailure) — see ARCHITECTURE.md: `true` → 0, `false` → 1, `echo …` → 0 printing its
/// arguments, `sh|bash|ash -c "<script>"` where the script is one of those or `exit N` → N. The
/// command line is `command` + `args` (or `args` alone). Anything else (including neither: the
/// image's entrypoint) runs until the pod is deleted.
/// Returns (exit code, output line).
pub fn simulated_exit(c: &Container) -> Option<(i32, Option<String>)> {
    // With no `command`, `args` replace the image's CMD; for the shell-style images these commands
    // come from (busybox, alpine, …) that is what runs, so `kubectl run --restart=Never -- echo hi`
    // completes.
    let argv: Vec<String> = c.command.iter().flatten().chain(c.args.iter().flatten()).cloned().collect();
    if argv.is_empty() {
        return None;
    }
    let prog = argv[0].rsplit('/').next().unwrap_or_default();
    match prog {
        "sh" | "bash" | "ash" if argv.get(1).map(String::as_str) == Some("-c") => {
            let script = argv.get(2)?.trim();
            let words: Vec<&str> = script.split_whitespace().collect();
            match words.first().copied() {
                Some("exit") => Some((words.get(1).map_or(Some(0), |n| n.parse().ok())?, None)),
                Some("true") if words.len() == 1 => Some((0, None)),
                Some("false") if words.len() == 1 => Some((1, None)),
                Some("echo") if !script.contains([';', '&', '|', '`', '$']) => {
                    Some((0, Some(words[1..].join(" ").trim_matches(['"', '\'']).to_string())))
                }
                _ => None,
            }
        }
        "true" => Some((0, None)),
        "false" => Some((1, None)),
        "echo" => Some((0, Some(argv[1..].join(" ")))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cmd: &[&str], args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            command: (!cmd.is_empty()).then(|| cmd.iter().map(|s| s.to_string()).collect()),
            args: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn completion_rule() {
        assert_eq!(simulated_exit(&c(&["true"], &[])), Some((0, None)));
        assert_eq!(simulated_exit(&c(&["/bin/false"], &[])), Some((1, None)));
        assert_eq!(simulated_exit(&c(&["echo"], &["hello", "world"])), Some((0, Some("hello world".into()))));
        assert_eq!(simulated_exit(&c(&["sh", "-c", "exit 3"], &[])), Some((3, None)));
        assert_eq!(simulated_exit(&c(&["/bin/sh"], &["-c", "echo hi"])), Some((0, Some("hi".into()))));
        assert_eq!(simulated_exit(&c(&["sh", "-c", "sleep 3600"], &[])), None);
        assert_eq!(simulated_exit(&c(&["nginx"], &[])), None);
        assert_eq!(simulated_exit(&c(&[], &["echo", "hi"])), Some((0, Some("hi".into()))), "args replace CMD");
        assert_eq!(simulated_exit(&c(&[], &["-g", "daemon off;"])), None);
        assert_eq!(simulated_exit(&c(&[], &[])), None, "the image's entrypoint runs");
    }
}
