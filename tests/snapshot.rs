//! Backups of the embedded store with the real tools: `etcdctl snapshot save`, `kplane snapshot
//! restore`/`status`, `etcdctl defrag` and `etcdctl endpoint hashkv`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{etcdctl, free_port, stderr, stdout, Kplane};

fn kplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kplane")).args(args).output().expect("run kplane")
}

/// Every key-value under /registry at `rev` as etcdctl prints it (key, value, revisions, version).
fn registry_at(ep: &str, rev: i64) -> Vec<serde_json::Value> {
    let out = etcdctl(ep, &["get", "/registry/", "--prefix", &format!("--rev={rev}"), "-w", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["kvs"].as_array().cloned().unwrap_or_default()
}

fn snapshot_save(ep: &str, file: &Path) {
    let out = etcdctl(ep, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.status.success(), "snapshot save: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Snapshot saved at"), "{}", stdout(&out));
}

fn status_json(file: &Path) -> serde_json::Value {
    let out = kplane(&["snapshot", "status", "-w", "json", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn data_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn etcdctl_snapshot_save_wipe_restore_brings_back_every_object_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    let ep = kp.endpoint();
    kp.kubectl_ok(&["create", "namespace", "team"]);
    kp.kubectl_ok(&["-n", "team", "create", "configmap", "settings", "--from-literal=colour=blue"]);
    kp.kubectl_ok(&["-n", "team", "label", "configmap", "settings", "tier=gold"]);
    kp.kubectl_ok(&["-n", "team", "create", "secret", "generic", "token", "--from-literal=t=s3cret"]);
    kp.kubectl_ok(&["-n", "team", "create", "configmap", "gone", "--from-literal=a=b"]);
    kp.kubectl_ok(&["-n", "team", "delete", "configmap", "gone"]);
    let put = etcdctl(&ep, &["put", "/registry/kplane-test/raw", "raw value"]);
    assert!(put.status.success(), "{}", stderr(&put));
    let rv = kp.kubectl_ok(&[
        "-n",
        "team",
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);

    let file = dir.path().join("backup.db");
    snapshot_save(&ep, &file);
    let status = status_json(&file);
    let revision = status["revision"].as_i64().unwrap();
    assert!(revision >= rv.parse::<i64>().unwrap());
    let before = registry_at(&ep, revision);
    assert_eq!(status["totalKey"].as_u64().unwrap(), before.len() as u64);
    assert!(before.iter().any(|kv| kv["key"] == serde_json::json!(b64("/registry/configmaps/team/settings"))));

    assert!(kp.terminate().success());
    drop(kp);
    std::fs::remove_dir_all(&data).unwrap();

    let out = kplane(&["snapshot", "restore", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("revision {revision}")), "{}", stdout(&out));

    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    let ep = kp.endpoint();
    assert_eq!(
        registry_at(&ep, revision),
        before,
        "same keys, values and revisions at the snapshot's revision"
    );
    // resourceVersions do not go backwards, and the objects read back through the API unchanged.
    let got = kp.kubectl_ok(&["-n", "team", "get", "configmap", "settings", "-o", "json"]);
    let cm: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(cm["metadata"]["resourceVersion"], serde_json::json!(rv));
    assert_eq!(cm["data"]["colour"], "blue");
    assert_eq!(cm["metadata"]["labels"]["tier"], "gold");
    let secret = kp.kubectl_ok(&["-n", "team", "get", "secret", "token", "-o", "jsonpath={.data.t}"]);
    assert_eq!(secret, "czNjcmV0");
    let gone = kp.kubectl(&["-n", "team", "get", "configmap", "gone"]);
    assert!(!gone.status.success());
    let raw = etcdctl(&ep, &["get", "/registry/kplane-test/raw", "--print-value-only"]);
    assert_eq!(stdout(&raw).trim(), "raw value");
    // New writes continue after the snapshot's revision.
    kp.kubectl_ok(&["-n", "team", "create", "configmap", "later"]);
    let later = kp.kubectl_ok(&[
        "-n",
        "team",
        "get",
        "configmap",
        "later",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert!(later.parse::<i64>().unwrap() > revision);
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn restore_refuses_a_damaged_snapshot_and_an_existing_store_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    let file = dir.path().join("backup.db");
    snapshot_save(&kp.endpoint(), &file);
    drop(kp);

    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let target = dir.path().join("fresh");
    let out = kplane(&["snapshot", "restore", bad.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is corrupt: its SHA-256 does not match"), "{}", stderr(&out));
    assert!(data_files(&target).is_empty(), "left behind: {:?}", data_files(&target));
    let out = kplane(&["snapshot", "status", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));

    let out = kplane(&["snapshot", "restore", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already holds a store"), "{}", stderr(&out));

    let out = kplane(&["snapshot", "restore", file.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(data_files(&target), vec![store::embedded::DB_FILE.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_defrag_shrinks_the_file_and_hashkv_is_stable_until_data_changes() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let ep = kp.endpoint();
    let bare = ep.trim_start_matches("http://").to_string();
    let mut c = etcd_client::Client::connect([ep.clone()], None).await.unwrap();
    let value = vec![b'x'; 64 * 1024];
    for i in 0..300 {
        c.put(format!("/registry/bulk/{i}"), value.clone(), None).await.unwrap();
    }
    let del = etcdctl(&ep, &["del", "/registry/bulk/", "--prefix"]);
    assert_eq!(stdout(&del).trim(), "300");
    let rev = c.get("/registry/none", None).await.unwrap().header().unwrap().revision();
    let compact = etcdctl(&ep, &["compact", &rev.to_string()]);
    assert!(compact.status.success(), "{}", stderr(&compact));
    let db = dir.path().join(store::embedded::DB_FILE);
    let before = std::fs::metadata(&db).unwrap().len();
    assert!(before > 19_000_000, "{before}");

    let hashkv = || {
        let out = etcdctl(&bare, &["endpoint", "hashkv", "-w", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["HashKV"]["hash"].as_u64().unwrap()
    };
    let h = hashkv();

    let defrag = etcdctl(&bare, &["defrag"]);
    assert!(defrag.status.success(), "{}", stderr(&defrag));
    assert!(stdout(&defrag).contains("Finished defragmenting etcd member"), "{}", stdout(&defrag));
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(after * 4 < before, "defrag shrank {before} bytes only to {after}");

    assert_eq!(hashkv(), h, "neither defrag nor a second call changes the hash");
    let put = etcdctl(&ep, &["put", "/registry/bulk/new", "v"]);
    assert!(put.status.success());
    assert_ne!(hashkv(), h, "a write changes the hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_during_writes_is_the_store_at_one_revision() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", &dir.path().join("a"), free_port(), &[]);
    let ep = kp.endpoint();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (ep, stop) = (ep.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                c.put(format!("/registry/w/{w}"), n.to_string(), None).await.unwrap();
                c.put(format!("/registry/w/{w}/{n}"), vec![b'x'; 2048], None).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut c = etcd_client::Client::connect([ep.clone()], None).await.unwrap();
    let current = |r: etcd_client::GetResponse| r.header().map(|h| h.revision()).unwrap_or(0);
    let start = current(c.get("/registry/none", None).await.unwrap());
    // The writers are under way before the snapshot starts.
    while current(c.get("/registry/none", None).await.unwrap()) < start + 30 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let file = dir.path().join("during.db");
    let (ep2, f2) = (ep.clone(), file.clone());
    tokio::task::spawn_blocking(move || snapshot_save(&ep2, &f2)).await.unwrap();
    let revision = status_json(&file)["revision"].as_i64().unwrap();
    // At least the revision seen before it started (a later write may or may not be in it).
    assert!(revision >= start + 30, "snapshot at {revision}, writes seen up to {}", start + 30);
    // The writers go on until the store has moved past the snapshot.
    while current(c.get("/registry/none", None).await.unwrap()) <= revision {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        assert!(w.await.unwrap() > 0, "the writers ran");
    }
    let end = current(c.get("/registry/none", None).await.unwrap());
    assert!(end > revision, "writes went on past the snapshot ({revision} → {end})");
    let expected = registry_at(&ep, revision);
    assert!(expected.iter().any(|kv| kv["key"] == serde_json::json!(b64("/registry/w/0"))));

    let target = dir.path().join("b");
    let out = kplane(&["snapshot", "restore", file.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = Kplane::start_cmd("apiserver", &target, free_port(), &[]);
    assert_eq!(registry_at(&restored.endpoint(), revision), expected);
}
