//! `kplane bench cluster`, run small as a user would: every row is printed with nonzero figures
//! (rollout, Endpoints, EndpointSlices, GETs during the rollout, real `kubectl get pods -A`, the
//! startup time, memory), and bad flags are refused with a clear error before any cluster starts.
//! Behaviour, not speed: the figures are not judged.

use std::process::{Command, Output};

fn bench(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["bench", "cluster"])
        .args(extra)
        .output()
        .expect("run kplane bench cluster")
}

/// The numbers on the line that starts with `label` (units and parentheses taken apart).
fn numbers(report: &str, label: &str) -> Vec<f64> {
    let line =
        report.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no row {label:?}:\n{report}"));
    line[label.len()..]
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';' || c == ',')
        .filter_map(|w| w.trim_end_matches(['s', 'x']).trim_end_matches("m").parse::<f64>().ok())
        .collect()
}

#[test]
fn bench_cluster_prints_every_row_with_nonzero_figures() {
    let out = bench(&["--replicas", "12", "--nodes", "2", "--startup-samples", "2", "--timeout", "180"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    for label in [
        "create -> availableReplicas=12",
        "create -> 12 addresses in the Service's Endpoints",
        "single-object GET p99 during the rollout",
        "kubectl get pods -A (a Table of every pod)",
        "startup: kplane up (3 nodes) -> kplane: ready",
    ] {
        let n = numbers(&report, label);
        assert!(n.first().is_some_and(|v| *v > 0.0), "{label}: {n:?}\n{report}");
    }
    // Every address in EndpointSlices of at most 100 endpoints: here one slice of 12.
    let slices = numbers(&report, "create -> 12 addresses in EndpointSlices");
    assert!(slices[..3].iter().all(|v| *v > 0.0), "{slices:?}\n{report}");
    assert!(report.contains("1 slices, at most 12 endpoints each"), "{report}");
    // kubectl's Table has a row per pod (at least the Deployment's).
    let kubectl = report.lines().find(|l| l.starts_with("kubectl get pods -A")).unwrap();
    let rows: usize = kubectl
        .split_whitespace()
        .zip(kubectl.split_whitespace().skip(1))
        .find(|(_, w)| w.starts_with("rows"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{kubectl}"));
    assert!(rows >= 12, "{kubectl}");
    assert!(report.contains("(median of 2,"), "two startup samples: {report}");
    let memory = report.lines().find(|l| l.starts_with("memory: idle")).expect("a memory line");
    assert!(!memory.contains("idle 0.0 MiB"), "{memory}");
    // RSS split into its anonymous (heap) and file-backed parts, each read from the process.
    let anon = numbers(&report, "  of which anonymous (heap, stacks): idle");
    assert!(anon.first().is_some_and(|v| *v > 0.0), "{anon:?}\n{report}");
    let file = numbers(&report, "  and file-backed (the binary's pages touched): idle");
    assert!(file.first().is_some_and(|v| *v > 0.0), "{file:?}\n{report}");
}

#[test]
fn bench_cluster_refuses_bad_flags_clearly() {
    let refused = |args: &[&str], says: &str| {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(
        &["--replicas", "300", "--nodes", "2"],
        "--replicas 300 does not fit on --nodes 2 (110 pods each, 220 in all)",
    );
    refused(&["--replicas", "0"], "--replicas 0: there is nothing to measure");
    refused(&["--nodes", "0"], "invalid value '0' for '--nodes <NODES>'");
    refused(
        &["--workload", "job", "--parallelism", "500", "--nodes", "1"],
        "--parallelism 500 does not fit on --nodes 1",
    );
    refused(&["--startup-samples", "many"], "invalid value 'many' for '--startup-samples <STARTUP_SAMPLES>'");
}
