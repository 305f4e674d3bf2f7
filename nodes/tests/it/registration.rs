use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::helpers::*;

fn ready(n: &Node) -> Option<(String, String)> {
    let c = n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_register_and_become_ready_once_they_have_a_pod_cidr() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let running: Vec<_> = (0..3)
        .map(|i| start_node(&client, node_config(&format!("worker{i}"), nodes::default_node_ip(i))))
        .collect();
    let api: Api<Node> = Api::all(client.clone());
    // Registered but NotReady: no podCIDR yet.
    for i in 0..3 {
        let name = format!("worker{i}");
        let n = eventually("registration", || async { api.get_opt(&name).await.unwrap() }).await;
        assert_eq!(ready(&n), Some(("False".into(), "KubeletNotReady".into())), "{name}");
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], name);
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert!(labels.contains_key("kubernetes.io/arch"));
        let st = n.status.clone().unwrap();
        assert_eq!(st.capacity.as_ref().unwrap()["cpu"].0, "4");
        assert_eq!(st.allocatable.as_ref().unwrap()["memory"].0, "8Gi");
        assert_eq!(st.allocatable.as_ref().unwrap()["pods"].0, "110");
        let types: Vec<_> = st.conditions.as_ref().unwrap().iter().map(|c| c.type_.clone()).collect();
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
            assert!(types.contains(&t.to_string()), "{t} in {types:?}");
        }
        let addrs = st.addresses.unwrap();
        assert!(addrs
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == nodes::default_node_ip(i).to_string()));
        assert!(addrs.iter().any(|a| a.type_ == "Hostname" && a.address == name));
        let info = st.node_info.unwrap();
        assert!(info.kubelet_version.starts_with("v1.33."), "{}", info.kubelet_version);
        assert!(info.container_runtime_version.starts_with("kplane-sim://"));
        assert!(!info.machine_id.is_empty() && !info.system_uuid.is_empty() && !info.boot_id.is_empty());
        assert_eq!(info.operating_system, "linux");
        // The published kubelet port answers.
        let port = st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port;
        assert!(port > 0);
        let body = http_get(nodes::default_node_ip(i), port as u16, "/healthz").await;
        assert!(body.starts_with("HTTP/1.1 200") && body.ends_with("ok"), "{body}");
    }
    for i in 0..3 {
        set_pod_cidr(&client, &format!("worker{i}"), &format!("127.250.{}.0/24", 1 + i)).await;
    }
    for i in 0..3 {
        let name = format!("worker{i}");
        eventually("Ready", || async {
            let n = api.get(&name).await.unwrap();
            (ready(&n) == Some(("True".into(), "KubeletReady".into()))).then_some(())
        })
        .await;
    }
    for n in running {
        n.stop().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_renewed_and_stops_when_the_node_stops() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew_time = || async {
        let l = leases.get_opt("worker0").await.unwrap()?;
        let spec = l.spec.clone()?;
        assert_eq!(spec.holder_identity.as_deref(), Some("worker0"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let owner = l.metadata.owner_references.clone().unwrap_or_default();
        assert!(owner.iter().any(|o| o.kind == "Node" && o.name == "worker0"), "{owner:?}");
        spec.renew_time.map(|t| t.0)
    };
    let first = eventually("the lease", renew_time).await;
    eventually("a renewal", || async { renew_time().await.filter(|t| *t > first) }).await;
    node.stop().await;
    let last = renew_time().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await; // four renew intervals
    assert_eq!(renew_time().await, Some(last), "a stopped node must not renew its lease");
    cluster.shutdown().await;
}

/// A raw HTTP/1.1 GET over a plain socket; returns the whole response.
pub async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_kubelet_port_or_an_invalid_node_name_is_an_error_not_a_hang() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let taken = tokio::net::TcpListener::bind((nodes::default_node_ip(3), 0)).await.unwrap();
    let mut cfg = node_config("worker3", nodes::default_node_ip(3));
    cfg.kubelet_port = taken.local_addr().unwrap().port();
    let err = nodes::run_node(client.clone(), cfg, std::future::pending()).await.unwrap_err();
    assert!(matches!(err, nodes::Error::Listen { .. }), "{err:?}");

    let cfg = node_config("Not_A_Valid_Name", nodes::default_node_ip(3));
    let res =
        tokio::time::timeout(Duration::from_secs(10), nodes::run_node(client, cfg, std::future::pending()))
            .await
            .expect("a refused registration must end run_node");
    assert!(matches!(res, Err(nodes::Error::Api { .. })), "{res:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_condition_changed_by_someone_else_is_corrected_at_the_next_status_update() {
    use kube::api::{Patch, PatchParams};
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    set_pod_cidr(&client, "worker0", "127.250.30.0/24").await;
    let api: Api<Node> = Api::all(client.clone());
    let is_ready =
        || async { api.get("worker0").await.ok().filter(|n| ready(n).is_some_and(|r| r.0 == "True")) };
    eventually("Ready", is_ready).await;
    // What the node lifecycle controller writes when it misses heartbeats.
    let unknown = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown",
        "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}});
    let patched =
        api.patch_status("worker0", &PatchParams::default(), &Patch::Strategic(&unknown)).await.unwrap();
    assert_eq!(ready(&patched).map(|r| r.0), Some("Unknown".into()));
    eventually("the kubelet to restore Ready", is_ready).await;
    node.stop().await;
    cluster.shutdown().await;
}
