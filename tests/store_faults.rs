//! Faults under the embedded store, through the real binary and real clients (issue 19, item 5): a
//! full disk (a small tmpfs as the data dir: needs root, fails without it), kill -9 at random
//! moments during a write load, and a corrupted store file.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, stderr, stdout, Kplane};
use etcd_client::Client;
use store::testing::disk::{fill, Tmpfs};

/// A ConfigMap manifest with about `size` bytes of data.
fn big_configmap(name: &str, size: usize) -> String {
    let data = "x".repeat(size);
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"v":"{data}"}}}}"#
    )
}

/// A full disk under `kplane apiserver`: kubectl's creates fail with a 500 naming the cause (no
/// panic, the process stays up), reads keep working, and once space is freed creates succeed again
/// with every acknowledged one there, also after a restart.
#[test]
fn a_full_disk_fails_writes_with_the_cause_and_recovers_when_space_is_freed() {
    let fs = Tmpfs::mount("40m");
    let data = fs.path().join("data");
    let port = free_port();
    let mut kp = Kplane::start_cmd("apiserver", &data, port, &[]);
    let filler = fill(fs.path(), 2 << 20);

    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let name = format!("big-{i:03}");
        let out = kp.kubectl_stdin(&["create", "-f", "-"], &big_configmap(&name, 300_000));
        if out.status.success() {
            acked.push(name);
        } else {
            refusal = Some(stderr(&out));
            break;
        }
    }
    let refusal = refusal.expect("creates fail once the disk is full");
    eprintln!("full disk: {} creates acknowledged, then: {refusal}", acked.len());
    assert!(refusal.contains("InternalError") || refusal.contains("500"), "an HTTP 500: {refusal}");
    assert!(refusal.contains("No space left on device"), "the cause is named: {refusal}");
    assert!(kp.child.try_wait().unwrap().is_none(), "kplane exited on a full disk");

    // Still full: reads work (a list, a get), writes keep failing with the cause.
    let listed = kp.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for name in &acked {
        assert!(listed.contains(&format!("configmap/{name}")), "{name} missing from the list on a full disk");
    }
    if let Some(first) = acked.first() {
        kp.kubectl_ok(&["get", "configmap", first]);
    }
    let again = kp.kubectl_stdin(&["create", "-f", "-"], &big_configmap("still-full", 300_000));
    assert!(
        !again.status.success() && stderr(&again).contains("No space left on device"),
        "{}",
        stderr(&again)
    );

    // Space freed: creates succeed again, nothing acknowledged is lost.
    std::fs::remove_file(&filler).unwrap();
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &big_configmap("after-free", 1000));
    assert!(out.status.success(), "create after freeing space: {}", stderr(&out));
    acked.push("after-free".into());
    let listed = kp.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for name in &acked {
        assert!(listed.contains(&format!("configmap/{name}")), "{name} lost");
    }
    assert!(kp.terminate().success(), "a clean stop after the fault");
    let kp = Kplane::start_cmd("apiserver", &data, port, &[]);
    let listed = kp.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for name in &acked {
        assert!(listed.contains(&format!("configmap/{name}")), "{name} lost across a restart");
    }
}

/// A cheap pseudo-random number (the clock's nanoseconds, mixed), for random kill moments.
fn random_below(n: u64) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % n
}

/// kill -9 at a random moment during a write load through the embedded store's etcd endpoint
/// (the real etcd-client), 20 rounds: after each restart every acknowledged write is there with
/// the revision it was acknowledged at, and the revision never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_write_in_20_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut all_acked: Vec<(String, i64)> = Vec::new();
    let mut last_revision = 0;
    for round in 0..20 {
        let mut kp = tokio::task::block_in_place(|| Kplane::start_cmd("apiserver", dir.path(), port, &[]));
        let mut client = Client::connect([kp.endpoint()], None).await.unwrap();
        // What earlier rounds acknowledged is all there, at its revision; the revision did not go back.
        let now = client.get("/registry/none", None).await.unwrap().header().unwrap().revision();
        assert!(now >= last_revision, "round {round}: revision went back from {last_revision} to {now}");
        for (key, rev) in &all_acked {
            let got = client.get(key.as_str(), None).await.unwrap();
            let kv =
                got.kvs().first().unwrap_or_else(|| panic!("round {round}: acknowledged {key} at {rev} lost"));
            assert_eq!(kv.mod_revision(), *rev, "round {round}: {key}");
        }
        let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let mut writers = Vec::new();
        for task in 0..4 {
            let (ep, acked) = (kp.endpoint(), acked.clone());
            writers.push(tokio::spawn(async move {
                let Ok(mut client) = Client::connect([ep], None).await else { return };
                for i in 0.. {
                    let key = format!("/registry/crash/{round:02}/{task}/{i:06}");
                    match client.put(key.as_str(), vec![b'v'; 200], None).await {
                        Ok(resp) => acked.lock().unwrap().push((key, resp.header().unwrap().revision())),
                        Err(_) => return,
                    }
                }
            }));
        }
        // A random moment 50..800 ms into the load.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(50 + random_below(750))).await;
        kp.kill9();
        for w in writers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("writers stop after the kill")
                .unwrap();
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        eprintln!(
            "round {round}: killed after {:?} with {} writes acknowledged",
            started.elapsed(),
            acked.len()
        );
        last_revision = last_revision.max(acked.iter().map(|(_, r)| *r).max().unwrap_or(0));
        all_acked.extend(acked);
    }
    assert!(all_acked.len() > 500, "too few writes to prove anything: {}", all_acked.len());
    // A last start checks the last round.
    let kp = tokio::task::block_in_place(|| Kplane::start_cmd("apiserver", dir.path(), port, &[]));
    let mut client = Client::connect([kp.endpoint()], None).await.unwrap();
    let now = client.get("/registry/none", None).await.unwrap().header().unwrap().revision();
    assert!(now >= last_revision, "revision went back from {last_revision} to {now}");
    let listed = client
        .get("/registry/crash/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    let stored: std::collections::HashMap<&[u8], i64> =
        listed.kvs().iter().map(|kv| (kv.key(), kv.mod_revision())).collect();
    for (key, rev) in &all_acked {
        assert_eq!(stored.get(key.as_bytes()), Some(rev), "acknowledged {key} lost or changed");
    }
}

/// Runs `kplane apiserver` on `data_dir` expecting it to refuse to start; returns its stderr.
fn refused_start(data_dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["apiserver", "--data-dir"])
        .arg(data_dir)
        .args(["--etcd-listen", &format!("127.0.0.1:{}", free_port()), "--secure-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("kplane started on a bad store file: {}", stdout(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!stdout(&out).contains("kplane: ready"), "{}", stdout(&out));
    stderr(&out)
}

/// A corrupted store file (garbage over part of it) or an emptied one: `kplane` refuses to start
/// with a message naming the file, and never starts on an empty store.
#[test]
fn a_corrupted_store_file_is_refused_at_startup_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    for i in 0..20 {
        kp.kubectl_ok(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            &format!("--from-literal=k={}", "v".repeat(3000)),
        ]);
    }
    assert!(kp.terminate().success());
    drop(kp);
    let file = dir.path().join("store.redb");
    let good = std::fs::read(&file).unwrap();

    let mut bad = good.clone();
    let at = good.len() / 2;
    for (i, b) in bad[at..at + 8192].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(1);
    }
    std::fs::write(&file, &bad).unwrap();
    let err = refused_start(dir.path());
    assert!(err.contains(&file.display().to_string()) && err.contains("corrupt"), "{err}");

    std::fs::write(&file, b"").unwrap();
    let err = refused_start(dir.path());
    assert!(err.contains(&file.display().to_string()) && err.contains("empty"), "{err}");

    // Put back, it starts with everything.
    std::fs::write(&file, &good).unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    assert_eq!(kp.kubectl_ok(&["get", "configmaps", "-o", "name"]).matches("configmap/cm-").count(), 20);
}
