//! The StatefulSet controller against a test cluster with a fake kubelet (readiness is set by the
//! test), for what needs exact control over when pods become Ready: maxUnavailable during a
//! rolling update.
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

async fn revisions(env: &Env) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = active_pods(&env.client, "default", "app=mu")
        .await
        .iter()
        .map(|p| (p.name_any(), p.labels().get("controller-revision-hash").cloned().unwrap_or_default()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn rolling_update_replaces_at_most_max_unavailable_pods_from_the_highest_ordinal() {
    let env = Env::start().await;
    let api: Api<StatefulSet> = Api::namespaced(env.client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "mu"},
        "spec": {"replicas": 4, "serviceName": "mu", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "mu"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
            "template": {"metadata": {"labels": {"app": "mu"}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &set).await.unwrap();
    eventually(20, "4 pods", || async {
        (active_pods(&env.client, "default", "app=mu").await.len() == 4).then_some(())
    })
    .await;
    make_all_ready(&env.client, "default", "app=mu").await;
    let old = eventually(20, "ready status", || async {
        let s = api.get("mu").await.unwrap().status.unwrap_or_default();
        (s.ready_replicas == Some(4)).then_some(s.update_revision.unwrap())
    })
    .await;

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:2"}]}}}});
    api.patch("mu", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    // Two at a time from the top: mu-3 and mu-2 are replaced, mu-1 and mu-0 wait while the new
    // ones are not Ready.
    let new = eventually(20, "mu-2 and mu-3 replaced", || async {
        let r = revisions(&env).await;
        let updated: BTreeSet<String> = r.iter().filter(|(_, h)| h != &old).map(|(n, _)| n.clone()).collect();
        (r.len() == 4 && updated == ["mu-2".to_string(), "mu-3".into()].into_iter().collect())
            .then(|| r.iter().find(|(n, _)| n == "mu-3").unwrap().1.clone())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = revisions(&env).await;
    assert_eq!(r.iter().filter(|(_, h)| h == &old).count(), 2, "{r:?}");
    make_all_ready(&env.client, "default", "app=mu").await;
    eventually(20, "all updated", || async {
        make_all_ready(&env.client, "default", "app=mu").await;
        let r = revisions(&env).await;
        (r.len() == 4 && r.iter().all(|(_, h)| h == &new)).then_some(())
    })
    .await;
    let s = eventually(20, "rollout complete", || async {
        make_all_ready(&env.client, "default", "app=mu").await;
        let s = api.get("mu").await.unwrap().status.unwrap_or_default();
        (s.current_revision.as_deref() == Some(new.as_str()) && s.updated_replicas == Some(4)).then_some(s)
    })
    .await;
    assert_eq!(s.current_replicas, Some(4));
    env.shutdown().await;
}
