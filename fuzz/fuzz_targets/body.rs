//! Create/update bodies (JSON, YAML, protobuf) through the API server's body decoder, errors rendered as Status.
//! The input's format is documented at the entry point, `apiserver::fuzzing::body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apiserver::fuzzing::body(data));
