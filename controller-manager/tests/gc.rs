//! Garbage collector: background, foreground and orphan deletion; dangling owners.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn deploy(client: &Client, name: &str) {
    let _: Deployment = apply(
        client,
        "default",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    eventually(20, "2 pods", || async {
        (active_pods(client, "default", &format!("app={name}")).await.len() == 2).then_some(())
    })
    .await;
}

async fn rsets(client: &Client, app: &str) -> Vec<ReplicaSet> {
    Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn delete_with(p: PropagationPolicy) -> DeleteParams {
    DeleteParams { propagation_policy: Some(p), ..Default::default() }
}

#[tokio::test]
async fn background_deletion_removes_replicasets_and_pods() {
    let env = Env::start().await;
    let c = &env.client;
    deploy(c, "bg").await;
    Api::<Deployment>::namespaced(c.clone(), "default")
        .delete("bg", &delete_with(PropagationPolicy::Background))
        .await
        .unwrap();
    eventually(20, "no RS and no pod left", || async {
        (rsets(c, "bg").await.is_empty() && pods(c, "default", "app=bg").await.is_empty()).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let env = Env::start().await;
    let c = &env.client;
    deploy(c, "fg").await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    api.delete("fg", &delete_with(PropagationPolicy::Foreground)).await.unwrap();
    eventually(20, "deployment, RS and pods all gone", || async {
        let d = api.get_opt("fg").await.unwrap();
        if let Some(d) = &d {
            // While it exists it is Terminating with the foregroundDeletion finalizer.
            assert!(d.metadata.deletion_timestamp.is_some());
        }
        (d.is_none() && rsets(c, "fg").await.is_empty() && pods(c, "default", "app=fg").await.is_empty())
            .then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_owner_reference() {
    let env = Env::start().await;
    let c = &env.client;
    deploy(c, "or").await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    api.delete("or", &delete_with(PropagationPolicy::Orphan)).await.unwrap();
    eventually(20, "deployment gone, RS orphaned", || async {
        let gone = api.get_opt("or").await.unwrap().is_none();
        let rs = rsets(c, "or").await;
        (gone && rs.len() == 1 && rs[0].owner_references().is_empty()).then_some(())
    })
    .await;
    // The pods stay, still owned by the RS.
    let ps = active_pods(c, "default", "app=or").await;
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|p| p.owner_references().len() == 1 && p.owner_references()[0].kind == "ReplicaSet"));
    env.shutdown().await;
}

#[tokio::test]
async fn object_with_a_dangling_owner_is_collected() {
    let env = Env::start().await;
    let c = &env.client;
    let _: ConfigMap = apply(
        c,
        "default",
        json!({"metadata": {"name": "dangling", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000001"}]}}),
    )
    .await;
    let owner: ConfigMap = apply(c, "default", json!({"metadata": {"name": "owner"}})).await;
    let _: ConfigMap = apply(
        c,
        "default",
        json!({"metadata": {"name": "owned", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()}]}}),
    )
    .await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    eventually(20, "dangling configmap collected", || async {
        api.get_opt("dangling").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(api.get_opt("owned").await.unwrap().is_some(), "an object with a live owner stays");
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually(20, "dependent collected after its owner", || async {
        api.get_opt("owned").await.unwrap().is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn pod_claiming_a_missing_replicaset_is_collected_and_nothing_crashes() {
    let env = Env::start().await;
    let c = &env.client;
    let _: k8s_openapi::api::core::v1::Pod = apply(
        c,
        "default",
        json!({"metadata": {"name": "stray", "labels": {"app": "stray"}, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nowhere",
                 "uid": "00000000-0000-0000-0000-000000000002", "controller": true, "blockOwnerDeletion": true}]},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    eventually(20, "stray pod collected", || async {
        pods(c, "default", "app=stray").await.is_empty().then_some(())
    })
    .await;
    deploy(c, "after").await;
    env.shutdown().await;
}
