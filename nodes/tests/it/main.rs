//! The nodes crate against an in-process API server (`apiserver::testing::TestCluster`).

mod helpers;
mod registration;
mod kubelet;
mod scheduler;
mod traffic;
