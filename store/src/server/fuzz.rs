//! The fuzz entry over the etcd gRPC requests (`store::fuzzing::etcd_requests`): arbitrary bytes
//! decoded as the endpoint's protobuf request messages and served by the endpoint's own service
//! functions against an embedded store in a temporary directory, as a gRPC client's calls would be.

use std::sync::OnceLock;

use etcd_client::proto::{
    PbCompactionRequest, PbDeleteRequest, PbHashKvRequest, PbKvService, PbLeaseGrantRequest,
    PbLeaseKeepAliveRequest, PbLeaseLeasesRequest, PbLeaseRevokeRequest, PbLeaseService,
    PbLeaseTimeToLiveRequest, PbMaintenanceService, PbPutRequest, PbRangeRequest, PbStatusRequest,
    PbTxnRequest, PbWatchRequest,
};
use prost::Message;
use tonic::Request;

use super::Endpoint;
use crate::embedded::{EmbeddedConfig, EmbeddedStore};
use crate::Store;

struct World {
    rt: tokio::runtime::Runtime,
    ep: Endpoint,
    _dir: tempfile::TempDir,
}

/// One store for the whole run (opening one per input would cost more than the requests).
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        // On tmpfs where there is one: the store syncs every commit, which on a disk would bound the
        // fuzzer to a few inputs a second.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
        let dir = dir.expect("a temporary directory");
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.compaction_interval = std::time::Duration::ZERO;
        let store = rt.block_on(EmbeddedStore::open(cfg)).expect("the embedded store opens");
        World { rt, ep: Endpoint { store }, _dir: dir }
    })
}

/// `data` is a sequence of frames `<op byte><length, 2 bytes little-endian><message>`; the op byte
/// picks the request type (Range, Put, DeleteRange, Txn, Compact, LeaseGrant, LeaseRevoke,
/// LeaseKeepAlive, LeaseTimeToLive, LeaseLeases, Watch, HashKV, Status). A message that does not
/// decode is skipped, as the gRPC layer would refuse it; every decoded one is served, in order.
/// The Watch frames of one input form one watch stream, served after the other requests.
pub(crate) fn requests(data: &[u8]) {
    let w = world();
    let ep = &w.ep;
    w.rt.block_on(async {
        let mut watch = Vec::new();
        let mut rest = data;
        while let [op, lo, hi, tail @ ..] = rest {
            let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
            let (msg, next) = tail.split_at(len);
            rest = next;
            match op % 13 {
                0 => {
                    if let Ok(m) = PbRangeRequest::decode(msg) {
                        let _ = ep.range(Request::new(m)).await;
                    }
                }
                1 => {
                    if let Ok(m) = PbPutRequest::decode(msg) {
                        let _ = ep.put(Request::new(m)).await;
                    }
                }
                2 => {
                    if let Ok(m) = PbDeleteRequest::decode(msg) {
                        let _ = ep.delete_range(Request::new(m)).await;
                    }
                }
                3 => {
                    if let Ok(m) = PbTxnRequest::decode(msg) {
                        let _ = ep.txn(Request::new(m)).await;
                    }
                }
                4 => {
                    if let Ok(m) = PbCompactionRequest::decode(msg) {
                        let _ = ep.compact(Request::new(m)).await;
                    }
                }
                5 => {
                    if let Ok(m) = PbLeaseGrantRequest::decode(msg) {
                        let _ = ep.lease_grant(Request::new(m)).await;
                    }
                }
                6 => {
                    if let Ok(m) = PbLeaseRevokeRequest::decode(msg) {
                        let _ = ep.lease_revoke(Request::new(m)).await;
                    }
                }
                7 => {
                    // A keep-alive stream's message, as its session serves each one.
                    if let Ok(m) = PbLeaseKeepAliveRequest::decode(msg) {
                        let _ = ep.store.keep_alive(m.id).await;
                    }
                }
                8 => {
                    if let Ok(m) = PbLeaseTimeToLiveRequest::decode(msg) {
                        let _ = ep.lease_time_to_live(Request::new(m)).await;
                    }
                }
                9 => {
                    if let Ok(m) = PbLeaseLeasesRequest::decode(msg) {
                        let _ = ep.lease_leases(Request::new(m)).await;
                    }
                }
                10 => {
                    if let Ok(m) = PbWatchRequest::decode(msg) {
                        watch.push(Ok(m));
                    }
                }
                11 => {
                    if let Ok(m) = PbHashKvRequest::decode(msg) {
                        let _ = ep.hash_kv(Request::new(m)).await;
                    }
                }
                _ => {
                    if let Ok(m) = PbStatusRequest::decode(msg) {
                        let _ = ep.status(Request::new(m)).await;
                    }
                }
            }
        }
        if !watch.is_empty() {
            // The session ends when its input does; what it sent is read back until then.
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let drain = async move { while rx.recv().await.is_some() {} };
            let session = super::watch::session(ep.clone(), futures::stream::iter(watch), tx);
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(session, drain) })
                    .await;
        }
        // Whatever came before, the store still takes a write: a request that kills the writer
        // thread (whose panic the endpoint's caller never sees) fails here.
        let put = PbPutRequest {
            key: b"/registry/fuzz/sentinel".to_vec(),
            value: b"ok".to_vec(),
            ..Default::default()
        };
        if let Err(e) = ep.put(Request::new(put)).await {
            panic!("the store refuses writes after the fuzz input: {e}");
        }
    });
}
