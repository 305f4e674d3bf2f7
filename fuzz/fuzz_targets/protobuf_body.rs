//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): any bytes decode or fail with an
//! error, never a panic, for a few kinds with nested messages, maps and repeated fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (group, version, kind) in
        [("", "v1", "Pod"), ("", "v1", "ConfigMap"), ("apps", "v1", "Deployment"), ("", "v1", "DeleteOptions")]
    {
        let _ = api_types::protobuf::decode_to_json(data, group, version, kind);
    }
});
