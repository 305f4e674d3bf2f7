//! The scheduler's view of the cluster: every node, and per node the pods assigned to it (bound, or
//! assumed while their binding is in flight) with what they request. Kept from the watches, so a
//! scheduling decision never lists anything.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::quantity;

/// Amounts of the resources the scheduler accounts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl Resources {
    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
    }
    fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
    }
}

/// What one assigned pod takes from its node.
#[derive(Clone, Debug)]
pub struct PodUsage {
    pub requests: Resources,
    /// Requests with upstream's scoring defaults (100m cpu, 200Mi memory) for unset ones.
    pub nonzero: Resources,
    /// Pods with the same key are spread across nodes (see [`spread_key`]).
    pub spread_key: Option<String>,
}

impl PodUsage {
    pub fn of(pod: &Pod) -> PodUsage {
        let requests = pod_requests(pod, false);
        let nonzero = pod_requests(pod, true);
        PodUsage { requests, nonzero, spread_key: spread_key(pod) }
    }
}

/// One node and what is assigned to it.
#[derive(Debug, Default)]
pub struct NodeInfo {
    /// None while only pods assigned to it are known (the node watch has not shown it, or it is gone).
    pub node: Option<Node>,
    pub allocatable: Resources,
    pub allocatable_pods: i64,
    pub requested: Resources,
    pub nonzero_requested: Resources,
    pub pods: HashMap<String, PodUsage>,
    /// Assigned pods per spread key.
    pub spread: HashMap<String, i64>,
}

#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Pod uid → the node it is assigned to.
    pod_node: HashMap<String, String>,
}

impl Cache {
    /// Adds or updates a node. Returns whether anything the filters read changed (labels, taints,
    /// unschedulable, allocatable, readiness), i.e. whether unschedulable pods are worth retrying.
    pub fn set_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name).or_default();
        let relevant = info.node.as_ref().is_none_or(|old| filter_view(old) != filter_view(&node));
        let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let get = |k: &str| alloc.and_then(|a| a.get(k));
        info.allocatable = Resources {
            milli_cpu: get("cpu").map(quantity::milli_of).unwrap_or(0),
            memory: get("memory").map(quantity::value_of).unwrap_or(0),
            ephemeral_storage: get("ephemeral-storage").map(quantity::value_of).unwrap_or(0),
        };
        info.allocatable_pods = get("pods").map(quantity::value_of).unwrap_or(0);
        info.node = Some(node);
        relevant
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Assigns a pod (by uid) to a node, replacing any earlier assignment of the same uid.
    pub fn add_pod(&mut self, uid: &str, node: &str, usage: PodUsage) {
        if self.pod_node.get(uid).is_some_and(|n| n == node) {
            return;
        }
        self.remove_pod(uid);
        let info = self.nodes.entry(node.to_string()).or_default();
        info.requested.add(&usage.requests);
        info.nonzero_requested.add(&usage.nonzero);
        if let Some(k) = &usage.spread_key {
            *info.spread.entry(k.clone()).or_default() += 1;
        }
        info.pods.insert(uid.to_string(), usage);
        self.pod_node.insert(uid.to_string(), node.to_string());
    }

    /// Removes a pod's assignment. Returns whether it had one.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(node) = self.pod_node.remove(uid) else { return false };
        if let Some(info) = self.nodes.get_mut(&node) {
            if let Some(usage) = info.pods.remove(uid) {
                info.requested.sub(&usage.requests);
                info.nonzero_requested.sub(&usage.nonzero);
                if let Some(k) = &usage.spread_key {
                    if let Some(c) = info.spread.get_mut(k) {
                        *c -= 1;
                        if *c <= 0 {
                            info.spread.remove(k);
                        }
                    }
                }
            }
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&node);
            }
        }
        true
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.pod_node.get(uid).map(String::as_str)
    }

    /// The uids of every assigned pod.
    pub fn pod_uids(&self) -> Vec<String> {
        self.pod_node.keys().cloned().collect()
    }
}

/// The parts of a node the filters read.
fn filter_view(n: &Node) -> serde_json::Value {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    serde_json::json!({
        "labels": n.metadata.labels,
        "taints": n.spec.as_ref().and_then(|s| s.taints.clone()),
        "unschedulable": n.spec.as_ref().and_then(|s| s.unschedulable),
        "allocatable": n.status.as_ref().and_then(|s| s.allocatable.clone()),
        "ready": ready,
    })
}

/// A pod's requests: the larger of the sum over its containers and each init container, plus the
/// pod overhead (upstream's `resource.PodRequests`). With `nonzero`, unset cpu/memory requests count
/// as 100m/200Mi, the defaults upstream's scoring uses so that best-effort pods still spread.
pub fn pod_requests(pod: &Pod, nonzero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources::default() };
    let one = |c: &k8s_openapi::api::core::v1::Container| {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str| req.and_then(|r| r.get(k));
        let mut r = Resources {
            milli_cpu: get("cpu").map(quantity::milli_of).unwrap_or(0),
            memory: get("memory").map(quantity::value_of).unwrap_or(0),
            ephemeral_storage: get("ephemeral-storage").map(quantity::value_of).unwrap_or(0),
        };
        if nonzero {
            if get("cpu").is_none() {
                r.milli_cpu = 100;
            }
            if get("memory").is_none() {
                r.memory = 200 * 1024 * 1024;
            }
        }
        r
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&one(c));
    }
    for c in spec.init_containers.iter().flatten() {
        let r = one(c);
        total.milli_cpu = total.milli_cpu.max(r.milli_cpu);
        total.memory = total.memory.max(r.memory);
        total.ephemeral_storage = total.ephemeral_storage.max(r.ephemeral_storage);
    }
    if let Some(over) = spec.overhead.as_ref() {
        total.milli_cpu += over.get("cpu").map(quantity::milli_of).unwrap_or(0);
        total.memory += over.get("memory").map(quantity::value_of).unwrap_or(0);
    }
    total
}

/// Pods are spread by their controller (the owner reference with `controller: true`), or, when they
/// have none, by namespace plus their exact labels. Pods with neither are not spread.
pub fn spread_key(pod: &Pod) -> Option<String> {
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    if let Some(o) = owner {
        return Some(format!("owner:{}", o.uid));
    }
    let labels = pod.metadata.labels.as_ref().filter(|l| !l.is_empty())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(format!("labels:{ns}/{}", pairs.join(",")))
}
