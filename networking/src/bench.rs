//! `networking::bench::run`: one real simulated pod, measured in the same run directly (its pod
//! IP), through the userspace service proxy's ClusterIP, through the iptables and the nftables
//! modes' ClusterIP (kernel DNAT; root only), through the ingress controller, and through nginx in front of the
//! same pod, with C keep-alive HTTP/1.1 connections each sending requests back to back for a fixed
//! time. Reports throughput and p50/p99 latency, each path's throughput as a ratio of direct (the
//! ingress also of nginx) and its added p99, beside the goals.
//!
//! The cluster is a real one behind `client` (the binary starts a `kplane up` child): the bench
//! creates, as `kubectl` would, a Deployment of one `nginx` replica, a Service and an Ingress in
//! `default`, and waits for the EndpointSlice that the EndpointSlice controller writes for the
//! Service. The pod address measured is the one in that slice; a slice not written by the
//! controller is refused. The cluster's own proxy (userspace) and ingress controller carry the
//! ClusterIP and ingress rows; for the iptables (nftables) row, an iptables-mode (nftables-mode)
//! proxy is started in this process for that measurement only, and it removes all of its rules
//! when it stops.
//!
//! The load comes from `wrk` (a separate process, as the issue asks; [`Load::Wrk`]) or from a
//! built-in hyper client in this process ([`Load::Builtin`], for machines without wrk).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::proxy::{iptables, kernel, nftables, ProxyConfig};
use crate::Error;

/// The name of the bench's Deployment, Service and Ingress.
pub const NAME: &str = "kplane-net-bench";
/// The Ingress rule's host, sent as `Host` on every path.
pub const HOST: &str = "bench.kplane.invalid";
/// The label value of a slice the EndpointSlice controller manages (upstream's).
pub const CONTROLLER_MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const NAMESPACE: &str = "default";

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where the cluster's ingress controller serves HTTP.
    pub ingress_http: SocketAddr,
    /// Keep-alive connections in parallel.
    pub concurrency: usize,
    /// How long each path is measured.
    pub duration: Duration,
    /// Who generates the load.
    pub load: Load,
    /// Also measure nginx as a reference L7 proxy (the data plane of ingress-nginx, the seed's
    /// controller) in front of the same pod, when set.
    pub nginx: Option<NginxReference>,
    /// Measure the iptables mode's ClusterIP (needs root and iptables; when false the row says
    /// why it is missing).
    pub iptables: bool,
    /// Measure the nftables mode's ClusterIP (needs root and nft), likewise.
    pub nftables: bool,
    /// How long the pod, its slice and the routes may take to appear.
    pub ready_timeout: Duration,
    /// The process that runs the simulated pod, the userspace proxy and the ingress (the `kplane
    /// up` child): its CPU time is read around each row, for the CPU-per-request figures.
    pub cluster_pid: Option<u32>,
}

/// nginx as a reference reverse proxy: `program`, listening on `listen`, configured as
/// ingress-nginx runs it (`worker_processes auto`, 320 keep-alive upstream connections, 10000
/// requests per kept-alive connection), setting the same forwarded headers as our ingress.
#[derive(Clone, Debug)]
pub struct NginxReference {
    pub program: std::path::PathBuf,
    pub listen: SocketAddr,
}

/// The load generator.
#[derive(Clone, Debug)]
pub enum Load {
    /// Tokio/hyper clients inside this process (they share its CPU with the hops measured).
    Builtin,
    /// The `wrk` program at this path, with this many threads.
    Wrk { program: std::path::PathBuf, threads: usize },
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            ingress_http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            concurrency: 32,
            duration: Duration::from_secs(3),
            load: Load::Builtin,
            nginx: None,
            iptables: false,
            nftables: false,
            ready_timeout: Duration::from_secs(60),
            cluster_pid: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub requests: u64,
    pub errors: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time (user + system) per request of the processes serving the row, in microseconds:
    /// the cluster process for every row but nginx's (the pod's share included), nginx's master
    /// and workers for nginx's. A figure the machine's load barely moves, unlike req/s.
    pub cpu_us: Option<f64>,
}

/// The pod measured, as the controllers published it.
#[derive(Clone, Debug)]
pub struct Backend {
    /// `namespace/name` of the pod (the slice endpoint's `targetRef`).
    pub pod: String,
    /// The node the pod runs on (the slice endpoint's `nodeName`).
    pub node: String,
    /// The pod IP and port from the slice.
    pub addr: SocketAddr,
    /// The Service's ClusterIP and port.
    pub vip: SocketAddr,
    /// The EndpointSlice the address came from.
    pub slice: String,
    /// Its `endpointslice.kubernetes.io/managed-by` label.
    pub managed_by: String,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub concurrency: usize,
    /// `wrk` or `built-in clients`.
    pub load: &'static str,
    pub duration: Duration,
    pub backend: Backend,
    pub direct: Figure,
    /// The ClusterIP through the userspace proxy.
    pub userspace: Figure,
    /// The ClusterIP through the iptables mode's DNAT, or why it was not measured.
    pub iptables: Result<Figure, String>,
    /// The ClusterIP through the nftables mode's DNAT, or why it was not measured.
    pub nftables: Result<Figure, String>,
    pub ingress: Figure,
    /// nginx in front of the same pod, when asked for.
    pub nginx: Option<Figure>,
    /// nginx's worker processes (`worker_processes auto`: one per core).
    pub nginx_workers: usize,
}

impl BenchReport {
    /// Throughput through `hop` as a fraction of direct.
    pub fn ratio(&self, hop: &Figure) -> f64 {
        hop.per_sec / self.direct.per_sec.max(f64::MIN_POSITIVE)
    }

    /// The ingress's throughput as a fraction of nginx's, when nginx was measured.
    pub fn ingress_vs_nginx(&self) -> Option<f64> {
        self.nginx.map(|n| self.ingress.per_sec / n.per_sec.max(f64::MIN_POSITIVE))
    }

    /// The CPU time per request that `name`'s hop adds itself: the row's figure less the pod's
    /// (the direct row's), since the pod runs in the cluster process; nginx's own as measured.
    pub fn hop_cpu_us(&self, name: &str, fig: &Figure) -> Option<f64> {
        match name {
            "direct" | "nginx" => fig.cpu_us,
            _ => Some(fig.cpu_us? - self.direct.cpu_us?),
        }
    }

    /// Every measured row, by name.
    pub fn rows(&self) -> Vec<(&'static str, &Figure)> {
        let mut rows = vec![("direct", &self.direct), ("clusterip-userspace", &self.userspace)];
        if let Ok(f) = &self.iptables {
            rows.push(("clusterip-iptables", f));
        }
        if let Ok(f) = &self.nftables {
            rows.push(("clusterip-nftables", f));
        }
        rows.push(("ingress", &self.ingress));
        if let Some(f) = &self.nginx {
            rows.push(("nginx", f));
        }
        rows
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.backend;
        writeln!(
            f,
            "networking benchmark: {} keep-alive HTTP/1.1 connections, load from {}, {:?} per path",
            self.concurrency, self.load, self.duration
        )?;
        writeln!(
            f,
            "backend: pod {} on node {} at {} (ClusterIP {}), from EndpointSlice {NAMESPACE}/{} managed-by {}",
            b.pod, b.node, b.addr, b.vip, b.slice, b.managed_by
        )?;
        writeln!(
            f,
            "{:<20} {:>10} {:>7} {:>8} {:>8} {:>9} {:>8} {:>12} {:>11}   goal",
            "path",
            "req/s",
            "errors",
            "p50 ms",
            "p99 ms",
            "vs direct",
            "vs nginx",
            "p99 added ms",
            "cpu us/req"
        )?;
        let nginx_ratio = self.ingress_vs_nginx();
        for (name, fig) in self.rows() {
            let ratio = self.ratio(fig);
            let added = fig.p99_ms - self.direct.p99_ms;
            let vs_nginx = match (name, nginx_ratio) {
                ("ingress", Some(r)) => format!("{r:.2}x"),
                _ => String::new(),
            };
            let goal = match name {
                "clusterip-userspace" => format!(">= 0.60x direct: {}", met(ratio >= 0.60)),
                "clusterip-iptables" | "clusterip-nftables" => {
                    format!(">= 0.90x direct: {}", met(ratio >= 0.90))
                }
                "ingress" => match nginx_ratio {
                    Some(r) => {
                        format!(">= 1.0x nginx: {}; p99 added < 1 ms: {}", met(r >= 1.0), met(added < 1.0))
                    }
                    None => format!("p99 added < 1 ms: {}", met(added < 1.0)),
                },
                "nginx" => format!(
                    "reference: nginx {} worker(s) (worker_processes auto), keepalive 320 upstream",
                    self.nginx_workers
                ),
                _ => String::new(),
            };
            let cpu = self.hop_cpu_us(name, fig).map_or_else(|| "-".to_string(), |c| format!("{c:.1}"));
            writeln!(
                f,
                "{name:<20} {:>10.0} {:>7} {:>8.3} {:>8.3} {:>8.2}x {vs_nginx:>8} {added:>12.3} {cpu:>11}   {goal}",
                fig.per_sec, fig.errors, fig.p50_ms, fig.p99_ms, ratio
            )?;
        }
        writeln!(
            f,
            "cpu us/req: user+system CPU time per request of the serving processes (/proc/<pid>/stat); \
             direct: the pod's; proxy and ingress rows: their own, the pod's share taken off; nginx: its master and workers"
        )?;
        if let (Some(ing), Some(ngx)) =
            (self.hop_cpu_us("ingress", &self.ingress), self.nginx.as_ref().and_then(|n| n.cpu_us))
        {
            writeln!(
                f,
                "ingress CPU per request / nginx's: {:.2}x (lower is better)",
                ing / ngx.max(f64::MIN_POSITIVE)
            )?;
        }
        if let Err(why) = &self.iptables {
            writeln!(f, "{:<20} not measured: {why}", "clusterip-iptables")?;
        }
        if let Err(why) = &self.nftables {
            writeln!(f, "{:<20} not measured: {why}", "clusterip-nftables")?;
        }
        if self.nginx.is_none() {
            writeln!(f, "{:<20} not measured (nginx not found or --nginx off)", "nginx")?;
        }
        Ok(())
    }
}

fn bench_err(e: impl fmt::Display) -> Error {
    Error::Config(format!("benchmark: {e}"))
}

/// Deploys the pod, measures every path, removes the bench's objects.
pub async fn run(client: kube::Client, opts: BenchOptions) -> Result<BenchReport, Error> {
    cleanup(&client).await;
    let result = async {
        let backend = deploy(&client, opts.ready_timeout).await?;
        measure_all(&client, backend, &opts).await
    }
    .await;
    cleanup(&client).await;
    result
}

/// Creates the Service, the Deployment and the Ingress as `kubectl create` would, then waits for
/// the controller-written EndpointSlice with a ready endpoint.
async fn deploy(client: &kube::Client, timeout: Duration) -> Result<Backend, Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let pp = PostParams::default();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": NAME, "labels": {"app": NAME}},
        "spec": {"selector": {"app": NAME}, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}
    }))
    .map_err(bench_err)?;
    let svc = services.create(&pp, &svc).await?;
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| bench_err("no IPv4 clusterIP allocated"))?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": NAME, "labels": {"app": NAME}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}}, "template": {
            "metadata": {"labels": {"app": NAME}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}
    }))
    .map_err(bench_err)?;
    deployments.create(&pp, &deployment).await?;
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "spec": {"ingressClassName": "kplane", "rules": [{"host": HOST, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": NAME, "port": {"name": "http"}}}}]}}]}
    }))
    .map_err(bench_err)?;
    ingresses.create(&pp, &ing).await?;

    let deadline = Instant::now() + timeout;
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={NAME}"));
    loop {
        let list = slices.list(&lp).await?;
        if let Some(backend) = list.items.iter().find_map(|s| backend_of(s, cluster_ip)) {
            return Ok(backend);
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
            return Err(bench_err(format!(
                "no EndpointSlice of service {NAMESPACE}/{NAME} written by the EndpointSlice controller has a ready \
                 endpoint after {timeout:?} (slices: {seen:?})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ready pod endpoint of `slice`, if the EndpointSlice controller wrote it.
fn backend_of(slice: &EndpointSlice, cluster_ip: Ipv4Addr) -> Option<Backend> {
    let managed_by = slice.labels().get(MANAGED_BY)?;
    if managed_by != CONTROLLER_MANAGED_BY {
        return None;
    }
    let port = slice.ports.iter().flatten().find(|p| p.name.as_deref() == Some("http"))?.port?;
    let ep = slice
        .endpoints
        .iter()
        .find(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) && !e.addresses.is_empty())?;
    let ip: Ipv4Addr = ep.addresses.first()?.parse().ok()?;
    let pod = ep.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod"))?;
    Some(Backend {
        pod: format!("{}/{}", pod.namespace.as_deref().unwrap_or(NAMESPACE), pod.name.as_deref().unwrap_or("")),
        node: ep.node_name.clone().unwrap_or_default(),
        addr: SocketAddr::from((ip, u16::try_from(port).ok()?)),
        vip: SocketAddr::from((cluster_ip, 80)),
        slice: slice.name_any(),
        managed_by: managed_by.clone(),
    })
}

async fn measure_all(
    client: &kube::Client,
    backend: Backend,
    opts: &BenchOptions,
) -> Result<BenchReport, Error> {
    let deadline = Instant::now() + opts.ready_timeout;
    for target in [backend.addr, backend.vip, opts.ingress_http] {
        wait_ready(target, deadline).await?;
    }
    let cluster: Vec<u32> = opts.cluster_pid.into_iter().collect();
    let direct = measure_cpu(backend.addr, opts, &cluster).await?;
    // The userspace row must not be the kernel's: no DNAT for the ClusterIP may exist now.
    for mode in [KernelKind::Iptables, KernelKind::Nftables] {
        if let Ok(Some(path)) = mode.live_path(backend.vip).await {
            return Err(bench_err(format!(
                "{} rules already take {} ({:?}): another kplane runs in {} mode",
                mode.name(),
                backend.vip,
                path.service_chain,
                mode.name()
            )));
        }
    }
    let userspace = measure_cpu(backend.vip, opts, &cluster).await?;
    let iptables = if opts.iptables {
        measure_kernel(KernelKind::Iptables, client, &backend, opts).await?
    } else {
        Err("not asked for (--iptables off)".to_string())
    };
    let nftables = if opts.nftables {
        measure_kernel(KernelKind::Nftables, client, &backend, opts).await?
    } else {
        Err("not asked for (--nftables off)".to_string())
    };
    let ingress = measure_cpu(opts.ingress_http, opts, &cluster).await?;
    let (nginx, nginx_workers) = match &opts.nginx {
        Some(nginx) => {
            let (fig, workers) = measure_nginx(nginx, backend.addr, opts).await?;
            (Some(fig), workers)
        }
        None => (None, 0),
    };
    Ok(BenchReport {
        concurrency: opts.concurrency,
        load: match opts.load {
            Load::Builtin => "built-in clients",
            Load::Wrk { .. } => "wrk",
        },
        duration: opts.duration,
        backend,
        direct,
        userspace,
        iptables,
        nftables,
        ingress,
        nginx,
        nginx_workers,
    })
}

/// The kernel's DNAT path for `vip`, when kplane's rules take it.
fn kernel_path(saved: &kernel::Saved, vip: SocketAddr) -> Option<kernel::KernelPath> {
    let SocketAddr::V4(v4) = vip else { return None };
    saved.walk(*v4.ip(), v4.port(), "tcp").filter(|p| !p.endpoints.is_empty())
}

/// The two kernel modes, each measured by the same code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelKind {
    Iptables,
    Nftables,
}

impl KernelKind {
    fn name(self) -> &'static str {
        match self {
            KernelKind::Iptables => "iptables",
            KernelKind::Nftables => "nftables",
        }
    }

    async fn preflight(self) -> Result<(), Error> {
        match self {
            KernelKind::Iptables => iptables::preflight().await,
            KernelKind::Nftables => nftables::preflight().await,
        }
    }

    /// Whether kplane's rules of this mode exist now (`Err`: they cannot be read).
    async fn present(self) -> Result<bool, String> {
        match self {
            KernelKind::Iptables => kernel::read_live().await.map(|s| s.is_kplanes()),
            KernelKind::Nftables => kernel::read_live_nft().await.map(|t| t.is_some()),
        }
    }

    /// The DNAT path this mode's live rules give `vip`, if any.
    async fn live_path(self, vip: SocketAddr) -> Result<Option<kernel::KernelPath>, String> {
        let SocketAddr::V4(v4) = vip else { return Ok(None) };
        Ok(match self {
            KernelKind::Iptables => kernel_path(&kernel::read_live().await?, vip),
            KernelKind::Nftables => kernel::read_live_nft()
                .await?
                .and_then(|t| t.walk(*v4.ip(), v4.port(), "tcp"))
                .filter(|p| !p.endpoints.is_empty()),
        })
    }

    async fn run(self, client: kube::Client, stopped: oneshot::Receiver<()>) -> Result<(), Error> {
        let stop = async move {
            let _ = stopped.await;
        };
        let min_sync = Duration::from_millis(100);
        match self {
            KernelKind::Iptables => {
                iptables::run_iptables_proxy(client, ProxyConfig::default(), min_sync, stop).await
            }
            KernelKind::Nftables => {
                nftables::run_nftables_proxy(client, ProxyConfig::default(), min_sync, stop).await
            }
        }
    }
}

/// Runs a proxy in `mode` in this process for one measurement of the ClusterIP. `Ok(Err)`: not
/// measured here, and why (no root or no tool, or another kplane's rules of that mode present).
async fn measure_kernel(
    mode: KernelKind,
    client: &kube::Client,
    backend: &Backend,
    opts: &BenchOptions,
) -> Result<Result<Figure, String>, Error> {
    let name = mode.name();
    if let Err(e) = mode.preflight().await {
        return Ok(Err(e.to_string()));
    }
    match mode.present().await {
        Err(e) => return Ok(Err(e)),
        // Starting would remove the rules of a kplane in that mode that is running now.
        Ok(true) => {
            return Ok(Err(format!(
                "kplane's {name} rules exist already (another kplane in {name} mode?); not touching them"
            )))
        }
        Ok(false) => {}
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = tokio::spawn(mode.run(client.clone(), stopped));
    let result = async {
        // Measured only once the kernel sends the ClusterIP to the pod.
        let deadline = Instant::now() + opts.ready_timeout;
        let want = backend.addr.to_string();
        loop {
            let path = mode.live_path(backend.vip).await.map_err(bench_err)?;
            if path.as_ref().is_some_and(|p| p.endpoints.iter().any(|e| e.destination == want)) {
                break;
            }
            if proxy.is_finished() || Instant::now() > deadline {
                return Err(bench_err(format!("the {name} proxy did not program {} -> {want}", backend.vip)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_ready(backend.vip, deadline).await?;
        let cluster: Vec<u32> = opts.cluster_pid.into_iter().collect();
        measure_cpu(backend.vip, opts, &cluster).await
    }
    .await;
    let _ = stop.send(());
    match proxy.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(bench_err(format!("{name} proxy: {e}"))),
        Err(e) => return Err(bench_err(format!("{name} proxy: {e}"))),
    }
    // Its rules are gone: the ClusterIP is the userspace proxy's again.
    if mode.present().await.unwrap_or(false) || mode.live_path(backend.vip).await.is_ok_and(|p| p.is_some()) {
        return Err(bench_err(format!("the {name} proxy left rules behind")));
    }
    result.map(Ok)
}

async fn cleanup(client: &kube::Client) {
    let dp = DeleteParams::default();
    let _ = Api::<Ingress>::namespaced(client.clone(), NAMESPACE).delete(NAME, &dp).await;
    let _ = Api::<Deployment>::namespaced(client.clone(), NAMESPACE).delete(NAME, &dp).await;
    let _ = Api::<Service>::namespaced(client.clone(), NAMESPACE).delete(NAME, &dp).await;
}

/// Runs nginx (see [`NginxReference`]) in a scratch directory for one measurement.
async fn measure_nginx(
    nginx: &NginxReference,
    backend: SocketAddr,
    opts: &BenchOptions,
) -> Result<(Figure, usize), Error> {
    let dir = std::env::temp_dir().join(format!("kplane-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(bench_err)?;
    let d = dir.display();
    let conf = format!(
        "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream pod {{ server {backend}; keepalive 320; keepalive_requests 10000; }}\n\
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://pod;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Host $host;\n\
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Real-IP $remote_addr;\n    }}\n  }}\n}}\n",
        listen = nginx.listen,
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(bench_err)?;
    // The address must be free: otherwise the numbers would be some other server's.
    drop(TcpListener::bind(nginx.listen).await.map_err(|source| Error::Bind { addr: nginx.listen, source })?);
    let nginx_cmd = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(&nginx.program);
        cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path).args(extra);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd
    };
    let mut child = nginx_cmd(&["-g", "daemon off;"])
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| bench_err(format!("cannot run {}: {e}", nginx.program.display())))?;
    let result = async {
        wait_ready(nginx.listen, Instant::now() + Duration::from_secs(10)).await?;
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(bench_err(format!("nginx exited ({status}): {log}")));
        }
        let master: Option<u32> =
            std::fs::read_to_string(dir.join("nginx.pid")).ok().and_then(|p| p.trim().parse().ok());
        let workers = master.map(children_of).unwrap_or_default();
        let pids: Vec<u32> = master.into_iter().chain(workers.iter().copied()).collect();
        Ok((measure_cpu(nginx.listen, opts, &pids).await?, workers.len()))
    }
    .await;
    // `-s stop` signals the master (from its pid file), which stops its workers; killing the
    // master alone would leave them serving.
    let _ = nginx_cmd(&["-s", "stop"]).status().await;
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn one_request(addr: SocketAddr) -> Result<(), String> {
    let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/").header("host", HOST).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    Ok(())
}

async fn wait_ready(addr: SocketAddr, deadline: Instant) -> Result<(), Error> {
    loop {
        match one_request(addr).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(bench_err(format!("{addr} not ready: {e}"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The CPU time (user + system) of `pids` so far, in seconds (`/proc/<pid>/stat`, in USER_HZ
/// ticks of 1/100 s as on every Linux kplane runs on).
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces): state is field 3, utime 14.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// The processes whose parent is `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).ok().is_some_and(|stat| {
                stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// [`measure`], with the CPU time per request of the processes `pids` (read before and after).
async fn measure_cpu(addr: SocketAddr, opts: &BenchOptions, pids: &[u32]) -> Result<Figure, Error> {
    let before = cpu_seconds(pids);
    let mut fig = measure(addr, opts).await?;
    let after = cpu_seconds(pids);
    if let (Some(b), Some(a)) = (before, after) {
        if fig.requests > 0 && !pids.is_empty() {
            fig.cpu_us = Some((a - b) * 1e6 / fig.requests as f64);
        }
    }
    Ok(fig)
}

async fn measure(addr: SocketAddr, opts: &BenchOptions) -> Result<Figure, Error> {
    match &opts.load {
        Load::Builtin => measure_builtin(addr, opts).await,
        Load::Wrk { program, threads } => measure_wrk(program, *threads, addr, opts).await,
    }
}

/// Runs `wrk --latency` against `addr` and reads its report.
async fn measure_wrk(
    program: &std::path::Path,
    threads: usize,
    addr: SocketAddr,
    opts: &BenchOptions,
) -> Result<Figure, Error> {
    let secs = opts.duration.as_secs().max(1);
    let out = tokio::process::Command::new(program)
        .arg(format!("-t{}", threads.clamp(1, opts.concurrency.max(1))))
        .arg(format!("-c{}", opts.concurrency.max(1)))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "-H", &format!("Host: {HOST}")])
        .arg(format!("http://{addr}/"))
        .output()
        .await
        .map_err(|e| {
            bench_err(format!("cannot run {}: {e} (install wrk, or use the built-in load)", program.display()))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(bench_err(format!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr))));
    }
    parse_wrk(&text).ok_or_else(|| bench_err(format!("cannot read wrk's report:\n{text}")))
}

/// Reads wrk's `--latency` report: requests, errors, Requests/sec, and the 50%/99% latencies.
fn parse_wrk(text: &str) -> Option<Figure> {
    let duration_ms = |v: &str| -> Option<f64> {
        let split = v.find(|c: char| c.is_ascii_alphabetic())?;
        let n: f64 = v[..split].parse().ok()?;
        Some(match &v[split..] {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let mut fig =
        Figure { requests: 0, errors: 0, per_sec: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN, cpu_us: None };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => fig.p50_ms = duration_ms(v)?,
            ["99%", v] => fig.p99_ms = duration_ms(v)?,
            [n, "requests", "in", ..] => fig.requests = n.parse().ok()?,
            ["Requests/sec:", v] => fig.per_sec = v.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => fig.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                fig.errors +=
                    rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    (fig.per_sec > 0.0 && fig.p50_ms.is_finite() && fig.p99_ms.is_finite()).then_some(fig)
}

async fn measure_builtin(addr: SocketAddr, opts: &BenchOptions) -> Result<Figure, Error> {
    let start = Instant::now();
    let end = start + opts.duration;
    let mut tasks = Vec::new();
    for _ in 0..opts.concurrency {
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors = 0u64;
            let mut send = None;
            while Instant::now() < end {
                if send.is_none() {
                    let Ok(s) = TcpStream::connect(addr).await else {
                        errors += 1;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s)).await {
                        Ok((sr, conn)) => {
                            tokio::spawn(conn);
                            send = Some(sr);
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let Some(sr) = send.as_mut() else { continue };
                let req = Request::get("/").header("host", HOST).body(Empty::new()).expect("valid request");
                let t = Instant::now();
                let ok = match sr.send_request(req).await {
                    Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                } else {
                    errors += 1;
                    send = None;
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(bench_err)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(bench_err)?;
        hist.add(h).map_err(bench_err)?;
        errors += e;
    }
    let elapsed = start.elapsed();
    Ok(Figure {
        requests: hist.len(),
        errors,
        per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_us: None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_wrk;

    #[test]
    fn reads_wrks_report() {
        let report = "Running 3s test @ http://127.0.0.1:8000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.33us  100.21us   4.00ms   90.00%
    Req/Sec    60.01k     1.20k   62.00k    70.00%
  Latency Distribution
     50%  498.00us
     75%  550.00us
     90%  600.00us
     99%    1.20ms
  180030 requests in 3.00s, 20.60MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  60010.00
Transfer/sec:      6.87MB
";
        let f = parse_wrk(report).unwrap();
        assert_eq!(f.requests, 180030);
        assert_eq!(f.errors, 7);
        assert!((f.per_sec - 60010.0).abs() < 1e-6);
        assert!((f.p50_ms - 0.498).abs() < 1e-9);
        assert!((f.p99_ms - 1.2).abs() < 1e-9);
        assert!(parse_wrk("").is_none());
        assert!(parse_wrk("Requests/sec: x").is_none());
    }
}
