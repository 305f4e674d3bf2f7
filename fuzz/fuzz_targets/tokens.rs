//! Bearer tokens: the Authorization header, the static token file, ServiceAccount JWT verification.
//! The input's format is documented at the entry point, `apiserver::fuzzing::tokens`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apiserver::fuzzing::tokens(data));
