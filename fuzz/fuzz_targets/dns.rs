//! DNS packets through the cluster DNS server's query parser and answer path.
//! The input's format is documented at the entry point, `networking::fuzzing::dns`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| networking::fuzzing::dns(data));
