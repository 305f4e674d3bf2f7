//! The service proxy in nftables mode, as root, against an in-process API server with TCP
//! backends as pods: DNAT from kplane's table `ip kplane-proxy` carries the ClusterIP traffic (no
//! userspace listener), random balancing reaches both pods, ClientIP affinity sticks, rules follow
//! a scale to zero (reject) and back, and nothing of kplane's is left after a stop or after a
//! killed proxy is replaced; no other table is touched. Only loopback addresses are programmed:
//! VIPs 127.96.8.20-21, pods 127.244.80.x. A guard deletes the table even when an assertion fails.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kube::api::{Api, DeleteParams};
use networking::proxy::nftables::{cleanup, preflight, run_nftables_proxy};
use networking::proxy::ProxyConfig;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// Deletes kplane's table on drop (a failing test included).
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(cleanup())
        })
        .join();
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        resync: Duration::from_millis(500),
        // The bootstrap services every test cluster has.
        exclude: vec![sa("127.96.0.1", 443), sa("127.96.0.10", 53)],
        ..ProxyConfig::default()
    }
}

/// `nft list table ip kplane-proxy`; empty when the table does not exist.
fn table() -> String {
    let out =
        std::process::Command::new("nft").args(["list", "table", "ip", "kplane-proxy"]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every table of the machine but kplane's.
fn other_tables() -> String {
    let out = std::process::Command::new("nft").args(["list", "tables"]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("kplane-proxy"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test]
async fn cluster_ip_through_nftables_follows_scaling_and_cleans_up() {
    preflight().await.expect("these tests run as root with nft installed");
    let _guard = Cleanup;
    cleanup().await.unwrap();
    assert_eq!(table(), "");
    let others = other_tables();
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.80.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.80.2", 9000), "b").await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"clusterIP": "127.96.8.20", "ports": [{"name": "http", "port": 8080, "targetPort": 9000}]}}),
    )
    .await;
    let both = [ep("127.244.80.1"), ep("127.244.80.2")];
    set_slice(c, "default", "web", &both, &[("http", 9000, "TCP")]).await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
               "spec": {"clusterIP": "127.96.8.21", "sessionAffinity": "ClientIP",
                        "ports": [{"name": "http", "port": 8080, "targetPort": 9000}]}}),
    )
    .await;
    set_slice(c, "default", "sticky", &both, &[("http", 9000, "TCP")]).await;
    let client = c.clone();
    let proxy = spawn_component(move |sd| run_nftables_proxy(client, config(), Duration::from_millis(100), sd));

    // Served by the kernel: both pods answer, in random order.
    let vip = sa("127.96.8.20", 8080);
    eventually(Duration::from_secs(5), "the first answer through the DNAT", || read_id(vip)).await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        seen.extend(read_id(vip).await);
    }
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]), "random balancing reaches both pods");
    // ClientIP affinity: every connection from this client reaches the pod of its first.
    let sticky = sa("127.96.8.21", 8080);
    let first = eventually(Duration::from_secs(5), "the sticky service", || read_id(sticky)).await;
    for _ in 0..20 {
        assert_eq!(read_id(sticky).await.as_deref(), Some(first.as_str()), "ClientIP affinity");
    }
    // No userspace listener holds the VIP: we can bind it ourselves.
    drop(TcpListener::bind(vip).await.expect("the VIP:port is free: no userspace listener"));
    let t = table();
    for want in [
        "type nat hook output priority -100; policy accept;",
        "ip daddr 127.0.0.0/8 jump services",
        "127.96.8.20 . tcp . 8080 comment \"default/web:http\" : goto service-",
        "numgen random mod 2 vmap",
        "dnat to 127.244.80.1:9000 comment \"default/web:http\"",
        "dnat to 127.244.80.2:9000 comment \"default/web:http\"",
        "set affinity-",
        "update @affinity-",
    ] {
        assert!(t.contains(want), "{want} missing from\n{t}");
    }

    // Scaled to zero: reject (connection refused at once), no DNAT left.
    set_slice(c, "default", "web", &[], &[("http", 9000, "TCP")]).await;
    eventually(Duration::from_secs(5), "the no-endpoint element", || async {
        table()
            .contains("127.96.8.20 . tcp . 8080 comment \"default/web:http\" : goto reject-chain")
            .then_some(())
    })
    .await;
    assert!(refused(vip).await, "the VIP refuses at once");
    assert!(!table().contains("dnat to 127.244.80.1:9000 comment \"default/web:http\""), "{}", table());
    // And back.
    set_slice(c, "default", "web", &both[..1], &[("http", 9000, "TCP")]).await;
    let id = eventually(Duration::from_secs(5), "served again", || read_id(vip)).await;
    assert_eq!(id, "a");
    assert!(!table().contains("goto reject-chain }"), "{}", table());

    // A stop deletes the table, and nothing else.
    proxy.stop().await;
    assert_eq!(table(), "", "left after stop");
    assert_eq!(other_tables(), others, "tables kplane did not create are untouched");

    // A killed proxy (no cleanup) leaves its table; the next one replaces it with the current
    // state.
    let client = c.clone();
    let killed =
        tokio::spawn(run_nftables_proxy(client, config(), Duration::from_millis(100), std::future::pending()));
    eventually(Duration::from_secs(5), "served by the first proxy", || read_id(vip)).await;
    killed.abort();
    let _ = killed.await;
    let stale = table();
    assert!(stale.contains("-default/web/tcp/http") && stale.contains("-default/sticky/tcp/http"), "{stale}");
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), "default");
    services.delete("web", &DeleteParams::default()).await.unwrap();
    services.delete("sticky", &DeleteParams::default()).await.unwrap();
    let client = c.clone();
    let proxy = spawn_component(move |sd| run_nftables_proxy(client, config(), Duration::from_millis(100), sd));
    eventually(Duration::from_secs(5), "the stale service chains removed", || async {
        let t = table();
        (t.contains("chain services") && !t.contains("default/web") && !t.contains("default/sticky"))
            .then_some(())
    })
    .await;
    assert!(refused(vip).await || read_id(vip).await.is_none(), "the deleted service is not served");
    proxy.stop().await;
    assert_eq!(table(), "", "left after the restart's stop");
    cluster.shutdown().await;
}
