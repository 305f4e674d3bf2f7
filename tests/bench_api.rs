//! `kplane bench api`, run small as a user would: every row is printed with nonzero figures (the
//! headline over HTTPS as an RBAC-bound user, the insecure server beside it, the embedded store, the
//! etcd anchors), and bad flags are refused with a clear error. Behaviour, not speed: the figures
//! are not judged.

use std::process::{Command, Output};

fn bench(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["bench", "api"])
        .args(extra)
        .output()
        .expect("run kplane bench api")
}

/// The numbers on the report's line that starts with `label` (ratios' `x`, `a/b` pairs and
/// parentheses taken apart).
fn numbers(report: &str, label: &str) -> Vec<f64> {
    let line =
        report.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no row {label:?}:\n{report}"));
    line[label.len()..]
        .split(|c: char| c.is_whitespace() || c == '/' || c == '(' || c == ')' || c == ',')
        .filter_map(|w| w.trim_end_matches('x').parse::<f64>().ok())
        .collect()
}

#[test]
fn bench_api_prints_every_row_with_nonzero_figures() {
    let out = bench(&[
        "--creates",
        "30",
        "--rounds",
        "2",
        "--gets",
        "30",
        "--list-pods",
        "20",
        "--watchers",
        "2",
        "--watch-events",
        "3",
        "--concurrency",
        "3",
    ]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(report.contains("30 creates per configuration in 2 interleaved rounds"), "{report}");
    // The anchors' values are as big as what an API create stores: a ConfigMap with a 200-byte value
    // and its metadata.
    let bytes = numbers(&report, "default configuration:");
    assert!(bytes.iter().any(|b| *b > 250.0), "{report}");
    // Rows with an anchor: ours, the anchor, the ratio, all nonzero.
    for label in [
        "creates/s, default, real etcd",
        "creates/s, --insecure-http, same etcd",
        "creates/s, default, embedded store",
        "etcd create txns/s (vs raw etcd puts)",
        "GETs/s, default (vs etcd get)",
        "GETs/s, --insecure-http (vs etcd get)",
        "server-side applies/s, default (vs updates/s)",
    ] {
        let n = numbers(&report, label);
        assert!(n.len() >= 3 && n[..3].iter().all(|v| *v > 0.0), "{label}: {n:?}\n{report}");
    }
    // Latency rows: p50/p99 of ours and of the anchor.
    for label in [
        "create p50/p99 ms, default, real etcd",
        "create p50/p99 ms, --insecure-http",
        "create p50/p99 ms, default, embedded store",
        "GET p50/p99 ms, default",
    ] {
        let n = numbers(&report, label);
        assert!(n.len() >= 4 && n[..4].iter().all(|v| *v > 0.0), "{label}: {n:?}\n{report}");
    }
    let updates = numbers(&report, "updates/s, default (API merge PATCH)");
    assert!(updates.first().is_some_and(|v| *v > 0.0), "{report}");
    let list = numbers(&report, "LIST of pods, default, best of 3");
    assert!(list[0] > 0.0, "{report}");
    assert_eq!(list[1], 20.0, "the LIST holds every pod: {report}");
    let cached = numbers(&report, "LIST of pods, resourceVersion=0 (watch cache)");
    assert!(cached.len() >= 3 && cached[..3].iter().all(|v| *v > 0.0), "{report}");
    let watch = numbers(&report, "watch delivery, default");
    assert!(watch.len() >= 3 && watch[..3].iter().all(|v| *v > 0.0), "{report}");
    assert!(numbers(&report, "idle RSS of kplane apiserver, default")[0] > 0.0, "{report}");
}

#[test]
fn bench_api_refuses_bad_flags_clearly() {
    let refused = |args: &[&str], says: &str| {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(&["--concurrency", "0"], "invalid value '0' for '--concurrency <CONCURRENCY>'");
    refused(&["--rounds", "0"], "invalid value '0' for '--rounds <ROUNDS>'");
    refused(&["--creates=-5"], "invalid value '-5' for '--creates <CREATES>'");
    refused(&["--creates", "2", "--rounds", "3"], "--creates 2 is fewer than --rounds 3");
}
