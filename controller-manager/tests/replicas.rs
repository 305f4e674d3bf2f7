//! ReplicaSet and ReplicationController controllers against an in-process API server.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ReplicationController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

fn rs(name: &str, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    })
}

async fn scale_rs(env: &Env, name: &str, replicas: i32) {
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap();
}

async fn wait_active(env: &Env, sel: &str, n: usize) {
    eventually(20, &format!("{n} active pods for {sel}"), || async {
        (active_pods(&env.client, "default", sel).await.len() == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicaset_scales_up_and_down_with_owned_pods_and_status() {
    let env = Env::start().await;
    let created: ReplicaSet = apply(&env.client, "default", rs("web", 3)).await;
    wait_active(&env, "app=web", 3).await;
    for p in active_pods(&env.client, "default", "app=web").await {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("ReplicaSet", created.uid().unwrap().as_str()));
        assert_eq!((r.controller, r.block_owner_deletion), (Some(true), Some(true)));
    }
    // Two become ready: status counts follow.
    let pods = active_pods(&env.client, "default", "app=web").await;
    make_ready(&env.client, "default", &pods[0].name_any()).await;
    make_ready(&env.client, "default", &pods[1].name_any()).await;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    eventually(10, "status 3/3 labeled, 2 ready, 2 available", || async {
        let s = api.get("web").await.unwrap().status.unwrap_or_default();
        (s.replicas == 3
            && s.fully_labeled_replicas == Some(3)
            && s.ready_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;

    // Scale down to 1: the not-ready pod goes first, a ready one goes next.
    scale_rs(&env, "web", 1).await;
    wait_active(&env, "app=web", 1).await;
    let left = active_pods(&env.client, "default", "app=web").await;
    assert!(
        left[0].name_any() == pods[0].name_any() || left[0].name_any() == pods[1].name_any(),
        "the unready pod must not survive"
    );
    eventually(10, "status replicas 1, observedGeneration 2", || async {
        let s = api.get("web").await.unwrap().status.unwrap_or_default();
        (s.replicas == 1 && s.observed_generation == Some(2)).then_some(())
    })
    .await;

    // Events.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually(10, "SuccessfulCreate and SuccessfulDelete events", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let has = |r: &str| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some(r)
                    && e.involved_object.name.as_deref() == Some("web")
                    && e.reporting_component.as_deref() == Some("replicaset-controller")
            })
        };
        (has("SuccessfulCreate") && has("SuccessfulDelete")).then_some(())
    })
    .await;
    // One SuccessfulCreate per pod, each naming its pod, not one folded series.
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    let created: Vec<String> = evs
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("SuccessfulCreate") && e.involved_object.name.as_deref() == Some("web")
        })
        .filter_map(|e| e.related.as_ref().and_then(|r| r.name.clone()))
        .collect();
    assert_eq!(created.len(), 3, "{created:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn replicaset_replaces_a_deleted_pod_and_never_overshoots() {
    let env = Env::start().await;
    let _: ReplicaSet = apply(&env.client, "default", rs("r", 5)).await;
    wait_active(&env, "app=r", 5).await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let victim = active_pods(&env.client, "default", "app=r").await[0].name_any();
    api.delete(&victim, &DeleteParams::default()).await.unwrap();
    eventually(10, "a replacement pod", || async {
        let names: Vec<String> =
            active_pods(&env.client, "default", "app=r").await.iter().map(|p| p.name_any()).collect();
        (names.len() == 5 && !names.contains(&victim)).then_some(())
    })
    .await;
    // Stable: no duplicates appear later.
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(pods(&env.client, "default", "app=r").await.len(), 5);
    }
    env.shutdown().await;
}

#[tokio::test]
async fn replicaset_adopts_orphans_and_releases_pods_that_stop_matching() {
    let env = Env::bare().await;
    // Two orphans exist before the controller starts.
    for i in 0..2 {
        let _: Pod = apply(
            &env.client,
            "default",
            json!({"metadata": {"name": format!("orphan-{i}"), "labels": {"app": "a"}},
                   "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        )
        .await;
    }
    let mut env = env;
    env.add_cm(test_config());
    let owner: ReplicaSet = apply(&env.client, "default", rs("a", 3)).await;
    wait_active(&env, "app=a", 3).await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for i in 0..2 {
        let p = api.get(&format!("orphan-{i}")).await.unwrap();
        let r = p.owner_references();
        assert_eq!(r.len(), 1, "orphan-{i} adopted");
        assert_eq!(r[0].uid, owner.uid().unwrap());
    }
    // Relabel one: it is released and replaced.
    api.patch(
        "orphan-0",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    eventually(10, "orphan-0 released", || async {
        api.get("orphan-0").await.unwrap().owner_references().is_empty().then_some(())
    })
    .await;
    wait_active(&env, "app=a", 3).await;
    env.shutdown().await;
}

#[tokio::test]
async fn terminating_pods_do_not_count_as_replicas() {
    let env = Env::start().await;
    let _: ReplicaSet = apply(&env.client, "default", rs("t", 2)).await;
    wait_active(&env, "app=t", 2).await;
    // A bound pod deletes gracefully: it stays, with a deletionTimestamp, and a replacement comes.
    let p = active_pods(&env.client, "default", "app=t").await[0].name_any();
    bind(&env.client, "default", &p, "node-1").await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    api.delete(&p, &DeleteParams::default()).await.unwrap();
    eventually(10, "replacement while the old pod terminates", || async {
        let all = pods(&env.client, "default", "app=t").await;
        let terminating = all.iter().any(|x| x.name_any() == p && x.metadata.deletion_timestamp.is_some());
        (terminating && all.len() == 3).then_some(())
    })
    .await;
    let rsapi: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    eventually(10, "status.replicas counts active pods only", || async {
        (rsapi.get("t").await.unwrap().status.unwrap_or_default().replicas == 2).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn failed_creates_record_failedcreate_and_recover() {
    let mut env = Env::bare().await;
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let faulty = pod_create_failing_client(&env, fail.clone());
    env.add_cm_with(faulty, test_config());
    let _: ReplicaSet = apply(&env.client, "default", rs("flaky", 3)).await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually(10, "FailedCreate warning", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        evs.iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedCreate")
                    && e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some("flaky")
            })
            .then_some(())
    })
    .await;
    assert!(pods(&env.client, "default", "app=flaky").await.is_empty());
    // The fault clears: the controller retries and converges.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_active(&env, "app=flaky", 3).await;
    env.shutdown().await;
}

#[tokio::test]
async fn replication_controller_manages_pods_like_a_replicaset() {
    let env = Env::start().await;
    let rc: ReplicationController = apply(
        &env.client,
        "default",
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "legacy"},
               "spec": {"replicas": 2, "selector": {"app": "legacy"},
                        "template": {"metadata": {"labels": {"app": "legacy"}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    wait_active(&env, "app=legacy", 2).await;
    let p = &active_pods(&env.client, "default", "app=legacy").await[0];
    assert_eq!(p.owner_references()[0].kind, "ReplicationController");
    assert_eq!(p.owner_references()[0].uid, rc.uid().unwrap());
    make_ready(&env.client, "default", &p.name_any()).await;
    let api: Api<ReplicationController> = Api::namespaced(env.client.clone(), "default");
    eventually(10, "rc status", || async {
        let s = api.get("legacy").await.unwrap().status.unwrap_or_default();
        (s.replicas == 2 && s.ready_replicas == Some(1) && s.available_replicas == Some(1)).then_some(())
    })
    .await;
    api.patch("legacy", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    wait_active(&env, "app=legacy", 4).await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_thousand_replica_replicaset_reaches_a_thousand_pods() {
    let env = Env::start().await;
    let _: ReplicaSet = apply(&env.client, "default", rs("big", 1000)).await;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    eventually(120, "1000 replicas in status", || async {
        (api.get("big").await.unwrap().status.unwrap_or_default().replicas == 1000).then_some(())
    })
    .await;
    assert_eq!(pods(&env.client, "default", "app=big").await.len(), 1000);
    env.shutdown().await;
}

#[tokio::test]
async fn available_replicas_wait_for_min_ready_seconds() {
    let env = Env::start().await;
    let mut v = rs("mr", 1);
    v["spec"]["minReadySeconds"] = json!(2);
    let _: ReplicaSet = apply(&env.client, "default", v).await;
    wait_active(&env, "app=mr", 1).await;
    let p = active_pods(&env.client, "default", "app=mr").await[0].name_any();
    make_ready(&env.client, "default", &p).await;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    eventually(10, "ready but not yet available", || async {
        let s = api.get("mr").await.unwrap().status.unwrap_or_default();
        (s.ready_replicas == Some(1) && s.available_replicas.unwrap_or(0) == 0).then_some(())
    })
    .await;
    // Nothing else changes: the controller must come back by itself once minReadySeconds pass.
    eventually(10, "available after minReadySeconds", || async {
        (api.get("mr").await.unwrap().status.unwrap_or_default().available_replicas == Some(1)).then_some(())
    })
    .await;
    env.shutdown().await;
}
