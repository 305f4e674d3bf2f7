//! The embedded store's etcd metrics (etcd 3.4's names, types and buckets), read as a user reads an
//! etcd member's: `curl http://127.0.0.1:<etcd port>/metrics` on the endpoint etcdctl talks to, and
//! through the API server's `/metrics` with the real `kubectl get --raw`. Parsed with the Python
//! `prometheus_client` OpenMetrics parser; the values are checked against what etcdctl and the data
//! file say, and against known writes.

mod common;
mod prom;

use std::process::{Command, Output};

use common::{etcdctl, eventually, free_port, stderr, stdout, Kplane};
use prom::{parse, Scrape};
use serde_json::Value;

/// `curl` of `url` with `flags`: (status line and headers, body).
fn curl(flags: &[&str], url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-"])
        .args(flags)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}: {}", stderr(&out));
    let text = stdout(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no headers in {text}"));
    (head.to_string(), body.to_string())
}

fn scrape_endpoint(kp: &Kplane) -> Scrape {
    let (head, body) = curl(&["--http1.1"], &format!("{}/metrics", kp.endpoint()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    parse(&body)
}

fn etcdctl_ok(kp: &Kplane, args: &[&str]) -> String {
    let out: Output = etcdctl(&kp.endpoint(), args);
    assert!(out.status.success(), "etcdctl {args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// etcdctl's count of every live key (a range's `count` ignores its limit), and the store's revision, from one answer.
fn etcdctl_keys_and_revision(kp: &Kplane) -> (f64, f64) {
    let v: Value = serde_json::from_str(&etcdctl_ok(
        kp,
        &["get", "/", "--from-key", "--keys-only", "--limit", "1", "-w", "json"],
    ))
    .unwrap();
    (v["count"].as_f64().unwrap_or(0.0), v["header"]["revision"].as_f64().unwrap())
}

/// Scrapes until two scrapes around an etcdctl read agree with it (no write in between): live keys
/// and revision as etcdctl sees them.
fn settled(kp: &Kplane) -> Scrape {
    eventually(20, "the metrics agree with etcdctl", || {
        let a = scrape_endpoint(kp);
        let (keys, revision) = etcdctl_keys_and_revision(kp);
        let b = scrape_endpoint(kp);
        let same = |s: &Scrape| {
            s.gauge("etcd_debugging_mvcc_keys_total") == keys
                && s.gauge("etcd_debugging_mvcc_current_revision") == revision
        };
        (same(&a) && same(&b)).then_some(b)
    })
}

const DISK_BUCKETS: [&str; 15] = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512", "1.024", "2.048",
    "4.096", "8.192", "+Inf",
];

#[test]
fn the_etcd_endpoint_serves_etcd_metrics_that_move_with_writes_and_etcdctl_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let db_file = dir.path().join("store.redb");

    let s0 = settled(&kp);
    assert_eq!(s0.gauge("etcd_server_has_leader"), 1.0);
    assert_eq!(s0.buckets("etcd_disk_wal_fsync_duration_seconds", &[]), DISK_BUCKETS);
    assert_eq!(s0.buckets("etcd_disk_backend_commit_duration_seconds", &[]), DISK_BUCKETS);
    assert!(s0.gauge("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    // The bytes in use (redb's allocated pages): some, never more than the file.
    let in_use = |s: &Scrape| s.gauge("etcd_mvcc_db_total_size_in_use_in_bytes");
    assert!(in_use(&s0) > 0.0, "{}", in_use(&s0));
    assert!(in_use(&s0) <= s0.gauge("etcd_mvcc_db_total_size_in_bytes"));

    // N new keys through etcdctl on the same port, one commit each.
    const N: usize = 5;
    for i in 0..N {
        etcdctl_ok(&kp, &["put", &format!("/registry/etcd-metrics/k{i}"), "v"]);
    }
    etcdctl_ok(&kp, &["get", "/registry/etcd-metrics/k0"]);
    let s1 = settled(&kp);
    let n = N as f64;
    assert_eq!(s1.gauge("etcd_debugging_mvcc_keys_total"), s0.gauge("etcd_debugging_mvcc_keys_total") + n);
    assert!(s1.counter("etcd_mvcc_put") >= s0.counter("etcd_mvcc_put") + n);
    assert!(s1.counter("etcd_mvcc_range") >= s0.counter("etcd_mvcc_range") + 1.0);
    for h in ["etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"] {
        assert!(s1.histogram_count(h) >= s0.histogram_count(h) + n, "{h}: every put is a durable commit");
        let inf = s1.value(h, &format!("{h}_bucket"), Some("+Inf"));
        assert_eq!(inf, s1.histogram_count(h), "{h}: +Inf bucket is the count");
    }

    // One range delete is one delete op for etcd, whatever it removes.
    etcdctl_ok(&kp, &["del", "--prefix", "/registry/etcd-metrics/"]);
    let s2 = settled(&kp);
    assert_eq!(s2.gauge("etcd_debugging_mvcc_keys_total"), s0.gauge("etcd_debugging_mvcc_keys_total"));
    assert!(s2.counter("etcd_mvcc_delete") >= s1.counter("etcd_mvcc_delete") + 1.0);

    // The file's size, as the filesystem reports it when no write is in between.
    eventually(20, "the db size is the file's", || {
        let scraped = scrape_endpoint(&kp).gauge("etcd_mvcc_db_total_size_in_bytes");
        (scraped == std::fs::metadata(&db_file).unwrap().len() as f64).then_some(())
    });
    // 2 MiB of values grow the file, and the gauge with it.
    let big = "x".repeat(100 * 1024);
    for i in 0..20 {
        etcdctl_ok(&kp, &["put", &format!("/registry/etcd-metrics-big/k{i}"), &big]);
    }
    let size_before = s2.gauge("etcd_mvcc_db_total_size_in_bytes");
    let s3 = settled(&kp);
    assert!(s3.gauge("etcd_mvcc_db_total_size_in_bytes") > size_before + 1_000_000.0);
    // The bytes in use grow with them (measured before a commit at most every 5 s: small puts
    // give the writer commits to measure in).
    eventually(30, "the bytes in use grown by the 2 MiB", || {
        etcdctl_ok(&kp, &["put", "/registry/etcd-metrics-tick", "t"]);
        let s = scrape_endpoint(&kp);
        (in_use(&s) > in_use(&s2) + 1_000_000.0).then_some(s)
    });
    let s3 = scrape_endpoint(&kp);
    assert!(in_use(&s3) <= s3.gauge("etcd_mvcc_db_total_size_in_bytes"));

    // Compaction.
    let (_, revision) = etcdctl_keys_and_revision(&kp);
    etcdctl_ok(&kp, &["compact", &format!("{revision}")]);
    eventually(20, "the compacted revision", || {
        (scrape_endpoint(&kp).gauge("etcd_debugging_mvcc_compact_revision") == revision).then_some(())
    });

    // Writes through the API server are counted too, and its own /metrics carries the same families.
    let before = settled(&kp).gauge("etcd_debugging_mvcc_keys_total");
    for i in 0..3 {
        kp.kubectl_ok(&["create", "configmap", &format!("m{i}"), "--from-literal=a=b"]);
    }
    let s4 = settled(&kp);
    assert_eq!(s4.gauge("etcd_debugging_mvcc_keys_total"), before + 3.0);
    eventually(20, "kubectl's view agrees with the endpoint's", || {
        let api = parse(&kp.kubectl_ok(&["get", "--raw", "/metrics"]));
        let endpoint = scrape_endpoint(&kp);
        assert_eq!(api.buckets("etcd_disk_wal_fsync_duration_seconds", &[]), DISK_BUCKETS);
        assert_eq!(api.gauge("etcd_server_has_leader"), 1.0);
        assert!(api.gauge("etcd_mvcc_db_total_size_in_use_in_bytes") > 0.0);
        let same = ["etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_current_revision"]
            .iter()
            .all(|g| api.gauge(g) == endpoint.gauge(g));
        same.then_some(())
    });

    // Over HTTP/2 too (how gRPC clients connect), and plain HTTP elsewhere is a 404.
    let (head, body) = curl(&["--http2-prior-knowledge"], &format!("{}/metrics", kp.endpoint()));
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(body.contains("etcd_debugging_mvcc_keys_total"));
    let (head, _) = curl(&["--http1.1"], &format!("{}/nope", kp.endpoint()));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // etcdctl still works on the port: reads, status, a watch, and an unserved service is
    // `Unimplemented`, not a hang.
    assert!(etcdctl_ok(&kp, &["get", "/registry/etcd-metrics-big/k0", "--keys-only"]).contains("k0"));
    // (Maintenance calls with a scheme-less endpoint: see etcd_endpoint.rs on grpc-go's :authority.)
    let bare = format!("127.0.0.1:{}", kp.etcd_port);
    let status = etcdctl(&bare, &["endpoint", "status", "-w", "json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let members = etcdctl(&bare, &["member", "list"]);
    assert!(!members.status.success());
    assert!(stderr(&members).contains("Unimplemented"), "{}", stderr(&members));

    // After a restart the gauges start from the store's state, not from zero.
    let last = settled(&kp);
    let st = kp.terminate();
    assert!(st.success(), "{st:?}");
    let kp = Kplane::start_cmd("apiserver", dir.path(), kp.etcd_port, &[]);
    let again = settled(&kp);
    for g in ["etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_compact_revision"] {
        assert_eq!(again.gauge(g), last.gauge(g), "{g}");
    }
    assert!(
        again.gauge("etcd_debugging_mvcc_current_revision")
            >= last.gauge("etcd_debugging_mvcc_current_revision")
    );
}
