//! kplane's API types: the Kubernetes resource table and type helpers shared by the API server and the
//! controllers. It re-exports k8s-openapi (built with exactly one version feature, `v1_33`).
//!
//! Invariant: this crate does no I/O.
//!
//! Status: the resource table arrives with the API server issue; until then this crate holds nothing.
