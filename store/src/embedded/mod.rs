//! The embedded backend: a durable MVCC revision log in redb under `--data-dir`.
//!
//! - `record.rs`: the on-disk encoding of one log entry.
//! - `txn.rs`: etcd's transaction model, which every write goes through.
//! - `mvcc.rs`: the table layout, reads at a revision, writes, compaction.
//! - `writer.rs`: the single writer thread with group commit.
//! - `watch.rs`: watches that replay the log, then follow the live broadcast.
//! - `metrics.rs`: the etcd server's metrics that apply to this store.
//!
//! Reads open their own redb read transaction (a consistent snapshot) on the caller's task; writes
//! queue to the writer and are acknowledged only after a durable commit (fsync). Two background
//! tasks, owned by the store and aborted when its last handle goes, expire leases and compact
//! history (upstream's default: every 5 minutes, to the revision seen 5 minutes before).

mod db;
pub mod metrics;
mod mvcc;
mod record;
mod snapshot;
pub mod txn;
mod watch;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use self::db::Db;
use self::metrics::EmbeddedMetrics;
use self::mvcc::{internal, LATEST, LEASES, LEASE_KEYS, LOG, META};
use self::txn::{OpResult, RangeRequest, RangeResult, Txn, TxnOp, TxnResult};
use self::writer::{Batch, Request};
use crate::{
    prefix_end, Deleted, Error, KeyValue, ListOptions, ListResult, Result, RevisionStream, Store, StoreLimits,
};

pub use self::snapshot::{restore, snapshot_status, Snapshot, SnapshotError, SnapshotStatus};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "store.redb";

/// How the embedded store is opened.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub limits: StoreLimits,
    /// How often history is compacted; each pass compacts to the revision seen at the pass before.
    /// Zero turns automatic compaction off.
    pub compaction_interval: Duration,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            limits: StoreLimits::default(),
            compaction_interval: Duration::from_secs(300),
            lease_check_interval: Duration::from_millis(250),
        }
    }
}

/// The embedded store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Db>,
    requests: mpsc::Sender<Request>,
    hub: broadcast::Sender<Arc<Batch>>,
    limits: StoreLimits,
    path: PathBuf,
    tickers: Vec<JoinHandle<()>>,
    metrics: EmbeddedMetrics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tickers {
            t.abort();
        }
    }
}

/// Sizes of the store's tables, for tests, benchmarks and X-ray.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Entries in the revision log (history kept, including the live versions).
    pub log_entries: u64,
    /// Live keys.
    pub live_keys: u64,
    pub revision: i64,
    pub compact_revision: i64,
}

/// Lease details for etcd's LeaseTimeToLive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl: i64,
    pub remaining_ttl: i64,
    pub keys: Vec<String>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `cfg.data_dir`. Must run inside a tokio runtime.
    pub async fn open(cfg: EmbeddedConfig) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            Error::Unavailable(format!("cannot create data dir {}: {e}", cfg.data_dir.display()))
        })?;
        let path = cfg.data_dir.join(DB_FILE);
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || init(&p))
            .await
            .map_err(|e| Error::Internal(format!("opening the store panicked: {e}")))??;
        let db = Arc::new(Db::new(db, &path));
        let (requests, rx) = mpsc::channel(4096);
        let (hub, _) = broadcast::channel(1024);
        let metrics = EmbeddedMetrics::new(path.clone());
        {
            let (db, hub, metrics) = (db.clone(), hub.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("kplane-store-writer".into())
                .spawn(move || writer::run(db, rx, hub, metrics))
                .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        }
        let mut tickers = vec![tokio::spawn(lease_ticker(requests.clone(), cfg.lease_check_interval))];
        if !cfg.compaction_interval.is_zero() {
            tickers.push(tokio::spawn(compaction_ticker(
                db.clone(),
                requests.clone(),
                cfg.compaction_interval,
            )));
        }
        Ok(EmbeddedStore {
            inner: Arc::new(Inner { db, requests, hub, limits: cfg.limits, path, tickers, metrics }),
        })
    }

    /// Stops the writer after what is queued and waits for it. Later writes fail with Unavailable.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.requests.send(Request::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        for t in &self.inner.tickers {
            t.abort();
        }
    }

    /// The store's limits on writes.
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// The store's metrics (etcd's names), to register in a registry or serve alone.
    pub fn metrics(&self) -> &EmbeddedMetrics {
        &self.inner.metrics
    }

    /// Size of the database file in bytes (etcd's `dbSize`).
    pub fn db_size(&self) -> i64 {
        std::fs::metadata(&self.inner.path).map(|m| m.len() as i64).unwrap_or(0)
    }

    /// The current and compacted revisions.
    pub fn revisions(&self) -> Result<(i64, i64)> {
        let (cur, compact) = watch::revisions(&self.inner.db)?;
        Ok((cur as i64, compact as i64))
    }

    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .requests
            .send(make(tx))
            .await
            .map_err(|_| Error::Unavailable("embedded store writer has stopped".into()))?;
        rx.await.map_err(|_| Error::Unavailable("embedded store writer has stopped".into()))?
    }

    /// Runs an etcd-style transaction. Every put is checked against the store's limits first, so a
    /// refused transaction writes nothing.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        for op in txn.success.iter().chain(&txn.failure) {
            if let TxnOp::Put { key, value, .. } = op {
                self.inner.limits.check_write(key, value)?;
            }
        }
        self.request(|tx| Request::Txn(txn, tx)).await
    }

    /// Runs a synchronous read (a redb scan) on tokio's blocking pool, off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&EmbeddedStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| Error::Internal(format!("a store read failed: {e}")))?
    }

    /// A [`Store::list`] page; `skip_count` leaves `remaining` at 0 (see `list_without_count`).
    async fn list_range(&self, opts: ListOptions, skip_count: bool) -> Result<ListResult> {
        let start = match &opts.continue_after {
            Some(after) => {
                let mut k = after.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => opts.prefix.as_bytes().to_vec(),
        };
        let mut end = prefix_end(opts.prefix.as_bytes());
        if end.is_empty() {
            end = vec![0];
        }
        let req = RangeRequest {
            key: start,
            range_end: end,
            revision: opts.revision,
            limit: opts.limit,
            skip_count,
            ..Default::default()
        };
        let r = self.blocking(move |store| store.range(&req)).await?;
        let remaining = if skip_count { 0 } else { r.count - r.kvs.len() as i64 };
        Ok(ListResult { items: r.kvs, revision: r.revision, more: r.more, remaining })
    }

    /// Reads a key or range at a revision, as etcd's Range. Synchronous (a redb scan): async
    /// callers run it on the blocking pool, as `list` and the etcd endpoint do.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResult> {
        self.inner.metrics.range();
        let rtx = self.inner.db.begin_read().map_err(internal)?;
        let (current, compact) = mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)?;
        let latest = rtx.open_table(LATEST).map_err(internal)?;
        let log = rtx.open_table(LOG).map_err(internal)?;
        mvcc::range(&latest, &log, req, current, compact)
    }

    /// Watches [`key`, `range_end`) (etcd conventions) from `from` (0: from the next revision), one
    /// whole revision per item.
    pub fn watch_range(&self, key: Vec<u8>, range_end: Vec<u8>, from: i64) -> Result<RevisionStream> {
        Ok(crate::revisions_only(self.watch_range_progress(key, range_end, from, None)?))
    }

    /// [`EmbeddedStore::watch_range`], reporting progress whenever `ask` is notified.
    pub fn watch_range_progress(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        from: i64,
        ask: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<crate::ProgressStream> {
        let from = if from <= 0 { watch::revisions(&self.inner.db)?.0 + 1 } else { from as u64 };
        watch::start(self.inner.db.clone(), &self.inner.hub, key, range_end, from, ask)
    }

    /// Grants a lease; `id` 0 picks one. Returns the id and TTL.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64)> {
        self.request(|reply| Request::LeaseGrant { id, ttl, reply }).await
    }

    /// The lease's TTLs and, if asked, its keys.
    pub fn lease_info(&self, id: i64, with_keys: bool) -> Result<LeaseInfo> {
        let rtx = self.inner.db.begin_read().map_err(internal)?;
        let leases = rtx.open_table(LEASES).map_err(internal)?;
        let Some((ttl, expires)) = leases.get(id).map_err(internal)?.map(|g| g.value()) else {
            return Err(Error::LeaseNotFound { id });
        };
        let remaining = (expires.saturating_sub(writer::now_ms()) / 1000) as i64;
        let mut keys = Vec::new();
        if with_keys {
            let lk = rtx.open_table(LEASE_KEYS).map_err(internal)?;
            for entry in lk.range((id, &[][..])..).map_err(internal)? {
                let (guard, _) = entry.map_err(internal)?;
                let (lease, key) = guard.value();
                if lease != id {
                    break;
                }
                keys.push(String::from_utf8_lossy(key).into_owned());
            }
        }
        Ok(LeaseInfo { id, granted_ttl: ttl, remaining_ttl: remaining, keys })
    }

    /// Counts of the store's tables.
    pub fn stats(&self) -> Result<Stats> {
        let rtx = self.inner.db.begin_read().map_err(internal)?;
        let log = rtx.open_table(LOG).map_err(internal)?;
        let latest = rtx.open_table(LATEST).map_err(internal)?;
        let (revision, compact_revision) = self.revisions()?;
        Ok(Stats {
            log_entries: log.len().map_err(internal)?,
            live_keys: latest.len().map_err(internal)?,
            revision,
            compact_revision,
        })
    }

    /// Every lease id.
    pub fn lease_ids(&self) -> Result<Vec<i64>> {
        let rtx = self.inner.db.begin_read().map_err(internal)?;
        let leases = rtx.open_table(LEASES).map_err(internal)?;
        let mut ids = Vec::new();
        for entry in leases.iter().map_err(internal)? {
            ids.push(entry.map_err(internal)?.0.value());
        }
        Ok(ids)
    }
}

/// Opens the database file, creates the tables and, on first start, revision 1 (etcd starts there).
/// Leases get their full TTL back, as etcd does after a restart.
/// Opens (or creates) the database file, refusing a file that exists but is empty or fails redb's
/// integrity check (every page's checksum, on every open): starting on it could serve a silently
/// empty or wrong cluster. The error names the file and what to do.
fn init(path: &std::path::Path) -> Result<Database> {
    let refuse = |what: String| {
        Error::Internal(format!(
            "the store file {} {what}: refusing to start on it. Restore a backup (`kplane snapshot restore`) into a new \
             --data-dir, or move the file away to start an empty cluster",
            path.display()
        ))
    };
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() == 0 {
            return Err(refuse("is empty (0 bytes), which a store never is".into()));
        }
    }
    // Checked on every open, not only after a crash: a file altered outside kplane then fails to open
    // with `Corrupted` (a plain open may panic on it). It reads the whole file once at startup.
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .set_cache_size(db::CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() != std::io::ErrorKind::InvalidData =>
            {
                Error::Unavailable(format!("cannot open {}: {io}", path.display()))
            }
            redb::DatabaseError::DatabaseAlreadyOpen => {
                Error::Unavailable(format!("cannot open {}: another process has it open", path.display()))
            }
            e => refuse(format!("cannot be opened ({e}); it may be corrupt")),
        })?;

    let wtx = db.begin_write().map_err(internal)?;
    {
        let mut meta = wtx.open_table(META).map_err(internal)?;
        if meta.get(mvcc::META_REVISION).map_err(internal)?.is_none() {
            meta.insert(mvcc::META_REVISION, 1).map_err(internal)?;
        }
        wtx.open_table(LOG).map_err(internal)?;
        wtx.open_table(LATEST).map_err(internal)?;
        wtx.open_table(LEASE_KEYS).map_err(internal)?;
        let mut leases = wtx.open_table(LEASES).map_err(internal)?;
        let mut all = Vec::new();
        for entry in leases.iter().map_err(internal)? {
            let (id, v) = entry.map_err(internal)?;
            all.push((id.value(), v.value().0));
        }
        let now = writer::now_ms();
        for (id, ttl) in all {
            leases.insert(id, (ttl, writer::expiry_at(now, ttl))).map_err(internal)?;
        }
    }
    wtx.commit().map_err(internal)?;
    Ok(db)
}

async fn lease_ticker(requests: mpsc::Sender<Request>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if requests.send(Request::ExpireLeases).await.is_err() {
            return;
        }
    }
}

/// Upstream kube-apiserver's compactor: every interval, compact to the revision it saw at the
/// previous tick, so one interval of history always stays.
async fn compaction_ticker(db: Arc<Db>, requests: mpsc::Sender<Request>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut seen = 0u64;
    loop {
        tick.tick().await;
        let (current, compact) = match watch::revisions(&db) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "embedded store: compactor cannot read revisions");
                continue;
            }
        };
        if seen > compact {
            let (tx, rx) = oneshot::channel();
            if requests.send(Request::Compact(seen as i64, tx)).await.is_err() {
                return;
            }
            match rx.await {
                Ok(Ok(())) => tracing::info!(revision = seen, "embedded store: compacted"),
                Ok(Err(e)) => tracing::debug!(error = %e, "embedded store: compaction skipped"),
                Err(_) => return,
            }
        }
        seen = current;
    }
}

fn single_put(key: &str, value: Vec<u8>, lease: i64) -> TxnOp {
    TxnOp::Put { key: key.to_string(), value, lease }
}

fn single_delete(key: &str) -> TxnOp {
    TxnOp::Delete { key: key.as_bytes().to_vec(), range_end: Vec::new() }
}

/// The else-branch get of a failed conditional write: NotFound when the key is gone, else Conflict.
fn conflict_or_missing(key: &str, expected: i64, r: &TxnResult) -> Error {
    match r.results.first() {
        Some(OpResult::Range(rr)) if !rr.kvs.is_empty() => {
            Error::Conflict { key: key.to_string(), expected, actual: rr.kvs[0].mod_revision }
        }
        _ => Error::NotFound { key: key.to_string() },
    }
}

fn put_result(r: TxnResult) -> Result<KeyValue> {
    match r.results.into_iter().next() {
        Some(OpResult::Put { kv, .. }) => Ok(kv),
        other => Err(Error::Internal(format!("unexpected transaction result {other:?}"))),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> Result<KeyValue> {
        let key = key.to_string();
        self.blocking(move |store| {
            store.inner.metrics.range();
            let rtx = store.inner.db.begin_read().map_err(internal)?;
            let latest = rtx.open_table(LATEST).map_err(internal)?;
            let log = rtx.open_table(LOG).map_err(internal)?;
            mvcc::get_latest(&latest, &log, key.as_bytes())?.ok_or(Error::NotFound { key })
        })
        .await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        self.list_range(opts, false).await
    }

    async fn list_without_count(&self, opts: ListOptions) -> Result<ListResult> {
        self.list_range(opts, true).await
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<KeyValue> {
        let r = self.txn(Txn::if_mod_revision(key, 0, single_put(key, value, lease))).await?;
        if !r.succeeded {
            return Err(Error::AlreadyExists { key: key.to_string() });
        }
        put_result(r)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64, lease: i64) -> Result<KeyValue> {
        if expected <= 0 {
            return Err(Error::Conflict { key: key.to_string(), expected, actual: 0 });
        }
        let r = self.txn(Txn::if_mod_revision(key, expected, single_put(key, value, lease))).await?;
        if !r.succeeded {
            return Err(conflict_or_missing(key, expected, &r));
        }
        put_result(r)
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<Deleted> {
        let txn = match expected {
            Some(rev) => Txn::if_mod_revision(key, rev, single_delete(key)),
            None => Txn { success: vec![single_delete(key)], ..Default::default() },
        };
        let r = self.txn(txn).await?;
        if !r.succeeded {
            return Err(conflict_or_missing(key, expected.unwrap_or(0), &r));
        }
        match r.results.into_iter().next() {
            Some(OpResult::Delete { deleted }) => match deleted.into_iter().next() {
                Some(prev) => Ok(Deleted { prev, revision: r.revision }),
                None => Err(Error::NotFound { key: key.to_string() }),
            },
            other => Err(Error::Internal(format!("unexpected transaction result {other:?}"))),
        }
    }

    async fn watch_revisions(
        &self,
        prefix: &str,
        from_revision: i64,
        _prev_kv: bool,
    ) -> Result<RevisionStream> {
        let mut end = prefix_end(prefix.as_bytes());
        if end.is_empty() {
            end = vec![0];
        }
        self.watch_range(prefix.as_bytes().to_vec(), end, from_revision)
    }

    async fn watch_progress(
        &self,
        prefix: &str,
        from_revision: i64,
        ask: Arc<tokio::sync::Notify>,
    ) -> Result<Option<crate::ProgressStream>> {
        let mut end = prefix_end(prefix.as_bytes());
        if end.is_empty() {
            end = vec![0];
        }
        self.watch_range_progress(prefix.as_bytes().to_vec(), end, from_revision, Some(ask)).map(Some)
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.revisions()?.0)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.request(|tx| Request::Compact(revision, tx)).await
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64> {
        Ok(self.lease_grant(0, ttl_seconds).await?.0)
    }

    async fn revoke_lease(&self, id: i64) -> Result<()> {
        self.request(|tx| Request::LeaseRevoke(id, tx)).await
    }

    async fn keep_alive(&self, id: i64) -> Result<i64> {
        self.request(|tx| Request::LeaseKeepAlive(id, tx)).await
    }
}
