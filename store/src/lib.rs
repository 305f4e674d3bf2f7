//! kplane's etcd-style store.
//!
//! Everything kplane keeps lives under `/registry/...` keys in a store with etcd's semantics: one global,
//! monotonic revision; every key carries `create_revision`, `mod_revision` and `version`; writes are
//! conditioned on `mod_revision`; watches replay from a revision in order with no gaps; history below the
//! compacted revision is gone.
//!
//! Layout:
//! - [`Store`] (this file): the one narrow async trait the API server programs against.
//! - `error.rs`: the typed [`Error`]s every backend maps onto.
//! - `guaranteed.rs`: [`guaranteed_update`], the read-modify-CAS retry loop.
//! - `embedded/`: the default backend, a durable MVCC revision log in redb (`--data-dir`), with group
//!   commit, watch replay from the log, leases and automatic compaction.
//! - `etcd.rs`: the real-etcd backend (`--etcd-servers`), built on etcd-client, which survives etcd
//!   restarts and resumes watches from the last delivered revision.
//! - `server/`: the etcd v3 gRPC endpoint over the embedded store, so real `etcdctl` can read it.
//! - `testing.rs` (feature `testing`): the conformance suite every backend runs.
//! - `bench.rs`: `kplane bench store`, which measures the embedded store beside a real etcd.
//!
//! Invariant: only this crate knows etcd. Callers see keys, values and revisions, never etcd types.

mod error;
mod guaranteed;
mod keys;

pub mod bench;
pub mod embedded;
pub mod etcd;
pub mod etcd_process;
pub mod fuzzing;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, StreamExt};

pub use error::{Error, Result};
pub use guaranteed::guaranteed_update;
pub use keys::{prefix_end, StoreLimits, DEFAULT_MAX_VALUE_BYTES, DEFAULT_PREFIX, MAX_LEASE_TTL};

/// One stored key with its etcd metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: i64,
    /// Revision of the last write to the key. kplane's `resourceVersion`.
    pub mod_revision: i64,
    /// Number of writes since the key was created (1 on create).
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv` holds the key and the deleting revision in
/// `mod_revision`, with an empty value; the deleted value is in `prev_kv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// Arguments of [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Every key starting with this string is in range.
    pub prefix: String,
    /// Read at this revision; 0 reads the latest.
    pub revision: i64,
    /// At most this many items; 0 for no limit.
    pub limit: i64,
    /// Start strictly after this key (the last key of the previous page).
    pub continue_after: Option<String>,
}

/// The answer of [`Store::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at. Pass it back with `continue_after` for a consistent next page.
    pub revision: i64,
    /// True when keys remain after the last returned item.
    pub more: bool,
    /// How many keys remain after the last returned item.
    pub remaining: i64,
}

/// The answer of [`Store::delete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The value as it was just before the delete.
    pub prev: KeyValue,
    /// The revision of the delete itself.
    pub revision: i64,
}

/// A stream of changes in revision order. It ends with an error, never silently: `Compacted` when it
/// was asked to start below the compacted revision, `Unavailable` when the store went away.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// A stream of whole revisions: each item is every event of one revision inside the watched range,
/// in the order the revision wrote them. One revision may hold many events (a transaction, or a
/// lease whose expiry deletes all its keys at once); a consumer that works per item therefore never
/// stops between two events of one revision, so "everything up to revision R was delivered" is
/// exact whenever it has handled an item. It ends with an error, as [`WatchStream`] does.
pub type RevisionStream = Pin<Box<dyn Stream<Item = Result<Vec<Event>>> + Send>>;

/// One item of a watch that reports progress ([`Store::watch_progress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// Every event of one revision inside the range, as an item of a [`RevisionStream`].
    Revision(Vec<Event>),
    /// Every event inside the range up to this revision has been delivered (etcd's progress
    /// notification; upstream's cacher advances its resourceVersion on it).
    Progress(i64),
}

/// A stream of whole revisions and progress reports, in order; it ends as [`RevisionStream`] does.
pub type ProgressStream = Pin<Box<dyn Stream<Item = Result<WatchItem>> + Send>>;

/// The revisions of a [`ProgressStream`], its progress reports left out.
pub fn revisions_only(items: ProgressStream) -> RevisionStream {
    Box::pin(items.filter_map(|item| async move {
        match item {
            Ok(WatchItem::Revision(events)) => Some(Ok(events)),
            Ok(WatchItem::Progress(_)) => None,
            Err(e) => Some(Err(e)),
        }
    }))
}

/// One event per item, in order: the events of each revision one after another.
pub fn flatten_revisions(revisions: RevisionStream) -> WatchStream {
    Box::pin(revisions.flat_map(|item| {
        let events: Vec<Result<Event>> = match item {
            Ok(events) => events.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(events)
    }))
}

/// The store every kplane component above it uses. Both backends pass the same conformance suite
/// (`store::testing`), so callers never need to know which one they have.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and benchmarks ("embedded", "etcd").
    fn backend_name(&self) -> &'static str;

    /// The latest value of `key`, or [`Error::NotFound`].
    async fn get(&self, key: &str) -> Result<KeyValue>;

    /// Keys under a prefix, at one revision, one page at a time.
    async fn list(&self, opts: ListOptions) -> Result<ListResult>;

    /// Like [`Store::list`], but the backend need not count the keys after the page: `remaining` may
    /// then be 0 while `more` stays exact. For the continue pages of a list whose first page counted
    /// (at one revision the count cannot change), so that a backend that can skip counting spends
    /// the page, not a pass over the range, on each one.
    async fn list_without_count(&self, opts: ListOptions) -> Result<ListResult> {
        self.list(opts).await
    }

    /// Writes `key` only if it does not exist, else [`Error::AlreadyExists`]. `lease` 0 for none.
    async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<KeyValue>;

    /// Writes `key` only if its mod_revision is `expected_mod_revision`, else [`Error::Conflict`]
    /// (or [`Error::NotFound`] when the key is gone).
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
        lease: i64,
    ) -> Result<KeyValue>;

    /// Deletes `key`, if given only when its mod_revision matches. Returns the deleted value.
    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<Deleted>;

    /// Every change under `prefix` from `from_revision` on (0: from the next write), one whole
    /// revision per item, in order. With `prev_kv` false events need not carry the previous value:
    /// for consumers that keep the previous state themselves (the API server's watch cache); a
    /// backend may then do less work per event.
    async fn watch_revisions(&self, prefix: &str, from_revision: i64, prev_kv: bool) -> Result<RevisionStream>;

    /// Like [`Store::watch_revisions`] (events need not carry `prev_kv`), and whenever `ask` is
    /// notified the watch reports, as soon as it can, a [`WatchItem::Progress`] at a revision at
    /// least the store's current revision at the time of the request (upstream's
    /// `RequestWatchProgress`). None when the backend cannot: callers then never rely on progress.
    async fn watch_progress(
        &self,
        _prefix: &str,
        _from_revision: i64,
        _ask: Arc<tokio::sync::Notify>,
    ) -> Result<Option<ProgressStream>> {
        Ok(None)
    }

    /// Every change under `prefix` from `from_revision` on (0: from the next write), in order.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        Ok(flatten_revisions(self.watch_revisions(prefix, from_revision, true).await?))
    }

    /// Like [`Store::watch`], but events need not carry `prev_kv`.
    async fn watch_latest(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        Ok(flatten_revisions(self.watch_revisions(prefix, from_revision, false).await?))
    }

    /// The store's current revision.
    async fn current_revision(&self) -> Result<i64>;

    /// Forgets history below `revision`. Reads and watches below it then get [`Error::Compacted`].
    async fn compact(&self, revision: i64) -> Result<()>;

    /// Grants a lease that expires after `ttl_seconds` unless kept alive. Returns its id.
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64>;

    /// Revokes a lease now, deleting every key attached to it.
    async fn revoke_lease(&self, id: i64) -> Result<()>;

    /// Renews a lease to its full TTL. Returns the TTL.
    async fn keep_alive(&self, id: i64) -> Result<i64>;
}

/// Shared handle to any backend.
pub type DynStore = Arc<dyn Store>;
