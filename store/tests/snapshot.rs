//! Backups of the embedded store: snapshot, restore, defragment, Hash and HashKV.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::embedded::txn::RangeRequest;
use store::embedded::{restore, snapshot_status, EmbeddedConfig, EmbeddedStore, SnapshotError, DB_FILE};
use store::{KeyValue, Store};

async fn open(dir: &Path) -> EmbeddedStore {
    let mut cfg = EmbeddedConfig::new(dir);
    cfg.compaction_interval = Duration::ZERO;
    EmbeddedStore::open(cfg).await.unwrap()
}

fn key(i: usize) -> String {
    format!("/registry/configmaps/default/cm-{i:04}")
}

/// Every live key-value at `revision` (0: current).
fn all_at(store: &EmbeddedStore, revision: i64) -> Vec<KeyValue> {
    store
        .range(&RangeRequest { key: b"/".to_vec(), range_end: vec![0], revision, ..Default::default() })
        .unwrap()
        .kvs
}

/// Copies a snapshot to a file, as `etcdctl snapshot save` does with the stream.
async fn save(store: &EmbeddedStore, to: &Path) -> i64 {
    let mut snap = store.snapshot().await.unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    let copied = std::io::copy(&mut snap.file, &mut out).unwrap();
    assert_eq!(copied, snap.size);
    snap.revision
}

/// Puts, updates, deletes, a multi-key transaction, a leased key and a compaction.
async fn history(store: &EmbeddedStore) {
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(store.create(&key(i), format!("v0-{i}").into_bytes(), 0).await.unwrap().mod_revision);
    }
    for (i, rev) in revs.iter_mut().enumerate().take(30) {
        *rev = store.update(&key(i), format!("v1-{i}").into_bytes(), *rev, 0).await.unwrap().mod_revision;
    }
    for i in 40..45 {
        store.delete(&key(i), None).await.unwrap();
    }
    let middle = store.current_revision().await.unwrap();
    for (i, rev) in revs.iter_mut().enumerate().take(10) {
        *rev = store.update(&key(i), format!("v2-{i}").into_bytes(), *rev, 0).await.unwrap().mod_revision;
    }
    let lease = store.grant_lease(3600).await.unwrap();
    store.create("/registry/events/default/e1", b"event".to_vec(), lease).await.unwrap();
    store.compact(middle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restores_every_key_with_its_revisions_history_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("a")).await;
    history(&src).await;
    let file = dir.path().join("snap.db");
    let revision = save(&src, &file).await;
    let (current, compacted) = src.revisions().unwrap();
    assert_eq!(revision, current);
    // What etcdctl checks: whole 512-byte blocks, then the SHA-256.
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);

    let status = snapshot_status(&file).unwrap();
    assert_eq!((status.revision, status.compact_revision), (current, compacted));
    assert_eq!(status.keys, all_at(&src, 0).len() as u64);
    assert_eq!(status.leases, 1);
    assert_eq!(status.hash, src.hash().await.unwrap().0, "the snapshot's hash is the store's Hash");

    let target = dir.path().join("b");
    let restored = restore(&file, &target).unwrap();
    assert_eq!(restored, status);
    assert!(!target.join(format!("{DB_FILE}.restoring")).exists());
    let dst = open(&target).await;
    assert_eq!(dst.revisions().unwrap(), (current, compacted));
    assert_eq!(all_at(&dst, 0), all_at(&src, 0), "same keys, values and revisions");
    // History since the compaction is there too: reads at an old revision agree.
    assert_eq!(all_at(&dst, compacted + 3), all_at(&src, compacted + 3));
    assert_eq!(dst.hash_kv(0).await.unwrap(), src.hash_kv(0).await.unwrap());
    assert_eq!(dst.hash().await.unwrap().0, src.hash().await.unwrap().0);
    assert_eq!(dst.lease_ids().unwrap(), src.lease_ids().unwrap());
    let info = dst.lease_info(dst.lease_ids().unwrap()[0], true).unwrap();
    assert_eq!(info.keys, vec!["/registry/events/default/e1".to_string()]);
    // The restored store goes on from the snapshot's revision.
    let kv = dst.create(&key(999), b"new".to_vec(), 0).await.unwrap();
    assert_eq!(kv.mod_revision, current + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_or_an_existing_store_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("a")).await;
    history(&src).await;
    let file = dir.path().join("snap.db");
    save(&src, &file).await;
    let good = std::fs::read(&file).unwrap();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    cases.push(("flipped", flipped));
    cases.push(("truncated", good[..good.len() - 100].to_vec()));
    cases.push(("digest only", good[good.len() - 32..].to_vec()));
    cases.push(("empty", Vec::new()));
    let mut bbolt_like = vec![0u8; 4096];
    bbolt_like[16..20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    cases.push(("not a kplane snapshot", bbolt_like));
    for (what, bytes) in cases {
        let bad = dir.path().join("bad.db");
        std::fs::write(&bad, &bytes).unwrap();
        let target = dir.path().join("restore-target");
        let err = restore(&bad, &target).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains("corrupt"), "{what}: {err}");
        assert!(snapshot_status(&bad).is_err(), "{what}");
        let left: Vec<_> = std::fs::read_dir(&target)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: restore left {left:?}");
    }

    let missing = restore(&dir.path().join("nope.db"), &dir.path().join("t2")).unwrap_err();
    assert!(matches!(missing, SnapshotError::Io { .. }), "{missing}");

    // A data directory that already holds a store is never overwritten.
    let existing = dir.path().join("a");
    let before = std::fs::read(existing.join(DB_FILE)).unwrap();
    let err = restore(&file, &existing).unwrap_err();
    assert!(matches!(err, SnapshotError::StoreExists(_)), "{err}");
    assert!(err.to_string().contains("already holds a store"), "{err}");
    assert_eq!(std::fs::read(existing.join(DB_FILE)).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_during_writes_is_the_store_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("a")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, stop) = (src.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut rev = 0;
            while !stop.load(Ordering::Relaxed) {
                // Each writer rewrites its own key and adds new ones, so both kinds of change race
                // the snapshot.
                let own = format!("/registry/w/{w}");
                rev = if rev == 0 {
                    store.create(&own, n.to_string().into_bytes(), 0).await.unwrap().mod_revision
                } else {
                    store.update(&own, n.to_string().into_bytes(), rev, 0).await.unwrap().mod_revision
                };
                store.create(&format!("/registry/w/{w}/{n}"), vec![b'x'; 512], 0).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    // Let some history build up, then take snapshots while the writers go on.
    while src.current_revision().await.unwrap() < 400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut files = Vec::new();
    for i in 0..3 {
        let file = dir.path().join(format!("snap-{i}.db"));
        let rev = save(&src, &file).await;
        files.push((file, rev));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        assert!(w.await.unwrap() > 0);
    }
    for (i, (file, rev)) in files.iter().enumerate() {
        let target = dir.path().join(format!("r-{i}"));
        let status = restore(file, &target).unwrap();
        assert_eq!(status.revision, *rev);
        let dst = open(&target).await;
        assert_eq!(all_at(&dst, 0), all_at(&src, *rev), "snapshot {i} is the store at revision {rev}");
        assert_eq!(dst.hash_kv(0).await.unwrap().hash, src.hash_kv(*rev).await.unwrap().hash);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_shrinks_the_file_after_deletes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let value = vec![b'v'; 16 * 1024];
    for i in 0..1000 {
        store.create(&key(i), value.clone(), 0).await.unwrap();
    }
    for i in 0..1000 {
        store.delete(&key(i), None).await.unwrap();
    }
    store.create(&key(5000), b"survivor".to_vec(), 0).await.unwrap();
    store.compact(store.current_revision().await.unwrap()).await.unwrap();
    let before = store.db_size();
    assert!(before > 16_000_000, "the file holds the values: {before} bytes");
    let hash = store.hash_kv(0).await.unwrap();
    // A watcher and a reader stay open across the defragmentation.
    let _watch = store.watch("/registry/", 0).await.unwrap();
    store.defragment().await.unwrap();
    let after = store.db_size();
    assert!(after * 4 < before, "defragment shrank the file only from {before} to {after} bytes");
    assert_eq!(store.stats().unwrap().log_entries, 1, "physical compaction finished first");
    assert_eq!(store.hash_kv(0).await.unwrap(), hash, "defragmenting changes no data");
    assert_eq!(store.get(&key(5000)).await.unwrap().value, b"survivor");
    store.create(&key(5001), b"after".to_vec(), 0).await.unwrap();
    assert_eq!(store.get(&key(5001)).await.unwrap().value, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_is_stable_follows_changes_and_refuses_compacted_and_future_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    history(&store).await;
    let (current, compacted) = store.revisions().unwrap();
    let h = store.hash_kv(0).await.unwrap();
    assert_eq!((h.revision, h.compact_revision, h.hash_revision), (current, compacted, current));
    assert_eq!(store.hash_kv(0).await.unwrap(), h, "stable across calls");
    assert_eq!(store.hash_kv(current).await.unwrap().hash, h.hash);
    let older = store.hash_kv(current - 1).await.unwrap();
    assert_ne!(older.hash, h.hash);
    assert_eq!(older.hash_revision, current - 1);
    store.create(&key(777), b"x".to_vec(), 0).await.unwrap();
    let changed = store.hash_kv(0).await.unwrap();
    assert_ne!(changed.hash, h.hash);
    assert_eq!(store.hash_kv(current).await.unwrap().hash, h.hash, "a hash at a revision never changes");
    assert!(matches!(store.hash_kv(compacted).await, Err(store::Error::Compacted { .. })));
    assert!(matches!(store.hash_kv(current + 100).await, Err(store::Error::FutureRevision { .. })));
}

/// The same history through the etcd API on a real etcd and on the embedded endpoint hashes the
/// same: HashKV is etcd's definition, not a look-alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_equals_real_etcds_for_the_same_history() {
    use etcd_client::{Client, CompactionOptions, DeleteOptions, Txn, TxnOp};
    let etcd = store::testing::EtcdProcess::start().await.unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let embedded = open(dir.path()).await;
    let listener = store::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(store::server::serve(embedded.clone(), listener, async {
        let _ = stopped.await;
    }));
    let mut ours = Client::connect([format!("http://{addr}")], None).await.unwrap();
    let mut theirs = Client::connect([etcd.endpoint()], None).await.unwrap();
    for c in [&mut ours, &mut theirs] {
        c.put("/registry/a", "1", None).await.unwrap();
        c.put("/registry/b", "2", None).await.unwrap();
        let two =
            Txn::new().and_then([TxnOp::put("/registry/c", "3", None), TxnOp::put("/registry/d", "4", None)]);
        c.txn(two).await.unwrap();
        c.put("/registry/a", "1 again", None).await.unwrap();
        c.delete("/registry/b", None).await.unwrap();
        c.delete("/registry/c", Some(DeleteOptions::new().with_range("/registry/e"))).await.unwrap();
        c.put("/registry/e", "5", None).await.unwrap();
        c.put("/registry/b", "back", None).await.unwrap();
        c.compact(6, Some(CompactionOptions::new().with_physical())).await.unwrap();
        c.put("/registry/f", "6", None).await.unwrap();
    }
    let revision = ours.get("/registry/a", None).await.unwrap().header().unwrap().revision();
    assert_eq!(revision, theirs.get("/registry/a", None).await.unwrap().header().unwrap().revision());
    for rev in [0, 7, 8, revision] {
        let a = ours.hash_kv(rev).await.unwrap();
        let b = theirs.hash_kv(rev).await.unwrap();
        assert_eq!(a.hash(), b.hash(), "HashKV at revision {rev}");
        assert_eq!(a.compact_version(), b.compact_version());
    }
    let err = ours.hash_kv(6).await.unwrap_err().to_string();
    assert!(err.contains("compacted"), "{err}");
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
