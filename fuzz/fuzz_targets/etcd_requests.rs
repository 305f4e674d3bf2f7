//! The embedded store's etcd gRPC requests (Range/Put/DeleteRange/Txn/Compact/Lease*/Watch/HashKV/Status) served against a temporary store.
//! The input's format is documented at the entry point, `store::fuzzing::etcd_requests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| store::fuzzing::etcd_requests(data));
