//! `kplane bench net`, run briefly as a user would: every path has a row with nonzero figures and
//! no errors, the pod measured is the one in the EndpointSlice the controller wrote, and the run
//! leaves no iptables rule nor nftables table of its own behind. Behaviour, not speed: the figures are not judged.

use std::process::{Command, Output};

fn bench(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["bench", "net", "--seconds", "1", "--concurrency", "4"])
        // Ranges of their own, so that tests running side by side never share an address.
        .args(["--cluster-cidr", "127.242.0.0/16", "--service-cluster-ip-range", "127.109.0.0/16"])
        .args(["--ingress-http-address", "127.0.85.1:8080", "--nginx-address", "127.0.85.2:8080"])
        .args(extra)
        .output()
        .expect("run kplane bench net")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The report's row for `path`: (req/s, errors).
fn row(report: &str, path: &str) -> Option<(f64, u64)> {
    let line = report.lines().find(|l| l.split_whitespace().next() == Some(path))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    Some((words.get(1)?.parse().ok()?, words.get(2)?.parse().ok()?))
}

/// Runs against wrk and nginx, which CI installs: without them this fails rather than skips.
#[test]
fn bench_net_measures_every_path_on_the_controller_written_slice() {
    let out = bench(&["--load", "wrk", "--nginx", "/usr/sbin/nginx"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    println!("{report}");

    let backend = report.lines().find(|l| l.starts_with("backend: ")).expect("a backend line");
    assert!(backend.contains("pod default/kplane-net-bench-"), "{backend}");
    assert!(backend.contains("managed-by endpointslice-controller.k8s.io"), "{backend}");
    assert!(backend.contains(" at 127.242."), "the pod IP is in the cluster's pod range: {backend}");
    assert!(backend.contains("(ClusterIP 127.109."), "{backend}");

    let mut paths = vec!["direct", "clusterip-userspace", "ingress", "nginx"];
    if is_root() {
        paths.extend(["clusterip-iptables", "clusterip-nftables"]);
    } else {
        assert!(report.contains("clusterip-iptables   not measured:"), "{report}");
        assert!(report.contains("clusterip-nftables   not measured:"), "{report}");
    }
    for path in paths {
        let (per_sec, errors) = row(&report, path).unwrap_or_else(|| panic!("no {path} row:\n{report}"));
        assert!(per_sec > 0.0, "{path}: {report}");
        assert_eq!(errors, 0, "{path}: {report}");
    }
    assert!(report.contains("vs nginx"), "{report}");

    if is_root() {
        let saved = Command::new("iptables-save").output().expect("iptables-save");
        let rules = String::from_utf8_lossy(&saved.stdout);
        assert!(!rules.contains("default/kplane-net-bench"), "the bench left rules behind:\n{rules}");
        let table = Command::new("nft").args(["list", "table", "ip", "kplane-proxy"]).output().expect("nft");
        assert!(!table.status.success(), "the bench left its nftables table behind");
        assert!(String::from_utf8_lossy(&table.stderr).contains("No such file or directory"), "{table:?}");
    }
}

#[test]
fn bench_net_refuses_bad_flags_clearly() {
    let out = bench(&["--load", "ab"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--load \"ab\": say wrk or builtin"), "{out:?}");
    let out = bench(&["--iptables", "yes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iptables \"yes\": say auto or off"), "{out:?}");
    let out = bench(&["--nftables", "on"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nftables \"on\": say auto or off"), "{out:?}");
}
