//! The embedded store's metrics, under the etcd 3.4 server's own names, types and buckets
//! (`mvcc/metrics.go`, `wal/metrics.go`, `mvcc/backend/metrics.go`, `etcdserver/metrics.go`), so
//! dashboards and alerts written for etcd read kplane's store as they read an etcd member.
//!
//! - `etcd_disk_wal_fsync_duration_seconds` and `etcd_disk_backend_commit_duration_seconds`:
//!   the store has no separate WAL; its one durable write is the writer's redb commit (pages written,
//!   then fsync), which is what both of etcd's histograms time, so each commit is observed in both.
//! - `etcd_mvcc_put_total`, `etcd_mvcc_delete_total`, `etcd_mvcc_range_total`, `etcd_mvcc_txn_total`:
//!   counted as etcd 3.4 counts them (`mvcc/metrics_txn.go`): every put op, every delete op (a lease
//!   revocation deletes its keys one op each), every range, and a transaction's compares as ranges
//!   (etcd evaluates them as range reads); a transaction is counted in `txn_total` when the branch it
//!   ran has more than one operation (a read-only transaction: compares and operations together).
//!   Writes are counted once committed.
//! - `etcd_debugging_mvcc_keys_total` (live keys), `etcd_debugging_mvcc_current_revision`,
//!   `etcd_debugging_mvcc_compact_revision`: set by the writer after each commit.
//! - `etcd_mvcc_db_total_size_in_bytes`: the size of `store.redb`, read at each scrape (etcd's is a
//!   gauge function too).
//! - `etcd_mvcc_db_total_size_in_use_in_bytes`: etcd's is the file's size less its free pages; here
//!   redb's allocated pages times the page size (`WriteTransaction::stats`), measured by the writer
//!   at open, after a defragmentation, and before a commit when due. redb's stats walk every table's
//!   pages, so a measure is due only after 100 times as long as the last one took (at least 5 s):
//!   the figure may lag the writes by that long, costing the writer at most 1% of its time.
//! - `etcd_server_has_leader`, `etcd_server_is_leader`: 1; a single member is always its own leader.
//!
//! Not served: the raft, network and gRPC families a one-member store without raft has nothing to
//! report for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::txn::{Txn, TxnOp};

/// The OpenMetrics text format's content type (what [`EmbeddedMetrics::encode`] produces).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// etcd's buckets for `wal_fsync_duration_seconds` and `backend_commit_duration_seconds`:
/// `ExponentialBuckets(0.001, 2, 14)`, 1 ms to 8.192 s.
fn disk_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// The embedded store's metrics. Cheap to clone; every clone is the same set. Register them in a
/// registry with [`register`](Self::register), or encode them alone with [`encode`](Self::encode)
/// (the etcd endpoint's own `/metrics`).
#[derive(Clone, Debug)]
pub struct EmbeddedMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    wal_fsync: Histogram,
    backend_commit: Histogram,
    puts: Counter,
    deletes: Counter,
    ranges: Counter,
    txns: Counter,
    keys: Gauge,
    current_revision: Gauge,
    compact_revision: Gauge,
    db_size: DbSize,
    in_use: Gauge,
    /// When the next in-use measure is due (None: now).
    in_use_due: Mutex<Option<Instant>>,
}

/// `etcd_mvcc_db_total_size_in_bytes`, read from the file at each scrape.
#[derive(Clone, Debug)]
struct DbSize {
    path: PathBuf,
}

impl Collector for DbSize {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // A file that cannot be read (being replaced by a restore) reports 0, as etcd's does before
        // its backend is open.
        let size = std::fs::metadata(&self.path).map(|m| m.len() as i64).unwrap_or(0);
        let gauge = ConstGauge::new(size);
        let metric = encoder.encode_descriptor(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// What one write group did, added to the counters once it is committed.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    puts: u64,
    deletes: u64,
    ranges: u64,
    txns: u64,
}

impl Tally {
    /// A transaction that ran its `succeeded` branch.
    pub fn txn(&mut self, txn: &Txn, succeeded: bool) {
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let writes = txn.success.iter().chain(&txn.failure).any(|op| !matches!(op, TxnOp::Range(_)));
        self.ranges += txn.compares.len() as u64;
        for op in ops {
            match op {
                TxnOp::Range(_) => self.ranges += 1,
                TxnOp::Put { .. } => self.puts += 1,
                TxnOp::Delete { .. } => self.deletes += 1,
            }
        }
        // etcd evaluates a writing transaction's compares in a read transaction of their own, then
        // runs the branch in a write transaction; a read-only one does both in one.
        let counted = if writes { ops.len() } else { ops.len() + txn.compares.len() };
        if counted > 1 {
            self.txns += 1;
        }
    }

    /// `n` keys deleted by a lease revocation (one delete op each, as etcd's lessor issues them).
    pub fn lease_deletes(&mut self, n: usize) {
        self.deletes += n as u64;
    }
}

impl EmbeddedMetrics {
    pub(crate) fn new(db_file: PathBuf) -> EmbeddedMetrics {
        EmbeddedMetrics {
            inner: Arc::new(Inner {
                wal_fsync: disk_histogram(),
                backend_commit: disk_histogram(),
                puts: Counter::default(),
                deletes: Counter::default(),
                ranges: Counter::default(),
                txns: Counter::default(),
                keys: Gauge::default(),
                current_revision: Gauge::default(),
                compact_revision: Gauge::default(),
                db_size: DbSize { path: db_file },
                in_use: Gauge::default(),
                in_use_due: Mutex::new(None),
            }),
        }
    }

    /// A durable commit that took `elapsed`.
    pub(crate) fn observe_commit(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.inner.wal_fsync.observe(secs);
        self.inner.backend_commit.observe(secs);
    }

    /// The counts of a committed group.
    pub(crate) fn add(&self, t: &Tally) {
        self.inner.puts.inc_by(t.puts);
        self.inner.deletes.inc_by(t.deletes);
        self.inner.ranges.inc_by(t.ranges);
        self.inner.txns.inc_by(t.txns);
    }

    /// One range read outside the writer (a get, a list page, the endpoint's Range).
    pub(crate) fn range(&self) {
        self.inner.ranges.inc();
    }

    /// The store's state after a commit (or at open).
    pub(crate) fn set_state(&self, live_keys: u64, revision: u64, compact: u64) {
        self.inner.keys.set(live_keys as i64);
        self.inner.current_revision.set(revision as i64);
        self.inner.compact_revision.set(compact as i64);
    }

    /// Whether a new measure of the bytes in use is due.
    pub(crate) fn in_use_due(&self) -> bool {
        let due = self.inner.in_use_due.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        due.is_none_or(|at| Instant::now() >= at)
    }

    /// Makes the next commit measure the bytes in use (the file changed under the writer).
    pub(crate) fn in_use_stale(&self) {
        *self.inner.in_use_due.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Measures the bytes in use as `wtx` sees them: redb's allocated pages times its page size.
    pub(crate) fn measure_in_use(&self, wtx: &redb::WriteTransaction) {
        let started = Instant::now();
        match wtx.stats() {
            Ok(s) => {
                self.inner.in_use.set((s.allocated_pages() * s.page_size() as u64) as i64);
            }
            Err(e) => tracing::warn!(error = %e, "embedded store: cannot measure the pages in use"),
        }
        let next = Instant::now() + (started.elapsed() * 100).max(Duration::from_secs(5));
        *self.inner.in_use_due.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(next);
    }

    /// Adds the metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.inner;
        // prometheus-client appends `_total` to counter names and a period to help texts: etcd's
        // texts are given here without their final one.
        registry.register("etcd_mvcc_put", "Total number of puts seen by this member", m.puts.clone());
        registry.register("etcd_mvcc_delete", "Total number of deletes seen by this member", m.deletes.clone());
        registry.register("etcd_mvcc_range", "Total number of ranges seen by this member", m.ranges.clone());
        registry.register("etcd_mvcc_txn", "Total number of txns seen by this member", m.txns.clone());
        registry.register("etcd_debugging_mvcc_keys_total", "Total number of keys", m.keys.clone());
        registry.register(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store",
            m.current_revision.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store",
            m.compact_revision.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL",
            m.wal_fsync.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend",
            m.backend_commit.clone(),
        );
        let one = Gauge::<i64>::default();
        one.set(1);
        registry.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not",
            one.clone(),
        );
        registry.register(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise",
            one,
        );
        registry.register_collector(Box::new(m.db_size.clone()));
        registry.register(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes",
            m.in_use.clone(),
        );
    }

    /// The metrics alone, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding the store's metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::txn::{Compare, CompareResult, CompareTarget, RangeRequest};
    use super::*;

    fn put(k: &str) -> TxnOp {
        TxnOp::Put { key: k.into(), value: b"v".to_vec(), lease: 0 }
    }

    fn line(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counts_ops_as_etcd_does() {
        let mut t = Tally::default();
        // The API server's create: compare, then a put (else a range).
        let create = Txn::if_mod_revision("/registry/a", 0, put("/registry/a"));
        t.txn(&create, true);
        t.txn(&create, false);
        // A plain put, and a writing transaction with two puts.
        t.txn(&Txn { success: vec![put("/registry/b")], ..Default::default() }, true);
        t.txn(&Txn { success: vec![put("/registry/c"), put("/registry/d")], ..Default::default() }, true);
        // A read-only transaction: one compare and one range.
        let read = Txn {
            compares: vec![Compare {
                key: b"/registry/a".to_vec(),
                target: CompareTarget::Version(0),
                result: CompareResult::Greater,
            }],
            success: vec![TxnOp::Range(RangeRequest::default())],
            failure: vec![],
        };
        t.txn(&read, true);
        t.lease_deletes(3);
        assert_eq!((t.puts, t.deletes, t.ranges, t.txns), (4, 3, 5, 2));

        let m = EmbeddedMetrics::new(PathBuf::from("/nonexistent/store.redb"));
        m.add(&t);
        m.range();
        m.set_state(7, 42, 40);
        m.observe_commit(Duration::from_micros(1500));
        let text = m.encode();
        assert_eq!(line(&text, "etcd_mvcc_put_total"), Some(4.0));
        assert_eq!(line(&text, "etcd_mvcc_range_total"), Some(6.0));
        assert_eq!(line(&text, "etcd_mvcc_txn_total"), Some(2.0));
        assert_eq!(line(&text, "etcd_debugging_mvcc_keys_total"), Some(7.0));
        assert_eq!(line(&text, "etcd_debugging_mvcc_current_revision"), Some(42.0));
        assert_eq!(line(&text, "etcd_debugging_mvcc_compact_revision"), Some(40.0));
        assert_eq!(line(&text, "etcd_server_has_leader"), Some(1.0));
        assert_eq!(line(&text, "etcd_mvcc_db_total_size_in_bytes"), Some(0.0));
        assert_eq!(line(&text, "etcd_mvcc_db_total_size_in_use_in_bytes"), Some(0.0));
        // 1.5 ms falls in the 2 ms bucket, not the 1 ms one.
        assert_eq!(line(&text, "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"}"), Some(0.0));
        assert_eq!(line(&text, "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"}"), Some(1.0));
        assert_eq!(line(&text, "etcd_disk_backend_commit_duration_seconds_count"), Some(1.0));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"}"), "{text}");
    }
}
