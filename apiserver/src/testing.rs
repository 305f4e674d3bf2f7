//! An in-process cluster for other crates' tests (feature `testing`): an embedded store in a temporary
//! folder, a bootstrapped API server, and a `kube::Client` whose transport calls the router directly.

use std::sync::Arc;

use store::embedded::{EmbeddedConfig, EmbeddedStore};

use crate::{bootstrap, router, AppState, Config};

pub struct TestCluster {
    pub state: AppState,
    pub client: kube::Client,
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts a bootstrapped API server on a fresh embedded store. Panics if it cannot (tests only).
    pub async fn start() -> TestCluster {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestCluster {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("embedded store");
        let advertise = config.bind;
        let state = AppState::new(Arc::new(store.clone()), config);
        bootstrap(&state, advertise).await.expect("bootstrap");
        let client = in_process_client(state.clone());
        TestCluster { state, client, store, _dir: dir }
    }

    pub async fn shutdown(self) {
        self.store.shutdown().await;
    }
}

/// A kube client whose requests go straight into the API server's router, with no socket.
pub fn in_process_client(state: AppState) -> kube::Client {
    kube::Client::new(router(state), "default")
}
