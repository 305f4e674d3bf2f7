//! The pod garbage collector (upstream's `pkg/controller/podgc`). Every `podgc_period` (upstream's
//! `gcCheckPeriod`, 20s), from the pod and node caches:
//! - terminated pods (Succeeded or Failed) beyond `--terminated-pod-gc-threshold` are deleted,
//!   evicted ones first, then oldest created first (0 turns this off);
//! - terminating pods on a node that is not Ready and is tainted `node.kubernetes.io/out-of-service`
//!   are force-deleted;
//! - pods bound to a node that does not exist — absent from the cache for a whole quarantine
//!   (upstream's 40s, `podgc_quarantine`) and confirmed by a live GET — are marked Failed with a
//!   `DisruptionTarget` condition (reason DeletionByPodGC) and force-deleted;
//! - terminating pods never scheduled to a node are force-deleted.
//!
//! "Force-deleted" is a delete with gracePeriodSeconds 0; a pod not yet Succeeded/Failed is first
//! patched to phase Failed (upstream does so for Jobs' pod replacement policy).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::context::Ctx;
use crate::{util as u, Stop};

pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let period = ctx.config.podgc_period.max(std::time::Duration::from_millis(50));
    let mut missing: HashMap<String, Instant> = HashMap::new();
    loop {
        if let Err(e) = gc(&ctx, &mut missing).await {
            tracing::warn!(error = %e, "pod GC pass failed");
        }
        tokio::select! {
            _ = stop.clone().wait() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

async fn gc(ctx: &Ctx, missing: &mut HashMap<String, Instant>) -> Result<(), kube::Error> {
    let pods = ctx.inf.pods.store().state();
    let nodes = ctx.inf.nodes.store().state();
    let threshold = ctx.config.terminated_pod_gc_threshold;
    if threshold > 0 {
        for pod in terminated_to_delete(&pods, threshold as usize) {
            force_delete(ctx, &pod, None).await?;
        }
    }
    // Terminating pods on out-of-service, not-ready nodes.
    for pod in pods.iter().filter(|p| u::is_terminating(&p.metadata)) {
        let Some(node) = node_of(pod).and_then(|n| nodes.iter().find(|x| x.name_any() == n)) else { continue };
        if !node_ready(node) && has_taint(node, OUT_OF_SERVICE) {
            force_delete(ctx, pod, None).await?;
        }
    }
    // Orphans: bound to a node that is gone (after the quarantine).
    let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let mut still_missing = HashSet::new();
    let mut deleted_nodes = HashSet::new();
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    for pod in &pods {
        let Some(node) = node_of(pod) else { continue };
        if names.contains(node) {
            continue;
        }
        still_missing.insert(node.to_string());
        let since = *missing.entry(node.to_string()).or_insert_with(Instant::now);
        if since.elapsed() >= ctx.config.podgc_quarantine && !deleted_nodes.contains(node) {
            if node_api.get_opt(node).await?.is_some() {
                continue;
            }
            deleted_nodes.insert(node.to_string());
        }
    }
    missing.retain(|n, _| still_missing.contains(n));
    for pod in pods.iter().filter(|p| node_of(p).is_some_and(|n| deleted_nodes.contains(n))) {
        let cond = json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": "PodGC: node no longer exists", "lastTransitionTime": Timestamp::now()});
        force_delete(ctx, pod, Some(cond)).await?;
    }
    // Terminating pods that were never scheduled.
    for pod in pods.iter().filter(|p| u::is_terminating(&p.metadata) && node_of(p).is_none()) {
        force_delete(ctx, pod, None).await?;
    }
    Ok(())
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

fn node_ready(node: &Node) -> bool {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == key))
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(u::pod_phase(pod), "Succeeded" | "Failed")
}

/// Upstream's `gcTerminated` choice: how many terminated pods exceed `threshold`, taking evicted
/// pods first, then the oldest created, then by name.
pub fn terminated_to_delete(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    let mut done: Vec<Arc<Pod>> = pods.iter().filter(|p| is_terminated(p)).cloned().collect();
    let excess = done.len().saturating_sub(threshold);
    if excess == 0 {
        return Vec::new();
    }
    let evicted = |p: &Pod| {
        u::pod_phase(p) == "Failed" && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
    };
    done.sort_by_key(|p| {
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        (!evicted(p), created, p.namespace().unwrap_or_default(), p.name_any())
    });
    done.truncate(excess);
    done
}

/// Upstream's `markFailedAndDeletePodWithCondition`: a pod not yet terminal is patched to Failed
/// (with `condition`, if any), then deleted with grace 0. A pod already gone is not an error.
async fn force_delete(ctx: &Ctx, pod: &Pod, condition: Option<serde_json::Value>) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    tracing::info!(pod = %format!("{ns}/{name}"), "PodGC is force deleting Pod");
    if !is_terminated(pod) {
        let mut conds: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
            .unwrap_or_default();
        if let Some(c) = condition {
            conds.retain(|x| x["type"] != c["type"]);
            conds.push(c);
        }
        let mut status = json!({"phase": "Failed"});
        if !conds.is_empty() {
            status["conditions"] = json!(conds);
        }
        let patch = json!({"status": status});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if u::is_not_found(&e) => return Ok(()),
            Err(e) if u::is_conflict(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if u::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, created: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "status": {"phase": phase, "reason": reason},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn oldest_terminated_pods_over_the_threshold_go_first_evicted_before_all() {
        let pods = vec![
            pod("run", "Running", "2026-01-01T00:00:00Z", None),
            pod("old", "Succeeded", "2026-01-01T00:01:00Z", None),
            pod("mid", "Failed", "2026-01-01T00:02:00Z", None),
            pod("new", "Succeeded", "2026-01-01T00:03:00Z", None),
            pod("evicted", "Failed", "2026-01-01T00:04:00Z", Some("Evicted")),
        ];
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(terminated_to_delete(&pods, 2)), ["evicted", "old"]);
        assert_eq!(names(terminated_to_delete(&pods, 4)), Vec::<String>::new());
        assert_eq!(names(terminated_to_delete(&pods, 0)).len(), 4);
    }
}
