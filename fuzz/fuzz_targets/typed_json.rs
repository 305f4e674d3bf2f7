//! JSON bodies through the typed decode (type check, normalisation, unknown/duplicate field scan).
//! The input's format is documented at the entry point, `api_types::fuzzing::typed_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| api_types::fuzzing::typed_json(data));
