//! `kplane controller-manager` run alone with `--metrics-bind-address`: its `/metrics` read with
//! `curl` and parsed by the Python `prometheus_client` OpenMetrics parser — the workqueue metrics per
//! controller and its client's `rest_client_*` metrics, moving after known kubectl writes — and
//! `/healthz`; a non-loopback address refused at startup.

mod common;
mod prom;

use std::process::{Child, Command, Stdio};

use common::{eventually, free_port, stderr, stdout, Kplane};
use prom::{parse, Scrape};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sS", "--fail", "--max-time", "10", url]).output().unwrap();
    out.status.success().then(|| stdout(&out))
}

#[test]
fn a_standalone_controller_manager_serves_workqueue_and_rest_client_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _cm = Proc(
        Command::new(env!("CARGO_BIN_EXE_kplane"))
            .args(["controller-manager", "--kubeconfig"])
            .arg(dir.path().join("controller-manager.kubeconfig"))
            .args(["--metrics-bind-address", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let host = kp.api.trim_start_matches("https://").to_string();
    let sa_adds =
        |s: &Scrape| s.sum("workqueue_adds", "workqueue_adds_total", &[("name", "serviceaccount-controller")]);
    let rest = |s: &Scrape, method: &str, code: &str| {
        s.sum(
            "rest_client_requests",
            "rest_client_requests_total",
            &[("component", "kube-controller-manager"), ("method", method), ("code", code), ("host", &host)],
        )
    };
    // Leading, its controllers sync: the default namespace's ServiceAccount passes through its queue.
    let before = eventually(30, "the controller-manager's metrics", || {
        let s = parse(&curl(&format!("{url}/metrics"))?);
        (sa_adds(&s) > 0.0 && rest(&s, "GET", "200") > 0.0).then_some(s)
    });
    assert_eq!(
        before.buckets("rest_client_request_duration_seconds", &[("component", "kube-controller-manager")]),
        ["0.005", "0.025", "0.1", "0.25", "0.5", "1", "2", "4", "8", "15", "30", "60", "+Inf"]
    );
    assert_eq!(
        before.buckets("workqueue_work_duration_seconds", &[("name", "serviceaccount-controller")]),
        ["0.00000001", "0.0000001", "0.000001", "0.00001", "0.0001", "0.001", "0.01", "0.1", "1", "10", "+Inf"]
            .map(|b| if b == "+Inf" { b.to_string() } else { format!("{}", b.parse::<f64>().unwrap()) })
    );
    assert_eq!(before.typ("workqueue_depth"), "gauge");

    // A new namespace: the controller creates its `default` ServiceAccount (a POST answered 201).
    kp.kubectl_ok(&["create", "namespace", "metrics-ns"]);
    eventually(30, "the namespace's ServiceAccount", || {
        kp.kubectl(&["get", "serviceaccount", "default", "-n", "metrics-ns"]).status.success().then_some(())
    });
    eventually(30, "the work counted", || {
        let s = parse(&curl(&format!("{url}/metrics"))?);
        (sa_adds(&s) > sa_adds(&before) && rest(&s, "POST", "201") > rest(&before, "POST", "201")).then_some(())
    });

    // A Deployment: its key waits in the deployment controller's queue until a reconcile takes it
    // (the queue duration observed), and once its ReplicaSet exists the queue is empty again.
    let dep = [("name", "deployment-controller")];
    let waited =
        |s: &Scrape| s.sum("workqueue_queue_duration_seconds", "workqueue_queue_duration_seconds_count", &dep);
    let depth = |s: &Scrape| s.sum("workqueue_depth", "workqueue_depth", &dep);
    let at_start = waited(&parse(&curl(&format!("{url}/metrics")).unwrap()));
    kp.kubectl_ok(&["create", "deployment", "qd", "--image=registry.k8s.io/pause:3.9", "-n", "metrics-ns"]);
    eventually(30, "the Deployment's ReplicaSet", || {
        let out = kp.kubectl(&["get", "replicasets", "-n", "metrics-ns", "-l", "app=qd", "-o", "name"]);
        (out.status.success() && !stdout(&out).trim().is_empty()).then_some(())
    });
    let after = eventually(30, "the deployment queue drained, its waits observed", || {
        let s = parse(&curl(&format!("{url}/metrics"))?);
        (waited(&s) > at_start && depth(&s) == 0.0).then_some(s)
    });
    assert_eq!(after.typ("workqueue_depth"), "gauge");
    assert!(
        waited(&after)
            <= after.sum("workqueue_adds", "workqueue_adds_total", &dep)
                + after.sum("workqueue_retries", "workqueue_retries_total", &dep),
        "more items taken than added"
    );
    for g in ["workqueue_unfinished_work_seconds", "workqueue_longest_running_processor_seconds"] {
        assert_eq!(after.typ(g), "gauge", "{g}");
        assert!(after.sum(g, g, &dep) >= 0.0, "{g}");
    }
    assert_eq!(curl(&format!("{url}/healthz")).as_deref(), Some("ok"));
}

#[test]
fn a_non_loopback_metrics_address_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["controller-manager", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--metrics-bind-address", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--metrics-bind-address 0.0.0.0:0 is not a loopback address"), "{err}");
}
