//! The one handle on the redb file that readers, watchers and the writer share.
//!
//! Why a lock around the handle: redb's `Database::compact` (defragmentation, which moves pages to
//! the front of the file and truncates it) needs `&mut Database`, while every read transaction is
//! begun through a shared handle. redb's transactions do not borrow the `Database`, so a reader
//! holds the shared lock only while it *begins* a transaction; the writer thread takes the
//! exclusive lock to defragment, which stops new transactions from starting and waits for the
//! open ones to end, as etcd's defrag blocks reads and writes while it runs.

use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{CompactionError, Database, ReadTransaction, ReadableDatabase, TransactionError, WriteTransaction};

use crate::{Error, Result};

/// How long one defragmentation attempt holds the exclusive lock waiting for open read
/// transactions to end, before letting readers through again and retrying.
const HOLD: Duration = Duration::from_millis(500);

pub(crate) struct Db(RwLock<Database>);

impl Db {
    pub fn new(db: Database) -> Db {
        Db(RwLock::new(db))
    }

    // A panic while the lock was held cannot leave the handle half-changed (the lock only guards
    // the beginning of a transaction and `compact`, which is itself crash-safe), so poisoning is
    // ignored.
    fn shared(&self) -> RwLockReadGuard<'_, Database> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A consistent read snapshot (redb MVCC); it does not block writers.
    pub fn begin_read(&self) -> std::result::Result<ReadTransaction, TransactionError> {
        self.shared().begin_read()
    }

    /// The write transaction. Only the writer thread calls this.
    pub fn begin_write(&self) -> std::result::Result<WriteTransaction, TransactionError> {
        self.shared().begin_write()
    }

    /// Defragments the file: compacts redb's pages and truncates the free tail. Only the writer
    /// thread calls this, between commits. Waits up to `timeout` for read transactions (a
    /// snapshot being taken, a long list) to end; returns whether the file was changed.
    pub fn defragment(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut db = self.0.write().unwrap_or_else(PoisonError::into_inner);
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
