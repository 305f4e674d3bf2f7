//! The ReplicaSet and ReplicationController controllers: one mechanism over [`ReplicaKind`].
//!
//! A sync (upstream's `syncReplicaSet`) works only from the caches:
//! 1. claim pods: adopt orphans that match the selector (after a live GET confirms the owner is not
//!    being deleted), release owned pods that stopped matching;
//! 2. if the owner's expectations are satisfied, create (slow-start batches 1, 2, 4, …, each batch
//!    concurrent, at most `BURST_REPLICAS` per sync) or delete (upstream's ActivePods ranking) pods;
//! 3. write status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
//!    observedGeneration) only when it changed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::expectations::{Expectations, Seen};
use crate::informer::Informer;
use crate::queue::Controller;
use crate::util;
use crate::Stop;

/// Upstream's `BurstReplicas`: at most this many creates or deletes per sync.
pub const BURST_REPLICAS: usize = 500;

/// What differs between a ReplicaSet and a ReplicationController.
pub trait ReplicaKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The reporting controller name on events.
    const CONTROLLER: &'static str;
    fn informer(ctx: &Ctx) -> &Arc<Informer<Self>>;
    fn desired_replicas(&self) -> i32;
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    /// (replicas, fullyLabeled, ready, available, observedGeneration) as currently recorded.
    fn recorded_status(&self) -> (i32, i32, i32, i32, i64);
}

impl ReplicaKind for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    fn informer(ctx: &Ctx) -> &Arc<Informer<Self>> {
        &ctx.inf.replicasets
    }
    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        util::selector_matches(self.spec.as_ref().map(|s| &s.selector), labels)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn recorded_status(&self) -> (i32, i32, i32, i32, i64) {
        let s = self.status.clone().unwrap_or_default();
        (
            s.replicas,
            s.fully_labeled_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.observed_generation.unwrap_or(0),
        )
    }
}

impl ReplicaKind for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    fn informer(ctx: &Ctx) -> &Arc<Informer<Self>> {
        &ctx.inf.rcs
    }
    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let Some(spec) = self.spec.as_ref() else { return false };
        // An RC without a selector selects its template's labels (upstream defaulting).
        match spec.selector.as_ref().filter(|s| !s.is_empty()) {
            Some(sel) => util::map_selector_matches(sel, labels),
            None => spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref())
                .is_some_and(|sel| util::map_selector_matches(sel, labels)),
        }
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn recorded_status(&self) -> (i32, i32, i32, i32, i64) {
        let s = self.status.clone().unwrap_or_default();
        (
            s.replicas,
            s.fully_labeled_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.observed_generation.unwrap_or(0),
        )
    }
}

pub struct ReplicaCtx<K: ReplicaKind> {
    ctx: Arc<Ctx>,
    pods: Store<Pod>,
    owners: Store<K>,
    exp: Arc<Expectations>,
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

pub async fn run<K: ReplicaKind>(ctx: Arc<Ctx>, stop: Stop) {
    let inf = K::informer(&ctx);
    let owners = inf.store();
    let pods = ctx.inf.pods.store();
    let exp = Arc::new(Expectations::default());
    let mapper = {
        let owners = owners.clone();
        let pods = pods.clone();
        let exp = exp.clone();
        move |pod: Arc<Pod>| pod_owners::<K>(&pod, &owners, &pods, &exp)
    };
    let controller = Controller::for_shared_stream(inf.subscribe(), owners.clone())
        .watches_shared_stream(ctx.inf.pods.subscribe(), mapper);
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_replicaset_syncs;
    let rctx = Arc::new(ReplicaCtx { ctx, pods, owners, exp });
    drive(K::CONTROLLER, controller, stop, concurrency, reconcile::<K>, rctx).await;
}

/// Which owners a pod event concerns: its controller if it is ours, else every owner whose
/// selector matches it (it may be adopted). Also notes pods that vanished for the expectations.
fn pod_owners<K: ReplicaKind>(
    pod: &Pod,
    owners: &Store<K>,
    pods: &Store<Pod>,
    exp: &Expectations,
) -> Vec<ObjectRef<K>> {
    let ns = pod.namespace().unwrap_or_default();
    let kind = K::kind(&());
    if let Some(cref) = util::controller_ref(&pod.metadata) {
        if cref.kind != kind {
            return vec![];
        }
        let pod_name = pod.name_any();
        if pods.get(&ObjectRef::new(&pod_name).within(&ns)).is_none() {
            exp.observe_gone(&key_of(&ns, &cref.name), &pod_name);
        }
        return vec![ObjectRef::new(&cref.name).within(&ns)];
    }
    owners
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(ns.as_str()) && o.selects(pod.metadata.labels.as_ref()))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

async fn reconcile<K: ReplicaKind>(owner: Arc<K>, rc: Arc<ReplicaCtx<K>>) -> Result<Action, ReconcileError> {
    let ns = owner.namespace().unwrap_or_default();
    let name = owner.name_any();
    let key = key_of(&ns, &name);
    let Some(uid) = owner.meta().uid.clone() else { return Ok(Action::await_change()) };
    // The cache may hold a newer owner than the one that triggered us.
    let owner = rc.owners.get(&ObjectRef::new(&name).within(&ns)).unwrap_or(owner);
    let pod_api: Api<Pod> = Api::namespaced(rc.ctx.client.clone(), &ns);
    let deleting = util::is_terminating(owner.meta());

    // 1. Claim.
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    let mut to_adopt: Vec<Arc<Pod>> = Vec::new();
    let mut to_release: Vec<Arc<Pod>> = Vec::new();
    for pod in rc.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = owner.selects(pod.metadata.labels.as_ref());
        match util::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    owned.push(pod);
                } else {
                    to_release.push(pod);
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && !util::is_terminating(&pod.metadata) {
                    to_adopt.push(pod);
                }
            }
        }
    }
    if !to_adopt.is_empty() {
        // Upstream's RecheckDeletionTimestamp: never adopt for an owner that is gone or going.
        let live = Api::<K>::namespaced(rc.ctx.client.clone(), &ns).get_opt(&name).await?;
        let fresh = live
            .is_some_and(|l| l.meta().uid.as_deref() == Some(uid.as_str()) && !util::is_terminating(l.meta()));
        if fresh {
            for pod in to_adopt {
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner_ref(owner.as_ref(), &uid));
                let patch =
                    json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
                match pod_api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(p) => owned.push(Arc::new(p)),
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    for pod in to_release {
        let refs: Vec<OwnerReference> = pod
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != uid)
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
        match pod_api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| util::pod_is_active(p)).collect();

    // 2. Manage replicas.
    let pods_store = rc.pods.clone();
    let satisfied = rc.exp.satisfied(&key, |n| match pods_store.get(&ObjectRef::new(n).within(&ns)) {
        None => Seen::Absent,
        Some(p) if util::is_terminating(&p.metadata) => Seen::Terminating,
        Some(_) => Seen::Present,
    });
    let mut manage_err = None;
    if satisfied && !deleting {
        if let Err(e) = manage(&owner, &uid, &key, &active, &pod_api, &rc).await {
            manage_err = Some(e);
        }
    }

    // 3. Status.
    let now = Timestamp::now();
    let min_ready = owner.min_ready_seconds();
    let template_labels = owner.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels.as_ref().is_none_or(|tl| {
                let have = p.metadata.labels.as_ref();
                tl.iter().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
            })
        })
        .count();
    let ready = active.iter().filter(|p| util::pod_is_ready(p)).count();
    let available = active.iter().filter(|p| util::pod_is_available(p, min_ready, now)).count();
    let generation = owner.meta().generation.unwrap_or(0);
    let want = (active.len() as i32, fully_labeled as i32, ready as i32, available as i32, generation);
    if owner.recorded_status() != want {
        let patch = json!({"status": {
            "replicas": want.0,
            "fullyLabeledReplicas": util::nz(want.1),
            "readyReplicas": util::nz(want.2),
            "availableReplicas": util::nz(want.3),
            "observedGeneration": want.4,
        }});
        let api: Api<K> = Api::namespaced(rc.ctx.client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = manage_err {
        return Err(e);
    }
    // A ready pod becomes available after minReadySeconds without any event: look again then.
    let next = active.iter().filter_map(|p| util::seconds_until_available(p, min_ready, now)).min();
    Ok(match next {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None => Action::requeue(Duration::from_secs(600)),
    })
}

fn owner_ref<K: ReplicaKind>(owner: &K, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream's `getPodsPrefix`: `<owner>-`, shortened so generated names stay within 63 characters.
fn pod_prefix(owner: &str) -> String {
    let mut p: String = owner.chars().take(57).collect();
    p.push('-');
    p
}

async fn manage<K: ReplicaKind>(
    owner: &Arc<K>,
    uid: &str,
    key: &str,
    active: &[Arc<Pod>],
    pod_api: &Api<Pod>,
    rc: &ReplicaCtx<K>,
) -> Result<(), ReconcileError> {
    let desired = owner.desired_replicas().max(0) as usize;
    let events = &rc.ctx.events;
    if active.len() < desired {
        let want = (desired - active.len()).min(BURST_REPLICAS);
        let Some(pod) = pod_from_template(owner.as_ref(), uid) else {
            events.warning(
                K::CONTROLLER,
                owner.as_ref(),
                "FailedCreate",
                "Error creating: the pod template has no spec".into(),
            );
            return Err(ReconcileError::Other("pod template has no spec".into()));
        };
        // Slow start (upstream's slowStartBatch): 1, 2, 4, … concurrent creates; stop at the first
        // failing batch so a quota or invalid template costs one request, not `want`.
        let mut done = 0usize;
        let mut batch = 1usize;
        while done < want {
            let n = batch.min(want - done);
            let pp = PostParams::default();
            let results = join_all((0..n).map(|_| pod_api.create(&pp, &pod))).await;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let pname = p.name_any();
                        rc.exp.expect_created(key, pname.clone());
                        let related = p.object_ref(&());
                        events.normal_related(
                            K::CONTROLLER,
                            owner.as_ref(),
                            "SuccessfulCreate",
                            format!("Created pod: {pname}"),
                            related,
                        );
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                events.warning(K::CONTROLLER, owner.as_ref(), "FailedCreate", format!("Error creating: {e}"));
                return Err(e.into());
            }
            done += n;
            batch *= 2;
        }
    } else if active.len() > desired {
        let n = (active.len() - desired).min(BURST_REPLICAS);
        let victims = pods_to_delete(active, n);
        for p in &victims {
            rc.exp.expect_deleted(key, p.name_any());
        }
        let results = join_all(victims.iter().map(|p| async move {
            let name = p.name_any();
            let dp = DeleteParams { preconditions: None, ..Default::default() };
            (name.clone(), p.object_ref(&()), pod_api.delete(&name, &dp).await)
        }))
        .await;
        let mut failed = None;
        for (pname, related, r) in results {
            match r {
                Ok(_) => events.normal_related(
                    K::CONTROLLER,
                    owner.as_ref(),
                    "SuccessfulDelete",
                    format!("Deleted pod: {pname}"),
                    related,
                ),
                Err(e) if util::is_not_found(&e) => rc.exp.observe_gone(key, &pname),
                Err(e) => {
                    rc.exp.observe_gone(key, &pname);
                    events.warning(
                        K::CONTROLLER,
                        owner.as_ref(),
                        "FailedDelete",
                        format!("Error deleting: {e}"),
                    );
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    Ok(())
}

fn pod_from_template<K: ReplicaKind>(owner: &K, uid: &str) -> Option<Pod> {
    let tpl = owner.template()?;
    let spec = tpl.spec.clone()?;
    let tmeta = tpl.metadata.clone().unwrap_or_default();
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(pod_prefix(&owner.name_any())),
            namespace: owner.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner_ref(owner, uid)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Upstream's ActivePods ordering: the first pods are the first to delete — unscheduled before
/// scheduled, Pending before Unknown before Running, not ready before ready, ready for less time
/// before longer, more restarts before fewer, newer before older.
pub fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut v: Vec<Arc<Pod>> = pods.to_vec();
    v.sort_by_key(|p| rank(p));
    v.truncate(n);
    v
}

type Rank = (u8, u8, u8, std::cmp::Reverse<i64>, std::cmp::Reverse<i32>, std::cmp::Reverse<i64>);

fn rank(p: &Pod) -> Rank {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = match util::pod_phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let ready_since = util::pod_ready_since(p);
    let restarts: i32 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_nanosecond() as i64).unwrap_or(0);
    (
        u8::from(scheduled),
        phase,
        u8::from(ready_since.is_some()),
        // Ready more recently (larger timestamp) sorts first.
        std::cmp::Reverse(ready_since.map(|t| t.as_second()).unwrap_or(0)),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}
