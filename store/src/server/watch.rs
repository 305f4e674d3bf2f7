//! The Watch service: one bidirectional stream carries many watches.
//!
//! Each created watch gets a forwarding task that turns store events into WatchResponses on the
//! shared outgoing channel. Progress requests answer with the lowest revision every watch on the
//! stream has delivered, never a newer one: a progress notification ahead of undelivered events
//! would tell the client it has seen what it has not (the failure kine#731 describes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use etcd_client::proto::{PbEvent, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{pb_kv, Endpoint};
use crate::{Error, EventKind, RevisionStream};

/// etcd's WatchCreateRequest filter types.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;
/// Revisions per response at most. A response holds whole revisions only: etcd never splits one
/// across responses (unless the client asked for fragments), and clients such as kplane's own etcd
/// backend resume after the last revision of a response.
const MAX_REVISIONS_PER_RESPONSE: usize = 256;

pub(super) type Out = mpsc::Sender<Result<PbWatchResponse, Status>>;

struct Active {
    task: JoinHandle<()>,
    /// Highest revision this watch has delivered (or start − 1).
    delivered: Arc<AtomicI64>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tonic::async_trait]
impl PbWatchService for Endpoint {
    type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let input = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(session(self.clone(), input, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One Watch stream: `input` is the client's requests (a gRPC `Streaming`, or a plain stream in the
/// fuzz entry).
pub(super) async fn session<S>(ep: Endpoint, mut input: S, tx: Out)
where
    S: futures::Stream<Item = Result<PbWatchRequest, Status>> + Unpin,
{
    let mut watches: HashMap<i64, Active> = HashMap::new();
    let mut next_id = 0i64;
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => break,
            msg = input.next() => msg,
        };
        let req = match msg {
            Some(Ok(req)) => req,
            // The client closed its side or the connection broke: the session ends with it.
            None | Some(Err(_)) => break,
        };
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let id = if c.watch_id != 0 {
                    if watches.contains_key(&c.watch_id) {
                        let _ = tx.send(Err(Status::invalid_argument("etcdserver: duplicate watch ID"))).await;
                        continue;
                    }
                    c.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                let header = match ep.current_header() {
                    Ok(h) => h,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        break;
                    }
                };
                let current = header.as_ref().map_or(0, |h| h.revision);
                let created = PbWatchResponse { header, watch_id: id, created: true, ..Default::default() };
                if tx.send(Ok(created)).await.is_err() {
                    break;
                }
                match ep.store.watch_range(c.key, c.range_end, c.start_revision) {
                    Ok(stream) => {
                        let start = if c.start_revision > 0 { c.start_revision - 1 } else { current };
                        let delivered = Arc::new(AtomicI64::new(start));
                        let filters = (c.filters.contains(&FILTER_NOPUT), c.filters.contains(&FILTER_NODELETE));
                        let task = tokio::spawn(forward(
                            ep.clone(),
                            stream,
                            id,
                            filters,
                            c.prev_kv,
                            delivered.clone(),
                            tx.clone(),
                        ));
                        watches.insert(id, Active { task, delivered });
                    }
                    Err(e) => {
                        if tx.send(Ok(canceled(&ep, id, e))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) if watches.remove(&c.watch_id).is_some() => {
                let resp = PbWatchResponse {
                    header: ep.current_header().ok().flatten(),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            Some(PbWatchRequestUnion::CancelRequest(_)) => {}
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                let safe = watches.values().map(|w| w.delivered.load(Ordering::Acquire)).min();
                let rev = match safe {
                    Some(r) => r,
                    None => ep.current_header().ok().flatten().map_or(0, |h| h.revision),
                };
                let resp = PbWatchResponse { header: ep.header(rev), watch_id: -1, ..Default::default() };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            None => {}
        }
    }
}

/// The response that ends a watch: compacted (with the compact revision) or another error.
fn canceled(ep: &Endpoint, id: i64, e: Error) -> PbWatchResponse {
    let (compact_revision, reason) = match &e {
        Error::Compacted { compact_revision, .. } => {
            (*compact_revision, "etcdserver: mvcc: required revision has been compacted".to_string())
        }
        other => (0, other.to_string()),
    };
    PbWatchResponse {
        header: ep.current_header().ok().flatten(),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: reason,
        ..Default::default()
    }
}

async fn forward(
    ep: Endpoint,
    stream: RevisionStream,
    id: i64,
    (no_put, no_delete): (bool, bool),
    prev_kv: bool,
    delivered: Arc<AtomicI64>,
    tx: Out,
) {
    let mut chunks = stream.ready_chunks(MAX_REVISIONS_PER_RESPONSE);
    while let Some(chunk) = chunks.next().await {
        let mut events = Vec::with_capacity(chunk.len());
        let mut last = None;
        let mut end = None;
        for item in chunk {
            match item {
                Ok(revision) => {
                    for ev in revision {
                        last = Some(ev.revision());
                        let skip = match ev.kind {
                            EventKind::Put => no_put,
                            EventKind::Delete => no_delete,
                        };
                        if skip {
                            continue;
                        }
                        events.push(PbEvent {
                            r#type: if ev.kind == EventKind::Put { 0 } else { 1 },
                            kv: Some(pb_kv(ev.kv)),
                            prev_kv: if prev_kv { ev.prev_kv.map(pb_kv) } else { None },
                        });
                    }
                }
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
        }
        if let Some(rev) = last {
            if !events.is_empty() {
                let resp =
                    PbWatchResponse { header: ep.header(rev), watch_id: id, events, ..Default::default() };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            delivered.store(rev, Ordering::Release);
        }
        if let Some(e) = end {
            let _ = tx.send(Ok(canceled(&ep, id, e))).await;
            return;
        }
    }
}
