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
    /// Why it could not be created (`state.waiting` `CreateContainerConfigError`).
    pub config_error: Option<String>,
    /// Its startup probe has not succeeded yet: `started` is false, and readiness and liveness
    /// are not probed (upstream's prober manager).
    pub startup_pending: bool,
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
            config_error: None,
            startup_pending: false,
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
    init_runs: &HashMap<String, ContainerRun>,
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
            Some(r) if r.config_error.is_some() => (
                json!({"waiting": {"reason": "CreateContainerConfigError", "message": r.config_error}}),
                r.last_state.clone().unwrap_or(json!({})),
            ),
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
        let running = run.is_some_and(|r| r.exit.is_none() && !r.startup_pending);
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
    if !init_runs.is_empty() {
        s["initContainerStatuses"] = json!(init_containers(pod)
            .iter()
            .map(|c| container_status(c, init_runs.get(&c.name), now))
            .collect::<Vec<_>>());
    } else if !init_containers(pod).is_empty() {
        // After a kubelet restart the init containers are not run again; keep their statuses.
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

/// One container's status from its run (None: not started yet, `PodInitializing`).
fn container_status(c: &Container, run: Option<&ContainerRun>, now: Timestamp) -> Value {
    let Some(r) = run else {
        return json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
                      "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}, "lastState": {}});
    };
    let state = if let Some(e) = &r.config_error {
        json!({"waiting": {"reason": "CreateContainerConfigError", "message": e}})
    } else if r.back_off.is_some() {
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": r.back_off}})
    } else if let Some(t) = r.terminated() {
        json!({"terminated": t})
    } else {
        json!({"running": {"startedAt": r.started_at.to_string()}})
    };
    let last = if r.back_off.is_some() {
        r.terminated().map(|t| json!({"terminated": t})).unwrap_or(json!({}))
    } else {
        r.last_state.clone().unwrap_or(json!({}))
    };
    let _ = now;
    let done_ok = r.exit.is_some_and(|(c, _)| c == 0) && r.back_off.is_none();
    json!({"name": c.name, "image": c.image, "imageID": image_id(c), "containerID": format!("kplane-sim://{}", r.id),
           "ready": done_ok, "started": r.exit.is_none() && r.config_error.is_none(), "restartCount": r.restart_count,
           "state": state, "lastState": last})
}

fn init_statuses(pod: &Pod, init_runs: &HashMap<String, ContainerRun>, now: Timestamp) -> Value {
    json!(init_containers(pod)
        .iter()
        .map(|c| container_status(c, init_runs.get(&c.name), now))
        .collect::<Vec<_>>())
}

/// Pending while the init containers run: `Initialized` False, app containers `PodInitializing`.
pub fn initializing(
    pod: &Pod,
    host: Ipv4Addr,
    pod_ip: Option<Ipv4Addr>,
    init_runs: &HashMap<String, ContainerRun>,
    now: Timestamp,
) -> Value {
    pending_with_init(pod, host, pod_ip, init_runs, "Pending", now)
}

/// An init container failed and the pod never restarts: Failed.
pub fn init_failed(
    pod: &Pod,
    host: Ipv4Addr,
    pod_ip: Option<Ipv4Addr>,
    init_runs: &HashMap<String, ContainerRun>,
    now: Timestamp,
) -> Value {
    pending_with_init(pod, host, pod_ip, init_runs, "Failed", now)
}

fn pending_with_init(
    pod: &Pod,
    host: Ipv4Addr,
    pod_ip: Option<Ipv4Addr>,
    init_runs: &HashMap<String, ContainerRun>,
    phase: &str,
    now: Timestamp,
) -> Value {
    let incomplete: Vec<&str> = init_containers(pod)
        .iter()
        .filter(|c| {
            !init_runs.get(&c.name).is_some_and(|r| r.exit.is_some_and(|(x, _)| x == 0) && r.back_off.is_none())
        })
        .map(|c| c.name.as_str())
        .collect();
    let names: Vec<&str> = containers(pod).iter().map(|c| c.name.as_str()).collect();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    let waiting = |c: &Container| {
        json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
               "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}, "lastState": {}})
    };
    let s = json!({
        "phase": phase,
        "startTime": start_time(pod, now),
        "conditions": [
            cond(pod, "PodReadyToStartContainers", phase == "Pending", None, None, now),
            cond(pod, "Initialized", false, Some("ContainersNotInitialized"),
                 Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))), now),
            cond(pod, "Ready", false, Some("ContainersNotReady"), Some(unready.clone()), now),
            cond(pod, "ContainersReady", false, Some("ContainersNotReady"), Some(unready), now),
            cond(pod, "PodScheduled", true, None, None, now),
        ],
        "containerStatuses": containers(pod).iter().map(waiting).collect::<Vec<_>>(),
        "initContainerStatuses": init_statuses(pod, init_runs, now),
    });
    merge(s, ips(host, pod_ip))
}

/// How a container runs in the simulated runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Its command line (`command` + `args`, or `args` replacing a shell image's CMD) in the shell.
    Command(Vec<String>),
    /// An interactive `sh` on stdin: the default of busybox-like images with no command.
    Shell,
    /// The simulated server of images with no command (listeners on its ports): nginx & co.
    Server,
}

/// An image reference's repository without registry, `library/`, tag or digest:
/// `docker.io/library/busybox:1.36` → `busybox`.
pub fn image_repo(image: &str) -> String {
    let image = image.split('@').next().unwrap_or_default();
    let (path, _) = match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, ""),
    };
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        parts.remove(0);
    }
    if parts.first() == Some(&"library") && parts.len() > 1 {
        parts.remove(0);
    }
    parts.join("/")
}

/// Images whose default command is a shell.
const SHELL_IMAGES: &[&str] =
    &["busybox", "tutum/curl", "curlimages/curl", "alpine", "ubuntu", "debian", "tutum/dnsutils"];

pub fn mode_of(c: &Container) -> Mode {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    if !command.is_empty() {
        return Mode::Command(command.into_iter().chain(args).collect());
    }
    let repo = image_repo(c.image.as_deref().unwrap_or_default());
    let shell_image = SHELL_IMAGES.contains(&repo.as_str());
    if let Some(first) = args.first() {
        let prog = crate::runtime::shell::program_name(first);
        let known = crate::runtime::applets::PROGRAMS.contains(&prog);
        // curlimages/curl's entrypoint is curl itself: its args are curl's.
        if repo == "curlimages/curl" && !known {
            return Mode::Command(std::iter::once("curl".to_string()).chain(args).collect());
        }
        if shell_image || known {
            return Mode::Command(args);
        }
        return Mode::Server;
    }
    if shell_image {
        Mode::Shell
    } else {
        Mode::Server
    }
}

pub fn is_server(c: &Container) -> bool {
    mode_of(c) == Mode::Server
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
    fn modes_of_well_known_images() {
        assert_eq!(image_repo("docker.io/library/busybox:1.36"), "busybox");
        assert_eq!(image_repo("registry.k8s.io/e2e-test-images/agnhost:2.39"), "e2e-test-images/agnhost");
        assert_eq!(image_repo("localhost:5000/tutum/curl@sha256:abc"), "tutum/curl");
        assert_eq!(
            mode_of(&c(&["sh", "-c", "exit 3"], &[])),
            Mode::Command(vec!["sh".into(), "-c".into(), "exit 3".into()])
        );
        assert_eq!(
            mode_of(&c(&[], &["echo", "hi"])),
            Mode::Command(vec!["echo".into(), "hi".into()]),
            "args replace CMD"
        );
        let mut nginx = c(&[], &["-g", "daemon off;"]);
        nginx.image = Some("nginx".into());
        assert_eq!(mode_of(&nginx), Mode::Server);
        nginx.args = None;
        assert_eq!(mode_of(&nginx), Mode::Server, "the image's entrypoint serves");
        let mut bb = c(&[], &[]);
        bb.image = Some("busybox".into());
        assert_eq!(mode_of(&bb), Mode::Shell);
        let mut curl = c(&[], &["-s", "http://x"]);
        curl.image = Some("curlimages/curl:8.5.0".into());
        assert_eq!(mode_of(&curl), Mode::Command(vec!["curl".into(), "-s".into(), "http://x".into()]));
    }
}
