//! Tests of what only the embedded store has: physical compaction, reopening, slow watchers.

use std::time::Duration;

use futures::StreamExt;
use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::{EventKind, ListOptions, Store};

async fn open(dir: &std::path::Path) -> EmbeddedStore {
    let mut cfg = EmbeddedConfig::new(dir);
    cfg.compaction_interval = Duration::ZERO;
    EmbeddedStore::open(cfg).await.unwrap()
}

fn key(i: usize) -> String {
    format!("/registry/configmaps/default/cm-{i:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_history_and_keeps_every_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut revs = Vec::with_capacity(100);
    for i in 0..100 {
        revs.push(store.create(&key(i), b"0".to_vec(), 0).await.unwrap().mod_revision);
    }
    for round in 1..=30 {
        for (i, rev) in revs.iter_mut().enumerate() {
            *rev = store.update(&key(i), round.to_string().into_bytes(), *rev, 0).await.unwrap().mod_revision;
        }
    }
    // Delete a few, so tombstones below the compacted revision are exercised too.
    for i in 90..100 {
        store.delete(&key(i), None).await.unwrap();
    }
    let before = store.stats().unwrap();
    assert_eq!(before.log_entries, 100 * 31 + 10);
    let at = store.current_revision().await.unwrap();
    store.compact(at).await.unwrap();
    // Physical compaction runs in steps on the writer; one more write lets it finish.
    let mut after = store.stats().unwrap();
    for _ in 0..100 {
        if after.log_entries == 90 {
            break;
        }
        store.create(&format!("/registry/tick/{}", after.log_entries), vec![], 0).await.unwrap();
        store.delete(&format!("/registry/tick/{}", after.log_entries), None).await.unwrap();
        after = store.stats().unwrap();
    }
    // Only the 90 live versions stay (plus at most the tick entries written after compaction).
    assert!(after.log_entries <= 92, "history not compacted: {after:?}");
    assert_eq!(after.live_keys, 90);
    let list = store
        .list(ListOptions { prefix: "/registry/configmaps/".into(), revision: at, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(list.items.len(), 90);
    assert!(list.items.iter().all(|kv| kv.value == b"30" && kv.version == 31));
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_revisions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = store.create(&key(1), b"a".to_vec(), 0).await.unwrap();
    let b = store.update(&key(1), b"b".to_vec(), a.mod_revision, 0).await.unwrap();
    store.shutdown().await;
    drop(store);

    let store = open(dir.path()).await;
    assert_eq!(store.get(&key(1)).await.unwrap(), b);
    assert_eq!(store.current_revision().await.unwrap(), b.mod_revision);
    let mut w = store.watch("/registry/configmaps/", a.mod_revision).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.kv, a);
    let second = w.next().await.unwrap().unwrap();
    assert_eq!((second.kv.clone(), second.prev_kv.clone()), (b.clone(), Some(a.clone())));
    let c = store.create(&key(2), b"c".to_vec(), 0).await.unwrap();
    assert_eq!(c.mod_revision, b.mod_revision + 1, "revisions continue after a reopen");
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut slow = store.watch("/registry/", 0).await.unwrap();
    let mut fast = store.watch("/registry/", 0).await.unwrap();
    // Far more commits than the broadcast holds (1024), written one at a time so each is a commit.
    const N: usize = 3000;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..N {
                store.create(&key(i), vec![], 0).await.unwrap();
            }
        })
    };
    for i in 0..N {
        let ev = fast.next().await.unwrap().unwrap();
        assert_eq!(ev.kv.key, key(i));
    }
    writer.await.unwrap();
    let mut last = 0;
    for i in 0..N {
        let ev = tokio::time::timeout(Duration::from_secs(10), slow.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((ev.kind, ev.kv.key.as_str()), (EventKind::Put, key(i).as_str()));
        assert!(ev.revision() > last, "revisions increase");
        last = ev.revision();
    }
    store.shutdown().await;
}

/// The value of the unlabelled sample `name` in the store's own `/metrics` text.
fn sample(store: &EmbeddedStore, name: &str) -> f64 {
    let text = store.metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commits_and_keys_and_an_idle_store_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmbeddedConfig::new(dir.path());
    cfg.compaction_interval = Duration::ZERO;
    cfg.lease_check_interval = Duration::from_millis(10);
    let store = EmbeddedStore::open(cfg).await.unwrap();
    const COMMITS: &str = "etcd_disk_wal_fsync_duration_seconds_count";
    const KEYS: &str = "etcd_debugging_mvcc_keys_total";
    // A live lease: every expiry tick looks at it and finds nothing to do.
    let lease = store.grant_lease(600).await.unwrap();
    store.create(&key(0), b"0".to_vec(), lease).await.unwrap();
    let idle = sample(&store, COMMITS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sample(&store, COMMITS), idle, "expiry ticks that expire nothing commit nothing");

    // Each awaited write is its own durable commit.
    for i in 1..=3 {
        store.create(&key(i), b"0".to_vec(), 0).await.unwrap();
    }
    assert_eq!(sample(&store, COMMITS), idle + 3.0);
    assert_eq!(sample(&store, KEYS), 4.0);
    assert_eq!(
        sample(&store, "etcd_debugging_mvcc_current_revision"),
        store.current_revision().await.unwrap() as f64
    );
    let puts = sample(&store, "etcd_mvcc_put_total");
    assert!(puts >= 4.0, "{puts}");

    // An expiring lease deletes its key: one delete op, one key fewer, and that tick is committed.
    let short = store.grant_lease(1).await.unwrap();
    store.create(&key(9), b"0".to_vec(), short).await.unwrap();
    assert_eq!(sample(&store, KEYS), 5.0);
    let deletes = sample(&store, "etcd_mvcc_delete_total");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(&store, KEYS) != 4.0 {
        assert!(std::time::Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&store, "etcd_mvcc_delete_total"), deletes + 1.0);
    let total = sample(&store, "etcd_mvcc_db_total_size_in_bytes");
    assert!(total > 0.0);
    let in_use = sample(&store, "etcd_mvcc_db_total_size_in_use_in_bytes");
    assert!(in_use > 0.0 && in_use <= total, "in use {in_use}, total {total}");
}

/// Found by the `etcd_requests` fuzz target: a LeaseGrant with a TTL near `i64::MAX` overflowed the
/// lease's expiry in the writer thread, which then died and every later write failed. etcd refuses a
/// TTL over 9,000,000,000 s with OutOfRange "etcdserver: too large lease TTL"; so does the embedded
/// endpoint now (real etcd and our endpoint checked side by side with etcd-client), the store API
/// refuses it too, and writes go on afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ttl_over_etcds_maximum_is_refused_and_the_store_keeps_writing() {
    use etcd_client::{Client, LeaseGrantOptions};
    let dir = tempfile::tempdir().unwrap();
    let embedded = open(dir.path()).await;
    assert!(matches!(embedded.lease_grant(0, i64::MAX).await, Err(store::Error::Unsupported(_))));
    assert!(matches!(
        embedded.lease_grant(0, store::MAX_LEASE_TTL + 1).await,
        Err(store::Error::Unsupported(_))
    ));
    let (id, ttl) = embedded.lease_grant(0, store::MAX_LEASE_TTL).await.unwrap();
    assert_eq!(ttl, store::MAX_LEASE_TTL);
    assert_eq!(embedded.keep_alive(id).await.unwrap(), store::MAX_LEASE_TTL);
    embedded.create(&key(1), b"v".to_vec(), 0).await.unwrap();

    let listener = store::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(store::server::serve(embedded.clone(), listener, async {
        let _ = stopped.await;
    }));
    let etcd = store::testing::EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let ours = Client::connect([format!("http://{addr}")], None).await.unwrap();
    let theirs = Client::connect([etcd.endpoint()], None).await.unwrap();
    for (who, mut c) in [("embedded", ours), ("etcd", theirs)] {
        for ttl in [i64::MAX, store::MAX_LEASE_TTL + 1] {
            let err = c.lease_grant(ttl, Some(LeaseGrantOptions::new().with_id(77))).await.unwrap_err();
            let etcd_client::Error::GRpcStatus(status) = err else { panic!("{who}: {err:?}") };
            assert_eq!(status.code(), tonic::Code::OutOfRange, "{who}: {status:?}");
            assert_eq!(status.message(), "etcdserver: too large lease TTL", "{who}");
        }
        let granted = c.lease_grant(store::MAX_LEASE_TTL, None).await.unwrap();
        assert_eq!(granted.ttl(), store::MAX_LEASE_TTL, "{who}");
        c.put("/registry/after-the-refusal", "still writes", None).await.unwrap();
    }
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

/// `watch_progress`: asked, the watch reports a revision at least the store's current one, after
/// every event in range up to it, and never one below what it delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_asked_for_progress_reports_revisions_written_outside_its_range() {
    use store::WatchItem;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let first = store.create(&key(0), b"0".to_vec(), 0).await.unwrap().mod_revision;
    let ask = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut watch =
        store.watch_progress("/registry/configmaps/", first + 1, ask.clone()).await.unwrap().unwrap();
    async fn next(w: &mut store::ProgressStream) -> WatchItem {
        let item = tokio::time::timeout(Duration::from_secs(10), w.next()).await;
        item.expect("a watch item in time").expect("the watch goes on").unwrap()
    }
    // Writes outside the range only: the report covers them.
    for i in 0..5 {
        store.create(&format!("/registry/secrets/default/s{i}"), b"s".to_vec(), 0).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    ask.notify_one();
    match next(&mut watch).await {
        WatchItem::Progress(r) => assert!(r >= current, "progress {r} below the current revision {current}"),
        other => panic!("expected progress, got {other:?}"),
    }
    // A write in range, then at once a request: the event comes first, the report covers it.
    let cm = store.create(&key(1), b"1".to_vec(), 0).await.unwrap().mod_revision;
    store.create("/registry/secrets/default/last", b"s".to_vec(), 0).await.unwrap();
    let current = store.current_revision().await.unwrap();
    ask.notify_one();
    match next(&mut watch).await {
        WatchItem::Revision(events) => {
            assert_eq!(events.len(), 1);
            assert_eq!((events[0].kind, events[0].kv.mod_revision), (EventKind::Put, cm));
        }
        other => panic!("expected the configmap's revision, got {other:?}"),
    }
    match next(&mut watch).await {
        WatchItem::Progress(r) => assert!(r >= current && r > cm, "progress {r}, current {current}"),
        other => panic!("expected progress, got {other:?}"),
    }
    // The plain watches never see progress items.
    let mut plain = store.watch_revisions("/registry/configmaps/", first + 1, false).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), plain.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(events[0].kv.mod_revision, cm);
}
