//! The pod garbage collector through kube-rs on an in-process cluster, with a short quarantine:
//! what a pod looks like on its way out (Failed, DisruptionTarget/DeletionByPodGC), and the
//! out-of-service rule. (The threshold and the 40 s quarantine are tested with the real kubectl
//! in the root `tests/podgc.rs`.)
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

fn fast() -> controller_manager::Config {
    controller_manager::Config {
        podgc_quarantine: Duration::from_secs(2),
        podgc_period: Duration::from_millis(200),
        ..test_config()
    }
}

async fn node(c: &Client, name: &str, ready: &str, taints: serde_json::Value) {
    let api: Api<Node> = Api::all(c.clone());
    let n: Node =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints}})).unwrap();
    api.create(&PostParams::default(), &n).await.unwrap();
    let now = jiff::Timestamp::now().to_string();
    let p = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
}

async fn pod_on(c: &Client, name: &str, node_name: &str) {
    let _: Pod = apply(
        c,
        "default",
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx"}],
            "tolerations": [{"operator": "Exists"}]}}),
    )
    .await;
    bind(c, "default", name, node_name).await;
    make_ready(c, "default", name).await;
}

#[tokio::test]
async fn a_pod_of_a_deleted_node_is_marked_failed_with_a_disruption_target_then_force_deleted() {
    let env = Env::start_with(fast()).await;
    let c = env.client.clone();
    node(&c, "gone", "True", json!([])).await;
    pod_on(&c, "stranded", "gone").await;
    // Everything the pod goes through, from a watch.
    let seen: Arc<Mutex<Vec<Pod>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let w = {
        let (seen, pods) = (seen.clone(), pods.clone());
        tokio::spawn(async move {
            let mut s = Box::pin(watcher(pods, watcher::Config::default()));
            while let Some(Ok(ev)) = s.next().await {
                if let watcher::Event::Apply(p) | watcher::Event::Delete(p) = ev {
                    seen.lock().unwrap().push(p);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = std::time::Instant::now();
    Api::<Node>::all(c.clone()).delete("gone", &DeleteParams::default()).await.unwrap();
    eventually(20, "stranded force-deleted", || async {
        pods.get_opt("stranded").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(deleted.elapsed() >= Duration::from_secs(2), "not before the quarantine");
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.abort();
    let seen: Vec<Pod> = seen.lock().unwrap().clone();
    let marked = seen
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .expect("the pod was marked Failed before it went");
    let cond = marked
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionTarget"))
        .expect("a DisruptionTarget condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref(), cond.message.as_deref()),
        ("True", Some("DeletionByPodGC"), Some("PodGC: node no longer exists"))
    );
    env.shutdown().await;
}

#[tokio::test]
async fn terminating_pods_on_out_of_service_nodes_are_force_deleted_and_only_there() {
    let env = Env::start_with(fast()).await;
    let c = env.client.clone();
    let oos =
        json!([{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]);
    node(&c, "down", "False", oos).await;
    node(&c, "slow", "False", json!([])).await;
    pod_on(&c, "on-down", "down").await;
    pod_on(&c, "on-slow", "slow").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // Deleted with a grace period: no kubelet ever confirms, so both stay terminating...
    let dp = DeleteParams { grace_period_seconds: Some(300), ..Default::default() };
    pods.delete("on-down", &dp).await.unwrap();
    pods.delete("on-slow", &dp).await.unwrap();
    // ...except on the out-of-service node, where the pod GC force-deletes it.
    eventually(10, "on-down force-deleted", || async {
        pods.get_opt("on-down").await.unwrap().is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let slow = pods.get_opt("on-slow").await.unwrap().expect("on-slow waits for its kubelet");
    assert!(slow.metadata.deletion_timestamp.is_some());
    env.shutdown().await;
}
