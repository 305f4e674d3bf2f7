//! The Job controller against an in-process API server, with the test as the kubelet (it sets pod
//! phases and exit codes itself): the finalizer-based counting, Indexed Jobs with a successPolicy,
//! backoffLimitPerIndex with failedIndexes, and a pod deleted while running counted as failed.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

const FINALIZER: &str = "batch.kubernetes.io/job-tracking";

fn job(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    for (k, v) in spec.as_object().unwrap() {
        j["spec"][k] = v.clone();
    }
    j
}

/// The fake kubelet: the pod's container ended with `code` (Succeeded on 0, else Failed).
async fn finish(env: &Env, pod: &str, code: i32) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "startedAt": now, "finishedAt": now}}}],
    }});
    api.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("pod status");
}

fn index(p: &Pod) -> Option<&str> {
    p.metadata.annotations.as_ref()?.get("batch.kubernetes.io/job-completion-index").map(String::as_str)
}

async fn job_now(env: &Env, name: &str) -> Job {
    Api::<Job>::namespaced(env.client.clone(), "default").get(name).await.unwrap()
}

fn has_cond(j: &Job, t: &str) -> Option<(String, String)> {
    let c = j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t && c.status == "True")?;
    Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

async fn live_pod_of_index(env: &Env, sel: &str, ix: &str) -> Pod {
    eventually(20, &format!("a pod of index {ix}"), || async {
        active_pods(&env.client, "default", sel).await.into_iter().find(|p| index(p) == Some(ix))
    })
    .await
}

#[tokio::test]
async fn pods_are_counted_once_through_the_finalizer_and_deleted_pods_fail() {
    let env = Env::start().await;
    let _: Job = apply(&env.client, "default", job("count", json!({"completions": 2, "parallelism": 2}))).await;
    let sel = "batch.kubernetes.io/job-name=count";
    let pods = eventually(20, "2 pods", || async {
        let p = active_pods(&env.client, "default", sel).await;
        (p.len() == 2).then_some(p)
    })
    .await;
    for p in &pods {
        assert!(p.finalizers().iter().any(|f| f == FINALIZER), "{:?}", p.metadata);
    }
    finish(&env, &pods[0].name_any(), 0).await;
    // A running pod deleted (say by a user) is a failure, and gets replaced.
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    api.delete(&pods[1].name_any(), &DeleteParams::default()).await.unwrap();
    let j = eventually(20, "1 succeeded, 1 failed", || async {
        let j = job_now(&env, "count").await;
        let s = j.status.clone().unwrap_or_default();
        (s.succeeded == Some(1) && s.failed == Some(1)).then_some(j)
    })
    .await;
    let unc = j.status.unwrap().uncounted_terminated_pods.unwrap_or_default();
    assert!(unc.succeeded.unwrap_or_default().is_empty() && unc.failed.unwrap_or_default().is_empty());
    // The succeeded pod let go of the finalizer, the deleted one is gone, a replacement runs
    // (after the 10 s back-off of the first failure).
    let p0 = api.get(&pods[0].name_any()).await.unwrap();
    assert!(p0.finalizers().is_empty());
    eventually(20, "deleted pod gone", || async {
        api.get_opt(&pods[1].name_any()).await.unwrap().is_none().then_some(())
    })
    .await;
    let replacement = eventually(30, "a replacement", || async {
        let old = [pods[0].name_any(), pods[1].name_any()];
        active_pods(&env.client, "default", sel).await.into_iter().find(|p| !old.contains(&p.name_any()))
    })
    .await;
    finish(&env, &replacement.name_any(), 0).await;
    let j = eventually(20, "Complete", || async {
        let j = job_now(&env, "count").await;
        has_cond(&j, "Complete").map(|_| j)
    })
    .await;
    let s = j.status.unwrap();
    assert_eq!((s.succeeded, s.failed, s.active), (Some(2), Some(1), None));
    env.shutdown().await;
}

#[tokio::test]
async fn indexed_success_policy_and_backoff_limit_per_index() {
    let env = Env::start().await;
    // successPolicy: index 0 succeeding is enough; the others are deleted, not failed.
    let _: Job = apply(
        &env.client,
        "default",
        job(
            "lead",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
            "successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
        ),
    )
    .await;
    let sel = "batch.kubernetes.io/job-name=lead";
    let p0 = live_pod_of_index(&env, sel, "0").await;
    live_pod_of_index(&env, sel, "2").await;
    finish(&env, &p0.name_any(), 0).await;
    let j = eventually(30, "lead Complete", || async {
        let j = job_now(&env, "lead").await;
        has_cond(&j, "Complete").map(|_| j)
    })
    .await;
    assert_eq!(
        has_cond(&j, "SuccessCriteriaMet").unwrap(),
        ("SuccessPolicy".into(), "Matched rules at index 0".into())
    );
    assert_eq!(has_cond(&j, "Complete").unwrap().0, "SuccessPolicy");
    let s = j.status.unwrap();
    assert_eq!((s.completed_indexes.as_deref(), s.succeeded, s.failed), (Some("0"), Some(1), None));

    // backoffLimitPerIndex 1: index 0 fails twice → failed index; index 1 succeeds → Failed.
    let _: Job = apply(
        &env.client,
        "default",
        job(
            "per",
            json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimitPerIndex": 1}),
        ),
    )
    .await;
    let sel = "batch.kubernetes.io/job-name=per";
    let first = live_pod_of_index(&env, sel, "0").await;
    let p1 = live_pod_of_index(&env, sel, "1").await;
    finish(&env, &first.name_any(), 1).await;
    finish(&env, &p1.name_any(), 0).await;
    let second = eventually(30, "index 0 retried", || async {
        active_pods(&env.client, "default", sel).await.into_iter().find(|p| {
            index(p) == Some("0")
                && p.name_any() != first.name_any()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
        })
    })
    .await;
    let ann = second.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get("batch.kubernetes.io/job-index-failure-count").map(String::as_str), Some("1"));
    finish(&env, &second.name_any(), 1).await;
    let j = eventually(30, "per Failed", || async {
        let j = job_now(&env, "per").await;
        has_cond(&j, "Failed").map(|_| j)
    })
    .await;
    assert_eq!(has_cond(&j, "Failed").unwrap(), ("FailedIndexes".into(), "Job has failed indexes".into()));
    let s = j.status.unwrap();
    assert_eq!((s.failed_indexes.as_deref(), s.completed_indexes.as_deref()), (Some("0"), Some("1")));
    assert_eq!((s.failed, s.succeeded), (Some(2), Some(1)));
    env.shutdown().await;
}
