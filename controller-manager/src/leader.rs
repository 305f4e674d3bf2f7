//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` package does.
//!
//! - Acquire: create the Lease, or take it over when its holder is empty or the record has not changed
//!   for a whole `lease_duration` as *we* observed it (local observation time, not the holder's clock,
//!   exactly to be immune to clock skew), bumping `leaseTransitions`.
//! - Renew: every `retry_period` write a fresh `renewTime`; if no renewal succeeded within
//!   `renew_deadline`, leadership is lost.
//! - Every write is a PUT carrying the resourceVersion we read: a 409 means someone else won.
//! - Release (client-go's `ReleaseOnCancel`): clear the holder so a standby takes over at once.
//! - Standing by, a candidate watches the Lease (GET polling every jittered retry period is the
//!   fallback when the watch fails or ends), so it notes each record change as it happens, and
//!   tries to acquire right when the record it observed expires, not up to a retry period later:
//!   a crashed holder is replaced within the lease duration of its last renewal.
//!
//! - A lost lease is one term's end, not the process's: the caller stops that term's work and
//!   campaigns again ([`LeaderElector::campaign`], [`LeaderElector::lead`], [`Term`]).
//!
//! Reusable by any component: the scheduler uses it for `kube-system/kube-scheduler`.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event, EventType, Reporter};

use crate::recorder::Recorder;
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

impl LeaseConfig {
    /// client-go's checks: the renew deadline below the lease duration, the jittered retry period
    /// (x1.2) below the renew deadline; otherwise a leader could lose the lease without noticing
    /// before a standby takes it over.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("leaseDuration must be greater than renewDeadline".into());
        }
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER) {
            return Err("renewDeadline must be greater than retryPeriod*JitterFactor (1.2)".into());
        }
        Ok(())
    }
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

/// (holder, renewTime, leaseTransitions): what client-go compares to tell a record changed.
type Record = (Option<String>, Option<String>, Option<i32>);

struct Observed {
    /// The record we last saw, and when we first saw it.
    record: Option<Record>,
    at: Instant,
    /// The holder's `leaseDurationSeconds` in that record: it expires at `at + duration`.
    duration: Duration,
    /// The resourceVersion we last read, where a standby's watch starts.
    version: Option<String>,
}

/// How a Lease read (a GET or a watch event) left our observation.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Another holder's record: wait until it expires at this instant.
    HeldUntil(Instant),
    /// No holder, or a record naming us (a term we lost): try to acquire now.
    Free,
}

pub struct LeaderElector {
    api: Api<Lease>,
    recorder: Recorder,
    config: LeaseConfig,
    observed: Mutex<Observed>,
}

enum Attempt {
    Leading,
    Standby,
}

/// How a term of leadership ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// The caller's shutdown resolved: stop gracefully and [`release`](LeaderElector::release).
    Shutdown,
    /// The lease was lost (renew deadline passed, or another holder has it): stop all work at
    /// once, then [`campaign`](LeaderElector::campaign) again.
    Lost,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        let api = Api::namespaced(client.clone(), &config.namespace);
        // Upstream's events come from the component, which names its lease after itself.
        let reporter = Reporter { controller: config.name.clone(), instance: Some(config.identity.clone()) };
        let recorder = Recorder::new(client, reporter);
        let duration = config.lease_duration;
        LeaderElector {
            api,
            recorder,
            config,
            observed: Mutex::new(Observed { record: None, at: Instant::now(), duration, version: None }),
        }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Campaigns until this instance holds the lease, or `shutdown` resolves first (then `None`).
    /// Returns when the winning attempt started: the renew deadline counts from there (earlier than
    /// when the holder's record changed for anyone else, so we always give up before a standby may
    /// take over). Never gives up on errors: a store or API that is unreachable is retried with an
    /// exponential backoff from the retry period up to the lease duration, and every attempt is
    /// bounded by the renew deadline, so a stalled connection cannot hang the campaign. Between
    /// attempts it [stands by](Self::stand_by): the next attempt comes when the holder's record
    /// expires as we observed it.
    pub async fn campaign(&self, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Option<Instant> {
        let mut failures: u32 = 0;
        loop {
            let started = Instant::now();
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew(false));
            let wait: Option<Duration> = tokio::select! {
                biased;
                _ = &mut *shutdown => return None,
                r = attempt => match r {
                    Ok(Ok(Attempt::Leading)) => {
                        tracing::info!(lease = %self.lease(), identity = %self.config.identity, "successfully acquired lease");
                        self.record_event("BecameLeader", "became leader");
                        return Some(started);
                    }
                    Ok(Ok(Attempt::Standby)) => {
                        failures = 0;
                        None
                    }
                    Ok(Err(e)) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(lease = %self.lease(), error = %e, "error retrieving or updating the lease; retrying");
                        Some(self.backoff(failures))
                    }
                    Err(_) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(lease = %self.lease(), timeout = ?self.config.renew_deadline, "lease request timed out; retrying");
                        Some(self.backoff(failures))
                    }
                },
            };
            match wait {
                Some(wait) => tokio::select! {
                    biased;
                    _ = &mut *shutdown => return None,
                    () = tokio::time::sleep(jittered(wait)) => {}
                },
                None => tokio::select! {
                    biased;
                    _ = &mut *shutdown => return None,
                    () = self.stand_by() => {}
                },
            }
        }
    }

    /// Leads from `since` (what [`campaign`](Self::campaign) returned): renews every retry period
    /// until `shutdown` resolves ([`Term::Shutdown`]) or no renewal succeeded within the renew
    /// deadline, or another holder has the lease ([`Term::Lost`]). A renewal that has not
    /// answered by the deadline counts as failed: leadership is then lost on time even when the
    /// store hangs rather than refuses.
    pub async fn lead(&self, since: Instant, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Term {
        let mut last_renew = since;
        loop {
            tokio::select! {
                biased;
                _ = &mut *shutdown => return Term::Shutdown,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let deadline = last_renew + self.config.renew_deadline;
            let started = Instant::now();
            let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew(true));
            let renewed = tokio::select! {
                biased;
                _ = &mut *shutdown => return Term::Shutdown,
                r = attempt => r,
            };
            match renewed {
                Ok(Ok(Attempt::Leading)) => {
                    last_renew = started;
                    continue;
                }
                Ok(Ok(Attempt::Standby)) => {
                    tracing::error!(lease = %self.lease(), "the lease is held by another candidate");
                    self.record_event("StoppedLeading", "stopped leading");
                    return Term::Lost;
                }
                Ok(Err(e)) => tracing::warn!(lease = %self.lease(), error = %e, "failed to renew the lease"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                tracing::error!(lease = %self.lease(), renew_deadline = ?self.config.renew_deadline, "failed to renew the lease within the renew deadline");
                self.record_event("StoppedLeading", "stopped leading");
                return Term::Lost;
            }
        }
    }

    /// Waits, as a standby, until the next acquire attempt is due: when the record we observed
    /// expires (plus a few ms of jitter to spread standbys), or at once when the record is freed.
    /// Record changes are observed as they happen through a watch of the Lease from the
    /// resourceVersion we last read; when the watch cannot be opened (bounded by the renew
    /// deadline), fails or ends, it falls back to client-go's polling: the next attempt (a GET)
    /// after a jittered retry period, or at expiry if sooner. A watch that stalls silently only
    /// makes the attempt at expiry read a newer record and stand by again: the GET decides.
    async fn stand_by(&self) {
        let mut expiry = match self.expiry().await {
            Seen::Free => return,
            Seen::HeldUntil(at) => at,
        };
        let poll_at = Instant::now() + jittered(self.config.retry_period);
        let version = self.observed.lock().await.version.clone();
        let opened = match version {
            Some(version) => {
                let params = WatchParams::default()
                    .fields(&format!("metadata.name={}", self.config.name))
                    .timeout(WATCH_TIMEOUT_SECS);
                let opening = tokio::time::timeout_at(expiry, self.api.watch(&params, &version));
                match tokio::time::timeout(self.config.renew_deadline, opening).await {
                    Ok(Ok(Ok(stream))) => Some(stream),
                    // Expired while opening: try now.
                    Ok(Err(_)) => return,
                    Ok(Ok(Err(e))) => {
                        tracing::debug!(lease = %self.lease(), error = %e, "watching the lease failed; polling");
                        None
                    }
                    Err(_) => None,
                }
            }
            None => None,
        };
        let Some(stream) = opened else {
            tokio::time::sleep_until(poll_at.min(expiry)).await;
            return;
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                () = tokio::time::sleep_until(expiry) => return,
                e = stream.next() => e,
            };
            match event {
                Some(Ok(WatchEvent::Added(lease) | WatchEvent::Modified(lease))) => {
                    match self.observe(&lease).await {
                        Seen::Free => return,
                        Seen::HeldUntil(at) => expiry = at,
                    }
                }
                Some(Ok(WatchEvent::Bookmark(_))) => {}
                // Deleted: create it now.
                Some(Ok(WatchEvent::Deleted(_))) => return,
                // The watch failed or ended (its timeout, a restart): poll from here; the next
                // stand-by opens a new one.
                Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => {
                    let poll_at = Instant::now() + jittered(self.config.retry_period);
                    tokio::time::sleep_until(poll_at.min(expiry)).await;
                    return;
                }
            }
        }
    }

    /// When the record we observed last expires (with a few ms of jitter), or Free.
    async fn expiry(&self) -> Seen {
        let obs = self.observed.lock().await;
        match &obs.record {
            Some((Some(holder), _, _)) if *holder != self.config.identity => {
                Seen::HeldUntil(obs.at + obs.duration + small_jitter())
            }
            _ => Seen::Free,
        }
    }

    /// Notes `lease`'s record as observed now if it differs from the one we last saw (client-go's
    /// rule: the observation time is ours, never the holder's clock).
    async fn observe(&self, lease: &Lease) -> Seen {
        let default_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record: Record =
            (holder, spec.renew_time.as_ref().map(|t| t.0.to_string()), spec.lease_transitions);
        let mut obs = self.observed.lock().await;
        if obs.record.as_ref() != Some(&record) {
            obs.record = Some(record);
            obs.at = Instant::now();
        }
        obs.duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(default_secs).max(1) as u64);
        if lease.metadata.resource_version.is_some() {
            obs.version = lease.metadata.resource_version.clone();
        }
        drop(obs);
        self.expiry().await
    }

    /// The wait after `failures` failed attempts in a row: the retry period doubled each time, at
    /// most the lease duration.
    fn backoff(&self, failures: u32) -> Duration {
        let cap = self.config.lease_duration.max(self.config.retry_period);
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.config.retry_period.saturating_mul(factor).min(cap)
    }

    /// Upstream's `LeaderElection` event on the Lease (`<identity> became leader`, `<identity>
    /// stopped leading`). Best effort and off the election's path: it never delays a term's start
    /// or end, and gives up after a renew deadline (the store may be what cost us the lease).
    /// `action` tells the two apart.
    fn record_event(&self, action: &str, what: &str) {
        let event = Event {
            type_: EventType::Normal,
            reason: "LeaderElection".into(),
            note: Some(format!("{} {what}", self.config.identity)),
            action: action.into(),
            secondary: None,
        };
        let regarding = ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            namespace: Some(self.config.namespace.clone()),
            name: Some(self.config.name.clone()),
            ..Default::default()
        };
        let (recorder, limit, lease) = (self.recorder.clone(), self.config.renew_deadline, self.lease());
        tokio::spawn(async move {
            match tokio::time::timeout(limit, recorder.publish(&event, &regarding)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%lease, error = %e, "LeaderElection event"),
                Err(_) => tracing::debug!(%lease, "LeaderElection event timed out"),
            }
        });
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Gives the lease up if we hold it (holder cleared, duration 1s), so a standby takes over now.
    /// Bounded by the renew deadline: a store that does not answer never holds up a shutdown.
    pub async fn release(&self) {
        if tokio::time::timeout(self.config.renew_deadline, self.try_release()).await.is_err() {
            tracing::warn!(lease = %self.lease(), "releasing the lease timed out");
        }
    }

    async fn try_release(&self) {
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
            Ok(_) => tracing::info!(lease = %self.lease(), "released lease"),
            Err(e) => tracing::warn!(lease = %self.lease(), error = %e, "releasing the lease failed"),
        }
    }

    /// One read and one write of the Lease. `renewing`: we lead now and keep the term. Otherwise
    /// (campaigning) a record that still names us is a term we lost, and re-acquiring it starts a
    /// new one: `acquireTime` is now and `leaseTransitions` counts it, as a restarted process
    /// (with a new identity) would.
    async fn try_acquire_or_renew(&self, renewing: bool) -> Result<Attempt, Error> {
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
        let seen = self.observe(&lease).await;
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        {
            // Held by another, and not yet a whole lease duration since we saw its record change
            // (the expiry in `seen` carries a few ms of jitter; the check is on the bare duration).
            let obs = self.observed.lock().await;
            if let Seen::HeldUntil(_) = seen {
                if obs.at.elapsed() < obs.duration {
                    return Ok(Attempt::Standby);
                }
            }
        }
        if held_by_me && renewing {
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
            // Renewing, a conflict is someone touching our record (a label, say): read it again
            // before the deadline rather than step down; campaigning, it is a lost race.
            Err(e) if crate::util::is_conflict(&e) && !(renewing && held_by_me) => Ok(Attempt::Standby),
            Err(e) => Err(self.err(e)),
        }
    }

    fn err(&self, e: kube::Error) -> Error {
        Error::Api(format!("{}/{}", self.config.namespace, self.config.name), e)
    }
}

/// client-go's `JitterFactor`: waits are stretched by up to this factor.
const JITTER: f64 = 1.2;

/// The server-side limit of a standby's Lease watch (kube's default); a new one opens after.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Up to 10 ms after a record's expiry: spreads standbys that observed the same record without
/// delaying the takeover past the lease duration by more than that.
fn small_jitter() -> Duration {
    Duration::from_micros(rand::random::<u64>() % 10_000)
}

/// Up to 20% extra, as client-go's `wait.Jitter(retryPeriod, 1.2)` spreads standbys.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::random::<f64>() * (JITTER - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease: u64, renew: u64, retry: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "kube-system".into(),
            name: "kube-controller-manager".into(),
            identity: "me".into(),
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
        }
    }

    #[test]
    fn durations_are_checked_as_client_go_does() {
        assert_eq!(config(15_000, 10_000, 2_000).validate(), Ok(()));
        assert!(config(10_000, 10_000, 2_000).validate().unwrap_err().contains("leaseDuration"));
        assert!(config(15_000, 2_400, 2_000).validate().unwrap_err().contains("renewDeadline"));
        assert_eq!(config(15_000, 2_401, 2_000).validate(), Ok(()));
    }

    #[tokio::test]
    async fn failed_attempts_back_off_up_to_the_lease_duration() {
        let client = kube::Client::new(
            tower::service_fn(|_req| async {
                Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("unused"))
            }),
            "default",
        );
        let le = LeaderElector::new(client, config(15_000, 10_000, 2_000));
        let waits: Vec<u64> = (1..=6).map(|n| le.backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 15, 15, 15]);
        assert_eq!(le.backoff(u32::MAX), Duration::from_secs(15));
    }
}
