//! The scheduler's view of the cluster: every node, and per node the pods assigned to it (bound, or
//! assumed while their binding is in flight) with what they request. Kept from the watches, so a
//! scheduling decision never lists anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::selector::{self, Selector};
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

/// What one assigned pod takes from its node, and what the inter-pod plugins read of it.
#[derive(Clone, Debug, Default)]
pub struct PodUsage {
    pub requests: Resources,
    /// Requests with upstream's scoring defaults (100m cpu, 200Mi memory) for unset ones.
    pub nonzero: Resources,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: upstream's topology spreading does not count it.
    pub terminating: bool,
    /// Its pod affinity/anti-affinity terms, when it has any.
    pub affinity: Option<Arc<PodAffinityTerms>>,
}

impl PodUsage {
    pub fn of(pod: &Pod) -> PodUsage {
        let requests = pod_requests(pod, false);
        let nonzero = pod_requests(pod, true);
        let terms = PodAffinityTerms::of(pod);
        PodUsage {
            requests,
            nonzero,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            affinity: (!terms.is_empty()).then(|| Arc::new(terms)),
        }
    }
}

/// The namespaces a pod affinity term looks at (upstream's `GetNamespacesFromPodAffinityTerm`):
/// the listed ones, else the pod's own; an empty `namespaceSelector` ({}) means all namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(Vec<String>),
}

/// One `PodAffinityTerm` (with its weight when it is a preferred one).
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// None: matches no pod (a nil or invalid labelSelector).
    pub selector: Option<Selector>,
    pub namespaces: Namespaces,
    pub topology_key: String,
    pub weight: i64,
}

impl AffinityTerm {
    fn of(t: &PodAffinityTerm, own_ns: &str, weight: i64) -> AffinityTerm {
        let listed = t.namespaces.clone().unwrap_or_default();
        let all = t.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        });
        let namespaces = if all {
            Namespaces::All
        } else if listed.is_empty() && t.namespace_selector.is_none() {
            Namespaces::Only(vec![own_ns.to_string()])
        } else {
            Namespaces::Only(listed)
        };
        AffinityTerm {
            selector: selector::of(t.label_selector.as_ref()),
            namespaces,
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// Whether the pod with these labels in this namespace is one the term selects.
    pub fn matches(&self, ns: &str, labels: &BTreeMap<String, String>) -> bool {
        let in_ns = match &self.namespaces {
            Namespaces::All => true,
            Namespaces::Only(l) => l.iter().any(|n| n == ns),
        };
        in_ns && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod's `affinity.podAffinity` and `affinity.podAntiAffinity` terms.
#[derive(Clone, Debug, Default)]
pub struct PodAffinityTerms {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti: Vec<AffinityTerm>,
}

impl PodAffinityTerms {
    pub fn of(pod: &Pod) -> PodAffinityTerms {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let anti = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let req = |v: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            v.into_iter().flatten().map(|t| AffinityTerm::of(t, ns, 1)).collect()
        };
        let pref = |v: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<AffinityTerm> {
            v.into_iter()
                .flatten()
                .map(|w| AffinityTerm::of(&w.pod_affinity_term, ns, i64::from(w.weight)))
                .collect()
        };
        PodAffinityTerms {
            required_affinity: req(
                pa.and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref())
            ),
            required_anti: req(
                anti.and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref())
            ),
            preferred_affinity: pref(
                pa.and_then(|p| p.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_anti: pref(
                anti.and_then(|p| p.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti.is_empty()
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
    /// The pods of `pods` that are not terminating, counted by (namespace, labels): topology
    /// spreading counts the pods a selector matches on every node for every decision, and the
    /// pods of one controller share their labels, so it matches a few groups instead of every pod
    /// (at 10,000 pods, matching each pod made scheduling quadratic).
    pub spread_groups: HashMap<(String, BTreeMap<String, String>), i64>,
    /// How many of `pods` have pod affinity/anti-affinity terms.
    pub with_affinity: usize,
}

impl NodeInfo {
    /// The node's labels (none while the node is unknown).
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref())
    }
}

#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Pod uid → the node it is assigned to.
    pod_node: HashMap<String, String>,
    /// Assigned pods with pod affinity/anti-affinity terms (the inter-pod plugins skip the pods
    /// of nodes that have none).
    pub with_affinity: usize,
    /// The selectors of Services, ReplicationControllers, ReplicaSets and StatefulSets, for the
    /// default topology spreading.
    pub owners: Owners,
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
        self.remove_pod(uid);
        let info = self.nodes.entry(node.to_string()).or_default();
        info.requested.add(&usage.requests);
        info.nonzero_requested.add(&usage.nonzero);
        if usage.affinity.is_some() {
            info.with_affinity += 1;
            self.with_affinity += 1;
        }
        if !usage.terminating {
            *info.spread_groups.entry((usage.namespace.clone(), usage.labels.clone())).or_default() += 1;
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
                if usage.affinity.is_some() {
                    info.with_affinity -= 1;
                    self.with_affinity -= 1;
                }
                if !usage.terminating {
                    let group = (usage.namespace, usage.labels);
                    if let Some(n) = info.spread_groups.get_mut(&group) {
                        *n -= 1;
                        if *n <= 0 {
                            info.spread_groups.remove(&group);
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

/// The selectors upstream's `helper.DefaultSelector` reads, by namespace and name.
#[derive(Debug, Default)]
pub struct Owners {
    /// Service selectors by (namespace, name); a Service without a selector is left out.
    pub services_flat: HashMap<(String, String), BTreeMap<String, String>>,
    pub rcs: HashMap<(String, String), BTreeMap<String, String>>,
    pub replicasets: HashMap<(String, String), Option<Selector>>,
    pub statefulsets: HashMap<(String, String), Option<Selector>>,
}

impl Owners {
    /// Upstream's `DefaultSelector`: the selectors of the Services that select the pod, merged,
    /// plus the selector of its controlling ReplicationController, ReplicaSet or StatefulSet.
    /// Empty when there are none (then the pod is not spread by default).
    pub fn default_selector(&self, pod: &Pod) -> Selector {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let mut set: BTreeMap<String, String> = BTreeMap::new();
        for ((_, _), sel) in self.services_flat.iter().filter(|((n, _), _)| *n == ns) {
            if Selector::from_map(sel).matches(labels) {
                set.extend(sel.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
        let Some(owner) = owner else { return Selector::from_map(&set) };
        let key = (ns, owner.name.clone());
        let group = owner.api_version.split('/').rev().nth(1).unwrap_or_default();
        match (group, owner.kind.as_str()) {
            ("", "ReplicationController") => {
                if let Some(sel) = self.rcs.get(&key) {
                    set.extend(sel.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Selector::from_map(&set)
            }
            ("apps", "ReplicaSet") | ("apps", "StatefulSet") => {
                let map = if owner.kind == "ReplicaSet" { &self.replicasets } else { &self.statefulsets };
                let mut out = Selector::from_map(&set);
                if let Some(Some(sel)) = map.get(&key) {
                    out.add(sel.clone());
                }
                out
            }
            _ => Selector::from_map(&set),
        }
    }
}

/// Building caches in the plugins' unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;
    use serde_json::{json, Value};

    /// A Ready node with 4 cpu, 8Gi, 110 pods and these labels (plus its hostname label).
    pub fn node(name: &str, labels: Value) -> Node {
        let mut l = labels.as_object().cloned().unwrap_or_default();
        l.insert("kubernetes.io/hostname".into(), json!(name));
        serde_json::from_value(json!({"metadata": {"name": name, "labels": l},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    /// A pod in `default` with these labels and spec fields (containers default to one nginx).
    pub fn pod(name: &str, labels: Value, spec: Value) -> Pod {
        let mut spec = spec.as_object().cloned().unwrap_or_default();
        spec.entry("containers").or_insert(json!([{"name": "c", "image": "nginx"}]));
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name,
            "labels": labels}, "spec": spec}))
        .unwrap()
    }

    pub fn cache(nodes: Vec<Node>, pods: Vec<(&str, Pod)>) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.set_node(n);
        }
        for (node, p) in pods {
            c.add_pod(p.metadata.uid.as_deref().unwrap(), node, PodUsage::of(&p));
        }
        c
    }

    pub fn infos(c: &Cache) -> Vec<&NodeInfo> {
        c.nodes.values().filter(|i| i.node.is_some()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{cache, node, pod};
    use super::*;
    use serde_json::json;

    fn groups(c: &Cache, node: &str) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = c.nodes[node]
            .spread_groups
            .iter()
            .map(|((ns, labels), n)| (format!("{ns}/{}", labels.get("app").cloned().unwrap_or_default()), *n))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn spread_groups_follow_adds_updates_and_removals() {
        let mut c = cache(
            vec![node("n1", json!({}))],
            vec![
                ("n1", pod("a", json!({"app": "web"}), json!({}))),
                ("n1", pod("b", json!({"app": "web"}), json!({}))),
                ("n1", pod("c", json!({"app": "db"}), json!({}))),
            ],
        );
        assert_eq!(groups(&c, "n1"), [("default/db".into(), 1), ("default/web".into(), 2)]);
        // The same uid again, now terminating: it leaves its group (spreading ignores it).
        let mut b = pod("b", json!({"app": "web"}), json!({}));
        b.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        c.add_pod("b", "n1", PodUsage::of(&b));
        assert_eq!(groups(&c, "n1"), [("default/db".into(), 1), ("default/web".into(), 1)]);
        assert!(c.remove_pod("b"));
        assert!(c.remove_pod("c"));
        assert_eq!(groups(&c, "n1"), [("default/web".into(), 1)], "an emptied group is dropped");
        assert!(c.remove_pod("a"));
        assert!(c.nodes["n1"].spread_groups.is_empty());
    }
}
