//! The pods of the kubelets of one process, from one watch: client-go's shared pod informer with
//! an index by `spec.nodeName`.
//!
//! One watch of every bound pod (`spec.nodeName!=`) feeds an index node → uid → `Arc<Pod>`. Each
//! kubelet subscribes to its node and is woken only when one of its pods changes: the index marks
//! the pod's uid dirty in the node's entry and sets the node's `Notify` permit; the kubelet takes the
//! dirty uids and reads each one's latest object from the index (None: deleted). Bounded by design:
//! a permit does not queue and a dirty set holds each uid once, however many events arrive before
//! the kubelet looks; nothing is lost, as the kubelet reads the index after taking the permit.
//!
//! Objects are shared, never copied per consumer: the pod's worker holds the same `Arc<Pod>` the
//! index holds. A standalone `kplane node` runs its own informer, narrowed to its node
//! (`spec.nodeName=<name>`); `kplane up` runs one for all its nodes.
//!
//! Beside the pods, it keeps every Service (a reflector store): the kubelet's service lister, from
//! which containers get their `<SVC>_SERVICE_HOST`/`_PORT` variables, as upstream's kubelet reads
//! them from its Service informer rather than listing per pod.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One node's pods in the index, what changed since its kubelet last looked, and its wake-up.
#[derive(Default)]
struct NodePods {
    pods: HashMap<String, Arc<Pod>>,
    dirty: HashSet<String>,
    /// Set by a (re)list: the kubelet rebuilds from the whole list (IPAM, workers no longer listed).
    relisted: bool,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Index {
    /// The first list has been loaded.
    listed: bool,
    nodes: HashMap<String, NodePods>,
}

/// A shared pod informer. Dropping it stops its watch.
pub struct PodInformer {
    index: Arc<Mutex<Index>>,
    task: JoinHandle<()>,
    services: Store<Service>,
    services_task: JoinHandle<()>,
}

impl Drop for PodInformer {
    fn drop(&mut self) {
        self.task.abort();
        self.services_task.abort();
    }
}

/// What changed on one node since its kubelet last looked.
pub(crate) struct Changes {
    /// A (re)list happened: `pods` holds every pod of the node, and a worker whose uid is not in it
    /// is gone.
    pub relisted: bool,
    /// Each changed uid with its latest object (None: deleted).
    pub pods: Vec<(String, Option<Arc<Pod>>)>,
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodInformer {
    /// Starts watching every bound pod (`node: None`, one informer for all the process's nodes) or
    /// only those of one node.
    pub fn start(client: Client, node: Option<&str>) -> Arc<PodInformer> {
        let selector = match node {
            Some(name) => format!("spec.nodeName={name}"),
            None => "spec.nodeName!=".to_string(),
        };
        let index = Arc::new(Mutex::new(Index::default()));
        let api: Api<Pod> = Api::all(client.clone());
        let task = tokio::spawn(run(api, selector, index.clone()));
        let (services, writer) = reflector::store();
        let stream = watcher(Api::<Service>::all(client), watcher::Config::default())
            .modify(|s| s.metadata.managed_fields = None)
            .default_backoff();
        let services_task = tokio::spawn(reflector::reflector(writer, stream).for_each(|_| async {}));
        Arc::new(PodInformer { index, task, services, services_task })
    }

    /// Every Service, from the informer; None until it has listed once (the caller then asks the
    /// API).
    pub(crate) fn services(&self) -> Option<&Store<Service>> {
        self.services.wait_until_ready().now_or_never()?.ok()?;
        Some(&self.services)
    }

    /// The wake-up of `node`'s kubelet: a permit is set whenever one of its pods changes.
    pub(crate) fn subscribe(&self, node: &str) -> Arc<Notify> {
        lock(&self.index).nodes.entry(node.to_string()).or_default().notify.clone()
    }

    /// What changed on `node` since the last call; None until the first list is loaded.
    pub(crate) fn take(&self, node: &str) -> Option<Changes> {
        let mut index = lock(&self.index);
        if !index.listed {
            return None;
        }
        let entry = index.nodes.entry(node.to_string()).or_default();
        let relisted = std::mem::take(&mut entry.relisted);
        let dirty = std::mem::take(&mut entry.dirty);
        let pods = dirty
            .into_iter()
            .map(|uid| {
                let pod = entry.pods.get(&uid).cloned();
                (uid, pod)
            })
            .collect();
        Some(Changes { relisted, pods })
    }

    /// How many pods the index holds (all nodes).
    pub fn len(&self) -> usize {
        lock(&self.index).nodes.values().map(|n| n.pods.len()).sum()
    }

    /// True while the index holds no pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drives the watch: each event updates the index, marks the pod dirty on its node and wakes that
/// node's kubelet only.
async fn run(api: Api<Pod>, selector: String, index: Arc<Mutex<Index>>) {
    let cfg = watcher::Config::default().fields(&selector);
    // managedFields trimmed, as upstream's informers do: the kubelet never reads them, and they were
    // nearly half of each decoded pod.
    let mut events = watcher(api, cfg).modify(|p| p.metadata.managed_fields = None).default_backoff().boxed();
    // A (re)list in progress: node → uid → pod.
    let mut relist: Option<HashMap<String, HashMap<String, Arc<Pod>>>> = None;
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(p)) => {
                if let Some(node) = node_of(&p).map(str::to_string) {
                    let uid = p.uid().unwrap_or_default();
                    relist.get_or_insert_with(HashMap::new).entry(node).or_default().insert(uid, Arc::new(p));
                }
            }
            Ok(Event::InitDone) => {
                let mut listed = relist.take().unwrap_or_default();
                let mut index = lock(&index);
                index.listed = true;
                let names: HashSet<String> = index.nodes.keys().chain(listed.keys()).cloned().collect();
                for name in names {
                    let entry = index.nodes.entry(name.clone()).or_default();
                    let fresh = listed.remove(&name).unwrap_or_default();
                    let old = std::mem::replace(&mut entry.pods, fresh);
                    entry.dirty.extend(old.into_keys());
                    entry.dirty.extend(entry.pods.keys().cloned());
                    entry.relisted = true;
                    entry.notify.notify_one();
                }
            }
            Ok(Event::Apply(p)) | Ok(Event::Delete(p)) if node_of(&p).is_none() => {}
            Ok(Event::Apply(p)) => {
                let (node, uid) = (node_of(&p).unwrap_or_default().to_string(), p.uid().unwrap_or_default());
                let mut index = lock(&index);
                let entry = index.nodes.entry(node).or_default();
                entry.pods.insert(uid.clone(), Arc::new(p));
                entry.dirty.insert(uid);
                entry.notify.notify_one();
            }
            Ok(Event::Delete(p)) => {
                let (node, uid) = (node_of(&p).unwrap_or_default().to_string(), p.uid().unwrap_or_default());
                let mut index = lock(&index);
                let entry = index.nodes.entry(node).or_default();
                entry.pods.remove(&uid);
                entry.dirty.insert(uid);
                entry.notify.notify_one();
            }
            Err(e) => tracing::warn!(selector = %selector, error = %e, "pod watch"),
        }
    }
}
