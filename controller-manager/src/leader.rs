//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` package does.
//!
//! - Acquire: create the Lease, or take it over when its holder is empty or the record has not changed
//!   for a whole `lease_duration` as *we* observed it (local observation time, not the holder's clock,
//!   exactly to be immune to clock skew), bumping `leaseTransitions`.
//! - Renew: every `retry_period` write a fresh `renewTime`; if no renewal succeeded within
//!   `renew_deadline`, leadership is lost.
//! - Every write is a PUT carrying the resourceVersion we read: a 409 means someone else won.
//! - Release (client-go's `ReleaseOnCancel`): clear the holder so a standby takes over at once.
//!
//! Reusable by any component: the scheduler uses it for `kube-system/kube-scheduler`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Lease request failed for a reason other than losing a race.
    #[error("lease {0}: {1}")]
    Api(String, #[source] kube::Error),
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// `<hostname>_<uuid>`, upstream's identity form.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

struct Observed {
    /// The (holder, renewTime, transitions) we last saw, and when we first saw it.
    record: Option<(Option<String>, Option<String>, Option<i32>)>,
    at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Mutex<Observed>,
}

enum Attempt {
    Leading,
    Standby,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        let api = Api::namespaced(client, &config.namespace);
        LeaderElector { api, config, observed: Mutex::new(Observed { record: None, at: Instant::now() }) }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Blocks until this instance holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired lease");
                    return Ok(());
                }
                Ok(Attempt::Standby) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews the lease until a renewal cannot succeed within the renew deadline; then returns
    /// (leadership lost). Callers select this against their own shutdown.
    pub async fn keep_renewing(&self) {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_renew = Instant::now(),
                Ok(Attempt::Standby) => {
                    tracing::error!(lease = %self.config.name, "lease taken by another holder");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                tracing::error!(lease = %self.config.name, "failed to renew the lease within the renew deadline");
                return;
            }
        }
    }

    /// Gives the lease up if we hold it (holder cleared, duration 1s), so a standby takes over now.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else { return };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.config.name, "released lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the lease failed"),
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, Error> {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let me = self.config.identity.clone();
        let existing = self.api.get_opt(&self.config.name).await.map_err(|e| self.err(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(e) if crate::util::is_conflict(&e) => Ok(Attempt::Standby),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record =
            (holder.clone(), spec.renew_time.as_ref().map(|t| t.0.to_string()), spec.lease_transitions);
        let held_by_me = holder.as_deref() == Some(me.as_str());
        {
            let mut obs = self.observed.lock().await;
            if obs.record.as_ref() != Some(&record) {
                obs.record = Some(record);
                obs.at = Instant::now();
            }
            let their_duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(1) as u64);
            if !held_by_me && holder.is_some() && obs.at.elapsed() < their_duration {
                return Ok(Attempt::Standby);
            }
        }
        if held_by_me {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(secs);
        } else {
            spec.holder_identity = Some(me);
            spec.lease_duration_seconds = Some(secs);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(e) if crate::util::is_conflict(&e) => Ok(Attempt::Standby),
            Err(e) => Err(self.err(e)),
        }
    }

    fn err(&self, e: kube::Error) -> Error {
        Error::Api(format!("{}/{}", self.config.namespace, self.config.name), e)
    }
}

/// Up to 20% extra, as client-go's `wait.Jitter(retryPeriod, 1.2)` spreads standbys.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::random::<f64>() * 0.2)
}
