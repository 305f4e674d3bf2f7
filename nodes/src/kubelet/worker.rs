//! One task per pod on the node (upstream's pod worker), driven by the pod as the watch last showed
//! it: wait for an IP, `ContainerCreating`, start (listeners, logs, events), Running (Ready after any
//! readiness delay), maybe complete; on deletion stop the listeners, mark the containers
//! terminated, wait out the (capped) grace period and DELETE the pod for good. The IP and the logs
//! are released when the task ends, i.e. when the pod is gone.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::logs::{ContainerLog, PodLogs};
use super::status::{self, ContainerRun};
use super::traffic::{Listeners, PodIdentity, PortSpec};
use super::Ctx;

/// Why a wait ended early.
enum Stop {
    /// The pod is gone from the API (or the kubelet is stopping).
    Gone,
    /// The pod has a deletionTimestamp.
    Terminating,
}

/// The pod's latest state from the watch; `None` once it is deleted.
pub type PodRx = watch::Receiver<Option<Pod>>;

pub async fn run(ctx: Arc<Ctx>, mut rx: PodRx) {
    let Some(pod) = rx.borrow().clone() else { return };
    let uid = pod.uid().unwrap_or_default();
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let spec = pod.spec.clone().unwrap_or_default();
    let names = spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| c.name.clone()).collect();
    let logs = ctx.logs.add(&key, &uid, names);
    let mut w = Worker { ctx: ctx.clone(), uid: uid.clone(), logs, listeners: Vec::new(), ip: None };
    w.lifecycle(&mut rx).await;
    w.listeners.clear();
    ctx.release_ip(&uid);
    ctx.logs.remove(&key, &uid);
}

struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    logs: Arc<PodLogs>,
    /// One set per running container.
    listeners: Vec<Listeners>,
    ip: Option<Ipv4Addr>,
}

/// The kubelet's crash-loop back-off: 10 s after the first failure, doubling up to 5 min
/// (upstream's `initialBackOff` and `MaxContainerBackOff`).
const BACK_OFF_INITIAL: Duration = Duration::from_secs(10);
const BACK_OFF_MAX: Duration = Duration::from_secs(300);

/// The exit code of a simulated server whose port could not be bound (nginx's, for one).
const BIND_FAILED_EXIT: i32 = 1;

/// The ports a container listens on (SCTP is not simulated).
fn port_specs(c: &Container, log: &Arc<ContainerLog>) -> Vec<PortSpec> {
    c.ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|pr| pr == "TCP" || pr == "UDP"))
        .filter_map(|p| {
            Some(PortSpec {
                container: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                port: u16::try_from(p.container_port).ok()?,
                udp: p.protocol.as_deref() == Some("UDP"),
                log: log.clone(),
            })
        })
        .collect()
}

/// Upstream's `state.waiting.message` of a container in CrashLoopBackOff.
fn back_off_message(back_off: Duration, container: &str, pod: &Pod) -> String {
    format!(
        "back-off {}s restarting failed container={container} pod={}_{}({})",
        back_off.as_secs(),
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    )
}

fn current(rx: &PodRx) -> Option<Pod> {
    rx.borrow().clone()
}

fn pod_host_network(rx: &PodRx) -> bool {
    rx.borrow().as_ref().and_then(|p| p.spec.as_ref()).and_then(|s| s.host_network).unwrap_or(false)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

impl Worker {
    async fn lifecycle(&mut self, rx: &mut PodRx) {
        let Some(pod) = current(rx) else { return };
        let done = matches!(phase(&pod), "Succeeded" | "Failed");
        if !done && !terminating(&pod) {
            match self.start_and_run(rx).await {
                Ok(()) | Err(Stop::Terminating) => {}
                Err(Stop::Gone) => return,
            }
        }
        // Completed, or being deleted: wait for the deletion, then finish it.
        if self.until(rx, None).await.is_err_and(|s| matches!(s, Stop::Gone)) {
            return;
        }
        self.terminate(rx).await;
    }

    /// Runs the pod until it is deleted (Err(Terminating)), gone, or completed (Ok).
    async fn start_and_run(&mut self, rx: &mut PodRx) -> Result<(), Stop> {
        // hostNetwork pods use the node's address and need no pod network (they start before the
        // node has a podCIDR, as upstream's do before the CNI is ready).
        let host_network = pod_host_network(rx);
        let ip = if host_network { self.ctx.cfg.node_ip } else { self.wait_for_ip(rx).await? };
        let pod = current(rx).ok_or(Stop::Gone)?;
        let node_ip = self.ctx.cfg.node_ip;
        let already_running = phase(&pod) == "Running";
        if !already_running {
            self.write(&pod, status::creating(&pod, node_ip, Timestamp::now())).await?;
            self.until(rx, Some(self.ctx.cfg.start_delay)).await?;
        }
        let pod = current(rx).ok_or(Stop::Gone)?;
        let spec = pod.spec.clone().unwrap_or_default();
        let now = Timestamp::now();
        // Keep container ids and start times across kubelet restarts.
        let prior: HashMap<String, (String, Timestamp)> = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let started = c.state?.running?.started_at?.0;
                let id = c.container_id?.strip_prefix("kplane-sim://")?.to_string();
                Some((c.name, (id, started)))
            })
            .collect();
        let may_complete = matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure"));
        let exits: Vec<_> = spec.containers.iter().map(status::simulated_exit).collect();
        let completes = may_complete && !exits.is_empty() && exits.iter().all(Option::is_some);
        // Init containers are simulated as having run to completion before the others start.
        for c in spec.init_containers.iter().flatten() {
            let log = self.logs.start(&c.name);
            if !already_running {
                log.push(format!("kplane-sim: init container {} completed (simulated, nothing ran)", c.name));
            }
        }
        let mut runs = HashMap::new();
        for (c, exit) in spec.containers.iter().zip(&exits) {
            let (id, started_at) = prior.get(&c.name).cloned().unwrap_or_else(|| (super::random_hex(64), now));
            let log = self.logs.start(&c.name);
            if !prior.contains_key(&c.name) {
                log.push(format!(
                    "kplane-sim: container {} started (image {}; simulated, nothing runs)",
                    c.name,
                    c.image.as_deref().unwrap_or_default()
                ));
            }
            let delay = c.readiness_probe.as_ref().and_then(|p| p.initial_delay_seconds).unwrap_or(0);
            let ready_at = (delay > 0).then(|| started_at + SignedDuration::from_secs(i64::from(delay)));
            let mut run = ContainerRun::new(id, started_at, ready_at);
            if completes {
                let (code, out) = exit.clone().unwrap_or((0, None));
                if let Some(out) = out {
                    log.push(out);
                }
                run.exit = Some((code, Timestamp::now()));
            }
            runs.insert(c.name.clone(), run);
        }
        let id = PodIdentity {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            ip,
            node: self.ctx.cfg.name.clone(),
        };
        // Containers whose server could not bind a port: like nginx on :80 without the privilege,
        // they exit at once with an error.
        let mut crashed: Vec<String> = Vec::new();
        let restarts = spec.restart_policy.as_deref() != Some("Never");
        if !completes {
            for c in &spec.containers {
                if let Err(msg) = self.start_container(&id, c).await {
                    tracing::warn!(pod = %id.name, container = %c.name, "{msg}");
                    if let Some(run) = runs.get_mut(&c.name) {
                        run.exit = Some((BIND_FAILED_EXIT, Timestamp::now()));
                        run.message = Some(msg.clone());
                        run.back_off = restarts.then(|| back_off_message(BACK_OFF_INITIAL, &c.name, &pod));
                    }
                    crashed.push(c.name.clone());
                }
            }
        }
        // A pod that will not restart its containers and has none left running has failed.
        let all_exited = runs.values().all(|r| r.exit.is_some());
        if !completes && !restarts && all_exited {
            let st = status::started(&pod, node_ip, Some(ip), &runs, Some("Failed"), Timestamp::now());
            self.write(&pod, st).await?;
            if !already_running {
                self.start_events(&pod).await;
            }
            self.crash_events(&pod, &crashed, &runs, restarts).await;
            self.ctx.release_ip(&self.uid);
            self.ip = None;
            return Ok(());
        }
        if completes {
            let ok = runs.values().all(|r| r.exit.is_some_and(|(c, _)| c == 0));
            let phase = if ok { "Succeeded" } else { "Failed" };
            let st = status::started(&pod, node_ip, Some(ip), &runs, Some(phase), Timestamp::now());
            self.write(&pod, st).await?;
            if !already_running {
                self.start_events(&pod).await;
            }
            // A finished pod's sandbox is gone: its address is free again (its status keeps it).
            self.ctx.release_ip(&self.uid);
            self.ip = None;
            return Ok(());
        }
        self.write(&pod, status::started(&pod, node_ip, Some(ip), &runs, None, Timestamp::now())).await?;
        // The events come after the status write, so that a pod is Running as early as possible.
        if !already_running {
            self.start_events(&pod).await;
        }
        self.crash_events(&pod, &crashed, &runs, restarts).await;
        // Readiness: write again once the last readiness delay has passed.
        if let Some(last) = runs.values().filter_map(|r| r.ready_at).max() {
            let wait = last.duration_since(Timestamp::now());
            if wait.is_positive() {
                self.until(rx, Some(wait.unsigned_abs())).await?;
                let pod = current(rx).ok_or(Stop::Gone)?;
                self.write(&pod, status::started(&pod, node_ip, Some(ip), &runs, None, Timestamp::now()))
                    .await?;
            }
        }
        // Crashed containers are restarted after a back-off that doubles while they keep failing.
        let mut back_off = BACK_OFF_INITIAL;
        while restarts && !crashed.is_empty() {
            self.until(rx, Some(back_off)).await?;
            back_off = (back_off * 2).min(BACK_OFF_MAX);
            let pod = current(rx).ok_or(Stop::Gone)?;
            let mut still = Vec::new();
            for name in std::mem::take(&mut crashed) {
                let Some(c) = spec.containers.iter().find(|c| c.name == name) else { continue };
                let Some(run) = runs.get_mut(&name) else { continue };
                let last = run.terminated().map(|t| json!({"terminated": t}));
                run.restart_count += 1;
                run.id = super::random_hex(64);
                run.started_at = Timestamp::now();
                run.last_state = last;
                match self.start_container(&id, c).await {
                    Ok(()) => {
                        run.exit = None;
                        run.message = None;
                        run.back_off = None;
                    }
                    Err(msg) => {
                        run.exit = Some((BIND_FAILED_EXIT, Timestamp::now()));
                        run.message = Some(msg);
                        run.back_off = Some(back_off_message(back_off, &name, &pod));
                        still.push(name);
                    }
                }
            }
            crashed = still;
            self.write(&pod, status::started(&pod, node_ip, Some(ip), &runs, None, Timestamp::now())).await?;
            self.crash_events(&pod, &crashed, &runs, restarts).await;
        }
        self.until(rx, None).await
    }

    /// Starts a container's server: its listeners, or the error it would exit with when a port
    /// cannot be bound (its other ports close with it).
    async fn start_container(&mut self, id: &PodIdentity, c: &Container) -> Result<(), String> {
        let log = self.logs.get(&c.name).unwrap_or_else(|| self.logs.start(&c.name));
        let (listeners, failures) = Listeners::start(id, port_specs(c, &log)).await;
        if failures.is_empty() {
            self.listeners.push(listeners);
            return Ok(());
        }
        drop(listeners);
        let msg = failures.join("; ");
        log.push(format!("kplane-sim: container {} exited with code {BIND_FAILED_EXIT}: {msg}", c.name));
        Err(msg)
    }

    /// The Warning events of containers that exited with an error: upstream's `BackOff` when the
    /// kubelet will restart them, else `Failed` naming the error.
    async fn crash_events(
        &self,
        pod: &Pod,
        crashed: &[String],
        runs: &HashMap<String, ContainerRun>,
        restarts: bool,
    ) {
        for name in crashed {
            let msg = runs.get(name).and_then(|r| r.message.clone()).unwrap_or_default();
            if restarts {
                let note = format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    pod.name_any(),
                    pod.namespace().unwrap_or_default(),
                    pod.uid().unwrap_or_default()
                );
                self.event(pod, EventType::Warning, "BackOff", "Starting", note).await;
            } else {
                let note = format!("Error: container {name} exited with code {BIND_FAILED_EXIT}: {msg}");
                self.event(pod, EventType::Warning, "Failed", "Starting", note).await;
            }
        }
    }

    /// An address from the node's podCIDR: the one the pod already reports (after a kubelet
    /// restart), else a fresh one. Waits for the podCIDR and for a free address.
    async fn wait_for_ip(&mut self, rx: &mut PodRx) -> Result<Ipv4Addr, Stop> {
        let mut cidr = self.ctx.cidr.clone();
        let mut warned = false;
        loop {
            let pod = current(rx).ok_or(Stop::Gone)?;
            if terminating(&pod) {
                return Err(Stop::Terminating);
            }
            let reported: Option<Ipv4Addr> =
                pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|s| s.parse().ok());
            if cidr.borrow_and_update().is_some() {
                let got = {
                    let mut ipam = self.ctx.ipam.lock().unwrap_or_else(|e| e.into_inner());
                    match reported {
                        Some(ip) if ipam.reserve(&self.uid, ip) => Some(ip),
                        _ => ipam.allocate(&self.uid),
                    }
                };
                if let Some(ip) = got {
                    self.ip = Some(ip);
                    return Ok(ip);
                }
                if !warned {
                    warned = true;
                    let range = cidr.borrow().map(|c| c.to_string()).unwrap_or_default();
                    let msg = format!(
                        "Failed to create pod sandbox: failed to allocate an IP address: no IP addresses available in range set: {range}"
                    );
                    self.event(&pod, EventType::Warning, "FailedCreatePodSandBox", "Starting", msg).await;
                }
            }
            let freed = self.ctx.ip_freed.notified();
            let mut stop = self.ctx.stop.clone();
            tokio::select! {
                _ = stop.changed() => return Err(Stop::Gone),
                _ = cidr.changed() => {}
                _ = freed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                r = rx.changed() => if r.is_err() { return Err(Stop::Gone) },
            }
        }
    }

    /// Waits `dur` (None: forever), following the pod; ends early when it is deleted or gone.
    async fn until(&self, rx: &mut PodRx, dur: Option<Duration>) -> Result<(), Stop> {
        let sleep = tokio::time::sleep(dur.unwrap_or(Duration::from_secs(86_400 * 365)));
        tokio::pin!(sleep);
        let mut stop = self.ctx.stop.clone();
        loop {
            match &*rx.borrow_and_update() {
                None => return Err(Stop::Gone),
                Some(p) if terminating(p) => return Err(Stop::Terminating),
                Some(_) => {}
            }
            tokio::select! {
                _ = &mut sleep, if dur.is_some() => return Ok(()),
                _ = stop.changed() => return Err(Stop::Gone),
                r = rx.changed() => if r.is_err() { return Err(Stop::Gone) },
            }
        }
    }

    /// The deletion: listeners close, containers terminate, the grace period (capped) passes, and
    /// the pod is deleted with gracePeriodSeconds=0 and a uid precondition.
    async fn terminate(&mut self, rx: &mut PodRx) {
        let Some(pod) = current(rx) else { return };
        let was_running = phase(&pod) == "Running" || phase(&pod) == "Pending";
        self.listeners.clear();
        if was_running {
            let spec = pod.spec.clone().unwrap_or_default();
            for c in &spec.containers {
                if let Some(log) = self.logs.get(&c.name) {
                    log.push(format!("kplane-sim: container {} stopping", c.name));
                    self.event(
                        &pod,
                        EventType::Normal,
                        "Killing",
                        "Killing",
                        format!("Stopping container {}", c.name),
                    )
                    .await;
                }
            }
            if phase(&pod) == "Running" {
                let pod = current(rx).unwrap_or_else(|| pod.clone());
                let now = Timestamp::now();
                let runs: HashMap<String, ContainerRun> = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        let started = c.state.and_then(|s| s.running).and_then(|r| r.started_at).map(|t| t.0);
                        let id =
                            c.container_id.unwrap_or_default().trim_start_matches("kplane-sim://").to_string();
                        let mut run = ContainerRun::new(id, started.unwrap_or(now), None);
                        run.exit = Some((0, now));
                        (c.name, run)
                    })
                    .collect();
                let st = status::started(&pod, self.ctx.cfg.node_ip, self.ip, &runs, Some("Succeeded"), now);
                if self.write(&pod, st).await.is_err() {
                    return;
                }
            }
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
            let wait = Duration::from_secs(grace).min(self.ctx.cfg.max_grace);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = rx.wait_for(Option::is_none) => return,
            }
        }
        self.ctx.release_ip(&self.uid);
        self.ip = None;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        loop {
            match api.delete(&pod.name_any(), &dp).await {
                Ok(_) => break,
                // Gone already, or a new pod of the same name (uid precondition failed).
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "final pod deletion failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = rx.wait_for(Option::is_none) => return,
                    }
                }
            }
        }
        // Finalizers may hold the object; the worker ends when the watch shows it gone.
        let mut stop = self.ctx.stop.clone();
        tokio::select! {
            _ = rx.wait_for(Option::is_none) => {}
            _ = stop.changed() => {}
        }
    }

    /// Writes the pod's status (a merge patch of `status`), bounded in concurrency per node.
    async fn write(&self, pod: &Pod, status: Value) -> Result<(), Stop> {
        let _slot = self.ctx.status_slots.acquire().await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": status});
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Err(Stop::Gone),
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "pod status update failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        // The next transition writes the whole status again.
        Ok(())
    }

    /// Upstream's events for a started container.
    async fn start_events(&self, pod: &Pod) {
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            let image = c.image.as_deref().unwrap_or_default();
            let msgs = [
                ("Pulled", format!("Container image \"{image}\" already present on machine")),
                ("Created", format!("Created container: {}", c.name)),
                ("Started", format!("Started container {}", c.name)),
            ];
            for (reason, msg) in msgs {
                self.event(pod, EventType::Normal, reason, "Starting", msg).await;
            }
        }
    }

    async fn event(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        let _slot = self.ctx.status_slots.acquire().await;
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&ev, &pod.object_ref(&())).await {
            tracing::debug!(pod = %pod.name_any(), error = %e, "event not recorded");
        }
    }
}
