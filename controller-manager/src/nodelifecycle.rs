//! The node lifecycle controller: node health and NoExecute taint eviction (pods of deleted nodes
//! are the pod GC's, `podgc`).
//!
//! Every `--node-monitor-period`, for each node: its last heartbeat is the later of the Ready
//! condition's lastHeartbeatTime and its Lease (`kube-node-lease/<node>`) renewTime (or its
//! creation for a node that never reported). Silent for longer than `--node-monitor-grace-period` →
//! every condition becomes Unknown (reason NodeStatusUnknown, "Kubelet stopped posting node
//! status."). Then taints follow Ready: Unknown → `node.kubernetes.io/unreachable`, False →
//! `node.kubernetes.io/not-ready`, each as NoSchedule and NoExecute; True → neither.
//! Pods on a node with NoExecute taints they do not tolerate are deleted now; tolerated with
//! `tolerationSeconds` → deleted once the taint is that old.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::context::Ctx;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "node-controller";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let nodes = ctx.inf.nodes.store();
    let pods = ctx.inf.pods.store();
    tokio::select! {
        _ = stop.clone().wait() => return,
        _ = async { crate::informer::wait_ready(&nodes).await; crate::informer::wait_ready(&pods).await; } => {}
    }
    let period = ctx.config.node_monitor_period.max(Duration::from_millis(100));
    // Between passes, each node change brings its taints in line with the Ready condition it now
    // reports, as upstream's NoSchedule tainting pass runs on every node update: a node that turns
    // Ready is schedulable at once, not a monitor period later.
    let mut updates = Box::pin(ctx.inf.nodes.subscribe());
    loop {
        if let Err(e) = pass(&ctx).await {
            tracing::warn!(error = %e, "node lifecycle pass failed");
        }
        let next_pass = tokio::time::sleep(period);
        tokio::pin!(next_pass);
        loop {
            tokio::select! {
                _ = stop.clone().wait() => return,
                _ = &mut next_pass => break,
                Some(node) = updates.next() => {
                    if let Err(e) = on_update(&ctx, &node).await {
                        tracing::warn!(error = %e, node = %node.name_any(), "node taint update failed");
                    }
                }
            }
        }
    }
}

/// A changed node's not-ready/unreachable taints made to match the Ready condition it reports (a
/// node that reports none yet is left to the monitor pass, as upstream's update pass leaves it).
async fn on_update(ctx: &Ctx, node: &Node) -> Result<(), kube::Error> {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let Some(ready) = conds.and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")) else { return Ok(()) };
    sync_taints(ctx, node, &ready.status, Timestamp::now()).await.map(|_| ())
}

async fn pass(ctx: &Ctx) -> Result<(), kube::Error> {
    let grace = ctx.config.node_monitor_grace_period.as_secs_f64();
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let leases: Vec<Lease> = Api::<Lease>::namespaced(ctx.client.clone(), "kube-node-lease")
        .list(&ListParams::default())
        .await?
        .items;
    let now = Timestamp::now();
    let nodes = ctx.inf.nodes.store().state();
    for node in &nodes {
        let name = node.name_any();
        let conds = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let ready = conds.iter().find(|c| c.type_ == "Ready");
        let lease_renew = leases
            .iter()
            .find(|l| l.name_any() == name)
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let heartbeat = [ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0)), lease_renew]
            .into_iter()
            .flatten()
            .max()
            .or(node.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let silent = (now.as_millisecond() - heartbeat.as_millisecond()) as f64 / 1000.0;
        let mut ready_status = ready.map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into());
        if silent > grace && ready_status != "Unknown" {
            let mut new_conds: Vec<NodeCondition> = conds.clone();
            if !new_conds.iter().any(|c| c.type_ == "Ready") {
                new_conds.push(NodeCondition { type_: "Ready".into(), ..Default::default() });
            }
            for c in new_conds.iter_mut() {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            let p = json!({"status": {"conditions": new_conds}});
            match node_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&p)).await {
                Ok(_) => {
                    ready_status = "Unknown".into();
                    ctx.events.normal(
                        CONTROLLER,
                        node.as_ref(),
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    );
                }
                Err(e) if u::is_not_found(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        let taints = sync_taints(ctx, node, &ready_status, now).await?;
        evict(ctx, &name, &taints, now).await?;
    }
    Ok(())
}

/// Makes the node's unreachable/not-ready taints match its Ready status; returns its taints.
async fn sync_taints(ctx: &Ctx, node: &Node, ready: &str, now: Timestamp) -> Result<Vec<Taint>, kube::Error> {
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let want_key = match ready {
        "Unknown" => Some(UNREACHABLE),
        "False" => Some(NOT_READY),
        _ => None,
    };
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| !(t.key == UNREACHABLE || t.key == NOT_READY) || Some(t.key.as_str()) == want_key)
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !next.iter().any(|t| t.key == key && t.effect == effect) {
                next.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    if next != current {
        let p = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": next}});
        let api: Api<Node> = Api::all(ctx.client.clone());
        match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
            Ok(n) => return Ok(n.spec.and_then(|s| s.taints).unwrap_or_default()),
            Err(e) if u::is_not_found(&e) || u::is_conflict(&e) => return Ok(current),
            Err(e) => return Err(e),
        }
    }
    Ok(next)
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// When (if ever) a pod must leave a node with these NoExecute taints: None = never.
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        // Tolerated forever unless every matching toleration is time-bounded (take the shortest).
        if matching.iter().all(|t| t.toleration_seconds.is_some()) {
            let secs = matching.iter().filter_map(|t| t.toleration_seconds).min().unwrap_or(0).max(0);
            let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
            let when = Timestamp::from_second(added.as_second().saturating_add(secs)).unwrap_or(now);
            at = Some(at.map_or(when, |a| a.min(when)));
        }
    }
    at
}

async fn evict(ctx: &Ctx, node: &str, taints: &[Taint], now: Timestamp) -> Result<(), kube::Error> {
    if !taints.iter().any(|t| t.effect == "NoExecute") {
        return Ok(());
    }
    for pod in ctx.inf.pods.store().state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
            || u::is_terminating(&pod.metadata)
        {
            continue;
        }
        let Some(when) = eviction_time(&pod, taints, now) else { continue };
        if when > now {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => ctx.events.normal(
                "taint-eviction-controller",
                pod.as_ref(),
                "TaintManagerEviction",
                format!("Marking for deletion Pod {ns}/{}", pod.name_any()),
            ),
            Err(e) if u::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
