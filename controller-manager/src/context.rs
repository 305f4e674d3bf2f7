//! What all controllers of one run share: the client, the config, the event sink and the shared
//! informers; and the wiring that starts each enabled controller as an owned task.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::{CancelableJoinHandle, StreamBackoff};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::events::{self, EventSink};
use crate::informer::{wait_ready, Informer};
use crate::nodeipam::ClusterCidr;
use crate::queue::{key_of, Controller, Processing, Waiting};
use crate::{Config, Stop};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// client-go's workqueue metrics, per controller name, with client-go's meanings (see `drive`):
/// `workqueue_adds_total` counts new items (a key added while it already waits folds into that
/// item, as client-go's dirty set does; a requeue asked by a reconcile or a retry counts when it
/// runs), `workqueue_depth` is the items added and not yet handed to a reconcile,
/// `workqueue_queue_duration_seconds` the time from an item's first add until a reconcile takes it,
/// `workqueue_work_duration_seconds` each reconcile, `workqueue_retries_total` failed reconciles put
/// back with a backoff (client-go's `AddRateLimited`), and the gauges
/// `workqueue_unfinished_work_seconds` and `workqueue_longest_running_processor_seconds` the
/// reconciles in progress (refreshed every 500ms, as client-go does). A requeue waits in
/// kube-runtime's scheduler, unseen: it is in neither the depth nor the queue duration.
#[derive(Clone, Debug)]
pub struct WorkqueueMetrics {
    adds: Family<NameLabels, Counter>,
    depth: Family<NameLabels, Gauge>,
    queue_duration: Family<NameLabels, Histogram, fn() -> Histogram>,
    work_duration: Family<NameLabels, Histogram, fn() -> Histogram>,
    retries: Family<NameLabels, Counter>,
    unfinished: Family<NameLabels, Gauge<f64, AtomicU64>>,
    longest: Family<NameLabels, Gauge<f64, AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

/// client-go's workqueue buckets: `ExponentialBuckets(10e-9, 10, 10)`, 10ns to 10s.
pub const WORKQUEUE_BUCKETS: [f64; 10] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

fn workqueue_histogram() -> Histogram {
    Histogram::new(WORKQUEUE_BUCKETS)
}

impl Default for WorkqueueMetrics {
    fn default() -> Self {
        WorkqueueMetrics {
            adds: Family::default(),
            depth: Family::default(),
            queue_duration: Family::new_with_constructor(workqueue_histogram as fn() -> Histogram),
            work_duration: Family::new_with_constructor(workqueue_histogram as fn() -> Histogram),
            retries: Family::default(),
            unfinished: Family::default(),
            longest: Family::default(),
        }
    }
}

impl WorkqueueMetrics {
    /// Adds the families to a registry (the one `/metrics` serves). prometheus-client ends each help
    /// text with a period: upstream's are given here without their final one.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register("workqueue_adds", "Total number of adds handled by workqueue", self.adds.clone());
        r.register("workqueue_depth", "Current depth of workqueue", self.depth.clone());
        r.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            self.queue_duration.clone(),
        );
        r.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            self.work_duration.clone(),
        );
        r.register("workqueue_retries", "Total number of retries handled by workqueue", self.retries.clone());
        r.register(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has done that is in progress and hasn't been observed by \
             work_duration. Large values indicate stuck threads. One can deduce the number of stuck \
             threads by observing the rate at which this increases",
            self.unfinished.clone(),
        );
        r.register(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            self.longest.clone(),
        );
    }
}

tokio::task_local! {
    /// The metrics of the controller-manager run whose task this is (set by `start_controllers`).
    static WORKQUEUE: WorkqueueMetrics;
}

/// Why one reconcile failed; it is retried after a short backoff (level-triggered: the retry
/// recomputes everything from the current state).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// An API request failed.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    /// Something we cannot act on until the object changes (already recorded as an event).
    #[error("{0}")]
    Other(String),
}

pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub rcs: Arc<Informer<ReplicationController>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub services: Arc<Informer<Service>>,
    pub nodes: Arc<Informer<Node>>,
    pub namespaces: Arc<Informer<Namespace>>,
    pub jobs: Arc<Informer<Job>>,
    pub cronjobs: Arc<Informer<CronJob>>,
    pub daemonsets: Arc<Informer<DaemonSet>>,
    pub statefulsets: Arc<Informer<StatefulSet>>,
    pub controllerrevisions: Arc<Informer<ControllerRevision>>,
    pub pvcs: Arc<Informer<PersistentVolumeClaim>>,
    pub pvs: Arc<Informer<PersistentVolume>>,
    pub storageclasses: Arc<Informer<StorageClass>>,
}

pub struct Ctx {
    pub client: Client,
    pub config: Config,
    pub cidr: ClusterCidr,
    pub events: EventSink,
    pub inf: Informers,
}

impl Ctx {
    pub fn new(
        client: Client,
        config: Config,
        identity: String,
        cidr: ClusterCidr,
        stop: &Stop,
        tasks: &mut JoinSet<()>,
    ) -> Ctx {
        let (events, publisher) = events::channel(client.clone(), identity);
        tasks.spawn(publisher.run(stop.clone()));
        let inf = Informers {
            pods: Informer::new(Api::all(client.clone())),
            replicasets: Informer::new(Api::all(client.clone())),
            rcs: Informer::new(Api::all(client.clone())),
            deployments: Informer::new(Api::all(client.clone())),
            services: Informer::new(Api::all(client.clone())),
            nodes: Informer::new(Api::all(client.clone())),
            namespaces: Informer::new(Api::all(client.clone())),
            jobs: Informer::new(Api::all(client.clone())),
            cronjobs: Informer::new(Api::all(client.clone())),
            daemonsets: Informer::new(Api::all(client.clone())),
            statefulsets: Informer::new(Api::all(client.clone())),
            controllerrevisions: Informer::new(Api::all(client.clone())),
            pvcs: Informer::new(Api::all(client.clone())),
            pvs: Informer::new(Api::all(client.clone())),
            storageclasses: Informer::new(Api::all(client.clone())),
        };
        Ctx { client, config, cidr, events, inf }
    }

    /// Waits until every shared informer has its first list; false if stopped first. Controllers
    /// start only then: kube-runtime's store readiness wakes just one waiter (see
    /// `informer::wait_ready`), so a controller must not be the one waiting on it.
    pub async fn informers_ready(&self, stop: &Stop) -> bool {
        let i = &self.inf;
        let all = async {
            wait_ready(&i.pods.store()).await;
            wait_ready(&i.replicasets.store()).await;
            wait_ready(&i.rcs.store()).await;
            wait_ready(&i.deployments.store()).await;
            wait_ready(&i.services.store()).await;
            wait_ready(&i.nodes.store()).await;
            wait_ready(&i.namespaces.store()).await;
            wait_ready(&i.jobs.store()).await;
            wait_ready(&i.cronjobs.store()).await;
            wait_ready(&i.daemonsets.store()).await;
            wait_ready(&i.statefulsets.store()).await;
            wait_ready(&i.controllerrevisions.store()).await;
            wait_ready(&i.pvcs.store()).await;
            wait_ready(&i.pvs.store()).await;
            wait_ready(&i.storageclasses.store()).await;
        };
        tokio::select! {
            _ = stop.clone().wait() => false,
            _ = all => true,
        }
    }

    /// Builds every enabled controller (subscribing to the informers), then starts the informers.
    pub fn start_controllers(self: &Arc<Self>, stop: &Stop, tasks: &mut JoinSet<()>) {
        let c = &self.config;
        let wq = &c.workqueue;
        if c.enabled("replicaset") {
            tasks.spawn(
                WORKQUEUE.scope(wq.clone(), crate::replicas::run::<ReplicaSet>(self.clone(), stop.clone())),
            );
        }
        if c.enabled("replicationcontroller") {
            tasks.spawn(
                WORKQUEUE.scope(
                    wq.clone(),
                    crate::replicas::run::<ReplicationController>(self.clone(), stop.clone()),
                ),
            );
        }
        if c.enabled("deployment") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::deployment::run(self.clone(), stop.clone())));
        }
        if c.enabled("daemonset") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::daemonset::run(self.clone(), stop.clone())));
        }
        if c.enabled("statefulset") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::statefulset::run(self.clone(), stop.clone())));
        }
        if c.enabled("persistentvolume-binder") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::volume::run(self.clone(), stop.clone())));
        }
        if c.enabled("endpoint") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::endpoints::run(self.clone(), stop.clone())));
        }
        if c.enabled("endpointslice") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::endpointslice::run(self.clone(), stop.clone())));
        }
        if c.enabled("disruption") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::disruption::run(self.clone(), stop.clone())));
        }
        if c.enabled("resourcequota") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::resourcequota::run(self.clone(), stop.clone())));
        }
        if c.enabled("garbagecollector") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::gc::run(self.clone(), stop.clone())));
        }
        if c.enabled("namespace") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::namespace::run(self.clone(), stop.clone())));
        }
        if c.enabled("serviceaccount") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::serviceaccount::run(self.clone(), stop.clone())));
        }
        if c.enabled("nodeipam") && c.allocate_node_cidrs {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::nodeipam::run(self.clone(), stop.clone())));
        }
        if c.enabled("horizontalpodautoscaling") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::hpa::run(self.clone(), stop.clone())));
        }
        if c.enabled("nodelifecycle") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::nodelifecycle::run(self.clone(), stop.clone())));
        }
        if c.enabled("job") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::job::run(self.clone(), stop.clone())));
        }
        if c.enabled("csrsigning") && c.cluster_signing.is_some() {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::csrsigning::run(self.clone(), stop.clone())));
        }
        if c.enabled("ttl-after-finished") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::ttlafterfinished::run(self.clone(), stop.clone())));
        }
        if c.enabled("cronjob") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::cronjob::run(self.clone(), stop.clone())));
        }
        if c.enabled("podgc") {
            tasks.spawn(WORKQUEUE.scope(wq.clone(), crate::podgc::run(self.clone(), stop.clone())));
        }
        let i = &self.inf;
        tasks.spawn(i.pods.clone().run(stop.clone()));
        tasks.spawn(i.replicasets.clone().run(stop.clone()));
        tasks.spawn(i.rcs.clone().run(stop.clone()));
        tasks.spawn(i.deployments.clone().run(stop.clone()));
        tasks.spawn(i.services.clone().run(stop.clone()));
        tasks.spawn(i.nodes.clone().run(stop.clone()));
        tasks.spawn(i.namespaces.clone().run(stop.clone()));
        tasks.spawn(i.jobs.clone().run(stop.clone()));
        tasks.spawn(i.cronjobs.clone().run(stop.clone()));
        tasks.spawn(i.daemonsets.clone().run(stop.clone()));
        tasks.spawn(i.statefulsets.clone().run(stop.clone()));
        tasks.spawn(i.controllerrevisions.clone().run(stop.clone()));
        tasks.spawn(i.pvcs.clone().run(stop.clone()));
        tasks.spawn(i.pvs.clone().run(stop.clone()));
        tasks.spawn(i.storageclasses.clone().run(stop.clone()));
    }
}

/// Runs one controller until `stop`: its triggers (see `queue::Controller`) go through the
/// workqueue accounting into kube-runtime's `applier`, as kube-runtime's own `Controller::run` does
/// (the default watch backoff, each reconcile on its own task, `concurrency` at once, one
/// reconcile per key at a time); failed reconciles are retried after a short backoff (conflicts
/// sooner), and in-flight reconciles finish before it returns.
pub async fn drive<K, C, Fut>(
    name: &'static str,
    controller: Controller<K>,
    stop: Stop,
    concurrency: u16,
    reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    Fut: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let stopped = stop.clone();
    let wq = WORKQUEUE.try_with(WorkqueueMetrics::clone).unwrap_or_default();
    let m = Arc::new(QueueMetrics::new(&wq, name));
    let waiting = Arc::new(Waiting::default());
    let processing = Arc::new(Processing::default());

    let (m1, w1) = (m.clone(), waiting.clone());
    let queue = StreamBackoff::new(controller.triggers, watcher::DefaultBackoff::default())
        .take_until(stop.clone().wait())
        .inspect(move |r| {
            if let Ok(req) = r {
                if w1.add(key_of(&req.obj_ref), Instant::now()) {
                    m1.adds.inc();
                    m1.depth.inc();
                }
            }
        });

    let (m2, w2, p2) = (m.clone(), waiting.clone(), processing.clone());
    let mut reconcile = reconcile;
    let timed = move |obj: Arc<K>, c: Arc<C>| {
        let started = Instant::now();
        match w2.take(&key_of(&ObjectRef::from_obj(&*obj))) {
            Some(added) => m2.taken(added, started),
            // A requeue the reconcile or the error policy asked for: kube-runtime's scheduler held
            // it (client-go's `AddAfter`), so it is an add, but its wait is not ours to time.
            None => {
                m2.adds.inc();
            }
        }
        let running = Running { processing: p2.clone(), id: p2.start(started) };
        let work = m2.work.clone();
        let fut = reconcile(obj, c);
        CancelableJoinHandle::spawn(
            async move {
                let r = fut.await;
                work.observe(started.elapsed().as_secs_f64());
                drop(running);
                r
            }
            .in_current_span(),
            &tokio::runtime::Handle::current(),
        )
    };
    let m3 = m.clone();
    let error_policy = move |_obj: Arc<K>, err: &ReconcileError, _ctx: Arc<C>| {
        m3.retries.inc();
        match err {
            ReconcileError::Api(e) if crate::util::is_conflict(e) => {
                Action::requeue(Duration::from_millis(200))
            }
            _ => Action::requeue(Duration::from_secs(2)),
        }
    };
    let (m4, w4) = (m.clone(), waiting.clone());
    let applied = controller::applier(
        timed,
        error_policy,
        ctx,
        controller.reader,
        queue,
        controller::Config::default().concurrency(concurrency),
    )
    .for_each(move |r| {
        match r {
            // Taken from the queue and found gone: client-go's worker gets such a key too.
            Err(controller::Error::ObjectNotFound(gone)) => {
                if let Some(added) = w4.take(&(gone.namespace.clone(), gone.name.clone())) {
                    m4.taken(added, Instant::now());
                }
            }
            Err(e) if !stopped.is_stopped() => {
                tracing::debug!(controller = name, error = %e, "reconcile failed")
            }
            _ => {}
        }
        futures::future::ready(())
    });
    // client-go refreshes these two every 500ms.
    let gauges = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let (sum, longest) = processing.unfinished(Instant::now());
            m.unfinished.set(sum);
            m.longest.set(longest);
        }
    };
    tokio::select! {
        _ = applied => {}
        _ = gauges => {}
    }
    m.unfinished.set(0.0);
    m.longest.set(0.0);
}

/// One controller's workqueue metrics.
struct QueueMetrics {
    adds: Counter,
    depth: Gauge,
    queue_duration: Histogram,
    work: Histogram,
    retries: Counter,
    unfinished: Gauge<f64, AtomicU64>,
    longest: Gauge<f64, AtomicU64>,
}

impl QueueMetrics {
    fn new(wq: &WorkqueueMetrics, name: &str) -> QueueMetrics {
        let label = NameLabels { name: name.into() };
        QueueMetrics {
            adds: wq.adds.get_or_create_owned(&label),
            depth: wq.depth.get_or_create_owned(&label),
            queue_duration: wq.queue_duration.get_or_create_owned(&label),
            work: wq.work_duration.get_or_create_owned(&label),
            retries: wq.retries.get_or_create_owned(&label),
            unfinished: wq.unfinished.get_or_create_owned(&label),
            longest: wq.longest.get_or_create_owned(&label),
        }
    }

    /// A waiting item handed to a reconcile (client-go's `get`).
    fn taken(&self, added: Instant, now: Instant) {
        self.depth.dec();
        self.queue_duration.observe(now.saturating_duration_since(added).as_secs_f64());
    }
}

/// A reconcile in progress; ends its entry in `Processing` however the task ends.
struct Running {
    processing: Arc<Processing>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.processing.done(self.id);
    }
}
