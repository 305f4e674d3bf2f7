//! Cluster DNS: kube-dns / CoreDNS's `kubernetes` plugin for the cluster domain.
//!
//! - `mod.rs`: the UDP and TCP servers and the sync loop that rebuilds the zone snapshot on every
//!   Service/EndpointSlice/Endpoints change (queries read the current `Arc<Zone>`, never the stores).
//! - `zone.rs`: the snapshot and the lookup rules.
//! - `publish.rs`: the `kube-dns` Service's Endpoints and EndpointSlice, pointing at this server.
//!
//! Only the cluster domain is served: any other name is REFUSED. This server never recurses or
//! forwards (upstream forwards to the node's resolvers; kplane must never send traffic off loopback).
//! Packets that do not parse, and responses, are dropped without an answer.

mod publish;
mod zone;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

use crate::endpoints;
use crate::informer::Informer;
use crate::Error;
use zone::Zone;

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to answer, UDP and TCP. Default: the kube-dns ClusterIP 127.96.0.10, port 53 (port 53
    /// needs root or CAP_NET_BIND_SERVICE; `--cluster-dns-port` picks another).
    pub listen: SocketAddr,
    /// The cluster domain (`--cluster-domain`).
    pub cluster_domain: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { listen: SocketAddr::from(([127, 96, 0, 10], 53)), cluster_domain: "cluster.local".into() }
    }
}

/// Largest UDP answer without EDNS (RFC 1035); larger ones are truncated (TC) so the client retries
/// over TCP.
const UDP_LIMIT: usize = 512;
/// Largest UDP answer we send even when the client advertises more (the DNS flag day's 1232).
const EDNS_LIMIT: usize = 1232;
/// Idle time after which a TCP connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

type Shared = Arc<RwLock<Arc<Zone>>>;

/// Serves DNS until `shutdown` completes. Fails only if the listen address cannot be bound.
pub async fn run_dns(
    client: kube::Client,
    cfg: DnsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let domain = Name::from_ascii(format!("{}.", cfg.cluster_domain.trim_end_matches('.')))
        .map_err(|e| Error::Config(format!("cluster domain {:?}: {e}", cfg.cluster_domain)))?
        .to_lowercase();
    let udp = UdpSocket::bind(cfg.listen).await.map_err(|source| Error::Bind { addr: cfg.listen, source })?;
    let tcp = TcpListener::bind(cfg.listen).await.map_err(|source| Error::Bind { addr: cfg.listen, source })?;

    let changed = Arc::new(Notify::new());
    let services = Informer::start(Api::<Service>::all(client.clone()), changed.clone());
    let slices = Informer::start(Api::<EndpointSlice>::all(client.clone()), changed.clone());
    let eps = Informer::start(Api::<Endpoints>::all(client.clone()), changed.clone());
    let zone: Shared = Arc::new(RwLock::new(Arc::new(Zone::build(&domain, 0, &[], &Default::default()))));

    // Serve from the start (with an empty zone until the first lists arrive), so a client never
    // sees a closed port.
    let udp_task = AbortOnDrop(tokio::spawn(serve_udp(udp, zone.clone())));
    let tcp_task = AbortOnDrop(tokio::spawn(serve_tcp(tcp, zone.clone())));
    tracing::info!(listen = %cfg.listen, domain = %domain, "cluster DNS started");
    let publish_task = AbortOnDrop(tokio::spawn(publish::publish(client.clone(), cfg.listen)));

    let mut shutdown = std::pin::pin!(shutdown);
    let mut serial: u32 = 1;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
        }
        let index = endpoints::index(&slices.store, &eps.store);
        let next = Zone::build(&domain, serial, &services.store.state(), &index);
        *zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        serial = serial.wrapping_add(1);
    }
    drop((udp_task, tcp_task, publish_task));
    // Withdraw the address (best effort: on `kplane up` the API server may be stopping too).
    match tokio::time::timeout(Duration::from_secs(1), publish::write(&client, cfg.listen, false)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "could not withdraw the kube-dns endpoints"),
        Err(_) => tracing::info!("could not withdraw the kube-dns endpoints in time"),
    }
    tracing::info!("cluster DNS stopped");
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn current(zone: &Shared) -> Arc<Zone> {
    zone.read().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn serve_udp(sock: UdpSocket, zone: Shared) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "dns udp receive failed");
                continue;
            }
        };
        let Some((reply, limit)) = handle(&buf[..n], &current(&zone)) else { continue };
        let bytes = match encode(&reply, Some(limit)) {
            Some(b) => b,
            None => continue,
        };
        let _ = sock.send_to(&bytes, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, zone: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let zone = zone.clone();
        tokio::spawn(async move {
            let _ = tcp_connection(stream, zone).await;
        });
    }
}

/// Length-prefixed messages (RFC 1035 4.2.2), several per connection, until idle or EOF.
async fn tcp_connection(mut stream: TcpStream, zone: Shared) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            _ => return Ok(()),
        };
        let mut msg = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await??;
        // A malformed message over TCP ends the connection: its framing can no longer be trusted.
        let Some((reply, _)) = handle(&msg, &current(&zone)) else { return Ok(()) };
        let Some(bytes) = encode(&reply, None) else { return Ok(()) };
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
        stream.write_all(&out).await?;
    }
}

/// Serialises, truncating to `limit` (UDP) by dropping the record sections and setting TC.
fn encode(reply: &Message, limit: Option<usize>) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    match limit {
        Some(limit) if bytes.len() > limit => {
            let mut short = Message::new();
            short.set_header(*reply.header());
            short.add_queries(reply.queries().to_vec());
            short.set_truncated(true);
            short.to_vec().ok()
        }
        _ => Some(bytes),
    }
}

/// The reply to one request, and the UDP size limit the client accepts. `None`: drop silently
/// (unparseable, or not a query).
fn handle(packet: &[u8], zone: &Zone) -> Option<(Message, usize)> {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, len = packet.len(), "dropping malformed DNS packet");
            return None;
        }
    };
    if req.message_type() != MessageType::Query {
        return None;
    }
    let limit = req
        .extensions()
        .as_ref()
        .map_or(UDP_LIMIT, |e| (e.max_payload() as usize).clamp(UDP_LIMIT, EDNS_LIMIT));
    let mut reply = Message::new();
    reply
        .set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(false);
    reply.add_queries(req.queries().to_vec());
    if req.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
        return Some((reply, limit));
    }
    let [query] = req.queries() else {
        reply.set_response_code(ResponseCode::FormErr);
        return Some((reply, limit));
    };
    if !zone.in_zone(query.name()) {
        reply.set_response_code(ResponseCode::Refused);
        return Some((reply, limit));
    }
    let answer = zone.lookup(query.name(), query.query_type());
    reply
        .set_response_code(answer.code)
        .set_authoritative(answer.authoritative)
        .add_answers(answer.answers)
        .add_name_servers(answer.authority)
        .add_additionals(answer.additionals);
    Some((reply, limit))
}

/// The fuzz entry (`networking::fuzzing::dns`): `packet` as a UDP query and as a TCP one, against a
/// zone with a ClusterIP service with named ports, a headless one with endpoints (one by
/// hostname, one by dashed IP) and an ExternalName, then encoded as each transport would send it.
pub(crate) fn fuzz_packet(packet: &[u8]) {
    static ZONE: std::sync::OnceLock<Zone> = std::sync::OnceLock::new();
    let zone = ZONE.get_or_init(|| {
        let svc = |v: serde_json::Value| Arc::new(serde_json::from_value::<Service>(v).expect("a valid Service"));
        let services = [
            svc(serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "127.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                              {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            svc(serde_json::json!({"metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(serde_json::json!({"metadata": {"name": "ext", "namespace": "other"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
        ];
        let ports = Arc::new(vec![endpoints::EndpointPort { name: "pg".into(), port: 5432, protocol: "TCP".into() }]);
        let index = [(
            ("default".to_string(), "db".to_string()),
            vec![
                endpoints::Endpoint {
                    ip: [10, 244, 0, 5].into(),
                    hostname: Some("db-0".into()),
                    ready: true,
                    ports: ports.clone(),
                },
                endpoints::Endpoint { ip: [10, 244, 0, 6].into(), hostname: None, ready: true, ports },
            ],
        )]
        .into_iter()
        .collect();
        let domain = Name::from_ascii("cluster.local.").expect("a valid domain");
        Zone::build(&domain, 1, &services, &index)
    });
    if let Some((reply, limit)) = handle(packet, zone) {
        let _ = encode(&reply, Some(limit));
        let _ = encode(&reply, None);
    }
}
