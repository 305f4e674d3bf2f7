//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`): any string parses or fails
//! with an error, never a panic; a parsed selector prints and parses again.
#![no_main]

use api_types::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(sel) = LabelSelector::parse(s) {
        let _ = LabelSelector::parse(&sel.to_string());
    }
    if let Ok(sel) = FieldSelector::parse(s) {
        let _ = FieldSelector::parse(&sel.to_string());
    }
});
