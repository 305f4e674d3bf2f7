//! `kplane bench cluster`: a Deployment of N replicas on simulated nodes, from `kubectl create` to
//! `availableReplicas = N` and N addresses in its Service's Endpoints (at most 1000, as upstream), beside its anchor in the same
//! run: the bare store writes those pods need (create, bind, status: 3 per pod), made directly at
//! concurrency 16 on the same kind of store, with no API, controllers or nodes in between.
//!
//! The cluster runs as a separate `kplane up` process so that its memory can be read: memory per
//! simulated pod is the RSS growth from idle to N Running pods, divided by N, printed beside its
//! anonymous part (heap, stacks) and the file-backed pages (mostly the binary's text: in a debug
//! build they are most of the idle RSS, and they grow as more of the code runs, not per pod).
//!
//! Beside those: `kplane up`'s startup (spawn to `kplane: ready`, 3 nodes, fresh data directory;
//! the median of `--startup-samples`), the EndpointSlices the Service ends up with (every address,
//! in slices of at most 100 endpoints as upstream's `--max-endpoints-per-slice` default), the
//! latency of single-object GETs made while the rollout runs, and real `kubectl get pods -A` (a
//! Table of every pod) once it is done.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
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
    /// `--workload deployment`: times `kplane up` (3 nodes) is started, each on a fresh data
    /// directory, to time its startup (0: not measured).
    #[arg(long, default_value_t = 5)]
    pub startup_samples: usize,
}

/// Pods one simulated node takes (its `capacity.pods`, upstream's default).
pub(crate) const PODS_PER_NODE: usize = 110;

/// The workloads `kplane bench cluster` can time.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    Job,
    Statefulset,
}

impl BenchClusterArgs {
    /// Flag combinations clap cannot check on its own: a workload that cannot fit its nodes.
    pub fn check(&self) -> Result<()> {
        let room = self.nodes * PODS_PER_NODE;
        let (what, pods) = match self.workload {
            Workload::Job => ("--parallelism", self.parallelism),
            Workload::Deployment | Workload::Statefulset => ("--replicas", self.replicas()),
        };
        if pods == 0 {
            bail!("{what} 0: there is nothing to measure");
        }
        if pods > room {
            bail!(
                "{what} {pods} does not fit on --nodes {} ({PODS_PER_NODE} pods each, {room} in all)",
                self.nodes
            );
        }
        Ok(())
    }

    /// `--replicas`, or the workload's default.
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(match self.workload {
            Workload::Deployment | Workload::Job => 1000,
            Workload::Statefulset => 100,
        })
    }
}

/// A process's resident memory in MiB, from `/proc/<pid>/status`: all of it (`VmRSS`), its
/// anonymous part (`RssAnon`: heap, stacks, the allocator's retained pages) and its file-backed
/// part (`RssFile`: mostly the binary's own text and data pages, large in a debug build). Zero where
/// unreadable.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    pub(crate) rss: f64,
    pub(crate) anon: f64,
    pub(crate) file: f64,
}

impl Memory {
    pub(crate) fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        Memory { rss: field("VmRSS:"), anon: field("RssAnon:"), file: field("RssFile:") }
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
    slices: Slices,
    anchor: f64,
    idle: Memory,
    busy: Memory,
    /// Seconds from spawning `kplane up` (3 nodes) to its `kplane: ready`, one per sample.
    startup: Vec<f64>,
    /// Single-object GETs made while the rollout ran.
    rollout_gets: RolloutGets,
    /// `kubectl get pods -A`: seconds per run and the rows of the last, or why it was not run.
    kubectl: std::result::Result<(Vec<f64>, usize), String>,
}

/// The Service's EndpointSlices once they held every address.
#[derive(Default)]
struct Slices {
    /// Seconds from the create until the slices held N ready addresses.
    at: f64,
    count: usize,
    addresses: usize,
    largest: usize,
}

#[derive(Default)]
struct RolloutGets {
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Seconds from spawning `kplane up --nodes 3` (fresh data directory) to its `kplane: ready`,
/// `samples` times, one after another.
async fn startup_times(exe: &Path, samples: usize) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..samples {
        let dir = tempfile::Builder::new().prefix("kplane-bench-startup-").tempdir()?;
        let (exe, path) = (exe.to_path_buf(), dir.path().join("cluster"));
        let flags: Vec<String> = vec!["--nodes".into(), "3".into()];
        let started = Instant::now();
        let cluster = tokio::task::spawn_blocking(move || start_up(&exe, &path, &flags)).await??;
        let secs = started.elapsed().as_secs_f64();
        times.push(secs);
        eprintln!("kplane bench cluster: startup sample {}: {secs:.3} s", times.len());
        drop(cluster);
    }
    Ok(times)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// GETs the Service `bench` one after another until `stop`, 20 ms apart, on a client of its own
/// (its connection made by a first, unrecorded GET, before `ready` is sent): the latency a client
/// sees for a single object while the rollout's writes go on.
fn spawn_rollout_gets(
    kubeconfig: PathBuf,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<RolloutGets>> {
    tokio::spawn(async move {
        let client = crate::components::client_from_kubeconfig(&kubeconfig, "kplane-bench-get").await?;
        let services: Api<Service> = Api::namespaced(client, "default");
        services.get("bench").await?;
        let _ = ready.send(());
        let mut hist = store::bench::histogram()?;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !*stop.borrow() {
            tick.tick().await;
            let t = Instant::now();
            services.get("bench").await?;
            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
        }
        Ok(RolloutGets {
            count: hist.len(),
            p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: hist.max() as f64 / 1000.0,
        })
    })
}

/// The Service `bench`'s EndpointSlices: (slices, ready addresses, endpoints in the largest).
async fn endpoint_slices(slices: &Api<EndpointSlice>) -> Result<(usize, usize, usize)> {
    let lp = kube::api::ListParams::default().labels("kubernetes.io/service-name=bench");
    let list = slices.list(&lp).await?;
    let ready = |e: &k8s_openapi::api::discovery::v1::Endpoint| {
        e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
    };
    let addresses = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().filter(|e| ready(e)).map(|e| e.addresses.len()))
        .sum();
    let largest = list.items.iter().map(|s| s.endpoints.len()).max().unwrap_or(0);
    Ok((list.items.len(), addresses, largest))
}

/// Real `kubectl get pods -A` (a server-side Table of every pod), 3 times: seconds each, and the
/// rows of the last.
fn kubectl_get_pods(kubeconfig: &Path, cache: &Path) -> std::result::Result<(Vec<f64>, usize), String> {
    let kubectl = store::etcd_process::find_program("kubectl", &[]).ok_or("kubectl is not on PATH")?;
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let out = Command::new(&kubectl)
            .args(["get", "pods", "-A", "--cache-dir"])
            .arg(cache)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .map_err(|e| format!("running {}: {e}", kubectl.display()))?;
        times.push(started.elapsed().as_secs_f64());
        if !out.status.success() {
            return Err(format!("kubectl get pods -A failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        rows = String::from_utf8_lossy(&out.stdout).lines().count().saturating_sub(1);
    }
    Ok((times, rows))
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
    args.check()?;
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
    args.check()?;
    let startup = startup_times(&exe, args.startup_samples).await?;
    let Started { dir: tmp, cluster, client, deadline } =
        start_settled(&exe, &args, "kplane-bench-cluster-").await?;
    let n = args.replicas();
    let idle = Memory::of(cluster.child.id());

    let ns = "default";
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = json!({"metadata": {"name": "bench"}, "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    services.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let endpoint_slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
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

    let (stop_gets, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let gets = spawn_rollout_gets(cluster.kubeconfig.clone(), ready_tx, stop_rx);
    if ready_rx.await.is_err() {
        gets.await??;
        bail!("the GET client stopped before the rollout");
    }
    let start = Instant::now();
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment)?).await?;
    let mut per_hundred = Vec::new();
    let (mut available, mut endpoints_at, mut slices) = (None, None, None);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let mut ready = 0;
    for round in 0u64.. {
        if available.is_some() && endpoints_at.is_some() && slices.is_some() {
            break;
        }
        poll.tick().await;
        if Instant::now() > deadline {
            bail!(
                "timed out after {:?}: {ready} of {n} pods Ready, Endpoints {}, EndpointSlices {}",
                start.elapsed(),
                if endpoints_at.is_some() { "complete" } else { "incomplete" },
                if slices.is_some() { "complete" } else { "incomplete" }
            );
        }
        if available.is_none() {
            let status = deployments.get("bench").await?.status.unwrap_or_default();
            // Ready pods as the deployment controller counts them, for the time per 100 pods.
            ready = status.ready_replicas.unwrap_or(0).max(0) as usize;
            while per_hundred.len() < ready / 100 {
                per_hundred.push(((per_hundred.len() + 1) * 100, start.elapsed().as_secs_f64()));
            }
            if status.available_replicas.unwrap_or(0) as usize == n {
                available = Some(start.elapsed().as_secs_f64());
            }
        }
        // The Endpoints and EndpointSlices of thousands of pods are big objects: read them every
        // 50 ms only near the end of the rollout, every 500 ms before.
        if ready * 10 < n * 9 && round % 10 != 0 {
            continue;
        }
        if endpoints_at.is_none() {
            if let Some(ep) = endpoints.get_opt("bench").await? {
                let count: usize = ep
                    .subsets
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                    .sum();
                // Upstream's Endpoints hold at most 1000 addresses (over-capacity: truncated).
                if count == n.min(controller_manager::ENDPOINTS_MAX_CAPACITY) {
                    endpoints_at = Some(start.elapsed().as_secs_f64());
                }
            }
        }
        if slices.is_none() {
            let (count, addresses, largest) = endpoint_slices(&endpoint_slices_api).await?;
            if addresses == n {
                slices = Some(Slices { at: start.elapsed().as_secs_f64(), count, addresses, largest });
            }
        }
    }
    let _ = stop_gets.send(true);
    let rollout_gets = gets.await??;
    let kubectl = kubectl_get_pods(&cluster.kubeconfig, &tmp.path().join("kubectl-cache"));
    let busy = Memory::of(cluster.child.id());
    drop(cluster);

    let anchor = anchor_writes(&args, tmp.path()).await?;
    Ok(Report {
        args,
        per_hundred,
        available: available.unwrap_or_default(),
        endpoints: endpoints_at.unwrap_or_default(),
        slices: slices.unwrap_or_default(),
        anchor,
        idle,
        busy,
        startup,
        rollout_gets,
        kubectl,
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
            "{:<52} {:>9.2}s {:>11.2}s {:>7.1}x   {} (kwok's CI gate: 120 s)",
            format!("create -> availableReplicas={n}"),
            self.available,
            self.anchor,
            self.available / self.anchor.max(1e-9),
            // The scale goal is 10,000 pods (on 100 nodes) in < 15 s; a smaller run, < 10 s.
            if n >= 10_000 { "< 15 s" } else { "< 10 s" }
        )?;
        writeln!(
            f,
            "{:<52} {:>9.2}s",
            format!(
                "create -> {} addresses in the Service's Endpoints{}",
                n.min(controller_manager::ENDPOINTS_MAX_CAPACITY),
                if n > controller_manager::ENDPOINTS_MAX_CAPACITY { " (capacity)" } else { "" }
            ),
            self.endpoints
        )?;
        writeln!(
            f,
            "{:<52} {:>9.2}s {:>11.2}s {:>7.1}x   {} slices, at most {} endpoints each (goal <= 100, upstream's default)",
            format!("create -> {} addresses in EndpointSlices", self.slices.addresses),
            self.slices.at,
            self.anchor,
            self.slices.at / self.anchor.max(1e-9),
            self.slices.count,
            self.slices.largest
        )?;
        writeln!(f, "  (anchor: the {} bare store writes those pods need, at concurrency 16)", 3 * n)?;
        let g = &self.rollout_gets;
        writeln!(
            f,
            "{:<52} {:>9.2}ms   (p50 {:.2} ms, max {:.2} ms, {} GETs)   goal < 50 ms",
            "single-object GET p99 during the rollout", g.p99_ms, g.p50_ms, g.max_ms, g.count
        )?;
        match &self.kubectl {
            Ok((times, rows)) => writeln!(
                f,
                "{:<52} {:>9.2}s   (median of {}; first {:.2}s; {rows} rows)   goal < 1 s",
                "kubectl get pods -A (a Table of every pod)",
                median(times),
                times.len(),
                times.first().copied().unwrap_or_default()
            )?,
            Err(why) => {
                writeln!(f, "{:<52} not measured: {why}", "kubectl get pods -A (a Table of every pod)")?
            }
        }
        if !self.startup.is_empty() {
            let lo = self.startup.iter().copied().fold(f64::MAX, f64::min);
            let hi = self.startup.iter().copied().fold(0.0, f64::max);
            writeln!(
                f,
                "{:<52} {:>9.3}s   (median of {}, {lo:.3}-{hi:.3} s; fresh data dir)   goal < 0.25 s",
                "startup: kplane up (3 nodes) -> kplane: ready",
                median(&self.startup),
                self.startup.len()
            )?;
        }
        let mut last = 0.0;
        for (count, at) in &self.per_hundred {
            writeln!(f, "  {count:>6} pods Ready at {at:>6.2}s   (+{:.2}s for these 100)", at - last)?;
            last = *at;
        }
        let per_pod = |f: fn(&Memory) -> f64| (f(&self.busy) - f(&self.idle)) * 1024.0 / n.max(1) as f64;
        let what = if self.args.pod == "sleep" { "running `sleep 3600`" } else { "simulated servers" };
        writeln!(
            f,
            "memory: idle {:.1} MiB, with {n} pods ({what}) {:.1} MiB: {:.1} KiB per simulated pod   goal < 64 KiB, idle < 40 MiB",
            self.idle.rss,
            self.busy.rss,
            per_pod(|m| m.rss)
        )?;
        writeln!(
            f,
            "  of which anonymous (heap, stacks): idle {:.1} MiB, with {n} pods {:.1} MiB: {:.1} KiB per pod",
            self.idle.anon,
            self.busy.anon,
            per_pod(|m| m.anon)
        )?;
        writeln!(
            f,
            "  and file-backed (the binary's pages touched): idle {:.1} MiB, with {n} pods {:.1} MiB",
            self.idle.file, self.busy.file
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
    /// Measure the ClusterIP in nftables mode too: `auto` (when root), `off`. Its proxy deletes
    /// its table when the measurement ends.
    #[arg(long, default_value = "auto")]
    pub nftables: String,
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
/// child with one node) measured directly, through the ClusterIP in userspace, iptables and nftables modes,
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
    let nftables = match args.nftables.as_str() {
        "auto" => true,
        "off" => false,
        other => bail!("--nftables {other:?}: say auto or off"),
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
        nftables,
        ready_timeout: Duration::from_secs(60),
        cluster_pid: Some(cluster.child.id()),
    };
    let report = networking::bench::run(client, opts).await?;
    drop(cluster);
    Ok(report)
}
