//! kplane's Kubernetes API server. Only this crate knows HTTP wire details.
//!
//! Status: not built yet (the API server issue). `kplane up` runs the store and its etcd endpoint only.
