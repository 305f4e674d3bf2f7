//! Server-side apply: a random applied configuration against a random live object (merge, field sets, conflicts).
//! The input's format is documented at the entry point, `api_types::fuzzing::apply`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| api_types::fuzzing::apply(data));
