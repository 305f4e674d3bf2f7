//! The nodes crate against an in-process API server (`apiserver::testing::TestCluster`).

mod helpers;
mod kubelet;
mod registration;
mod runtime;
mod scheduler;
mod scoring;
mod streams;
mod traffic;
