//! `kplane bench cluster`: a Deployment of N replicas on simulated nodes, from `kubectl create` to
//! `availableReplicas = N` and N addresses in its Service's Endpoints, beside its anchor in the same
//! run: the bare store writes those pods need (create, bind, status: 3 per pod), made directly at
//! concurrency 16 on the same kind of store, with no API, controllers or nodes in between.
//!
//! The cluster runs as a separate `kplane up` process so that its memory can be read: memory per
//! simulated pod is the RSS growth from idle to N Running pods, divided by N.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Flags of `kplane bench cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchClusterArgs {
    /// What is measured: a Deployment of `--replicas`, a Job of `--completions` at `--parallelism`
    /// (`bench_job`), or a StatefulSet of `--replicas` in Parallel mode (`bench_statefulset`).
    #[arg(long, value_enum, default_value_t = Workload::Deployment)]
    pub workload: Workload,
    /// Replicas of the measured workload (default: 1000 for a Deployment, 100 for a StatefulSet).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Simulated nodes (110 pods each).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Run the cluster on this etcd instead of the embedded store (the anchor then writes to it too).
    #[arg(long)]
    pub etcd_servers: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// What each pod runs: `server` (an nginx container simulated as a server on its port) or
    /// `sleep` (a busybox container running `sleep 3600` in the sandboxed shell).
    #[arg(long, default_value = "server", value_parser = ["server", "sleep"])]
    pub pod: String,
    /// `--workload job`: the Job's completions.
    #[arg(long, default_value_t = 1000)]
    pub completions: usize,
    /// `--workload job`: the Job's parallelism.
    #[arg(long, default_value_t = 100)]
    pub parallelism: usize,
}

/// The workloads `kplane bench cluster` can time.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    Job,
    Statefulset,
}

impl BenchClusterArgs {
    /// `--replicas`, or the workload's default.
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(match self.workload {
            Workload::Deployment | Workload::Job => 1000,
            Workload::Statefulset => 100,
        })
    }
}

pub(crate) struct Cluster {
    pub(crate) child: Child,
    pub(crate) kubeconfig: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(exe: &Path, dir: &Path, args: &BenchClusterArgs) -> Result<Cluster> {
    let mut flags: Vec<String> = vec!["--nodes".into(), args.nodes.to_string()];
    if let Some(etcd) = &args.etcd_servers {
        flags.extend(["--etcd-servers".into(), etcd.clone()]);
    }
    start_up(exe, dir, &flags)
}

/// A `kplane up` child on the embedded store, with `flags`, once it printed `kplane: ready`.
fn start_up(exe: &Path, dir: &Path, flags: &[String]) -> Result<Cluster> {
    let mut cmd = Command::new(exe);
    cmd.args(["up", "--no-etcd-listen", "--no-xray", "--secure-port", "0", "--data-dir"])
        .arg(dir)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut kubeconfig = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
            kubeconfig = Some(PathBuf::from(path));
        }
        if line == "kplane: ready" {
            break;
        }
    }
    let kubeconfig = kubeconfig.context("kplane up did not become ready")?;
    Ok(Cluster { child, kubeconfig })
}

/// Everything one run measured.
pub struct Report {
    args: BenchClusterArgs,
    /// Seconds from the create until the Deployment counted each further 100 Ready pods.
    per_hundred: Vec<(usize, f64)>,
    available: f64,
    endpoints: f64,
    anchor: f64,
    idle_rss: f64,
    busy_rss: f64,
}

/// A `kplane up` child for one `bench cluster` run, its nodes up (each has its pod CIDR) and
/// settled for 2 s, with a client and the run's deadline. `dir` holds the cluster's data and the
/// anchor's store.
pub(crate) struct Started {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) cluster: Cluster,
    pub(crate) client: kube::Client,
    pub(crate) deadline: Instant,
}

pub(crate) async fn start_settled(exe: &Path, args: &BenchClusterArgs, prefix: &str) -> Result<Started> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let cluster = start(exe, &dir.path().join("cluster"), args)?;
    let client = crate::components::client_from_kubeconfig(&cluster.kubeconfig, "kplane-bench").await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    loop {
        let ready = nodes
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some())
            .count();
        if ready >= args.nodes {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {} nodes came up", args.nodes);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the idle cluster settle (its memory is read now, and the measured work starts here).
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Started { dir, cluster, client, deadline })
}

pub async fn run(args: BenchClusterArgs, exe: PathBuf) -> Result<Report> {
    let Started { dir: tmp, cluster, client, deadline } =
        start_settled(&exe, &args, "kplane-bench-cluster-").await?;
    let n = args.replicas();
    let idle_rss = apiserver::bench::rss_mib(cluster.child.id());

    let ns = "default";
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = json!({"metadata": {"name": "bench"}, "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    services.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let container = match args.pod.as_str() {
        "sleep" => json!({"name": "sleeper", "image": "busybox", "command": ["sleep", "3600"]}),
        _ => json!({"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}),
    };
    let deployment = json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": "bench"}}, "template": {
            "metadata": {"labels": {"app": "bench"}},
            "spec": {"containers": [container]}}},
    });

    let start = Instant::now();
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment)?).await?;
    let mut per_hundred = Vec::new();
    let (mut available, mut endpoints_at) = (None, None);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while available.is_none() || endpoints_at.is_none() {
        poll.tick().await;
        if Instant::now() > deadline {
            bail!("timed out after {:?}", start.elapsed());
        }
        if available.is_none() {
            let status = deployments.get("bench").await?.status.unwrap_or_default();
            // Ready pods as the deployment controller counts them, for the time per 100 pods.
            let ready = status.ready_replicas.unwrap_or(0).max(0) as usize;
            while per_hundred.len() < ready / 100 {
                per_hundred.push(((per_hundred.len() + 1) * 100, start.elapsed().as_secs_f64()));
            }
            if status.available_replicas.unwrap_or(0) as usize == n {
                available = Some(start.elapsed().as_secs_f64());
            }
        }
        if endpoints_at.is_none() {
            if let Some(ep) = endpoints.get_opt("bench").await? {
                let count: usize = ep
                    .subsets
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                    .sum();
                if count == n {
                    endpoints_at = Some(start.elapsed().as_secs_f64());
                }
            }
        }
    }
    let busy_rss = apiserver::bench::rss_mib(cluster.child.id());
    drop(cluster);

    let anchor = anchor_writes(&args, tmp.path()).await?;
    Ok(Report {
        args,
        per_hundred,
        available: available.unwrap_or_default(),
        endpoints: endpoints_at.unwrap_or_default(),
        anchor,
        idle_rss,
        busy_rss,
    })
}

/// The store writes N pods need, made directly: create, then two updates (bind, status), per pod, 16
/// pods at a time. Returns seconds.
pub(crate) async fn anchor_writes(args: &BenchClusterArgs, dir: &Path) -> Result<f64> {
    let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]}});
    pod_writes(args, dir, args.replicas(), 2, &pod).await
}

/// The bare store writes of `pods` pods, each a create of `pod` then `updates` updates, 16 pods at a
/// time, on the kind of store the cluster ran on (the same etcd, or a fresh embedded store in
/// `dir`). Returns seconds.
pub(crate) async fn pod_writes(
    args: &BenchClusterArgs,
    dir: &Path,
    pods: usize,
    updates: usize,
    pod: &serde_json::Value,
) -> Result<f64> {
    let mut embedded = None;
    let store: store::DynStore = match &args.etcd_servers {
        Some(url) => {
            Arc::new(store::etcd::EtcdStore::connect(store::etcd::EtcdConfig::new(vec![url.clone()])).await?)
        }
        None => {
            let s =
                store::embedded::EmbeddedStore::open(store::embedded::EmbeddedConfig::new(dir.join("anchor")))
                    .await?;
            embedded = Some(s.clone());
            Arc::new(s)
        }
    };
    let value = pod.to_string().into_bytes();
    let prefix = format!("/registry/bench-anchor-{}/", uuid::Uuid::new_v4());
    let started = Instant::now();
    store::bench::drive(pods, 16, move |i| {
        let (store, value, key) = (store.clone(), value.clone(), format!("{prefix}{i}"));
        async move {
            let mut rev = store.create(&key, value.clone(), 0).await?.mod_revision;
            for _ in 0..updates {
                rev = store.update(&key, value.clone(), rev, 0).await?.mod_revision;
            }
            Ok(())
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    if let Some(s) = embedded {
        s.shutdown().await;
    }
    Ok(secs)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.args.replicas();
        let store = if self.args.etcd_servers.is_some() { "real etcd" } else { "embedded store" };
        writeln!(
            f,
            "kplane bench cluster: Deployment of {n} replicas on {} simulated nodes, {store}",
            self.args.nodes
        )?;
        writeln!(f, "{:<52} {:>10} {:>12} {:>8}   goal", "", "kplane", "anchor", "ratio")?;
        writeln!(
            f,
            "{:<52} {:>9.2}s {:>11.2}s {:>7.1}x   < 10 s (kwok's CI gate: 120 s)",
            format!("create -> availableReplicas={n}"),
            self.available,
            self.anchor,
            self.available / self.anchor.max(1e-9)
        )?;
        writeln!(
            f,
            "{:<52} {:>9.2}s",
            format!("create -> {n} addresses in the Service's Endpoints"),
            self.endpoints
        )?;
        writeln!(f, "  (anchor: the {} bare store writes those pods need, at concurrency 16)", 3 * n)?;
        let mut last = 0.0;
        for (count, at) in &self.per_hundred {
            writeln!(f, "  {count:>6} pods Ready at {at:>6.2}s   (+{:.2}s for these 100)", at - last)?;
            last = *at;
        }
        let per_pod = (self.busy_rss - self.idle_rss) * 1024.0 / n.max(1) as f64;
        let what = if self.args.pod == "sleep" { "running `sleep 3600`" } else { "simulated servers" };
        writeln!(
            f,
            "memory: idle {:.1} MiB, with {n} pods ({what}) {:.1} MiB: {per_pod:.1} KiB per simulated pod",
            self.idle_rss, self.busy_rss
        )
    }
}

/// Flags of `kplane bench net`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchNetArgs {
    /// Keep-alive connections in parallel.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds each path is measured.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// The load generator: `wrk` (a separate process; `apt-get install wrk`) or `builtin` (hyper
    /// clients inside kplane, sharing its CPU).
    #[arg(long, default_value = "wrk")]
    pub load: String,
    /// wrk's threads.
    #[arg(long, default_value_t = 1)]
    pub wrk_threads: usize,
    /// Also measure nginx in front of the same pod, as a reference L7 proxy: `auto` (when
    /// `nginx` is on PATH), `off`, or a path to the nginx binary.
    #[arg(long, default_value = "auto")]
    pub nginx: String,
    /// Measure the ClusterIP in iptables mode too: `auto` (when root), `off`. The run's
    /// iptables-mode proxy removes all of its rules when the measurement ends.
    #[arg(long, default_value = "auto")]
    pub iptables: String,
    /// The bench cluster's pod range.
    #[arg(long, default_value = "127.241.0.0/16")]
    pub cluster_cidr: String,
    /// The bench cluster's Service range (inside 127.96.0.0/12, which the iptables mode requires).
    #[arg(long, default_value = "127.110.0.0/16")]
    pub service_cluster_ip_range: String,
    /// The bench cluster's ingress controller (HTTP; HTTPS on the same IP, port + 1).
    #[arg(long, default_value = "127.0.84.1:8080")]
    pub ingress_http_address: std::net::SocketAddr,
    /// Where nginx listens for its row.
    #[arg(long, default_value = "127.0.84.2:8080")]
    pub nginx_address: std::net::SocketAddr,
}

/// `kplane bench net`: a real simulated pod (a Deployment of one `nginx` replica on a `kplane up`
/// child with one node) measured directly, through the ClusterIP in userspace and iptables modes,
/// through the ingress, and through nginx, in one run.
pub async fn run_net(args: BenchNetArgs, exe: PathBuf) -> Result<networking::bench::BenchReport> {
    let load = match args.load.as_str() {
        "builtin" => networking::bench::Load::Builtin,
        "wrk" => networking::bench::Load::Wrk { program: "wrk".into(), threads: args.wrk_threads },
        other => bail!("--load {other:?}: say wrk or builtin"),
    };
    let nginx = match args.nginx.as_str() {
        "off" => None,
        // Debian puts nginx in /usr/sbin.
        "auto" => store::etcd_process::find_program("nginx", &["/usr/sbin"]),
        path => Some(PathBuf::from(path)),
    }
    .map(|program| networking::bench::NginxReference { program, listen: args.nginx_address });
    let iptables = match args.iptables.as_str() {
        "auto" => true,
        "off" => false,
        other => bail!("--iptables {other:?}: say auto or off"),
    };
    let https = std::net::SocketAddr::new(args.ingress_http_address.ip(), args.ingress_http_address.port() + 1);
    let tmp = tempfile::Builder::new().prefix("kplane-bench-net-").tempdir()?;
    let flags: Vec<String> = vec![
        "--nodes".into(),
        "1".into(),
        "--cluster-cidr".into(),
        args.cluster_cidr.clone(),
        "--service-cluster-ip-range".into(),
        args.service_cluster_ip_range.clone(),
        "--ingress-http-address".into(),
        args.ingress_http_address.to_string(),
        "--ingress-https-address".into(),
        https.to_string(),
    ];
    let cluster = start_up(&exe, &tmp.path().join("cluster"), &flags)?;
    eprintln!("kplane bench net: cluster is kplane up pid {}", cluster.child.id());
    let client = crate::components::client_from_kubeconfig(&cluster.kubeconfig, "kplane-bench").await?;
    let opts = networking::bench::BenchOptions {
        ingress_http: args.ingress_http_address,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.seconds),
        load,
        nginx,
        iptables,
        ready_timeout: Duration::from_secs(60),
    };
    let report = networking::bench::run(client, opts).await?;
    drop(cluster);
    Ok(report)
}
