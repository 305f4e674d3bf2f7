//! The Deployment controller (upstream's `pkg/controller/deployment`).
//!
//! A sync claims the deployment's ReplicaSets, then, by upstream's order: deleting → status only;
//! paused or a pure scaling event → proportional scaling (`rollout::scale`); otherwise a Recreate or
//! RollingUpdate step. Each step is computed from the cached ReplicaSets and pods and is safe to
//! repeat; status and conditions (`status.rs`) are written only when they change.
//!
//! Modules: `util` (hash, revisions, fenceposts), `rollout` (new RS, rolling, recreate, scaling,
//! history cleanup), `status` (status + Progressing/Available conditions).

mod rollout;
mod status;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "deployment-controller";

pub struct DeployCtx {
    ctx: Arc<Ctx>,
    deployments: Store<Deployment>,
    rsets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let deployments = ctx.inf.deployments.store();
    let rsets = ctx.inf.replicasets.store();
    let pods = ctx.inf.pods.store();
    let rs_mapper = {
        let deployments = deployments.clone();
        move |rs: Arc<ReplicaSet>| rs_deployments(&rs, &deployments)
    };
    let pod_mapper = {
        let rsets = rsets.clone();
        move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            u::controller_ref(&pod.metadata)
                .filter(|r| r.kind == "ReplicaSet")
                .and_then(|r| rsets.get(&ObjectRef::new(&r.name).within(&ns)))
                .and_then(|rs| u::controller_ref(&rs.metadata).filter(|r| r.kind == "Deployment").cloned())
                .map(|r| ObjectRef::new(&r.name).within(&ns))
        }
    };
    let controller = Controller::for_shared_stream(ctx.inf.deployments.subscribe(), deployments.clone())
        .watches_shared_stream(ctx.inf.replicasets.subscribe(), rs_mapper)
        .watches_shared_stream(ctx.inf.pods.subscribe(), pod_mapper);
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_deployment_syncs;
    let dctx = Arc::new(DeployCtx { ctx, deployments, rsets, pods });
    drive(CONTROLLER, controller, stop, concurrency, reconcile, dctx).await;
}

fn rs_deployments(rs: &ReplicaSet, deployments: &Store<Deployment>) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace().unwrap_or_default();
    if let Some(r) = u::controller_ref(&rs.metadata) {
        return if r.kind == "Deployment" { vec![ObjectRef::new(&r.name).within(&ns)] } else { vec![] };
    }
    deployments
        .state()
        .iter()
        .filter(|d| {
            d.namespace().as_deref() == Some(ns.as_str())
                && u::selector_matches(d.spec.as_ref().map(|s| &s.selector), rs.metadata.labels.as_ref())
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn owner_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.name_any(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn reconcile(d: Arc<Deployment>, dc: Arc<DeployCtx>) -> Result<Action, ReconcileError> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let d = dc.deployments.get(&ObjectRef::new(&name).within(&ns)).unwrap_or(d);
    let Some(uid) = d.metadata.uid.clone() else { return Ok(Action::await_change()) };
    let rs_api: Api<ReplicaSet> = Api::namespaced(dc.ctx.client.clone(), &ns);
    let selector = d.spec.as_ref().map(|s| &s.selector);
    let everything = selector.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    });
    if everything {
        dc.ctx.events.warning(
            CONTROLLER,
            d.as_ref(),
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(Action::await_change());
    }
    if d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).is_none() {
        dc.ctx.events.warning(
            CONTROLLER,
            d.as_ref(),
            "InvalidTemplate",
            "The pod template has no spec.".into(),
        );
        return Ok(Action::await_change());
    }
    let deleting = u::is_terminating(&d.metadata);

    // Claim ReplicaSets (adopt matching orphans, release owned ones that stopped matching).
    let mut owned: Vec<ReplicaSet> = Vec::new();
    let mut adopt = Vec::new();
    for rs in dc.rsets.state() {
        if rs.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = u::selector_matches(selector, rs.metadata.labels.as_ref());
        match u::controller_ref(&rs.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    owned.push(rs.as_ref().clone());
                } else if !deleting {
                    let refs: Vec<OwnerReference> =
                        rs.owner_references().iter().filter(|r| r.uid != uid).cloned().collect();
                    let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.resource_version()}});
                    if let Err(e) =
                        rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await
                    {
                        if !u::is_not_found(&e) {
                            return Err(e.into());
                        }
                    }
                }
            }
            Some(_) => {}
            None if matches && !deleting && !u::is_terminating(&rs.metadata) => adopt.push(rs),
            None => {}
        }
    }
    if !adopt.is_empty() {
        let live = Api::<Deployment>::namespaced(dc.ctx.client.clone(), &ns).get_opt(&name).await?;
        if live
            .is_some_and(|l| l.metadata.uid.as_deref() == Some(uid.as_str()) && !u::is_terminating(&l.metadata))
        {
            for rs in adopt {
                let mut refs = rs.owner_references().to_vec();
                refs.push(owner_ref(&d));
                let p =
                    json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.resource_version()}});
                match rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
                    Ok(r) => owned.push(r),
                    Err(e) if u::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    owned.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any())
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()))
    });

    let mut s = rollout::Sync::new(dc.clone(), d.clone(), owned);
    if deleting {
        s.sync_status(false).await?;
        return Ok(Action::await_change());
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    if paused || s.is_scaling_event() {
        s.sync().await?;
    } else if util::is_recreate(&d) {
        s.rollout_recreate().await?;
    } else {
        s.rollout_rolling().await?;
    }
    Ok(s.requeue.map(Action::requeue).unwrap_or_else(|| Action::requeue(Duration::from_secs(600))))
}
