//! One shared watch + cache per resource type, fanned out to every controller that needs it.
//!
//! kube-runtime's own shared streams (`Writer::subscribe`) only re-emit objects still present in the
//! cache, so a *deletion* never reaches subscribers; our controllers need deletions (a deleted pod
//! must wake its ReplicaSet). So an [`Informer`] drives a plain reflector itself and hands every
//! changed object — applied or deleted — to each subscriber.
//!
//! Each subscriber has a bounded queue ([`SUBSCRIBER_QUEUE`] objects). Publishing never waits
//! (the shared watch must not stall behind one slow controller) and never silently drops: when a
//! subscriber's queue is full it is marked out of sync, and from then on only deletions are kept
//! for it, one per object (they are not in the cache). When it next polls, it gets what was
//! queued, then those deletions, then every object of the cache — a resync, as client-go's
//! relist. Reconciles are level-triggered, so a repeat is harmless and the latest state of every
//! object is all a controller needs. The memory a subscriber can hold is thus its queue plus one
//! entry per object deleted while it was out of sync.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::sync::Notify;

use crate::Stop;

/// How many objects a subscriber may have queued before it is resynced from the cache instead.
pub const SUBSCRIBER_QUEUE: usize = 1024;

pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    api: Api<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    fanout: Fanout<K>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Informer {
            api,
            writer: Mutex::new(Some(writer)),
            fanout: Fanout::new(store, SUBSCRIBER_QUEUE),
        })
    }

    /// The cache; ready once the first list has been applied.
    pub fn store(&self) -> Store<K> {
        self.fanout.store.clone()
    }

    /// Every object in the cache now, then every object the watch applies or deletes from now on
    /// (and every object of each (re)list). The replay matters for a controller whose task first
    /// runs after the informer's first list was published (task start order is not guaranteed):
    /// without it, objects that existed at startup (the bootstrap namespaces) would never trigger
    /// it. A repeat is harmless, reconciles being level-triggered.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.fanout.subscribe()
    }

    /// Drives the watch until `stop`. Call once.
    pub async fn run(self: Arc<Self>, stop: Stop) {
        let Some(mut writer) = lock(&self.writer).take() else { return };
        // managedFields trimmed as kube-controller-manager's informers do (`WithTransform(trim)` in
        // its `CreateControllerContext`): no controller reads them, and on a pod they were 46% of
        // the decoded object (heaptrack, 1,000 pods). An update sent without them keeps the stored ones.
        let mut stream = Box::pin(
            watcher(self.api.clone(), watcher::Config::default())
                .modify(|o| o.meta_mut().managed_fields = None)
                .default_backoff(),
        );
        let mut before_relist: HashMap<ObjectRef<K>, Arc<K>> = HashMap::new();
        loop {
            let ev = tokio::select! {
                _ = stop.clone().wait() => return,
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { return };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match &ev {
                watcher::Event::Init => {
                    before_relist = self
                        .fanout
                        .store
                        .state()
                        .into_iter()
                        .map(|o| (ObjectRef::from_obj(o.as_ref()), o))
                        .collect();
                    writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitApply(_) => writer.apply_watcher_event(&ev),
                watcher::Event::InitDone => {
                    writer.apply_watcher_event(&ev);
                    let now = self.fanout.store.state();
                    for o in &now {
                        before_relist.remove(&ObjectRef::from_obj(o.as_ref()));
                    }
                    // Objects that vanished while we were not watching: tell subscribers as deletions.
                    for (_, gone) in before_relist.drain() {
                        self.fanout.publish(gone, true);
                    }
                    for o in now {
                        self.fanout.publish(o, false);
                    }
                }
                watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                    // The cache first, then subscribers: a resync reads the cache, so nothing
                    // published is older than what a resync would show.
                    writer.apply_watcher_event(&ev);
                    self.fanout.publish(Arc::new(o.clone()), matches!(ev, watcher::Event::Delete(_)));
                }
            }
        }
    }
}

/// The subscribers of one cache.
struct Fanout<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    capacity: usize,
    subscribers: Mutex<Vec<Subscriber<K>>>,
}

struct Subscriber<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    tx: mpsc::Sender<Arc<K>>,
    sync: Arc<Resync<K>>,
}

/// A subscriber's out-of-sync mark, shared by the publisher and the subscriber's stream.
struct Resync<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// `None`: in sync, everything is in its queue. `Some`: it must resync from the cache; holds
    /// the objects deleted since it fell out of sync, newest per object.
    deleted: Mutex<Option<HashMap<ObjectRef<K>, Arc<K>>>>,
    /// Wakes a subscriber waiting on an empty queue when it falls out of sync.
    wake: Notify,
}

impl<K> Fanout<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn new(store: Store<K>, capacity: usize) -> Self {
        Fanout { store, capacity: capacity.max(1), subscribers: Mutex::new(Vec::new()) }
    }

    fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::channel(self.capacity);
        // A new subscriber starts out of sync: its first poll replays the cache. Registered under
        // the lock, so everything published from now on is either in its queue, in the cache it
        // will read, or a deletion it is given.
        let sync = Arc::new(Resync { deleted: Mutex::new(Some(HashMap::new())), wake: Notify::new() });
        lock(&self.subscribers).push(Subscriber { tx, sync: sync.clone() });
        let state = (rx, sync, self.store.clone(), VecDeque::new());
        futures::stream::unfold(state, |(mut rx, sync, store, mut pending)| async move {
            loop {
                if let Some(o) = pending.pop_front() {
                    return Some((o, (rx, sync, store, pending)));
                }
                match rx.try_recv() {
                    Ok(o) => return Some((o, (rx, sync, store, pending))),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => {}
                }
                // The queue is drained: catch up with what it could not hold.
                let deleted = lock(&sync.deleted).take();
                if let Some(deleted) = deleted {
                    pending.extend(deleted.into_values());
                    pending.extend(store.state());
                    continue;
                }
                tokio::select! {
                    o = rx.recv() => match o {
                        Some(o) => return Some((o, (rx, sync, store, pending))),
                        None => return None,
                    },
                    () = sync.wake.notified() => {}
                }
            }
        })
    }

    /// Hands `obj` to every subscriber without waiting; a full queue puts its subscriber out of
    /// sync instead. Subscribers whose stream was dropped are forgotten.
    fn publish(&self, obj: Arc<K>, deleted: bool) {
        lock(&self.subscribers).retain(|s| {
            let mut out_of_sync = lock(&s.sync.deleted);
            if let Some(gone) = out_of_sync.as_mut() {
                // It will read the cache; only a deletion is not there.
                if deleted {
                    gone.insert(ObjectRef::from_obj(obj.as_ref()), obj.clone());
                }
                return !s.tx.is_closed();
            }
            match s.tx.try_send(obj.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    let mut gone = HashMap::new();
                    if deleted {
                        gone.insert(ObjectRef::from_obj(obj.as_ref()), obj.clone());
                    }
                    *out_of_sync = Some(gone);
                    drop(out_of_sync);
                    s.sync.wake.notify_one();
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `store` has its first list. kube-runtime's `wait_until_ready` keeps only the last
/// waiter's waker (a futures oneshot underneath), so with several waiters on one store — the
/// `Controller`s sharing it wait too — an early waiter may never wake: poll with a short timeout.
pub async fn wait_ready<K>(store: &Store<K>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    while tokio::time::timeout(std::time::Duration::from_millis(100), store.wait_until_ready()).await.is_err() {
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;

    fn cm(name: &str, version: u32) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("default".into());
        c.metadata.resource_version = Some(version.to_string());
        c
    }

    /// Everything the stream has ready now, without waiting.
    fn ready_now(sub: &mut (impl Stream<Item = Arc<ConfigMap>> + Unpin)) -> Vec<Arc<ConfigMap>> {
        std::iter::from_fn(|| sub.next().now_or_never().flatten()).collect()
    }

    #[tokio::test]
    async fn a_full_subscriber_resyncs_from_the_cache_and_keeps_every_deletion() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(cm("pre", 1)));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let fanout = Fanout::new(store, 4);
        let mut sub = Box::pin(fanout.subscribe());

        // A new subscriber gets the cache first.
        let first: Vec<_> = ready_now(&mut sub).iter().map(|o| o.metadata.name.clone().unwrap()).collect();
        assert_eq!(first, ["pre"]);

        // Far more changes than its queue holds, while it does not poll: 20 objects written
        // twice, 5 of them deleted.
        let mut version = 10;
        for _ in 0..2 {
            for i in 0..20 {
                version += 1;
                let o = cm(&format!("o{i}"), version);
                writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
                fanout.publish(Arc::new(o), false);
            }
        }
        for i in 0..5 {
            let o = cm(&format!("o{i}"), 0);
            writer.apply_watcher_event(&watcher::Event::Delete(o.clone()));
            fanout.publish(Arc::new(o), true);
        }
        assert_eq!(lock(&fanout.subscribers)[0].tx.capacity(), 0, "its queue is full, not grown");

        // It catches up: the queued objects, then the deletions, then the whole cache.
        let got = ready_now(&mut sub);
        let mut last: BTreeMap<String, Arc<ConfigMap>> = BTreeMap::new();
        for o in &got {
            last.insert(o.metadata.name.clone().unwrap(), o.clone());
        }
        for i in 0..5 {
            let seen = &last[&format!("o{i}")];
            assert_eq!(
                seen.metadata.resource_version.as_deref(),
                Some("0"),
                "o{i}'s deletion is the last word"
            );
        }
        // Every live object's newest version is among what it saw last.
        for o in fanout.store.state() {
            let name = o.metadata.name.clone().unwrap();
            let seen = got.iter().rev().find(|g| g.metadata.name.as_deref() == Some(&*name)).unwrap();
            assert_eq!(seen.metadata.resource_version, o.metadata.resource_version, "{name} is current");
        }
        // A resync, not a replay of all 45 events: 4 queued + 5 deletions + 16 cached objects.
        assert_eq!(got.len(), 4 + 5 + 16);

        // Back in sync: the next change arrives as itself.
        let o = cm("after", 99);
        writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
        fanout.publish(Arc::new(o), false);
        let next = ready_now(&mut sub);
        assert_eq!(next.iter().map(|o| o.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["after"]);

        // A dropped subscriber is forgotten at the next publish.
        drop(sub);
        fanout.publish(Arc::new(cm("x", 100)), false);
        assert!(lock(&fanout.subscribers).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_when_it_falls_out_of_sync() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let fanout = Arc::new(Fanout::new(store, 1));
        let mut sub = Box::pin(fanout.subscribe());
        assert!(ready_now(&mut sub).is_empty());
        let waiter = tokio::spawn(async move { sub.next().await.map(|o| o.metadata.name.clone()) });
        tokio::task::yield_now().await;
        for i in 0..3 {
            let o = cm(&format!("w{i}"), i);
            writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
            fanout.publish(Arc::new(o), false);
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(got.flatten().is_some_and(|n| n.starts_with('w')));
    }
}
