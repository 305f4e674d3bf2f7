//! The Lease service.

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse, PbLeaseService,
    PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{status, Endpoint};
use crate::{Error, Store};

#[tonic::async_trait]
impl PbLeaseService for Endpoint {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let r = request.into_inner();
        if r.ttl > crate::MAX_LEASE_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let (id, ttl) = self.store.lease_grant(r.id, r.ttl).await.map_err(status)?;
        Ok(Response::new(PbLeaseGrantResponse {
            header: self.current_header()?,
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        self.store.revoke_lease(request.into_inner().id).await.map_err(status)?;
        Ok(Response::new(PbLeaseRevokeResponse { header: self.current_header()? }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let ep = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    msg = input.message() => msg,
                };
                let Ok(Some(req)) = msg else { return };
                // etcd answers a keep-alive for an unknown lease with TTL 0, not an error.
                let resp = match ep.store.keep_alive(req.id).await {
                    Ok(ttl) => Ok(PbLeaseKeepAliveResponse {
                        header: ep.current_header().ok().flatten(),
                        id: req.id,
                        ttl,
                    }),
                    Err(Error::LeaseNotFound { .. }) => Ok(PbLeaseKeepAliveResponse {
                        header: ep.current_header().ok().flatten(),
                        id: req.id,
                        ttl: 0,
                    }),
                    Err(e) => Err(status(e)),
                };
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        let header = self.current_header()?;
        match self.store.lease_info(r.id, r.keys) {
            Ok(info) => Ok(Response::new(PbLeaseTimeToLiveResponse {
                header,
                id: info.id,
                ttl: info.remaining_ttl,
                granted_ttl: info.granted_ttl,
                keys: info.keys.into_iter().map(String::into_bytes).collect(),
            })),
            // etcd reports an expired or unknown lease as TTL -1.
            Err(Error::LeaseNotFound { .. }) => Ok(Response::new(PbLeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })),
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let ids = self.store.lease_ids().map_err(status)?;
        Ok(Response::new(PbLeaseLeasesResponse {
            header: self.current_header()?,
            leases: ids.into_iter().map(|id| PbLeaseStatus { id }).collect(),
        }))
    }
}
