//! The store's typed errors. Every backend maps its failures onto these, so callers (the API server's
//! registry, the etcd endpoint) can answer with the right status without knowing which backend ran.

/// Errors returned by every [`crate::Store`] operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist (or did not exist at the revision asked for).
    #[error("key not found: {key}")]
    NotFound { key: String },

    /// `create` found the key already present.
    #[error("key already exists: {key}")]
    AlreadyExists { key: String },

    /// A write's mod_revision precondition did not hold. `actual` is the key's current mod_revision
    /// (0 when the key is absent), so a caller can tell "changed" from "deleted" without another read.
    #[error("conflict on {key}: expected mod_revision {expected}, found {actual}")]
    Conflict { key: String, expected: i64, actual: i64 },

    /// The revision asked for has been compacted away. The caller must re-list (HTTP 410 upstream).
    #[error("required revision {requested} has been compacted; compacted revision is {compact_revision}")]
    Compacted { requested: i64, compact_revision: i64 },

    /// The revision asked for is newer than the store's current revision.
    #[error("required revision {requested} is a future revision; current revision is {current}")]
    FutureRevision { requested: i64, current: i64 },

    /// The key is outside the store's prefix, empty, or not valid for a write.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// The value is larger than the per-object limit (upstream's is 1.5 MiB).
    #[error("value for {key} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge { key: String, size: usize, limit: usize },

    /// The lease does not exist or has expired.
    #[error("lease {id} not found")]
    LeaseNotFound { id: i64 },

    /// The backend cannot be reached or refused to serve (etcd down, store closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),

    /// The request is well formed but this store does not support it.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A fault inside the backend (I/O error, corrupt record). Never a caller's mistake.
    #[error("internal store error: {0}")]
    Internal(String),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for errors a retry may cure without changing the request (the backend was unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}
