//! What all controllers of one run share: the client, the config, the event sink and the shared
//! informers; and the wiring that starts each enabled controller as an owned task.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::{self, Action, Controller};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use crate::events::{self, EventSink};
use crate::informer::{wait_ready, Informer};
use crate::nodeipam::ClusterCidr;
use crate::{Config, Stop};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// client-go's workqueue metrics, per controller name, measured where kube-runtime's controller
/// meets our code (its queue itself is hidden): `workqueue_adds_total` counts items the queue hands
/// to a reconcile (kube-runtime, like client-go's queue, folds repeated triggers of one object into
/// one item), `workqueue_work_duration_seconds` times each reconcile, `workqueue_retries_total`
/// counts failed reconciles put back with a backoff (client-go's `AddRateLimited`), and
/// `workqueue_depth` is the items taken and not yet done. `workqueue_queue_duration_seconds` (time
/// waiting in the queue) is registered with upstream's buckets but stays empty: that wait happens
/// inside kube-runtime, where we cannot see it.
#[derive(Clone, Debug)]
pub struct WorkqueueMetrics {
    adds: Family<NameLabels, Counter>,
    depth: Family<NameLabels, Gauge>,
    queue_duration: Family<NameLabels, Histogram, fn() -> Histogram>,
    work_duration: Family<NameLabels, Histogram, fn() -> Histogram>,
    retries: Family<NameLabels, Counter>,
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
        }
    }
}

impl WorkqueueMetrics {
    /// Adds the five families to a registry (the one `/metrics` serves).
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

/// Runs a kube-runtime controller until `stop`: failed reconciles are retried after a short
/// backoff (conflicts sooner), and in-flight reconciles finish before it returns.
pub async fn drive<K, C, Fut>(
    name: &'static str,
    controller: Controller<K>,
    stop: Stop,
    concurrency: u16,
    reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Unpin + Eq + Hash + Clone,
    Fut: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let stopped = stop.clone();
    let wq = WORKQUEUE.try_with(WorkqueueMetrics::clone).unwrap_or_default();
    let label = NameLabels { name: name.into() };
    let (adds, depth, work) = (
        wq.adds.get_or_create_owned(&label),
        wq.depth.get_or_create_owned(&label),
        wq.work_duration.get_or_create_owned(&label),
    );
    let retries = wq.retries.get_or_create_owned(&label);
    drop(wq.queue_duration.get_or_create(&label));
    let mut reconcile = reconcile;
    let timed = move |obj: Arc<K>, c: Arc<C>| {
        adds.inc();
        depth.inc();
        let (started, depth, work) = (std::time::Instant::now(), depth.clone(), work.clone());
        let fut = reconcile(obj, c);
        async move {
            let r = fut.await;
            work.observe(started.elapsed().as_secs_f64());
            depth.dec();
            r
        }
    };
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop.wait())
        .run(
            timed,
            move |_obj, err, _ctx| {
                retries.inc();
                match err {
                    ReconcileError::Api(e) if crate::util::is_conflict(e) => {
                        Action::requeue(Duration::from_millis(200))
                    }
                    _ => Action::requeue(Duration::from_secs(2)),
                }
            },
            ctx,
        )
        .for_each(|r| {
            if let Err(e) = r {
                if !stopped.is_stopped() {
                    tracing::debug!(controller = name, error = %e, "reconcile failed");
                }
            }
            futures::future::ready(())
        })
        .await;
}
