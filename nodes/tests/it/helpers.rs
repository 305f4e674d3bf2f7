//! Small helpers so each test reads as its scenario.
//!
//! Addresses: every test uses its own pod CIDR `127.250.<n>.0/24` (distinct `n` per test, listed
//! where each test calls `set_pod_cidr`) so that tests running in parallel never bind the same pod
//! address; node IPs only carry the kubelet server on an ephemeral port, so they may repeat.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use nodes::{NodeConfig, SchedulerConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running `run_node`, stopped with [`RunningNode::stop`].
pub struct RunningNode {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), nodes::Error>>,
}

impl RunningNode {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.expect("node task").expect("node ran");
    }
}

/// Fast timings for tests.
pub fn node_config(name: &str, ip: Ipv4Addr) -> NodeConfig {
    let mut cfg = NodeConfig::new(name, ip);
    cfg.lease_renew_interval = Duration::from_millis(200);
    cfg.status_update_frequency = Duration::from_millis(500);
    cfg.start_delay = Duration::from_millis(20);
    cfg.max_grace = Duration::from_millis(300);
    cfg
}

pub fn start_node(client: &Client, cfg: NodeConfig) -> RunningNode {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(nodes::run_node(client.clone(), cfg, async move {
        let _ = rx.await;
    }));
    RunningNode { stop: Some(tx), handle }
}

/// A running scheduler; dropped with the test.
pub struct RunningScheduler {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), nodes::Error>>,
}

impl RunningScheduler {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.expect("scheduler task").expect("scheduler ran");
    }
}

pub fn start_scheduler(client: &Client) -> RunningScheduler {
    start_scheduler_retrying_every(client, Duration::from_millis(500))
}

pub fn start_scheduler_retrying_every(client: &Client, retry_interval: Duration) -> RunningScheduler {
    let cfg = SchedulerConfig { retry_interval, ..Default::default() };
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(nodes::run_scheduler(client.clone(), cfg, async move {
        let _ = rx.await;
    }));
    RunningScheduler { stop: Some(tx), handle }
}

/// What the IPAM controller does: give the node a podCIDR.
pub async fn set_pod_cidr(client: &Client, node: &str, cidr: &str) {
    let api: Api<Node> = Api::all(client.clone());
    eventually("the node to exist", || async { api.get_opt(node).await.ok().flatten() }).await;
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("set podCIDR");
}

/// A Node object with no kubelet behind it, Ready, for the scheduler's tests.
pub async fn fake_node(
    client: &Client,
    name: &str,
    labels: Value,
    cpu: &str,
    memory: &str,
    pods: &str,
) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let alloc = json!({"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "100Gi"});
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"capacity": alloc, "allocatable": alloc, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.expect("create node")
}

pub async fn create_pod(client: &Client, ns: &str, pod: Value) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod).expect("a pod");
    api.create(&PostParams::default(), &pod).await.expect("create pod")
}

/// A pod with one container and the given extra spec fields.
pub fn pod(name: &str, spec: Value) -> Value {
    let mut p =
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
    if let Value::Object(extra) = spec {
        p["spec"].as_object_mut().unwrap().extend(extra);
    }
    p
}

pub async fn get_pod(client: &Client, ns: &str, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns).get_opt(name).await.expect("get pod")
}

/// The two thousand-pod tests take this so that they do not run at the same time (each measures
/// its own throughput on a small machine).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `f` until it returns Some, or fails the test after 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(20), &mut f).await
}

pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn node_name_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty())
}

pub fn phase_of(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

pub fn condition(p: &Pod, type_: &str) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// core/v1 events about an object with this reason.
pub async fn events_for(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<CoreEvent> {
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
        .collect()
}
