//! Upstream's ControllerExpectations idea, keyed by pod *names* rather than counters.
//!
//! After a sync creates or deletes pods, the cache it reads lags behind the API. Until the cache has
//! caught up with what that sync did, a second sync would count wrong and create duplicates (or delete
//! twice). So a sync records the names it created and deleted, and the next sync of the same owner
//! only manages replicas once every created name is in the cache and every deleted name is gone from
//! it (or terminating). Checking names against the cache — rather than counting add/delete events as
//! upstream does — keeps this level-triggered: it is a function of the cache, not of which events were
//! seen. A TTL (upstream's 5 minutes) frees an owner whose expected pod vanished before we saw it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

/// What the cache says about one pod name.
pub enum Seen {
    Absent,
    Terminating,
    Present,
}

impl Expectations {
    pub fn expect_created(&self, owner: &str, name: String) {
        let mut m = self.lock();
        let p = m.entry(owner.to_string()).or_default();
        p.since.get_or_insert_with(Instant::now);
        p.creates.insert(name);
    }

    pub fn expect_deleted(&self, owner: &str, name: String) {
        let mut m = self.lock();
        let p = m.entry(owner.to_string()).or_default();
        p.since.get_or_insert_with(Instant::now);
        p.deletes.insert(name);
    }

    /// A pod event for `name` arrived and the cache no longer has the pod: whatever we expected
    /// about it (its creation or its deletion) has been observed.
    pub fn observe_gone(&self, owner: &str, name: &str) {
        if let Some(p) = self.lock().get_mut(owner) {
            p.creates.remove(name);
            p.deletes.remove(name);
        }
    }

    /// Drops what the cache now confirms; true when nothing is outstanding (or the TTL ran out).
    pub fn satisfied(&self, owner: &str, seen: impl Fn(&str) -> Seen) -> bool {
        let mut m = self.lock();
        let Some(p) = m.get_mut(owner) else { return true };
        p.creates.retain(|n| matches!(seen(n), Seen::Absent));
        p.deletes.retain(|n| matches!(seen(n), Seen::Present));
        let done = p.creates.is_empty() && p.deletes.is_empty();
        let expired = p.since.is_some_and(|s| s.elapsed() > EXPECTATIONS_TTL);
        if done || expired {
            if expired && !done {
                tracing::warn!(owner, "expectations expired; resyncing from the cache");
            }
            m.remove(owner);
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.by_owner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsatisfied_until_cache_shows_creates_and_deletes() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a", |_| Seen::Absent));
        e.expect_created("ns/a", "p1".into());
        e.expect_deleted("ns/a", "p0".into());
        assert!(!e.satisfied("ns/a", |n| if n == "p1" { Seen::Absent } else { Seen::Present }));
        assert!(!e.satisfied("ns/a", |_| Seen::Present));
        assert!(e.satisfied("ns/a", |n| if n == "p1" { Seen::Present } else { Seen::Terminating }));
    }

    #[test]
    fn a_pod_gone_before_it_was_seen_is_observed() {
        let e = Expectations::default();
        e.expect_created("ns/a", "p1".into());
        e.observe_gone("ns/a", "p1");
        assert!(e.satisfied("ns/a", |_| Seen::Absent));
    }
}
