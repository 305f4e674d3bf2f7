//! The X-ray page's endpoints in-process against `apiserver::testing::TestCluster`: the snapshot,
//! the Server-Sent Events stream (a create and a delete arrive as batches), stored values with
//! their keys and revisions (never secrets), and bad requests refused with a clear 400/403/404.

use std::time::{Duration, Instant};

use apiserver::testing::TestCluster;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use tower::ServiceExt;

fn request(uri: &str, host: Option<&str>, site: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    if let Some(s) = site {
        b = b.header("sec-fetch-site", s);
    }
    b.body(Body::empty()).unwrap()
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let code = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    call(app, request(uri, Some("127.0.0.1:6444"), Some("same-origin"))).await
}

async fn create<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

/// Reads SSE frames until one satisfies `f`, at most 10 s.
async fn next_frame(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buf: &mut String,
    f: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if f(&frame) {
                return frame;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .unwrap_or_else(|_| panic!("no matching event within 10 s; pending: {buf}"))
            .expect("the event stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_events_objects_and_bad_requests() {
    let tc = TestCluster::start().await;
    let client = tc.client.clone();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let web = xray::web::Web::start(client.clone(), tc.state.store.clone(), stop);
    let app = xray::web::router(web);

    let ns = "default";
    let svc: Service = create(
        &Api::namespaced(client.clone(), ns),
        json!({"metadata": {"name": "nginx-svc"}, "spec": {"selector": {"app": "nginx"}, "ports": [{"port": 8080, "targetPort": 80}]}}),
    )
    .await;
    create::<Pod>(
        &Api::namespaced(client.clone(), ns),
        json!({"metadata": {"name": "nginx-1", "labels": {"app": "nginx"}}, "spec": {"nodeName": "worker0", "containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    create::<EndpointSlice>(
        &Api::namespaced(client.clone(), ns),
        json!({"metadata": {"name": "nginx-svc-abc", "labels": {"kubernetes.io/service-name": "nginx-svc"}},
               "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["127.244.0.2"], "conditions": {"ready": true}, "nodeName": "worker0",
                              "targetRef": {"kind": "Pod", "name": "nginx-1", "namespace": "default"}}]}),
    )
    .await;
    create::<Ingress>(
        &Api::namespaced(client.clone(), ns),
        json!({"metadata": {"name": "my-nginx-ingress"}, "spec": {"ingressClassName": "kplane", "rules": [{"host": "foobar.com",
               "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "nginx-svc", "port": {"number": 8080}}}}]}}]}}),
    )
    .await;
    create::<Node>(&Api::all(client.clone()), json!({"metadata": {"name": "worker0"}})).await;

    // The snapshot fills from the watches.
    let deadline = Instant::now() + Duration::from_secs(10);
    let topology: Value = loop {
        let (code, body) = get(&app, "/xray/api/topology").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = v["objects"].as_array().unwrap().iter().filter_map(|o| o["id"].as_str()).collect();
        let want = [
            "services/default/nginx-svc",
            "pods/default/nginx-1",
            "endpointslices/default/nginx-svc-abc",
            "ingresses/default/my-nginx-ingress",
            "nodes//worker0",
        ];
        if want.iter().all(|w| ids.contains(w)) && v["ready"].as_array().unwrap().len() == 5 {
            break v;
        }
        assert!(Instant::now() < deadline, "topology never held {want:?}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find =
        |id: &str| topology["objects"].as_array().unwrap().iter().find(|o| o["id"] == id).unwrap().clone();
    let slice = find("endpointslices/default/nginx-svc-abc");
    assert_eq!(slice["service"], "nginx-svc");
    assert_eq!(
        slice["endpoints"][0],
        json!({"ip": "127.244.0.2", "ready": true, "pod": "nginx-1", "node": "worker0"})
    );
    let ing = find("ingresses/default/my-nginx-ingress");
    assert_eq!(ing["rules"][0]["host"], "foobar.com");
    assert_eq!(ing["rules"][0]["paths"][0]["backend"], json!({"service": "nginx-svc", "port": "8080"}));
    assert_eq!(find("services/default/nginx-svc")["ports"][0]["targetPort"], "80");

    // The page carries the snapshot, so it renders before the stream connects.
    let (code, html) = get(&app, "/xray").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        html.contains("<script id=\"snapshot\" type=\"application/json\">") && html.contains("nginx-1"),
        "{html}"
    );
    assert!(!html.contains("<!--SNAPSHOT-->"));
    for asset in ["/xray/app.js", "/xray/style.css"] {
        assert_eq!(get(&app, asset).await.0, StatusCode::OK, "{asset}");
    }

    // The event stream: a snapshot, then batches with what changed.
    let resp = app.clone().oneshot(request("/xray/api/events", Some("localhost:6444"), None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let mut buf = String::new();
    let first = next_frame(&mut body, &mut buf, |_| true).await;
    assert!(first.starts_with("event: snapshot\n") && first.contains("nginx-svc"), "{first}");
    create::<Pod>(
        &Api::namespaced(client.clone(), ns),
        json!({"metadata": {"name": "nginx-2", "labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    let added = next_frame(&mut body, &mut buf, |f| f.contains("pods/default/nginx-2")).await;
    assert!(added.starts_with("event: batch\n"), "{added}");
    let batch: Value =
        serde_json::from_str(added.trim_end().strip_prefix("event: batch\ndata: ").unwrap()).unwrap();
    let pod = batch["upsert"].as_array().unwrap().iter().find(|o| o["id"] == "pods/default/nginx-2").unwrap();
    assert_eq!(pod["phase"], "Pending", "{batch}");
    Api::<Pod>::namespaced(client.clone(), ns).delete("nginx-2", &DeleteParams::default()).await.unwrap();
    let gone = next_frame(&mut body, &mut buf, |f| f.contains("\"delete\":[\"pods/default/nginx-2\"]")).await;
    assert!(gone.starts_with("event: batch\n"), "{gone}");

    // Stored values, by key and revision, from the store itself.
    let (code, body) = get(&app, "/xray/api/object?kind=services&namespace=default&name=nginx-svc").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stored["key"], "/registry/services/specs/default/nginx-svc");
    assert_eq!(stored["mod_revision"].to_string(), svc.metadata.resource_version.unwrap());
    assert_eq!(stored["value"]["spec"]["selector"]["app"], "nginx");
    let (code, body) = get(&app, "/xray/api/object?kind=nodes&name=worker0").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body.contains("\"/registry/minions/worker0\""), "{body}");

    let bad: &[(&str, StatusCode, &str)] = &[
        (
            "/xray/api/object?kind=secrets&namespace=kube-system&name=x",
            StatusCode::BAD_REQUEST,
            "not shown here",
        ),
        (
            "/xray/api/object?kind=configmaps&namespace=default&name=x",
            StatusCode::BAD_REQUEST,
            "not shown here",
        ),
        ("/xray/api/object?namespace=default&name=x", StatusCode::BAD_REQUEST, "not shown here"),
        ("/xray/api/object?kind=pods&name=nginx-1", StatusCode::BAD_REQUEST, "namespaced"),
        (
            "/xray/api/object?kind=pods&namespace=default&name=..%2Fsecrets",
            StatusCode::BAD_REQUEST,
            "not an object name",
        ),
        ("/xray/api/object?kind=pods&namespace=default&name=", StatusCode::BAD_REQUEST, "not an object name"),
        (
            "/xray/api/object?kind=pods&namespace=default&name=nope",
            StatusCode::NOT_FOUND,
            "/registry/pods/default/nope",
        ),
        ("/xray/api/object?kind=pods&namespace=default&name=%ZZ", StatusCode::BAD_REQUEST, ""),
        ("/xray/api/route", StatusCode::BAD_REQUEST, "give host="),
        ("/xray/api/route?host=a.com&service=b", StatusCode::BAD_REQUEST, "give host="),
        ("/xray/api/route?host=a.com&path=nope", StatusCode::BAD_REQUEST, "absolute path"),
        ("/xray/api/route?service=Bad_Name", StatusCode::BAD_REQUEST, "not a service name"),
        ("/nothing", StatusCode::NOT_FOUND, "/xray"),
    ];
    for (uri, want, says) in bad {
        let (code, body) = get(&app, uri).await;
        assert_eq!(code, *want, "{uri}: {body}");
        assert!(body.contains(says), "{uri}: want {says:?} in {body}");
    }

    // Other host names (DNS rebinding) and other sites' pages get nothing.
    for (host, site) in
        [(Some("evil.example"), None), (None, None), (Some("127.0.0.1:6444"), Some("cross-site"))]
    {
        let (code, body) = call(&app, request("/xray/api/topology", host, site)).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{host:?} {site:?}: {body}");
    }
    let (code, _) = call(&app, request("/xray", Some("[::1]:6444"), Some("none"))).await;
    assert_eq!(code, StatusCode::OK);
    tc.shutdown().await;
}

#[tokio::test]
async fn only_loopback_addresses_bind() {
    let err = xray::web::bind("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    let listener = xray::web::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(listener.local_addr().unwrap().ip().is_loopback());
}
