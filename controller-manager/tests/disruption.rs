//! The PodDisruptionBudget status controller against an in-process API server: expected and healthy
//! pods for each spec form (integer, percentage, maxUnavailable through a ReplicaSet's scale),
//! unmanaged pods, a sync failure (SyncFailed), evictions recorded in disruptedPods, and the
//! generation it observed; plus the ResourceQuota status controller's hard/used.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ResourceQuota};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::api::{Api, ListParams, Patch, PatchParams};
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

fn pdb(name: &str, app: &str, field: &str, value: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {field: value, "selector": {"matchLabels": {"app": app}}},
    })
}

async fn status_when(
    env: &Env,
    name: &str,
    what: &str,
    ok: impl Fn(&PodDisruptionBudgetStatus) -> bool,
) -> PodDisruptionBudgetStatus {
    let api: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), "default");
    eventually(20, what, || async {
        let p = api.get(name).await.unwrap();
        let s = p.status.clone().unwrap_or_default();
        (s.observed_generation == p.metadata.generation && ok(&s)).then_some(s)
    })
    .await
}

fn condition(s: &PodDisruptionBudgetStatus) -> (String, String) {
    let c = s.conditions.as_ref().and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed")).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn pdb_status_follows_pods_and_scale() {
    let env = Env::start().await;
    let _: ReplicaSet = apply(&env.client, "default", rs("web", 4)).await;
    eventually(20, "4 pods", || async {
        (active_pods(&env.client, "default", "app=web").await.len() == 4).then_some(())
    })
    .await;
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("min", "web", "minAvailable", json!(2))).await;
    let s = status_when(&env, "min", "nothing ready yet", |s| s.expected_pods == 4).await;
    assert_eq!((s.current_healthy, s.desired_healthy, s.disruptions_allowed), (0, 2, 0));
    assert_eq!(condition(&s), ("False".into(), "InsufficientPods".into()));

    make_all_ready(&env.client, "default", "app=web").await;
    let s = status_when(&env, "min", "4 healthy", |s| s.current_healthy == 4).await;
    assert_eq!(s.disruptions_allowed, 2);
    assert_eq!(condition(&s), ("True".into(), "SufficientPods".into()));

    // maxUnavailable as a percentage of the ReplicaSet's scale (4 * 30% rounds up to 2).
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("max", "web", "maxUnavailable", json!("30%"))).await;
    let s = status_when(&env, "max", "max status", |s| s.current_healthy == 4).await;
    assert_eq!((s.expected_pods, s.desired_healthy, s.disruptions_allowed), (4, 2, 2));
    // minAvailable as a percentage (50% of 4 = 2); scale the ReplicaSet: the expectation follows.
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("pct", "web", "minAvailable", json!("75%"))).await;
    let s = status_when(&env, "pct", "pct status", |s| s.current_healthy == 4).await;
    assert_eq!((s.expected_pods, s.desired_healthy, s.disruptions_allowed), (4, 3, 1));
    let rs_api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    rs_api
        .patch("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 8}})))
        .await
        .unwrap();
    eventually(20, "8 pods", || async {
        (active_pods(&env.client, "default", "app=web").await.len() == 8).then_some(())
    })
    .await;
    let s = status_when(&env, "pct", "pct follows scale", |s| s.expected_pods == 8).await;
    assert_eq!(s.desired_healthy, 6);
    assert_eq!(s.disruptions_allowed, 0, "only 4 of 8 healthy");

    // A spec change: generation moves, observedGeneration follows.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), "default");
    pdbs.patch("min", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"minAvailable": 1}})))
        .await
        .unwrap();
    let s = status_when(&env, "min", "min relaxed", |s| s.desired_healthy == 1).await;
    assert_eq!(s.observed_generation, Some(2));
    env.shutdown().await;
}

#[tokio::test]
async fn evictions_are_recorded_and_unhealthy_counted_out() {
    let env = Env::start().await;
    let _: ReplicaSet = apply(&env.client, "default", rs("web", 3)).await;
    eventually(20, "3 pods", || async {
        (active_pods(&env.client, "default", "app=web").await.len() == 3).then_some(())
    })
    .await;
    make_all_ready(&env.client, "default", "app=web").await;
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("web", "web", "maxUnavailable", json!(1))).await;
    status_when(&env, "web", "1 allowed", |s| s.disruptions_allowed == 1 && s.current_healthy == 3).await;
    // Evict one pod through the subresource: the budget is spent, the pod recorded.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let victim = active_pods(&env.client, "default", "app=web").await[0].name_any();
    pods.evict(&victim, &Default::default()).await.unwrap();
    let other =
        active_pods(&env.client, "default", "app=web").await.into_iter().find(|p| p.name_any() != victim);
    let err = pods.evict(&other.unwrap().name_any(), &Default::default()).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 429);
            assert_eq!(s.message, "Cannot evict pod as it would violate the pod's disruption budget.");
        }
        e => panic!("{e}"),
    }
    // The replacement becomes ready: the controller gives the budget back, the entry gone with
    // the deleted pod.
    eventually(20, "replacement", || async {
        (active_pods(&env.client, "default", "app=web").await.len() == 3).then_some(())
    })
    .await;
    make_all_ready(&env.client, "default", "app=web").await;
    let s =
        status_when(&env, "web", "budget back", |s| s.disruptions_allowed == 1 && s.current_healthy == 3).await;
    assert!(s.disrupted_pods.unwrap_or_default().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn unmanaged_pods_and_sync_failures() {
    let env = Env::start().await;
    // A bare pod: counted with an integer minAvailable, an UnmanagedPods warning with a percentage.
    let _: Pod = apply(
        &env.client,
        "default",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "labels": {"app": "bare"}},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    make_ready(&env.client, "default", "bare").await;
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("int", "bare", "minAvailable", json!(0))).await;
    let s = status_when(&env, "int", "int", |s| s.current_healthy == 1).await;
    assert_eq!((s.expected_pods, s.disruptions_allowed), (1, 1));
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("pct", "bare", "maxUnavailable", json!("50%"))).await;
    let s = status_when(&env, "pct", "pct", |s| s.current_healthy == 1).await;
    assert_eq!((s.expected_pods, s.disruptions_allowed), (0, 0), "unmanaged pods are not expected");
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually(20, "UnmanagedPods event", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.iter().any(|e| e.reason.as_deref() == Some("UnmanagedPods")).then_some(())
    })
    .await;

    // A pod whose controller has no scale (a ConfigMap, which the garbage collector leaves alone
    // since it exists): the sync fails safe.
    let owner: k8s_openapi::api::core::v1::ConfigMap = apply(
        &env.client,
        "default",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}),
    )
    .await;
    let _: Pod = apply(
        &env.client,
        "default",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "lost", "labels": {"app": "lost"}, "ownerReferences": [{
                   "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap(),
                   "controller": true}]},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    let _: PodDisruptionBudget =
        apply(&env.client, "default", pdb("lost", "lost", "maxUnavailable", json!(1))).await;
    let api: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), "default");
    let s = eventually(20, "SyncFailed", || async {
        let s = api.get("lost").await.unwrap().status.unwrap_or_default();
        s.conditions.as_ref().and_then(|c| c.iter().find(|c| c.reason == "SyncFailed").cloned())
    })
    .await;
    assert_eq!(s.status, "False");
    assert_eq!(s.message, "found no controllers for pod \"lost\"");
    env.shutdown().await;
}

#[tokio::test]
async fn quota_status_counts_hard_and_used() {
    let env = Env::start().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), "default");
    let _: ResourceQuota = apply(
        &env.client,
        "default",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
               "spec": {"hard": {"pods": "10", "configmaps": "5", "requests.cpu": "2", "count/replicasets.apps": "3"}}}),
    )
    .await;
    let used = |q: &ResourceQuota, k: &str| {
        q.status.as_ref().and_then(|s| s.used.as_ref()).and_then(|u| u.get(k)).map(|v| v.0.clone())
    };
    let _: ReplicaSet = apply(
        &env.client,
        "default",
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "w"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "w"}},
                     "template": {"metadata": {"labels": {"app": "w"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx",
                                           "resources": {"requests": {"cpu": "250m"}}}]}}}
        }),
    )
    .await;
    let q = eventually(20, "2 pods used", || async {
        let q = quotas.get("q").await.unwrap();
        (used(&q, "pods").as_deref() == Some("2")).then_some(q)
    })
    .await;
    assert_eq!(used(&q, "requests.cpu").as_deref(), Some("500m"));
    assert_eq!(used(&q, "count/replicasets.apps").as_deref(), Some("1"));
    let hard = q.status.as_ref().unwrap().hard.as_ref().unwrap();
    assert_eq!(hard.get("pods").map(|v| v.0.as_str()), Some("10"));
    // A configmap created, then deleted: used follows both ways (kube-root-ca.crt may exist too).
    let before = used(&q, "configmaps").unwrap_or_default();
    let _: k8s_openapi::api::core::v1::ConfigMap = apply(
        &env.client,
        "default",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "b"}}),
    )
    .await;
    let after: i64 = before.parse::<i64>().unwrap_or(0) + 1;
    eventually(20, "configmap counted", || async {
        let q = quotas.get("q").await.unwrap();
        (used(&q, "configmaps") == Some(after.to_string())).then_some(())
    })
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.delete("c1", &Default::default()).await.unwrap();
    eventually(20, "configmap uncounted", || async {
        let q = quotas.get("q").await.unwrap();
        (used(&q, "configmaps") == Some(before.clone())).then_some(())
    })
    .await;
    // A hard limit removed disappears from status too.
    quotas
        .patch("q", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"hard": {"configmaps": null}}})))
        .await
        .unwrap();
    eventually(20, "hard follows spec", || async {
        let q = quotas.get("q").await.unwrap();
        let s = q.status.clone().unwrap_or_default();
        (!s.hard.unwrap_or_default().contains_key("configmaps")
            && !s.used.unwrap_or_default().contains_key("configmaps"))
        .then_some(())
    })
    .await;
    env.shutdown().await;
}
