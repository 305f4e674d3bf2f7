//! The garbage collector (upstream's `garbagecollector`).
//!
//! Graph: every resource the API's discovery lists as list+watch+delete (events excluded) is
//! watched as `DynamicObject`s; each object becomes a node (uid → identity, owner references,
//! deletion state, finalizers) and an owner-uid → dependent-uids index. Changes put uids on a
//! de-duplicated work queue, drained by up to `--concurrent-gc-syncs` workers once every watch has
//! listed (so "owner not in the graph" means something). A worker, by the node's state:
//! - owner deleting with `foregroundDeletion`: delete every dependent (Foreground); when no
//!   dependent with `blockOwnerDeletion` is left, remove the finalizer;
//! - owner deleting with `orphan`: strip its ownerReference from every dependent, then remove the
//!   finalizer;
//! - a dependent: owners are solid (present with that uid), waiting (deleting in foreground) or
//!   dangling (absent — confirmed by a live GET as upstream does). No solid owner → delete it
//!   (Foreground if some owner waits, else Background), with a uid precondition. Solid and
//!   dangling owners → just drop the dangling references.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::context::Ctx;
use crate::{util as u, Stop};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// How many graph changes the watchers may queue ahead of the processor before they wait.
const GRAPH_QUEUE: usize = 1024;

#[derive(Clone)]
struct Res {
    ar: ApiResource,
    namespaced: bool,
}

#[derive(Clone, Debug)]
struct Node {
    res: usize,
    ns: Option<String>,
    name: String,
    uid: String,
    rv: Option<String>,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Inserts or replaces a node; returns the uids that need attention.
    fn upsert(&mut self, n: Node) -> Vec<String> {
        let mut touched = vec![n.uid.clone()];
        if let Some(old) = self.nodes.remove(&n.uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&n.uid);
                }
            }
            // Owners whose dependent changed may be waiting on it.
            touched.extend(old.owners.iter().map(|o| o.uid.clone()));
        }
        for o in &n.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(n.uid.clone());
            touched.push(o.uid.clone());
        }
        if n.deleting {
            touched.extend(self.dependents.get(&n.uid).into_iter().flatten().cloned());
        }
        self.nodes.insert(n.uid.clone(), n);
        touched
    }

    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched = Vec::new();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                }
                touched.push(o.uid.clone());
            }
        }
        // Its dependents lost an owner.
        touched.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        touched
    }
}

struct Gc {
    client: Client,
    resources: Vec<Res>,
    by_kind: HashMap<(String, String), usize>,
    graph: Mutex<Graph>,
}

enum Msg {
    Apply(usize, DynamicObject),
    Delete(DynamicObject),
    /// A (re)list of resource `.0` finished; `.1` holds every uid it listed, so nodes of that
    /// resource missing from it were deleted while we were not watching.
    Synced(usize, HashSet<String>),
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    // Discovery may fail while the API server starts: retry.
    let discovery = loop {
        match Discovery::new(ctx.client.clone()).run().await {
            Ok(d) => break d,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery failed; retrying");
                tokio::select! {
                    _ = stop.clone().wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let mut resources = Vec::new();
    let mut by_kind = HashMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let ok = [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v));
            if !ok || ar.plural == "events" {
                continue;
            }
            by_kind.insert((ar.api_version.clone(), ar.kind.clone()), resources.len());
            resources.push(Res { ar, namespaced: matches!(caps.scope, Scope::Namespaced) });
        }
    }
    let gc =
        Arc::new(Gc { client: ctx.client.clone(), resources, by_kind, graph: Mutex::new(Graph::default()) });
    // Bounded: a full queue makes the watchers wait (their streams then back up to the API
    // server, which ends a watch that falls too far behind), never drops an event. The processor
    // only receives, so it cannot wait on a watcher.
    let (tx, rx) = mpsc::channel(GRAPH_QUEUE);
    let mut watchers = JoinSet::new();
    for (i, r) in gc.resources.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &r.ar);
        let tx = tx.clone();
        let stop = stop.clone();
        watchers.spawn(async move {
            let mut s = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
            let mut listed: HashSet<String> = HashSet::new();
            loop {
                let ev = tokio::select! {
                    _ = stop.clone().wait() => return,
                    ev = s.next() => ev,
                };
                let msg = match ev {
                    None => return,
                    Some(Err(_)) => continue,
                    Some(Ok(watcher::Event::Apply(o))) => Msg::Apply(i, o),
                    Some(Ok(watcher::Event::InitApply(o))) => {
                        listed.extend(o.uid());
                        Msg::Apply(i, o)
                    }
                    Some(Ok(watcher::Event::Delete(o))) => Msg::Delete(o),
                    Some(Ok(watcher::Event::InitDone)) => Msg::Synced(i, std::mem::take(&mut listed)),
                    Some(Ok(watcher::Event::Init)) => {
                        listed.clear();
                        continue;
                    }
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let concurrency = usize::from(ctx.config.concurrent_gc_syncs.max(1));
    process(gc, rx, stop, concurrency).await;
    while watchers.join_next().await.is_some() {}
}

async fn process(gc: Arc<Gc>, mut rx: mpsc::Receiver<Msg>, stop: Stop, concurrency: usize) {
    let mut synced: HashSet<usize> = HashSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut queued: HashSet<String> = HashSet::new();
    let mut inflight: HashSet<String> = HashSet::new();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut delayed: Vec<(Instant, String)> = Vec::new();
    let mut workers: JoinSet<(String, bool)> = JoinSet::new();
    let enqueue = |uid: String,
                   queue: &mut VecDeque<String>,
                   queued: &mut HashSet<String>,
                   inflight: &HashSet<String>,
                   dirty: &mut HashSet<String>| {
        if inflight.contains(&uid) {
            dirty.insert(uid);
        } else if queued.insert(uid.clone()) {
            queue.push_back(uid);
        }
    };
    loop {
        let ready = synced.len() == gc.resources.len();
        while ready && workers.len() < concurrency {
            let Some(uid) = queue.pop_front() else { break };
            queued.remove(&uid);
            inflight.insert(uid.clone());
            let gc = gc.clone();
            workers.spawn(async move {
                let again = match gc.attend(&uid).await {
                    Ok(again) => again,
                    Err(e) => {
                        tracing::debug!(uid, error = %e, "garbage collector: retrying");
                        true
                    }
                };
                (uid, again)
            });
        }
        let next_delay = delayed.iter().map(|(t, _)| *t).min();
        tokio::select! {
            _ = stop.clone().wait() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let touched = match msg {
                    Msg::Synced(i, listed) => {
                        synced.insert(i);
                        let mut g = gc.graph.lock().unwrap_or_else(|p| p.into_inner());
                        let gone: Vec<String> =
                            g.nodes.values().filter(|n| n.res == i && !listed.contains(&n.uid)).map(|n| n.uid.clone()).collect();
                        gone.iter().flat_map(|uid| g.remove(uid)).collect()
                    }
                    Msg::Apply(i, o) => gc.apply(i, &o),
                    Msg::Delete(o) => {
                        let uid = o.uid().unwrap_or_default();
                        gc.graph.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid)
                    }
                };
                for uid in touched {
                    enqueue(uid, &mut queue, &mut queued, &inflight, &mut dirty);
                }
            }
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                if let Ok((uid, again)) = done {
                    inflight.remove(&uid);
                    if again {
                        delayed.push((Instant::now() + Duration::from_millis(500), uid.clone()));
                    }
                    if dirty.remove(&uid) {
                        enqueue(uid, &mut queue, &mut queued, &inflight, &mut dirty);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_delay.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if next_delay.is_some() => {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = delayed.drain(..).partition(|(t, _)| *t <= now);
                delayed = later;
                for (_, uid) in due {
                    enqueue(uid, &mut queue, &mut queued, &inflight, &mut dirty);
                }
            }
        }
    }
    while workers.join_next().await.is_some() {}
}

impl Gc {
    fn apply(&self, res: usize, o: &DynamicObject) -> Vec<String> {
        let Some(uid) = o.uid() else { return vec![] };
        let node = Node {
            res,
            ns: o.namespace(),
            name: o.name_any(),
            uid,
            rv: o.resource_version(),
            owners: o.owner_references().to_vec(),
            deleting: o.metadata.deletion_timestamp.is_some(),
            finalizers: o.finalizers().to_vec(),
        };
        self.graph.lock().unwrap_or_else(|p| p.into_inner()).upsert(node)
    }

    fn api_for(&self, res: usize, ns: Option<&str>) -> Api<DynamicObject> {
        let r = &self.resources[res];
        match (r.namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &r.ar),
            _ => Api::all_with(self.client.clone(), &r.ar),
        }
    }

    /// Handles one node; Ok(true) asks to look again shortly (waiting on others).
    async fn attend(&self, uid: &str) -> Result<bool, kube::Error> {
        let (node, deps) = {
            let g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
            let Some(n) = g.nodes.get(uid).cloned() else { return Ok(false) };
            // Only an owner being deleted with the orphan or foreground finalizer acts on its
            // dependents. An owner is attended whenever one of its dependents changes, so copying
            // them for every owner (a ReplicaSet of 10,000 pods) made a rollout quadratic.
            let acts_on_dependents = n.deleting && n.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND);
            let deps: Vec<Node> = if acts_on_dependents {
                g.dependents.get(uid).into_iter().flatten().filter_map(|d| g.nodes.get(d).cloned()).collect()
            } else {
                Vec::new()
            };
            (n, deps)
        };
        let api = self.api_for(node.res, node.ns.as_deref());
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
            for d in &deps {
                let refs: Vec<&OwnerReference> = d.owners.iter().filter(|r| r.uid != node.uid).collect();
                let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": d.rv}});
                match self
                    .api_for(d.res, d.ns.as_deref())
                    .patch(&d.name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if u::is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            self.remove_finalizer(&api, &node, ORPHAN).await?;
            return Ok(false);
        }
        if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
            let blocking = deps
                .iter()
                .filter(|d| d.owners.iter().any(|r| r.uid == node.uid && r.block_owner_deletion == Some(true)));
            if blocking.clone().next().is_none() {
                self.remove_finalizer(&api, &node, FOREGROUND).await?;
                return Ok(false);
            }
            for d in deps.iter().filter(|d| !d.deleting) {
                self.delete(d, PropagationPolicy::Foreground).await?;
            }
            // Finished when the dependents' deletions show up in the graph.
            return Ok(false);
        }
        if node.owners.is_empty() || (node.deleting && !node.finalizers.is_empty()) {
            return Ok(false);
        }
        let mut solid = false;
        let mut waiting = false;
        let mut dangling: Vec<String> = Vec::new();
        for r in &node.owners {
            match self.owner_state(&node, r).await? {
                OwnerState::Solid => solid = true,
                OwnerState::Waiting => waiting = true,
                OwnerState::Dangling => dangling.push(r.uid.clone()),
            }
        }
        if solid {
            if !dangling.is_empty() {
                let refs: Vec<&OwnerReference> =
                    node.owners.iter().filter(|r| !dangling.contains(&r.uid)).collect();
                let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": node.rv}});
                match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&p)).await {
                    Ok(_) => {}
                    Err(e) if u::is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(false);
        }
        if node.deleting {
            return Ok(false);
        }
        let policy = if waiting { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
        self.delete(&node, policy).await?;
        Ok(false)
    }

    async fn delete(&self, n: &Node, policy: PropagationPolicy) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(n.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match self.api_for(n.res, n.ns.as_deref()).delete(&n.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if u::is_not_found(&e) || u::is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(&self, api: &Api<DynamicObject>, n: &Node, f: &str) -> Result<(), kube::Error> {
        let rest: Vec<&String> = n.finalizers.iter().filter(|x| x.as_str() != f).collect();
        let p = json!({"metadata": {"finalizers": rest, "resourceVersion": n.rv}});
        match api.patch(&n.name, &PatchParams::default(), &Patch::Merge(&p)).await {
            Ok(_) => Ok(()),
            Err(e) if u::is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn owner_state(&self, dep: &Node, r: &OwnerReference) -> Result<OwnerState, kube::Error> {
        let in_graph = self.graph.lock().unwrap_or_else(|p| p.into_inner()).nodes.get(&r.uid).cloned();
        let (deleting, finalizers) = match in_graph {
            Some(o) => (o.deleting, o.finalizers),
            None => {
                // Not in the graph: confirm with a live GET before calling it gone.
                let Some(&res) = self.by_kind.get(&(r.api_version.clone(), r.kind.clone())) else {
                    return Ok(OwnerState::Solid);
                };
                let ns = if self.resources[res].namespaced { dep.ns.as_deref() } else { None };
                match self.api_for(res, ns).get_opt(&r.name).await? {
                    Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => {
                        (o.metadata.deletion_timestamp.is_some(), o.finalizers().to_vec())
                    }
                    _ => return Ok(OwnerState::Dangling),
                }
            }
        };
        Ok(if deleting && finalizers.iter().any(|f| f == FOREGROUND) {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        })
    }
}

enum OwnerState {
    Solid,
    Waiting,
    Dangling,
}
