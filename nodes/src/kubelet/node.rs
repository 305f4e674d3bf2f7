//! The kubelet's Node: registration, status (conditions, capacity, addresses, nodeInfo, the kubelet
//! endpoint) and the Lease heartbeat, as upstream's kubelet does them.
//!
//! Status: every `status_update_frequency` (and whenever the Node object changes, e.g. when the IPAM
//! controller sets `spec.podCIDR`) the kubelet computes the status it would report and compares it
//! with what the API server holds; it writes when they differ (so a lifecycle controller's
//! Ready=Unknown is corrected at once) or when `status_report_frequency` has passed since its last
//! write. The Lease is renewed every `lease_renew_interval`.

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::ipam::Cidr;
use crate::{Error, NodeConfig};

pub const KUBELET_VERSION: &str = "v1.33.0-kplane";
pub const RUNTIME_VERSION: &str = "kplane-sim://0.1.0";

/// `kubernetes.io/arch` for this machine, in Go's GOARCH spelling.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Identity that does not change across kubelet restarts (derived from the name), except bootID.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
}

impl NodeIdentity {
    pub fn new(name: &str) -> NodeIdentity {
        // FNV-1a of the name, stretched to 128 bits: stable per name, distinct in practice.
        let h = |seed: u64| {
            let mut x: u64 = 0xcbf29ce484222325 ^ seed;
            for b in name.bytes() {
                x ^= u64::from(b);
                x = x.wrapping_mul(0x100000001b3);
            }
            x
        };
        let (a, b) = (h(1), h(2));
        let uuid = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        NodeIdentity {
            machine_id: format!("{a:016x}{b:016x}"),
            system_uuid: uuid,
            boot_id: super::random_hex(32),
        }
    }
}

/// Labels the kubelet sets on its Node.
pub fn labels(cfg: &NodeConfig) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("kubernetes.io/hostname".to_string(), cfg.name.clone());
    l.insert("kubernetes.io/os".to_string(), "linux".to_string());
    l.insert("kubernetes.io/arch".to_string(), arch().to_string());
    l.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    l.insert("beta.kubernetes.io/arch".to_string(), arch().to_string());
    l.insert("node.kubernetes.io/instance-type".to_string(), "kplane-sim".to_string());
    l.extend(cfg.labels.clone());
    l
}

/// The status the kubelet reports, with every condition's times taken from `current` when its
/// status is unchanged (its heartbeat is then refreshed by the caller on write).
pub fn desired_status(
    cfg: &NodeConfig,
    id: &NodeIdentity,
    port: u16,
    network_ready: bool,
    current: Option<&Node>,
    now: Timestamp,
) -> Value {
    let resources = json!({
        "cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.max_pods.to_string(),
        "ephemeral-storage": cfg.ephemeral_storage, "hugepages-1Gi": "0", "hugepages-2Mi": "0",
    });
    let (ready, ready_reason, ready_msg) = if network_ready {
        ("True", "KubeletReady", "kubelet is posting ready status".to_string())
    } else {
        (
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady \
             message:Network plugin returns error: no podCIDR assigned to the node"
                .to_string(),
        )
    };
    let conds = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available".to_string(),
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure".to_string()),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available".to_string()),
        ("Ready", ready, ready_reason, ready_msg),
    ];
    let old: Vec<NodeCondition> =
        current.and_then(|n| n.status.as_ref()).and_then(|s| s.conditions.clone()).unwrap_or_default();
    let conditions: Vec<Value> = conds
        .iter()
        .map(|(t, s, reason, msg)| {
            let prev = old.iter().find(|c| c.type_ == *t);
            let transition = prev
                .filter(|c| c.status == *s)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            let heartbeat = prev
                .filter(|c| c.status == *s)
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            json!({
                "type": t, "status": s, "reason": reason, "message": msg,
                "lastHeartbeatTime": heartbeat.to_string(), "lastTransitionTime": transition.to_string(),
            })
        })
        .collect();
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": id.machine_id, "systemUUID": id.system_uuid, "bootID": id.boot_id,
            "kernelVersion": "6.0.0-kplane", "osImage": "kplane simulated node",
            "containerRuntimeVersion": RUNTIME_VERSION, "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch(),
        },
    })
}

/// The status as the API server holds it, in the same JSON shape, for comparison.
fn current_status(node: &Node) -> Value {
    serde_json::to_value(node.status.clone().unwrap_or_default()).unwrap_or_default()
}

/// Whether two statuses differ in anything but heartbeat times.
fn differs(desired: &Value, current: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastHeartbeatTime");
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    let (d, c) = (strip(desired), strip(current));
    ["capacity", "allocatable", "conditions", "addresses", "daemonEndpoints", "nodeInfo"].iter().any(|k| {
        let (a, b) = (d.get(*k), c.get(*k));
        match (a, b) {
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                // Order-insensitive for lists (conditions may be reordered by other writers).
                x.len() != y.len() || x.iter().any(|e| !y.contains(e))
            }
            _ => a != b,
        }
    })
}

/// Creates the Node, or reconciles an existing one's labels. Returns the Node as stored.
pub async fn register(
    api: &Api<Node>,
    cfg: &NodeConfig,
    id: &NodeIdentity,
    port: u16,
) -> Result<Node, kube::Error> {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": cfg.name, "labels": labels(cfg),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {},
        "status": desired_status(cfg, id, port, false, None, Timestamp::now()),
    }))
    .expect("a valid Node");
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": labels(cfg)}});
            api.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch)).await
        }
        Err(e) => Err(e),
    }
}

/// Keeps the node status current until `stop`. `latest` is the Node as last seen by the node watch;
/// `cidr` is set once the node has a podCIDR.
pub async fn run_status(
    api: Api<Node>,
    cfg: NodeConfig,
    id: NodeIdentity,
    port: u16,
    mut latest: watch::Receiver<Option<Node>>,
    cidr: watch::Receiver<Option<Cidr>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_write: Option<Instant> = None;
    let mut tick = tokio::time::interval(cfg.status_update_frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let current = latest.borrow_and_update().clone();
        let ready = cidr.borrow().is_some();
        let now = Timestamp::now();
        let desired = desired_status(&cfg, &id, port, ready, current.as_ref(), now);
        let due = last_write.is_none_or(|t| t.elapsed() >= cfg.status_report_frequency);
        let changed = current.as_ref().is_none_or(|n| differs(&desired, &current_status(n)));
        if due || changed {
            let mut status = desired;
            for c in status["conditions"].as_array_mut().into_iter().flatten() {
                c["lastHeartbeatTime"] = json!(now.to_string());
            }
            match api
                .patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
                .await
            {
                Ok(_) => last_write = Some(Instant::now()),
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    // Someone deleted our Node: register again (upstream's kubelet would need a
                    // restart; re-registering keeps a simulated cluster whole).
                    tracing::warn!(node = %cfg.name, "node object deleted; registering again");
                    if let Err(e) = register(&api, &cfg, &id, port).await {
                        tracing::warn!(node = %cfg.name, error = %e, "re-registration failed");
                    }
                }
                Err(e) => tracing::warn!(node = %cfg.name, error = %e, "node status update failed"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            r = latest.changed() => if r.is_err() { return },
        }
    }
}

/// Renews `kube-node-lease/<name>` every `lease_renew_interval` until `stop`.
pub async fn run_lease(client: Client, cfg: NodeConfig, node_uid: String, mut stop: watch::Receiver<bool>) {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(cfg.lease_renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = renew(&api, &cfg, &node_uid).await {
            tracing::warn!(node = %cfg.name, error = %e, "lease renewal failed");
        }
    }
}

async fn renew(api: &Api<Lease>, cfg: &NodeConfig, node_uid: &str) -> Result<(), kube::Error> {
    let now = Timestamp::now().to_string();
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {
                    "name": cfg.name, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": cfg.name, "uid": node_uid}],
                },
                "spec": {"holderIdentity": cfg.name, "leaseDurationSeconds": cfg.lease_duration_seconds, "renewTime": now},
            }))
            .expect("a valid Lease");
            api.create(&PostParams::default(), &lease).await?;
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(cfg.name.clone());
            spec.lease_duration_seconds = Some(cfg.lease_duration_seconds);
            spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now()));
            if lease.owner_references().iter().all(|o| o.uid != node_uid) {
                lease.metadata.owner_references = Some(vec![serde_json::from_value(json!(
                    {"apiVersion": "v1", "kind": "Node", "name": cfg.name, "uid": node_uid}
                ))
                .expect("a valid owner reference")]);
            }
            // A conflict means someone else wrote it; the next tick tries again.
            api.replace(&cfg.name, &PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// Registration is retried (upstream's kubelet retries forever) until it works or `stop`.
pub async fn register_until_done(
    api: &Api<Node>,
    cfg: &NodeConfig,
    id: &NodeIdentity,
    port: u16,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Node>, Error> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match register(api, cfg, id, port).await {
            Ok(n) => return Ok(Some(n)),
            // A 4xx other than conflict/throttling will not get better by retrying.
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
                return Err(Error::api(format!("registering node {}", cfg.name), kube::Error::Api(s)));
            }
            Err(e) => tracing::warn!(node = %cfg.name, error = %e, "node registration failed; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(7));
    }
}

/// The node's name as a ResourceExt, for the owner reference.
pub fn uid_of(node: &Node) -> String {
    node.uid().unwrap_or_default()
}
