//! `kplane bench cluster --workload statefulset`: a StatefulSet of N replicas (100 by default) in
//! Parallel pod management, behind a headless Service, from the create until the set counts N
//! Ready pods (`status.readyReplicas`), beside its anchor in the same run: the bare store writes
//! those pods need (create, bind, status: 3 per pod) made directly at concurrency 16 on the same
//! kind of store. The cluster is a separate `kplane up` process, as for the Deployment bench.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::bench::{anchor_writes, start_settled, BenchClusterArgs, Started};

/// What one run measured.
pub struct Report {
    replicas: usize,
    nodes: usize,
    etcd: bool,
    ready: f64,
    anchor: f64,
}

pub async fn run(args: BenchClusterArgs, exe: PathBuf) -> Result<Report> {
    let Started { dir: tmp, cluster, client, deadline } =
        start_settled(&exe, &args, "kplane-bench-sts-").await?;
    let n = args.replicas();
    let ns = "default";
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = json!({"metadata": {"name": "bench"}, "spec": {"clusterIP": "None", "selector": {"app": "bench"},
        "ports": [{"port": 80, "targetPort": 8080}]}});
    services.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let set = json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": n, "serviceName": "bench", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]}}},
    });
    let started = Instant::now();
    sets.create(&PostParams::default(), &serde_json::from_value(set)?).await?;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let ready = loop {
        poll.tick().await;
        if Instant::now() > deadline {
            bail!("timed out after {:?}", started.elapsed());
        }
        let status = sets.get("bench").await?.status.unwrap_or_default();
        if status.ready_replicas.unwrap_or(0).max(0) as usize == n {
            break started.elapsed().as_secs_f64();
        }
    };
    drop(cluster);
    let anchor = anchor_writes(&args, tmp.path()).await?;
    Ok(Report { replicas: n, nodes: args.nodes, etcd: args.etcd_servers.is_some(), ready, anchor })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.replicas;
        let store = if self.etcd { "real etcd" } else { "embedded store" };
        writeln!(
            f,
            "kplane bench cluster: StatefulSet of {n} replicas (Parallel) on {} simulated nodes, {store}",
            self.nodes
        )?;
        writeln!(f, "{:<52} {:>10} {:>12} {:>8}   goal", "", "kplane", "anchor", "ratio")?;
        writeln!(
            f,
            "{:<52} {:>9.2}s {:>11.2}s {:>7.1}x   < 5 s",
            format!("create -> readyReplicas={n}"),
            self.ready,
            self.anchor,
            self.ready / self.anchor.max(1e-9)
        )?;
        write!(f, "  (anchor: the {} bare store writes those pods need, at concurrency 16)", 3 * n)
    }
}
