//! The `default-scheduler`: assigns each unbound pod it is responsible for to a node.
//!
//! One task owns all the state (no locks): it reads the node and pod watches into the [`Cache`],
//! keeps a FIFO of pods to schedule, and for each runs the filters and scores over the cache. The
//! chosen node is *assumed* at once (the pod's requests count against it) and the binding is POSTed
//! in a spawned task, up to `bind_concurrency` at a time, so a thousand pending pods bind in seconds
//! without ever re-listing. A failed binding un-assumes, and so does a binding task that panics. Pods that fit nowhere get upstream's
//! PodScheduled=False/Unschedulable condition and a FailedScheduling event, and are retried when a
//! node changes in a way the filters read, when an assigned pod goes away, when their own spec
//! changes, and every `retry_interval`.

pub mod cache;
pub mod filter;
pub mod interpod;
pub mod score;
pub mod selector;
pub mod spread;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use controller_manager::recorder::Recorder;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, ReplicationController, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{Error, SchedulerConfig};
use cache::{Cache, PodUsage};

/// Runs the scheduler until `shutdown` completes. Returns an error only if it cannot start.
pub async fn run_scheduler(
    client: Client,
    cfg: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
    // managedFields trimmed, as upstream's scheduler informers do: never read, and nearly half of a
    // decoded pod.
    let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .modify(|p| p.metadata.managed_fields = None)
        .default_backoff();
    let mut nodes = nodes.boxed();
    let mut pods = pods.boxed();
    // The selectors the default topology spreading reads (upstream's informers for them).
    let wc = watcher::Config::default;
    let mut services = watcher(Api::<Service>::all(client.clone()), wc()).default_backoff().boxed();
    let mut rcs = watcher(Api::<ReplicationController>::all(client.clone()), wc()).default_backoff().boxed();
    let mut rss = watcher(Api::<ReplicaSet>::all(client.clone()), wc()).default_backoff().boxed();
    let mut sss = watcher(Api::<StatefulSet>::all(client.clone()), wc()).default_backoff().boxed();
    let mut s = Scheduler::new(client, cfg);
    let mut retry = tokio::time::interval(s.cfg.retry_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        if s.nodes_synced && s.pods_synced && s.owners_synced.all() {
            s.schedule_ready();
        }
        tokio::select! {
            _ = &mut shutdown => break,
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => s.on_node_event(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "scheduler: node watch"),
                None => break,
            },
            ev = pods.next() => match ev {
                Some(Ok(ev)) => s.on_pod_event(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "scheduler: pod watch"),
                None => break,
            },
            Some(ev) = services.next() => owner_event(&mut s.owners_synced.services_flat, &mut s.cache.owners.services_flat, ev, |svc: &Service| {
                svc.spec.as_ref().and_then(|sp| sp.selector.clone())
            }),
            Some(ev) = rcs.next() => owner_event(&mut s.owners_synced.rcs, &mut s.cache.owners.rcs, ev, |rc: &ReplicationController| {
                rc.spec.as_ref().and_then(|sp| sp.selector.clone())
            }),
            Some(ev) = rss.next() => owner_event(&mut s.owners_synced.replicasets, &mut s.cache.owners.replicasets, ev, |rs: &ReplicaSet| {
                rs.spec.as_ref().map(|sp| selector::Selector::from_label_selector(&sp.selector))
            }),
            Some(ev) = sss.next() => owner_event(&mut s.owners_synced.statefulsets, &mut s.cache.owners.statefulsets, ev, |ss: &StatefulSet| {
                ss.spec.as_ref().map(|sp| selector::Selector::from_label_selector(&sp.selector))
            }),
            Some(done) = s.tasks.join_next_with_id(), if !s.tasks.is_empty() => s.on_joined(done),
            _ = retry.tick() => s.flush_unschedulable(),
        }
    }
    s.tasks.shutdown().await;
    Ok(())
}

#[derive(Default)]
struct OwnersSynced {
    services_flat: bool,
    rcs: bool,
    replicasets: bool,
    statefulsets: bool,
}

impl OwnersSynced {
    fn all(&self) -> bool {
        self.services_flat && self.rcs && self.replicasets && self.statefulsets
    }
}

/// Keeps one kind's selectors (by namespace and name) from its watch. A relist starts over.
fn owner_event<K, V>(
    synced: &mut bool,
    map: &mut HashMap<(String, String), V>,
    ev: Result<Event<K>, watcher::Error>,
    selector: impl Fn(&K) -> Option<V>,
) where
    K: Resource,
{
    let key =
        |o: &K| (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default());
    match ev {
        Ok(Event::Init) => map.clear(),
        Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => match selector(&o) {
            Some(v) => {
                map.insert(key(&o), v);
            }
            None => {
                map.remove(&key(&o));
            }
        },
        Ok(Event::Delete(o)) => {
            map.remove(&key(&o));
        }
        Ok(Event::InitDone) => *synced = true,
        Err(e) => tracing::warn!(error = %e, "scheduler: selector watch"),
    }
}

/// What a spawned task reports back to the loop.
enum Outcome {
    Bound { key: String, pod: Box<Pod>, node: String },
    BindFailed { key: String, uid: String, retry: bool },
    Reported,
}

struct Scheduler {
    cfg: SchedulerConfig,
    client: Client,
    recorder: Recorder,
    /// Bounds the status patches and events in flight.
    report_slots: Arc<Semaphore>,
    cache: Cache,
    /// Unbound pods this scheduler is responsible for, by "namespace/name".
    pending: HashMap<String, Pod>,
    /// Keys to try, in order; `queued` mirrors it for de-duplication.
    active: VecDeque<String>,
    queued: HashSet<String>,
    /// Keys that fit nowhere at their last attempt.
    unschedulable: HashSet<String>,
    /// Keys whose binding is in flight.
    in_flight: HashSet<String>,
    /// Pod uids assigned in the cache by us, not yet seen bound by the watch.
    assumed: HashSet<String>,
    tasks: JoinSet<Outcome>,
    /// The binding tasks in `tasks`, with their pod's key and uid: a binding task that ends
    /// without an outcome (it panicked, say in an in-process handler) still releases its pod.
    binds: HashMap<tokio::task::Id, (String, String)>,
    nodes_synced: bool,
    pods_synced: bool,
    node_relist: Option<HashSet<String>>,
    pod_relist: Option<HashSet<String>>,
    /// Whether each selector watch has listed once: as upstream waits for its informers, nothing
    /// is scheduled before (the default spreading would miss the owners).
    owners_synced: OwnersSynced,
    /// Breaks ties among the best nodes (upstream's `selectHost`).
    rng: rand::rngs::SmallRng,
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

impl Scheduler {
    fn new(client: Client, cfg: SchedulerConfig) -> Scheduler {
        let reporter = Reporter { controller: cfg.name.clone(), instance: None };
        Scheduler {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            report_slots: Arc::new(Semaphore::new(cfg.bind_concurrency.max(1))),
            cfg,
            cache: Cache::default(),
            pending: HashMap::new(),
            active: VecDeque::new(),
            queued: HashSet::new(),
            unschedulable: HashSet::new(),
            in_flight: HashSet::new(),
            assumed: HashSet::new(),
            tasks: JoinSet::new(),
            binds: HashMap::new(),
            nodes_synced: false,
            pods_synced: false,
            node_relist: None,
            pod_relist: None,
            owners_synced: OwnersSynced::default(),
            rng: rand::SeedableRng::from_os_rng(),
        }
    }

    fn responsible(&self, pod: &Pod) -> bool {
        let name = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or_default();
        name == self.cfg.name || (name.is_empty() && self.cfg.name == "default-scheduler")
    }

    fn on_node_event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Init => self.node_relist = Some(HashSet::new()),
            Event::InitApply(node) => {
                if let Some(seen) = self.node_relist.as_mut() {
                    seen.insert(node.name_any());
                }
                self.cache.set_node(node);
            }
            Event::InitDone => {
                let seen = self.node_relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .cache
                    .nodes
                    .iter()
                    .filter(|(n, i)| i.node.is_some() && !seen.contains(*n))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in gone {
                    self.cache.remove_node(&n);
                }
                self.nodes_synced = true;
                self.flush_unschedulable();
            }
            Event::Apply(node) => {
                if self.cache.set_node(node) {
                    self.flush_unschedulable();
                }
            }
            Event::Delete(node) => self.cache.remove_node(&node.name_any()),
        }
    }

    fn on_pod_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.pod_relist = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.pod_relist.as_mut() {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                self.on_pod(pod);
            }
            Event::InitDone => {
                let seen = self.pod_relist.take().unwrap_or_default();
                for uid in self.cache.pod_uids() {
                    if !seen.contains(&uid) && !self.assumed.contains(&uid) {
                        self.cache.remove_pod(&uid);
                    }
                }
                let gone: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| !seen.contains(&p.uid().unwrap_or_default()))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.forget(&k);
                }
                self.pods_synced = true;
            }
            Event::Apply(pod) => self.on_pod(pod),
            Event::Delete(pod) => {
                self.forget(&key_of(&pod));
                let uid = pod.uid().unwrap_or_default();
                self.assumed.remove(&uid);
                if self.cache.remove_pod(&uid) {
                    self.flush_unschedulable();
                }
            }
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let key = key_of(&pod);
        let uid = pod.uid().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed";
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        if let Some(node) = node {
            // Bound (by us or anyone): it counts against its node until it ends.
            self.forget(&key);
            self.assumed.remove(&uid);
            if terminal {
                if self.cache.remove_pod(&uid) {
                    self.flush_unschedulable();
                }
            } else {
                self.cache.add_pod(&uid, &node, PodUsage::of(&pod));
            }
            return;
        }
        if !self.responsible(&pod) || pod.metadata.deletion_timestamp.is_some() || terminal {
            self.forget(&key);
            return;
        }
        // A pod whose spec changed (a toleration added, a selector relaxed) is worth another try
        // now; our own status writes do not change the spec.
        let spec_changed = self.pending.get(&key).is_some_and(|old| old.spec != pod.spec);
        self.pending.insert(key.clone(), pod);
        if spec_changed {
            self.unschedulable.remove(&key);
        }
        if !self.in_flight.contains(&key) && !self.unschedulable.contains(&key) {
            self.enqueue(key);
        }
    }

    fn enqueue(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    fn forget(&mut self, key: &str) {
        self.pending.remove(key);
        self.unschedulable.remove(key);
        self.queued.remove(key);
    }

    fn flush_unschedulable(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            self.enqueue(key);
        }
    }

    /// Schedules queued pods while binding slots are free.
    fn schedule_ready(&mut self) {
        while self.in_flight.len() < self.cfg.bind_concurrency.max(1) {
            let Some(key) = self.active.pop_front() else { break };
            if !self.queued.remove(&key) || self.in_flight.contains(&key) {
                continue;
            }
            let Some(pod) = self.pending.get(&key).cloned() else { continue };
            self.schedule_one(key, pod);
        }
    }

    fn schedule_one(&mut self, key: String, pod: Pod) {
        let usage = PodUsage::of(&pod);
        let best = match decide(&self.cache, &pod, &usage, &mut self.rng) {
            Ok(best) => best,
            Err(message) => {
                self.unschedulable.insert(key);
                self.report_unschedulable(pod, message);
                return;
            }
        };
        let uid = pod.uid().unwrap_or_default();
        self.cache.add_pod(&uid, &best, usage);
        self.assumed.insert(uid.clone());
        self.in_flight.insert(key.clone());
        let task = self.tasks.spawn(bind(self.client.clone(), pod, key.clone(), uid.clone(), best));
        self.binds.insert(task.id(), (key, uid));
    }

    fn report_unschedulable(&mut self, pod: Pod, message: String) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let slots = self.report_slots.clone();
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            report_unschedulable(&client, &recorder, &pod, &message).await;
            Outcome::Reported
        });
    }

    /// A task of `tasks` ended: its outcome, or, for a binding task that panicked or was
    /// cancelled, the same release as a failed binding (un-assume, retry later).
    fn on_joined(&mut self, done: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>) {
        match done {
            Ok((id, outcome)) => {
                self.binds.remove(&id);
                self.on_outcome(outcome);
            }
            Err(e) => {
                let Some((key, uid)) = self.binds.remove(&e.id()) else {
                    tracing::warn!(error = %e, "scheduler: a reporting task failed");
                    return;
                };
                tracing::error!(error = %e, pod = %key, "scheduler: the binding task failed; the pod will be retried");
                self.on_outcome(Outcome::BindFailed { key, uid, retry: true });
            }
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Bound { key, pod, node } => {
                self.in_flight.remove(&key);
                let (recorder, slots) = (self.recorder.clone(), self.report_slots.clone());
                self.tasks.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let ns = pod.namespace().unwrap_or_default();
                    let ev = KubeEvent {
                        type_: EventType::Normal,
                        reason: "Scheduled".into(),
                        note: Some(format!("Successfully assigned {ns}/{} to {node}", pod.name_any())),
                        action: "Binding".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &pod.object_ref(&())).await {
                        tracing::debug!(error = %e, pod = %key, "scheduler: Scheduled event");
                    }
                    Outcome::Reported
                });
            }
            Outcome::BindFailed { key, uid, retry } => {
                self.in_flight.remove(&key);
                if self.assumed.remove(&uid) {
                    self.cache.remove_pod(&uid);
                }
                if retry && self.pending.contains_key(&key) {
                    self.unschedulable.insert(key);
                } else if !retry {
                    self.forget(&key);
                }
            }
            Outcome::Reported => {}
        }
    }
}

/// POSTs the binding.
async fn bind(client: Client, pod: Pod, key: String, uid: String, node: String) -> Outcome {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let res: Result<serde_json::Value, kube::Error> =
        api.create_subresource("binding", &name, &PostParams::default(), &binding).await;
    match res {
        // The event is recorded by a task of its own, so that the binding slot frees at once.
        Ok(_) => Outcome::Bound { key, pod: Box::new(pod), node },
        Err(e) => {
            // 404: the pod is gone; 409: it is already bound (the watch will show where) or being
            // deleted. Anything else is worth another try.
            let code = match &e {
                kube::Error::Api(s) => s.code,
                _ => 0,
            };
            tracing::warn!(error = %e, pod = %key, node = %node, "scheduler: binding failed");
            Outcome::BindFailed { key, uid, retry: code != 404 && code != 409 }
        }
    }
}

/// One scheduling cycle over the cache: the filters of upstream's default profile in its order
/// (the node-local ones, then PodTopologySpread and InterPodAffinity), then its score plugins and
/// weights, then a random pick among the best. The chosen node's name, or the FailedScheduling
/// message.
pub fn decide(cache: &Cache, pod: &Pod, usage: &PodUsage, rng: &mut impl rand::Rng) -> Result<String, String> {
    let all: Vec<(&str, &cache::NodeInfo)> =
        cache.nodes.iter().filter(|(_, i)| i.node.is_some()).map(|(n, i)| (n.as_str(), i)).collect();
    let infos: Vec<&cache::NodeInfo> = all.iter().map(|(_, i)| *i).collect();
    let any_affinity = cache.with_affinity > 0;
    let hard_spread = spread::Hard::new(pod, &infos);
    let hard_affinity = interpod::Hard::new(usage, any_affinity, &infos);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut resolvable = 0;
    let mut feasible: Vec<(&str, &cache::NodeInfo)> = Vec::new();
    for &(name, info) in &all {
        let failed = filter::check(pod, info, &usage.requests)
            .or_else(|| hard_spread.check(pod, info).map(|(r, res)| filter::Failure::new(r, res)))
            .or_else(|| hard_affinity.check(info).map(|(r, res)| filter::Failure::new(r, res)));
        match failed {
            None => feasible.push((name, info)),
            Some(f) => {
                resolvable += usize::from(f.resolvable);
                for r in f.reasons {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(filter::fit_error(all.len(), &reasons, resolvable));
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].0.to_string());
    }
    let totals = score_nodes(cache, pod, usage, &infos, &feasible);
    let scored: Vec<(&str, i64)> = feasible.iter().map(|(n, _)| *n).zip(totals).collect();
    Ok(score::select_host(&scored, rng).expect("feasible is not empty").to_string())
}

/// The weighted sum of the score plugins for each feasible node.
pub fn score_nodes(
    cache: &Cache,
    pod: &Pod,
    usage: &PodUsage,
    all: &[&cache::NodeInfo],
    feasible: &[(&str, &cache::NodeInfo)],
) -> Vec<i64> {
    let nodes: Vec<&cache::NodeInfo> = feasible.iter().map(|(_, i)| *i).collect();
    let empty = Node::default();
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let taints: Vec<i64> = nodes
        .iter()
        .map(|i| score::intolerable_prefer_no_schedule(tolerations, i.node.as_ref().unwrap_or(&empty)))
        .collect();
    let taints = score::default_normalize(&taints, true);
    let affinity: Vec<i64> =
        nodes.iter().map(|i| score::preferred_node_affinity(pod, i.node.as_ref().unwrap_or(&empty))).collect();
    let affinity = score::default_normalize(&affinity, false);
    let spread = spread::scores(pod, &cache.owners, all, &nodes);
    let interpod = interpod::scores(usage, cache.with_affinity > 0, all, &nodes);
    let best_effort = score::is_best_effort(&usage.requests);
    nodes
        .iter()
        .enumerate()
        .map(|(n, info)| {
            let balanced = if best_effort { 0 } else { score::balanced_allocation(&usage.requests, info) };
            score::WEIGHT_TAINT_TOLERATION * taints[n]
                + score::WEIGHT_NODE_AFFINITY * affinity[n]
                + score::WEIGHT_RESOURCES_FIT * score::least_allocated(&usage.nonzero, info)
                + score::WEIGHT_TOPOLOGY_SPREAD * spread[n]
                + score::WEIGHT_INTER_POD_AFFINITY * interpod[n]
                + score::WEIGHT_BALANCED_ALLOCATION * balanced
        })
        .collect()
}

/// Sets PodScheduled=False/Unschedulable (when it says something new) and records FailedScheduling.
async fn report_unschedulable(client: &Client, recorder: &Recorder, pod: &Pod, message: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let conds: Vec<PodCondition> = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let current = conds.iter().find(|c| c.type_ == "PodScheduled");
    let same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    });
    if !same {
        let mut conds: Vec<serde_json::Value> = conds
            .iter()
            .filter(|c| c.type_ != "PodScheduled")
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        conds.push(json!({
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }));
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": {"conditions": conds}});
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(error = %e, pod = %name, "scheduler: unschedulable status");
        }
    }
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: "FailedScheduling".into(),
        note: Some(message.to_string()),
        action: "Scheduling".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &pod.object_ref(&())).await {
        tracing::debug!(error = %e, pod = %name, "scheduler: FailedScheduling event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose every request panics, as an in-process handler that panics does on the
    /// caller's task.
    fn panicking_client() -> Client {
        async fn handler(
            _req: http::Request<kube::client::Body>,
        ) -> Result<http::Response<kube::client::Body>, std::convert::Infallible> {
            panic!("injected: the API handler panicked")
        }
        Client::new(tower::service_fn(handler), "default")
    }

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("a valid object")
    }

    #[tokio::test]
    async fn a_binding_task_that_panics_releases_its_pod() {
        let mut s = Scheduler::new(panicking_client(), SchedulerConfig::default());
        s.on_node_event(Event::Apply(obj(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))));
        s.nodes_synced = true;
        s.pods_synced = true;
        s.on_pod_event(Event::Apply(obj(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))));
        s.schedule_ready();
        assert!(s.in_flight.contains("default/p"), "the binding is in flight");
        assert!(s.assumed.contains("u1"));
        assert_eq!(s.cache.node_of("u1"), Some("n1"), "assumed on the node");

        let done = s.tasks.join_next_with_id().await.expect("the binding task ends");
        assert!(done.as_ref().is_err_and(|e| e.is_panic()), "the injected panic ends the task");
        s.on_joined(done);

        assert!(s.in_flight.is_empty(), "no longer in flight");
        assert!(s.assumed.is_empty(), "un-assumed");
        assert_eq!(s.cache.node_of("u1"), None, "no longer counted against the node");
        assert!(s.binds.is_empty());
        // Retried like a failed binding: at the next retry tick it is queued and bound again.
        assert!(s.unschedulable.contains("default/p"));
        s.flush_unschedulable();
        s.schedule_ready();
        assert!(s.in_flight.contains("default/p"), "tried again");
        s.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod decide_tests {
    use super::cache::testing::{cache, node, pod};
    use super::*;

    /// A thousand pods decided and assumed in turn over ten nodes, as the loop does: every node
    /// ends with its share (ties at random), and the time per decision is printed (the hot path).
    #[test]
    fn a_thousand_decisions_spread_over_ten_nodes() {
        let nodes: Vec<Node> = (0..10).map(|i| node(&format!("w{i}"), json!({}))).collect();
        let mut c = cache(nodes, vec![]);
        for n in c.nodes.values_mut() {
            n.allocatable = cache::Resources { milli_cpu: 64_000, memory: 256 << 30, ephemeral_storage: 0 };
            n.allocatable_pods = 110;
        }
        let mut rng = rand::rng();
        let started = std::time::Instant::now();
        for i in 0..1000 {
            let p = pod(&format!("p{i}"), json!({"app": "bulk"}), json!({}));
            let usage = PodUsage::of(&p);
            let best = decide(&c, &p, &usage, &mut rng).expect("fits");
            c.add_pod(&format!("p{i}"), &best, usage);
        }
        let took = started.elapsed();
        eprintln!("1000 decisions in {took:?} ({:?} each)", took / 1000);
        for (name, info) in &c.nodes {
            assert!((92..=108).contains(&info.pods.len()), "{name}: {}", info.pods.len());
        }
    }

    /// The same for the pods of one ReplicaSet (selected by a Service too): every decision counts
    /// the matching pods of every node for the default spreading, so this is the costlier case.
    #[test]
    fn a_thousand_decisions_for_one_replicaset() {
        let nodes: Vec<Node> = (0..10).map(|i| node(&format!("w{i}"), json!({}))).collect();
        let mut c = cache(nodes, vec![]);
        for n in c.nodes.values_mut() {
            n.allocatable = cache::Resources { milli_cpu: 64_000, memory: 256 << 30, ephemeral_storage: 0 };
            n.allocatable_pods = 110;
        }
        let sel = selector::Selector::from_map(&[("app".to_string(), "bulk".to_string())].into());
        c.owners.replicasets.insert(("default".into(), "bulk".into()), Some(sel));
        c.owners
            .services_flat
            .insert(("default".into(), "bulk".into()), [("app".to_string(), "bulk".to_string())].into());
        let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bulk", "uid": "rs", "controller": true}]);
        let mut rng = rand::rng();
        let started = std::time::Instant::now();
        for i in 0..1000 {
            let mut p = pod(&format!("p{i}"), json!({"app": "bulk"}), json!({}));
            p.metadata.owner_references = serde_json::from_value(owner.clone()).unwrap();
            let usage = PodUsage::of(&p);
            let best = decide(&c, &p, &usage, &mut rng).expect("fits");
            c.add_pod(&format!("p{i}"), &best, usage);
        }
        let took = started.elapsed();
        eprintln!("1000 decisions (one ReplicaSet) in {took:?} ({:?} each)", took / 1000);
        // The hostname default constraint keeps them within a pod or two of each other.
        for (name, info) in &c.nodes {
            assert!((98..=102).contains(&info.pods.len()), "{name}: {}", info.pods.len());
        }
    }
}
