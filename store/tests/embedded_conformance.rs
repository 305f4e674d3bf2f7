//! The conformance suite against the embedded store.

use std::sync::Arc;
use std::time::Duration;

use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::DynStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmbeddedConfig::new(dir.path());
    cfg.lease_check_interval = Duration::from_millis(100);
    let store: DynStore = Arc::new(EmbeddedStore::open(cfg).await.unwrap());
    store::testing::run_all(store).await;
}
