//! Server-side apply, as sigs.k8s.io/structured-merge-diff (v4+) and k8s.io/apiserver's field
//! manager define it, over `serde_json::Value` and the kinds' schemas: pure functions, no I/O.
//!
//! - [`fieldpath`]: paths, sets of them, the `FieldsV1` encoding and upstream's printing;
//! - [`schema`]: how a schema node merges (struct, map, atomic, list types and keys);
//! - [`ops`]: field sets of objects, comparison, merge and removal by schema;
//! - [`update`]: `managedFields` entries updated by `Update` writes and by `Apply`, with
//!   conflicts, `force`, and the client-side-apply upgrade of `kubectl apply --server-side`.

pub mod fieldpath;
pub mod ops;
pub mod schema;
pub mod update;

#[cfg(test)]
mod tests;

pub use fieldpath::{Path, Set};
pub use ops::ShapeError;
pub use schema::Node;
pub use update::{apply, record_update, Applied, ApplyError, Writer};
