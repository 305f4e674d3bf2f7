//! Faults under the embedded store (issue 19, item 5): a full disk. Needs root (it mounts a small
//! tmpfs as the data dir, and unmounts it after); fails, never skips, without it.

use std::time::Duration;

use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::testing::disk::{fill, Tmpfs};
use store::{Error, Store};

fn key(i: usize) -> String {
    format!("/registry/configmaps/default/cm-{i:06}")
}

/// A full disk: writes fail with a clear error naming the cause (no panic, the store stays up),
/// reads keep working, and once space is freed writes resume with nothing acknowledged lost, also
/// after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_clearly_keeps_reads_and_recovers() {
    let fs = Tmpfs::mount("24m");
    let data = fs.path().join("data");
    let mut cfg = EmbeddedConfig::new(&data);
    cfg.compaction_interval = Duration::ZERO;
    let store = EmbeddedStore::open(cfg.clone()).await.unwrap();
    // Some data before the disk fills.
    let mut acked = Vec::new();
    for i in 0..50 {
        let kv = store.create(&key(i), vec![b'x'; 1000], 0).await.unwrap();
        acked.push((key(i), kv.mod_revision));
    }
    let filler = fill(fs.path(), 256 * 1024);

    // Write until the disk is full.
    let value = vec![b'y'; 16 * 1024];
    let mut failure = None;
    for i in 50..20_000 {
        match store.create(&key(i), value.clone(), 0).await {
            Ok(kv) => acked.push((key(i), kv.mod_revision)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("writes fail once the disk is full");
    eprintln!("full disk: {} writes acknowledged, then: {failure}", acked.len());
    let text = failure.to_string();
    assert!(
        text.contains("No space left on device") || text.contains("no space"),
        "the error names the cause: {text}"
    );
    assert!(matches!(failure, Error::Internal(_) | Error::Unavailable(_)), "{failure:?}");
    // Still full: another write fails the same way, and reads keep working.
    assert!(store.create("/registry/configmaps/default/again", value.clone(), 0).await.is_err());
    for (k, rev) in acked.iter().step_by(7) {
        let kv = store.get(k).await.unwrap_or_else(|e| panic!("reading {k} on a full disk: {e}"));
        assert_eq!(kv.mod_revision, *rev);
    }
    let before = store.current_revision().await.unwrap();

    // Space freed: writes resume.
    std::fs::remove_file(&filler).unwrap();
    let mut resumed = None;
    for attempt in 0..50 {
        match store.create(&format!("/registry/configmaps/default/after-{attempt}"), value.clone(), 0).await {
            Ok(kv) => {
                resumed = Some(kv);
                break;
            }
            Err(e) => {
                eprintln!("write after freeing space: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let resumed = resumed.expect("writes resume once space is freed");
    assert!(resumed.mod_revision > before);
    for (k, rev) in &acked {
        assert_eq!(store.get(k).await.unwrap().mod_revision, *rev, "{k}");
    }
    store.shutdown().await;
    drop(store);

    // Nothing lost across a reopen either.
    let store = EmbeddedStore::open(cfg).await.unwrap();
    for (k, rev) in &acked {
        assert_eq!(store.get(k).await.unwrap_or_else(|e| panic!("{k} after reopen: {e}")).mod_revision, *rev);
    }
    assert!(store.current_revision().await.unwrap() >= resumed.mod_revision);
    store.shutdown().await;
}

/// A corrupted or emptied store file is refused, naming the file; the store never opens it as an
/// empty store (or panics on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_empty_store_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmbeddedConfig::new(dir.path());
    cfg.compaction_interval = Duration::ZERO;
    let file = dir.path().join(store::embedded::DB_FILE);
    let store = EmbeddedStore::open(cfg.clone()).await.unwrap();
    for i in 0..300 {
        store.create(&key(i), vec![b'v'; 2000], 0).await.unwrap();
    }
    store.shutdown().await;
    drop(store);
    let good = std::fs::read(&file).unwrap();

    // Garbage over a stretch in the middle of the file (data pages), and over the header.
    for (what, at) in [("middle", good.len() / 2), ("header", 0)] {
        let mut bad = good.clone();
        for (i, b) in bad[at..at + 4096].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(7);
        }
        std::fs::write(&file, &bad).unwrap();
        let err = match EmbeddedStore::open(cfg.clone()).await {
            Ok(_) => panic!("a store file with garbage in its {what} was opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&file.display().to_string()), "the error names the file: {err}");
        assert!(err.contains("refusing to start"), "{err}");
    }
    // Emptied: never a silently empty store.
    std::fs::write(&file, b"").unwrap();
    let err = EmbeddedStore::open(cfg.clone()).await.err().expect("an empty store file is refused").to_string();
    assert!(err.contains(&file.display().to_string()) && err.contains("empty"), "{err}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "the refused file is left as it was");

    // The good file opens again with everything in it.
    std::fs::write(&file, &good).unwrap();
    let store = EmbeddedStore::open(cfg).await.unwrap();
    assert_eq!(store.get(&key(299)).await.unwrap().value.len(), 2000);
    store.shutdown().await;
}
