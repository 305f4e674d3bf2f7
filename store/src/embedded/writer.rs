//! The single writer: one OS thread owns every redb write transaction and commits requests in
//! groups.
//!
//! Why one thread and group commit: redb allows one write transaction at a time, and a durable
//! commit costs an fsync. Taking every request queued while the previous commit ran and committing
//! them together turns N fsyncs into one, so throughput grows with concurrency while every request is
//! still acknowledged only after its data is on disk. Each request inside a group still gets its own
//! revision, and one that fails its checks fails alone.
//!
//! Why an OS thread and not a tokio task: redb is synchronous and a commit blocks on fsync.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, ReadableTableMetadata};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::db::Db;
use super::metrics::{EmbeddedMetrics, Tally};
use super::mvcc::{self, internal, Writer, LATEST, LEASES, LEASE_KEYS, LOG, META};
use super::txn::{Txn, TxnResult};
use crate::{Error, Event, Result};

/// Most requests committed in one group.
const MAX_GROUP: usize = 512;

/// How long a defragmentation waits for open read transactions to end.
const DEFRAG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One commit's events, published to watchers after the commit is durable.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The store's revision after the commit; every revision up to it has been published.
    pub last_revision: u64,
    pub events: Vec<Event>,
}

pub(crate) enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResult>>),
    Compact(i64, oneshot::Sender<Result<()>>),
    LeaseGrant {
        id: i64,
        ttl: i64,
        reply: oneshot::Sender<Result<(i64, i64)>>,
    },
    LeaseRevoke(i64, oneshot::Sender<Result<()>>),
    LeaseKeepAlive(i64, oneshot::Sender<Result<i64>>),
    /// Revoke every lease whose expiry has passed. Sent by the lease ticker; no answer.
    ExpireLeases,
    /// Finish pending physical compaction, then defragment the file (etcd's Defragment). Answers
    /// whether redb moved anything.
    Defragment(oneshot::Sender<Result<bool>>),
    /// Finish what is queued, close the database, then answer.
    Shutdown(oneshot::Sender<()>),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A reply waiting for the commit: sent with the result if the commit succeeds, with the commit's
/// error otherwise.
enum Pending {
    Txn(oneshot::Sender<Result<TxnResult>>, Result<TxnResult>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
    Grant(oneshot::Sender<Result<(i64, i64)>>, Result<(i64, i64)>),
    KeepAlive(oneshot::Sender<Result<i64>>, Result<i64>),
}

impl Pending {
    fn send(self, commit: &Result<()>) {
        fn pick<T>(r: Result<T>, commit: &Result<()>) -> Result<T> {
            match commit {
                Ok(()) => r,
                Err(e) => Err(Error::Internal(format!("commit failed, nothing was written: {e}"))),
            }
        }
        // A dropped receiver means the caller gave up; the write stands either way.
        match self {
            Pending::Txn(tx, r) => drop(tx.send(pick(r, commit))),
            Pending::Unit(tx, r) => drop(tx.send(pick(r, commit))),
            Pending::Grant(tx, r) => drop(tx.send(pick(r, commit))),
            Pending::KeepAlive(tx, r) => drop(tx.send(pick(r, commit))),
        }
    }
}

/// Runs the writer until every sender is gone or a shutdown request arrives.
pub(crate) fn run(
    db: Arc<Db>,
    mut rx: mpsc::Receiver<Request>,
    hub: broadcast::Sender<Arc<Batch>>,
    metrics: EmbeddedMetrics,
) {
    match state(&db) {
        Ok((keys, revision, compact)) => metrics.set_state(keys, revision, compact),
        Err(e) => tracing::warn!(error = %e, "embedded store: cannot read its state for the metrics"),
    }
    measure_in_use(&db, &metrics);
    let committer = Committer { db: &db, hub: &hub, metrics: &metrics };
    let mut compaction_pending = true;
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    // Set when a commit failed: before the next one, see whether redb needs reopening (after an I/O
    // error such as a full disk it refuses every write until then).
    let mut suspect = false;
    loop {
        let mut group = Vec::new();
        if !compaction_pending {
            match rx.blocking_recv() {
                Some(r) => group.push(r),
                None => break,
            }
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if group.is_empty() && !compaction_pending {
                        return;
                    }
                    break;
                }
            }
        }
        if let Some(pos) = group.iter().position(|r| matches!(r, Request::Shutdown(_))) {
            for r in group.drain(pos..) {
                match r {
                    Request::Shutdown(tx) => shutdown = Some(tx),
                    other => reject(other),
                }
            }
        }
        // Defragmenting is not a write: it runs between commits, after the group's writes.
        let (defrags, mut group): (Vec<Request>, Vec<Request>) =
            group.into_iter().partition(|r| matches!(r, Request::Defragment(_)));
        if suspect && !group.is_empty() {
            if db.needs_recovery() {
                if let Err(e) = db.recover() {
                    tracing::error!(error = %e, "embedded store: writes refused");
                    for r in group.drain(..) {
                        fail(r, &e);
                    }
                } else {
                    suspect = false;
                }
            } else {
                suspect = false;
            }
        }
        let (pending, failed) = committer.commit_logged(group);
        compaction_pending = pending;
        suspect |= failed;
        if !defrags.is_empty() {
            // What compaction has logically dropped must be physically gone before the file can
            // shrink: finish it first, one bounded step per commit as usual.
            while compaction_pending {
                compaction_pending = committer.commit_logged(Vec::new()).0;
            }
            let started = std::time::Instant::now();
            let result = db.defragment(DEFRAG_WAIT);
            measure_in_use(&db, &metrics);
            tracing::info!(elapsed = ?started.elapsed(), ok = result.is_ok(), "embedded store: defragmented");
            for r in defrags {
                if let Request::Defragment(tx) = r {
                    let _ = tx.send(match &result {
                        Ok(changed) => Ok(*changed),
                        Err(Error::Unavailable(m)) => Err(Error::Unavailable(m.clone())),
                        Err(e) => Err(Error::Internal(e.to_string())),
                    });
                }
            }
        }
        if shutdown.is_some() {
            break;
        }
    }
    // Readers may still hold the database; it closes when the last handle goes.
    drop(db);
    drop(hub);
    if let Some(tx) = shutdown {
        let _ = tx.send(());
    }
}

/// Live keys, revision and compacted revision, as the metrics report them.
fn state(db: &Db) -> Result<(u64, u64, u64)> {
    let rtx = db.begin_read().map_err(internal)?;
    let (revision, compact) = mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)?;
    let keys = rtx.open_table(LATEST).map_err(internal)?.len().map_err(internal)?;
    Ok((keys, revision, compact))
}

/// `etcd_mvcc_db_total_size_in_use_in_bytes` now, in a write transaction that writes nothing.
fn measure_in_use(db: &Db, metrics: &EmbeddedMetrics) {
    match db.begin_write() {
        Ok(wtx) => {
            metrics.measure_in_use(&wtx);
            let _ = wtx.abort();
        }
        Err(e) => {
            metrics.in_use_stale();
            tracing::debug!(error = %e, "embedded store: cannot measure the pages in use yet");
        }
    }
}

/// What a commit needs besides its group: the database, the watchers' broadcast, the metrics.
struct Committer<'a> {
    db: &'a Db,
    hub: &'a broadcast::Sender<Arc<Batch>>,
    metrics: &'a EmbeddedMetrics,
}

impl Committer<'_> {
    /// Commits a group; logs a failed commit (every request in it has had its answer). Returns whether
    /// physical compaction still has work, and whether the commit failed.
    fn commit_logged(&self, group: Vec<Request>) -> (bool, bool) {
        match commit_group(self, group) {
            Ok(pending) => (pending, false),
            Err(e) => {
                tracing::error!(error = %e, "embedded store: commit failed");
                (false, true)
            }
        }
    }
}

/// Answers a request that cannot be committed with `err` (nothing of it was written).
fn fail(r: Request, err: &Error) {
    let err = || match err {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        e => Error::Internal(format!(
            "nothing was written: {}",
            e.to_string().trim_start_matches("internal store error: ")
        )),
    };
    match r {
        Request::Txn(_, tx) => drop(tx.send(Err(err()))),
        Request::Compact(_, tx) | Request::LeaseRevoke(_, tx) => drop(tx.send(Err(err()))),
        Request::LeaseGrant { reply, .. } => drop(reply.send(Err(err()))),
        Request::LeaseKeepAlive(_, tx) => drop(tx.send(Err(err()))),
        Request::ExpireLeases => {}
        Request::Defragment(tx) => drop(tx.send(Err(err()))),
        Request::Shutdown(tx) => drop(tx.send(())),
    }
}

/// Answers a request that arrived after shutdown.
fn reject(r: Request) {
    let closed = || Error::Unavailable("embedded store is shutting down".into());
    match r {
        Request::Txn(_, tx) => drop(tx.send(Err(closed()))),
        Request::Compact(_, tx) | Request::LeaseRevoke(_, tx) => drop(tx.send(Err(closed()))),
        Request::LeaseGrant { reply, .. } => drop(reply.send(Err(closed()))),
        Request::LeaseKeepAlive(_, tx) => drop(tx.send(Err(closed()))),
        Request::ExpireLeases => {}
        Request::Defragment(tx) => drop(tx.send(Err(closed()))),
        Request::Shutdown(tx) => drop(tx.send(())),
    }
}

/// Applies a group in one redb transaction and commits it. Returns whether physical compaction
/// still has work.
fn commit_group(c: &Committer<'_>, group: Vec<Request>) -> Result<bool> {
    let wtx = match c.db.begin_write() {
        Ok(wtx) => wtx,
        Err(e) => {
            // Every request gets its answer: none was written.
            let err = internal(format!("cannot begin a write: {e}"));
            for r in group {
                fail(r, &err);
            }
            return Err(err);
        }
    };
    let mut replies = Vec::with_capacity(group.len());
    let mut tally = Tally::default();
    let mut live_keys = 0;
    // Whether anything may have changed. A group of lease-expiry ticks that found nothing to expire,
    // with no compaction step to do, is not committed: an idle store does not fsync.
    let mut wrote = false;
    let outcome = {
        let meta_table = wtx.open_table(META).map_err(internal)?;
        let (revision, compact) = mvcc::meta_revisions(&meta_table)?;
        let mut scanned = mvcc::meta_value(&meta_table, mvcc::META_COMPACT_SCANNED)?;
        drop(meta_table);
        let mut w = Writer {
            log: wtx.open_table(LOG).map_err(internal)?,
            latest: wtx.open_table(LATEST).map_err(internal)?,
            leases: wtx.open_table(LEASES).map_err(internal)?,
            lease_keys: wtx.open_table(LEASE_KEYS).map_err(internal)?,
            revision,
            compact,
            events: Vec::new(),
        };
        let mut fatal = None;
        for req in group {
            match apply(&mut w, req, &mut replies, &mut tally) {
                Ok(changed) => wrote |= changed,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if fatal.is_none() && scanned < w.compact {
            wrote = true;
            match w.compact_step(scanned) {
                Ok(s) => scanned = s,
                Err(e) => fatal = Some(e),
            }
        }
        if fatal.is_none() {
            match w.latest.len() {
                Ok(n) => live_keys = n,
                Err(e) => fatal = Some(internal(e)),
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok((w.revision, w.compact, scanned, std::mem::take(&mut w.events))),
        }
    };
    let (revision, compact, scanned, events) = match outcome {
        Ok(_) if !wrote => {
            let _ = wtx.abort();
            return Ok(false);
        }
        Ok(v) => v,
        Err(e) => {
            // Something failed after writing began: drop the whole group's writes.
            let _ = wtx.abort();
            let commit = Err(e);
            for p in replies {
                p.send(&commit);
            }
            return commit.map(|_| false);
        }
    };
    let commit = (|| -> Result<()> {
        let mut meta = wtx.open_table(META).map_err(internal)?;
        meta.insert(mvcc::META_REVISION, revision).map_err(internal)?;
        meta.insert(mvcc::META_COMPACT, compact).map_err(internal)?;
        meta.insert(mvcc::META_COMPACT_SCANNED, scanned).map_err(internal)?;
        drop(meta);
        if c.metrics.in_use_due() {
            c.metrics.measure_in_use(&wtx);
        }
        let started = std::time::Instant::now();
        let done = wtx.commit().map_err(internal);
        c.metrics.observe_commit(started.elapsed());
        done
    })();
    if commit.is_ok() {
        c.metrics.add(&tally);
        c.metrics.set_state(live_keys, revision, compact);
    }
    if commit.is_ok() && !events.is_empty() {
        // No receivers is fine: nobody is watching.
        let _ = c.hub.send(Arc::new(Batch { last_revision: revision, events }));
    }
    for p in replies {
        p.send(&commit);
    }
    commit.map(|()| scanned < compact)
}

/// Applies one request inside the group. Returns an error only for a fault that poisons the redb
/// transaction; a request's own failure goes into its reply. Otherwise returns whether the request
/// may have written (only a lease-expiry tick that found nothing expired has not).
fn apply(w: &mut Writer<'_>, req: Request, replies: &mut Vec<Pending>, tally: &mut Tally) -> Result<bool> {
    match req {
        Request::Txn(txn, tx) => match w.prepare(&txn) {
            Err(e) => replies.push(Pending::Txn(tx, Err(e))),
            Ok(succeeded) => match w.execute(&txn, succeeded) {
                Ok(r) => {
                    tally.txn(&txn, succeeded);
                    replies.push(Pending::Txn(tx, Ok(r)))
                }
                Err(e) => {
                    replies.push(Pending::Txn(tx, Err(Error::Internal(e.to_string()))));
                    return Err(e);
                }
            },
        },
        Request::Compact(rev, tx) => {
            let r = if rev <= w.compact as i64 {
                Err(Error::Compacted { requested: rev, compact_revision: w.compact as i64 })
            } else if rev > w.revision as i64 {
                Err(Error::FutureRevision { requested: rev, current: w.revision as i64 })
            } else {
                w.compact = rev as u64;
                Ok(())
            };
            replies.push(Pending::Unit(tx, r));
        }
        Request::LeaseGrant { id, ttl, reply } => {
            let r = grant(w, id, ttl);
            replies.push(Pending::Grant(reply, r));
        }
        Request::LeaseRevoke(id, tx) => {
            let before = w.events.len();
            let r = w.revoke_lease(id);
            tally.lease_deletes(w.events.len() - before);
            if let Err(e @ Error::Internal(_)) = r {
                replies.push(Pending::Unit(tx, Err(Error::Internal(e.to_string()))));
                return Err(e);
            }
            replies.push(Pending::Unit(tx, r));
        }
        Request::LeaseKeepAlive(id, tx) => {
            let r = keep_alive(w, id);
            replies.push(Pending::KeepAlive(tx, r));
        }
        Request::ExpireLeases => {
            let now = now_ms();
            let mut expired = Vec::new();
            for entry in w.leases.iter().map_err(internal)? {
                let (id, v) = entry.map_err(internal)?;
                if v.value().1 <= now {
                    expired.push(id.value());
                }
            }
            let any = !expired.is_empty();
            for id in expired {
                tracing::debug!(lease = id, "embedded store: lease expired");
                let before = w.events.len();
                w.revoke_lease(id)?;
                tally.lease_deletes(w.events.len() - before);
            }
            return Ok(any);
        }
        // Taken out of the group by `run`; answered here only if that ever changes.
        Request::Defragment(tx) => {
            drop(tx.send(Err(Error::Internal("defragment inside a write group".into()))))
        }
        Request::Shutdown(tx) => drop(tx.send(())),
    }
    Ok(true)
}

fn grant(w: &mut Writer<'_>, id: i64, ttl: i64) -> Result<(i64, i64)> {
    if id < 0 {
        return Err(Error::Unsupported(format!("lease id {id} is negative")));
    }
    if ttl > crate::MAX_LEASE_TTL {
        return Err(Error::Unsupported(format!(
            "lease TTL {ttl} s is over etcd's maximum of {} s",
            crate::MAX_LEASE_TTL
        )));
    }
    // etcd's minimum TTL is a few seconds; kplane accepts down to 1 s so tests stay fast.
    let ttl = ttl.max(1);
    let id = if id != 0 {
        if w.leases.get(id).map_err(internal)?.is_some() {
            return Err(Error::Unsupported(format!("lease {id} already exists")));
        }
        id
    } else {
        // Like etcd, ids are random-looking positive numbers; retry the rare collision.
        let mut candidate =
            (now_ms() as i64).wrapping_mul(0x9E37_79B9).wrapping_add(w.revision as i64) & (i64::MAX >> 1);
        while candidate == 0 || w.leases.get(candidate).map_err(internal)?.is_some() {
            candidate = candidate.wrapping_add(0x5851_F42D) & (i64::MAX >> 1);
        }
        candidate
    };
    w.leases.insert(id, (ttl, expiry(ttl))).map_err(internal)?;
    Ok((id, ttl))
}

fn keep_alive(w: &mut Writer<'_>, id: i64) -> Result<i64> {
    let ttl = match w.leases.get(id).map_err(internal)? {
        Some(v) => v.value().0,
        None => return Err(Error::LeaseNotFound { id }),
    };
    w.leases.insert(id, (ttl, expiry(ttl))).map_err(internal)?;
    Ok(ttl)
}

/// When a lease granted or renewed now for `ttl` seconds expires, in Unix milliseconds.
fn expiry(ttl: i64) -> u64 {
    expiry_at(now_ms(), ttl)
}

/// When a lease of `ttl` seconds from `now` (Unix milliseconds) expires; saturated, so no TTL (one
/// from a snapshot or an older store file included) can overflow.
pub(crate) fn expiry_at(now: u64, ttl: i64) -> u64 {
    now.saturating_add(u64::try_from(ttl).unwrap_or(0).saturating_mul(1000))
}
