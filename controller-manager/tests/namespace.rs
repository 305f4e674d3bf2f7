//! Namespace deletion and the default ServiceAccount.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn deleting_a_namespace_empties_and_removes_it() {
    let env = Env::start().await;
    let c = &env.client;
    create_ns(c, "doomed").await;
    let _: ConfigMap = apply(c, "doomed", json!({"metadata": {"name": "cm"}})).await;
    // One object holds a finalizer: the namespace waits for it and says so.
    let _: ConfigMap =
        apply(c, "doomed", json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})).await;
    let _: Deployment = apply(
        c,
        "doomed",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    eventually(20, "pods in doomed", || async {
        (active_pods(c, "doomed", "app=d").await.len() == 2).then_some(())
    })
    .await;
    let api: Api<Namespace> = Api::all(c.clone());
    api.delete("doomed", &DeleteParams::default()).await.unwrap();
    eventually(20, "Terminating with finalizers remaining", || async {
        let ns = api.get("doomed").await.unwrap();
        let st = ns.status?;
        let conds = st.conditions?;
        let has = |t: &str, s: &str, r: &str| {
            conds.iter().any(|c| c.type_ == t && c.status == s && c.reason.as_deref() == Some(r))
        };
        (st.phase.as_deref() == Some("Terminating")
            && has("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain")
            && has("NamespaceContentRemaining", "True", "SomeResourcesRemain")
            && has("NamespaceDeletionDiscoveryFailure", "False", "ResourcesDiscovered"))
        .then_some(())
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "doomed");
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    eventually(20, "namespace removed", || async {
        api.get_opt("doomed").await.unwrap().is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn default_service_account_appears_and_comes_back() {
    let env = Env::start().await;
    let c = &env.client;
    create_ns(c, "team").await;
    let api: Api<ServiceAccount> = Api::namespaced(c.clone(), "team");
    eventually(10, "default SA", || async { api.get_opt("default").await.unwrap().map(|_| ()) }).await;
    api.delete("default", &DeleteParams::default()).await.unwrap();
    eventually(10, "default SA recreated", || async {
        api.get_opt("default").await.unwrap().filter(|s| s.metadata.deletion_timestamp.is_none()).map(|_| ())
    })
    .await;
    env.shutdown().await;
}
