//! The components beside the API server: the controller-manager, the scheduler and the simulated
//! nodes. `kplane up` runs them in-process on a kube client whose transport is the API server's
//! router; `kplane controller-manager|scheduler|node --kubeconfig FILE` runs one alone over HTTP.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::parse_go_duration;

/// Leader election's flags, as kube-controller-manager and kube-scheduler both take them. In
/// `kplane up` they set both components' leases.
#[derive(Args, Debug, Clone)]
pub struct LeaderElectArgs {
    /// Run only while holding the component's Lease in kube-system (kube-controller-manager,
    /// kube-scheduler). Losing it stops the component's work and campaigns again; the process goes on.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a standby waits, after it last saw the leader's record change, before taking over.
    #[arg(long, default_value = "15s", value_parser = parse_go_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often to renew, and to try to acquire.
    #[arg(long, default_value = "2s", value_parser = parse_go_duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderElectArgs {
    /// Refuses durations a leader could lose its lease under without noticing (client-go's checks),
    /// naming the flags.
    pub fn check(&self) -> Result<()> {
        if !self.leader_elect {
            return Ok(());
        }
        self.lease("").validate().map_err(|e| {
            anyhow::anyhow!(
                "--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period: {e}"
            )
        })
    }

    fn lease(&self, name: &str) -> controller_manager::leader::LeaseConfig {
        controller_manager::leader::LeaseConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: controller_manager::leader::default_identity(),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        }
    }
}

/// kube-controller-manager's flags that kplane honours.
#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Controllers to run: `*` for all, `name` to add one, `-name` to leave one out.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    #[command(flatten)]
    pub leader: LeaderElectArgs,
    /// The pod range each node's /24 (spec.podCIDR) is cut from.
    #[arg(long, default_value = "127.244.0.0/16")]
    pub cluster_cidr: String,
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// A node whose kubelet has not reported for this long is marked NotReady (Unknown) and tainted.
    #[arg(long, default_value = "40s", value_parser = parse_go_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often each HorizontalPodAutoscaler is reconciled.
    #[arg(long, default_value = "15s", value_parser = parse_go_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// The scale-down stabilization window of HPAs whose behavior sets none.
    #[arg(long, default_value = "5m", value_parser = parse_go_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// Terminated pods (Succeeded/Failed) kept before the pod GC deletes the oldest; 0 turns it off.
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: i32,
    /// Where provisioned volumes' hostPath-like paths point (`up`: `<data dir>/volumes`).
    #[arg(long)]
    pub volume_dir: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) approved `kubernetes.io/kube-apiserver-client` requests are signed
    /// with (`up`: the cluster CA, unless `--insecure-http`).
    #[arg(long)]
    pub cluster_signing_cert_file: Option<std::path::PathBuf>,
    /// The CA's private key (PEM).
    #[arg(long)]
    pub cluster_signing_key_file: Option<std::path::PathBuf>,
    /// The longest validity of a signed certificate.
    #[arg(long, default_value = "8760h", value_parser = parse_go_duration)]
    pub cluster_signing_duration: Duration,
}

impl ControllerArgs {
    fn config(&self) -> controller_manager::Config {
        controller_manager::Config {
            controllers: self.controllers.clone(),
            leader_elect: self.leader.leader_elect,
            leader_elect_lease_duration: self.leader.leader_elect_lease_duration,
            leader_elect_renew_deadline: self.leader.leader_elect_renew_deadline,
            leader_elect_retry_period: self.leader.leader_elect_retry_period,
            cluster_cidr: self.cluster_cidr.clone(),
            node_cidr_mask_size: self.node_cidr_mask_size,
            node_monitor_grace_period: self.node_monitor_grace_period,
            horizontal_pod_autoscaler_sync_period: self.horizontal_pod_autoscaler_sync_period,
            horizontal_pod_autoscaler_downscale_stabilization: self
                .horizontal_pod_autoscaler_downscale_stabilization,
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            volume_dir: match &self.volume_dir {
                Some(d) => d.display().to_string(),
                None => controller_manager::Config::default().volume_dir,
            },
            cluster_signing: self.cluster_signing(),
            cluster_signing_duration: self.cluster_signing_duration,
            ..controller_manager::Config::default()
        }
    }

    /// The signing CA from the two files; a file that cannot be read turns signing off, loudly.
    fn cluster_signing(&self) -> Option<controller_manager::csrsigning::ClusterSigning> {
        let (cert, key) = (self.cluster_signing_cert_file.as_ref()?, self.cluster_signing_key_file.as_ref()?);
        match (std::fs::read_to_string(cert), std::fs::read_to_string(key)) {
            (Ok(cert_pem), Ok(key_pem)) => {
                Some(controller_manager::csrsigning::ClusterSigning { cert_pem, key_pem })
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster signing CA; CertificateSigningRequests will not be signed");
                None
            }
        }
    }
}

/// The simulated kubelets' flags.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's Lease duration; the kubelet renews it every quarter of that, as upstream does.
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: i32,
    /// Longest grace period a deleted pod is given on a simulated node (the pod's own if shorter).
    #[arg(long, default_value = "2s", value_parser = parse_go_duration)]
    pub max_pod_grace_period: Duration,
    /// Simulated usage: the CPU one request answered by a simulated server costs, in
    /// millicore-seconds (so N requests/s use N × this many millicores; `/metrics/resource`,
    /// `kubectl top`, HPAs).
    #[arg(long, default_value_t = 1.0)]
    pub simulated_cpu_per_request: f64,
}

impl NodeArgs {
    fn config(&self, name: String, ip: Ipv4Addr, kubelet_port: u16) -> nodes::NodeConfig {
        let mut cfg = nodes::NodeConfig::new(name, ip);
        cfg.kubelet_port = kubelet_port;
        cfg.lease_duration_seconds = self.node_lease_duration_seconds;
        cfg.lease_renew_interval =
            Duration::from_secs_f64(f64::from(self.node_lease_duration_seconds.max(1)) / 4.0);
        cfg.max_grace = self.max_pod_grace_period;
        cfg.usage.cpu_per_request_millicores = self.simulated_cpu_per_request.max(0.0);
        cfg
    }
}

/// How the service proxy carries a Service's traffic (upstream kube-proxy's `--proxy-mode`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// Listeners on each ClusterIP:port that copy bytes to an endpoint; needs no root.
    #[default]
    Userspace,
    /// NAT rules in the kernel (`KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*`); needs root and
    /// iptables.
    Iptables,
    /// NAT rules in kplane's own nftables table `ip kplane-proxy` (`service-ips` map →
    /// `service-*` → `endpoint-*`); needs root and nft.
    Nftables,
}

/// The service proxy's flags.
#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// userspace (listeners, no root), iptables or nftables (kernel NAT; root and iptables or
    /// nft required, no fallback).
    #[arg(long, value_enum, default_value_t = ProxyMode::Userspace)]
    pub proxy_mode: ProxyMode,
    /// iptables mode: the least time between two rule syncs; changes within it are batched.
    #[arg(long, default_value = "1s", value_parser = parse_go_duration)]
    pub iptables_min_sync_period: Duration,
    /// nftables mode: the least time between two rule syncs; changes within it are batched.
    #[arg(long, default_value = "1s", value_parser = parse_go_duration)]
    pub nftables_min_sync_period: Duration,
}

impl ProxyArgs {
    /// Fails, naming the userspace mode, when the kernel mode asked for cannot work here.
    pub async fn check(&self) -> Result<()> {
        match self.proxy_mode {
            ProxyMode::Userspace => {}
            ProxyMode::Iptables => networking::proxy::iptables::preflight().await?,
            ProxyMode::Nftables => networking::proxy::nftables::preflight().await?,
        }
        Ok(())
    }

    /// The kernel mode's name (`iptables`, `nftables`), or none in userspace mode.
    pub fn kernel_mode(&self) -> Option<&'static str> {
        match self.proxy_mode {
            ProxyMode::Userspace => None,
            ProxyMode::Iptables => Some("iptables"),
            ProxyMode::Nftables => Some("nftables"),
        }
    }

    /// [`ProxyArgs::run`] for a spawned task.
    async fn run_owned(
        self,
        client: kube::Client,
        cfg: networking::proxy::ProxyConfig,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), networking::Error> {
        self.run(client, cfg, stop).await
    }

    /// Runs the service proxy in the chosen mode.
    pub async fn run(
        &self,
        client: kube::Client,
        cfg: networking::proxy::ProxyConfig,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), networking::Error> {
        match self.proxy_mode {
            ProxyMode::Userspace => networking::proxy::run_proxy(client, cfg, stop).await,
            ProxyMode::Iptables => {
                networking::proxy::iptables::run_iptables_proxy(
                    client,
                    cfg,
                    self.iptables_min_sync_period,
                    stop,
                )
                .await
            }
            ProxyMode::Nftables => {
                networking::proxy::nftables::run_nftables_proxy(
                    client,
                    cfg,
                    self.nftables_min_sync_period,
                    stop,
                )
                .await
            }
        }
    }
}

/// The networking components' flags: cluster DNS and the ingress controller (the service proxy
/// needs none: it listens on each Service's ClusterIP and on the nodes' addresses).
#[derive(Args, Debug, Clone)]
pub struct NetworkArgs {
    /// Port the cluster DNS answers on, on the kube-dns ClusterIP (53 needs root or
    /// CAP_NET_BIND_SERVICE).
    #[arg(long, default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where the ingress controller serves HTTP (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub ingress_http_address: std::net::SocketAddr,
    /// Where the ingress controller serves HTTPS (loopback).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub ingress_https_address: std::net::SocketAddr,
    /// Do not run the service proxy, cluster DNS and ingress controller.
    #[arg(long)]
    pub no_networking: bool,
}

impl NetworkArgs {
    fn dns(&self, dns_ip: Ipv4Addr) -> networking::dns::DnsConfig {
        networking::dns::DnsConfig {
            listen: std::net::SocketAddr::from((dns_ip, self.cluster_dns_port)),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    fn ingress(&self) -> networking::ingress::IngressConfig {
        networking::ingress::IngressConfig {
            http: self.ingress_http_address,
            https: self.ingress_https_address,
            ..Default::default()
        }
    }
}

/// The X-ray page's flags.
#[derive(Args, Debug, Clone)]
pub struct XrayArgs {
    /// Where `kplane up` serves the X-ray page (plain HTTP, loopback only; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub xray_address: std::net::SocketAddr,
    /// Do not serve the X-ray page.
    #[arg(long)]
    pub no_xray: bool,
}

impl XrayArgs {
    /// Refuses a non-loopback address before anything starts.
    pub fn check(&self) -> Result<()> {
        if !self.no_xray && !self.xray_address.ip().is_loopback() {
            anyhow::bail!(xray::web::Error::NotLoopback(self.xray_address));
        }
        Ok(())
    }
}

/// Serves the X-ray page as a task in `set`, reading the cluster as `system:kplane:xray` and
/// stored values from the store. Returns its address, or None when it is off or cannot bind
/// (said on stderr: kplane goes on without it).
pub async fn start_xray(
    set: &mut JoinSet<Result<()>>,
    state: &apiserver::AppState,
    args: &XrayArgs,
    stop: &Shutdown,
) -> Result<Option<std::net::SocketAddr>> {
    args.check()?;
    if args.no_xray {
        return Ok(None);
    }
    let listener = match xray::web::bind(args.xray_address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("kplane: the X-ray page is not running: {e}");
            return Ok(None);
        }
    };
    let addr = listener.local_addr().context("the X-ray page's address")?;
    let client = in_process_client(state, "kplane-xray", xray::web::USER, &[]);
    let (serve, stopped) = (xray::web::serve(listener, client, state.store.clone(), stop.wait()), stop.wait());
    // A page that stops on its own is reported; it never takes the cluster down with it.
    set.spawn(optional("X-ray page", serve, stopped));
    Ok(Some(addr))
}

/// What `kplane up` runs beside the API server.
#[derive(Args, Debug, Clone)]
pub struct UpComponents {
    /// Simulated nodes to run (worker0, worker1, ...); 0 runs none.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Run the controller-manager and the scheduler (`--no-controllers` for the API and nodes only).
    #[arg(long)]
    pub no_controllers: bool,
    #[command(flatten)]
    pub controller: ControllerArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub net: NetworkArgs,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub xray: XrayArgs,
}

/// `kplane controller-manager --kubeconfig FILE`.
#[derive(Args, Debug)]
pub struct ControllerManagerCmd {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// Serve `/metrics` (workqueue_* and rest_client_*) and `/healthz` over plain HTTP on this
    /// loopback ADDR:PORT (e.g. 127.0.0.1:10257; port 0 picks one). Off unless given.
    /// kube-controller-manager serves them over HTTPS on --bind-address:--secure-port.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_bind_address: Option<std::net::SocketAddr>,
}

/// `kplane scheduler --kubeconfig FILE`.
#[derive(Args, Debug)]
pub struct SchedulerCmd {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    #[command(flatten)]
    pub leader: LeaderElectArgs,
}

/// `kplane node --kubeconfig FILE --name X`.
#[derive(Args, Debug)]
pub struct NodeCmd {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node's name.
    #[arg(long)]
    pub name: String,
    /// The node's InternalIP, where its kubelet listens (loopback).
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    /// The kubelet's port on --node-ip (0 picks a free one).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `kplane proxy --kubeconfig FILE`.
#[derive(Args, Debug)]
pub struct ProxyCmd {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Node addresses to serve NodePorts on (comma-separated, loopback).
    #[arg(long, value_delimiter = ',')]
    pub node_ips: Vec<Ipv4Addr>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// `kplane dns --kubeconfig FILE`.
#[derive(Args, Debug)]
pub struct DnsCmd {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The address to answer on (the kube-dns ClusterIP, by default 127.96.0.10).
    #[arg(long, default_value = "127.96.0.10")]
    pub dns_ip: Ipv4Addr,
    #[command(flatten)]
    pub net: NetworkArgs,
}

/// `kplane ingress --kubeconfig FILE`.
#[derive(Args, Debug)]
pub struct IngressCmd {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    #[command(flatten)]
    pub net: NetworkArgs,
}

/// A kube client for a kubeconfig file, as kubectl would use it.
/// It names itself `agent` in its User-Agent, which is who `managedFields` says wrote what.
pub async fn client_from_kubeconfig(path: &Path, agent: &str) -> Result<kube::Client> {
    client_for(kube_config(path).await?, agent)
}

/// The client configuration of the kubeconfig at `path`.
async fn kube_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("using kubeconfig {}", path.display()))
}

/// A kube client for `config` that names itself `agent` in its User-Agent.
pub fn client_for(mut config: kube::Config, agent: &str) -> Result<kube::Client> {
    config.headers.push((http::header::USER_AGENT, user_agent(agent)));
    kube::Client::try_from(config).context("building a client")
}

/// `<component>/<kplane version>`, the shape of upstream's user agents, whose first part becomes
/// the field manager.
fn user_agent(agent: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("{agent}/v{}", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|_| http::HeaderValue::from_static("kplane"))
}

/// A shutdown signal that many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// A kube client whose requests go straight into the API server's router, with no socket, as
/// `user`: the in-process transport vouches for the identity the way a client certificate would.
/// It names itself `agent` in its User-Agent.
pub fn in_process_client(
    state: &apiserver::AppState,
    agent: &str,
    user: &str,
    groups: &[&str],
) -> kube::Client {
    let identity = apiserver::auth::Authenticated(apiserver::auth::UserInfo::new(user, groups));
    let ua = user_agent(agent);
    let (router, metrics, component) =
        (apiserver::router(state.clone()), state.metrics.clone(), agent.to_string());
    // Each request is counted and timed (to its response's head) as client-go's rest_client
    // metrics; the host is the API server's address.
    let host = state.config.bind.to_string();
    let service = tower::service_fn(move |mut req: http::Request<kube::client::Body>| {
        req.extensions_mut().insert(identity.clone());
        req.headers_mut().entry(http::header::USER_AGENT).or_insert_with(|| ua.clone());
        let (router, metrics, component, host) =
            (router.clone(), metrics.clone(), component.clone(), host.clone());
        async move {
            use tower::ServiceExt;
            let (method, started) = (req.method().to_string(), std::time::Instant::now());
            let resp = router.oneshot(req).await;
            let code = match &resp {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            metrics.observe_rest_client(&component, &method, &host, &code, started.elapsed());
            resp
        }
    });
    kube::Client::new(service, "default")
}

/// Starts the controller-manager, the scheduler, `--nodes` nodes and the networking components
/// in-process, each with its own identity, as tasks in `set`. `dns_ip` is the kube-dns ClusterIP.
pub fn spawn_up(
    set: &mut JoinSet<Result<()>>,
    state: &apiserver::AppState,
    args: &UpComponents,
    nodes_runtime: &tokio::runtime::Handle,
    service_range: apiserver::Cidr,
    stop: &Shutdown,
) {
    let dns_ip = service_range.nth(10);
    if !args.net.no_networking {
        let dns = args.net.dns(dns_ip);
        let proxy = networking::proxy::ProxyConfig {
            node_ips: (0..args.nodes).map(nodes::default_node_ip).collect(),
            // The DNS server owns the kube-dns ClusterIP's port 53.
            exclude: vec![dns.listen],
            ..Default::default()
        };
        let client = in_process_client(state, "kube-proxy", "system:kube-proxy", &[]);
        set.spawn(optional(
            "service proxy",
            args.proxy.clone().run_owned(client, proxy, stop.wait()),
            stop.wait(),
        ));
        let client = in_process_client(state, "kube-dns", "system:kube-dns", &[]);
        set.spawn(optional("cluster DNS", networking::dns::run_dns(client, dns, stop.wait()), stop.wait()));
        let client =
            in_process_client(state, "kplane-ingress-controller", "system:kplane:ingress-controller", &[]);
        let ingress = args.net.ingress();
        set.spawn(optional(
            "ingress controller",
            networking::ingress::run_ingress(client, ingress, stop.wait()),
            stop.wait(),
        ));
    }
    if !args.no_controllers {
        let cm = in_process_client(state, "kube-controller-manager", "system:kube-controller-manager", &[]);
        let workqueue = controller_manager::WorkqueueMetrics::default();
        state.metrics.register(|r| workqueue.register(r));
        set.spawn(run_controller_manager(cm, args.controller.clone(), workqueue, stop.wait()));
        let scheduler = in_process_client(state, "kube-scheduler", "system:kube-scheduler", &[]);
        set.spawn(run_scheduler(scheduler, args.controller.leader.clone(), stop.wait()));
    }
    // One watch of every bound pod for all the nodes, each kubelet reading its own from its index;
    // the informer and the kubelets (and the pod workers they spawn) on `nodes_runtime`.
    let _nodes = nodes_runtime.enter();
    let pods = nodes::PodInformer::start(
        in_process_client(state, "kubelet", "system:kplane:kubelets", &["system:nodes"]),
        None,
    );
    for i in 0..args.nodes {
        let name = format!("worker{i}");
        let client = in_process_client(state, "kubelet", &format!("system:node:{name}"), &["system:nodes"]);
        let mut cfg = args.node.config(name, nodes::default_node_ip(i), 0);
        // Containers resolve through the cluster DNS and may reach the service and pod ranges.
        cfg.cluster_dns = Some(dns_ip);
        cfg.cluster_dns_port = args.net.cluster_dns_port;
        cfg.cluster_domain = args.net.cluster_domain.clone();
        cfg.cluster_networks.push((service_range.base, service_range.bits));
        if let Ok(c) = args.controller.cluster_cidr.parse::<apiserver::Cidr>() {
            cfg.cluster_networks.push((c.base, c.bits));
        }
        let stop = stop.wait();
        let pods = pods.clone();
        set.spawn_on(
            async move { nodes::run_node_shared(client, cfg, pods, stop).await.context("node") },
            nodes_runtime,
        );
    }
}

/// A component the rest of the cluster works without: if it cannot run (a port it may not bind,
/// say), it says so plainly and kplane goes on. Its task then waits for `stop`, because `up` treats
/// any component task that ends early as a failure of the whole cluster.
async fn optional<E: std::fmt::Display>(
    what: &'static str,
    run: impl Future<Output = Result<(), E>>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    if let Err(e) = run.await {
        tracing::error!(error = %e, "the {what} stopped");
        eprintln!("kplane: the {what} is not running: {e}");
    }
    stop.await;
    Ok(())
}

pub async fn run_controller_manager(
    client: kube::Client,
    args: ControllerArgs,
    workqueue: controller_manager::WorkqueueMetrics,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    args.leader.check()?;
    let config = controller_manager::Config { workqueue, ..args.config() };
    controller_manager::run(client, config, stop).await.context("controller-manager")
}

/// The scheduler, while it holds the `kube-system/kube-scheduler` Lease (as kube-scheduler's
/// leader election does), so that two kplanes on one store never bind a pod twice. A lost lease
/// stops it (its in-flight bindings cancelled and joined) and it campaigns again; once re-elected
/// it starts over from fresh watches. Only `stop` ends it.
pub async fn run_scheduler(
    client: kube::Client,
    leader: LeaderElectArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use controller_manager::leader::{LeaderElector, Term};
    leader.check()?;
    if !leader.leader_elect {
        return nodes::run_scheduler(client, nodes::SchedulerConfig::default(), stop)
            .await
            .context("scheduler");
    }
    let elector = LeaderElector::new(client.clone(), leader.lease("kube-scheduler"));
    let mut stop = Box::pin(stop);
    loop {
        let Some(since) = elector.campaign(&mut stop).await else { return Ok(()) };
        tracing::info!(identity = %elector.identity(), "scheduler leading");
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
        let ended = async {
            let _ = end_rx.await;
        };
        let mut scheduler =
            tokio::spawn(nodes::run_scheduler(client.clone(), nodes::SchedulerConfig::default(), ended));
        let term = tokio::select! {
            term = elector.lead(since, &mut stop) => term,
            done = &mut scheduler => {
                elector.release().await;
                return done.context("scheduler task")?.context("scheduler");
            }
        };
        // The scheduler's loop stops at once on this signal, cancelling and joining its bindings.
        let _ = end_tx.send(());
        scheduler.await.context("scheduler task")?.context("scheduler")?;
        match term {
            Term::Shutdown => {
                elector.release().await;
                return Ok(());
            }
            Term::Lost => tracing::error!(
                identity = %elector.identity(),
                "leaderelection lost: the scheduler stopped; campaigning again"
            ),
        }
    }
}

pub async fn controller_manager_cmd(
    cmd: ControllerManagerCmd,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    const AGENT: &str = "kube-controller-manager";
    let Some(addr) = cmd.metrics_bind_address else {
        // Without --metrics-bind-address its metrics are kept but not published.
        let client = client_from_kubeconfig(&cmd.kubeconfig, AGENT).await?;
        return run_controller_manager(client, cmd.controller, Default::default(), stop).await;
    };
    use crate::component_metrics::{RestClientLayer, RestClientMetrics};
    let listener = crate::component_metrics::bind(addr).await?;
    let mut config = kube_config(&cmd.kubeconfig).await?;
    let host = config.cluster_url.authority().map(|a| a.to_string()).unwrap_or_default();
    let rest = RestClientMetrics::new(AGENT, &host);
    config.headers.push((http::header::USER_AGENT, user_agent(AGENT)));
    let client = kube::client::ClientBuilder::try_from(config)
        .context("building a client")?
        .with_layer(&RestClientLayer(rest.clone()))
        .build();
    let workqueue = controller_manager::WorkqueueMetrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    workqueue.register(&mut registry);
    rest.register(&mut registry);
    println!("kplane: controller-manager metrics at http://{}/metrics", listener.local_addr()?);
    let (stop_metrics, metrics_stopping) = Shutdown::new();
    let served = tokio::spawn(crate::component_metrics::serve(listener, registry, metrics_stopping.wait()));
    let result = run_controller_manager(client, cmd.controller, workqueue, stop).await;
    let _ = stop_metrics.send(true);
    served.await.context("the /metrics task")??;
    result
}

pub async fn scheduler_cmd(cmd: SchedulerCmd, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let client = client_from_kubeconfig(&cmd.kubeconfig, "kube-scheduler").await?;
    run_scheduler(client, cmd.leader, stop).await
}

pub async fn node_cmd(cmd: NodeCmd, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    if !cmd.node_ip.is_loopback() {
        anyhow::bail!(
            "--node-ip {} is not a loopback address; simulated nodes serve loopback only",
            cmd.node_ip
        );
    }
    let client = client_from_kubeconfig(&cmd.kubeconfig, "kubelet").await?;
    let cfg = cmd.node.config(cmd.name, cmd.node_ip, cmd.kubelet_port);
    nodes::run_node(client, cfg, stop).await.context("node")
}

/// Waits (at most `timeout`) until `count` nodes report Ready and carry no node-condition taint,
/// so that `kplane up` says "ready" only once pods can be scheduled on all of them. Returns how many were Ready.
///
/// Driven by a watch of the nodes, so it answers as soon as the last node turns schedulable rather
/// than at the next tick of a poll (a 100 ms poll was up to a third of `kplane up`'s startup).
pub async fn wait_nodes_ready(state: &apiserver::AppState, count: usize, timeout: Duration) -> usize {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let client = in_process_client(state, "kplane", "system:apiserver", &["system:masters"]);
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    // Ready per node name; a relist (`Init` .. `InitDone`) fills `listing`, then replaces `ready`.
    let mut ready = std::collections::HashMap::<String, bool>::new();
    let mut listing = std::collections::HashMap::<String, bool>::new();
    let mut events = std::pin::pin!(watcher(nodes, watcher::Config::default()).default_backoff());
    let counted = |ready: &std::collections::HashMap<String, bool>| ready.values().filter(|r| **r).count();
    let watched = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(n)) => {
                    listing.insert(n.metadata.name.clone().unwrap_or_default(), node_schedulable(&n));
                }
                Ok(watcher::Event::InitDone) => ready = std::mem::take(&mut listing),
                Ok(watcher::Event::Apply(n)) => {
                    ready.insert(n.metadata.name.clone().unwrap_or_default(), node_schedulable(&n));
                }
                Ok(watcher::Event::Delete(n)) => {
                    ready.remove(n.metadata.name.as_deref().unwrap_or_default());
                }
                // The watcher retries (with backoff) by itself.
                Err(_) => {}
            }
            if counted(&ready) >= count {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, watched).await;
    counted(&ready)
}

/// A node that reports Ready and that the node lifecycle controller has lifted its
/// `node.kubernetes.io/` (not-ready, unreachable) taints from: pods can be scheduled on it.
fn node_schedulable(n: &k8s_openapi::api::core::v1::Node) -> bool {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
    ready && !tainted
}

pub async fn proxy_cmd(cmd: ProxyCmd, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    cmd.proxy.check().await?;
    let client = client_from_kubeconfig(&cmd.kubeconfig, "kube-proxy").await?;
    let cfg = networking::proxy::ProxyConfig { node_ips: cmd.node_ips, ..Default::default() };
    cmd.proxy.run(client, cfg, stop).await.context("service proxy")
}

pub async fn dns_cmd(cmd: DnsCmd, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let client = client_from_kubeconfig(&cmd.kubeconfig, "kube-dns").await?;
    networking::dns::run_dns(client, cmd.net.dns(cmd.dns_ip), stop).await.context("cluster DNS")
}

pub async fn ingress_cmd(cmd: IngressCmd, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let client = client_from_kubeconfig(&cmd.kubeconfig, "kplane-ingress-controller").await?;
    networking::ingress::run_ingress(client, cmd.net.ingress(), stop).await.context("ingress controller")
}
