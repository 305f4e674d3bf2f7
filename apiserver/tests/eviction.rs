//! `pods/eviction` through the router in-process over a real store: each answer of upstream's
//! eviction REST (PDB allows, forbids, lags, is ambiguous; pods that skip the budget; unhealthy
//! pods under both policies; dry runs; bad bodies) and what it writes (or does not).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};
use store::embedded::{EmbeddedConfig, EmbeddedStore};
use tower::ServiceExt;

struct Api {
    st: apiserver::AppState,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    let st = apiserver::AppState::new(Arc::new(store), apiserver::Config::default());
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    Api { st, _dir: dir }
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

impl Api {
    async fn send(&self, method: Method, uri: &str, ct: &str, body: Vec<u8>) -> (u16, Value, Option<String>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap();
        let resp = apiserver::router(self.st.clone()).oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)), retry)
    }

    async fn call(&self, method: Method, uri: &str, body: Value) -> (u16, Value) {
        let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
        let (c, v, _) = self.send(method, uri, "application/json", bytes).await;
        (c, v)
    }

    async fn ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let (code, out) = self.call(method, uri, body).await;
        assert!((200..300).contains(&code), "{uri}: {code} {out}");
        out
    }

    /// A Running pod on a node, Ready or not.
    async fn pod(&self, name: &str, ready: bool) {
        self.ok(
            Method::POST,
            PODS,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}}),
        )
        .await;
        self.set_pod_status(name, "Running", ready).await;
    }

    async fn set_pod_status(&self, name: &str, phase: &str, ready: bool) {
        let mut pod = self.ok(Method::GET, &format!("{PODS}/{name}"), Value::Null).await;
        pod["status"] = json!({"phase": phase, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]});
        self.ok(Method::PUT, &format!("{PODS}/{name}/status"), pod).await;
    }

    /// A PDB selecting app=web with the status a controller would have written.
    async fn pdb(&self, name: &str, allowed: i64, current: i64, desired: i64, policy: Option<&str>) {
        let mut spec = json!({"minAvailable": desired, "selector": {"matchLabels": {"app": "web"}}});
        if let Some(p) = policy {
            spec["unhealthyPodEvictionPolicy"] = json!(p);
        }
        self.ok(
            Method::POST,
            PDBS,
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name}, "spec": spec}),
        )
        .await;
        self.pdb_status(name, allowed, current, desired, None).await;
    }

    async fn pdb_status(&self, name: &str, allowed: i64, current: i64, desired: i64, observed: Option<i64>) {
        let mut pdb = self.ok(Method::GET, &format!("{PDBS}/{name}"), Value::Null).await;
        let generation = pdb["metadata"]["generation"].as_i64().unwrap();
        pdb["status"] = json!({"disruptionsAllowed": allowed, "currentHealthy": current, "desiredHealthy": desired,
                               "expectedPods": current, "observedGeneration": observed.unwrap_or(generation)});
        self.ok(Method::PUT, &format!("{PDBS}/{name}/status"), pdb).await;
    }

    async fn evict(&self, name: &str, body: Value) -> (u16, Value, Option<String>) {
        let bytes = body.to_string().into_bytes();
        self.send(Method::POST, &format!("{PODS}/{name}/eviction"), "application/json", bytes).await
    }

    async fn exists(&self, name: &str) -> bool {
        self.call(Method::GET, &format!("{PODS}/{name}"), Value::Null).await.0 == 200
    }

    async fn rv(&self, uri: &str) -> String {
        self.ok(Method::GET, uri, Value::Null).await["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn eviction(name: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}})
}

/// The pod is deleted now or marked for deletion (it is on a node: graceful).
async fn gone_or_going(api: &Api, name: &str) -> bool {
    let (code, pod) = api.call(Method::GET, &format!("{PODS}/{name}"), Value::Null).await;
    code == 404 || pod["metadata"]["deletionTimestamp"].is_string()
}

#[tokio::test]
async fn allowed_eviction_decrements_the_budget_records_the_pod_and_deletes_it() {
    let api = api().await;
    api.pod("a", true).await;
    api.pod("b", true).await;
    api.pdb("web", 1, 2, 1, None).await;
    let (code, out, _) = api.evict("a", eviction("a")).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["status"], "Success");
    let pdb = api.ok(Method::GET, &format!("{PDBS}/web"), Value::Null).await;
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert!(pdb["status"]["disruptedPods"]["a"].is_string(), "{pdb}");
    let cond = &pdb["status"]["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["reason"].as_str()),
        (Some("DisruptionAllowed"), Some("InsufficientPods"))
    );
    // Graceful: marked, with the DisruptionTarget condition the eviction API sets.
    let pod = api.ok(Method::GET, &format!("{PODS}/a"), Value::Null).await;
    assert!(pod["metadata"]["deletionTimestamp"].is_string());
    let dt = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned();
    assert_eq!(dt.unwrap()["reason"], "EvictionByEvictionAPI");

    // The budget is spent: the next one is refused with upstream's 429 and cause.
    let (code, out, retry) = api.evict("b", eviction("b")).await;
    assert_eq!(code, 429, "{out}");
    assert_eq!(out["reason"], "TooManyRequests");
    assert_eq!(out["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    assert_eq!(out["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        out["details"]["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 2 currently"
    );
    assert_eq!(retry, None);
    assert!(api.exists("b").await);
    let pod = api.ok(Method::GET, &format!("{PODS}/b"), Value::Null).await;
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "a refused eviction writes nothing");
}

#[tokio::test]
async fn v1beta1_body_and_grace_period_zero() {
    let api = api().await;
    api.pod("a", true).await;
    let body = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "a"},
                      "deleteOptions": {"gracePeriodSeconds": 0}});
    let (code, out, _) = api.evict("a", body).await;
    assert_eq!(code, 201, "{out}");
    assert!(!api.exists("a").await, "grace 0 deletes at once");
}

#[tokio::test]
async fn lagging_observed_generation_is_429_with_retry_after() {
    let api = api().await;
    api.pod("a", true).await;
    api.pdb("web", 1, 2, 1, None).await;
    api.pdb_status("web", 1, 2, 1, Some(0)).await;
    let (code, out, retry) = api.evict("a", eviction("a")).await;
    assert_eq!(code, 429, "{out}");
    assert_eq!(
        out["details"]["causes"][0]["message"],
        "The disruption budget web is still being processed by the server."
    );
    assert_eq!(out["details"]["retryAfterSeconds"], 10);
    assert_eq!(retry.as_deref(), Some("10"));
    assert!(!gone_or_going(&api, "a").await);
}

#[tokio::test]
async fn two_budgets_are_a_500_and_nothing_is_written() {
    let api = api().await;
    api.pod("a", true).await;
    api.pdb("one", 1, 1, 0, None).await;
    api.pdb("two", 1, 1, 0, None).await;
    let rv = api.rv(&format!("{PDBS}/one")).await;
    let (code, out, _) = api.evict("a", eviction("a")).await;
    assert_eq!(code, 500, "{out}");
    assert_eq!(out["reason"], "InternalError");
    assert!(out["message"].as_str().unwrap().contains(
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    ));
    assert!(!gone_or_going(&api, "a").await);
    assert_eq!(api.rv(&format!("{PDBS}/one")).await, rv);
}

#[tokio::test]
async fn pending_terminal_and_unbudgeted_pods_are_deleted_without_checks() {
    let api = api().await;
    api.pdb("web", 0, 0, 5, None).await;
    api.pod("pending", false).await;
    api.set_pod_status("pending", "Pending", false).await;
    api.pod("done", false).await;
    api.set_pod_status("done", "Succeeded", false).await;
    for name in ["pending", "done"] {
        let (code, out, _) = api.evict(name, eviction(name)).await;
        assert_eq!(code, 201, "{name}: {out}");
        assert!(gone_or_going(&api, name).await, "{name}");
    }
    // No PDB selects it.
    api.ok(
        Method::POST,
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "labels": {"app": "db"}},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    api.set_pod_status("other", "Running", true).await;
    let (code, _, _) = api.evict("other", eviction("other")).await;
    assert_eq!(code, 201);
    assert!(gone_or_going(&api, "other").await);
}

#[tokio::test]
async fn unhealthy_pods_under_both_policies() {
    // IfHealthyBudget (default): an unready pod goes without touching the budget once it is met...
    let api = api().await;
    api.pod("sick", false).await;
    api.pdb("web", 0, 2, 2, None).await;
    let rv = api.rv(&format!("{PDBS}/web")).await;
    let (code, out, _) = api.evict("sick", eviction("sick")).await;
    assert_eq!(code, 201, "{out}");
    assert!(gone_or_going(&api, "sick").await);
    assert_eq!(api.rv(&format!("{PDBS}/web")).await, rv, "the budget is not charged");

    // ...and not when it is not met.
    let api = self::api().await;
    api.pod("sick", false).await;
    api.pdb("web", 0, 1, 2, None).await;
    let (code, _, _) = api.evict("sick", eviction("sick")).await;
    assert_eq!(code, 429);
    assert!(!gone_or_going(&api, "sick").await);

    // AlwaysAllow: unready pods always go.
    let api = self::api().await;
    api.pod("sick", false).await;
    api.pdb("web", 0, 1, 2, Some("AlwaysAllow")).await;
    let (code, out, _) = api.evict("sick", eviction("sick")).await;
    assert_eq!(code, 201, "{out}");
    assert!(gone_or_going(&api, "sick").await);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let api = api().await;
    api.pod("a", true).await;
    api.pdb("web", 1, 1, 0, None).await;
    let (pdb_rv, pod_rv) = (api.rv(&format!("{PDBS}/web")).await, api.rv(&format!("{PODS}/a")).await);
    let body = eviction("a").to_string().into_bytes();
    let (code, out, _) =
        api.send(Method::POST, &format!("{PODS}/a/eviction?dryRun=All"), "application/json", body).await;
    assert_eq!(code, 201, "{out}");
    let mut in_options = eviction("a");
    in_options["deleteOptions"] = json!({"dryRun": ["All"]});
    let (code, _, _) = api.evict("a", in_options).await;
    assert_eq!(code, 201);
    assert_eq!(api.rv(&format!("{PDBS}/web")).await, pdb_rv);
    assert_eq!(api.rv(&format!("{PODS}/a")).await, pod_rv);
    // An unknown dry-run value is refused.
    let body = eviction("a").to_string().into_bytes();
    let (code, _, _) =
        api.send(Method::POST, &format!("{PODS}/a/eviction?dryRun=Some"), "application/json", body).await;
    assert_eq!(code, 422, "upstream validates CreateOptions.dryRun");
}

#[tokio::test]
async fn preconditions_are_honoured() {
    let api = api().await;
    api.pod("a", true).await;
    let mut body = eviction("a");
    body["deleteOptions"] = json!({"preconditions": {"uid": "not-the-uid"}});
    let (code, out, _) = api.evict("a", body).await;
    assert_eq!(code, 409, "{out}");
    assert!(!gone_or_going(&api, "a").await);
    let mut body = eviction("a");
    body["deleteOptions"] = json!({"preconditions": {"resourceVersion": "1"}});
    assert_eq!(api.evict("a", body).await.0, 409);
    let rv = api.rv(&format!("{PODS}/a")).await;
    let mut body = eviction("a");
    body["deleteOptions"] = json!({"preconditions": {"resourceVersion": rv}});
    let (code, out, _) = api.evict("a", body).await;
    assert_eq!(code, 201, "{out}");
    assert!(gone_or_going(&api, "a").await);
}

#[tokio::test]
async fn bad_requests_never_write() {
    let api = api().await;
    api.pod("a", true).await;
    api.pdb("web", 1, 1, 0, None).await;
    let pdb_rv = api.rv(&format!("{PDBS}/web")).await;
    // The name must match the URL's.
    let (code, out, _) = api.evict("a", eviction("b")).await;
    assert_eq!(code, 400);
    assert_eq!(out["message"], "name in URL does not match name in Eviction object");
    let (code, _, _) = api.evict("a", json!({"apiVersion": "policy/v1", "kind": "Eviction"})).await;
    assert_eq!(code, 400);
    // Another namespace in the body.
    let mut other = eviction("a");
    other["metadata"]["namespace"] = json!("kube-system");
    assert_eq!(api.evict("a", other).await.0, 400);
    // Not an Eviction, not JSON, wrong types.
    let (code, _, _) =
        api.evict("a", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})).await;
    assert_eq!(code, 400);
    for junk in [
        &b"{"[..],
        b"[]",
        b"\"x\"",
        b"{\"metadata\": 5}",
        b"{\"metadata\":{\"name\":\"a\"},\"deleteOptions\":7}",
    ] {
        let (code, out, _) =
            api.send(Method::POST, &format!("{PODS}/a/eviction"), "application/json", junk.to_vec()).await;
        assert!((400..500).contains(&code), "{}: {code} {out}", String::from_utf8_lossy(junk));
    }
    let mut bad_prop = eviction("a");
    bad_prop["deleteOptions"] = json!({"propagationPolicy": "Sideways"});
    assert_eq!(api.evict("a", bad_prop).await.0, 400);
    // A pod that does not exist.
    let (code, out, _) = api.evict("nope", eviction("nope")).await;
    assert_eq!(code, 404, "{out}");
    // GET is not served.
    assert_eq!(api.call(Method::GET, &format!("{PODS}/a/eviction"), Value::Null).await.0, 404);
    assert!(!gone_or_going(&api, "a").await);
    assert_eq!(api.rv(&format!("{PDBS}/web")).await, pdb_rv);
}

#[tokio::test]
async fn discovery_lists_pods_eviction() {
    let api = api().await;
    let list = api.ok(Method::GET, "/api/v1", Value::Null).await;
    let ev =
        list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/eviction").cloned().unwrap();
    assert_eq!(ev["kind"], "Eviction");
    assert_eq!(ev["group"], "policy");
    assert_eq!(ev["version"], "v1");
    assert_eq!(ev["verbs"], json!(["create"]));
}
