//! The conformance suite against a real etcd: the one named by `KPLANE_TEST_ETCD` (CI), else one this
//! test starts. A missing etcd binary fails the test; it is never skipped.

#[cfg(not(feature = "testing"))]
compile_error!("store's integration tests need `--features testing` (cargo test -p store --features testing)");

use std::sync::Arc;

use store::etcd::{EtcdConfig, EtcdStore};
use store::testing::{etcd_endpoint_from_env, run_all, EtcdProcess};
use store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_passes_conformance() {
    // Keep the process (if any) alive until the end of the test.
    let (_etcd, endpoint) = match etcd_endpoint_from_env() {
        Some(endpoint) => (None, endpoint),
        None => {
            let etcd = EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
            let endpoint = etcd.endpoint();
            (Some(etcd), endpoint)
        }
    };
    let store = EtcdStore::connect(EtcdConfig::new(vec![endpoint.clone()]))
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd at {endpoint}: {e}"));
    assert_eq!(store.backend_name(), "etcd");
    run_all(Arc::new(store)).await;
}
