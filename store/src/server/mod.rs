//! The etcd v3 gRPC endpoint of the embedded store, so that real `etcdctl` (and any etcd client)
//! can read, watch and write it.
//!
//! - `kv.rs`: KV (Range, Put, DeleteRange, Txn, Compact).
//! - `watch.rs`: Watch (create from a revision, cancel, progress).
//! - `lease.rs`: Lease (grant, revoke, keep-alive, time-to-live, list).
//! - `maintenance.rs`: Maintenance Status and an empty alarm list.
//!
//! Everything else (Cluster, Auth, snapshots, defragment, …) answers `unimplemented` with a message
//! saying so. Errors carry etcd's own messages ("etcdserver: mvcc: required revision has been
//! compacted", …) and codes, because clients match on them.
//!
//! Writes go through the same checks as every other write: keys must be UTF-8 and under the store's
//! prefix, values within the size limit.

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

/// Serves the endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    store: EmbeddedStore,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let ep = Endpoint { store };
    // Without TCP_NODELAY, small responses wait on Nagle's algorithm and the client's delayed ACK:
    // tens of milliseconds per request.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(PbKvServer::new(ep.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(PbWatchServer::new(ep.clone()))
        .add_service(PbLeaseServer::new(ep.clone()))
        .add_service(PbMaintenanceServer::new(ep))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("etcd endpoint stopped: {e}")))
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
