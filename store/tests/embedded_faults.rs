//! Faults under the embedded store (issue 19, item 5): a full disk. Needs root (it mounts a small
//! tmpfs as the data dir, and unmounts it after); fails, never skips, without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::{Error, Store};

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("kplane-fulldisk-").tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount could not run");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (this test must not be skipped): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system holding `dir` with a file, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let stat = nix_free_bytes(dir);
    let filler = dir.join("filler");
    let size = stat.saturating_sub(leave);
    let f = std::fs::File::create(&filler).unwrap();
    // tmpfs allocates on write, not on set_len: write the bytes.
    use std::io::Write;
    let mut w = std::io::BufWriter::new(f);
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if w.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = w.flush();
    filler
}

/// Free bytes of the file system holding `dir`, from `df`.
fn nix_free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df prints the free bytes")
}

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
