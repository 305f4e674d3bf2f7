//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) over what the embedded store's etcd
//! endpoint reads from the network. Each takes arbitrary bytes and must return, never panic; the
//! `fuzz_corpus` test replays every stored input in `fuzz/corpus/<target>/` through the same
//! functions.

/// etcd v3 gRPC request messages (KV, Lease, Watch, Maintenance), decoded and served by the
/// endpoint against an embedded store in a temporary directory (one store for the process's
/// whole run). See `server::fuzz` for the input's framing.
pub fn etcd_requests(data: &[u8]) {
    crate::server::fuzz::requests(data);
}

/// A fuzz entry point: arbitrary bytes in, never a panic.
pub type Entry = fn(&[u8]);

/// The store's targets, by name (the name of their `fuzz/corpus/` directory).
pub const TARGETS: &[(&str, Entry)] = &[("etcd_requests", etcd_requests)];
