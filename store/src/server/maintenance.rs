//! The Maintenance service: Status (`etcdctl endpoint status`), an empty alarm list, Snapshot
//! (`etcdctl snapshot save`), Defragment (`etcdctl defrag`), Hash and HashKV (`etcdctl endpoint
//! hashkv`). MoveLeader and Downgrade have no meaning for one member and are not implemented.

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest, PbSnapshotResponse,
    PbStatusRequest, PbStatusResponse,
};
use std::io::Read;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{status, unimplemented, Endpoint, MEMBER_ID};

/// The etcd API level this endpoint speaks.
const VERSION: &str = "3.4.0";

/// Bytes per Snapshot message, etcd's own chunk size.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

#[tonic::async_trait]
impl PbMaintenanceService for Endpoint {
    async fn alarm(&self, _: Request<PbAlarmRequest>) -> Result<Response<PbAlarmResponse>, Status> {
        Ok(Response::new(PbAlarmResponse { header: self.current_header()?, alarms: Vec::new() }))
    }

    async fn status(&self, _: Request<PbStatusRequest>) -> Result<Response<PbStatusResponse>, Status> {
        let (rev, _) = self.store.revisions().map_err(status)?;
        let size = self.store.db_size();
        Ok(Response::new(PbStatusResponse {
            header: self.header(rev),
            version: VERSION.to_string(),
            db_size: size,
            leader: MEMBER_ID,
            raft_index: rev as u64,
            raft_term: 1,
            raft_applied_index: rev as u64,
            db_size_in_use: size,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        self.store.defragment().await.map_err(status)?;
        Ok(Response::new(PbDefragmentResponse { header: self.current_header()? }))
    }

    async fn hash(&self, _: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        let (hash, revision) = self.store.hash().await.map_err(status)?;
        Ok(Response::new(PbHashResponse { header: self.header(revision), hash }))
    }

    async fn hash_kv(&self, req: Request<PbHashKvRequest>) -> Result<Response<PbHashKvResponse>, Status> {
        let h = self.store.hash_kv(req.into_inner().revision).await.map_err(status)?;
        Ok(Response::new(PbHashKvResponse {
            header: self.header(h.revision),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<PbSnapshotResponse, Status>>;

    /// The snapshot is taken whole first (one read transaction, so one revision), then sent in
    /// chunks with the bytes still to come, as etcd sends its bbolt file; its last 32 bytes are a
    /// SHA-256 of the rest, as on etcd.
    async fn snapshot(&self, _: Request<PbSnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let snap = self.store.snapshot().await.map_err(status)?;
        tracing::info!(revision = snap.revision, bytes = snap.size, "embedded store: sending a snapshot");
        let header = self.header(snap.revision);
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut file = snap.file;
            let mut remaining = snap.size;
            loop {
                let mut blob = vec![0u8; SNAPSHOT_CHUNK.min(remaining as usize)];
                let msg = match file.read_exact(&mut blob) {
                    Ok(()) => {
                        remaining -= blob.len() as u64;
                        Ok(PbSnapshotResponse {
                            header,
                            remaining_bytes: remaining,
                            blob,
                            ..Default::default()
                        })
                    }
                    Err(e) => Err(Status::internal(format!("kplane: reading the snapshot: {e}"))),
                };
                let last = remaining == 0 || msg.is_err();
                // The client went away: stop reading.
                if tx.blocking_send(msg).is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        _: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader"))
    }

    async fn downgrade(&self, _: Request<PbDowngradeRequest>) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
