//! Raw HTTP/1.1 client bytes through the ingress's connection handler (routing, header handling, upgrades).
//! The input's format is documented at the entry point, `networking::fuzzing::ingress`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| networking::fuzzing::ingress(data));
