//! Leader election: two controller-managers, one leads; the other takes over.
mod common;

use std::time::Duration;

use common::*;
use controller_manager::Config;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

fn elected(identity: &str) -> Config {
    Config {
        leader_elect: true,
        identity: Some(identity.into()),
        leader_elect_lease_duration: Duration::from_secs(2),
        leader_elect_renew_deadline: Duration::from_millis(1500),
        leader_elect_retry_period: Duration::from_millis(200),
        ..Config::default()
    }
}

async fn holder(client: &Client) -> Option<(String, i32)> {
    let l = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt("kube-controller-manager")
        .await
        .unwrap()?;
    let s = l.spec?;
    Some((s.holder_identity.filter(|h| !h.is_empty())?, s.lease_transitions.unwrap_or(0)))
}

fn rs(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "le"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "le"}},
                    "template": {"metadata": {"labels": {"app": "le"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[tokio::test]
async fn one_leader_runs_the_controllers_and_the_standby_takes_over() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(elected("cm-a"));
    env.add_cm(elected("cm-b"));
    let (first, transitions) = eventually(10, "a leader", || holder(&c)).await;
    assert!(first == "cm-a" || first == "cm-b");
    // Exactly one set of controllers: 5 replicas make exactly 5 pods, and stay 5.
    let _: ReplicaSet = apply(&c, "default", rs(5)).await;
    eventually(10, "5 pods", || async { (pods(&c, "default", "app=le").await.len() == 5).then_some(()) }).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pods(&c, "default", "app=le").await.len(), 5);
    }
    // The leader stops cleanly (releases); the standby leads and its controllers act.
    let idx = if first == "cm-a" { 0 } else { 1 };
    env.stop_cm(idx).await.unwrap();
    let (second, t2) =
        eventually(10, "the standby leads", || async { holder(&c).await.filter(|(h, _)| *h != first) }).await;
    assert!(t2 > transitions, "leaseTransitions bumped on takeover");
    Api::<ReplicaSet>::namespaced(c.clone(), "default")
        .patch("le", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 7}})))
        .await
        .unwrap();
    eventually(10, &format!("{second} scales to 7"), || async {
        (pods(&c, "default", "app=le").await.len() == 7).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_within_the_lease_duration() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(elected("cm-a"));
    eventually(10, "cm-a leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    env.add_cm(elected("cm-b"));
    // No release: the task is aborted, as if the process died.
    env.abort_cm(0);
    eventually(10, "cm-b takes over after the lease expires", || async {
        holder(&c).await.filter(|(h, _)| h == "cm-b")
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn losing_the_lease_stops_the_controllers_and_returns_an_error() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(elected("cm-a"));
    eventually(10, "cm-a leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    // Someone else takes the lease (as a partitioned leader would experience it).
    let renew = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    Api::<Lease>::namespaced(c.clone(), "kube-system")
        .patch(
            "kube-controller-manager",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"holderIdentity": "intruder", "renewTime": renew, "leaseDurationSeconds": 60}})),
        )
        .await
        .unwrap();
    let r = env.wait_cm_exit(0, 10).await;
    assert!(matches!(r, Err(controller_manager::Error::LeaderElectionLost)), "{r:?}");
    // Its controllers are gone: a new ReplicaSet gets no pods.
    let _: ReplicaSet = apply(&c, "default", rs(2)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(pods(&c, "default", "app=le").await.is_empty());
    env.shutdown().await;
}
