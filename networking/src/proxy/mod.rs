//! The service proxy: kube-proxy's userspace mode.
//!
//! For every port of every Service with a ClusterIP it listens on `ClusterIP:port` (TCP or UDP as the
//! port says), and for NodePort/LoadBalancer services also on each configured node address at the
//! nodePort. Each accepted connection goes to a ready endpoint of that service port (round-robin,
//! optional ClientIP affinity), with retries on dial failure.
//!
//! - `mod.rs`: the level-triggered sync loop. On any Service/EndpointSlice/Endpoints change it
//!   computes the wanted listeners and each service port's endpoints from the stores, then opens,
//!   updates or closes listeners to match.
//! - `balancer.rs`: endpoint choice per service port.
//! - `tcp.rs`, `udp.rs`: the data path.
//! - `iptables.rs`, `nftables.rs`: the kernel modes (`--proxy-mode iptables|nftables`), which
//!   program NAT rules instead of listening; `kernel.rs` reads their live rules back for X-ray.
//!
//! A Service with no ready endpoints keeps its listener, which resets each connection at once (so
//! `curl` fails immediately with "connection reset"); not listening would race with endpoints
//! appearing. A port that cannot be bound (taken by another process) gets a Warning Event
//! `FailedToBindPort` on the Service and a log line, and is retried at every resync.

mod balancer;
pub mod iptables;
pub mod kernel;
pub mod nftables;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, ObjectReference, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::endpoints::{self, EndpointIndex};
use crate::events::Events;
use crate::informer::Informer;
use crate::workers::Workers;
use crate::Error;
use balancer::Balancer;

/// kube-proxy's `--udp-timeout` default (its userspace mode's `UDPIdleTimeout`).
const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Node addresses NodePorts listen on, besides the loopback InternalIPs of every Node object
    /// (upstream: every address of the proxy's own machine; here every node shares the machine).
    pub node_ips: Vec<Ipv4Addr>,
    /// How long a UDP association lives without traffic (upstream's `--udp-timeout`, 250ms).
    pub udp_idle_timeout: Duration,
    /// At most this many UDP associations (client addresses) per listener; datagrams from further
    /// clients are dropped until one expires. Upstream's userspace proxy had no cap (the kernel's
    /// conntrack table bounded the other modes); 1024 per listener bounds sockets and tasks.
    pub udp_max_sessions: usize,
    /// A proxied TCP connection on which no byte moved either way for this long is closed (as
    /// conntrack forgets an established flow after kube-proxy's
    /// `--conntrack-tcp-timeout-established`, 24h).
    pub tcp_idle_timeout: Duration,
    /// How often the listeners are re-synced even without changes, retrying ports that could not
    /// be bound (upstream's `--sync-period`, shortened).
    pub resync: Duration,
    /// Addresses the proxy must never bind because another component serves them in place (the
    /// DNS server on the kube-dns ClusterIP, say): a Service port on one of these is skipped.
    pub exclude: Vec<SocketAddr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            node_ips: Vec::new(),
            udp_idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
            udp_max_sessions: 1024,
            tcp_idle_timeout: Duration::from_secs(24 * 3600),
            resync: Duration::from_secs(5),
            exclude: Vec::new(),
        }
    }
}

/// Runs the proxy until `shutdown` completes; then closes every listener and returns. Open
/// connections are left to finish on their own tasks.
pub async fn run_proxy(
    client: kube::Client,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    let sources = Sources::start(&client, &changed);
    // Proxied connections run on per-core worker threads, each connection's two sockets on one.
    let workers = Arc::new(
        Workers::start("proxy", crate::workers::cores())
            .map_err(|e| Error::Config(format!("service proxy worker threads: {e}")))?,
    );
    let mut proxier = Proxier::new(cfg.clone(), Events::new(client, "kplane-proxy"), workers);

    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        _ = sources.ready() => {}
    }
    tracing::info!(node_ips = ?cfg.node_ips, "service proxy started");
    loop {
        let (services, index, node_ips) = sources.snapshot(&cfg.node_ips);
        proxier.sync(&services, &index, &node_ips).await;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(cfg.resync) => {}
        }
    }
    tracing::info!("service proxy stopping");
    Ok(())
}

/// What both modes watch: Services, their endpoints (EndpointSlices, else Endpoints) and Nodes.
struct Sources {
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    endpoints: Informer<Endpoints>,
    nodes: Informer<Node>,
}

impl Sources {
    fn start(client: &kube::Client, changed: &Arc<Notify>) -> Sources {
        Sources {
            services: Informer::start(Api::all(client.clone()), changed.clone()),
            slices: Informer::start(Api::all(client.clone()), changed.clone()),
            endpoints: Informer::start(Api::all(client.clone()), changed.clone()),
            nodes: Informer::start(Api::all(client.clone()), changed.clone()),
        }
    }

    /// Completes once every informer has listed.
    async fn ready(&self) {
        self.services.ready().await;
        self.slices.ready().await;
        self.endpoints.ready().await;
        self.nodes.ready().await;
    }

    /// The Services, their endpoints, and the NodePort addresses (`configured` plus the Nodes').
    fn snapshot(&self, configured: &[Ipv4Addr]) -> (Vec<Arc<Service>>, EndpointIndex, Vec<Ipv4Addr>) {
        let index = endpoints::index(&self.slices.store, &self.endpoints.store);
        (self.services.store.state(), index, node_addresses(configured, &self.nodes.store.state()))
    }
}

/// Where NodePorts listen: the configured addresses and every Node's loopback InternalIP (a node
/// with an address elsewhere is on another machine, whose own proxy serves it).
fn node_addresses(configured: &[Ipv4Addr], nodes: &[Arc<Node>]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = configured.to_vec();
    ips.extend(
        nodes
            .iter()
            .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse::<Ipv4Addr>().ok())
            .filter(Ipv4Addr::is_loopback),
    );
    ips.sort();
    ips.dedup();
    ips
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
}

/// A service port: namespace/name:portname.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PortKey {
    namespace: String,
    name: String,
    port: String,
}

/// Upstream's `ServicePortName.String()`: `ns/svc:port`, or `ns/svc` for an unnamed port (iptables
/// mode's comments and chain hashes are made from it).
impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

struct Listener {
    owner: PortKey,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Aborting the accept loop drops the socket: the port closes, accepted connections go on.
        self.task.abort();
    }
}

struct Proxier {
    cfg: ProxyConfig,
    events: Events,
    workers: Arc<Workers>,
    balancers: HashMap<PortKey, Arc<Balancer>>,
    listeners: HashMap<(Protocol, SocketAddr), Listener>,
    /// Addresses that could not be bound, and for whom: the Event is sent once per failure streak.
    failed: HashMap<(Protocol, SocketAddr), PortKey>,
}

/// What one service port wants.
struct Wanted {
    key: PortKey,
    reference: ObjectReference,
    addrs: Vec<(Protocol, SocketAddr)>,
    endpoints: Vec<SocketAddr>,
    affinity: Option<Duration>,
}

impl Proxier {
    fn new(cfg: ProxyConfig, events: Events, workers: Arc<Workers>) -> Self {
        Proxier {
            cfg,
            events,
            workers,
            balancers: HashMap::new(),
            listeners: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    async fn sync(&mut self, services: &[Arc<Service>], index: &EndpointIndex, node_ips: &[Ipv4Addr]) {
        let wanted: Vec<Wanted> = services.iter().flat_map(|s| Self::wanted(s, index, node_ips)).collect();

        // Balancers: one per service port, shared by its ClusterIP and NodePort listeners.
        let mut balancers = HashMap::new();
        for w in &wanted {
            let b = self.balancers.get(&w.key).cloned().unwrap_or_default();
            b.set_endpoints(w.endpoints.clone());
            b.set_affinity(w.affinity);
            balancers.insert(w.key.clone(), b);
        }
        self.balancers = balancers;

        // Listeners: close the unwanted (or re-owned) ones first, so their ports can be reused.
        let mut want_addrs: HashMap<(Protocol, SocketAddr), &Wanted> = HashMap::new();
        for w in &wanted {
            for a in w.addrs.iter().filter(|(_, a)| !self.cfg.exclude.contains(a)) {
                want_addrs.entry(*a).or_insert(w);
            }
        }
        self.listeners.retain(|addr, l| {
            let keep = want_addrs.get(addr).is_some_and(|w| w.key == l.owner);
            if !keep {
                tracing::info!(service = %l.owner, proto = ?addr.0, addr = %addr.1, "closing listener");
            }
            keep
        });
        self.failed.retain(|addr, owner| want_addrs.get(addr).is_some_and(|w| &w.key == owner));
        for (addr, w) in want_addrs {
            if self.listeners.contains_key(&addr) {
                continue;
            }
            let balancer = self.balancers[&w.key].clone();
            match self.open(addr, balancer, &w.key).await {
                Ok(task) => {
                    tracing::info!(service = %w.key, proto = ?addr.0, addr = %addr.1, "listening");
                    self.failed.remove(&addr);
                    self.listeners.insert(addr, Listener { owner: w.key.clone(), task });
                }
                Err(e) => {
                    if self.failed.insert(addr, w.key.clone()).is_none() {
                        let msg = format!("cannot listen on {:?} {}: {e}", addr.0, addr.1);
                        tracing::warn!(service = %w.key, "{msg}");
                        self.events.warn(w.reference.clone(), "FailedToBindPort", "Listen", msg);
                    }
                }
            }
        }
    }

    async fn open(
        &self,
        (proto, addr): (Protocol, SocketAddr),
        balancer: Arc<Balancer>,
        key: &PortKey,
    ) -> std::io::Result<JoinHandle<()>> {
        let name: Arc<str> = key.to_string().into();
        Ok(match proto {
            Protocol::Tcp => {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.set_reuseaddr(true)?;
                sock.bind(addr)?;
                let listener = sock.listen(1024)?;
                tokio::spawn(tcp::serve(
                    listener,
                    balancer,
                    self.cfg.tcp_idle_timeout,
                    name,
                    self.workers.clone(),
                ))
            }
            Protocol::Udp => {
                let sock = tokio::net::UdpSocket::bind(addr).await?;
                let limits =
                    udp::Limits { idle: self.cfg.udp_idle_timeout, max_sessions: self.cfg.udp_max_sessions };
                tokio::spawn(udp::serve(sock, balancer, limits, name))
            }
        })
    }

    fn wanted(svc: &Service, index: &EndpointIndex, node_ips: &[Ipv4Addr]) -> Vec<Wanted> {
        let Some(spec) = &svc.spec else { return vec![] };
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let namespace = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"));
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: svc.metadata.uid.clone(),
            ..Default::default()
        };
        let eps = index.get(&(namespace.clone(), name.clone()));
        let mut out = Vec::new();
        // Headless and ExternalName services have no ClusterIP and nothing to proxy.
        let Some(cluster_ip) = cluster_ip else { return out };
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port) else { continue };
            let Ok(port_num) = u16::try_from(port.port) else { continue };
            let port_name = port.name.clone().unwrap_or_default();
            let mut addrs = vec![(proto, SocketAddr::from((cluster_ip, port_num)))];
            if node_ports {
                if let Some(np) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                    addrs.extend(node_ips.iter().map(|ip| (proto, SocketAddr::from((*ip, np)))));
                }
            }
            let proto_name = port.protocol.as_deref().unwrap_or("TCP");
            let endpoints = eps
                .into_iter()
                .flatten()
                .filter(|e| e.ready)
                .filter_map(|e| Some(SocketAddr::from((e.ip, e.port(&port_name, proto_name)?))))
                .collect();
            out.push(Wanted {
                key: PortKey { namespace: namespace.clone(), name: name.clone(), port: port_name },
                reference: reference.clone(),
                addrs,
                endpoints,
                affinity,
            });
        }
        out
    }
}

fn protocol(port: &ServicePort) -> Option<Protocol> {
    match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None, // SCTP: not proxied, as upstream's userspace mode.
    }
}

#[cfg(test)]
mod tests {
    use super::PortKey;

    #[test]
    fn a_port_key_reads_as_upstreams_service_port_name() {
        let key =
            |port: &str| PortKey { namespace: "default".into(), name: "nginx-svc".into(), port: port.into() };
        assert_eq!(key("").to_string(), "default/nginx-svc");
        assert_eq!(key("http").to_string(), "default/nginx-svc:http");
    }
}

/// Test fixtures the kernel modes' rule-generation tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::endpoints::{Endpoint, EndpointIndex, EndpointPort};
    use k8s_openapi::api::core::v1::Service;
    use std::sync::Arc;

    /// A Service `default/<name>` with one TCP port `http`, a NodePort one when `node_port` is set.
    pub fn svc(name: &str, ip: &str, port: i32, node_port: Option<i32>) -> Arc<Service> {
        let mut s = serde_json::json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}});
        if let Some(np) = node_port {
            s["spec"]["type"] = "NodePort".into();
            s["spec"]["ports"][0]["nodePort"] = np.into();
        }
        Arc::new(serde_json::from_value(s).unwrap())
    }

    /// The endpoints of Service `default/<name>`: `ips` on port `http`/80, all `ready` or not.
    pub fn index(name: &str, ips: &[&str], ready: bool) -> EndpointIndex {
        let ports = Arc::new(vec![EndpointPort { name: "http".into(), port: 80, protocol: "TCP".into() }]);
        let eps = ips
            .iter()
            .map(|ip| Endpoint { ip: ip.parse().unwrap(), hostname: None, ready, ports: ports.clone() })
            .collect();
        [(("default".to_string(), name.to_string()), eps)].into()
    }
}
