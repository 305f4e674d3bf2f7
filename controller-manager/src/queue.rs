//! The controllers' trigger side, built from kube-runtime's public pieces so the work queue can be
//! measured as client-go measures its own: `Controller` has the builder calls our controllers use
//! (`new`, `for_shared_stream`, `watches_shared_stream`, `watches`) and makes the same trigger
//! streams kube-runtime's `Controller` makes (`trigger_self`, `trigger_with`, `StreamBackoff` with
//! the default backoff); `context::drive` hands them to kube-runtime's `applier`. `Waiting` sits
//! between the two: it stamps each key when first added and counts it until a reconcile takes it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::api::DynamicObject;
use kube::runtime::controller::{trigger_self, trigger_with, ReconcileReason, ReconcileRequest};
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

type Trigger<K> = BoxStream<'static, Result<ReconcileRequest<K>, watcher::Error>>;

/// One controller's inputs: the store its reconciles read, and every stream that asks for a
/// reconcile of a key.
pub struct Controller<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash,
{
    pub(crate) reader: Store<K>,
    pub(crate) triggers: stream::SelectAll<Trigger<K>>,
}

impl<K> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watches `api` itself (its own reflector), each change triggering its object.
    pub fn new(api: Api<K>, wc: watcher::Config) -> Self {
        let writer = reflector::store::Writer::<K>::default();
        let reader = writer.as_reader();
        let own = trigger_self(reflector(writer, watcher(api, wc)).applied_objects(), ());
        Controller { reader, triggers: stream::select_all([own.boxed()]) }
    }

    /// Triggers from a shared informer's stream; `reader` is that informer's store.
    pub fn for_shared_stream(trigger: impl Stream<Item = Arc<K>> + Send + 'static, reader: Store<K>) -> Self {
        let own = trigger_self(trigger.map(Ok::<_, watcher::Error>), ());
        Controller { reader, triggers: stream::select_all([own.boxed()]) }
    }

    /// Each object of the shared stream triggers the keys `mapper` names.
    pub fn watches_shared_stream<O, I>(
        mut self,
        trigger: impl Stream<Item = Arc<O>> + Send + 'static,
        mapper: impl Fn(Arc<O>) -> I + Send + Sync + 'static,
    ) -> Self
    where
        O: Resource<DynamicType = ()> + Send + Sync + 'static,
        I: IntoIterator<Item = ObjectRef<K>> + 'static,
        I::IntoIter: Send,
    {
        let s = trigger_with(trigger.map(Ok::<_, watcher::Error>), move |o: Arc<O>| {
            related(ObjectRef::from_obj(&*o).erase(), mapper(o))
        });
        self.triggers.push(s.boxed());
        self
    }

    /// Watches `api` (no store kept), each change or deletion triggering the keys `mapper` names.
    pub fn watches<O, I>(
        mut self,
        api: Api<O>,
        wc: watcher::Config,
        mapper: impl Fn(O) -> I + Send + Sync + 'static,
    ) -> Self
    where
        O: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        I: IntoIterator<Item = ObjectRef<K>> + 'static,
        I::IntoIter: Send,
    {
        let s = trigger_with(watcher(api, wc).touched_objects(), move |o: O| {
            related(ObjectRef::from_obj(&o).erase(), mapper(o))
        });
        self.triggers.push(s.boxed());
        self
    }
}

/// The requests for `keys`, with kube-runtime's reason (the related object; shown in its spans).
fn related<K, I>(by: ObjectRef<DynamicObject>, keys: I) -> impl Iterator<Item = ReconcileRequest<K>>
where
    K: Resource,
    I: IntoIterator<Item = ObjectRef<K>>,
{
    keys.into_iter().map(move |obj_ref| ReconcileRequest {
        obj_ref,
        reason: ReconcileReason::RelatedObjectUpdated { obj_ref: Box::new(by.clone()) },
    })
}

/// A key as client-go's queue holds it: namespace and name.
pub(crate) type Key = (Option<String>, String);

pub(crate) fn key_of<K: Resource>(r: &ObjectRef<K>) -> Key
where
    K::DynamicType: Eq + Hash,
{
    (r.namespace.clone(), r.name.clone())
}

/// Keys added and not yet handed to a reconcile, each with the instant of its first add (client-go's
/// `dirty` set and `addTimes`): adding a waiting key again changes nothing.
#[derive(Default)]
pub(crate) struct Waiting(Mutex<HashMap<Key, Instant>>);

impl Waiting {
    /// Records an add; true when the key was not already waiting (a new item).
    pub(crate) fn add(&self, key: Key, at: Instant) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match m.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
                true
            }
        }
    }

    /// Takes the key out; the instant of its first add if it was waiting.
    pub(crate) fn take(&self, key: &Key) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
}

/// Keys being reconciled and since when (client-go's `processingStartTimes`).
#[derive(Default)]
pub(crate) struct Processing(Mutex<HashMap<u64, Instant>>, std::sync::atomic::AtomicU64);

impl Processing {
    pub(crate) fn start(&self, at: Instant) -> u64 {
        let id = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id, at);
        id
    }

    pub(crate) fn done(&self, id: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Seconds of work in progress summed, and the longest one (client-go's
    /// `unfinished_work_seconds` and `longest_running_processor_seconds`).
    pub(crate) fn unfinished(&self, now: Instant) -> (f64, f64) {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.values().fold((0.0, 0.0), |(sum, max), t| {
            let s = now.saturating_duration_since(*t).as_secs_f64();
            (sum + s, f64::max(max, s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn repeated_adds_of_a_waiting_key_fold_into_the_first() {
        let w = Waiting::default();
        let t0 = Instant::now();
        let k: Key = (Some("ns".into()), "a".into());
        assert!(w.add(k.clone(), t0));
        assert!(!w.add(k.clone(), t0 + Duration::from_secs(1)));
        assert_eq!(w.take(&k), Some(t0));
        assert_eq!(w.take(&k), None);
        assert!(w.add(k.clone(), t0 + Duration::from_secs(2)));
    }

    #[test]
    fn unfinished_work_sums_and_finds_the_longest() {
        let p = Processing::default();
        let now = Instant::now();
        let a = p.start(now - Duration::from_secs(3));
        let _b = p.start(now - Duration::from_secs(1));
        assert_eq!(p.unfinished(now), (4.0, 3.0));
        p.done(a);
        assert_eq!(p.unfinished(now), (1.0, 1.0));
    }
}
