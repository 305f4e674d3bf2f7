//! One shared watch + cache per resource type, fanned out to every controller that needs it.
//!
//! kube-runtime's own shared streams (`Writer::subscribe`) only re-emit objects still present in the
//! cache, so a *deletion* never reaches subscribers; our controllers need deletions (a deleted pod
//! must wake its ReplicaSet). So an [`Informer`] drives a plain reflector itself and hands every
//! changed object — applied or deleted — to each subscriber over an unbounded channel. Unbounded is
//! deliberate: subscribers are controllers' trigger streams that are always polled, events are `Arc`s,
//! and a bounded channel would force either dropping events or stalling the shared watch.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::Stop;

pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    api: Api<K>,
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Informer { api, store, writer: Mutex::new(Some(writer)), subscribers: Mutex::new(Vec::new()) })
    }

    /// The cache; ready once the first list has been applied.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object in the cache now, then every object the watch applies or deletes from now on
    /// (and every object of each (re)list). The replay matters for a controller whose task first
    /// runs after the informer's first list was published (task start order is not guaranteed):
    /// without it, objects that existed at startup (the bootstrap namespaces) would never trigger
    /// it. A repeat is harmless, reconciles being level-triggered.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            // Under the subscribers' lock, so nothing published meanwhile is missed or reordered.
            let mut subscribers = lock(&self.subscribers);
            for o in self.store.state() {
                let _ = tx.send(o);
            }
            subscribers.push(tx);
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) })
    }

    fn publish(&self, obj: Arc<K>) {
        lock(&self.subscribers).retain(|tx| tx.send(obj.clone()).is_ok());
    }

    /// Drives the watch until `stop`. Call once.
    pub async fn run(self: Arc<Self>, stop: Stop) {
        let Some(mut writer) = lock(&self.writer).take() else { return };
        let mut stream = Box::pin(watcher(self.api.clone(), watcher::Config::default()).default_backoff());
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
                    before_relist =
                        self.store.state().into_iter().map(|o| (ObjectRef::from_obj(o.as_ref()), o)).collect();
                    writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitApply(_) => writer.apply_watcher_event(&ev),
                watcher::Event::InitDone => {
                    writer.apply_watcher_event(&ev);
                    let now = self.store.state();
                    for o in &now {
                        before_relist.remove(&ObjectRef::from_obj(o.as_ref()));
                    }
                    // Objects that vanished while we were not watching: tell subscribers as deletions.
                    for (_, gone) in before_relist.drain() {
                        self.publish(gone);
                    }
                    for o in now {
                        self.publish(o);
                    }
                }
                watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                    writer.apply_watcher_event(&ev);
                    self.publish(Arc::new(o.clone()));
                }
            }
        }
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
