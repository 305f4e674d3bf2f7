//! JSON patch, merge patch and strategic merge patch bodies on a Pod, then the result's typed decode.
//! The input's format is documented at the entry point, `api_types::fuzzing::patches`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| api_types::fuzzing::patches(data));
