//! Fault test: etcd is SIGKILLed and restarted under a running watch and a running writer. The watch
//! must resume where it left off: every acknowledged write exactly once, in revision order.

#[cfg(not(feature = "testing"))]
compile_error!("store's integration tests need `--features testing` (cargo test -p store --features testing)");

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store::etcd::{EtcdConfig, EtcdStore};
use store::testing::{next_event, EtcdProcess};
use store::{Error, Event, Store};

/// Bound of every wait in this test.
const DEADLINE: Duration = Duration::from_secs(60);
const PREFIX: &str = "/registry/restart-test/";

/// Polls `done` until it holds, failing the test after [`DEADLINE`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_etcd_kill_and_restart() {
    let mut etcd = EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let mut cfg = EtcdConfig::new(vec![etcd.endpoint()]);
    cfg.connect_timeout = Duration::from_secs(2);
    let store = Arc::new(EtcdStore::connect(cfg).await.unwrap_or_else(|e| panic!("connect: {e}")));

    let mut watch = store.watch(PREFIX, 0).await.unwrap_or_else(|e| panic!("watch: {e}"));

    // The writer creates k00000, k00001, ... and records each acknowledged write. A create that got
    // Unavailable may still have committed; its retry then sees AlreadyExists and the key counts as
    // unacknowledged (its event may appear, but is not required).
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let unavailable_seen = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked, stop, unavailable_seen) =
            (store.clone(), acked.clone(), stop.clone(), unavailable_seen.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE * 2;
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("{PREFIX}k{i:05}");
                loop {
                    assert!(Instant::now() < deadline, "writer could not write {key} in time");
                    match store.create(&key, i.to_string().into_bytes(), 0).await {
                        Ok(kv) => {
                            acked.lock().unwrap().push((key.clone(), kv.mod_revision));
                            break;
                        }
                        Err(Error::AlreadyExists { .. }) => break,
                        Err(Error::Unavailable(_)) => {
                            unavailable_seen.store(true, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("create {key}: unexpected error {e:?}"),
                    }
                }
                i += 1;
            }
        })
    };

    wait_until("50 writes before the kill", || acked.lock().unwrap().len() >= 50).await;
    etcd.kill9().expect("kill etcd");
    let acked_at_kill = acked.lock().unwrap().len();
    // etcd stays down for a while so the writer and the watch really see it gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.restart().await.unwrap_or_else(|e| panic!("restarting etcd: {e}"));

    // A watch opened right after the restart must work too.
    let mut fresh_watch = store.watch(PREFIX, 0).await.unwrap_or_else(|e| panic!("watch after restart: {e}"));
    wait_until("50 writes after the restart", || acked.lock().unwrap().len() >= acked_at_kill + 50).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer task");
    assert!(unavailable_seen.load(Ordering::SeqCst), "the writer never saw etcd down; the test proved nothing");

    let acked = acked.lock().unwrap().clone();
    let last_rev = acked.last().map(|(_, rev)| *rev).unwrap_or(0);

    // Drain the original watch up to the last acknowledged write.
    let mut events: Vec<Event> = Vec::new();
    while events.last().map(|e| e.revision()).unwrap_or(0) < last_rev {
        events.push(next_event(&mut watch, "watch across the restart").await);
    }
    let mut seen_keys = HashSet::new();
    let mut prev_rev = 0;
    for ev in &events {
        assert!(
            ev.revision() > prev_rev,
            "revisions must strictly increase: {} after {prev_rev}",
            ev.revision()
        );
        prev_rev = ev.revision();
        assert!(seen_keys.insert(ev.kv.key.clone()), "duplicate event for {}", ev.kv.key);
    }
    let delivered: HashSet<(String, i64)> = events.iter().map(|e| (e.kv.key.clone(), e.revision())).collect();
    for (key, rev) in &acked {
        assert!(delivered.contains(&(key.clone(), *rev)), "acknowledged write {key}@{rev} was not delivered");
    }

    // The watch opened after the restart sees the writes after it was opened, in order.
    let first_fresh = next_event(&mut fresh_watch, "watch opened after the restart").await;
    let tail: Vec<&Event> = events.iter().filter(|e| e.revision() >= first_fresh.revision()).collect();
    assert!(!tail.is_empty(), "the fresh watch's first event {first_fresh:?} was never written");
    assert_eq!(tail[0], &first_fresh, "the fresh watch disagrees with the resumed one");
    for expected in &tail[1..] {
        let ev = next_event(&mut fresh_watch, "watch opened after the restart").await;
        assert_eq!(&ev, *expected, "the fresh watch disagrees with the resumed one");
    }
    // Nothing else is pending: the next event is a sentinel written last.
    let sentinel = store
        .create(&format!("{PREFIX}sentinel"), b"end".to_vec(), 0)
        .await
        .unwrap_or_else(|e| panic!("sentinel: {e}"));
    let ev = next_event(&mut watch, "sentinel").await;
    assert_eq!(ev.kv, sentinel, "an event nobody wrote came before the sentinel");
}
