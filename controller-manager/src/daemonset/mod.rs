//! The DaemonSet controller (upstream's `pkg/controller/daemon`).
//!
//! A sync (upstream's `syncDaemonSet`), from the caches:
//! 1. claim pods and ControllerRevisions (adopt matching orphans, release strays);
//! 2. history: find the revision storing the current template (bumping its number past the old
//!    ones, as after `rollout undo`) or create it; its hash labels the pods made from it;
//! 3. if the expectations are satisfied: per node (`util::plan_node`), create the missing daemon
//!    pod, delete pods on nodes that no longer fit, failed pods (with a per-node back-off),
//!    succeeded and excess pods; then a RollingUpdate step (`util::plan_rolling_update`,
//!    maxUnavailable or maxSurge); then truncate old revisions beyond revisionHistoryLimit;
//! 4. status (desired/current/misscheduled/ready/available/unavailable/updated, observedGeneration).
//!
//! The controller never binds: each pod gets a required node affinity `matchFields:
//! metadata.name In [<node>]` and the scheduler binds it (cordoned nodes included: daemon pods
//! tolerate `node.kubernetes.io/unschedulable`).
//!
//! Modules: `util` (pure decisions); ControllerRevisions through the shared `crate::history`.

pub mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::expectations::{Expectations, Seen};
use crate::history::{self, History, LiveCounts, HASH_LABEL};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "daemonset-controller";

/// Upstream's `BurstReplicas` for DaemonSets: at most this many creates per sync.
const BURST_REPLICAS: usize = 250;

pub struct DsCtx {
    ctx: Arc<Ctx>,
    daemonsets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    exp: Expectations,
    backoff: util::FailedBackoff,
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let daemonsets = ctx.inf.daemonsets.store();
    let pods = ctx.inf.pods.store();
    let nodes = ctx.inf.nodes.store();
    let revisions = ctx.inf.controllerrevisions.store();
    let dctx = Arc::new(DsCtx {
        ctx: ctx.clone(),
        daemonsets: daemonsets.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        revisions,
        exp: Expectations::default(),
        backoff: util::FailedBackoff::default(),
    });
    let pod_mapper = {
        let d = dctx.clone();
        move |pod: Arc<Pod>| pod_daemonsets(&pod, &d)
    };
    let rev_mapper = |rev: Arc<ControllerRevision>| {
        let ns = rev.namespace().unwrap_or_default();
        u::controller_ref(&rev.metadata)
            .filter(|r| r.kind == "DaemonSet")
            .map(|r| ObjectRef::new(&r.name).within(&ns))
    };
    // A node change matters only if it can change where daemon pods run: its labels, taints,
    // cordon, or its existence. Heartbeats (status only) are filtered out here.
    let node_mapper = {
        let seen: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
        let (nodes, daemonsets) = (nodes.clone(), daemonsets.clone());
        move |node: Arc<Node>| {
            let name = node.name_any();
            let exists = nodes.get(&ObjectRef::new(&name)).is_some();
            let print =
                json!([exists, node.metadata.labels, node.spec.as_ref().map(|s| (&s.taints, s.unschedulable))])
                    .to_string();
            let changed = {
                let mut m = seen.lock().unwrap_or_else(|p| p.into_inner());
                if exists {
                    m.insert(name, print.clone()).is_none_or(|old| old != print)
                } else {
                    m.remove(&name);
                    true
                }
            };
            if !changed {
                return vec![];
            }
            daemonsets.state().iter().map(|d| ObjectRef::from_obj(d.as_ref())).collect()
        }
    };
    let controller = Controller::for_shared_stream(ctx.inf.daemonsets.subscribe(), daemonsets)
        .watches_shared_stream(ctx.inf.pods.subscribe(), pod_mapper)
        .watches_shared_stream(ctx.inf.nodes.subscribe(), node_mapper)
        .watches_shared_stream(ctx.inf.controllerrevisions.subscribe(), rev_mapper);
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_daemonset_syncs;
    drive(CONTROLLER, controller, stop, concurrency, reconcile, dctx).await;
}

/// Which DaemonSets a pod event concerns: its controller if that is a DaemonSet (noting a pod
/// that vanished for the expectations), else every DaemonSet whose selector matches it.
fn pod_daemonsets(pod: &Pod, d: &DsCtx) -> Vec<ObjectRef<DaemonSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(cref) = u::controller_ref(&pod.metadata) {
        if cref.kind != "DaemonSet" {
            return vec![];
        }
        let name = pod.name_any();
        if d.pods.get(&ObjectRef::new(&name).within(&ns)).is_none() {
            d.exp.observe_gone(&key_of(&ns, &cref.name), &name);
        }
        return vec![ObjectRef::new(&cref.name).within(&ns)];
    }
    d.daemonsets
        .state()
        .iter()
        .filter(|ds| {
            ds.namespace().as_deref() == Some(ns.as_str())
                && u::selector_matches(ds.spec.as_ref().map(|s| &s.selector), pod.metadata.labels.as_ref())
        })
        .map(|ds| ObjectRef::from_obj(ds.as_ref()))
        .collect()
}

fn owner_ref(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.name_any(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// One sync's view of a DaemonSet.
struct Sync<'a> {
    d: &'a DsCtx,
    ds: Arc<DaemonSet>,
    key: String,
    pods_api: Api<Pod>,
    /// The DaemonSet's live pods by target node (terminal pods being deleted left out).
    by_node: BTreeMap<String, Vec<Arc<Pod>>>,
    nodes: Vec<Arc<Node>>,
    hash: String,
    requeue: Option<Duration>,
}

async fn reconcile(ds: Arc<DaemonSet>, d: Arc<DsCtx>) -> Result<Action, ReconcileError> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = key_of(&ns, &name);
    let Some(ds) = d.daemonsets.get(&ObjectRef::new(&name).within(&ns)) else {
        // Deleted: the garbage collector removes its pods and revisions.
        d.backoff.forget_prefix(&format!("{}/", ds.metadata.uid.clone().unwrap_or_default()));
        return Ok(Action::await_change());
    };
    let Some(uid) = ds.metadata.uid.clone() else { return Ok(Action::await_change()) };
    let selector = ds.spec.as_ref().map(|s| &s.selector);
    let everything = selector.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    });
    if everything {
        d.ctx.events.warning(
            CONTROLLER,
            ds.as_ref(),
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(Action::await_change());
    }
    if u::is_terminating(&ds.metadata) {
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(d.ctx.client.clone(), &ns);

    // 1. Claim pods and revisions.
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    let mut adopt_pods = Vec::new();
    for pod in d.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = u::selector_matches(selector, pod.metadata.labels.as_ref());
        match u::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else {
                    release_pod(&pods_api, &pod, &uid).await?;
                }
            }
            Some(_) => {}
            None if matches && !u::is_terminating(&pod.metadata) => adopt_pods.push(pod),
            None => {}
        }
    }
    // Upstream's RecheckDeletionTimestamp: never adopt for a DaemonSet that is gone or going.
    let owner_live = || async {
        let live = Api::<DaemonSet>::namespaced(d.ctx.client.clone(), &ns).get_opt(&name).await?;
        Ok::<_, kube::Error>(live.is_some_and(|l| {
            l.metadata.uid.as_deref() == Some(uid.as_str()) && !u::is_terminating(&l.metadata)
        }))
    };
    let oref = owner_ref(&ds);
    if !adopt_pods.is_empty() && owner_live().await? {
        for pod in adopt_pods {
            let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
            refs.push(oref.clone());
            let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
            match pods_api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
                Ok(p) => owned.push(Arc::new(p)),
                Err(e) if u::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let hist = History::new(d.ctx.client.clone(), &ns);
    let selector = selector.cloned().unwrap_or_default();
    let revisions = hist.claim(d.revisions.state(), &oref, &selector, owner_live).await?;

    // 2. History: the current revision and its hash.
    let (hash, old) = construct_history(&d, &ds, &hist, revisions).await?;

    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in owned {
        let terminal = matches!(u::pod_phase(&pod), "Failed" | "Succeeded");
        if terminal && u::is_terminating(&pod.metadata) {
            continue;
        }
        match util::target_node(&pod) {
            Some(n) => by_node.entry(n).or_default().push(pod),
            None => tracing::debug!(pod = %pod.name_any(), "daemon pod without a target node"),
        }
    }
    let mut s = Sync {
        d: &d,
        ds: ds.clone(),
        key: key.clone(),
        pods_api,
        by_node,
        nodes: d.nodes.state(),
        hash,
        requeue: None,
    };

    // 3. Manage, roll, truncate history; only once the cache has caught up with our last writes.
    let pods_store = d.pods.clone();
    let satisfied = || {
        d.exp.satisfied(&key, |n| match pods_store.get(&ObjectRef::new(n).within(&ns)) {
            None => Seen::Absent,
            Some(p) if u::is_terminating(&p.metadata) => Seen::Terminating,
            Some(_) => Seen::Present,
        })
    };
    let mut result = Ok(());
    let acted = satisfied();
    if acted {
        result = s.manage().await;
        if result.is_ok() && satisfied() && util::is_rolling_update(&ds) {
            result = s.rolling_update().await;
        }
        if result.is_ok() {
            result = s.cleanup_history(&hist, &old).await;
        }
    }

    // 4. Status (observedGeneration only when this sync acted on this generation).
    s.update_status(acted).await?;
    result?;
    Ok(s.requeue.map(Action::requeue).unwrap_or_else(|| Action::requeue(Duration::from_secs(600))))
}

async fn release_pod(api: &Api<Pod>, pod: &Pod, uid: &str) -> Result<(), ReconcileError> {
    let refs: Vec<OwnerReference> = pod.owner_references().iter().filter(|r| r.uid != uid).cloned().collect();
    let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
    match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
        Ok(_) => Ok(()),
        Err(e) if u::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Upstream's `constructHistory`: the hash of the revision storing the current template (made,
/// or renumbered past the old ones, as needed) and the old revisions.
async fn construct_history(
    d: &DsCtx,
    ds: &Arc<DaemonSet>,
    hist: &History,
    revisions: Vec<ControllerRevision>,
) -> Result<(String, Vec<ControllerRevision>), ReconcileError> {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let data = history::template_patch(&template);
    let (cur, old) = history::split_current(revisions, &data);
    let next = history::next_number(&old);
    let hash_of = |r: &ControllerRevision| r.labels().get(HASH_LABEL).cloned().unwrap_or_default();
    if let Some(c) = cur.last() {
        if c.revision < next {
            hist.renumber(c, next).await?;
        }
        return Ok((hash_of(c), old));
    }
    // Upstream's `snapshot`: named and labelled with the template hash (`controller.ComputeHash`,
    // as the Deployment's ReplicaSets), not `HashControllerRevision`.
    let collision = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = crate::deployment::util::pod_template_hash(&template, collision);
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let (ns, annotations) = (ds.namespace().unwrap_or_default(), ds.metadata.annotations.as_ref());
    let rev = history::new_revision(&owner_ref(ds), &ns, labels, annotations, &hash, data, next);
    match hist.try_create(&rev).await? {
        Some(r) if u::controller_ref(&r.metadata).is_some_and(|c| Some(&c.uid) == ds.metadata.uid.as_ref()) => {
            Ok((hash_of(&r), old))
        }
        _ => {
            // A hash collision with another revision: bump collisionCount and try again.
            let dapi: Api<DaemonSet> = Api::namespaced(d.ctx.client.clone(), &ns);
            let p = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
            dapi.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await?;
            Err(ReconcileError::Other(format!(
                "hash collision on revision {}; collisionCount bumped",
                rev.name_any()
            )))
        }
    }
}

impl Sync<'_> {
    fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name))
    }

    fn pods_on(&self, node: &str) -> Vec<&Pod> {
        self.by_node.get(node).map(|v| v.iter().map(|p| p.as_ref()).collect()).unwrap_or_default()
    }

    fn note_requeue(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    /// Upstream's `manage`: every node's plan, plus pods whose node no longer exists.
    async fn manage(&mut self) -> Result<(), ReconcileError> {
        let now = Timestamp::now();
        let uid = self.ds.metadata.uid.clone().unwrap_or_default();
        let mut create_on = Vec::new();
        let mut delete = Vec::new();
        for node in self.nodes.clone() {
            let name = node.name_any();
            let pods = self.pods_on(&name);
            let bkey = format!("{uid}/{name}");
            let backoff = || self.d.backoff.check(&bkey, Instant::now());
            let plan = util::plan_node(&self.ds, &node, &pods, &self.hash, now, backoff);
            for f in &plan.failed {
                self.d.ctx.events.warning(
                    CONTROLLER,
                    self.ds.as_ref(),
                    "FailedDaemonPod",
                    format!(
                        "Found failed daemon pod {}/{f} on node {name}, will try to kill it",
                        self.ds.namespace().unwrap_or_default()
                    ),
                );
            }
            if let Some(after) = plan.retry_after {
                self.note_requeue(after);
            }
            if plan.create {
                create_on.push(name.clone());
            }
            delete.extend(plan.delete);
        }
        // Unbound pods aimed at a node that is gone (upstream's getUnscheduledPodsWithoutNode);
        // no kubelet will ever finish them, so they go at once. Bound pods of a deleted node are
        // the node lifecycle controller's pod GC pass's.
        let mut force = Vec::new();
        for (node, pods) in &self.by_node {
            if self.node(node).is_none() {
                let unbound = pods
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty));
                force.extend(unbound.map(|p| p.name_any()));
            }
        }
        self.sync_nodes(delete, force, create_on).await
    }

    /// Upstream's `rollingUpdate`.
    async fn rolling_update(&mut self) -> Result<(), ReconcileError> {
        let mut desired = 0usize;
        let mut map: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for (n, pods) in &self.by_node {
            map.insert(n.clone(), pods.iter().map(|p| p.as_ref()).collect());
        }
        for node in &self.nodes {
            if util::node_should_run(node, &self.ds).0 {
                desired += 1;
                map.entry(node.name_any()).or_default();
            }
        }
        let should_run = |n: &str| self.node(n).is_some_and(|node| util::node_should_run(node, &self.ds).0);
        let plan = util::plan_rolling_update(&self.ds, &map, desired, &self.hash, Timestamp::now(), should_run);
        self.sync_nodes(plan.delete, vec![], plan.create_on).await
    }

    /// Upstream's `syncNodes`: delete, then create (slow-start batches), recording expectations.
    async fn sync_nodes(
        &mut self,
        delete: Vec<String>,
        force: Vec<String>,
        create_on: Vec<String>,
    ) -> Result<(), ReconcileError> {
        let d = self.d;
        let events = &d.ctx.events;
        let ds = self.ds.clone();
        let ds = ds.as_ref();
        let pods_api = self.pods_api.clone();
        let pods_api = &pods_api;
        let key = self.key.clone();
        let mut first_err: Option<ReconcileError> = None;
        let delete: Vec<(String, bool)> =
            delete.into_iter().map(|n| (n, false)).chain(force.into_iter().map(|n| (n, true))).collect();
        for (name, _) in &delete {
            d.exp.expect_deleted(&key, name.clone());
        }
        let results = join_all(delete.iter().map(|(name, force)| async move {
            let dp = if *force { DeleteParams::default().grace_period(0) } else { DeleteParams::default() };
            (name, pods_api.delete(name, &dp).await)
        }))
        .await;
        for (name, r) in results {
            match r {
                Ok(either) => {
                    let related = either.either(|p| p.object_ref(&()), |_| Default::default());
                    events.normal_related(
                        CONTROLLER,
                        ds,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                        related,
                    );
                }
                Err(e) if u::is_not_found(&e) => d.exp.observe_gone(&key, name),
                Err(e) => {
                    d.exp.observe_gone(&key, name);
                    events.warning(CONTROLLER, ds, "FailedDelete", format!("Error deleting: {e}"));
                    first_err.get_or_insert(e.into());
                }
            }
        }
        let want = create_on.len().min(BURST_REPLICAS);
        let template = util::pod_template(ds, &self.hash);
        let tmeta = template.metadata.clone().unwrap_or_default();
        let mut done = 0usize;
        let mut batch = 1usize;
        while done < want && first_err.is_none() {
            let n = batch.min(want - done);
            let pods: Vec<Pod> = create_on[done..done + n]
                .iter()
                .map(|node| {
                    let mut spec = template.spec.clone().unwrap_or_default();
                    spec.affinity = Some(util::replace_node_affinity(spec.affinity.take(), node));
                    Pod {
                        metadata: ObjectMeta {
                            generate_name: Some(pod_prefix(&ds.name_any())),
                            namespace: ds.namespace(),
                            labels: tmeta.labels.clone(),
                            annotations: tmeta.annotations.clone(),
                            finalizers: tmeta.finalizers.clone(),
                            owner_references: Some(vec![owner_ref(ds)]),
                            ..Default::default()
                        },
                        spec: Some(spec),
                        status: None,
                    }
                })
                .collect();
            let pp = PostParams::default();
            let results = join_all(pods.iter().map(|p| pods_api.create(&pp, p))).await;
            for r in results {
                match r {
                    Ok(p) => {
                        let pname = p.name_any();
                        d.exp.expect_created(&key, pname.clone());
                        events.normal_related(
                            CONTROLLER,
                            ds,
                            "SuccessfulCreate",
                            format!("Created pod: {pname}"),
                            p.object_ref(&()),
                        );
                    }
                    Err(e) => {
                        events.warning(CONTROLLER, ds, "FailedCreate", format!("Error creating: {e}"));
                        first_err.get_or_insert(e.into());
                    }
                }
            }
            done += n;
            batch *= 2;
        }
        if create_on.len() > want {
            // Over the burst: the rest next time.
            self.note_requeue(Duration::from_millis(100));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Upstream's `cleanupHistory`: old revisions beyond the limit, oldest first, never one a
    /// pod still carries the hash of.
    async fn cleanup_history(&self, hist: &History, old: &[ControllerRevision]) -> Result<(), ReconcileError> {
        let limit = self.ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
        let live: HashSet<&str> = self
            .by_node
            .values()
            .flatten()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).map(String::as_str))
            .collect();
        let is_live =
            |r: &ControllerRevision| r.labels().get(HASH_LABEL).is_some_and(|h| live.contains(h.as_str()));
        for name in history::to_truncate(old, limit, is_live, LiveCounts::Yes) {
            hist.delete(&name).await?;
        }
        Ok(())
    }

    /// Upstream's `updateDaemonSetStatus`.
    async fn update_status(&mut self, observed: bool) -> Result<(), ReconcileError> {
        let now = Timestamp::now();
        let ds = self.ds.clone();
        let ds = ds.as_ref();
        let min_ready = util::min_ready_seconds(ds);
        let generation = util::template_generation(ds);
        let (mut desired, mut current, mut mis, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0, 0);
        for node in &self.nodes {
            let (should_run, _) = util::node_should_run(node, ds);
            let mut pods = self.pods_on(&node.name_any());
            if !should_run {
                if !pods.is_empty() {
                    mis += 1;
                }
                continue;
            }
            desired += 1;
            if pods.is_empty() {
                continue;
            }
            current += 1;
            util::sort_by_creation(&mut pods);
            let pod = pods[0];
            if u::pod_is_ready(pod) {
                ready += 1;
                if u::pod_is_available(pod, min_ready, now) {
                    available += 1;
                }
            }
            if util::is_pod_updated(pod, &self.hash, generation) {
                updated += 1;
            }
        }
        // Any pod (a surged one too) that is ready but not yet available becomes available after
        // minReadySeconds without an event: look again then.
        let wake =
            self.by_node.values().flatten().filter_map(|p| u::seconds_until_available(p, min_ready, now)).min();
        if let Some(s) = wake {
            // A ready pod becomes available after minReadySeconds without any event.
            self.note_requeue(Duration::from_secs(s.max(1) as u64));
        }
        let st = ds.status.clone().unwrap_or_default();
        let observed_generation =
            if observed { ds.metadata.generation.unwrap_or(0) } else { st.observed_generation.unwrap_or(0) };
        let want = (desired, current, mis, ready, available, desired - available, updated, observed_generation);
        let have = (
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.number_misscheduled,
            st.number_ready,
            st.number_available.unwrap_or(0),
            st.number_unavailable.unwrap_or(0),
            st.updated_number_scheduled.unwrap_or(0),
            st.observed_generation.unwrap_or(0),
        );
        if want == have {
            return Ok(());
        }
        let p = json!({"status": {
            "desiredNumberScheduled": want.0,
            "currentNumberScheduled": want.1,
            "numberMisscheduled": want.2,
            "numberReady": want.3,
            "numberAvailable": u::nz(want.4),
            "numberUnavailable": u::nz(want.5),
            "updatedNumberScheduled": u::nz(want.6),
            "observedGeneration": want.7,
        }});
        let api: Api<DaemonSet> =
            Api::namespaced(self.d.ctx.client.clone(), &ds.namespace().unwrap_or_default());
        match api.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
            Ok(_) => Ok(()),
            Err(e) if u::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Upstream's `getPodsPrefix`: `<owner>-`, shortened so generated names stay within 63 characters.
fn pod_prefix(owner: &str) -> String {
    let mut p: String = owner.chars().take(57).collect();
    p.push('-');
    p
}
