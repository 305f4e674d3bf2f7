//! The service proxy against an in-process API server, with tiny TCP/UDP backends as pods.
//! Each test uses its own ClusterIP (127.96.1.N) and pod addresses (127.244.N.x).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{Endpoints, Event};
use kube::api::{Api, ListParams};
use networking::proxy::{run_proxy, ProxyConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn config() -> ProxyConfig {
    ProxyConfig {
        resync: Duration::from_millis(500),
        // The bootstrap services every test cluster has; parallel tests would fight over them.
        exclude: vec![sa("127.96.0.1", 443), sa("127.96.0.10", 53)],
        ..ProxyConfig::default()
    }
}

fn start(cluster: &TestCluster, cfg: ProxyConfig) -> Running {
    let client = cluster.client.clone();
    spawn_component(move |sd| run_proxy(client, cfg, sd))
}

fn cluster_ip_service(name: &str, ip: &str, port: u16) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"clusterIP": ip, "ports": [{"port": port, "targetPort": 9000}]}})
}

/// Reads ids through `addr` until a read succeeds, within 2 s.
async fn first_id(addr: std::net::SocketAddr) -> String {
    eventually(Duration::from_secs(2), "the proxy answers", || read_id(addr)).await
}

#[tokio::test]
async fn cluster_ip_round_robins_across_two_endpoints() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.1.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.1.2", 9000), "b").await;
    create_service(c, "default", cluster_ip_service("rr", "127.96.1.1", 8080)).await;
    set_slice(c, "default", "rr", &[ep("127.244.1.1"), ep("127.244.1.2")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());

    let vip = sa("127.96.1.1", 8080);
    first_id(vip).await;
    let mut seen = HashSet::new();
    for _ in 0..6 {
        seen.insert(read_id(vip).await.expect("proxied connection"));
    }
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]));
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn not_ready_endpoint_is_skipped() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.2.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.2.2", 9000), "b").await;
    create_service(c, "default", cluster_ip_service("nr", "127.96.1.2", 8080)).await;
    set_slice(c, "default", "nr", &[ep("127.244.2.1"), not_ready("127.244.2.2")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());

    let vip = sa("127.96.1.2", 8080);
    first_id(vip).await;
    for _ in 0..8 {
        assert_eq!(read_id(vip).await.as_deref(), Some("a"));
    }
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn dead_endpoint_is_retried_onto_a_live_one() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    // 127.244.3.1 is "ready" but nothing listens there: every dial to it is refused.
    let _b = id_backend(sa("127.244.3.2", 9000), "b").await;
    create_service(c, "default", cluster_ip_service("dead", "127.96.1.3", 8080)).await;
    set_slice(c, "default", "dead", &[ep("127.244.3.1"), ep("127.244.3.2")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());

    let vip = sa("127.96.1.3", 8080);
    first_id(vip).await;
    for _ in 0..8 {
        assert_eq!(read_id(vip).await.as_deref(), Some("b"), "every connection lands on the live endpoint");
    }
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn endpoint_removal_takes_effect_within_one_second() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.4.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.4.2", 9000), "b").await;
    create_service(c, "default", cluster_ip_service("rm", "127.96.1.4", 8080)).await;
    set_slice(c, "default", "rm", &[ep("127.244.4.1"), ep("127.244.4.2")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());
    let vip = sa("127.96.1.4", 8080);
    first_id(vip).await;

    set_slice(c, "default", "rm", &[ep("127.244.4.2")], &[("", 9000, "TCP")]).await;
    eventually(Duration::from_secs(1), "only b answers", || async {
        for _ in 0..4 {
            if read_id(vip).await.as_deref() != Some("b") {
                return None;
            }
        }
        Some(())
    })
    .await;
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn no_endpoints_fails_fast() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.5.1", 9000), "a").await;
    create_service(c, "default", cluster_ip_service("none", "127.96.1.5", 8080)).await;
    set_slice(c, "default", "none", &[ep("127.244.5.1")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());
    let vip = sa("127.96.1.5", 8080);
    first_id(vip).await;

    set_slice(c, "default", "none", &[], &[("", 9000, "TCP")]).await;
    eventually(Duration::from_secs(1), "connections are refused", || async {
        read_id(vip).await.is_none().then_some(())
    })
    .await;
    let t = Instant::now();
    let mut s = TcpStream::connect(vip).await.expect("the listener stays open");
    let mut buf = [0u8; 16];
    let r = s.read(&mut buf).await;
    assert!(matches!(r, Ok(0) | Err(_)), "closed without data: {r:?}");
    assert!(t.elapsed() < Duration::from_millis(300), "refused at once, took {:?}", t.elapsed());
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn deleting_the_service_closes_the_listener_and_drains_connections() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.6.1", 9000), "a").await;
    create_service(c, "default", cluster_ip_service("del", "127.96.1.6", 8080)).await;
    set_slice(c, "default", "del", &[ep("127.244.6.1")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());
    let vip = sa("127.96.1.6", 8080);
    first_id(vip).await;
    let mut open = TcpStream::connect(vip).await.unwrap();
    let mut line = [0u8; 2];
    open.read_exact(&mut line).await.unwrap();

    delete_service(c, "default", "del").await;
    eventually(Duration::from_secs(1), "the VIP port is closed", || async {
        TcpStream::connect(vip).await.is_err().then_some(())
    })
    .await;
    open.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    open.read_exact(&mut echo).await.expect("the open connection drains");
    assert_eq!(&echo, b"still here");
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn node_port_listens_on_every_node_ip() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.7.1", 9000), "a").await;
    let svc = create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
               "spec": {"type": "NodePort", "clusterIP": "127.96.1.7", "ports": [{"port": 8080, "targetPort": 9000}]}}),
    )
    .await;
    let node_port = svc.spec.unwrap().ports.unwrap()[0].node_port.expect("allocated nodePort") as u16;
    set_slice(c, "default", "np", &[ep("127.244.7.1")], &[("", 9000, "TCP")]).await;
    let cfg = ProxyConfig {
        node_ips: vec!["127.0.10.71".parse().unwrap(), "127.0.10.72".parse().unwrap()],
        ..config()
    };
    let proxy = start(&cluster, cfg);

    for node in ["127.0.10.71", "127.0.10.72"] {
        assert_eq!(first_id(sa(node, node_port)).await, "a", "node {node}");
    }
    assert_eq!(first_id(sa("127.96.1.7", 8080)).await, "a");

    // A node that registers later (a `kplane node` process, say) gets the NodePort too, from its
    // Node object's InternalIP; one whose address is not loopback is another machine's business.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    for (name, ip) in [("late", "127.0.10.73"), ("remote", "192.0.2.1")] {
        nodes
            .create(&Default::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
            .await
            .unwrap();
        let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        nodes.patch_status(name, &Default::default(), &kube::api::Patch::Merge(&status)).await.unwrap();
    }
    assert_eq!(first_id(sa("127.0.10.73", node_port)).await, "a", "the late node");
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn client_ip_affinity_sticks() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.8.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.8.2", 9000), "b").await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "aff"},
               "spec": {"clusterIP": "127.96.1.8", "sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                        "ports": [{"port": 8080, "targetPort": 9000}]}}),
    )
    .await;
    set_slice(c, "default", "aff", &[ep("127.244.8.1"), ep("127.244.8.2")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());
    let vip = sa("127.96.1.8", 8080);
    let first = first_id(vip).await;
    for _ in 0..8 {
        assert_eq!(read_id(vip).await.as_ref(), Some(&first));
    }
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn named_port_resolves_to_the_slice_port_of_that_name() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _web = id_backend(sa("127.244.11.1", 9001), "web").await;
    let _metrics = id_backend(sa("127.244.11.1", 9002), "metrics").await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "named"},
               "spec": {"clusterIP": "127.96.1.11", "ports": [
                   {"name": "web", "port": 80, "targetPort": "web"},
                   {"name": "metrics", "port": 81, "targetPort": "metrics"}]}}),
    )
    .await;
    set_slice(c, "default", "named", &[ep("127.244.11.1")], &[("metrics", 9002, "TCP"), ("web", 9001, "TCP")])
        .await;
    let proxy = start(&cluster, config());
    assert_eq!(first_id(sa("127.96.1.11", 80)).await, "web");
    assert_eq!(first_id(sa("127.96.1.11", 81)).await, "metrics");
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn udp_is_forwarded_per_client() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let backend = UdpSocket::bind(sa("127.244.9.1", 9053)).await.unwrap();
    let _echo = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = backend.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = backend.send_to(&reply, from).await;
        }
    });
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp"},
               "spec": {"clusterIP": "127.96.1.9", "ports": [{"port": 5300, "protocol": "UDP", "targetPort": 9053}]}}),
    )
    .await;
    set_slice(c, "default", "udp", &[ep("127.244.9.1")], &[("", 9053, "UDP")]).await;
    let proxy = start(&cluster, config());

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let vip = sa("127.96.1.9", 5300);
    let reply = eventually(Duration::from_secs(2), "a UDP reply", || async {
        client.send_to(b"ping", vip).await.ok()?;
        let mut buf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await.ok()?.ok()?;
        Some((buf[..n].to_vec(), from))
    })
    .await;
    assert_eq!(reply, (b"echo:ping".to_vec(), vip), "the reply comes from the VIP");
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn port_conflict_gives_a_warning_event_and_no_crash() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _squatter = std::net::TcpListener::bind(sa("127.96.1.10", 8080)).unwrap();
    let _a = id_backend(sa("127.244.10.1", 9000), "a").await;
    create_service(c, "default", cluster_ip_service("taken", "127.96.1.10", 8080)).await;
    create_service(c, "default", cluster_ip_service("fine", "127.96.1.12", 8080)).await;
    set_slice(c, "default", "taken", &[ep("127.244.10.1")], &[("", 9000, "TCP")]).await;
    set_slice(c, "default", "fine", &[ep("127.244.10.1")], &[("", 9000, "TCP")]).await;
    let proxy = start(&cluster, config());

    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let ev = eventually(Duration::from_secs(3), "a FailedToBindPort event", || async {
        events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedToBindPort")
                && e.involved_object.name.as_deref() == Some("taken")
        })
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.message.unwrap_or_default().contains("127.96.1.10:8080"));
    // The proxy is still alive and serving other services.
    assert_eq!(first_id(sa("127.96.1.12", 8080)).await, "a");
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn udp_association_sticks_until_idle_then_rebalances() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    for (ip, id) in [("127.244.12.1", "a"), ("127.244.12.2", "b")] {
        let sock = UdpSocket::bind(sa(ip, 9053)).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(id.as_bytes(), from).await;
            }
        });
    }
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp2"},
               "spec": {"clusterIP": "127.96.1.13", "ports": [{"port": 5300, "protocol": "UDP", "targetPort": 9053}]}}),
    )
    .await;
    set_slice(c, "default", "udp2", &[ep("127.244.12.1"), ep("127.244.12.2")], &[("", 9053, "UDP")]).await;
    let idle = Duration::from_millis(300);
    let proxy = start(&cluster, ProxyConfig { udp_idle_timeout: idle, ..config() });

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let vip = sa("127.96.1.13", 5300);
    let ask = || async {
        client.send_to(b"?", vip).await.ok()?;
        let mut buf = [0u8; 8];
        let (n, _) =
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let first = eventually(Duration::from_secs(2), "a UDP reply", ask).await;
    for _ in 0..4 {
        assert_eq!(ask().await.as_ref(), Some(&first), "one association per client while it is active");
    }
    // Silence is the behaviour under test, so this one waits: past the idle timeout the
    // association is gone and the next datagram opens a new one on the next endpoint.
    tokio::time::sleep(idle * 2).await;
    assert_ne!(ask().await.expect("a reply on a new association"), first);
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn endpoints_are_used_when_a_service_has_no_slice() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.13.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.13.2", 9000), "b").await;
    create_service(c, "default", cluster_ip_service("legacy", "127.96.1.14", 8080)).await;
    // Only a core/v1 Endpoints object, as older tools write: b is listed as not ready.
    let eps: Api<Endpoints> = Api::namespaced(c.clone(), "default");
    upsert(
        &eps,
        "legacy",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy"},
               "subsets": [{"addresses": [{"ip": "127.244.13.1"}], "notReadyAddresses": [{"ip": "127.244.13.2"}],
                            "ports": [{"port": 9000, "protocol": "TCP"}]}]}),
    )
    .await;
    let proxy = start(&cluster, config());
    let vip = sa("127.96.1.14", 8080);
    assert_eq!(first_id(vip).await, "a");
    for _ in 0..4 {
        assert_eq!(read_id(vip).await.as_deref(), Some("a"));
    }
    // Once a slice exists it wins over the Endpoints object.
    set_slice(c, "default", "legacy", &[ep("127.244.13.2")], &[("", 9000, "TCP")]).await;
    eventually(Duration::from_secs(1), "the slice takes over", || async {
        (read_id(vip).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    proxy.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_and_a_busy_one_is_not() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.14.1", 9000), "a").await;
    create_service(c, "default", cluster_ip_service("idle", "127.96.1.15", 8080)).await;
    set_slice(c, "default", "idle", &[ep("127.244.14.1")], &[("", 9000, "TCP")]).await;
    let idle = Duration::from_millis(400);
    let proxy = start(&cluster, ProxyConfig { tcp_idle_timeout: idle, ..config() });
    let vip = sa("127.96.1.15", 8080);
    first_id(vip).await;

    // Busy: a message every 100 ms for three idle timeouts, each echoed through the proxy.
    let mut busy = TcpStream::connect(vip).await.unwrap();
    let mut line = [0u8; 2];
    busy.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"a\n");
    let start = Instant::now();
    while start.elapsed() < idle * 3 {
        busy.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), busy.read_exact(&mut back))
            .await
            .expect("a busy connection stays open")
            .unwrap();
        assert_eq!(&back, b"ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle: closed by the proxy once nothing moved for the timeout.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), busy.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the idle connection was closed: {closed:?}");
    proxy.stop().await;
    cluster.shutdown().await;
}

/// Sends `msg` from `sock` to `vip`; Some if it comes back within 300 ms.
async fn echoed(sock: &UdpSocket, vip: std::net::SocketAddr, msg: &str) -> Option<()> {
    sock.send_to(msg.as_bytes(), vip).await.ok()?;
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await.ok()?.ok()?;
    (&buf[..n] == msg.as_bytes()).then_some(())
}

#[tokio::test]
async fn udp_sessions_are_capped_and_expire_and_over_the_cap_is_dropped() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let echo = UdpSocket::bind(sa("127.244.15.1", 9053)).await.unwrap();
    let _echo = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udpcap"},
               "spec": {"clusterIP": "127.96.1.16", "ports": [{"port": 5300, "protocol": "UDP", "targetPort": 9053}]}}),
    )
    .await;
    set_slice(c, "default", "udpcap", &[ep("127.244.15.1")], &[("", 9053, "UDP")]).await;
    let cap = 4;
    let idle = Duration::from_secs(1);
    let proxy = start(&cluster, ProxyConfig { udp_idle_timeout: idle, udp_max_sessions: cap, ..config() });
    let vip = sa("127.96.1.16", 5300);
    // Up to the cap, each client address and port gets its own session and its echo.
    let mut clients = Vec::new();
    for i in 0..cap {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        eventually(Duration::from_secs(3), &format!("client {i} is echoed"), || echoed(&sock, vip, "in")).await;
        clients.push(sock);
    }
    // One more while they are all live: its datagrams are dropped, the others keep working.
    let extra = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(echoed(&extra, vip, "over").await, None, "over the cap: dropped");
    for sock in &clients {
        assert_eq!(echoed(sock, vip, "still").await, Some(()), "sessions under the cap keep working");
    }
    // Once the others fall idle their sessions expire, and the extra client gets one.
    eventually(Duration::from_secs(5), "a session freed by idle expiry", || echoed(&extra, vip, "now")).await;
    proxy.stop().await;
    cluster.shutdown().await;
}
