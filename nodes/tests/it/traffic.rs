use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;
use crate::kubelet::pod_ip;
use crate::registration::http_get;

pub async fn kubelet_port(client: &kube::Client, node: &str) -> u16 {
    let n = Api::<Node>::all(client.clone()).get(node).await.unwrap();
    n.status.unwrap().daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port as u16
}

async fn running_pod(client: &kube::Client, name: &str, spec: serde_json::Value) -> Pod {
    let mut p = pod(name, spec);
    p["spec"]["nodeName"] = json!("worker0");
    create_pod(client, "default", p).await;
    eventually("Running", || async {
        get_pod(client, "default", name).await.filter(|p| phase_of(p) == "Running")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_answer_http_and_udp_and_the_kubelet_serves_their_logs() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    set_pod_cidr(&client, "worker0", "127.250.20.0/24").await;
    let spec = json!({"containers": [{"name": "web", "image": "nginx",
        "ports": [{"containerPort": 8080}, {"containerPort": 5353, "protocol": "UDP"}]}]});
    let p = running_pod(&client, "echo", spec).await;
    let ip = pod_ip(&p);

    let resp = http_get(ip, 8080, "/hello?x=1").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("x-pod-name: echo"), "{resp}");
    assert!(lower.contains("x-pod-namespace: default"), "{resp}");
    assert!(lower.contains(&format!("x-pod-ip: {ip}")), "{resp}");
    assert!(lower.contains("x-node-name: worker0"), "{resp}");
    assert!(resp.contains("pod: default/echo") && resp.contains("node: worker0"), "{resp}");
    assert!(resp.contains("request: GET /hello?x=1 HTTP/1.1"), "{resp}");

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"ping", (ip, 5353)).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"ping");

    let port = kubelet_port(&client, "worker0").await;
    let kubelet = nodes::default_node_ip(0);
    let logs = http_get(kubelet, port, "/containerLogs/default/echo/web").await;
    assert!(logs.starts_with("HTTP/1.1 200"), "{logs}");
    assert!(logs.contains("\"GET /hello?x=1 HTTP/1.1\" 200"), "{logs}");
    assert!(logs.contains("udp echo 4 bytes"), "{logs}");
    // tailLines and timestamps.
    let tail = http_get(kubelet, port, "/containerLogs/default/echo/web?tailLines=1&timestamps=true").await;
    let body = tail.split("\r\n\r\n").nth(1).unwrap();
    let lines: Vec<&str> = body.lines().filter(|l| l.contains(' ')).collect();
    assert_eq!(lines.len(), 1, "{body:?}");
    assert!(lines[0].starts_with("20") && lines[0].contains("udp echo"), "{body:?}");
    // limitBytes cuts the body; sinceSeconds keeps recent lines only.
    let cut = http_get(kubelet, port, "/containerLogs/default/echo/web?limitBytes=10").await;
    assert!(
        cut.ends_with("\r\n\r\nA\r\nkplane-sim\r\n0\r\n\r\n"),
        "one chunk of 10 bytes, then the end: {cut:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(http_get(ip, 8080, "/recent").await.starts_with("HTTP/1.1 200"));
    let recent = http_get(kubelet, port, "/containerLogs/default/echo/web?sinceSeconds=1").await;
    assert!(recent.contains("GET /recent") && !recent.contains("GET /hello"), "{recent}");
    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_millis(900)).to_string();
    let recent = http_get(kubelet, port, &format!("/containerLogs/default/echo/web?sinceTime={since}")).await;
    assert!(recent.contains("GET /recent") && !recent.contains("GET /hello"), "{recent}");
    let previous = http_get(kubelet, port, "/containerLogs/default/echo/web?previous=true").await;
    assert!(previous.starts_with("HTTP/1.1 400"), "{previous}");
    assert!(
        previous.ends_with("previous terminated container \"web\" in pod \"echo\" not found"),
        "{previous}"
    );
    // Errors.
    assert!(http_get(kubelet, port, "/containerLogs/default/nope/web").await.starts_with("HTTP/1.1 404"));
    assert!(http_get(kubelet, port, "/containerLogs/default/echo/nope").await.starts_with("HTTP/1.1 404"));
    assert!(http_get(kubelet, port, "/containerLogs/default/echo/web?tailLines=x")
        .await
        .starts_with("HTTP/1.1 400"));
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_new_lines_and_ends_when_the_pod_goes() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    set_pod_cidr(&client, "worker0", "127.250.21.0/24").await;
    let spec = json!({"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]});
    let ip = pod_ip(&running_pod(&client, "tailed", spec).await);
    let port = kubelet_port(&client, "worker0").await;

    let mut s = tokio::net::TcpStream::connect((nodes::default_node_ip(0), port)).await.unwrap();
    s.write_all(b"GET /containerLogs/default/tailed/web?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut r = BufReader::new(s);
    let mut seen = String::new();
    let mut line = String::new();
    // Until the first log line has been streamed, then make a new one.
    while !seen.contains("listening on") {
        line.clear();
        assert!(r.read_line(&mut line).await.unwrap() > 0, "stream ended early: {seen}");
        seen.push_str(&line);
    }
    assert!(http_get(ip, 8080, "/after-follow").await.starts_with("HTTP/1.1 200"));
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("GET /after-follow") {
            line.clear();
            assert!(r.read_line(&mut line).await.unwrap() > 0, "stream ended early: {seen}");
            seen.push_str(&line);
        }
    })
    .await
    .expect("the new line is streamed");
    // Deleting the pod ends the stream (the chunked body's terminator arrives).
    Api::<Pod>::namespaced(client.clone(), "default").delete("tailed", &DeleteParams::default()).await.unwrap();
    // Read until the chunked body's terminator (the connection itself stays open: keep-alive).
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !rest.ends_with("0\r\n\r\n") {
            line.clear();
            assert!(
                r.read_line(&mut line).await.unwrap() > 0,
                "connection closed without terminator: {rest:?}"
            );
            rest.push_str(&line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream ends when the pod goes; got {rest:?}"));
    assert!(rest.contains("container web stopping"), "{rest:?}");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_log_through_the_api_server_reaches_the_kubelet() {
    use futures::{AsyncBufReadExt as _, StreamExt as _};
    use kube::api::LogParams;
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    set_pod_cidr(&client, "worker0", "127.250.22.0/24").await;
    let spec = json!({"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]});
    let ip = pod_ip(&running_pod(&client, "logged", spec).await);
    assert!(http_get(ip, 8080, "/via-api").await.starts_with("HTTP/1.1 200"));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let log = api.logs("logged", &LogParams::default()).await.unwrap();
    assert!(log.contains("\"GET /via-api HTTP/1.1\" 200"), "{log}");

    // Follow through the API server: a later request shows up on the open stream.
    let params = LogParams { follow: true, ..Default::default() };
    let mut lines = api.log_stream("logged", &params).await.unwrap().lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next()).await.unwrap().unwrap().unwrap();
    assert!(first.contains("started"), "{first}");
    assert!(http_get(ip, 8080, "/while-following").await.starts_with("HTTP/1.1 200"));
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = lines.next().await {
            if l.unwrap().contains("GET /while-following") {
                return;
            }
        }
        panic!("stream ended before the line came");
    })
    .await
    .expect("the followed line");

    // A second container makes the name mandatory.
    let two = json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]});
    running_pod(&client, "pair", two).await;
    match api.logs("pair", &LogParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert_eq!(s.message, "a container name must be specified for pod pair, choose one of: [a b]");
        }
        other => panic!("{other:?}"),
    }
    let log = api.logs("pair", &LogParams { container: Some("b".into()), ..Default::default() }).await.unwrap();
    assert!(log.contains("container b started"), "{log}");
    node.stop().await;
    cluster.shutdown().await;
}
