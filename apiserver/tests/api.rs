//! The API server's router over a real embedded store, driven in-process: bad input gets upstream's
//! Status and writes nothing; lists page consistently; watches follow upstream's semantics.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use futures::StreamExt;
use serde_json::{json, Value};
use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::Store;
use tower::ServiceExt;

mod common;
use common::{api, Api};

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_upstreams_status_and_writes_nothing() {
    let a = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let json = "application/json";
    a.refused(Method::POST, cms, json, b"{not json".to_vec(), 400, "BadRequest").await;
    a.refused(Method::POST, cms, json, b"[1,2]".to_vec(), 400, "BadRequest").await;
    a.refused(Method::POST, cms, "application/yaml", b"a: [".to_vec(), 400, "BadRequest").await;
    let s = a
        .refused(
            Method::POST,
            cms,
            json,
            json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
                .to_string()
                .into_bytes(),
            400,
            "BadRequest",
        )
        .await;
    assert_eq!(
        s["message"],
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    );
    a.refused(
        Method::POST,
        cms,
        json,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}).to_string().into_bytes(),
        400,
        "BadRequest",
    )
    .await;
    let s = a
        .refused(
            Method::POST,
            cms,
            json,
            json!({"metadata": {"name": "x", "namespace": "other"}}).to_string().into_bytes(),
            400,
            "BadRequest",
        )
        .await;
    assert_eq!(
        s["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let s = a.refused(Method::POST, cms, json, cm("Bad_Name").to_string().into_bytes(), 422, "Invalid").await;
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    assert!(s["message"]
        .as_str()
        .unwrap()
        .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""));
    let mut unknown = cm("u");
    unknown["spec"] = json!({"foo": 1});
    let s = a
        .refused(
            Method::POST,
            &format!("{cms}?fieldValidation=Strict"),
            json,
            unknown.to_string().into_bytes(),
            400,
            "BadRequest",
        )
        .await;
    assert_eq!(s["message"], "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"spec\"");
    let dup =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"},"data":{"a":"1","a":"2"}}"#.to_vec();
    let s =
        a.refused(Method::POST, &format!("{cms}?fieldValidation=Strict"), json, dup, 400, "BadRequest").await;
    assert!(s["message"].as_str().unwrap().contains("duplicate field \"data.a\""), "{s}");
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(3 * 1024 * 1024)}});
    a.refused(Method::POST, cms, json, big.to_string().into_bytes(), 413, "RequestEntityTooLarge").await;
    a.refused(Method::GET, &format!("{cms}?labelSelector=a%20in%20(b"), json, vec![], 400, "BadRequest").await;
    let s = a
        .refused(Method::GET, &format!("{cms}?fieldSelector=spec.foo%3Dbar"), json, vec![], 400, "BadRequest")
        .await;
    assert_eq!(s["message"], "field label not supported: spec.foo");
    a.refused(Method::GET, &format!("{cms}?limit=abc"), json, vec![], 400, "BadRequest").await;
    a.refused(Method::GET, &format!("{cms}?resourceVersionMatch=Exact"), json, vec![], 400, "BadRequest").await;
    a.refused(Method::GET, &format!("{cms}?continue=garbage!"), json, vec![], 400, "BadRequest").await;
    a.refused(
        Method::GET,
        &format!("{cms}?fieldValidation=Loose&watch=maybe"),
        json,
        vec![],
        400,
        "BadRequest",
    )
    .await;
    a.refused(
        Method::POST,
        "/api/v1/namespaces/nope/configmaps",
        json,
        cm("x").to_string().into_bytes(),
        404,
        "NotFound",
    )
    .await;
    a.refused(Method::GET, "/api/v1/bogus", json, vec![], 404, "NotFound").await;

    // Stale resourceVersion: 409, the stored object unchanged.
    let (code, created) = a.call(Method::POST, cms, cm("s")).await;
    assert_eq!(code, 201);
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["data"]["a"] = json!("changed");
    let s = a
        .refused(Method::PUT, &format!("{cms}/s"), json, stale.to_string().into_bytes(), 409, "Conflict")
        .await;
    assert_eq!(s["message"], "Operation cannot be fulfilled on configmaps \"s\": the object has been modified; please apply your changes to the latest version and try again");
    a.refused(
        Method::PATCH,
        &format!("{cms}/s"),
        "application/x-unknown",
        b"{}".to_vec(),
        415,
        "UnsupportedMediaType",
    )
    .await;
    a.refused(
        Method::PATCH,
        &format!("{cms}/s"),
        "application/apply-patch+yaml",
        b"{}".to_vec(),
        // Server-side apply is served; without a fieldManager it is upstream's 422.
        422,
        "Invalid",
    )
    .await;
    a.refused(
        Method::PATCH,
        &format!("{cms}/s"),
        "application/merge-patch+json",
        b"{oops".to_vec(),
        400,
        "BadRequest",
    )
    .await;
    a.refused(
        Method::PATCH,
        &format!("{cms}/s"),
        "application/json-patch+json",
        br#"[{"op":"test","path":"/data/a","value":"zzz"}]"#.to_vec(),
        422,
        "Invalid",
    )
    .await;
    let s = a
        .refused(
            Method::PUT,
            &format!("{cms}/other"),
            json,
            created.to_string().into_bytes(),
            400,
            "BadRequest",
        )
        .await;
    assert_eq!(s["message"], "the name of the object (s) does not match the name on the URL (other)");
    let (_, got) = a.call(Method::GET, &format!("{cms}/s"), Value::Null).await;
    assert_eq!(got["data"]["a"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_at_one_revision_while_writes_go_on() {
    let a = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..7 {
        assert_eq!(a.call(Method::POST, cms, cm(&format!("c{i}"))).await.0, 201);
    }
    let (_, page1) = a.call(Method::GET, &format!("{cms}?limit=3"), Value::Null).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    assert_eq!(page1["metadata"]["remainingItemCount"], 4);
    let rv = page1["metadata"]["resourceVersion"].clone();
    // Writes between pages are invisible to the paged list.
    a.call(Method::DELETE, &format!("{cms}/c5"), Value::Null).await;
    a.call(Method::POST, cms, cm("c9")).await;
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, page2) = a.call(Method::GET, &format!("{cms}?limit=3&continue={token}"), Value::Null).await;
    let names: Vec<_> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["c3", "c4", "c5"]);
    assert_eq!(page2["metadata"]["resourceVersion"], rv);
    assert_eq!(page2["metadata"]["remainingItemCount"], 1, "counted at the first page's revision");
    let token = page2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, page3) = a.call(Method::GET, &format!("{cms}?limit=3&continue={token}"), Value::Null).await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(page3["metadata"].get("continue").is_none());
    let (_, now) = a.call(Method::GET, cms, Value::Null).await;
    let names: Vec<_> = now["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c6", "c9"]);
}

/// Reads watch events from a streaming response until `n` arrived.
async fn events(a: &Api, uri: &str, n: usize, during: impl std::future::Future<Output = ()>) -> Vec<Value> {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = apiserver::router(a.st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body().into_data_stream();
    during.await;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("watch event in time")
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_upstream_semantics() {
    let a = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let (_, first) = a.call(Method::POST, cms, cm("w1")).await;
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    // From "now": a synthetic ADDED for what exists, then the changes.
    let evs = events(&a, &format!("{cms}?watch=true"), 3, async {
        let mut upd = first.clone();
        upd["data"]["a"] = json!("c");
        a.call(Method::PUT, &format!("{cms}/w1"), upd).await;
        a.call(Method::DELETE, &format!("{cms}/w1"), Value::Null).await;
    })
    .await;
    let types: Vec<_> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(evs[1]["object"]["data"]["a"], "c");
    // From a resourceVersion: only what came after it.
    let evs = events(&a, &format!("{cms}?watch=1&resourceVersion={rv}"), 2, async {}).await;
    assert_eq!(evs.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(), ["MODIFIED", "DELETED"]);
    // Selector transitions: a label change in and out of the selector is ADDED and DELETED.
    let (_, lab) = a.call(Method::POST, cms, cm("w2")).await;
    let evs = events(
        &a,
        &format!(
            "{cms}?watch=true&labelSelector=team%3Dblue&resourceVersion={}",
            lab["metadata"]["resourceVersion"].as_str().unwrap()
        ),
        2,
        async {
            a.raw(
                Method::PATCH,
                &format!("{cms}/w2"),
                "application/merge-patch+json",
                br#"{"metadata":{"labels":{"team":"blue"}}}"#.to_vec(),
            )
            .await;
            a.raw(
                Method::PATCH,
                &format!("{cms}/w2"),
                "application/merge-patch+json",
                br#"{"metadata":{"labels":{"team":"red"}}}"#.to_vec(),
            )
            .await;
        },
    )
    .await;
    assert_eq!(evs.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(), ["ADDED", "DELETED"]);
    // A compacted start revision: an in-stream ERROR with 410 Expired.
    let now = a.revision().await;
    a.store.compact(now).await.unwrap();
    let evs = events(&a, &format!("{cms}?watch=true&resourceVersion=2"), 1, async {}).await;
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_terminates_until_finalized() {
    let a = api().await;
    assert_eq!(a.call(Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": "gone"}})).await.0, 201);
    let (code, ns) = a.call(Method::DELETE, "/api/v1/namespaces/gone", Value::Null).await;
    assert_eq!(code, 200);
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    // A label change does not end it: only the namespace controller's finalize does.
    let (code, _) = a
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/gone",
            "application/merge-patch+json",
            br#"{"metadata":{"labels":{"x":"y"}}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = a.call(Method::GET, "/api/v1/namespaces/gone", Value::Null).await;
    assert_eq!(code, 200, "the namespace must still exist while spec.finalizers hold it");
    // Creates are checked against the watch cache, which sees the deletion an instant later (as
    // upstream's admission sees it through its informer): wait for that with dry runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.call(Method::POST, "/api/v1/namespaces/gone/configmaps?dryRun=All", cm("late")).await.0 != 403 {
        assert!(std::time::Instant::now() < deadline, "creates into a terminating namespace are never refused");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let s = a
        .refused(
            Method::POST,
            "/api/v1/namespaces/gone/configmaps",
            "application/json",
            cm("late").to_string().into_bytes(),
            403,
            "Forbidden",
        )
        .await;
    assert!(s["message"].as_str().unwrap().contains("because it is being terminated"), "{s}");
    let (_, cur) = a.call(Method::GET, "/api/v1/namespaces/gone", Value::Null).await;
    let mut fin = cur.clone();
    fin["spec"]["finalizers"] = json!([]);
    let (code, _) = a.call(Method::PUT, "/api/v1/namespaces/gone/finalize", fin).await;
    assert_eq!(code, 200);
    let (code, _) = a.call(Method::GET, "/api/v1/namespaces/gone", Value::Null).await;
    assert_eq!(code, 404, "finalized and deleted");
}

#[tokio::test]
async fn events_expire_by_lease_and_pods_get_default_tolerations() {
    let a = api().await;
    let event = |name: &str| json!({"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Test", "message": "m", "type": "Normal"});
    let (code, _) = a.call(Method::POST, "/api/v1/namespaces/default/events", event("e1")).await;
    assert_eq!(code, 201);
    let (code, _) = a.call(Method::POST, "/api/v1/namespaces/default/events", event("e2")).await;
    assert_eq!(code, 201);
    let e1 = a.store.get("/registry/events/default/e1").await.unwrap();
    let e2 = a.store.get("/registry/events/default/e2").await.unwrap();
    assert_ne!(e1.lease, 0, "an event carries a lease");
    assert_eq!(e1.lease, e2.lease, "events written within a minute share one lease");
    let ttl = a.store.keep_alive(e1.lease).await.unwrap();
    assert!(ttl > 3600 && ttl <= 3660, "{ttl}");
    // Revoking the lease (what its expiry does) removes the events.
    a.store.revoke_lease(e1.lease).await.unwrap();
    assert!(a.store.get("/registry/events/default/e1").await.is_err());
    // Other kinds carry no lease.
    let (code, _) = a.call(Method::POST, "/api/v1/namespaces/default/configmaps", cm("c1")).await;
    assert_eq!(code, 201);
    assert_eq!(a.store.get("/registry/configmaps/default/c1").await.unwrap().lease, 0);

    let pod = json!({"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "c", "image": "nginx"}],
        "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
    let (code, body) = a.call(Method::POST, "/api/v1/namespaces/default/pods", pod).await;
    assert_eq!(code, 201, "{body}");
    let tolerations = body["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(tolerations.len(), 2, "{tolerations:?}");
    assert_eq!(tolerations[0]["tolerationSeconds"], 5, "the pod's own toleration is kept");
    assert_eq!(tolerations[1]["key"], "node.kubernetes.io/not-ready");
    assert_eq!(tolerations[1]["tolerationSeconds"], 300);
}

/// A stand-in kubelet on loopback: answers `/containerLogs` with the path and query it was asked for,
/// and 400 for container "waiting".
async fn fake_kubelet() -> u16 {
    use axum::extract::{Path, RawQuery};
    let app = axum::Router::new().route(
        "/containerLogs/{ns}/{pod}/{c}",
        axum::routing::get(
            |Path((ns, pod, c)): Path<(String, String, String)>, RawQuery(q): RawQuery| async move {
                if c == "waiting" {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        format!("container \"{c}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
                    );
                }
                (axum::http::StatusCode::OK, format!("log of {ns}/{pod}/{c} query={}\n", q.unwrap_or_default()))
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_log_picks_the_container_and_proxies_to_the_nodes_kubelet() {
    let a = api().await;
    let port = fake_kubelet().await;
    let node = |name: &str, port: u16| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
    };
    assert_eq!(a.call(Method::POST, "/api/v1/nodes", node("w1", port)).await.0, 201);
    // A closed port: bind one, note it, drop it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    assert_eq!(a.call(Method::POST, "/api/v1/nodes", node("down", closed)).await.0, 201);
    let pod = |name: &str, node: Option<&str>, containers: &[&str]| {
        let cs: Vec<Value> = containers.iter().map(|c| json!({"name": c, "image": "nginx"})).collect();
        let mut p =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": cs}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    };
    for p in [
        pod("one", Some("w1"), &["web"]),
        pod("two", Some("w1"), &["a", "b"]),
        pod("pending", None, &["web"]),
        pod("orphan", Some("gone"), &["web"]),
        pod("unreachable", Some("down"), &["web"]),
        pod("slow", Some("w1"), &["waiting"]),
    ] {
        assert_eq!(a.call(Method::POST, "/api/v1/namespaces/default/pods", p).await.0, 201);
    }
    let st = a.st.clone();
    let get = |uri: String| {
        let st = st.clone();
        async move {
            let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
            let resp = apiserver::router(st).oneshot(req).await.unwrap();
            let code = resp.status().as_u16();
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (code, ct, String::from_utf8_lossy(&bytes).to_string())
        }
    };

    // The only container, and the query passed through.
    let (code, ct, body) =
        get("/api/v1/namespaces/default/pods/one/log?tailLines=5&timestamps=true".into()).await;
    assert_eq!((code, ct.as_deref()), (200, Some("text/plain")), "{body}");
    assert_eq!(body, "log of default/one/web query=tailLines=5&timestamps=true\n");
    let (code, _, body) = get("/api/v1/namespaces/default/pods/two/log?container=b&follow=true".into()).await;
    assert_eq!((code, body.as_str()), (200, "log of default/two/b query=follow=true\n"));
    // Upstream's errors.
    let status = |body: &str| serde_json::from_str::<Value>(body).unwrap();
    let (code, _, body) = get("/api/v1/namespaces/default/pods/two/log".into()).await;
    assert_eq!(code, 400);
    assert_eq!(status(&body)["reason"], "BadRequest");
    assert_eq!(
        status(&body)["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let (code, _, body) = get("/api/v1/namespaces/default/pods/one/log?container=nope".into()).await;
    assert_eq!(
        (code, status(&body)["message"].as_str()),
        (400, Some("container nope is not valid for pod one"))
    );
    let (code, _, body) = get("/api/v1/namespaces/default/pods/missing/log".into()).await;
    assert_eq!((code, status(&body)["message"].as_str()), (404, Some("pods \"missing\" not found")));
    let (code, _, body) = get("/api/v1/namespaces/default/pods/pending/log".into()).await;
    assert_eq!((code, body.as_str()), (200, ""), "an unscheduled pod has an empty log");
    let (code, _, body) = get("/api/v1/namespaces/default/pods/orphan/log".into()).await;
    assert_eq!((code, status(&body)["message"].as_str()), (404, Some("nodes \"gone\" not found")));
    let (code, _, body) = get("/api/v1/namespaces/default/pods/unreachable/log".into()).await;
    assert_eq!(code, 500);
    let msg = status(&body)["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with(&format!("Get \"http://127.0.0.1:{closed}/containerLogs/default/unreachable/web\"")),
        "{msg}"
    );
    // The kubelet's 400 comes back as a BadRequest with its words.
    let (code, _, body) = get("/api/v1/namespaces/default/pods/slow/log".into()).await;
    assert_eq!(code, 400);
    assert_eq!(
        status(&body)["message"],
        "container \"waiting\" in pod \"slow\" is waiting to start: ContainerCreating"
    );
    let (code, _, _) = get("/api/v1/namespaces/default/pods/one/log?tailLines=x".into()).await;
    assert_eq!(code, 400);
    // Discovery lists pods/log.
    let (_, disc) = a.call(Method::GET, "/api/v1", Value::Null).await;
    let log = disc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/log").cloned();
    assert_eq!(log.map(|l| l["verbs"].clone()), Some(json!(["get"])));
}

#[tokio::test]
async fn secret_string_data_is_folded_into_data() {
    let a = api().await;
    let secret =
        json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello", "a": "over"}});
    let (code, body) = a.call(Method::POST, "/api/v1/namespaces/default/secrets", secret).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"], json!({"a": "b3Zlcg==", "b": "aGVsbG8="}));
    assert!(body.get("stringData").is_none());
    let stored: Value =
        serde_json::from_slice(&a.store.get("/registry/secrets/default/s").await.unwrap().value).unwrap();
    assert!(stored.get("stringData").is_none(), "stringData is never stored");
}

/// kube-dns is bootstrapped without a selector (the DNS component publishes its endpoints); a
/// Service left with the old CoreDNS selector by an earlier kplane loses it on the next start,
/// and a selector an administrator chose is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_leaves_kube_dns_without_the_old_selector() {
    let a = api().await;
    let uri = "/api/v1/namespaces/kube-system/services/kube-dns";
    let (_, svc) = a.call(Method::GET, uri, Value::Null).await;
    assert!(svc["spec"]["selector"].is_null(), "{svc}");
    assert_eq!(svc["spec"]["ports"].as_array().map(Vec::len), Some(2), "{svc}");

    let with_selector = |mut svc: Value, sel: Value| {
        svc["spec"]["selector"] = sel;
        svc
    };
    let (code, old) = a.call(Method::PUT, uri, with_selector(svc, json!({"k8s-app": "kube-dns"}))).await;
    assert_eq!(code, 200, "{old}");
    apiserver::bootstrap(&a.st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    let (_, svc) = a.call(Method::GET, uri, Value::Null).await;
    assert!(svc["spec"]["selector"].is_null(), "the old selector is dropped: {svc}");

    let (code, mine) = a.call(Method::PUT, uri, with_selector(svc, json!({"app": "my-dns"}))).await;
    assert_eq!(code, 200, "{mine}");
    apiserver::bootstrap(&a.st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    let (_, svc) = a.call(Method::GET, uri, Value::Null).await;
    assert_eq!(svc["spec"]["selector"], json!({"app": "my-dns"}), "{svc}");
    a.store.shutdown().await;
}

/// Aggregated discovery (`Accept: ...;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) says
/// exactly what the legacy per-group-version lists say; without that Accept the legacy
/// documents are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_matches_the_legacy_documents() {
    let a = api().await;
    let get = |uri: &'static str, accept: &'static str| {
        let st = a.st.clone();
        async move {
            let req = Request::builder().uri(uri).header("accept", accept).body(Body::empty()).unwrap();
            let resp = apiserver::router(st).oneshot(req).await.unwrap();
            let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_string();
            let vary = resp.headers().get("vary").map(|v| v.to_str().unwrap().to_string());
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (ct, vary, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    const KUBECTL: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    // Legacy when not asked for.
    let (_, _, legacy) = get("/apis", "application/json").await;
    assert_eq!(legacy["kind"], "APIGroupList");
    let (_, _, legacy) = get("/api", "application/json, */*").await;
    assert_eq!(legacy["kind"], "APIVersions");

    // v2beta1 only when it is the first aggregated form listed.
    let (ct, _, beta) =
        get("/apis", "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList").await;
    assert_eq!(ct, "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList");
    assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");

    let mut seen = 0;
    for (uri, legacy_root) in [("/api", true), ("/apis", false)] {
        let (ct, vary, doc) = get(uri, KUBECTL).await;
        assert_eq!(ct, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "{uri}");
        assert_eq!(vary.as_deref(), Some("Accept"));
        assert_eq!(
            (doc["kind"].as_str(), doc["apiVersion"].as_str()),
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io/v2"))
        );
        for group in doc["items"].as_array().unwrap() {
            let name = group["metadata"]["name"].as_str().unwrap();
            assert_eq!(name.is_empty(), legacy_root, "{uri}: {name}");
            for version in group["versions"].as_array().unwrap() {
                let v = version["version"].as_str().unwrap();
                let list_uri = if name.is_empty() { format!("/api/{v}") } else { format!("/apis/{name}/{v}") };
                let (_, list) = a.call(Method::GET, &list_uri, Value::Null).await;
                let legacy: Vec<&Value> = list["resources"].as_array().unwrap().iter().collect();
                let aggregated = version["resources"].as_array().unwrap();
                let top: Vec<&&Value> =
                    legacy.iter().filter(|r| !r["name"].as_str().unwrap().contains('/')).collect();
                assert_eq!(aggregated.len(), top.len(), "{list_uri}");
                for r in aggregated {
                    let plural = r["resource"].as_str().unwrap();
                    let l = top
                        .iter()
                        .find(|l| l["name"] == plural)
                        .unwrap_or_else(|| panic!("{list_uri}: {plural}"));
                    assert_eq!(r["verbs"], l["verbs"], "{plural}");
                    assert_eq!(r["singularResource"], l["singularName"], "{plural}");
                    assert_eq!(r["responseKind"]["kind"], l["kind"], "{plural}");
                    assert_eq!(r["scope"] == "Namespaced", l["namespaced"] == true, "{plural}");
                    assert_eq!(r.get("shortNames"), l.get("shortNames"), "{plural}");
                    assert_eq!(r.get("categories"), l.get("categories"), "{plural}");
                    let subs: Vec<String> = legacy
                        .iter()
                        .filter_map(|s| {
                            s["name"].as_str()?.strip_prefix(&format!("{plural}/")).map(str::to_string)
                        })
                        .collect();
                    let agg_subs: Vec<String> = r["subresources"]
                        .as_array()
                        .map(|v| v.iter().map(|s| s["subresource"].as_str().unwrap().to_string()).collect())
                        .unwrap_or_default();
                    assert_eq!(agg_subs, subs, "{plural}");
                    seen += 1;
                }
            }
        }
    }
    assert!(seen >= 20, "only {seen} resources");
    // Spot checks: a Deployment's scale is an autoscaling/v1 Scale; pods are in the `all` category.
    let (_, _, apis) = get("/apis", KUBECTL).await;
    let apps = apis["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == "apps").unwrap();
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "deployments")
        .unwrap();
    let scale =
        deploy["subresources"].as_array().unwrap().iter().find(|s| s["subresource"] == "scale").unwrap();
    assert_eq!(scale["responseKind"], json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
    let (_, _, core) = get("/api", KUBECTL).await;
    let pods = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "pods")
        .unwrap();
    assert!(pods["categories"].as_array().unwrap().contains(&json!("all")), "{pods}");
    a.store.shutdown().await;
}

/// Reads watch lines from `uri` on `st` until `done` says the lines so far are complete; panics after
/// a deadline. The watch is started before `during` runs.
async fn watch_until(
    st: &apiserver::AppState,
    uri: &str,
    during: impl std::future::Future<Output = ()>,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = apiserver::router(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{uri}");
    let mut body = resp.into_body().into_data_stream();
    during.await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    while !done(&out) {
        let chunk = tokio::time::timeout_at(deadline, body.next()).await;
        let Ok(Some(Ok(chunk))) = chunk else {
            panic!("{uri}: watch stopped short after {} lines: {:?}", out.len(), summary(&out))
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

fn summary(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["type"].as_str().unwrap_or("?"),
                l["object"]["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn count(lines: &[Value], ty: &str) -> usize {
    lines.iter().filter(|l| l["type"] == ty).count()
}

/// Issue 14: 50 Events share one lease; when it goes (revoked here, which is what its expiry does in
/// both backends: all 50 keys deleted at one revision) every watcher sees exactly 50 DELETED events —
/// live from the watch cache, replayed from the window, replayed from the store when the window is
/// too small for the revision, and after a marker write that proves nothing more is coming.
async fn lease_expiry_delivers_every_deleted_event(store: store::DynStore, watch_cache_size: usize) {
    const N: usize = 50;
    let config = apiserver::Config { watch_cache_size, ..Default::default() };
    let st = apiserver::AppState::new(store.clone(), config);
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let ns = format!("lease-{watch_cache_size}-{}", nanos % 1_000_000_000);
    let (code, body) = call(&st, Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": ns}})).await;
    assert_eq!(code, 201, "{body}");
    let events = format!("/api/v1/namespaces/{ns}/events");
    let event = |name: String| json!({"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns}, "reason": "Test", "message": "m", "type": "Normal"});
    let marker = format!("/api/v1/namespaces/{ns}/configmaps");
    let (_, list) = call(&st, Method::GET, &events, Value::Null).await;
    let start_rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    let mut lease = 0;
    let mut last_rv = String::new();
    let live = watch_until(
        &st,
        &format!("{events}?watch=true&resourceVersion={start_rv}"),
        async {
            for i in 0..N {
                let (code, body) = call(&st, Method::POST, &events, event(format!("e{i:02}"))).await;
                assert_eq!(code, 201, "{body}");
                last_rv = body["metadata"]["resourceVersion"].as_str().unwrap().to_string();
            }
            let mut leases = std::collections::BTreeSet::new();
            for i in 0..N {
                leases.insert(store.get(&format!("/registry/events/{ns}/e{i:02}")).await.unwrap().lease);
            }
            assert_eq!(leases.len(), 1, "the {N} events share one lease: {leases:?}");
            lease = *leases.iter().next().unwrap();
            store.revoke_lease(lease).await.unwrap();
            let (code, _) = call(&st, Method::POST, &marker, cm("marker")).await;
            assert_eq!(code, 201);
        },
        |l| count(l, "DELETED") >= N,
    )
    .await;
    assert_ne!(lease, 0);
    assert_eq!((count(&live, "ADDED"), count(&live, "DELETED")), (N, N), "live: {:?}", summary(&live));
    let deleted_rvs: std::collections::BTreeSet<&str> = live
        .iter()
        .filter(|l| l["type"] == "DELETED")
        .map(|l| l["object"]["metadata"]["resourceVersion"].as_str().unwrap())
        .collect();
    assert_eq!(deleted_rvs.len(), 1, "one revision deleted them all: {deleted_rvs:?}");
    let mut names: Vec<&str> = live
        .iter()
        .filter(|l| l["type"] == "DELETED")
        .map(|l| l["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), N, "each event deleted once");

    // The revoked lease is not handed out again: the next Event is written with a fresh one.
    let (code, body) = call(&st, Method::POST, &events, event("after-revoke".into())).await;
    assert_eq!(code, 201, "an Event after its shared lease was revoked: {body}");
    let after = store.get(&format!("/registry/events/{ns}/after-revoke")).await.unwrap().lease;
    assert!(after != 0 && after != lease, "a fresh lease: {after} vs the revoked {lease}");

    // Watches that start after the fact replay the deletes (and the marker proves the end): from
    // before the creates, and from the last create.
    let cms_after = |rv: &str| format!("/api/v1/namespaces/{ns}/events?watch=true&resourceVersion={rv}");
    for rv in [start_rv.as_str(), last_rv.as_str()] {
        let lines = watch_until(&st, &cms_after(rv), async {}, |l| count(l, "DELETED") >= N).await;
        let added = if rv == start_rv { N } else { 0 };
        assert_eq!(
            (count(&lines, "ADDED"), count(&lines, "DELETED")),
            (added, N),
            "from {rv}: {:?}",
            summary(&lines)
        );
    }
    // The deletes are followed by the next write and nothing else: no DELETED repeated.
    let all = format!("/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={last_rv}");
    let lines = watch_until(&st, &all, async {}, |l| !l.is_empty()).await;
    assert_eq!(summary(&lines), ["ADDED marker"]);
    let events_then_marker =
        format!("/api/v1/events?watch=true&resourceVersion={last_rv}&fieldSelector=metadata.namespace%3D{ns}");
    let lines = watch_until(&st, &events_then_marker, async {}, |l| count(l, "DELETED") >= N).await;
    assert_eq!(count(&lines, "DELETED"), N, "filtered watch: {:?}", summary(&lines));
}

async fn call(st: &apiserver::AppState, method: Method, uri: &str, body: Value) -> (u16, Value) {
    let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap();
    let resp = apiserver::router(st.clone()).oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_delivers_every_deleted_event_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    // The default window, and one smaller than the revision (replays then come from the store).
    for window in [apiserver::Config::default().watch_cache_size, 20, 0] {
        lease_expiry_delivers_every_deleted_event(Arc::new(store.clone()), window).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_delivers_every_deleted_event_on_etcd() {
    let (_etcd, endpoint) = match std::env::var("KPLANE_TEST_ETCD").ok().filter(|s| !s.trim().is_empty()) {
        Some(endpoint) => (None, endpoint),
        None => {
            let etcd = store::etcd_process::EtcdProcess::start()
                .await
                .unwrap_or_else(|e| panic!("starting etcd: {e}"));
            let endpoint = etcd.endpoint();
            (Some(etcd), endpoint)
        }
    };
    let store = store::etcd::EtcdStore::connect(store::etcd::EtcdConfig::new(vec![endpoint])).await.unwrap();
    for window in [apiserver::Config::default().watch_cache_size, 20, 0] {
        lease_expiry_delivers_every_deleted_event(Arc::new(store.clone()), window).await;
    }
}

/// Issue 14: with a real etcd, upstream's compactor (`--etcd-compaction-interval`) runs, and a watch
/// from a revision it compacted away gets upstream's in-stream 410 Expired from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_compacted_on_etcd_gets_410() {
    let etcd = store::etcd_process::EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let store =
        store::etcd::EtcdStore::connect(store::etcd::EtcdConfig::new(vec![etcd.endpoint()])).await.unwrap();
    let compactor = store.run_compactor(std::time::Duration::from_millis(200));
    // Without the watch cache: a cache that started before `old` was written still holds every event
    // after it and serves the watch (as upstream's does), which is not the path under test.
    let config = apiserver::Config { watch_cache_size: 0, ..apiserver::Config::default() };
    let st = apiserver::AppState::new(Arc::new(store.clone()), config);
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, first) = call(&st, Method::POST, cms, cm("old")).await;
    assert_eq!(code, 201);
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for i in 0.. {
        assert_eq!(call(&st, Method::POST, cms, cm(&format!("new{i}"))).await.0, 201);
        // A watch from `rv` reads from `rv + 1` on: wait until that revision is compacted too (a
        // compaction to exactly `rv + 1` leaves the watch valid).
        let opts = store::ListOptions {
            prefix: "/registry/".into(),
            revision: rv.parse::<i64>().unwrap() + 1,
            ..Default::default()
        };
        if matches!(store.list(opts).await, Err(store::Error::Compacted { .. })) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "etcd was not compacted within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    compactor.abort();
    let lines =
        watch_until(&st, &format!("{cms}?watch=true&resourceVersion={rv}"), async {}, |l| !l.is_empty()).await;
    assert_eq!(lines[0]["type"], "ERROR", "{lines:?}");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
    assert!(
        lines[0]["object"]["message"].as_str().unwrap().starts_with("too old resource version"),
        "{lines:?}"
    );
}

/// Issue 14: a paged LIST at one revision while others write: every page holds exactly the first
/// page's snapshot, and remainingItemCount (carried from the first page's count in the continue
/// token) is right on every page.
async fn paged_list_at_an_old_revision(store: store::DynStore) {
    const N: usize = 25;
    const LIMIT: usize = 4;
    let st = apiserver::AppState::new(store, apiserver::Config::default());
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let ns = format!("paged-{}", nanos % 1_000_000_000);
    assert_eq!(call(&st, Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": ns}})).await.0, 201);
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    for i in 0..N {
        assert_eq!(call(&st, Method::POST, &cms, cm(&format!("c{i:02}"))).await.0, 201);
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, first) = call(&st, Method::GET, &format!("{cms}?limit={LIMIT}"), Value::Null).await;
    let rv = first["metadata"]["resourceVersion"].clone();
    let mut seen = names(&first);
    assert_eq!(first["metadata"]["remainingItemCount"], N - LIMIT);
    let mut page = first;
    let mut round = 0;
    while let Some(token) = page["metadata"]["continue"].as_str().map(str::to_string) {
        round += 1;
        // Between pages: delete a key not read yet, update another, add keys inside the range.
        let victim = format!("c{:02}", (seen.len() + 1).min(N - 1));
        call(&st, Method::DELETE, &format!("{cms}/{victim}"), Value::Null).await;
        let mut upd = cm(&format!("c{:02}", (seen.len() + 2).min(N - 1)));
        upd["data"]["a"] = json!("changed");
        call(&st, Method::PUT, &format!("{cms}/{}", upd["metadata"]["name"].as_str().unwrap()), upd).await;
        call(&st, Method::POST, &cms, cm(&format!("c{:02}-new{round}", seen.len()))).await;
        let (code, next) =
            call(&st, Method::GET, &format!("{cms}?limit={LIMIT}&continue={token}"), Value::Null).await;
        assert_eq!(code, 200, "{next}");
        assert_eq!(next["metadata"]["resourceVersion"], rv);
        seen.extend(names(&next));
        let left = N - seen.len();
        if left > 0 {
            assert_eq!(next["metadata"]["remainingItemCount"], left, "page {round}: {}", next["metadata"]);
        } else {
            assert!(next["metadata"].get("continue").is_none(), "{}", next["metadata"]);
        }
        page = next;
        assert!(round <= N, "paging does not end");
    }
    let want: Vec<String> = (0..N).map(|i| format!("c{i:02}")).collect();
    assert_eq!(seen, want, "the pages are the first page's snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_lists_at_an_old_revision_on_the_embedded_store_and_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    paged_list_at_an_old_revision(Arc::new(embedded)).await;
    let etcd = store::etcd_process::EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let store =
        store::etcd::EtcdStore::connect(store::etcd::EtcdConfig::new(vec![etcd.endpoint()])).await.unwrap();
    paged_list_at_an_old_revision(Arc::new(store)).await;
}

/// A create answers with the stored bytes and the resourceVersion spliced in: the same object a GET
/// then reads, in upstream's field order (kind and apiVersion first), for a plain kind, a pod that
/// admission and defaulting change, a generated name and a kind served in another form than stored
/// (events.k8s.io, which takes the encoder); a Table is still a Table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answers_what_a_get_reads() {
    let a = api().await;
    let pod = json!({"metadata": {"name": "p1", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let gen = json!({"metadata": {"generateName": "gen-"}, "data": {"k": "v"}});
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "x/y", "reportingInstance": "i",
        "action": "A", "reason": "R", "type": "Normal", "regarding": {"kind": "Pod", "name": "p1", "namespace": "default"}});
    for (collection, body) in [
        ("/api/v1/namespaces/default/configmaps", cm("c1")),
        ("/api/v1/namespaces/default/pods", pod),
        ("/api/v1/namespaces/default/configmaps", gen),
        ("/apis/events.k8s.io/v1/namespaces/default/events", event),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri(collection)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = apiserver::router(a.st.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{collection}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.starts_with(r#"{"kind":""#), "{text}");
        let created: Value = serde_json::from_str(&text).unwrap();
        let name = created["metadata"]["name"].as_str().unwrap();
        let (code, got) = a.call(Method::GET, &format!("{collection}/{name}"), Value::Null).await;
        assert_eq!(code, 200);
        assert_eq!(created, got, "{collection}: the create's answer is what a GET reads");
        let rv: i64 = created["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert_eq!(rv, a.revision().await, "{collection}: resourceVersion is the create's revision");
    }
    // Asked for a Table, a create answers with one.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Body::from(cm("c2").to_string()))
        .unwrap();
    let resp = apiserver::router(a.st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let table: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
}
