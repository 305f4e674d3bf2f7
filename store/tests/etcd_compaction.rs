//! Upstream kube-apiserver's compactor against a real etcd (its own process: compaction is
//! etcd-wide, so it must not share `KPLANE_TEST_ETCD` with other tests): two API servers sharing one
//! etcd compact once per interval between them, to the revision seen an interval before, and etcd
//! (checked with the real `etcdctl`) then refuses reads below it.

#[cfg(not(feature = "testing"))]
compile_error!("store's integration tests need `--features testing` (cargo test -p store --features testing)");

use std::process::Command;
use std::time::{Duration, Instant};

use store::etcd::{CompactorState, EtcdConfig, EtcdStore, COMPACT_REV_KEY};
use store::testing::EtcdProcess;
use store::{Error, ListOptions, Store};

async fn connect(etcd: &EtcdProcess) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::new(vec![etcd.endpoint()])).await.unwrap_or_else(|e| panic!("connect: {e}"))
}

/// `etcdctl get <key> --rev=<rev>`: (success, stdout + stderr).
fn etcdctl_get_at(etcd: &EtcdProcess, key: &str, rev: i64) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint(), "get", key, &format!("--rev={rev}")])
        .output()
        .unwrap_or_else(|e| panic!("running etcdctl: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn write(store: &EtcdStore, key: &str) -> i64 {
    store.create(key, b"v".to_vec(), 0).await.unwrap_or_else(|e| panic!("create {key}: {e}")).mod_revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_compact_once_per_interval() {
    let etcd = EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let (a, b) = (connect(&etcd).await, connect(&etcd).await);
    let (mut sa, mut sb) = (CompactorState::default(), CompactorState::default());

    // First interval: A wins the compare-and-swap and only records the revision; B loses.
    let old = write(&a, "/registry/compaction/k1").await;
    assert_eq!(a.compact_tick(&mut sa).await.unwrap(), None, "no compaction on the first tick");
    let seen_by_a = sa.revision;
    assert!(seen_by_a >= old, "{sa:?}");
    assert_eq!(b.compact_tick(&mut sb).await.unwrap(), None, "the loser does not compact");
    assert_eq!(sb.time, 1, "the loser adopts the winner's compact time: {sb:?}");

    // Second interval: A compacts to what it saw an interval ago; B again stands aside.
    let newer = write(&a, "/registry/compaction/k2").await;
    assert_eq!(a.compact_tick(&mut sa).await.unwrap(), Some(seen_by_a));
    assert_eq!(b.compact_tick(&mut sb).await.unwrap(), None, "one compaction per interval");
    assert_eq!(sb.time, 2, "{sb:?}");

    // etcd refuses reads below the compacted revision, and keeps what is at or above it.
    let (ok, text) = etcdctl_get_at(&etcd, "/registry/compaction/k1", old - 1);
    assert!(
        !ok && text.contains("required revision has been compacted"),
        "etcdctl get --rev={}: {text}",
        old - 1
    );
    let (ok, text) = etcdctl_get_at(&etcd, "/registry/compaction/k2", newer);
    assert!(ok && text.contains("/registry/compaction/k2"), "etcdctl get --rev={newer}: {text}");
    let (ok, text) = etcdctl_get_at(&etcd, COMPACT_REV_KEY, 0);
    assert!(ok && text.contains(&seen_by_a.to_string()), "the key holds the revision compacted to: {text}");
    match a.watch("/registry/compaction/", old - 1).await {
        Ok(mut w) => match futures::StreamExt::next(&mut w).await {
            Some(Err(Error::Compacted { compact_revision, .. })) => assert_eq!(compact_revision, seen_by_a),
            other => panic!("a watch below the compacted revision must fail Compacted, got {other:?}"),
        },
        Err(e) => panic!("watch: {e}"),
    }

    // B wins the next interval (its compact time is current now) and compacts in turn.
    let (before, _) = (sb.revision, write(&b, "/registry/compaction/k3").await);
    assert_eq!(b.compact_tick(&mut sb).await.unwrap(), Some(before));
    assert_eq!(a.compact_tick(&mut sa).await.unwrap(), None, "A lost this interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_task_compacts_every_interval() {
    let etcd = EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let store = connect(&etcd).await;
    let old = write(&store, "/registry/compaction/task").await;
    let compactor = store.run_compactor(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        // Keep writing, so each tick has a newer revision to compact to next time.
        write(&store, &format!("/registry/compaction/t{i}")).await;
        let opts = ListOptions { prefix: "/registry/compaction/".into(), revision: old, ..Default::default() };
        match store.list(opts).await {
            Err(Error::Compacted { compact_revision, .. }) => {
                assert!(compact_revision > old, "{compact_revision}");
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("list at {old}: {e}"),
        }
        assert!(Instant::now() < deadline, "nothing compacted within 30 s at a 200 ms interval");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    compactor.abort();
    let (ok, text) = etcdctl_get_at(&etcd, "/registry/compaction/task", old);
    assert!(!ok && text.contains("required revision has been compacted"), "{text}");
}
