//! A simulated kubelet: registers its Node, keeps its status and Lease fresh, runs the pods bound to
//! it (one worker task each) and serves `/containerLogs` on `node_ip:kubelet_port`.
//!
//! Tasks, all owned by [`run_node`] and stopped through one `stop` channel: the kubelet server,
//! the own-Node watch (podCIDR, latest Node), the status loop, the lease loop, and the pod manager
//! (the `spec.nodeName=<name>` pod watch, which owns the workers).

pub mod ipam;
pub mod logs;
pub mod node;
pub mod pods;
pub mod server;
pub mod spdy;
pub mod status;
pub mod stream_server;
pub mod streams;
pub mod traffic;
pub mod usage;
mod worker;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_manager::recorder::Recorder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::{Error, NodeConfig};
use ipam::{Cidr, Ipam};
use logs::LogStore;
pub use pods::PodInformer;

/// What every task of one kubelet shares.
pub(crate) struct Ctx {
    pub cfg: NodeConfig,
    pub client: Client,
    pub recorder: Recorder,
    pub ipam: Mutex<Ipam>,
    pub logs: Arc<LogStore>,
    /// The node's podCIDR, once set.
    pub cidr: watch::Receiver<Option<Cidr>>,
    /// Bounds the pod status writes and events in flight.
    pub status_slots: Semaphore,
    /// Signalled whenever an address is released (pods waiting for one retry).
    pub ip_freed: Notify,
    pub stop: watch::Receiver<bool>,
    /// What containers' sandboxes know of the cluster network.
    pub net: crate::runtime::container::ClusterNet,
    /// The kube-dns ClusterIP, once found.
    pub dns_ip: Mutex<Option<std::net::Ipv4Addr>>,
    /// The running containers, for exec/attach/port-forward (`streams::Runtime`).
    pub containers: Arc<crate::runtime::registry::Containers>,
    /// Simulated resource usage (`/metrics/resource`).
    pub usage: Arc<usage::Usage>,
    /// The shared informer: the pods of this node, and the Services containers' variables name.
    pub informer: Arc<PodInformer>,
}

impl Ctx {
    /// The cluster DNS address for resolv.conf: configured, or the kube-dns Service's ClusterIP.
    pub async fn dns_ip(&self) -> Option<std::net::Ipv4Addr> {
        if let Some(ip) = self.net.dns_ip.or(*self.dns_ip.lock().unwrap_or_else(|e| e.into_inner())) {
            return Some(ip);
        }
        let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(self.client.clone(), "kube-system");
        let ip = api
            .get_opt("kube-dns")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.spec?.cluster_ip)
            .and_then(|ip| ip.parse().ok());
        *self.dns_ip.lock().unwrap_or_else(|e| e.into_inner()) = ip;
        ip
    }

    pub fn release_ip(&self, uid: &str) {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner()).release(uid);
        self.ip_freed.notify_waiters();
    }
}

pub(crate) fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
}

/// Runs one node until `shutdown` completes. Errors: the kubelet port cannot be bound, or the
/// API server refuses the Node for good (e.g. an invalid name).
pub async fn run_node(
    client: Client,
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let pods = PodInformer::start(client.clone(), Some(&cfg.name));
    run_node_with(client, cfg, crate::runtime::registry::Containers::new(), pods, shutdown).await
}

/// [`run_node`] reading its pods from a shared [`PodInformer`] (one watch for all the nodes of a
/// process) instead of a watch of its own.
pub async fn run_node_shared(
    client: Client,
    cfg: NodeConfig,
    pods: Arc<PodInformer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_node_with(client, cfg, crate::runtime::registry::Containers::new(), pods, shutdown).await
}

/// [`run_node`] with the node's container registry and pod informer given: the registry is the
/// node's `Arc<dyn streams::Runtime>` (exec, attach, pod IPs) for the kubelet's streaming endpoints.
pub async fn run_node_with(
    client: Client,
    cfg: NodeConfig,
    containers: Arc<crate::runtime::registry::Containers>,
    pods_informer: Arc<PodInformer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = SocketAddr::from((cfg.node_ip, cfg.kubelet_port));
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
    let port = listener.local_addr().map_err(|source| Error::Listen { addr, source })?.port();
    let (stop_tx, mut stop) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let id = node::NodeIdentity::new(&cfg.name);
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(registered) = node::register_until_done(&nodes, &cfg, &id, port, &mut stop).await? else {
        return Ok(());
    };
    tracing::info!(node = %cfg.name, %addr, port, "node registered");

    let (cidr_tx, cidr_rx) = watch::channel(None);
    let (latest_tx, latest_rx) = watch::channel(Some(registered.clone()));
    let logs = Arc::new(LogStore::default());
    let reporter = Reporter { controller: "kubelet".into(), instance: Some(cfg.name.clone()) };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        ipam: Mutex::new(Ipam::default()),
        logs: logs.clone(),
        cidr: cidr_rx.clone(),
        status_slots: Semaphore::new(cfg.status_concurrency.max(1)),
        ip_freed: Notify::new(),
        stop: stop.clone(),
        net: crate::runtime::container::ClusterNet {
            domain: cfg.cluster_domain.clone(),
            dns_ip: cfg.cluster_dns,
            dns_port: cfg.cluster_dns_port,
            allowed: cfg.cluster_networks.clone(),
        },
        dns_ip: Mutex::new(None),
        containers,
        usage: Arc::new(usage::Usage::new(cfg.usage)),
        informer: pods_informer.clone(),
        cfg: cfg.clone(),
    });

    // exec, attach and port-forward reach the node's containers through the streams seam.
    let server_stop = stop.clone();
    let server_runtime: Arc<dyn streams::Runtime> = ctx.containers.clone();
    let server_usage = ctx.usage.clone();
    tasks.spawn(async move {
        let mut s = server_stop;
        let app = server::router(logs, server_runtime, server_usage).into_make_service();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = s.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "kubelet server stopped");
        }
    });
    tasks.spawn(watch_own_node(ctx.clone(), nodes.clone(), cidr_tx, latest_tx, stop.clone()));
    tasks.spawn(node::run_status(nodes, cfg.clone(), id, port, latest_rx, cidr_rx, stop.clone()));
    tasks.spawn(node::run_lease(client, cfg.clone(), node::uid_of(&registered), stop.clone()));
    let mut pods = tokio::spawn(run_pods(ctx, pods_informer, stop.clone()));

    let _ = stop.changed().await;
    // Workers end on `stop`; their listeners close and their logs' followers end with them.
    if tokio::time::timeout(Duration::from_secs(5), &mut pods).await.is_err() {
        pods.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} })
        .await;
    tracing::info!(node = %cfg.name, "node stopped");
    Ok(())
}

/// Follows this node's own Node object: publishes it, and its podCIDR once set.
async fn watch_own_node(
    ctx: Arc<Ctx>,
    api: Api<Node>,
    cidr_tx: watch::Sender<Option<Cidr>>,
    latest_tx: watch::Sender<Option<Node>>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", ctx.cfg.name));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    loop {
        let ev = tokio::select! {
            _ = stop.changed() => return,
            ev = events.next() => ev,
        };
        match ev {
            Some(Ok(Event::Apply(n) | Event::InitApply(n))) => {
                let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(Cidr::parse);
                if let Some(c) = cidr {
                    if cidr_tx.borrow().as_ref() != Some(&c) {
                        ctx.ipam.lock().unwrap_or_else(|e| e.into_inner()).set_cidr(c);
                        tracing::info!(node = %ctx.cfg.name, cidr = %c, "pod CIDR set");
                        cidr_tx.send_replace(Some(c));
                    }
                }
                latest_tx.send_replace(Some(n));
            }
            Some(Ok(Event::Delete(_))) => {
                latest_tx.send_replace(None);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(node = %ctx.cfg.name, error = %e, "node watch"),
            None => return,
        }
    }
}

/// The pod manager: one worker per pod bound here, fed the pod as the informer shows it. It wakes
/// only when one of this node's pods changes.
async fn run_pods(ctx: Arc<Ctx>, informer: Arc<PodInformer>, mut stop: watch::Receiver<bool>) {
    let node = ctx.cfg.name.clone();
    let wake = informer.subscribe(&node);
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                }
                continue;
            }
            _ = wake.notified() => {}
        }
        let Some(changes) = informer.take(&node) else { continue };
        if changes.relisted {
            // Before any worker allocates, the addresses running pods already report are theirs
            // (this is how a restarted kubelet rebuilds its IPAM: nothing is persisted).
            let mut ipam = ctx.ipam.lock().unwrap_or_else(|e| e.into_inner());
            for p in changes.pods.iter().filter_map(|(_, p)| p.as_ref()) {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|s| s.parse().ok());
                if let (Some(ip), false) = (ip, phase == "Succeeded" || phase == "Failed") {
                    ipam.pre_reserve(&p.uid().unwrap_or_default(), ip);
                }
            }
        }
        if changes.relisted {
            // Workers whose pod the list no longer has are gone.
            let listed: HashSet<&str> =
                changes.pods.iter().filter(|(_, p)| p.is_some()).map(|(uid, _)| uid.as_str()).collect();
            for (uid, tx) in &workers {
                if !listed.contains(uid.as_str()) {
                    tx.send_replace(None);
                }
            }
        }
        for (uid, pod) in changes.pods {
            match pod {
                Some(pod) => apply(&ctx, &mut workers, &mut tasks, uid, pod),
                None => {
                    if let Some(tx) = workers.get(&uid) {
                        tx.send_replace(None);
                    }
                }
            }
        }
    }
    // Workers see `stop` and end; give them a moment to close their sockets.
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while tasks.join_next().await.is_some() {} })
        .await;
}

fn apply(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
    tasks: &mut JoinSet<String>,
    uid: String,
    pod: Arc<Pod>,
) {
    if let Some(tx) = workers.get(&uid) {
        tx.send_replace(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    workers.insert(uid.clone(), tx);
    let ctx = ctx.clone();
    tasks.spawn(async move {
        worker::run(ctx, rx).await;
        uid
    });
}
