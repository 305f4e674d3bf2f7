//! Watches on the embedded store.
//!
//! Each watch is a task that first replays the revision log from its start revision, then follows
//! the writer's broadcast of committed events. The broadcast is bounded; a watcher that falls behind
//! gets `Lagged` and simply catches up from the durable log again, so a slow watcher never stalls the
//! writer or other watchers and never loses an event. If compaction overtakes it meanwhile, the watch
//! ends with `Compacted` and the client re-lists, as etcd and upstream do.
//!
//! Ordering argument: the task subscribes to the broadcast *before* its first log read. Every commit
//! after that read's snapshot is therefore in the broadcast, and every commit up to it is in the log;
//! events at or below the last delivered revision are skipped, so nothing is seen twice.
//!
//! Each revision goes out as one item (`RevisionStream`): catch-up reads stop only between revisions
//! and a broadcast batch holds whole commits, so a revision is never split, and "the last delivered
//! revision" always means every event of it was delivered.
//!
//! Progress (`Store::watch_progress`): when asked, the task reads the current revision C and reports
//! `Progress` once it has followed the broadcast past C (at once if it already has): every commit up
//! to C is then either delivered or outside the range.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;

use super::db::Db;
use super::mvcc::{self, internal, LOG, META};
use super::writer::Batch;
use crate::{Error, Event, ProgressStream, Result, WatchItem};

/// Log entries read per catch-up step, to bound memory for a watcher far behind.
const CATCH_UP_CHUNK: usize = 1024;
/// Events buffered between the watcher task and its consumer.
const CHANNEL: usize = 256;

/// Reads the store's current and compacted revisions in one snapshot.
pub(crate) fn revisions(db: &Db) -> Result<(u64, u64)> {
    let rtx = db.begin_read().map_err(internal)?;
    mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)
}

/// Starts a watch of [`start`, `end`) from revision `from` (must be > 0).
pub(crate) fn start(
    db: Arc<Db>,
    hub: &broadcast::Sender<Arc<Batch>>,
    start: Vec<u8>,
    end: Vec<u8>,
    from: u64,
    ask: Option<Arc<Notify>>,
) -> Result<ProgressStream> {
    let rx = hub.subscribe();
    let (_, compact) = revisions(&db)?;
    if from < compact {
        return Err(Error::Compacted { requested: from as i64, compact_revision: compact as i64 });
    }
    let (tx, out) = mpsc::channel(CHANNEL);
    tokio::spawn(run(db, rx, start, end, from, ask, tx));
    Ok(Box::pin(ReceiverStream::new(out)))
}

/// One catch-up step: events from `from` on, read in one snapshot.
struct Step {
    events: Vec<Event>,
    scanned_to: u64,
    current: u64,
}

fn read_step(db: &Db, start: &[u8], end: &[u8], from: u64) -> Result<Step> {
    let rtx = db.begin_read().map_err(internal)?;
    let (current, compact) = mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)?;
    if from < compact {
        return Err(Error::Compacted { requested: from as i64, compact_revision: compact as i64 });
    }
    let log = rtx.open_table(LOG).map_err(internal)?;
    let (events, scanned_to) = mvcc::events_since(&log, start, end, from, current, compact, CATCH_UP_CHUNK)?;
    Ok(Step { events, scanned_to, current })
}

async fn run(
    db: Arc<Db>,
    mut rx: broadcast::Receiver<Arc<Batch>>,
    start: Vec<u8>,
    end: Vec<u8>,
    mut next: u64,
    ask: Option<Arc<Notify>>,
    tx: mpsc::Sender<Result<WatchItem>>,
) {
    // The revision a progress report was asked at and not yet given.
    let mut pending: Option<u64> = None;
    'catch_up: loop {
        // Replay the log until it has nothing newer than what we delivered.
        loop {
            let (db2, s, e) = (db.clone(), start.clone(), end.clone());
            let step = match tokio::task::spawn_blocking(move || read_step(&db2, &s, &e, next)).await {
                Ok(Ok(step)) => step,
                Ok(Err(err)) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                Err(join) => {
                    let _ = tx.send(Err(Error::Internal(format!("watch catch-up failed: {join}")))).await;
                    return;
                }
            };
            for revision in by_revision(step.events) {
                if tx.send(Ok(WatchItem::Revision(revision))).await.is_err() {
                    return;
                }
            }
            next = next.max(step.scanned_to + 1);
            if step.scanned_to >= step.current {
                break;
            }
        }
        // Follow the live broadcast.
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => return,
                msg = rx.recv() => msg,
                _ = asked(&ask) => {
                    match revisions(&db) {
                        Ok((current, _)) => pending = pending.max(Some(current)),
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                    if !report(&tx, &mut pending, next).await {
                        return;
                    }
                    continue;
                }
            };
            match msg {
                Ok(batch) => {
                    if batch.last_revision < next {
                        continue;
                    }
                    let wanted = batch
                        .events
                        .iter()
                        .filter(|ev| {
                            ev.revision() as u64 >= next && mvcc::in_range(ev.kv.key.as_bytes(), &start, &end)
                        })
                        .cloned()
                        .collect();
                    for revision in by_revision(wanted) {
                        if tx.send(Ok(WatchItem::Revision(revision))).await.is_err() {
                            return;
                        }
                    }
                    next = batch.last_revision + 1;
                    if !report(&tx, &mut pending, next).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, next, "embedded store: watcher lagged, catching up from the log");
                    continue 'catch_up;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(Err(Error::Unavailable("embedded store closed".into()))).await;
                    return;
                }
            }
        }
    }
}

/// Waits for a progress request (forever when the watch takes none).
async fn asked(ask: &Option<Arc<Notify>>) {
    match ask {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Reports progress if one is pending and everything up to it was followed (`next` is past it);
/// false when the consumer is gone.
async fn report(tx: &mpsc::Sender<Result<WatchItem>>, pending: &mut Option<u64>, next: u64) -> bool {
    match *pending {
        Some(p) if next > p => {
            *pending = None;
            tx.send(Ok(WatchItem::Progress((next - 1) as i64))).await.is_ok()
        }
        _ => true,
    }
}

/// Splits events in revision order into one vector per revision.
pub(crate) fn by_revision(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = Vec::new();
    for ev in events {
        match out.last_mut() {
            Some(group) if group.last().is_some_and(|last| last.revision() == ev.revision()) => group.push(ev),
            _ => out.push(vec![ev]),
        }
    }
    out
}
