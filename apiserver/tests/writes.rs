//! Writes through the router in-process over a real store: dry runs on every write path (nothing
//! stored, nothing allocated), bodies that used to panic, namespaces that may not be deleted, the
//! health checks (also with the store gone), pods/log refusing non-loopback kubelets, and the
//! bitmap allocation of ClusterIPs and node ports.

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

async fn api_with(config: apiserver::Config) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    let st = apiserver::AppState::new(Arc::new(store), config);
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    Api { st, _dir: dir }
}

async fn api() -> Api {
    api_with(apiserver::Config::default()).await
}

/// One request through the router; the body as JSON (or as a string when it is not JSON).
async fn send(st: &apiserver::AppState, method: Method, uri: &str, ct: &str, body: &Value) -> (u16, Value) {
    let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
    let req =
        Request::builder().method(method).uri(uri).header("content-type", ct).body(Body::from(bytes)).unwrap();
    let resp = apiserver::router(st.clone()).oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl Api {
    async fn call(&self, method: Method, uri: &str, body: Value) -> (u16, Value) {
        send(&self.st, method, uri, "application/json", &body).await
    }

    async fn patch(&self, uri: &str, body: Value) -> (u16, Value) {
        send(&self.st, Method::PATCH, uri, "application/merge-patch+json", &body).await
    }

    async fn ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let (code, out) = self.call(method, uri, body).await;
        assert!((200..300).contains(&code), "{uri}: {code} {out}");
        out
    }

    async fn revision(&self) -> i64 {
        self.st.store.current_revision().await.unwrap()
    }

    /// The stored object's mod_revision.
    async fn mod_revision(&self, key: &str) -> i64 {
        self.st.store.get(key).await.unwrap().mod_revision
    }
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_runs_every_write_path_and_stores_nothing() {
    let a = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    a.ok(Method::POST, cms, json!({"metadata": {"name": "dr"}, "data": {"a": "1"}})).await;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    a.ok(Method::POST, deps, deployment("web")).await;
    a.ok(Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": "gone"}})).await;
    a.ok(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    let before = a.revision().await;
    let cm = format!("{cms}/dr");
    let dep = format!("{deps}/web");

    // Create: defaulted and validated as a real create, with no resourceVersion.
    let (code, out) =
        a.call(Method::POST, &format!("{cms}?dryRun=All"), json!({"metadata": {"name": "new"}})).await;
    assert_eq!(code, 201, "{out}");
    assert!(out["metadata"]["uid"].is_string() && out["metadata"].get("resourceVersion").is_none(), "{out}");
    let (code, out) =
        a.call(Method::POST, &format!("{cms}?dryRun=All"), json!({"metadata": {"name": "BAD"}})).await;
    assert_eq!(code, 422, "a dry run validates: {out}");
    // Update, patch, status, scale.
    let (code, out) = a
        .call(Method::PUT, &format!("{cm}?dryRun=All"), json!({"metadata": {"name": "dr"}, "data": {"a": "2"}}))
        .await;
    assert_eq!((code, &out["data"]["a"]), (200, &json!("2")), "{out}");
    assert!(out["metadata"]["managedFields"].is_array(), "managedFields are recorded: {out}");
    let (code, out) = a.patch(&format!("{cm}?dryRun=All"), json!({"data": {"a": "3"}})).await;
    assert_eq!((code, &out["data"]["a"]), (200, &json!("3")), "{out}");
    let (code, out) = a.patch(&format!("{dep}?dryRun=All"), json!({"spec": {"replicas": 4}})).await;
    assert_eq!((code, &out["metadata"]["generation"]), (200, &json!(2)), "generation moves as it would: {out}");
    let (code, out) = a.patch(&format!("{dep}/status?dryRun=All"), json!({"status": {"replicas": 9}})).await;
    assert_eq!((code, &out["status"]["replicas"]), (200, &json!(9)), "{out}");
    let mut d = a.ok(Method::GET, &dep, Value::Null).await;
    d["status"] = json!({"replicas": 7});
    let (code, out) = a.call(Method::PUT, &format!("{dep}/status?dryRun=All"), d).await;
    assert_eq!((code, &out["status"]["replicas"]), (200, &json!(7)), "{out}");
    let (code, out) = a.patch(&format!("{dep}/scale?dryRun=All"), json!({"spec": {"replicas": 5}})).await;
    assert_eq!((code, &out["spec"]["replicas"]), (200, &json!(5)), "{out}");
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 6}});
    let (code, out) = a.call(Method::PUT, &format!("{dep}/scale?dryRun=All"), scale).await;
    assert_eq!((code, &out["spec"]["replicas"]), (200, &json!(6)), "{out}");
    // Binding and finalize.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, out) =
        a.call(Method::POST, "/api/v1/namespaces/default/pods/p/binding?dryRun=All", binding).await;
    assert_eq!(code, 201, "{out}");
    let (code, out) = a
        .call(
            Method::PUT,
            "/api/v1/namespaces/gone/finalize?dryRun=All",
            json!({"metadata": {"name": "gone"}, "spec": {"finalizers": []}}),
        )
        .await;
    assert_eq!((code, &out["spec"]["finalizers"]), (200, &json!([])), "{out}");
    // Delete (query and DeleteOptions body), a graceful namespace delete, deletecollection.
    let (code, out) = a.call(Method::DELETE, &format!("{cm}?dryRun=All"), Value::Null).await;
    assert_eq!((code, &out["status"]), (200, &json!("Success")), "{out}");
    let (code, _) = a
        .call(Method::DELETE, &cm, json!({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]}))
        .await;
    assert_eq!(code, 200);
    let (code, out) = a.call(Method::DELETE, "/api/v1/namespaces/gone?dryRun=All", Value::Null).await;
    assert_eq!((code, &out["status"]["phase"]), (200, &json!("Terminating")), "{out}");
    let (code, out) = a.call(Method::DELETE, &format!("{cms}?dryRun=All"), Value::Null).await;
    assert_eq!(code, 200, "{out}");
    assert!(!out["items"].as_array().unwrap().is_empty());

    assert_eq!(a.revision().await, before, "a dry run wrote to the store");
    let stored = a.ok(Method::GET, &cm, Value::Null).await;
    assert_eq!(stored["data"]["a"], "1");
    let pod = a.ok(Method::GET, "/api/v1/namespaces/default/pods/p", Value::Null).await;
    assert!(pod["spec"].get("nodeName").is_none(), "{pod}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_services_keep_no_cluster_ip_or_node_port() {
    let a = api().await;
    let svcs = "/api/v1/namespaces/default/services";
    let before = a.revision().await;
    let svc = json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    let (code, out) = a.call(Method::POST, &format!("{svcs}?dryRun=All"), svc.clone()).await;
    assert_eq!(code, 201, "{out}");
    assert!(out["spec"]["clusterIP"].is_string() && out["spec"]["ports"][0]["nodePort"].is_i64(), "{out}");
    // A taken address is refused in a dry run too.
    let taken =
        json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "127.96.0.1", "ports": [{"port": 80}]}});
    let (code, out) = a.call(Method::POST, &format!("{svcs}?dryRun=All"), taken).await;
    assert_eq!(code, 422, "{out}");
    assert_eq!(a.revision().await, before, "a dry-run Service create kept an allocation");
    // The real create then gets what it asks for.
    let mut want = svc;
    want["spec"]["clusterIP"] = out_ip(&a).await;
    a.ok(Method::POST, svcs, want).await;
}

/// A free address, found by a dry run.
async fn out_ip(a: &Api) -> Value {
    let probe = json!({"metadata": {"name": "probe"}, "spec": {"ports": [{"port": 80}]}});
    let (_, out) = a.call(Method::POST, "/api/v1/namespaces/default/services?dryRun=All", probe).await;
    out["spec"]["clusterIP"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dry_run_values_are_refused_on_every_verb() {
    let a = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    a.ok(Method::POST, cms, json!({"metadata": {"name": "c"}})).await;
    let before = a.revision().await;
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, format!("{cms}?dryRun=foo"), json!({"metadata": {"name": "d"}}), "CreateOptions"),
        (Method::PUT, format!("{cms}/c?dryRun=foo"), json!({"metadata": {"name": "c"}}), "UpdateOptions"),
        (Method::DELETE, format!("{cms}/c?dryRun=foo"), Value::Null, "DeleteOptions"),
        (Method::DELETE, format!("{cms}?dryRun=foo"), Value::Null, "DeleteOptions"),
        (Method::DELETE, format!("{cms}/c"), json!({"dryRun": ["foo"]}), "DeleteOptions"),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods/x/binding?dryRun=foo".into(),
            json!({}),
            "CreateOptions",
        ),
    ];
    for (method, uri, body, kind) in cases {
        let (code, out) = a.call(method, &uri, body).await;
        assert_eq!((code, out["reason"].as_str()), (422, Some("Invalid")), "{uri}: {out}");
        assert_eq!(
            out["message"],
            format!("{kind}.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{{\"foo\"}}: supported values: \"All\""),
        );
    }
    let (code, out) = a.patch(&format!("{cms}/c?dryRun=All&dryRun=x"), json!({"data": {"a": "b"}})).await;
    assert_eq!(code, 422, "{out}");
    assert!(out["message"].as_str().unwrap().starts_with("PatchOptions.meta.k8s.io"), "{out}");
    let (code, out) = a.call(Method::DELETE, &format!("{cms}/c"), json!({"dryRun": "All"})).await;
    assert_eq!((code, out["reason"].as_str()), (400, Some("BadRequest")), "{out}");
    assert_eq!(a.revision().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_used_to_panic_get_an_answer() {
    let a = api().await;
    // A Namespace whose spec is not an object, created and then updated over one with finalizers.
    let (code, out) =
        a.call(Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": "odd"}, "spec": 5})).await;
    assert!(code < 500, "{code} {out}");
    let (code, out) = a
        .call(Method::PUT, "/api/v1/namespaces/default", json!({"metadata": {"name": "default"}, "spec": 5}))
        .await;
    assert!(code < 500, "{code} {out}");
    let (code, out) = a
        .call(
            Method::PUT,
            "/api/v1/namespaces/default/finalize",
            json!({"metadata": {"name": "default"}, "spec": 5}),
        )
        .await;
    assert!(code < 500, "{code} {out}");
    // A pod whose status became a string through /status, then bound.
    let pods = "/api/v1/namespaces/default/pods";
    a.ok(
        Method::POST,
        pods,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    let (code, out) = a.patch(&format!("{pods}/p/status"), json!({"status": "weird"})).await;
    assert!(code < 500, "{code} {out}");
    let binding = json!({"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, out) = a.call(Method::POST, &format!("{pods}/p/binding"), binding).await;
    assert!(code < 500, "{code} {out}");
    if code == 201 {
        let pod = a.ok(Method::GET, &format!("{pods}/p"), Value::Null).await;
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled", "{pod}");
    }
    // A namespace marked for deletion whose status is not an object.
    a.ok(Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": "st"}})).await;
    let (code, out) = a.patch("/api/v1/namespaces/st/status", json!({"status": 5})).await;
    assert!(code < 500, "{code} {out}");
    let (code, out) = a.call(Method::DELETE, "/api/v1/namespaces/st", Value::Null).await;
    assert!(code < 500, "{code} {out}");
    // Service ports that are not objects, and a spec that is not one.
    let svcs = "/api/v1/namespaces/default/services";
    let (code, out) = a
        .call(
            Method::POST,
            svcs,
            json!({"metadata": {"name": "s1"}, "spec": {"type": "NodePort", "ports": [5]}}),
        )
        .await;
    assert!(code < 500, "{code} {out}");
    let (code, out) = a.call(Method::POST, svcs, json!({"metadata": {"name": "s2"}, "spec": "x"})).await;
    assert!(code < 500, "{code} {out}");
    let (code, out) = a
        .patch("/apis/apps/v1/namespaces/default/deployments/none/scale", json!({"spec": {"replicas": 2}}))
        .await;
    assert_eq!(code, 404, "{out}");
    a.ok(Method::GET, "/api/v1/namespaces/default", Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_namespaces_refuse_deletion() {
    let a = api().await;
    a.ok(Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": "mine"}})).await;
    let before = a.revision().await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, out) = a.call(Method::DELETE, &format!("/api/v1/namespaces/{ns}"), Value::Null).await;
        assert_eq!((code, out["reason"].as_str()), (403, Some("Forbidden")), "{out}");
        assert_eq!(
            out["message"],
            format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")
        );
        assert_eq!(out["details"]["name"], ns);
    }
    // A collection that holds them is refused whole.
    let (code, out) = a.call(Method::DELETE, "/api/v1/namespaces", Value::Null).await;
    assert_eq!(code, 403, "{out}");
    assert_eq!(a.revision().await, before, "a refused namespace deletion wrote");
    let (code, out) = a
        .call(Method::DELETE, "/api/v1/namespaces?labelSelector=kubernetes.io/metadata.name=mine", Value::Null)
        .await;
    assert_eq!(code, 200, "{out}");
    let ns = a.ok(Method::GET, "/api/v1/namespaces/mine", Value::Null).await;
    assert_eq!(ns["status"]["phase"], "Terminating");
}

async fn text(st: &apiserver::AppState, uri: &str) -> (u16, String) {
    let (code, body) = send(st, Method::GET, uri, "", &Value::Null).await;
    (code, body.as_str().map(str::to_string).unwrap_or_else(|| body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_real() {
    let a = api().await;
    for probe in ["healthz", "livez", "readyz"] {
        assert_eq!(text(&a.st, &format!("/{probe}")).await, (200, "ok".to_string()));
        let (code, body) = text(&a.st, &format!("/{probe}?verbose")).await;
        assert_eq!(code, 200);
        assert!(body.starts_with("[+]ping ok\n[+]log ok\n[+]etcd ok\n"), "{body}");
        assert!(body.ends_with(&format!("{probe} check passed\n")), "{body}");
        let (_, body) = text(&a.st, &format!("/{probe}?verbose&exclude=etcd")).await;
        assert!(body.contains("[+]etcd excluded: ok\n"), "{body}");
        assert_eq!(text(&a.st, &format!("/{probe}/etcd")).await, (200, "ok".to_string()));
        assert_eq!(text(&a.st, &format!("/{probe}/ping")).await, (200, "ok".to_string()));
        assert_eq!(text(&a.st, &format!("/{probe}/nothing")).await.0, 404);
    }

    // On a real etcd that is then killed, every probe fails its etcd check.
    let mut etcd = store::etcd_process::EtcdProcess::start().await.expect("etcd");
    let store =
        store::etcd::EtcdStore::connect(store::etcd::EtcdConfig::new(vec![etcd.endpoint()])).await.unwrap();
    let st = apiserver::AppState::new(Arc::new(store), apiserver::Config::default());
    // Before its bootstrap the server is not ready: the post-start hooks have not run.
    let (code, body) = text(&st, "/readyz?verbose").await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n"), "{body}");
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    let (code, body) = text(&st, "/readyz?verbose").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]informer-sync ok\n[+]poststarthook/rbac/bootstrap-roles ok\n"), "{body}");
    assert_eq!(text(&st, "/livez/etcd").await, (200, "ok".to_string()));
    etcd.kill9().unwrap();
    for probe in ["healthz", "livez", "readyz"] {
        let (code, body) = text(&st, &format!("/{probe}")).await;
        assert_eq!(code, 500, "{body}");
        assert!(body.contains("[+]ping ok\n") && body.contains("[-]etcd failed: reason withheld\n"), "{body}");
        assert!(body.ends_with(&format!("{probe} check failed\n")), "{body}");
        let (code, body) = text(&st, &format!("/{probe}/etcd")).await;
        assert_eq!(code, 500);
        assert!(body.starts_with("internal server error: "), "{body}");
        assert_eq!(text(&st, &format!("/{probe}/ping")).await, (200, "ok".to_string()));
        assert_eq!(text(&st, &format!("/{probe}?exclude=etcd&exclude=etcd-readiness")).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_never_dial_a_non_loopback_kubelet() {
    let a = api().await;
    let node = json!({
        "metadata": {"name": "far"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}},
    });
    a.ok(Method::POST, "/api/v1/nodes", node).await;
    let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "far", "containers": [{"name": "c", "image": "i"}]}});
    a.ok(Method::POST, "/api/v1/namespaces/default/pods", pod).await;
    let started = std::time::Instant::now();
    let (code, out) = a.call(Method::GET, "/api/v1/namespaces/default/pods/p/log", Value::Null).await;
    assert_eq!(code, 500, "{out}");
    let msg = out["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "Get \"http://10.1.2.3:10250/containerLogs/default/p/c\": dial tcp 10.1.2.3:10250: not dialled"
        ),
        "{msg}"
    );
    // Refused before any connection attempt (a dial to 10.1.2.3 would take far longer to fail).
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_come_from_a_stored_bitmap() {
    // A /28: 14 addresses, two of them taken by bootstrap (`kubernetes` .1 and `kube-dns` .10).
    let config = apiserver::Config { service_cidr: "10.0.0.0/28".parse().unwrap(), ..Default::default() };
    let a = api_with(config).await;
    let svcs = "/api/v1/namespaces/default/services";
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..12 {
        let out = a.ok(Method::POST, svcs, svc(&format!("s{i}"), json!({"ports": [{"port": 80}]}))).await;
        assert!(ips.insert(out["spec"]["clusterIP"].as_str().unwrap().to_string()), "{out}");
    }
    assert!(!ips.contains("10.0.0.1") && !ips.contains("10.0.0.10") && !ips.contains("10.0.0.15"));
    let (code, out) = a.call(Method::POST, svcs, svc("full", json!({"ports": [{"port": 80}]}))).await;
    assert_eq!(
        (code, out["message"].as_str()),
        (500, Some("Internal error occurred: failed to allocate a serviceIP: range is full"))
    );
    // The stored RangeAllocation: upstream's key and shape, a base64 bitmap with 14 bits set.
    let stored: Value =
        serde_json::from_slice(&a.st.store.get("/registry/ranges/serviceips").await.unwrap().value).unwrap();
    assert_eq!(
        (stored["kind"].as_str(), stored["range"].as_str()),
        (Some("RangeAllocation"), Some("10.0.0.0/28"))
    );
    use base64::Engine;
    let bits = base64::engine::general_purpose::STANDARD.decode(stored["data"].as_str().unwrap()).unwrap();
    assert_eq!(bits.iter().map(|b| b.count_ones()).sum::<u32>(), 14, "{stored}");
    // Released on delete, and taken again.
    let gone = a.ok(Method::GET, &format!("{svcs}/s3"), Value::Null).await["spec"]["clusterIP"].clone();
    a.ok(Method::DELETE, &format!("{svcs}/s3"), Value::Null).await;
    let again = a.ok(Method::POST, svcs, svc("again", json!({"ports": [{"port": 80}]}))).await;
    assert_eq!(again["spec"]["clusterIP"], gone);
    // A specific address that is taken.
    let (code, out) =
        a.call(Method::POST, svcs, svc("dup", json!({"clusterIP": gone, "ports": [{"port": 80}]}))).await;
    assert_eq!(code, 422, "{out}");
    assert_eq!(
        out["message"],
        format!("Service \"dup\" is invalid: spec.clusterIPs: Invalid value: []string{{{gone}}}: failed to allocate IP {}: provided IP is already allocated", gone.as_str().unwrap())
    );
    // A refused create keeps nothing: after deleting one, exactly one more fits.
    a.ok(Method::DELETE, &format!("{svcs}/s4"), Value::Null).await;
    let rev = a.mod_revision("/registry/ranges/serviceips").await;
    a.ok(Method::POST, svcs, svc("last", json!({"ports": [{"port": 80}]}))).await;
    assert!(a.mod_revision("/registry/ranges/serviceips").await > rev);
    assert_eq!(a.call(Method::POST, svcs, svc("over", json!({"ports": [{"port": 80}]}))).await.0, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_come_from_a_stored_bitmap() {
    let config = apiserver::Config { node_port_range: (30000, 30002), ..Default::default() };
    let a = api_with(config).await;
    let svcs = "/api/v1/namespaces/default/services";
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..3 {
        let out = a
            .ok(Method::POST, svcs, svc(&format!("n{i}"), json!({"type": "NodePort", "ports": [{"port": 80}]})))
            .await;
        ports.insert(out["spec"]["ports"][0]["nodePort"].as_i64().unwrap());
    }
    assert_eq!(ports.into_iter().collect::<Vec<_>>(), [30000, 30001, 30002]);
    let (code, out) =
        a.call(Method::POST, svcs, svc("full", json!({"type": "NodePort", "ports": [{"port": 80}]}))).await;
    assert_eq!(
        (code, out["message"].as_str()),
        (500, Some("Internal error occurred: failed to allocate a nodePort: range is full"))
    );
    let freed =
        a.ok(Method::GET, &format!("{svcs}/n1"), Value::Null).await["spec"]["ports"][0]["nodePort"].clone();
    a.ok(Method::DELETE, &format!("{svcs}/n1"), Value::Null).await;
    let taken = if freed == 30000 { 30001 } else { 30000 };
    let (code, out) = a
        .call(
            Method::POST,
            svcs,
            svc("dup", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]})),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        out["message"],
        format!("Service \"dup\" is invalid: spec.ports[0].nodePort: Invalid value: {taken}: provided port is already allocated")
    );
    let out = a
        .ok(
            Method::POST,
            svcs,
            svc("again", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": freed}]})),
        )
        .await;
    assert_eq!(out["spec"]["ports"][0]["nodePort"], freed);
    // The refused creates gave back the ClusterIPs they took: one bit per Service that has one.
    let services = a.ok(Method::GET, "/api/v1/services", Value::Null).await;
    let stored: Value =
        serde_json::from_slice(&a.st.store.get("/registry/ranges/serviceips").await.unwrap().value).unwrap();
    use base64::Engine;
    let bits = base64::engine::general_purpose::STANDARD.decode(stored["data"].as_str().unwrap()).unwrap();
    let set: usize = bits.iter().map(|b| b.count_ones() as usize).sum();
    assert_eq!(set, services["items"].as_array().unwrap().len(), "{services}");
}
