//! Publishing `events.k8s.io/v1` Events as upstream's client-go events broadcaster does
//! (`k8s.io/client-go/tools/events`): the first occurrence of an event is created; an isomorphic
//! one (same regarding and related objects, reason, action, note, type and reporter) within
//! [`SERIES_TTL`] of the last becomes a series, its count and last observed time patched onto the
//! first event.
//!
//! kube-runtime's `Recorder` does the same, but it sweeps its whole cache on every publish and
//! keeps a full copy of every event it sent: at 10,000 pods the scheduler's and kubelets'
//! "Scheduled"/"Started" events made each publish walk ~10,000 entries (quadratic in the pods of a
//! rollout; a profile showed it at ~10% of the process's CPU). Here the cache holds only what a
//! series needs (the event's name and count) and is swept at most once per [`SWEEP_EVERY`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::Client;

/// How long after its last occurrence an event can still grow into a series (upstream's
/// `finishTime`, 6 minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// How often the cache drops the events whose series is over.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What makes two events isomorphic (upstream's `getKey`): the objects, reason, action, note, and
/// here also the type and the reporter (one recorder may serve several controllers' names).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    action: String,
    reason: String,
    note: Option<String>,
    regarding: RefKey,
    related: Option<RefKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RefKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl RefKey {
    fn of(r: &ObjectReference) -> RefKey {
        RefKey {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }
}

/// The event a key was first recorded as, and how often it occurred.
#[derive(Debug)]
struct Seen {
    name: String,
    count: i32,
    last: Instant,
}

#[derive(Debug)]
struct Cache {
    seen: HashMap<Key, Seen>,
    next_sweep: Instant,
}

impl Cache {
    /// Drops the events whose series is over, at most once per [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.seen.retain(|_, s| now.duration_since(s.last) < SERIES_TTL);
        self.next_sweep = now + SWEEP_EVERY;
    }
}

/// Records events for one reporter. Cheap to clone; clones share the series cache.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    cache: Arc<Mutex<Cache>>,
}

/// What one publish sends.
#[derive(Debug, PartialEq)]
enum Send {
    Create,
    /// The series' new count, patched onto the named event.
    Series {
        name: String,
        count: i32,
    },
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Recorder {
        let cache = Cache { seen: HashMap::new(), next_sweep: Instant::now() + SWEEP_EVERY };
        Recorder { client, reporter, cache: Arc::new(Mutex::new(cache)) }
    }

    fn key(ev: &Event, regarding: &ObjectReference) -> Key {
        Key {
            warning: ev.type_ == EventType::Warning,
            action: ev.action.clone(),
            reason: ev.reason.clone(),
            note: ev.note.clone(),
            regarding: RefKey::of(regarding),
            related: ev.secondary.as_ref().map(RefKey::of),
        }
    }

    /// Whether this occurrence starts an event or continues a series (and counts it).
    fn classify(&self, key: &Key, now: Instant) -> Send {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.sweep(now);
        match cache.seen.get_mut(key) {
            Some(seen) if now.duration_since(seen.last) < SERIES_TTL => {
                seen.count += 1;
                seen.last = now;
                Send::Series { name: seen.name.clone(), count: seen.count }
            }
            _ => Send::Create,
        }
    }

    fn remember(&self, key: Key, name: String, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.seen.insert(key, Seen { name, count: 1, last: now });
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Upstream: `<regarding name>.<unix nanoseconds in hex>`.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
            type_: Some(if ev.type_ == EventType::Warning { "Warning" } else { "Normal" }.to_string()),
            ..Default::default()
        }
    }

    /// Creates the event, or patches the series of an isomorphic earlier one. An event whose
    /// series patch finds it gone (expired by the API's event TTL) is created anew, as upstream.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let key = Self::key(ev, regarding);
        let now = Instant::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        if let Send::Series { name, count } = self.classify(&key, now) {
            let patch = serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}});
            match events.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(ev, regarding, Timestamp::now());
        let created = events.create(&PostParams::default(), &event).await?;
        self.remember(key, created.metadata.name.unwrap_or_default(), now);
        Ok(())
    }

    /// Events remembered for a series.
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        // Never contacted: these tests only exercise the cache.
        let client = Client::new(
            tower::service_fn(|_req| async {
                Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("unused"))
            }),
            "default",
        );
        Recorder::new(client, Reporter { controller: "test".into(), instance: None })
    }

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn ev(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: reason.into(),
            secondary: None,
        }
    }

    #[tokio::test]
    async fn isomorphic_events_become_a_series_and_others_do_not() {
        let r = recorder();
        let t0 = Instant::now();
        let k = Recorder::key(&ev("Started", "Started container web"), &pod("a"));
        assert_eq!(r.classify(&k, t0), Send::Create);
        r.remember(k.clone(), "a.1".into(), t0);
        assert_eq!(r.classify(&k, t0), Send::Series { name: "a.1".into(), count: 2 });
        assert_eq!(r.classify(&k, t0), Send::Series { name: "a.1".into(), count: 3 });
        // Another note, object or reason is another event (upstream's key has the note).
        for other in [
            Recorder::key(&ev("Started", "Started container db"), &pod("a")),
            Recorder::key(&ev("Started", "Started container web"), &pod("b")),
            Recorder::key(&ev("Killing", "Started container web"), &pod("a")),
        ] {
            assert_eq!(r.classify(&other, t0), Send::Create);
        }
        // Past the series TTL it starts over.
        assert_eq!(r.classify(&k, t0 + SERIES_TTL + Duration::from_secs(1)), Send::Create);
    }

    #[tokio::test]
    async fn the_cache_forgets_finished_series_at_most_once_a_minute() {
        let r = recorder();
        let t0 = Instant::now();
        for i in 0..1000 {
            r.remember(Recorder::key(&ev("Scheduled", "x"), &pod(&format!("p{i}"))), format!("p{i}.1"), t0);
        }
        assert_eq!(r.cached(), 1000);
        let fresh = Recorder::key(&ev("Scheduled", "x"), &pod("new"));
        let late = t0 + SERIES_TTL + SWEEP_EVERY;
        r.remember(fresh.clone(), "new.1".into(), late);
        r.classify(&fresh, late);
        assert_eq!(r.cached(), 1, "the thousand finished series are gone, the live one stays");
    }
}
