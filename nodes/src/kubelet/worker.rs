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
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::logs::{ContainerLog, PodLogs};
use super::status::{self, ContainerRun};
use super::traffic::{Listeners, PodIdentity, PortSpec};
use super::usage::ContainerUsage;
use super::Ctx;
use crate::runtime::container;
use crate::runtime::io::{Input, Lines};
use crate::runtime::registry::{Containers, Running};
use crate::runtime::{Io, Sandbox, Shell};
use tokio::time::Instant;

/// A container's running process (its shell task). Dropping it kills the process and its
/// background jobs.
struct Proc {
    task: tokio::task::JoinHandle<i32>,
    sb: Arc<Sandbox>,
    /// Its environment (exec probes run with it).
    env: Vec<(String, String)>,
    /// Where it is registered for exec/attach: (registry, namespace, pod, container).
    reg: (Arc<Containers>, String, String, String),
}

/// A simulated server's exec registration, held by its listeners: dropped with them, it kills what
/// exec started in the sandbox and unregisters the container.
struct ServerRegistration {
    reg: (Arc<Containers>, String, String, String),
    sb: Arc<Sandbox>,
    /// Exec sessions end when this is dropped (the container stopped).
    _exit: tokio::sync::watch::Sender<Option<i32>>,
}

impl Drop for ServerRegistration {
    fn drop(&mut self) {
        self.sb.kill_all();
        let (reg, ns, pod, c) = &self.reg;
        reg.stopped(ns, pod, c);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.task.abort();
        self.sb.kill_all();
        let (reg, ns, pod, c) = &self.reg;
        reg.stopped(ns, pod, c);
    }
}

/// What starting a container gave.
enum Spawned {
    Process(Proc),
    /// A simulated server: its listeners, or the bind error it exits with.
    Server(Result<Listeners, String>),
    /// Its environment or files could not be built (`CreateContainerConfigError`).
    ConfigError(String),
}

/// An app container's life in the pod.
struct Slot {
    c: Container,
    run: ContainerRun,
    proc: Option<Proc>,
    server: Option<Listeners>,
    /// The next crash-loop back-off.
    back_off: Duration,
    /// When it is restarted (while in back-off).
    restart_at: Option<Instant>,
    /// Exited and not restarted (restartPolicy).
    done: bool,
    readiness: Option<Prober>,
    liveness: Option<Prober>,
    /// Until it succeeds once; then None (upstream stops probing startup).
    startup: Option<Prober>,
}

/// A probe's schedule and its consecutive results (upstream's prober worker).
struct Prober {
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
}

/// "Not ready until the probe says so": a readiness time that never comes by itself.
fn never() -> Timestamp {
    Timestamp::now() + SignedDuration::from_hours(24 * 365 * 10)
}

impl Prober {
    fn new(p: &Probe) -> Prober {
        let delay = u64::try_from(p.initial_delay_seconds.unwrap_or(0)).unwrap_or(0);
        Prober {
            probe: p.clone(),
            next: Instant::now() + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
        }
    }

    /// Records a result; Some(verdict) when a threshold is reached.
    fn record(&mut self, ok: bool) -> Option<bool> {
        let period = u64::try_from(self.probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10);
        self.next = Instant::now() + Duration::from_secs(period);
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= self.probe.success_threshold.unwrap_or(1).max(1)).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)).then_some(false)
        }
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn probe_port(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs one probe against a container (exec in its sandbox; TCP/HTTP from the node to the pod
/// IP), bounded by timeoutSeconds.
async fn probe_once(p: &Probe, slot: &Slot, ip: Ipv4Addr) -> bool {
    let timeout = Duration::from_secs(u64::try_from(p.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    let run = async {
        if let Some(e) = &p.exec {
            // A simulated server has no sandbox to run a command in: it counts as healthy.
            let Some(proc) = &slot.proc else { return slot.server.is_some() };
            let mut sh = Shell::new(proc.sb.clone(), &proc.env);
            return sh.run_argv(e.command.clone().unwrap_or_default(), Io::null()).await == 0;
        }
        // A simulated server listens only on its declared ports; the image it stands for also
        // listens on ports it does not declare (nginx on 80): probes of those pass.
        let undeclared = |port: u16| {
            slot.server.is_some() && !slot.c.ports.iter().flatten().any(|p| p.container_port == i32::from(port))
        };
        if let Some(t) = &p.tcp_socket {
            let Some(port) = probe_port(&t.port, &slot.c) else { return false };
            if undeclared(port) {
                return true;
            }
            return tokio::net::TcpStream::connect((ip, port)).await.is_ok();
        }
        if let Some(h) = &p.http_get {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Some(port) = probe_port(&h.port, &slot.c) else { return false };
            if undeclared(port) {
                return true;
            }
            let Ok(mut s) = tokio::net::TcpStream::connect((ip, port)).await else { return false };
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            return (200..400).contains(&code);
        }
        true
    };
    tokio::time::timeout(timeout, run).await.unwrap_or(false)
}

/// A digest of a status the worker wrote, to skip writing the same one again without keeping it.
fn status_digest(status: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    status.to_string().hash(&mut h);
    h.finish()
}

/// Why a wait ended early.
enum Stop {
    /// The pod is gone from the API (or the kubelet is stopping).
    Gone,
    /// The pod has a deletionTimestamp.
    Terminating,
}

/// The pod's latest state from the watch (shared with the informer's cache, never copied);
/// `None` once it is deleted.
pub type PodRx = watch::Receiver<Option<Arc<Pod>>>;

/// Runs one pod's life. The worker holds the pod only while it looks at it: across its waits it
/// keeps what it derived (container slots, runs) and reads the latest version from `rx` again, so a
/// pod's object exists once per process however long the pod runs.
pub async fn run(ctx: Arc<Ctx>, mut rx: PodRx) {
    let (uid, key, names, ns, name) = {
        let Some(pod) = current(&rx) else { return };
        let spec = pod.spec.as_ref();
        let names: Vec<String> = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .map(|c| c.name.clone())
            .collect();
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        (pod.uid().unwrap_or_default(), format!("{ns}/{name}"), names, ns, name)
    };
    ctx.containers.add_pod(&ns, &name, names.clone());
    let logs = ctx.logs.add(&key, &uid, names);
    ctx.usage.add_pod(&uid, &ns, &name);
    let mut w = Worker { ctx: ctx.clone(), uid: uid.clone(), logs, listeners: Vec::new(), ip: None };
    w.lifecycle(&mut rx).await;
    w.listeners.clear();
    ctx.release_ip(&uid);
    ctx.logs.remove(&key, &uid);
    ctx.usage.remove_pod(&uid);
    ctx.containers.remove_pod(&ns, &name);
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
fn port_specs(c: &Container, log: &Arc<ContainerLog>, usage: &Arc<ContainerUsage>) -> Vec<PortSpec> {
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
                usage: Some(usage.clone()),
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

fn current(rx: &PodRx) -> Option<Arc<Pod>> {
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
        let Some((done, deleting)) =
            current(rx).map(|pod| (matches!(phase(&pod), "Succeeded" | "Failed"), terminating(&pod)))
        else {
            return;
        };
        if !done && !deleting {
            match self.start_and_run(rx).await {
                Ok(()) | Err(Stop::Terminating) => {}
                Err(Stop::Gone) => return,
            }
        }
        // Completed, or being deleted: wait for the deletion, then finish it.
        if self.until(rx, None).await.is_err_and(|s| matches!(s, Stop::Gone)) {
            return;
        }
        Box::pin(self.terminate(rx)).await;
    }

    /// Runs the pod until it is deleted (Err(Terminating)), gone, or completed (Ok).
    async fn start_and_run(&mut self, rx: &mut PodRx) -> Result<(), Stop> {
        // hostNetwork pods use the node's address and need no pod network (they start before the
        // node has a podCIDR, as upstream's do before the CNI is ready).
        let host_network = pod_host_network(rx);
        let ip = if host_network { self.ctx.cfg.node_ip } else { self.wait_for_ip(rx).await? };
        let node_ip = self.ctx.cfg.node_ip;
        let already_running = {
            let pod = current(rx).ok_or(Stop::Gone)?;
            self.ctx.containers.set_ip(&pod.namespace().unwrap_or_default(), &pod.name_any(), Some(ip));
            let already_running = phase(&pod) == "Running";
            if !already_running {
                self.write(&pod, status::creating(&pod, node_ip, Timestamp::now())).await?;
            }
            already_running
        };
        if !already_running {
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
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let id = PodIdentity {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            ip,
            node: self.ctx.cfg.name.clone(),
        };
        let vols = match Box::pin(container::pod_volumes(&self.ctx.client, &pod)).await {
            Ok(v) => Arc::new(v),
            Err(msg) => {
                // Upstream retries the volume setup; the pod stays ContainerCreating meanwhile.
                self.event(
                    &pod,
                    EventType::Warning,
                    "FailedMount",
                    "Starting",
                    format!("MountVolume.SetUp failed: {msg}"),
                )
                .await;
                self.until(rx, Some(Duration::from_secs(10))).await?;
                return Box::pin(self.start_and_run(rx)).await;
            }
        };
        let dns_ip = Box::pin(self.ctx.dns_ip()).await;
        // Init containers run one after another, each to success, before the app containers.
        let mut init_runs: HashMap<String, ContainerRun> = HashMap::new();
        if !already_running {
            for c in spec.init_containers.iter().flatten() {
                let mut back_off = BACK_OFF_INITIAL;
                loop {
                    let pod = current(rx).ok_or(Stop::Gone)?;
                    let mut run = match init_runs.remove(&c.name) {
                        Some(mut prev) => {
                            self.logs.restart(&c.name);
                            prev.last_state = prev.terminated().map(|t| json!({"terminated": t}));
                            prev.restart_count += 1;
                            prev.id = super::random_hex(64);
                            prev.started_at = Timestamp::now();
                            prev.exit = None;
                            prev.back_off = None;
                            prev
                        }
                        None => ContainerRun::new(super::random_hex(64), Timestamp::now(), None),
                    };
                    let proc = Box::pin(self.spawn(&pod, c, &vols, dns_ip, ip, &id)).await;
                    let code = match proc {
                        Spawned::Process(mut p) => {
                            init_runs.insert(c.name.clone(), run.clone());
                            self.write(
                                &pod,
                                status::initializing(&pod, node_ip, Some(ip), &init_runs, Timestamp::now()),
                            )
                            .await?;
                            tokio::select! {
                                code = &mut p.task => code.unwrap_or(2),
                                r = self.until(rx, None) => { r?; 0 }
                            }
                        }
                        Spawned::Server(_) => 0,
                        Spawned::ConfigError(msg) => {
                            run.config_error = Some(msg);
                            init_runs.insert(c.name.clone(), run);
                            self.write(
                                &pod,
                                status::initializing(&pod, node_ip, Some(ip), &init_runs, Timestamp::now()),
                            )
                            .await?;
                            self.until(rx, Some(BACK_OFF_INITIAL)).await?;
                            continue;
                        }
                    };
                    run.exit = Some((code, Timestamp::now()));
                    if code == 0 {
                        init_runs.insert(c.name.clone(), run);
                        break;
                    }
                    if restart_policy == "Never" {
                        init_runs.insert(c.name.clone(), run);
                        let st = status::init_failed(&pod, node_ip, Some(ip), &init_runs, Timestamp::now());
                        self.write(&pod, st).await?;
                        self.ctx.release_ip(&self.uid);
                        self.ip = None;
                        return Ok(());
                    }
                    run.back_off = Some(back_off_message(back_off, &c.name, &pod));
                    init_runs.insert(c.name.clone(), run);
                    self.write(
                        &pod,
                        status::initializing(&pod, node_ip, Some(ip), &init_runs, Timestamp::now()),
                    )
                    .await?;
                    self.crash_events(&pod, std::slice::from_ref(&c.name), &init_runs, true).await;
                    self.until(rx, Some(back_off)).await?;
                    back_off = (back_off * 2).min(BACK_OFF_MAX);
                }
            }
        }
        // The app containers.
        let mut slots: Vec<Slot> = Vec::new();
        for c in &spec.containers {
            let (cid, started_at) = prior.get(&c.name).cloned().unwrap_or_else(|| (super::random_hex(64), now));
            // A container with a readiness probe is ready once the probe succeeds.
            let ready_at = c.readiness_probe.as_ref().map(|_| never());
            let mut run = ContainerRun::new(cid, started_at, ready_at);
            run.startup_pending = c.startup_probe.is_some();
            slots.push(Slot {
                c: c.clone(),
                run,
                proc: None,
                server: None,
                back_off: BACK_OFF_INITIAL,
                restart_at: None,
                done: false,
                readiness: c.readiness_probe.as_ref().map(Prober::new),
                liveness: c.liveness_probe.as_ref().map(Prober::new),
                startup: c.startup_probe.as_ref().map(Prober::new),
            });
        }
        // From here on the worker keeps only what it derived: the pod is read afresh each round.
        drop(spec);
        drop(pod);
        let mut first = true;
        // The last status written, as a digest (not a copy of it).
        let mut last_written: Option<u64> = None;
        loop {
            let pod = current(rx).ok_or(Stop::Gone)?;
            // Start what is due.
            let mut crashed = Vec::new();
            for slot in slots.iter_mut() {
                let due = !slot.done
                    && slot.proc.is_none()
                    && slot.server.is_none()
                    && slot.restart_at.is_none_or(|t| t <= Instant::now());
                if !due {
                    continue;
                }
                if slot.restart_at.take().is_some() && slot.run.config_error.is_none() {
                    // The new instance logs afresh; the last one's log is its `previous`.
                    self.logs.restart(&slot.c.name);
                    let s = &mut *slot;
                    s.run.last_state = s.run.terminated().map(|t| json!({"terminated": t}));
                    s.run.restart_count += 1;
                    s.run.id = super::random_hex(64);
                    s.run.started_at = Timestamp::now();
                    s.run.exit = None;
                    s.run.back_off = None;
                    s.run.message = None;
                    s.run.ready_at = s.c.readiness_probe.as_ref().map(|_| never());
                    s.readiness = s.c.readiness_probe.as_ref().map(Prober::new);
                    s.liveness = s.c.liveness_probe.as_ref().map(Prober::new);
                    s.startup = s.c.startup_probe.as_ref().map(Prober::new);
                    s.run.startup_pending = s.startup.is_some();
                }
                let c = slot.c.clone();
                if first && !prior.contains_key(&c.name) && status::is_server(&c) {
                    self.logs.start(&c.name).push(format!(
                        "kplane-sim: container {} started (image {}; simulated, nothing runs)",
                        c.name,
                        c.image.as_deref().unwrap_or_default()
                    ));
                }
                match Box::pin(self.spawn(&pod, &c, &vols, dns_ip, ip, &id)).await {
                    Spawned::Process(p) => {
                        slot.run.config_error = None;
                        slot.proc = Some(p);
                    }
                    Spawned::Server(Ok(l)) => {
                        slot.run.config_error = None;
                        slot.server = Some(l);
                    }
                    Spawned::Server(Err(msg)) => {
                        slot.run.message = Some(msg);
                        let code = BIND_FAILED_EXIT;
                        self.exited(&pod, &restart_policy, slot, code);
                        crashed.push(c.name.clone());
                    }
                    Spawned::ConfigError(msg) => {
                        slot.run.config_error = Some(msg);
                        slot.restart_at = Some(Instant::now() + BACK_OFF_INITIAL);
                    }
                }
            }
            let runs: HashMap<String, ContainerRun> =
                slots.iter().map(|s| (s.c.name.clone(), s.run.clone())).collect();
            let all_done = slots.iter().all(|s| s.done);
            let terminal = all_done.then(|| {
                if slots.iter().all(|s| s.run.exit.is_some_and(|(c, _)| c == 0)) {
                    "Succeeded"
                } else {
                    "Failed"
                }
            });
            let st = status::started(&pod, node_ip, Some(ip), &runs, &init_runs, terminal, Timestamp::now());
            let digest = status_digest(&st);
            if last_written != Some(digest) {
                self.write(&pod, st).await?;
                last_written = Some(digest);
            }
            if first && !already_running {
                self.start_events(&pod).await;
            }
            first = false;
            let crashed_restarting: Vec<String> =
                crashed.iter().filter(|n| slots.iter().any(|s| &s.c.name == *n && !s.done)).cloned().collect();
            let crashed_done: Vec<String> =
                crashed.iter().filter(|n| slots.iter().any(|s| &s.c.name == *n && s.done)).cloned().collect();
            self.crash_events(&pod, &crashed_restarting, &runs, true).await;
            self.crash_events(&pod, &crashed_done, &runs, false).await;
            if let Some(_phase) = terminal {
                // A finished pod's sandbox is gone: its address is free again (its status keeps it).
                self.ctx.release_ip(&self.uid);
                self.ip = None;
                return Ok(());
            }
            // Probes that are due.
            let mut probed = false;
            for slot in slots.iter_mut() {
                let running = slot.proc.is_some() || slot.server.is_some();
                if !running {
                    continue;
                }
                // A startup probe holds the other two back until it succeeds; failing it kills
                // the container as a liveness failure does.
                if let Some(pr) = slot.startup.as_ref() {
                    if pr.next > Instant::now() {
                        continue;
                    }
                    let ok = probe_once(&pr.probe, slot, ip).await;
                    match slot.startup.as_mut().and_then(|p| p.record(ok)) {
                        Some(true) => {
                            slot.startup = None;
                            slot.run.startup_pending = false;
                            probed = true;
                        }
                        Some(false) => {
                            self.kill_for_probe(&pod, &restart_policy, slot, "startup").await;
                            probed = true;
                        }
                        None => {}
                    }
                    continue;
                }
                if let Some(pr) = slot.readiness.as_ref().filter(|p| p.next <= Instant::now()) {
                    let ok = probe_once(&pr.probe, slot, ip).await;
                    let verdict = slot.readiness.as_mut().and_then(|p| p.record(ok));
                    match verdict {
                        Some(true) if slot.run.ready_at.is_none_or(|t| t > Timestamp::now()) => {
                            slot.run.ready_at = Some(Timestamp::now());
                            probed = true;
                        }
                        Some(false) if slot.run.ready_at.is_some_and(|t| t <= Timestamp::now()) => {
                            slot.run.ready_at = Some(never());
                            probed = true;
                            let msg = format!("Readiness probe failed: container {}", slot.c.name);
                            self.event(&pod, EventType::Warning, "Unhealthy", "Probing", msg).await;
                        }
                        _ => {}
                    }
                }
                if let Some(pr) = slot.liveness.as_ref().filter(|p| p.next <= Instant::now()) {
                    let ok = probe_once(&pr.probe, slot, ip).await;
                    if slot.liveness.as_mut().and_then(|p| p.record(ok)) == Some(false) {
                        self.kill_for_probe(&pod, &restart_policy, slot, "liveness").await;
                        probed = true;
                    }
                }
            }
            if probed {
                continue;
            }
            // Not held across the wait: the pod's next version replaces this one in `rx`.
            drop(pod);
            // Wait for a process to exit, a restart, readiness or probe time, or the pod to change.
            let now_ts = Timestamp::now();
            let mut wake: Option<Instant> = slots
                .iter()
                .filter_map(|s| s.restart_at)
                .chain(slots.iter().filter(|s| s.proc.is_some() || s.server.is_some()).flat_map(|s| {
                    match &s.startup {
                        Some(p) => vec![p.next],
                        None => s.readiness.iter().chain(s.liveness.iter()).map(|p| p.next).collect(),
                    }
                }))
                .min();
            for s in &slots {
                if let Some(t) = s.run.ready_at {
                    let d = t.duration_since(now_ts);
                    if d.is_positive() {
                        let at = Instant::now() + d.unsigned_abs();
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
            }
            let procs: Vec<usize> = (0..slots.len()).filter(|k| slots[*k].proc.is_some()).collect();
            let exited = {
                let mut handles: Vec<&mut tokio::task::JoinHandle<i32>> =
                    slots.iter_mut().filter_map(|s| s.proc.as_mut().map(|p| &mut p.task)).collect();
                let any_exit = async {
                    if handles.is_empty() {
                        std::future::pending::<(i32, usize)>().await
                    } else {
                        let (r, idx, _) = futures::future::select_all(handles.iter_mut()).await;
                        (r.unwrap_or(2), idx)
                    }
                };
                let sleep = async {
                    match wake {
                        Some(w) => tokio::time::sleep_until(w).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    (code, idx) = any_exit => Some((code, idx)),
                    _ = sleep => None,
                    r = self.until(rx, None) => { r?; None }
                }
            };
            if let Some((code, idx)) = exited {
                let pod = current(rx).ok_or(Stop::Gone)?;
                let k = procs[idx];
                slots[k].proc = None;
                let name = slots[k].c.name.clone();
                if code != 0 {
                    slots[k].run.message = None;
                }
                self.exited(&pod, &restart_policy, &mut slots[k], code);
                if code != 0 || !slots[k].done {
                    let runs: HashMap<String, ContainerRun> =
                        slots.iter().map(|s| (s.c.name.clone(), s.run.clone())).collect();
                    if slots[k].done {
                        self.crash_events(&pod, &[name], &runs, false).await;
                    } else {
                        self.crash_events(&pod, &[name], &runs, true).await;
                    }
                }
            }
        }
    }

    /// A failed liveness or startup probe: upstream's `Killing` event, then the container is killed
    /// (SIGKILL's 137) and restarted as its restartPolicy says.
    async fn kill_for_probe(&self, pod: &Pod, policy: &str, slot: &mut Slot, probe: &str) {
        let name = slot.c.name.clone();
        let msg = format!("Container {name} failed {probe} probe, will be restarted");
        self.event(pod, EventType::Normal, "Killing", "Killing", msg).await;
        slot.proc = None;
        slot.server = None;
        slot.run.message = None;
        self.exited(pod, policy, slot, 137);
    }

    /// A container's process ended with `code`: restart it after the back-off (restartPolicy
    /// Always, or OnFailure with a failure), else it is done.
    fn exited(&self, pod: &Pod, policy: &str, s: &mut Slot, code: i32) {
        let now = Timestamp::now();
        let ran = now.duration_since(s.run.started_at);
        s.run.exit = Some((code, now));
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        if !restart {
            s.done = true;
            return;
        }
        // Upstream forgets the back-off of a container that ran for 10 minutes.
        if ran >= SignedDuration::from_secs(600) {
            s.back_off = BACK_OFF_INITIAL;
        }
        s.run.back_off = Some(back_off_message(s.back_off, &s.c.name, pod));
        s.restart_at = Some(Instant::now() + s.back_off);
        s.back_off = (s.back_off * 2).min(BACK_OFF_MAX);
    }

    /// Starts a container: its command in the sandbox, or (images with no command) today's
    /// simulated server.
    async fn spawn(
        &mut self,
        pod: &Pod,
        c: &Container,
        vols: &Arc<container::PodVolumes>,
        dns_ip: Option<Ipv4Addr>,
        ip: Ipv4Addr,
        id: &PodIdentity,
    ) -> Spawned {
        let mode = status::mode_of(c);
        let host = container::hostname(pod);
        let services = self.ctx.informer.services();
        let env = match container::environment(&self.ctx.client, services, pod, c, &host).await {
            Ok(e) => e,
            Err(msg) => return Spawned::ConfigError(msg),
        };
        let mut net = self.ctx.net.clone();
        if let Some(cidr) = *self.ctx.cidr.borrow() {
            net.allowed.push((cidr.base, cidr.prefix));
        }
        let sb = Arc::new(container::sandbox(pod, c, vols, &net, dns_ip, ip));
        if matches!(mode, status::Mode::Server) {
            // The image's server is the main process; `kubectl exec` still gets a shell in the
            // container's sandbox, as a real nginx image has one, for as long as the server runs.
            let mut started = self.start_container(id, c).await;
            if let Ok(listeners) = &mut started {
                let log = self.logs.get(&c.name).unwrap_or_else(|| self.logs.start(&c.name));
                let (exit_tx, exited) = tokio::sync::watch::channel(None);
                let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
                let running = Running { sb: sb.clone(), env, log, stdin: None, stdin_once: false, exited };
                self.ctx.containers.started(&ns, &name, &c.name, running);
                listeners.hold(ServerRegistration {
                    reg: (self.ctx.containers.clone(), ns, name, c.name.clone()),
                    sb,
                    _exit: exit_tx,
                });
            }
            return Spawned::Server(started);
        }
        let log = self.logs.start(&c.name);
        let log_for_sink = log.clone();
        let sink = Arc::new(Lines::new(move |l: String| log_for_sink.push(l)));
        // `stdin: true`: the main process reads what `kubectl attach` sends.
        let (stdin_w, stdin) = if c.stdin == Some(true) {
            let (w, r) = crate::runtime::io::pipe();
            (Some(w), r)
        } else {
            (None, Input::empty())
        };
        let io = Io { stdin, stdout: sink.clone(), stderr: sink.clone() };
        let mut sh = Shell::new(sb.clone(), &env);
        let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let reg = self.ctx.containers.clone();
        reg.started(
            &ns,
            &name,
            &c.name,
            Running {
                sb: sb.clone(),
                env: env.clone(),
                log,
                stdin: stdin_w,
                stdin_once: c.stdin_once == Some(true),
                exited: exit_rx,
            },
        );
        let usage = self.ctx.usage.start_container(&self.uid, c);
        let task = tokio::spawn(async move {
            // The time the process spends computing is its CPU (`usage.rs`).
            let code = usage
                .timed(async {
                    match mode {
                        status::Mode::Command(argv) => sh.run_argv(argv, io).await,
                        _ => sh.interactive(&io, false).await,
                    }
                })
                .await;
            usage.end();
            sink.flush();
            let _ = exit_tx.send(Some(code));
            code
        });
        Spawned::Process(Proc { task, sb, env, reg: (reg, ns, name, c.name.clone()) })
    }

    /// Starts a container's server: its listeners, or the error it would exit with when a port
    /// cannot be bound (its other ports close with it).
    async fn start_container(&mut self, id: &PodIdentity, c: &Container) -> Result<Listeners, String> {
        let log = self.logs.get(&c.name).unwrap_or_else(|| self.logs.start(&c.name));
        let usage = self.ctx.usage.start_container(&self.uid, c);
        let (listeners, failures) = Listeners::start(id, port_specs(c, &log, &usage)).await;
        if failures.is_empty() {
            return Ok(listeners);
        }
        drop(listeners);
        usage.end();
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
            let msg = runs.get(name).and_then(|r| r.message.clone());
            let code = runs.get(name).and_then(|r| r.exit).map_or(BIND_FAILED_EXIT, |(c, _)| c);
            if restarts {
                let note = format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    pod.name_any(),
                    pod.namespace().unwrap_or_default(),
                    pod.uid().unwrap_or_default()
                );
                self.event(pod, EventType::Warning, "BackOff", "Starting", note).await;
            } else {
                let note = match msg {
                    Some(msg) => format!("Error: container {name} exited with code {code}: {msg}"),
                    None => format!("Error: container {name} exited with code {code}"),
                };
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
                let st = status::started(
                    &pod,
                    self.ctx.cfg.node_ip,
                    self.ip,
                    &runs,
                    &HashMap::new(),
                    Some("Succeeded"),
                    now,
                );
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
    /// Boxed, as are the other requests a worker makes: a worker spends its life waiting, and an
    /// inline request future would make every waiting worker's task as large as a request's state.
    async fn write(&self, pod: &Pod, status: Value) -> Result<(), Stop> {
        Box::pin(self.write_now(pod, status)).await
    }

    async fn write_now(&self, pod: &Pod, status: Value) -> Result<(), Stop> {
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
        Box::pin(self.event_now(pod, type_, reason, action, note)).await
    }

    async fn event_now(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
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
