//! kplane's controller-manager: kube-runtime controllers that talk to the cluster only through the API.
//!
//! Layout:
//! - [`run`] (this file): leader election, every enabled controller while leading; a lost lease
//!   stops them all and campaigns again; only shutdown returns.
//! - `leader`: Lease-based leader election (also used by the scheduler).
//! - `informer`: one shared watch + cache per resource, fanned out to controllers (deletions included).
//! - `expectations`: upstream's ControllerExpectations idea, so a lagging cache never double-creates.
//! - `replicas`: the ReplicaSet and ReplicationController controllers (one mechanism, two kinds).
//! - `deployment/`: the Deployment controller (rolling update, recreate, revisions, conditions).
//! - `daemonset/`: the DaemonSet controller (one pod per eligible node, rolling update with
//!   maxUnavailable/maxSurge, ControllerRevision history).
//! - `statefulset/`: the StatefulSet controller (ordinals, ordered/parallel, rolling update, claims).
//! - `history`: ControllerRevision history (hash, create, claim, truncate) for StatefulSets and DaemonSets.
//! - `volume`: the persistentvolume-binder with the built-in `kplane.io/hostpath` provisioner.
//! - `endpoints`, `endpointslice`: Service → Endpoints / EndpointSlices.
//! - `job/`: the Job controller (completions, Indexed, back-off, failure/success policies, suspend);
//!   `ttlafterfinished`: deletes finished Jobs after `ttlSecondsAfterFinished`.
//! - `disruption`: PodDisruptionBudget status (expected/healthy pods, disruptions allowed).
//! - `resourcequota`: ResourceQuota status (`status.hard`, `status.used`).
//! - `gc`: the garbage collector (owner → dependents graph; background, foreground, orphan).
//! - `cronjob/`: the CronJob controller (`schedule`: cron parsing and upstream's missed-schedule
//!   arithmetic, in the CronJob's time zone).
//! - `podgc`: the pod garbage collector (terminated pods over the threshold, orphans of deleted
//!   nodes, terminating pods on out-of-service nodes, unscheduled terminating pods).
//! - `namespace`, `serviceaccount`, `nodeipam`, `nodelifecycle`: the smaller controllers.
//! - `hpa/`: the HorizontalPodAutoscaler controller (metrics.k8s.io, scale subresource, behavior).
//! - `events`: event recording off the reconcile path; `util`: pure helpers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

mod context;
mod cronjob;
pub mod csrsigning;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
/// The most addresses an Endpoints object holds (upstream's `maxCapacity`); the rest are only in
/// the EndpointSlices, and the object is annotated `endpoints.kubernetes.io/over-capacity`.
pub use endpoints::MAX_CAPACITY as ENDPOINTS_MAX_CAPACITY;
mod endpointslice;
mod events;
mod expectations;
mod gc;
mod history;
mod hpa;
mod informer;
mod job;
pub mod leader;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod podgc;
mod queue;
pub mod recorder;
mod replicas;
mod resourcequota;
mod serviceaccount;
mod statefulset;
mod ttlafterfinished;
mod util;
mod volume;

use context::Ctx;
pub use context::WorkqueueMetrics;

/// The controller-manager's settings, named after kube-controller-manager's flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--controllers`: `*` enables all; `name` enables one; `-name` disables one.
    pub controllers: Vec<String>,
    /// `--leader-elect`.
    pub leader_elect: bool,
    /// Where the controllers' workqueue metrics go (registered by whoever serves `/metrics`).
    pub workqueue: WorkqueueMetrics,
    /// `--leader-elect-lease-duration`.
    pub leader_elect_lease_duration: Duration,
    /// `--leader-elect-renew-deadline`.
    pub leader_elect_renew_deadline: Duration,
    /// `--leader-elect-retry-period`.
    pub leader_elect_retry_period: Duration,
    /// `--leader-elect-resource-namespace`.
    pub leader_elect_resource_namespace: String,
    /// `--leader-elect-resource-name`.
    pub leader_elect_resource_name: String,
    /// The holder identity; `None` means `<hostname>_<uuid>`.
    pub identity: Option<String>,
    /// `--concurrent-replicaset-syncs` (also used for replication controllers).
    pub concurrent_replicaset_syncs: u16,
    /// `--concurrent-deployment-syncs`.
    pub concurrent_deployment_syncs: u16,
    /// `--concurrent-daemonset-syncs`.
    pub concurrent_daemonset_syncs: u16,
    /// `--concurrent-statefulset-syncs`.
    pub concurrent_statefulset_syncs: u16,
    /// Where provisioned hostPath-like volumes live (`<data dir>/volumes`); only written into PVs.
    pub volume_dir: String,
    /// `--concurrent-endpoint-syncs`.
    pub concurrent_endpoint_syncs: u16,
    /// `--concurrent-service-endpoint-syncs` (EndpointSlices).
    pub concurrent_service_endpoint_syncs: u16,
    /// `--concurrent-gc-syncs`.
    pub concurrent_gc_syncs: u16,
    /// `--concurrent-namespace-syncs`.
    pub concurrent_namespace_syncs: u16,
    /// `--concurrent-job-syncs`.
    pub concurrent_job_syncs: u16,
    /// `--concurrent-ttl-after-finished-syncs`.
    pub concurrent_ttl_after_finished_syncs: u16,
    /// `--max-endpoints-per-slice`.
    pub max_endpoints_per_slice: usize,
    /// `--allocate-node-cidrs`.
    pub allocate_node_cidrs: bool,
    /// `--cluster-cidr`.
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`.
    pub node_cidr_mask_size: u8,
    /// `--node-monitor-grace-period`.
    pub node_monitor_grace_period: Duration,
    /// `--node-monitor-period`.
    pub node_monitor_period: Duration,
    /// `--resource-quota-sync-period`: the full recount of every quota.
    pub resource_quota_sync_period: Duration,
    /// `--concurrent-resource-quota-syncs`.
    pub concurrent_resource_quota_syncs: u16,
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`: the scale-down window of HPAs whose
    /// behavior sets none.
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// `--concurrent-cron-job-syncs`.
    pub concurrent_cron_job_syncs: u16,
    /// `--terminated-pod-gc-threshold`: terminated pods kept before the oldest are deleted (0: off).
    pub terminated_pod_gc_threshold: i32,
    /// `--cluster-signing-cert-file`/`--cluster-signing-key-file`, read: the CA the csrsigning
    /// controller signs approved `kubernetes.io/kube-apiserver-client` requests with (None: off).
    pub cluster_signing: Option<csrsigning::ClusterSigning>,
    /// `--cluster-signing-duration`: the longest validity of a signed certificate.
    pub cluster_signing_duration: Duration,
    /// How long a pod's node must stay missing before the pod GC deletes it (upstream's fixed 40s
    /// `quarantineTime`; a field so tests can shorten it).
    pub podgc_quarantine: Duration,
    /// How often the pod GC looks (upstream's fixed 20s `gcCheckPeriod`).
    pub podgc_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            controllers: vec!["*".into()],
            leader_elect: true,
            workqueue: WorkqueueMetrics::default(),
            leader_elect_lease_duration: Duration::from_secs(15),
            leader_elect_renew_deadline: Duration::from_secs(10),
            leader_elect_retry_period: Duration::from_secs(2),
            leader_elect_resource_namespace: "kube-system".into(),
            leader_elect_resource_name: "kube-controller-manager".into(),
            identity: None,
            concurrent_replicaset_syncs: 5,
            concurrent_deployment_syncs: 5,
            concurrent_daemonset_syncs: 2,
            concurrent_statefulset_syncs: 5,
            volume_dir: "/var/lib/kplane/volumes".into(),
            concurrent_endpoint_syncs: 5,
            concurrent_service_endpoint_syncs: 5,
            concurrent_gc_syncs: 20,
            concurrent_namespace_syncs: 10,
            concurrent_job_syncs: 5,
            concurrent_ttl_after_finished_syncs: 5,
            max_endpoints_per_slice: 100,
            allocate_node_cidrs: true,
            cluster_cidr: "127.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            resource_quota_sync_period: Duration::from_secs(300),
            concurrent_resource_quota_syncs: 5,
            horizontal_pod_autoscaler_sync_period: Duration::from_secs(15),
            horizontal_pod_autoscaler_downscale_stabilization: Duration::from_secs(300),
            concurrent_cron_job_syncs: 5,
            terminated_pod_gc_threshold: 12500,
            cluster_signing: None,
            cluster_signing_duration: Duration::from_secs(365 * 24 * 3600),
            podgc_quarantine: Duration::from_secs(40),
            podgc_period: Duration::from_secs(20),
        }
    }
}

impl Config {
    /// Is the controller `name` enabled by `--controllers`?
    pub fn enabled(&self, name: &str) -> bool {
        let minus = format!("-{name}");
        if self.controllers.contains(&minus) {
            return false;
        }
        self.controllers.iter().any(|c| c == "*" || c == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// How long a graceful stop waits for the controllers' in-flight work before aborting the rest.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A cloneable "stop now" signal shared by every task of one controller-manager run.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub fn new() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    /// Resolves once stop has been signalled (or the sender is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs the controller-manager until `shutdown` resolves. With `leader_elect`, it campaigns for the
/// leader lease, runs every enabled controller while leading, and when the lease is lost (the renew
/// deadline passed, say while the store was unreachable, or another holder took it) stops every
/// controller at once, logs `leaderelection lost` and campaigns again; once re-elected the
/// controllers start over from fresh caches. A lost lease never ends `run`: only `shutdown` does,
/// which stops the controllers gracefully and releases the lease.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let cidr = nodeipam::parse_cidr(&config.cluster_cidr, config.node_cidr_mask_size).map_err(Error::Config)?;
    let mut shutdown = Box::pin(shutdown);
    let identity = config.identity.clone().unwrap_or_else(leader::default_identity);
    if !config.leader_elect {
        let running = Running::start(&client, &config, &identity, &cidr);
        shutdown.await;
        running.stop().await;
        return Ok(());
    }
    let lease = leader::LeaseConfig {
        namespace: config.leader_elect_resource_namespace.clone(),
        name: config.leader_elect_resource_name.clone(),
        identity: identity.clone(),
        lease_duration: config.leader_elect_lease_duration,
        renew_deadline: config.leader_elect_renew_deadline,
        retry_period: config.leader_elect_retry_period,
    };
    lease.validate().map_err(Error::Config)?;
    let le = leader::LeaderElector::new(client.clone(), lease);
    loop {
        let Some(since) = le.campaign(&mut shutdown).await else { return Ok(()) };
        tracing::info!(%identity, "controller-manager leading; starting controllers");
        let running = Running::start(&client, &config, &identity, &cidr);
        match le.lead(since, &mut shutdown).await {
            leader::Term::Shutdown => {
                running.stop().await;
                le.release().await;
                return Ok(());
            }
            leader::Term::Lost => {
                running.abort().await;
                tracing::error!(
                    %identity,
                    lease = %config.leader_elect_resource_name,
                    "leaderelection lost: every controller stopped; campaigning again"
                );
            }
        }
    }
}

/// One term's controllers: every task (informers, controllers, event publisher) lives in one
/// `JoinSet`, with fresh caches each term.
struct Running {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    fn start(client: &kube::Client, config: &Config, identity: &str, cidr: &nodeipam::ClusterCidr) -> Running {
        let (stop_tx, stop) = Stop::new();
        let mut tasks = JoinSet::new();
        let ctx = Arc::new(Ctx::new(
            client.clone(),
            config.clone(),
            identity.to_string(),
            cidr.clone(),
            &stop,
            &mut tasks,
        ));
        ctx.start_controllers(&stop, &mut tasks);
        Running { stop: stop_tx, tasks }
    }

    /// Graceful: in-flight reconciles finish, then every task is joined; a task still running
    /// after [`STOP_GRACE`] is aborted (as a process exit would end it), so a shutdown never
    /// hangs on one task that missed the signal.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let joined =
            tokio::time::timeout(STOP_GRACE, async { while self.tasks.join_next().await.is_some() {} }).await;
        if joined.is_err() {
            tracing::warn!(tasks = self.tasks.len(), grace = ?STOP_GRACE, "controllers still running after the stop grace; aborting them");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }

    /// At once (the lease is lost, a standby may lead soon): every task is cancelled at its next
    /// await, as a process exit would, and joined, so nothing of this term acts after it returns.
    async fn abort(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped: tells whether an aborted task was really ended.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_graceful_stop_ends_a_task_that_misses_the_signal_after_the_grace() {
        let (stop_tx, stop) = Stop::new();
        let mut tasks = JoinSet::new();
        let honours = Arc::new(AtomicBool::new(false));
        let (flag, s) = (honours.clone(), stop.clone());
        tasks.spawn(async move {
            s.wait().await;
            flag.store(true, Ordering::SeqCst);
        });
        let ignored = Arc::new(AtomicBool::new(false));
        let guard = Dropped(ignored.clone());
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        let started = std::time::Instant::now();
        Running { stop: stop_tx, tasks }.stop().await;
        assert!(honours.load(Ordering::SeqCst), "the task that waits for stop ended by itself");
        assert!(ignored.load(Ordering::SeqCst), "the task that ignores stop was aborted");
        assert!(started.elapsed() >= STOP_GRACE, "aborted only after the grace");
    }
}
