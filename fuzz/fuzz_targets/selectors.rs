//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`): parse, print, parse again.
//! The input's format is documented at the entry point, `api_types::fuzzing::selectors`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| api_types::fuzzing::selectors(data));
