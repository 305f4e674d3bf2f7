//! Deployment controller: rollouts, rollback, recreate, pause, history, conditions.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const REV: &str = "deployment.kubernetes.io/revision";

fn deployment(name: &str, replicas: i32, image: &str, strategy: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": strategy,
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": image}]}}}
    })
}

fn rolling(surge: serde_json::Value, unavail: serde_json::Value) -> serde_json::Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}})
}

async fn rsets(client: &Client, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap().items
}

async fn set_image(client: &Client, name: &str, image: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(p)).await.unwrap();
}

fn image_of(rs: &ReplicaSet) -> String {
    rs.spec.as_ref().unwrap().template.as_ref().unwrap().spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

fn cond(d: &Deployment, t: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// Acts as the kubelet until the deployment is complete, checking availability never drops
/// below `min_ready` and pods never exceed `max_pods`.
async fn drive_rollout(client: &Client, name: &str, n: i32, min_ready: usize, max_pods: usize) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    eventually(60, &format!("{name} rollout complete"), || async {
        let all = active_pods(client, "default", &format!("app={name}")).await;
        let ready = all
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        assert!(ready >= min_ready, "availability dropped to {ready} < {min_ready}");
        assert!(all.len() <= max_pods, "{} pods exceed the surge limit {max_pods}", all.len());
        make_all_ready(client, "default", &format!("app={name}")).await;
        let d = api.get(name).await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation == d.metadata.generation
            && s.updated_replicas.unwrap_or(0) == n
            && s.replicas.unwrap_or(0) == n
            && s.available_replicas.unwrap_or(0) == n
            && cond(&d, "Progressing").is_some_and(|c| c.1 == "NewReplicaSetAvailable");
        done.then_some(d)
    })
    .await
}

#[tokio::test]
async fn rolling_update_rollback_and_events() {
    let env = Env::start().await;
    let c = &env.client;
    let _: Deployment = apply(c, "default", deployment("web", 4, "nginx:1", rolling(json!(1), json!(1)))).await;
    let d = drive_rollout(c, "web", 4, 0, 5).await;
    assert_eq!(d.annotations().get(REV).map(String::as_str), Some("1"));
    assert_eq!(cond(&d, "Available"), Some(("True".into(), "MinimumReplicasAvailable".into())));
    let rs1 = rsets(c, "web").await;
    assert_eq!(rs1.len(), 1);
    let hash = rs1[0].labels().get("pod-template-hash").cloned().expect("pod-template-hash label");
    assert_eq!(rs1[0].name_any(), format!("web-{hash}"));
    assert_eq!(rs1[0].annotations().get(REV).map(String::as_str), Some("1"));
    assert_eq!(
        rs1[0].annotations().get("deployment.kubernetes.io/desired-replicas").map(String::as_str),
        Some("4")
    );
    assert_eq!(
        rs1[0].annotations().get("deployment.kubernetes.io/max-replicas").map(String::as_str),
        Some("5")
    );
    for p in active_pods(c, "default", "app=web").await {
        assert_eq!(p.labels().get("pod-template-hash"), Some(&hash));
    }

    // New image: a new RS, revision 2, availability never below 3, never more than 5 pods.
    set_image(c, "web", "nginx:2").await;
    let d = drive_rollout(c, "web", 4, 3, 5).await;
    assert_eq!(d.annotations().get(REV).map(String::as_str), Some("2"));
    let all = rsets(c, "web").await;
    assert_eq!(all.len(), 2);
    let old = all.iter().find(|r| r.name_any() == rs1[0].name_any()).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));

    // kubectl rollout undo: the template goes back; the old RS is reused with revision 3.
    set_image(c, "web", "nginx:1").await;
    let d = drive_rollout(c, "web", 4, 3, 5).await;
    assert_eq!(d.annotations().get(REV).map(String::as_str), Some("3"));
    let all = rsets(c, "web").await;
    assert_eq!(all.len(), 2, "no third RS on rollback");
    let reused = all.iter().find(|r| r.name_any() == rs1[0].name_any()).unwrap();
    assert_eq!(reused.annotations().get(REV).map(String::as_str), Some("3"));
    assert_eq!(reused.spec.as_ref().unwrap().replicas, Some(4));

    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    let want = format!("Scaled up replica set web-{hash} from 0 to");
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some("ScalingReplicaSet")
            && e.message.as_deref().is_some_and(|m| m.starts_with(&want))),
        "no '{want}' event in {:?}",
        evs.iter().map(|e| e.message.clone()).collect::<Vec<_>>()
    );
    env.shutdown().await;
}

#[tokio::test]
async fn percentages_scale_to_zero_and_back_and_restart() {
    let env = Env::start().await;
    let c = &env.client;
    let _: Deployment =
        apply(c, "default", deployment("p", 3, "nginx:1", rolling(json!("25%"), json!("25%")))).await;
    drive_rollout(c, "p", 3, 0, 4).await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    api.patch("p", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 0}}))).await.unwrap();
    eventually(20, "scaled to zero", || async {
        let d = api.get("p").await.unwrap();
        let s = d.status.unwrap_or_default();
        (active_pods(c, "default", "app=p").await.is_empty()
            && s.replicas.unwrap_or(0) == 0
            && s.observed_generation == d.metadata.generation)
            .then_some(())
    })
    .await;
    api.patch("p", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 2}}))).await.unwrap();
    drive_rollout(c, "p", 2, 0, 3).await;
    assert_eq!(rsets(c, "p").await.len(), 1, "scaling makes no new RS");
    // kubectl rollout restart: a template annotation → a new RS.
    let p = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    api.patch("p", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    // 25% of 2: surge rounds up to 1, unavailable rounds down to 0 → never below 2 ready.
    drive_rollout(c, "p", 2, 2, 3).await;
    assert_eq!(rsets(c, "p").await.len(), 2);
    env.shutdown().await;
}

#[tokio::test]
async fn recreate_scales_old_to_zero_before_creating_new() {
    let env = Env::start().await;
    let c = &env.client;
    let _: Deployment = apply(c, "default", deployment("re", 2, "nginx:1", json!({"type": "Recreate"}))).await;
    drive_rollout(c, "re", 2, 0, 2).await;
    set_image(c, "re", "nginx:2").await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    eventually(30, "recreate done", || async {
        let sets = rsets(c, "re").await;
        let pods = active_pods(c, "default", "app=re").await;
        if let Some(new) = sets.iter().find(|r| image_of(r) == "nginx:2") {
            let new_uid = new.uid().unwrap();
            // Once the new RS exists no old pod may remain.
            let old_pods =
                pods.iter().filter(|p| p.owner_references().iter().any(|o| o.uid != new_uid)).count();
            assert_eq!(old_pods, 0, "old pods alongside the new RS");
        }
        make_all_ready(c, "default", "app=re").await;
        let d = api.get("re").await.unwrap();
        (cond(&d, "Progressing").is_some_and(|c| c.1 == "NewReplicaSetAvailable")
            && d.status.as_ref().unwrap().updated_replicas == Some(2)
            && d.status.as_ref().unwrap().available_replicas == Some(2)
            && d.annotations().get(REV).map(String::as_str) == Some("2"))
        .then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn paused_deployment_scales_but_does_not_roll_out() {
    let env = Env::start().await;
    let c = &env.client;
    let _: Deployment = apply(c, "default", deployment("pz", 2, "nginx:1", rolling(json!(1), json!(0)))).await;
    drive_rollout(c, "pz", 2, 0, 3).await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    api.patch("pz", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"paused": true}}))).await.unwrap();
    set_image(c, "pz", "nginx:2").await;
    api.patch("pz", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 4}}))).await.unwrap();
    eventually(20, "paused: scaled to 4 on the old RS, Progressing DeploymentPaused", || async {
        let d = api.get("pz").await.unwrap();
        let sets = rsets(c, "pz").await;
        (sets.len() == 1
            && sets[0].spec.as_ref().unwrap().replicas == Some(4)
            && cond(&d, "Progressing").is_some_and(|c| c.1 == "DeploymentPaused"))
        .then_some(())
    })
    .await;
    api.patch("pz", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"paused": false}}))).await.unwrap();
    drive_rollout(c, "pz", 4, 0, 5).await;
    assert!(rsets(c, "pz").await.iter().any(|r| image_of(r) == "nginx:2"));
    env.shutdown().await;
}

#[tokio::test]
async fn revision_history_limit_deletes_old_replicasets() {
    let env = Env::start().await;
    let c = &env.client;
    let mut d = deployment("h", 1, "nginx:1", rolling(json!(1), json!(0)));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    let _: Deployment = apply(c, "default", d).await;
    drive_rollout(c, "h", 1, 0, 2).await;
    for img in ["nginx:2", "nginx:3", "nginx:4"] {
        set_image(c, "h", img).await;
        drive_rollout(c, "h", 1, 0, 2).await;
    }
    eventually(20, "only the new RS and one old RS remain", || async {
        let sets = rsets(c, "h").await;
        (sets.len() == 2
            && sets.iter().any(|r| image_of(r) == "nginx:4")
            && sets.iter().any(|r| image_of(r) == "nginx:3"))
        .then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn progress_deadline_exceeded_and_minimum_unavailable() {
    let env = Env::start().await;
    let c = &env.client;
    let mut d = deployment("slow", 2, "nginx:1", rolling(json!(1), json!(0)));
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    let _: Deployment = apply(c, "default", d).await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    // Nobody makes the pods ready.
    eventually(20, "ProgressDeadlineExceeded", || async {
        let d = api.get("slow").await.unwrap();
        (cond(&d, "Progressing") == Some(("False".into(), "ProgressDeadlineExceeded".into()))
            && cond(&d, "Available") == Some(("False".into(), "MinimumReplicasUnavailable".into()))
            && d.status.as_ref().unwrap().unavailable_replicas == Some(2))
        .then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn scaling_mid_rollout_is_proportional_within_the_surge() {
    let env = Env::start().await;
    let c = &env.client;
    let _: Deployment = apply(c, "default", deployment("mid", 4, "nginx:1", rolling(json!(1), json!(0)))).await;
    drive_rollout(c, "mid", 4, 0, 5).await;
    // New image, but nobody makes new pods ready: the rollout stalls at old 4 + new 1.
    set_image(c, "mid", "nginx:2").await;
    eventually(20, "stalled rollout: old 4, new 1", || async {
        let sets = rsets(c, "mid").await;
        let by = |img: &str| sets.iter().find(|r| image_of(r) == img).and_then(|r| r.spec.as_ref()?.replicas);
        (by("nginx:1") == Some(4) && by("nginx:2") == Some(1)).then_some(())
    })
    .await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    api.patch("mid", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 8}}))).await.unwrap();
    eventually(20, "both RSes scaled, total = 8 + maxSurge", || async {
        let sets = rsets(c, "mid").await;
        let by = |img: &str| {
            sets.iter().find(|r| image_of(r) == img).and_then(|r| r.spec.as_ref()?.replicas).unwrap_or(0)
        };
        let (old, new) = (by("nginx:1"), by("nginx:2"));
        (old + new == 9 && old > 4 && new >= 1).then_some(())
    })
    .await;
    // (Freshly scaled-up pods start unready, so no availability floor is asserted here.)
    drive_rollout(c, "mid", 8, 0, 9).await;
    env.shutdown().await;
}
