//! Cluster DNS against an in-process API server, queried with raw packets built by hickory-proto.
//! Each test listens on its own address (127.96.53.N:10053).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use networking::dns::{run_dns, DnsConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn start(cluster: &TestCluster, listen: SocketAddr) -> Running {
    let client = cluster.client.clone();
    let cfg = DnsConfig { listen, cluster_domain: "cluster.local".into() };
    spawn_component(move |sd| run_dns(client, cfg, sd))
}

fn request(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// One UDP question; `None` if no answer within 300 ms.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&request(name, qtype), server).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await.ok()?.ok()?;
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.id(), 4242);
    Some(m)
}

/// Asks until an answer satisfying `ok` arrives, within 2 s (the watch needs a moment to list).
async fn ask_until(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    ok: impl Fn(&Message) -> bool,
) -> Message {
    eventually(Duration::from_secs(2), name, || async { ask(server, name, qtype).await.filter(|m| ok(m)) })
        .await
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<_> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn has_answers(m: &Message) -> bool {
    !m.answers().is_empty()
}

async fn headless(c: &kube::Client, name: &str) {
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
}

#[tokio::test]
async fn a_record_for_a_cluster_ip_service() {
    let cluster = TestCluster::start().await;
    create_service(
        &cluster.client,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nginx-svc"},
               "spec": {"clusterIP": "127.96.2.1", "ports": [{"port": 8080}]}}),
    )
    .await;
    let dns = sa("127.96.53.1", 10053);
    let server = start(&cluster, dns);
    let m = ask_until(dns, "nginx-svc.default.svc.cluster.local.", RecordType::A, has_answers).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 96, 2, 1)]);
    assert_eq!(m.answers()[0].ttl(), 5);
    // Case-insensitive, and AAAA on an existing name is NODATA (not NXDOMAIN).
    let m = ask(dns, "NGINX-svc.Default.svc.cluster.local.", RecordType::A).await.unwrap();
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 96, 2, 1)]);
    let m = ask(dns, "nginx-svc.default.svc.cluster.local.", RecordType::AAAA).await.unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn headless_service_gives_ready_pod_ips_and_hostname_records() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    headless(c, "db").await;
    let eps = [
        Ep { ip: "127.244.20.1", ready: true, hostname: Some("db-0") },
        Ep { ip: "127.244.20.2", ready: true, hostname: Some("db-1") },
        Ep { ip: "127.244.20.3", ready: false, hostname: Some("db-2") },
    ];
    set_slice(c, "default", "db", &eps, &[("http", 8080, "TCP")]).await;
    let dns = sa("127.96.53.2", 10053);
    let server = start(&cluster, dns);
    let m = ask_until(dns, "db.default.svc.cluster.local.", RecordType::A, has_answers).await;
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 244, 20, 1), Ipv4Addr::new(127, 244, 20, 2)]);
    let m = ask(dns, "db-1.db.default.svc.cluster.local.", RecordType::A).await.unwrap();
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 244, 20, 2)]);
    let m = ask(dns, "db-2.db.default.svc.cluster.local.", RecordType::A).await.unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain, "not-ready endpoints are not published");
    // SRV on a headless service names each endpoint, with its endpoint port.
    let m = ask(dns, "_http._tcp.db.default.svc.cluster.local.", RecordType::SRV).await.unwrap();
    let mut srv: Vec<(String, u16)> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some((s.target().to_ascii(), s.port())),
            _ => None,
        })
        .collect();
    srv.sort();
    assert_eq!(
        srv,
        vec![
            ("db-0.db.default.svc.cluster.local.".to_string(), 8080),
            ("db-1.db.default.svc.cluster.local.".to_string(), 8080)
        ]
    );
    assert_eq!(m.additionals().len(), 2, "the targets' A records come along");
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn srv_for_a_named_port() {
    let cluster = TestCluster::start().await;
    create_service(
        &cluster.client,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"clusterIP": "127.96.2.3", "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let dns = sa("127.96.53.3", 10053);
    let server = start(&cluster, dns);
    let m = ask_until(dns, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV, has_answers).await;
    let RData::SRV(srv) = m.answers()[0].data() else { panic!("not SRV: {m:?}") };
    assert_eq!(srv.port(), 8080);
    assert_eq!(srv.target().to_ascii(), "web.default.svc.cluster.local.");
    let m = ask(dns, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV).await.unwrap();
    assert_eq!(m.answers().len(), 1);
    let m = ask(dns, "_http._udp.web.default.svc.cluster.local.", RecordType::SRV).await.unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain, "wrong protocol");
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn external_name_gives_a_cname() {
    let cluster = TestCluster::start().await;
    create_service(
        &cluster.client,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "db.example.invalid"}}),
    )
    .await;
    let dns = sa("127.96.53.4", 10053);
    let server = start(&cluster, dns);
    let m = ask_until(dns, "ext.default.svc.cluster.local.", RecordType::A, has_answers).await;
    let RData::CNAME(target) = m.answers()[0].data() else { panic!("not CNAME: {m:?}") };
    assert_eq!(target.0.to_ascii(), "db.example.invalid.");
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn pod_a_record_nxdomain_with_soa_and_refused_outside() {
    let cluster = TestCluster::start().await;
    let dns = sa("127.96.53.5", 10053);
    let server = start(&cluster, dns);
    let m = eventually(Duration::from_secs(2), "a pod answer", || {
        ask(dns, "127-244-0-7.default.pod.cluster.local.", RecordType::A)
    })
    .await;
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 244, 0, 7)]);

    let m = ask(dns, "nope.default.svc.cluster.local.", RecordType::A).await.unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.answers().is_empty());
    let soa = m.name_servers().first().expect("SOA in authority");
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name().to_ascii(), "cluster.local.");

    let m = ask(dns, "example.com.", RecordType::A).await.unwrap();
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert!(m.answers().is_empty());
    assert!(!m.recursion_available());
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn answers_follow_changes_within_one_second() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let dns = sa("127.96.53.6", 10053);
    let server = start(&cluster, dns);
    let name = "late.default.svc.cluster.local.";
    // Up and listed: the name does not exist yet.
    eventually(Duration::from_secs(2), "NXDOMAIN", || async {
        ask(dns, name, RecordType::A).await.filter(|m| m.response_code() == ResponseCode::NXDomain)
    })
    .await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
               "spec": {"clusterIP": "127.96.2.6", "ports": [{"port": 80}]}}),
    )
    .await;
    eventually(Duration::from_secs(1), "the new service resolves", || async {
        ask(dns, name, RecordType::A).await.filter(|m| a_records(m) == vec![Ipv4Addr::new(127, 96, 2, 6)])
    })
    .await;
    delete_service(c, "default", "late").await;
    eventually(Duration::from_secs(1), "the deleted service is gone", || async {
        ask(dns, name, RecordType::A).await.filter(|m| m.response_code() == ResponseCode::NXDomain)
    })
    .await;
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn garbage_packets_are_dropped_and_valid_queries_still_answered() {
    let cluster = TestCluster::start().await;
    let dns = sa("127.96.53.7", 10053);
    let server = start(&cluster, dns);
    eventually(Duration::from_secs(2), "up", || ask(dns, "cluster.local.", RecordType::SOA)).await;

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut truncated = request("x.default.svc.cluster.local.", RecordType::A);
    truncated.truncate(15);
    let mut as_response = Message::from_vec(&request("cluster.local.", RecordType::A)).unwrap();
    as_response.set_message_type(MessageType::Response);
    for junk in [vec![], vec![0xff; 3], vec![0xab; 700], truncated, as_response.to_vec().unwrap()] {
        sock.send_to(&junk, dns).await.unwrap();
    }
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await;
    assert!(r.is_err(), "no reply to garbage");
    let m = ask(dns, "127-244-1-1.default.pod.cluster.local.", RecordType::A).await.expect("still serving");
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 244, 1, 1)]);

    // Garbage over TCP closes that connection only.
    let mut t = TcpStream::connect(dns).await.unwrap();
    t.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(tokio::time::timeout(Duration::from_secs(2), t.read(&mut b)).await.unwrap().unwrap(), 0);
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn tcp_queries_are_answered() {
    let cluster = TestCluster::start().await;
    create_service(
        &cluster.client,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "viatcp"},
               "spec": {"clusterIP": "127.96.2.8", "ports": [{"port": 80}]}}),
    )
    .await;
    let dns = sa("127.96.53.8", 10053);
    let server = start(&cluster, dns);
    ask_until(dns, "viatcp.default.svc.cluster.local.", RecordType::A, has_answers).await;

    let mut t = TcpStream::connect(dns).await.unwrap();
    for _ in 0..2 {
        // Two questions on one connection.
        let req = request("viatcp.default.svc.cluster.local.", RecordType::A);
        t.write_all(&(req.len() as u16).to_be_bytes()).await.unwrap();
        t.write_all(&req).await.unwrap();
        let len = t.read_u16().await.unwrap();
        let mut body = vec![0u8; len as usize];
        t.read_exact(&mut body).await.unwrap();
        let m = Message::from_vec(&body).unwrap();
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(127, 96, 2, 8)]);
    }
    server.stop().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_kube_dns_service_gets_this_servers_address_while_it_serves() {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::Api;

    let cluster = TestCluster::start().await;
    let dns = sa("127.96.53.9", 10053);
    let server = start(&cluster, dns);
    let eps: Api<Endpoints> = Api::namespaced(cluster.client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "kube-system");
    let published = eventually(Duration::from_secs(3), "kube-dns endpoints", || async {
        let ep = eps.get_opt("kube-dns").await.ok().flatten()?;
        let subset = ep.subsets?.into_iter().next()?;
        (subset.addresses?.first()?.ip == "127.96.53.9").then_some(subset.ports.unwrap_or_default())
    })
    .await;
    let mut ports: Vec<_> = published.iter().map(|p| (p.name.clone().unwrap_or_default(), p.port)).collect();
    ports.sort();
    assert_eq!(ports, [("dns".to_string(), 10053), ("dns-tcp".to_string(), 10053)]);
    let slice = eventually(Duration::from_secs(3), "kube-dns slice", || async {
        slices.get_opt("kube-dns").await.ok().flatten()
    })
    .await;
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/service-name").map(String::as_str), Some("kube-dns"));
    assert_eq!(slice.endpoints[0].addresses, ["127.96.53.9"]);
    assert_eq!(slice.endpoints[0].conditions.as_ref().and_then(|c| c.ready), Some(true));
    // A clean stop withdraws the address.
    server.stop().await;
    let ep = eps.get("kube-dns").await.unwrap();
    assert!(ep.subsets.unwrap_or_default().is_empty(), "withdrawn from Endpoints");
    assert!(slices.get("kube-dns").await.unwrap().endpoints.is_empty(), "withdrawn from the slice");
    cluster.shutdown().await;
}
