//! The etcd v3 gRPC endpoint of the embedded store, so that real `etcdctl` (and any etcd client)
//! can read, watch and write it.
//!
//! - `kv.rs`: KV (Range, Put, DeleteRange, Txn, Compact).
//! - `watch.rs`: Watch (create from a revision, cancel, progress).
//! - `lease.rs`: Lease (grant, revoke, keep-alive, time-to-live, list).
//! - `maintenance.rs`: Maintenance Status, an empty alarm list, Snapshot, Defragment, Hash, HashKV.
//!
//! Everything else (Cluster, Auth, MoveLeader, …) answers `unimplemented` with a message saying so. Errors carry etcd's own messages ("etcdserver: mvcc: required revision has been
//! compacted", …) and codes, because clients match on them.
//!
//! Writes go through the same checks as every other write: keys must be UTF-8 and under the store's
//! prefix, values within the size limit.
//!
//! Beside gRPC, the same port answers `GET /metrics` over plain HTTP/1.1 (or HTTP/2) with the
//! store's metrics under etcd's names (`embedded::metrics`), as etcd does on its client URLs, so
//! `curl http://127.0.0.1:2379/metrics` and a Prometheus scrape work as against etcd. The server
//! accepts HTTP/1.1 for that; gRPC clients speak HTTP/2 and are told apart by the connection preface.
//!
//! Plain gRPC by default (the endpoint is loopback-only); with [`EndpointTls`] it serves TLS like
//! etcd's `--cert-file`/`--key-file`, and with a client CA it requires client certificates signed by
//! it, like `--trusted-ca-file` with `--client-cert-auth`.

pub(crate) mod fuzz;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::future::Future;
use std::net::SocketAddr;

use etcd_client::proto::{
    PbKeyValue, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbResponseHeader, PbWatchServer,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::embedded::EmbeddedStore;
use crate::{Error, KeyValue};

/// Fixed identity of the single "member": clients print these, nothing depends on their value.
const CLUSTER_ID: u64 = 0x6b70_6c61_6e65; // "kplane"
const MEMBER_ID: u64 = 0x6b70_6c61_6e65_0001;

/// Largest gRPC message accepted: the value limit plus room for the key and framing, like etcd's
/// `--max-request-bytes` plus its gRPC overhead.
const MAX_MESSAGE: usize = crate::DEFAULT_MAX_VALUE_BYTES + 512 * 1024;

/// Shared state of the four services.
#[derive(Clone)]
pub(crate) struct Endpoint {
    store: EmbeddedStore,
}

impl Endpoint {
    fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader { cluster_id: CLUSTER_ID, member_id: MEMBER_ID, revision, raft_term: 1 })
    }

    fn current_header(&self) -> Result<Option<PbResponseHeader>, tonic::Status> {
        let (rev, _) = self.store.revisions().map_err(status)?;
        Ok(self.header(rev))
    }
}

/// PEM certificates for serving the endpoint over TLS.
#[derive(Clone)]
pub struct EndpointTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Require client certificates signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for EndpointTls {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointTls")
            .field("client_auth", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl EndpointTls {
    fn config(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(self.cert_pem.clone(), self.key_pem.clone()));
        if let Some(ca) = &self.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca.clone()));
        }
        config
    }

    /// Whether the certificate, key and CA parse and fit together, so a bad file fails at startup.
    pub fn check(&self) -> Result<(), Error> {
        tonic::transport::Server::builder()
            .tls_config(self.config())
            .map(|_| ())
            .map_err(|e| Error::Unavailable(format!("etcd endpoint TLS configuration: {}", source_chain(&e))))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Serves the endpoint on `listener` (plain gRPC) until `shutdown` resolves.
pub async fn serve(
    store: EmbeddedStore,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_tls(store, listener, None, shutdown).await
}

/// Serves the endpoint on `listener`, over TLS when `tls` is given, until `shutdown` resolves.
pub async fn serve_with_tls(
    store: EmbeddedStore,
    listener: TcpListener,
    tls: Option<EndpointTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let ep = Endpoint { store };
    // Without TCP_NODELAY, small responses wait on Nagle's algorithm and the client's delayed ACK:
    // tens of milliseconds per request.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.config()).map_err(|e| {
            Error::Unavailable(format!("etcd endpoint TLS configuration: {}", source_chain(&e)))
        })?;
    }
    let metrics = ep.store.metrics().clone();
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(PbKvServer::new(ep.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(PbWatchServer::new(ep.clone()))
        .add_service(PbLeaseServer::new(ep.clone()))
        .add_service(PbMaintenanceServer::new(ep));
    let router = routes
        .routes()
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, crate::embedded::metrics::CONTENT_TYPE)],
                        metrics.encode(),
                    )
                }
            }),
        )
        .fallback(not_found);
    builder
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("etcd endpoint stopped: {e}")))
}

/// Anything else: a gRPC call to a service the endpoint does not serve gets gRPC's `unimplemented`
/// (what etcd clients expect, e.g. `etcdctl member list`); a plain HTTP request a 404, as etcd's
/// HTTP mux answers.
async fn not_found(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let service = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or_default();
        return unimplemented(&format!("the service {service}")).into_http::<axum::body::Body>();
    }
    (axum::http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Binds `addr` for [`serve`], with a clear error when the port is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr} for the etcd endpoint: {e}")))
}

fn pb_kv(kv: KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.into_bytes(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A key for a write: etcd allows any bytes, kplane's store only UTF-8 (every `/registry` key is).
fn utf8_key(key: Vec<u8>) -> Result<String, tonic::Status> {
    if key.is_empty() {
        return Err(tonic::Status::invalid_argument("etcdserver: key is not provided"));
    }
    String::from_utf8(key).map_err(|_| tonic::Status::invalid_argument("kplane: keys must be valid UTF-8"))
}

/// Maps a store error to the status etcd would send.
pub(crate) fn status(e: Error) -> tonic::Status {
    use tonic::Status;
    match e {
        Error::Compacted { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        Error::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        Error::LeaseNotFound { .. } => Status::not_found("etcdserver: requested lease not found"),
        Error::ValueTooLarge { .. } => {
            Status::invalid_argument(format!("etcdserver: request is too large ({e})"))
        }
        Error::InvalidKey { .. } => Status::invalid_argument(format!("kplane: {e}")),
        Error::Unsupported(msg) => Status::unimplemented(format!("kplane: {msg}")),
        Error::Unavailable(msg) => Status::unavailable(msg),
        e @ (Error::NotFound { .. }
        | Error::AlreadyExists { .. }
        | Error::Conflict { .. }
        | Error::Internal(_)) => Status::internal(e.to_string()),
    }
}

fn unimplemented(what: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("kplane's embedded etcd endpoint does not implement {what}"))
}
