//! A reflector store kept up to date by a background watch, plus a change signal.
//!
//! Components are level-triggered: a change to any watched kind only sets a "dirty" permit on a
//! shared [`Notify`]; the component then recomputes its whole state (listeners, DNS index, routes)
//! from the stores. Bursts of changes collapse into one recompute.
//!
//! Bounded by design: there is no queue of events to grow. A `Notify` holds at most one permit,
//! however many changes arrive before the component looks, and the stores hold one copy of each
//! object. Nothing can be lost either: the component reads the stores after the permit is taken,
//! so every change before that read is in what it reads, and every change after it sets the
//! permit again.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The read side of one watched kind. Dropping it stops the watch.
pub(crate) struct Informer<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    task: JoinHandle<()>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching every object of `api` (all namespaces), signalling `changed` after each event.
    pub fn start(api: Api<K>, changed: Arc<Notify>) -> Self {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    // Init and InitApply only fill the store's buffer; the store swaps at InitDone.
                    Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => {}
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
                }
            }
        });
        Informer { store, task }
    }

    /// Waits until the first full list has been loaded.
    pub async fn ready(&self) {
        // Only fails if the writer is dropped, i.e. the watch task ended; nothing to wait for then.
        let _ = self.store.wait_until_ready().await;
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
