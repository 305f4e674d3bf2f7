//! Progress requests on a real etcd (`KPLANE_TEST_ETCD`, else one started here): a watch asked for
//! progress reports a revision at least etcd's current one, after the events in range it covers;
//! `watch_progress` itself offers progress only on etcd versions whose answers are ordered.

#[cfg(not(feature = "testing"))]
compile_error!("store's integration tests need `--features testing` (cargo test -p store --features testing)");

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use store::etcd::{EtcdConfig, EtcdStore};
use store::testing::EtcdProcess;
use store::{EventKind, Store, WatchItem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_asked_for_progress_reports_revisions_written_outside_its_range() {
    let (_etcd, endpoint) = match store::testing::etcd_endpoint_from_env() {
        Some(e) => (None, e),
        None => {
            let etcd = EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
            let endpoint = etcd.endpoint();
            (Some(etcd), endpoint)
        }
    };
    let store = EtcdStore::connect(EtcdConfig::new(vec![endpoint])).await.unwrap();
    let base = store::testing::unique_prefix("progress");
    let (watched, other) = (format!("{base}watched/"), format!("{base}other/"));
    let first = store.create(&format!("{watched}a"), b"0".to_vec(), 0).await.unwrap().mod_revision;
    let ask = Arc::new(tokio::sync::Notify::new());
    let mut watch = store.watch_progress_any_version(&watched, first + 1, ask.clone()).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a watch item in time")
            .expect("the watch goes on")
            .unwrap()
    };
    for i in 0..5 {
        store.create(&format!("{other}{i}"), b"s".to_vec(), 0).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    // The watch may not be synced yet when first asked (etcd then answers nothing): ask until it
    // reports.
    let reported = loop {
        ask.notify_one();
        match tokio::time::timeout(Duration::from_millis(500), next()).await {
            Ok(WatchItem::Progress(r)) => break r,
            Ok(other) => panic!("expected progress, got {other:?}"),
            Err(_) => continue,
        }
    };
    assert!(reported >= current, "progress {reported} below the current revision {current}");
    let cm = store.create(&format!("{watched}b"), b"1".to_vec(), 0).await.unwrap().mod_revision;
    match next().await {
        WatchItem::Revision(events) => {
            assert_eq!((events[0].kind, events[0].kv.mod_revision), (EventKind::Put, cm))
        }
        other => panic!("expected the write's revision, got {other:?}"),
    }
    ask.notify_one();
    match next().await {
        WatchItem::Progress(r) => assert!(r >= cm, "progress {r} below the write {cm}"),
        other => panic!("expected progress, got {other:?}"),
    }
    // This etcd's version decides whether `watch_progress` offers progress at all.
    let offered = store.watch_progress(&watched, cm + 1, ask.clone()).await.unwrap().is_some();
    if store::testing::etcd_endpoint_from_env().is_none() {
        let out = std::process::Command::new("etcd").arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let version = text.lines().find_map(|l| l.strip_prefix("etcd Version: ")).unwrap();
        let n: Vec<u64> = version.trim().split('.').map(|p| p.parse().unwrap()).collect();
        let exact = match (n[0], n[1]) {
            (3, 4) => n[2] >= 31,
            (3, 5) => n[2] >= 13,
            (3, m) => m >= 6,
            (m, _) => m > 3,
        };
        assert_eq!(offered, exact, "etcd {version}");
    }
}
