//! `kplane bench cluster --workload job`: a Job of `--completions` pods (default 1,000) at
//! `--parallelism` (default 100) on simulated nodes, from the create to the Job's Complete
//! condition, beside its anchor in the same run: the bare store writes those pods need, made
//! directly at concurrency 16 on the same kind of store. Per pod: the create, the scheduler's
//! binding, three kubelet status writes (ContainerCreating, Running, Succeeded) and the Job
//! controller's removal of its tracking finalizer: 1 create + 5 updates. (A finished Job's pods are
//! not deleted, so no delete is counted; the Job's own status writes are not counted either.)
//! Every pod succeeds (`true`), so the back-off of failures plays no part.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::bench::BenchClusterArgs;

/// Store writes per pod in the anchor (see the module doc).
const UPDATES_PER_POD: usize = 5;

pub struct Report {
    args: BenchClusterArgs,
    /// Seconds from the create until the Job counted each further 100 succeeded pods.
    per_hundred: Vec<(usize, f64)>,
    complete: f64,
    max_active: i32,
    anchor: f64,
}

pub async fn run(args: BenchClusterArgs, exe: PathBuf) -> Result<Report> {
    let crate::bench::Started { dir: tmp, cluster, client, deadline } =
        crate::bench::start_settled(&exe, &args, "kplane-bench-job-").await?;
    let (n, p) = (args.completions, args.parallelism);

    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = json!({
        "metadata": {"name": "bench"},
        "spec": {"completions": n, "parallelism": p, "backoffLimit": 0, "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox", "command": ["true"]}]}}},
    });
    let start = Instant::now();
    jobs.create(&PostParams::default(), &serde_json::from_value(job)?).await?;
    let mut per_hundred = Vec::new();
    let mut max_active = 0;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let complete = loop {
        poll.tick().await;
        if Instant::now() > deadline {
            bail!("timed out after {:?}", start.elapsed());
        }
        let status = jobs.get("bench").await?.status.unwrap_or_default();
        max_active = max_active.max(status.active.unwrap_or(0));
        let done = status.succeeded.unwrap_or(0).max(0) as usize;
        while per_hundred.len() < done / 100 {
            per_hundred.push(((per_hundred.len() + 1) * 100, start.elapsed().as_secs_f64()));
        }
        let conds = status.conditions.unwrap_or_default();
        if conds.iter().any(|c| c.type_ == "Failed" && c.status == "True") {
            bail!("the Job failed: {conds:?}");
        }
        if conds.iter().any(|c| c.type_ == "Complete" && c.status == "True") {
            break start.elapsed().as_secs_f64();
        }
    };
    drop(cluster);
    let anchor = anchor_writes(&args, tmp.path()).await?;
    Ok(Report { args, per_hundred, complete, max_active, anchor })
}

/// The store writes the Job's pods need, made directly: a create and five updates per pod, 16
/// pods at a time. Returns seconds.
async fn anchor_writes(args: &BenchClusterArgs, dir: &Path) -> Result<f64> {
    let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default",
        "labels": {"batch.kubernetes.io/job-name": "bench"}, "finalizers": ["batch.kubernetes.io/job-tracking"]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox", "command": ["true"]}]}});
    crate::bench::pod_writes(args, dir, args.completions, UPDATES_PER_POD, &pod).await
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, p) = (self.args.completions, self.args.parallelism);
        let store = if self.args.etcd_servers.is_some() { "real etcd" } else { "embedded store" };
        writeln!(
            f,
            "kplane bench cluster: Job of {n} completions at parallelism {p} on {} simulated nodes, {store}",
            self.args.nodes
        )?;
        writeln!(f, "{:<52} {:>10} {:>12} {:>8}   goal", "", "kplane", "anchor", "ratio")?;
        writeln!(
            f,
            "{:<52} {:>9.2}s {:>11.2}s {:>7.1}x   < 15 s",
            format!("create -> Complete ({n} succeeded)"),
            self.complete,
            self.anchor,
            self.complete / self.anchor.max(1e-9)
        )?;
        writeln!(
            f,
            "  (anchor: the {} bare store writes those pods need, 1 create + {UPDATES_PER_POD} updates each, at concurrency 16)",
            (1 + UPDATES_PER_POD) * n
        )?;
        writeln!(f, "  most active pods seen at once: {} (parallelism {p})", self.max_active)?;
        let mut last = 0.0;
        for (count, at) in &self.per_hundred {
            writeln!(f, "  {count:>6} pods succeeded at {at:>6.2}s   (+{:.2}s for these 100)", at - last)?;
            last = *at;
        }
        Ok(())
    }
}
