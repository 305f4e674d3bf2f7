//! Kubeconfig files as the split-process components read them (kube-rs's parser and client configuration).
//! The input's format is documented at the entry point, `networking::fuzzing::kubeconfig`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| networking::fuzzing::kubeconfig(data));
