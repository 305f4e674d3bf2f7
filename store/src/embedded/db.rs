//! The one handle on the redb file that readers, watchers and the writer share.
//!
//! Why a lock around the handle: redb's `Database::compact` (defragmentation, which moves pages to
//! the front of the file and truncates it) needs `&mut Database`, while every read transaction is
//! begun through a shared handle. redb's transactions do not borrow the `Database`, so a reader
//! holds the shared lock only while it *begins* a transaction; the writer thread takes the
//! exclusive lock to defragment, which stops new transactions from starting and waits for the
//! open ones to end, as etcd's defrag blocks reads and writes while it runs.
//!
//! After an I/O error during a commit (a full disk), redb refuses every later write transaction
//! ("previous I/O error") until the database is closed and opened again. Reads keep working on the
//! old handle, so it is kept for them until writing can work again: [`Db::recover`], called by the
//! writer when a write arrives, first checks that the disk takes a probe file, then swaps the
//! handle for a freshly opened one. While the swap runs (and, should the reopen fail, until a later
//! one works) there is no handle and every transaction fails with [`DbError::Closed`], never with
//! an empty store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{
    CompactionError, Database, ReadTransaction, ReadableDatabase, StorageError, TransactionError,
    WriteTransaction,
};

use crate::{Error, Result};

/// How long one defragmentation attempt holds the exclusive lock waiting for open read
/// transactions to end, before letting readers through again and retrying.
const HOLD: Duration = Duration::from_millis(500);

/// Bytes the disk must take before a database poisoned by an I/O error is reopened: opening runs
/// redb's repair after an unclean close, which writes.
const PROBE_BYTES: usize = 1 << 20;

/// redb's page cache (reads and the write buffer, half each at most). redb's default is 1 GiB, and
/// it keeps every page read or written up to that: measured with heaptrack, 25 MB of heap for a
/// store of 1,000 pods and their history, growing with the file. etcd (bbolt) keeps no cache of its
/// own and leaves the file to the kernel's page cache; so does this store beyond this bound. The
/// API server serves reads from its watch cache, so the store's own reads are the writer's lookups
/// (the B-tree's upper pages stay in this cache) and watch catch-ups.
pub(crate) const CACHE_BYTES: usize = 8 << 20;

pub(crate) struct Db {
    handle: RwLock<Option<Database>>,
    path: PathBuf,
}

/// Why a transaction could not begin.
#[derive(Debug)]
pub(crate) enum DbError {
    Redb(TransactionError),
    /// The handle is being (or failed to be) reopened after an I/O error.
    Closed(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Redb(e) => write!(f, "{e}"),
            DbError::Closed(why) => write!(f, "the store file is closed after an I/O error: {why}"),
        }
    }
}

impl Db {
    pub fn new(db: Database, path: &Path) -> Db {
        Db { handle: RwLock::new(Some(db)), path: path.to_path_buf() }
    }

    // A panic while the lock was held cannot leave the handle half-changed (the lock only guards
    // the beginning of a transaction, `compact`, which is itself crash-safe, and the swap in
    // `recover`), so poisoning is ignored.
    fn shared(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.handle.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A consistent read snapshot (redb MVCC); it does not block writers.
    pub fn begin_read(&self) -> std::result::Result<ReadTransaction, DbError> {
        match self.shared().as_ref() {
            Some(db) => db.begin_read().map_err(DbError::Redb),
            None => Err(DbError::Closed("reopening".into())),
        }
    }

    /// The write transaction. Only the writer thread calls this.
    pub fn begin_write(&self) -> std::result::Result<WriteTransaction, DbError> {
        match self.shared().as_ref() {
            Some(db) => db.begin_write().map_err(DbError::Redb),
            None => Err(DbError::Closed("reopening".into())),
        }
    }

    /// Whether writes need [`recover`](Self::recover) first: redb refuses them after an I/O error,
    /// or an earlier reopen failed. Only the writer thread calls this.
    pub fn needs_recovery(&self) -> bool {
        match self.begin_write() {
            Ok(wtx) => {
                let _ = wtx.abort();
                false
            }
            Err(DbError::Redb(TransactionError::Storage(StorageError::PreviousIo)))
            | Err(DbError::Closed(_)) => true,
            Err(_) => false,
        }
    }

    /// Reopens the database after an I/O error, once the disk takes a probe file of
    /// [`PROBE_BYTES`]. Until then the poisoned handle stays for reads and this fails with the
    /// disk's error. Only the writer thread calls this.
    pub fn recover(&self) -> Result<()> {
        let probe = self.path.with_extension("space-probe");
        let probed = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(&vec![0u8; PROBE_BYTES])?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = probed {
            return Err(Error::Internal(format!(
                "the store's disk failed a write ({e}); writes are refused until it takes them again (reads still work)"
            )));
        }
        let mut handle = self.handle.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle must be closed (its file lock released) before the file is opened again.
        drop(handle.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Database::builder().set_cache_size(CACHE_BYTES).create(&self.path) {
                Ok(db) => {
                    *handle = Some(db);
                    tracing::warn!(path = %self.path.display(), "embedded store: reopened after an I/O error");
                    return Ok(());
                }
                // Read transactions begun on the old handle keep its file open a moment longer.
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(Error::Unavailable(format!(
                        "reopening {} after an I/O error failed: {e}",
                        self.path.display()
                    )))
                }
            }
        }
    }

    /// Defragments the file: compacts redb's pages and truncates the free tail. Only the writer
    /// thread calls this, between commits. Waits up to `timeout` for read transactions (a
    /// snapshot being taken, a long list) to end; returns whether the file was changed.
    pub fn defragment(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut guard = self.handle.write().unwrap_or_else(PoisonError::into_inner);
                let Some(db) = guard.as_mut() else {
                    return Err(Error::Unavailable(
                        "defragment: the store file is closed after an I/O error".into(),
                    ));
                };
                let hold_until = (Instant::now() + HOLD).min(deadline);
                loop {
                    match db.compact() {
                        Ok(changed) => return Ok(changed),
                        Err(CompactionError::TransactionInProgress) if Instant::now() < hold_until => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(CompactionError::TransactionInProgress) => break,
                        Err(e) => return Err(Error::Internal(format!("defragment: {e}"))),
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "defragment: read transactions (a snapshot being sent?) stayed open for {timeout:?}; try again"
                )));
            }
            // Let a reader that begins a second transaction while holding one get through.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
