//! The ingress controller against an in-process API server, with hyper backends as pods.
//! Each test has its own listener IP (127.0.80.N) and pod addresses (127.244.(30+N).x).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use networking::ingress::{run_ingress, IngressConfig, Timeouts};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn start(cluster: &TestCluster, n: u8) -> (Running, SocketAddr, SocketAddr) {
    start_with(cluster, n, Timeouts::default())
}

fn start_with(cluster: &TestCluster, n: u8, timeouts: Timeouts) -> (Running, SocketAddr, SocketAddr) {
    let http = sa(&format!("127.0.80.{n}"), 8080);
    let https = sa(&format!("127.0.80.{n}"), 8443);
    let client = cluster.client.clone();
    let cfg = IngressConfig { http, https, class: "kplane".into(), timeouts };
    (spawn_component(move |sd| run_ingress(client, cfg, sd)), http, https)
}

/// An HTTP "pod" answering `id=<id> path=<path>` plus the X-Forwarded-* headers it received, and
/// counting the connections it accepted.
async fn http_backend(addr: SocketAddr, id: &'static str) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let h =
                        |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    let text = format!(
                        "id={id} path={} xff={} xfh={} xfp={}",
                        req.uri().path(),
                        h("x-forwarded-for"),
                        h("x-forwarded-host"),
                        h("x-forwarded-proto")
                    );
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    conns
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let s = TcpStream::connect(addr).await.ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// One request on `send`: (status, body).
async fn get_on(send: &mut SendRequest<Full<Bytes>>, host: &str, path: &str) -> Option<(u16, String)> {
    let req = Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    get_on(&mut connect(addr).await?, host, path).await
}

/// Polls until `host path` gives a body starting with `want` (within `limit`).
async fn until(addr: SocketAddr, host: &str, path: &str, want: &str, limit: Duration) -> String {
    eventually(limit, &format!("{host}{path} -> {want}"), || async {
        get(addr, host, path).await.filter(|(_, b)| b.starts_with(want)).map(|(_, b)| b)
    })
    .await
}

async fn service(c: &kube::Client, name: &str, ip: &str, pod: &str) {
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}}),
    )
    .await;
    if !pod.is_empty() {
        set_slice(c, "default", name, &[ep(pod)], &[("http", 8000, "TCP")]).await;
    }
}

async fn ingress(c: &kube::Client, body: serde_json::Value) {
    let api: Api<Ingress> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();
}

/// An Ingress of class `kplane` sending every path of `host` to port 80 of `svc`.
fn one_host(name: &str, host: &str, svc: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
        "spec": {"ingressClassName": "kplane", "rules": [{"host": host, "http": {"paths": [path("/", "Prefix", svc)]}}]}})
}

fn path(p: &str, ty: &str, svc: &str) -> serde_json::Value {
    json!({"path": p, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
}

#[tokio::test]
async fn routes_by_host_and_path_with_upstream_precedence() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    for (name, ip, pod) in [
        ("a", "127.96.3.1", "127.244.31.1"),
        ("b", "127.96.3.2", "127.244.31.2"),
        ("x", "127.96.3.3", "127.244.31.3"),
    ] {
        http_backend(sa(pod, 8000), name).await;
        service(c, name, ip, pod).await;
    }
    ingress(
        c,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "foobar"},
               "spec": {"ingressClassName": "kplane", "rules": [{"host": "foobar.com", "http": {"paths": [
                   path("/", "Prefix", "a"), path("/api", "Prefix", "b"), path("/api/exact", "Exact", "x")]}}]}}),
    )
    .await;
    let (ing, http, _) = start(&cluster, 1);
    until(http, "foobar.com", "/", "id=a", Duration::from_secs(3)).await;
    for (p, want) in [
        ("/index.html", "id=a"),
        ("/api", "id=b"),
        ("/api/v1", "id=b"),
        ("/apiary", "id=a"), // element-wise prefix
        ("/api/exact", "id=x"),
        ("/api/exact/more", "id=b"),
    ] {
        let (status, body) = get(http, "foobar.com:8080", p).await.unwrap();
        assert_eq!(status, 200, "{p}");
        assert!(body.starts_with(want), "{p}: {body}");
        assert!(body.contains(&format!("path={p}")), "path is passed unchanged: {body}");
    }
    // Any other host: the built-in default backend.
    assert_eq!(get(http, "other.com", "/").await.unwrap(), (404, "default backend - 404".to_string()));
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn wildcard_host_and_exact_host_wins() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.32.1", 8000), "wild").await;
    http_backend(sa("127.244.32.2", 8000), "exact").await;
    service(c, "wild", "127.96.3.4", "127.244.32.1").await;
    service(c, "exact", "127.96.3.5", "127.244.32.2").await;
    ingress(
        c,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "w"},
               "spec": {"ingressClassName": "kplane", "rules": [
                   {"host": "*.bar.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
                   {"host": "exact.bar.com", "http": {"paths": [path("/", "Prefix", "exact")]}}]}}),
    )
    .await;
    let (ing, http, _) = start(&cluster, 2);
    until(http, "x.bar.com", "/", "id=wild", Duration::from_secs(3)).await;
    assert!(get(http, "exact.bar.com", "/").await.unwrap().1.starts_with("id=exact"));
    assert!(get(http, "EXACT.bar.com", "/").await.unwrap().1.starts_with("id=exact"));
    assert_eq!(get(http, "a.b.bar.com", "/").await.unwrap().0, 404, "a wildcard covers one label");
    assert_eq!(get(http, "bar.com", "/").await.unwrap().0, 404);
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn default_backend_and_forwarded_headers() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.33.1", 8000), "fallback").await;
    service(c, "default-http-backend", "127.96.3.6", "127.244.33.1").await;
    ingress(
        c,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "d"},
               "spec": {"ingressClassName": "kplane",
                        "defaultBackend": {"service": {"name": "default-http-backend", "port": {"name": "http"}}}}}),
    )
    .await;
    let (ing, http, _) = start(&cluster, 3);
    let body = until(http, "anything.com:8080", "/x", "id=fallback", Duration::from_secs(3)).await;
    assert!(body.contains("xff=127.0.0.1"), "{body}");
    assert!(body.contains("xfh=anything.com:8080"), "{body}");
    assert!(body.contains("xfp=http"), "{body}");
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn no_endpoints_is_503_and_dead_backend_is_502() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    service(c, "empty", "127.96.3.7", "").await;
    service(c, "dead", "127.96.3.8", "127.244.34.1").await; // nothing listens there
    ingress(
        c,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "e"},
               "spec": {"ingressClassName": "kplane", "rules": [{"host": "e.com", "http": {"paths": [
                   path("/empty", "Prefix", "empty"), path("/dead", "Prefix", "dead")]}}]}}),
    )
    .await;
    let (ing, http, _) = start(&cluster, 4);
    let body = until(http, "e.com", "/empty", "503", Duration::from_secs(3)).await;
    assert!(body.contains("default/empty has no ready endpoints"), "{body}");
    let (status, body) = until_status(http, "e.com", "/dead", 502).await;
    assert_eq!(status, 502);
    assert!(body.contains("127.244.34.1:8000") && body.contains("default/dead"), "{body}");
    ing.stop().await;
    cluster.shutdown().await;
}

async fn until_status(addr: SocketAddr, host: &str, p: &str, want: u16) -> (u16, String) {
    eventually(Duration::from_secs(3), &format!("{host}{p} -> {want}"), || async {
        get(addr, host, p).await.filter(|(s, _)| *s == want)
    })
    .await
}

/// The `is-default-class` annotation of IngressClass `kplane`, once the class exists.
async fn default_mark(classes: &Api<IngressClass>) -> Option<Option<String>> {
    let class = classes.get_opt("kplane").await.ok()??;
    Some(class.annotations().get("ingressclass.kubernetes.io/is-default-class").cloned())
}

fn class_name(i: &Ingress) -> Option<String> {
    i.spec.as_ref()?.ingress_class_name.clone()
}

#[tokio::test]
async fn status_load_balancer_and_class_filtering() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.35.1", 8000), "a").await;
    service(c, "a", "127.96.3.9", "127.244.35.1").await;
    let rule = |host: &str| json!([{"host": host, "http": {"paths": [path("/", "Prefix", "a")]}}]);
    let (ing, http, _) = start(&cluster, 5);
    // The controller creates its IngressClass as the cluster's default.
    let classes: Api<IngressClass> = Api::all(c.clone());
    let mark = eventually(Duration::from_secs(3), "IngressClass kplane", || default_mark(&classes)).await;
    assert_eq!(mark.as_deref(), Some("true"));
    let class = classes.get("kplane").await.unwrap();
    assert_eq!(class.spec.as_ref().unwrap().controller.as_deref(), Some("kplane.dev/ingress-controller"));

    // Ours by class name, by the old annotation, by the default class (named by the admission);
    // not ours: another class by name or by the old annotation.
    let named = |name: &str, class: &str, host: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
        "spec": {"ingressClassName": class, "rules": rule(host)}})
    };
    let annotated = |name: &str, class: &str, host: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "annotations": {"kubernetes.io/ingress.class": class}},
        "spec": {"rules": rule(host)}})
    };
    let classless = |name: &str, host: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
        "spec": {"rules": rule(host)}})
    };
    ingress(c, named("mine", "kplane", "mine.com")).await;
    ingress(c, annotated("annotated", "kplane", "annotated.com")).await;
    ingress(c, named("theirs", "nginx", "theirs.com")).await;
    ingress(c, annotated("theirs-annotated", "nginx", "theirs-annotated.com")).await;
    ingress(c, classless("classless", "classless.com")).await;

    let api: Api<Ingress> = Api::namespaced(c.clone(), "default");
    assert_eq!(class_name(&api.get("classless").await.unwrap()).as_deref(), Some("kplane"));
    assert_eq!(class_name(&api.get("annotated").await.unwrap()), None, "the old annotation is not defaulted");
    assert_eq!(class_name(&api.get("theirs-annotated").await.unwrap()), None);
    assert_eq!(class_name(&api.get("theirs").await.unwrap()).as_deref(), Some("nginx"));

    until(http, "mine.com", "/", "id=a", Duration::from_secs(3)).await;
    until(http, "annotated.com", "/", "id=a", Duration::from_secs(1)).await;
    until(http, "classless.com", "/", "id=a", Duration::from_secs(1)).await;
    assert_eq!(get(http, "theirs.com", "/").await.unwrap().0, 404);
    assert_eq!(get(http, "theirs-annotated.com", "/").await.unwrap().0, 404);

    let ip = |i: &Ingress| i.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?.ip.clone();
    eventually(Duration::from_secs(2), "status.loadBalancer", || async {
        (ip(&api.get("mine").await.ok()?).as_deref() == Some("127.0.80.5")).then_some(())
    })
    .await;
    assert_eq!(ip(&api.get("theirs").await.unwrap()), None, "another class's status is left alone");

    // An administrator's "false" survives a restart: class-less Ingresses then get no class, and
    // this controller does not adopt them.
    let mut class = classes.get("kplane").await.unwrap();
    class.metadata.annotations =
        Some([("ingressclass.kubernetes.io/is-default-class".to_string(), "false".to_string())].into());
    classes.replace("kplane", &PostParams::default(), &class).await.unwrap();
    ing.stop().await;
    let (ing, http, _) = start(&cluster, 5);
    until(http, "mine.com", "/", "id=a", Duration::from_secs(3)).await;
    assert_eq!(default_mark(&classes).await.unwrap().as_deref(), Some("false"));
    ingress(c, classless("classless-2", "classless-2.com")).await;
    assert_eq!(class_name(&api.get("classless-2").await.unwrap()), None);
    assert_eq!(get(http, "classless-2.com", "/").await.unwrap().0, 404);

    // A class from before the default existed (no annotation at all) is marked default on start,
    // which adopts the class-less Ingress.
    let mut class = classes.get("kplane").await.unwrap();
    class.metadata.annotations = None;
    classes.replace("kplane", &PostParams::default(), &class).await.unwrap();
    ing.stop().await;
    let (ing, http, _) = start(&cluster, 5);
    let mark = eventually(Duration::from_secs(3), "the default mark restored", || async {
        default_mark(&classes).await.flatten()
    })
    .await;
    assert_eq!(mark, "true");
    until(http, "classless-2.com", "/", "id=a", Duration::from_secs(3)).await;
    assert_eq!(get(http, "theirs.com", "/").await.unwrap().0, 404);
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn keep_alive_and_changes_within_one_second() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let conns_a = http_backend(sa("127.244.36.1", 8000), "a").await;
    http_backend(sa("127.244.36.2", 8000), "b").await;
    service(c, "ka", "127.96.3.10", "127.244.36.1").await;
    ingress(c, one_host("ka", "ka.com", "ka")).await;
    let (ing, http, _) = start(&cluster, 6);
    until(http, "ka.com", "/", "id=a", Duration::from_secs(3)).await;

    let mut send = connect(http).await.unwrap();
    let before = conns_a.load(Ordering::SeqCst);
    for _ in 0..5 {
        let (status, body) = get_on(&mut send, "ka.com", "/").await.expect("request on the same connection");
        assert_eq!((status, &body[..4]), (200, "id=a"));
    }
    assert!(conns_a.load(Ordering::SeqCst) - before <= 1, "upstream connections are reused");

    // The endpoint moves: the ingress follows within 1 s, on the same client connection.
    set_slice(c, "default", "ka", &[ep("127.244.36.2")], &[("http", 8000, "TCP")]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (_, body) = get_on(&mut send, "ka.com", "/").await.expect("the connection stays usable");
        if body.starts_with("id=b") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "traffic did not move to b within 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn tls_terminates_with_the_certificate_chosen_by_sni() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.37.1", 8000), "a").await;
    service(c, "a", "127.96.3.11", "127.244.37.1").await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let mut roots = rustls::RootCertStore::empty();
    for (name, host, ty) in [
        ("one-tls", "one.test", "kubernetes.io/tls"),
        ("two-tls", "two.test", "kubernetes.io/tls"),
        ("three-tls", "three.test", "Opaque"),
    ] {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        roots.add(ck.cert.der().clone()).unwrap();
        // `data`, not `stringData`: kplane's API server does not fold stringData into data yet.
        let data = [("tls.crt", ck.cert.pem()), ("tls.key", ck.signing_key.serialize_pem())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
            .collect();
        let s = Secret {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            type_: Some(ty.into()),
            data: Some(data),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    ingress(c, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "tls"},
        "spec": {"ingressClassName": "kplane",
                 "tls": [{"hosts": ["one.test"], "secretName": "one-tls"}, {"hosts": ["two.test"], "secretName": "two-tls"},
                         {"hosts": ["three.test"], "secretName": "three-tls"}],
                 "rules": [{"host": "one.test", "http": {"paths": [path("/", "Prefix", "a")]}},
                           {"host": "two.test", "http": {"paths": [path("/", "Prefix", "a")]}}]}})).await;
    let (ing, http, https) = start(&cluster, 7);
    until(http, "one.test", "/", "id=a", Duration::from_secs(3)).await;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    for host in ["one.test", "two.test"] {
        // Verification against the one root that signed `host` proves which certificate was served.
        let tls = eventually(Duration::from_secs(2), "TLS handshake", || async {
            let tcp = TcpStream::connect(https).await.ok()?;
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
            connector.connect(name, tcp).await.ok()
        })
        .await;
        let certs = tls.get_ref().1.peer_certificates().unwrap().to_vec();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let mut send: SendRequest<Full<Bytes>> = send;
        let (status, body) = get_on(&mut send, host, "/").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("xfp=https"), "{body}");
        assert_eq!(certs.len(), 1);
    }
    // A name whose Secret is not of type kubernetes.io/tls, and an unknown name: no certificate.
    for host in ["three.test", "four.test"] {
        let tcp = TcpStream::connect(https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
        assert!(connector.connect(name, tcp).await.is_err(), "{host}");
    }
    // The unusable Secret is reported once on the Ingress.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c.clone(), "default");
    let find = || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        let hits: Vec<_> = list
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("InvalidTLSSecret")
                    && e.involved_object.name.as_deref() == Some("tls")
            })
            .collect();
        (!hits.is_empty()).then_some(hits)
    };
    let hits = eventually(Duration::from_secs(2), "an InvalidTLSSecret event", find).await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].message.as_deref().unwrap_or_default().contains("default/three-tls"), "{hits:?}");
    ing.stop().await;
    cluster.shutdown().await;
}

/// A backend that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), as a pod with a short keep-alive timeout does: every kept-alive
/// upstream connection of the ingress goes stale. Answers `n=<connection number>`.
async fn one_shot_backend(addr: SocketAddr) -> Arc<AtomicUsize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let body = format!("n={n}");
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            });
        }
    });
    conns
}

#[tokio::test]
async fn backends_closing_kept_alive_connections_lose_no_request() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let conns = one_shot_backend(sa("127.244.40.1", 8000)).await;
    service(c, "oneshot", "127.96.3.14", "127.244.40.1").await;
    ingress(c, one_host("oneshot", "oneshot.com", "oneshot")).await;
    let (ing, http, _) = start(&cluster, 10);
    until(http, "oneshot.com", "/", "n=", Duration::from_secs(3)).await;

    // Back to back and with pauses, on one client connection: each request gets its own fresh
    // upstream connection, and none fails.
    let mut send = connect(http).await.unwrap();
    let before = conns.load(Ordering::SeqCst);
    for i in 0..20 {
        let (status, body) =
            get_on(&mut send, "oneshot.com", "/").await.expect("request on the same connection");
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(body.starts_with("n="), "request {i}: {body}");
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    assert_eq!(conns.load(Ordering::SeqCst) - before, 20, "one upstream connection per request");
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_requests_without_a_body() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.38.2", 8000), "live").await;
    service(c, "half", "127.96.3.12", "").await;
    // 127.244.38.1 is ready in the slice but nothing listens there.
    set_slice(c, "default", "half", &[ep("127.244.38.1"), ep("127.244.38.2")], &[("http", 8000, "TCP")]).await;
    ingress(c, one_host("half", "half.com", "half")).await;
    let (ing, http, _) = start(&cluster, 8);
    until(http, "half.com", "/", "id=live", Duration::from_secs(3)).await;
    for _ in 0..6 {
        let (status, body) = get(http, "half.com", "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("id=live"), "{body}");
    }
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::sync::{mpsc, Mutex};

    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    // The pod: POST answers the received byte count; GET streams chunks as the test releases them.
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(4);
    let chunks_rx = Arc::new(Mutex::new(Some(chunks_rx)));
    let listener = TcpListener::bind(sa("127.244.39.1", 8000)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            let chunks_rx = chunks_rx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let chunks_rx = chunks_rx.clone();
                    async move {
                        type B = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
                        let body: B = if req.method() == hyper::Method::POST {
                            let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                            Full::new(Bytes::from(format!("received={n}"))).boxed()
                        } else {
                            let rx = chunks_rx.lock().await.take().expect("one streaming request");
                            let stream = futures::stream::unfold(rx, |mut rx| async move {
                                rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
                            });
                            BodyExt::boxed(StreamBody::new(stream))
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    service(c, "stream", "127.96.3.13", "127.244.39.1").await;
    ingress(c, one_host("stream", "s.com", "stream")).await;
    let (ing, http, _) = start(&cluster, 9);

    // Upload: 4 MiB through the ingress.
    let upload = eventually(Duration::from_secs(3), "upload through the ingress", || async {
        let mut send = connect(http).await?;
        let req = Request::post("/up")
            .header("host", "s.com")
            .body(Full::new(Bytes::from(vec![7u8; 4 << 20])))
            .unwrap();
        let resp = send.send_request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned()).filter(|b| b.starts_with("received="))
    })
    .await;
    assert_eq!(upload, format!("received={}", 4 << 20));

    // Download: the first chunk arrives while the pod still holds back the second.
    let mut send = connect(http).await.unwrap();
    chunks_tx.send(Bytes::from_static(b"first")).await.unwrap();
    let req = Request::get("/down").header("host", "s.com").body(Full::new(Bytes::new())).unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("the first chunk is forwarded before the body ends")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"first"));
    chunks_tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(chunks_tx);
    let rest = tokio::time::timeout(Duration::from_secs(2), body.collect()).await.unwrap().unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
    ing.stop().await;
    cluster.shutdown().await;
}

/// Reads until the peer closes the connection (or fails it), within `limit`; what was read.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(all)
}

/// Short timeouts, so the tests see them fire.
fn short_timeouts() -> Timeouts {
    Timeouts {
        client_header: Duration::from_millis(500),
        keepalive: Duration::from_secs(10),
        proxy_read: Duration::from_millis(500),
        proxy_connect: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn slowloris_is_dropped_while_others_are_served_and_slow_or_dead_upstreams_get_504_and_502() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.41.1", 8000), "a").await;
    // A pod that accepts connections and never answers.
    let silent = TcpListener::bind(sa("127.244.41.2", 8000)).await.unwrap();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    service(c, "a", "127.96.3.20", "127.244.41.1").await;
    service(c, "silent", "127.96.3.21", "127.244.41.2").await;
    // Nothing listens on 127.244.41.3: connecting is refused.
    service(c, "dead", "127.96.3.22", "127.244.41.3").await;
    for (name, host) in [("a", "a.test"), ("silent", "silent.test"), ("dead", "dead.test")] {
        ingress(c, one_host(name, host, name)).await;
    }
    let (ing, http, _) = start_with(&cluster, 11, short_timeouts());
    until(http, "a.test", "/", "id=a", Duration::from_secs(3)).await;

    // The slowloris client: a request head that never ends, one header line every 100 ms.
    let mut slow = TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n").await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let mut i = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow_write.write_all(format!("X-Slow-{i}: x\r\n").as_bytes()).await.is_err() {
                return;
            }
            i += 1;
        }
    });
    // Others are served meanwhile.
    for _ in 0..3 {
        let (status, body) = get(http, "a.test", "/").await.expect("served while the slow client trickles");
        assert_eq!(status, 200, "{body}");
    }
    // The slow client is dropped: its connection closes although it keeps sending.
    let dropped = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match slow_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "the slowloris connection was closed by the ingress");
    trickle.abort();

    // An upstream that never answers: 504 once the proxy read timeout passes.
    let (status, body) = get(http, "silent.test", "/").await.expect("an answer");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("127.244.41.2:8000") && body.contains("silent"), "{body}");
    // A connect that fails: 502.
    let (status, body) = get(http, "dead.test", "/").await.expect("an answer");
    assert_eq!(status, 502, "{body}");
    // And the ingress still serves.
    assert_eq!(get(http, "a.test", "/").await.map(|(s, _)| s), Some(200));
    ing.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    http_backend(sa("127.244.42.1", 8000), "k").await;
    service(c, "k", "127.96.3.23", "127.244.42.1").await;
    ingress(c, one_host("k", "k.test", "k")).await;
    let timeouts = Timeouts {
        client_header: Duration::from_secs(30),
        keepalive: Duration::from_millis(300),
        ..short_timeouts()
    };
    let (ing, http, _) = start_with(&cluster, 12, timeouts);
    until(http, "k.test", "/", "id=k", Duration::from_secs(3)).await;

    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: k.test\r\n\r\n").await.unwrap();
    // The response comes, then, with nothing more asked, the connection closes (well before the
    // 30 s header timeout could).
    let got = read_to_close(&mut s, Duration::from_secs(10)).await.expect("closed after the keepalive timeout");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("id=k path=/first"), "{text}");
    ing.stop().await;
    cluster.shutdown().await;
}

/// A pod that switches protocols on `Upgrade: websocket`: it greets, then echoes every byte.
async fn upgrade_backend(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                    let asks = req.headers().get("upgrade").is_some_and(|v| v == "websocket");
                    if !asks {
                        let mut r = Response::new(Full::new(Bytes::from("upgrade required")));
                        *r.status_mut() = hyper::StatusCode::UPGRADE_REQUIRED;
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(up) = on.await else { return };
                        let mut io = TokioIo::new(up);
                        if io.write_all(b"hello from the pod\n").await.is_err() {
                            return;
                        }
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                    r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
                    r.headers_mut().insert("connection", "Upgrade".parse().unwrap());
                    Ok(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

/// Reads a response head (up to the blank line) byte by byte, so nothing after it is consumed.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.expect("a response head"), 1, "closed inside the head: {head:?}");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test]
async fn websocket_upgrades_pass_through_with_bytes_both_ways() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    upgrade_backend(sa("127.244.43.1", 8000)).await;
    service(c, "ws", "127.96.3.24", "127.244.43.1").await;
    ingress(c, one_host("ws", "ws.test", "ws")).await;
    let (ing, http, _) = start(&cluster, 13);
    until(http, "ws.test", "/", "upgrade required", Duration::from_secs(3)).await;

    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s)).await.expect("a 101 in time");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket") && head.contains("connection: upgrade"), "{head}");

    // Server to client, then client to server and back, several times over the one connection.
    let mut greeting = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(&greeting, b"hello from the pod\n");
    for msg in ["one", "two", "three"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    // The client closes its side; the tunnel passes the close on and ends.
    s.shutdown().await.unwrap();
    assert!(read_to_close(&mut s, Duration::from_secs(5)).await.is_some(), "the tunnel closed");
    ing.stop().await;
    cluster.shutdown().await;
}

/// A pod that answers each request head with `answer` as raw bytes, then closes when `close`.
async fn raw_backend(addr: SocketAddr, answer: &'static [u8], close: bool) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => pending.extend_from_slice(&chunk[..k]),
                    }
                    while let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..at + 4);
                        if s.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    conns
}

/// curl against the ingress: its exit code and what it wrote to stdout (`-w` adds the status).
async fn curl(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn raw_path_with_curl_chunked_truncated_and_malformed_upstreams() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let chunked_conns = raw_backend(
        sa("127.244.44.1", 8000),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
        false,
    )
    .await;
    raw_backend(sa("127.244.44.2", 8000), b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", true)
        .await;
    raw_backend(sa("127.244.44.3", 8000), b"HTTP/1.1 2x0 OK\r\n\r\n", true).await;
    for (name, ip, pod) in [
        ("chunky", "127.96.4.1", "127.244.44.1"),
        ("short", "127.96.4.2", "127.244.44.2"),
        ("garbled", "127.96.4.3", "127.244.44.3"),
    ] {
        service(c, name, ip, pod).await;
        ingress(c, one_host(name, &format!("{name}.test"), name)).await;
    }
    let (ing, http, _) = start(&cluster, 14);
    let url = |host: &str, path: &str| format!("http://{host}.test{path}");
    let resolve = format!("chunky.test:8080:{}", http.ip());
    let base = ["--resolve", &resolve];
    // Routes appear within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, out) = curl(&[&base[..], &["-w", " %{http_code}", &url("chunky", ":8080/")]].concat()).await;
        if out.ends_with(" 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "chunky not routed: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A chunked response, decoded by curl; three requests on one curl connection use one upstream
    // connection (the ingress keeps it alive).
    let before = chunked_conns.load(Ordering::SeqCst);
    let u = url("chunky", ":8080/a");
    let (code, out) = curl(&[&base[..], &["-w", " %{http_code}\n", &u, &u, &u]].concat()).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "hello world 200\n".repeat(3));
    assert_eq!(chunked_conns.load(Ordering::SeqCst) - before, 1, "one upstream connection for three requests");
    // The raw chunked framing reaches the client as the pod sent it.
    let (_, raw) = curl(&[&base[..], &["--raw", &u]].concat()).await;
    assert_eq!(raw, "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");

    // The pod closes 9 bytes into a 100-byte body: curl sees the truncation (exit 18).
    let resolve_short = format!("short.test:8080:{}", http.ip());
    let (code, out) = curl(&["--resolve", &resolve_short, &url("short", ":8080/")]).await;
    assert_eq!((code, out.as_str()), (18, "only this"), "a truncated body is not passed off as complete");

    // A malformed status line: 502 naming the endpoint and the service.
    let resolve_bad = format!("garbled.test:8080:{}", http.ip());
    let (code, out) =
        curl(&["--resolve", &resolve_bad, "-w", "\n%{http_code}", &url("garbled", ":8080/")]).await;
    assert_eq!(code, 0);
    assert!(out.ends_with("\n502"), "{out}");
    assert!(
        out.contains("127.244.44.3:8000") && out.contains("default/garbled") && out.contains("malformed"),
        "{out}"
    );

    // A request head too large for the ingress: hyper's 431.
    // (From a file: one argument cannot be that long.)
    let big = std::env::temp_dir().join(format!("kplane-ingress-big-header-{}", std::process::id()));
    std::fs::write(&big, format!("X-Big: {}\n", "z".repeat(600 * 1024))).unwrap();
    let header = format!("@{}", big.display());
    let (_, out) =
        curl(&[&base[..], &["-H", &header, "-o", "/dev/null", "-w", "%{http_code}", &u]].concat()).await;
    let _ = std::fs::remove_file(&big);
    assert_eq!(out, "431");
    ing.stop().await;
    cluster.shutdown().await;
}
