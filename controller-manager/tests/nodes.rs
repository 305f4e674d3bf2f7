//! Node IPAM and node lifecycle (taints, eviction, pod GC).
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

async fn node(client: &Client, name: &str, ready: bool) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let n = api.create(&PostParams::default(), &n).await.unwrap();
    heartbeat(client, name, ready).await;
    n
}

/// The fake kubelet's status post and lease renewal.
async fn heartbeat(client: &Client, name: &str, ready: bool) {
    let api: Api<Node> = Api::all(client.clone());
    let now = jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let p = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady",
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({"metadata": {"name": name, "namespace": "kube-node-lease"},
                       "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    match leases.get_opt(name).await.unwrap() {
        None => {
            leases.create(&PostParams::default(), &serde_json::from_value(lease).unwrap()).await.unwrap();
        }
        Some(_) => {
            leases.patch(name, &PatchParams::default(), &Patch::Merge(&lease)).await.unwrap();
        }
    }
}

fn fast_config() -> controller_manager::Config {
    controller_manager::Config {
        node_monitor_grace_period: Duration::from_secs(3),
        node_monitor_period: Duration::from_millis(300),
        podgc_quarantine: Duration::from_secs(3),
        podgc_period: Duration::from_millis(300),
        ..test_config()
    }
}

#[tokio::test]
async fn ipam_gives_each_node_a_distinct_block_and_rebuilds_after_restart() {
    let mut env = Env::start().await;
    let c = env.client.clone();
    for i in 0..3 {
        node(&c, &format!("n{i}"), true).await;
    }
    let api: Api<Node> = Api::all(c.clone());
    let cidrs = eventually(10, "3 pod CIDRs", || async {
        let mut v = Vec::new();
        for i in 0..3 {
            let n = api.get(&format!("n{i}")).await.unwrap();
            let s = n.spec.unwrap_or_default();
            let cidr = s.pod_cidr?;
            assert_eq!(s.pod_cidrs, Some(vec![cidr.clone()]));
            v.push(cidr);
        }
        Some(v)
    })
    .await;
    let set: HashSet<&String> = cidrs.iter().collect();
    assert_eq!(set.len(), 3, "{cidrs:?}");
    assert!(cidrs.iter().all(|c| c.starts_with("127.244.") && c.ends_with(".0/24")), "{cidrs:?}");
    // A fresh controller-manager must not hand out a used block again.
    env.stop_cm(0).await.unwrap();
    env.add_cm(test_config());
    node(&c, "n3", true).await;
    let fourth = eventually(10, "n3 CIDR", || async { api.get("n3").await.unwrap().spec?.pod_cidr }).await;
    assert!(!cidrs.contains(&fourth), "{fourth} reused");
    env.shutdown().await;
}

#[tokio::test]
async fn silent_node_gets_unknown_and_taints_and_its_pods_are_evicted() {
    let env = Env::start_with(fast_config()).await;
    let c = &env.client;
    node(c, "quiet", true).await;
    node(c, "alive", true).await;
    let spec =
        |tol: serde_json::Value| json!({"containers": [{"name": "c", "image": "nginx"}], "tolerations": tol});
    let _: Pod = apply(c, "default", json!({"metadata": {"name": "plain"}, "spec": spec(json!([]))})).await;
    let _: Pod = apply(
        c,
        "default",
        json!({"metadata": {"name": "forever"}, "spec": spec(json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]))}),
    )
    .await;
    let _: Pod = apply(c, "default", json!({"metadata": {"name": "twosec"}, "spec": spec(json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]))})).await;
    let _: Pod = apply(c, "default", json!({"metadata": {"name": "elsewhere"}, "spec": spec(json!([]))})).await;
    for p in ["plain", "forever", "twosec"] {
        bind(c, "default", p, "quiet").await;
    }
    bind(c, "default", "elsewhere", "alive").await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let terminating = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get_opt(name).await.unwrap().is_none_or(|p| p.metadata.deletion_timestamp.is_some()) }
    };
    // "alive" keeps heartbeating; "quiet" stops.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        heartbeat(c, "alive", true).await;
        let n = nodes.get("quiet").await.unwrap();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready").cloned());
        let taints: Vec<(String, String)> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key, t.effect))
            .collect();
        let unknown = ready
            .as_ref()
            .is_some_and(|r| r.status == "Unknown" && r.reason.as_deref() == Some("NodeStatusUnknown"));
        if unknown
            && taints.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into()))
            && taints.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
            && terminating("plain").await
            && terminating("twosec").await
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quiet node not handled: ready={ready:?} taints={taints:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!terminating("forever").await, "a pod tolerating forever stays");
    assert!(!terminating("elsewhere").await, "pods on a healthy node stay");
    assert!(nodes.get("alive").await.unwrap().spec.unwrap_or_default().taints.unwrap_or_default().is_empty());
    // The kubelet comes back: taints go.
    heartbeat(c, "quiet", true).await;
    eventually(10, "taints removed", || async {
        nodes
            .get("quiet")
            .await
            .unwrap()
            .spec
            .unwrap_or_default()
            .taints
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
    // Ready=False → not-ready taint.
    heartbeat(c, "alive", false).await;
    eventually(10, "not-ready taint", || async {
        let t = nodes.get("alive").await.unwrap().spec.unwrap_or_default().taints.unwrap_or_default();
        t.iter().any(|t| t.key == "node.kubernetes.io/not-ready" && t.effect == "NoExecute").then_some(())
    })
    .await;
    env.shutdown().await;
}

/// Taints follow a node's Ready condition as soon as the node changes, not a monitor period later
/// (upstream's NoSchedule tainting pass runs on each node update): with a one-hour period, only
/// the updates can be what moves them.
#[tokio::test]
async fn taints_follow_ready_on_each_node_update_between_monitor_passes() {
    let env = Env::start_with(controller_manager::Config {
        node_monitor_period: Duration::from_secs(3600),
        node_monitor_grace_period: Duration::from_secs(3600),
        ..test_config()
    })
    .await;
    let c = &env.client;
    let nodes: Api<Node> = Api::all(c.clone());
    let taints = |n: Node| -> Vec<(String, String)> {
        n.spec.unwrap_or_default().taints.unwrap_or_default().into_iter().map(|t| (t.key, t.effect)).collect()
    };
    // Let the first monitor pass happen before the node exists, so none of what follows is its.
    tokio::time::sleep(Duration::from_millis(500)).await;
    node(c, "late", false).await;
    eventually(10, "not-ready taints on a NotReady node", || async {
        let t = taints(nodes.get("late").await.unwrap());
        (t.contains(&("node.kubernetes.io/not-ready".into(), "NoSchedule".into()))
            && t.contains(&("node.kubernetes.io/not-ready".into(), "NoExecute".into())))
        .then_some(())
    })
    .await;
    heartbeat(c, "late", true).await;
    eventually(10, "taints gone once Ready", || async {
        taints(nodes.get("late").await.unwrap()).is_empty().then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn pods_bound_to_a_deleted_node_are_force_deleted() {
    let env = Env::start_with(fast_config()).await;
    let c = &env.client;
    node(c, "gone", true).await;
    let _: Pod = apply(
        c,
        "default",
        json!({"metadata": {"name": "stranded"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    bind(c, "default", "stranded", "gone").await;
    Api::<Node>::all(c.clone()).delete("gone", &DeleteParams::default()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    eventually(20, "stranded pod force-deleted", || async {
        pods.get_opt("stranded").await.unwrap().is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}
