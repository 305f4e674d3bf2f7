//! The ResourceQuota status controller (upstream's `resourcequota` controller,
//! `pkg/controller/resourcequota`): every quota's `status.hard` mirrors `spec.hard` and
//! `status.used` holds what the namespace uses of each resource name `spec.hard` lists.
//!
//! Usage is computed by `api_types::quota` (the same evaluators the API server's quota admission
//! uses): object counts (`pods`, `services`, `configmaps`, `secrets`, `persistentvolumeclaims`,
//! `replicationcontrollers`, `resourcequotas`, `count/<resource>[.<group>]`), pods' compute
//! `requests.*`/`limits.*` (finished pods use nothing), `services.nodeports`/`loadbalancers`,
//! PVCs' `requests.storage`, and the pod scopes `Terminating`/`NotTerminating`/`BestEffort`/
//! `NotBestEffort`/`PriorityClass`. Pods and services come from the shared caches; the other kinds
//! are listed through the API at each sync.
//!
//! A quota syncs when it changes, when a pod, service, configmap, secret or PVC of its namespace
//! changes (created, updated or deleted: upstream's replenishment), and on a full resync every
//! `--resource-quota-sync-period` (5 min), which also catches the kinds not watched. The status is
//! written with the quota's resourceVersion, and only when it changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use api_types::ResourceDef;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::Value;

use crate::context::{drive, Ctx, ReconcileError};
use crate::informer::{wait_ready, Informer};
use crate::queue::Controller;
use crate::{util, Stop};

pub const CONTROLLER: &str = "resourcequota-controller";

struct QuotaCtx {
    ctx: Arc<Ctx>,
    quotas: Store<ResourceQuota>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let inf: Arc<Informer<ResourceQuota>> = Informer::new(Api::all(ctx.client.clone()));
    let quotas = inf.store();
    let mapper = |quotas: Store<ResourceQuota>| {
        move |ns: Option<String>| -> Vec<ObjectRef<ResourceQuota>> {
            quotas
                .state()
                .iter()
                .filter(|q| q.namespace() == ns)
                .map(|q| ObjectRef::from_obj(q.as_ref()))
                .collect()
        }
    };
    let (m1, m2, m3, m4, m5) = (
        mapper(quotas.clone()),
        mapper(quotas.clone()),
        mapper(quotas.clone()),
        mapper(quotas.clone()),
        mapper(quotas.clone()),
    );
    let client = ctx.client.clone();
    let controller = Controller::for_shared_stream(inf.subscribe(), quotas.clone())
        .watches_shared_stream(ctx.inf.pods.subscribe(), move |p: Arc<Pod>| m1(p.namespace()))
        .watches_shared_stream(ctx.inf.services.subscribe(), move |s: Arc<Service>| m2(s.namespace()))
        .watches(Api::<ConfigMap>::all(client.clone()), watcher::Config::default(), move |o| m3(o.namespace()))
        .watches(Api::<Secret>::all(client.clone()), watcher::Config::default(), move |o| m4(o.namespace()))
        .watches(Api::<PersistentVolumeClaim>::all(client), watcher::Config::default(), move |o| {
            m5(o.namespace())
        });
    let work = async {
        let ready = async {
            wait_ready(&quotas).await;
            ctx.informers_ready(&stop).await
        };
        let ready = tokio::select! {
            _ = stop.clone().wait() => false,
            r = ready => r,
        };
        if ready {
            let qctx = Arc::new(QuotaCtx { ctx: ctx.clone(), quotas });
            let workers = ctx.config.concurrent_resource_quota_syncs;
            drive(CONTROLLER, controller, stop.clone(), workers, reconcile, qctx).await;
        }
    };
    // The quota informer lives in this task, so it stops (or is aborted) with the controller.
    tokio::join!(inf.clone().run(stop.clone()), work);
}

/// The resources whose objects a quota's `spec.hard` names (by `count/<plural>[.<group>]` or the
/// legacy and compute names).
pub fn resources_for(hard: &[String]) -> Vec<&'static ResourceDef> {
    let mut out: Vec<&'static ResourceDef> = Vec::new();
    let core = |plural: &str| api_types::resources::lookup("", "v1", plural);
    for key in hard {
        let found = match key.as_str() {
            "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
            k if k.starts_with("requests.") && k != "requests.storage" => core("pods"),
            k if k.starts_with("limits.") => core("pods"),
            "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
            "configmaps" => core("configmaps"),
            "secrets" => core("secrets"),
            "persistentvolumeclaims" | "requests.storage" => core("persistentvolumeclaims"),
            "replicationcontrollers" => core("replicationcontrollers"),
            "resourcequotas" => core("resourcequotas"),
            k => k.strip_prefix("count/").and_then(|rest| {
                let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
                api_types::RESOURCES.iter().find(|r| r.plural == plural && r.group == group && r.namespaced)
            }),
        };
        if let Some(r) = found {
            if !out.iter().any(|o| std::ptr::eq(*o, r)) {
                out.push(r);
            }
        }
    }
    out
}

async fn objects_of(qc: &QuotaCtx, res: &'static ResourceDef, ns: &str) -> Result<Vec<Value>, kube::Error> {
    let cached = |v: Vec<Value>| Ok(v);
    match (res.group, res.kind) {
        ("", "Pod") => cached(
            qc.ctx
                .inf
                .pods
                .store()
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(ns))
                .filter_map(|p| serde_json::to_value(p.as_ref()).ok())
                .collect(),
        ),
        ("", "Service") => cached(
            qc.ctx
                .inf
                .services
                .store()
                .state()
                .iter()
                .filter(|s| s.namespace().as_deref() == Some(ns))
                .filter_map(|s| serde_json::to_value(s.as_ref()).ok())
                .collect(),
        ),
        _ => {
            let ar = ApiResource {
                group: res.group.into(),
                version: res.version.into(),
                api_version: res.api_version(),
                kind: res.kind.into(),
                plural: res.plural.into(),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(qc.ctx.client.clone(), ns, &ar);
            let list = api.list(&ListParams::default()).await?;
            Ok(list.items.iter().filter_map(|o| serde_json::to_value(o).ok()).collect())
        }
    }
}

async fn reconcile(quota: Arc<ResourceQuota>, qc: Arc<QuotaCtx>) -> Result<Action, ReconcileError> {
    let ns = quota.namespace().unwrap_or_default();
    let name = quota.name_any();
    let resync = Action::requeue(qc.ctx.config.resource_quota_sync_period);
    let Some(quota) = qc.quotas.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(Action::await_change());
    };
    if util::is_terminating(&quota.metadata) {
        return Ok(Action::await_change());
    }
    let hard = quota.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
    let keys: Vec<String> = hard.keys().cloned().collect();
    let mut objects: Vec<(&'static ResourceDef, Value)> = Vec::new();
    for res in resources_for(&keys) {
        for o in objects_of(&qc, res, &ns).await? {
            objects.push((res, o));
        }
    }
    let qv = serde_json::to_value(quota.as_ref()).map_err(|e| ReconcileError::Other(e.to_string()))?;
    let used = api_types::quota::used_by(&qv, objects.iter().map(|(r, o)| (*r, o)));
    let status = ResourceQuotaStatus {
        hard: (!hard.is_empty()).then(|| hard.clone()),
        used: (!used.is_empty())
            .then(|| used.into_iter().map(|(k, v)| (k, Quantity(v))).collect::<BTreeMap<_, _>>()),
    };
    if !same_status(quota.status.as_ref(), &status) {
        let api: Api<ResourceQuota> = Api::namespaced(qc.ctx.client.clone(), &ns);
        let mut new = (*quota).clone();
        new.status = Some(status);
        match api.replace_status(&name, &PostParams::default(), &new).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(resync)
}

/// Equal as quantities are printed (an absent map and an empty one alike).
fn same_status(old: Option<&ResourceQuotaStatus>, new: &ResourceQuotaStatus) -> bool {
    let norm = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, String> {
        m.map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (k.clone(), api_types::quota::milli(&v.0).map_or_else(|| v.0.clone(), |n| n.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let old_hard = norm(old.and_then(|s| s.hard.as_ref()));
    let old_used = norm(old.and_then(|s| s.used.as_ref()));
    old_hard == norm(new.hard.as_ref()) && old_used == norm(new.used.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_names_map_to_the_kinds_counted() {
        let keys: Vec<String> = [
            "pods",
            "requests.cpu",
            "limits.memory",
            "count/deployments.apps",
            "configmaps",
            "requests.storage",
            "count/jobs.batch",
            "count/nope",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let kinds: Vec<&str> = resources_for(&keys).iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["Pod", "Deployment", "ConfigMap", "PersistentVolumeClaim", "Job"]);
    }

    #[test]
    fn status_equality_is_by_quantity() {
        let q = |pairs: &[(&str, &str)]| {
            Some(
                pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect::<BTreeMap<_, _>>(),
            )
        };
        let a = ResourceQuotaStatus { hard: q(&[("cpu", "1")]), used: q(&[("cpu", "500m")]) };
        let b = ResourceQuotaStatus { hard: q(&[("cpu", "1000m")]), used: q(&[("cpu", "0.5")]) };
        assert!(same_status(Some(&a), &b));
        let c = ResourceQuotaStatus { hard: q(&[("cpu", "1")]), used: q(&[("cpu", "600m")]) };
        assert!(!same_status(Some(&a), &c));
        assert!(!same_status(None, &a));
    }
}
