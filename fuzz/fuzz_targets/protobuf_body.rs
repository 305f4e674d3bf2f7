//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`) for Pod, ConfigMap, Deployment, DeleteOptions.
//! The input's format is documented at the entry point, `api_types::fuzzing::protobuf_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| api_types::fuzzing::protobuf_body(data));
