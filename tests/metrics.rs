//! `/metrics` of `kplane up`, read with the real `kubectl get --raw /metrics` and parsed with the
//! Python `prometheus_client` OpenMetrics parser (a real, strict Prometheus-format parser): upstream's
//! names and labels, counts that move after known requests, upstream's histogram buckets, and the
//! components' metrics in the same document.

mod common;
mod prom;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::{eventually, free_port, Kplane};

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Families by name: (type, samples).
struct Scrape(BTreeMap<String, (String, Vec<Sample>)>);

/// The document through `prom::parse` (the Python OpenMetrics parser), as [`Sample`]s.
fn parse(text: &str) -> Scrape {
    let fams = prom::parse(text)
        .0
        .into_iter()
        .map(|(name, (ty, samples))| {
            let samples =
                samples.into_iter().map(|(name, labels, value)| Sample { name, labels, value }).collect();
            (name, (ty, samples))
        })
        .collect();
    Scrape(fams)
}

impl Scrape {
    fn family(&self, name: &str) -> &(String, Vec<Sample>) {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in {:?}", self.0.keys().collect::<Vec<_>>()))
    }

    /// Sum of the samples named `sample` whose labels include `want`.
    fn sum(&self, family: &str, sample: &str, want: &[(&str, &str)]) -> f64 {
        self.family(family)
            .1
            .iter()
            .filter(|s| {
                s.name == sample && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The `le` bounds of the histogram `family`'s first series matching `want`.
    fn buckets(&self, family: &str, want: &[(&str, &str)]) -> Vec<String> {
        let (ty, samples) = self.family(family);
        assert_eq!(ty, "histogram", "{family}");
        let first = samples
            .iter()
            .find(|s| {
                s.name.ends_with("_bucket")
                    && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {family} series with {want:?}"));
        let mut series = first.labels.clone();
        series.remove("le");
        samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .filter(|s| {
                let mut l = s.labels.clone();
                l.remove("le");
                l == series
            })
            .map(|s| s.labels["le"].clone())
            .collect()
    }
}

fn les(bounds: &[f64]) -> Vec<String> {
    let mut v: Vec<String> = bounds.iter().map(|b| format!("{b}")).collect();
    v.push("+Inf".into());
    v
}

fn normalise(les: Vec<String>) -> Vec<String> {
    les.into_iter().map(|l| if l == "+Inf" { l } else { format!("{}", l.parse::<f64>().unwrap()) }).collect()
}

fn scrape(kp: &Kplane) -> Scrape {
    let text = kp.kubectl_ok(&["get", "--raw", "/metrics"]);
    // Upstream's help texts end in one period (prometheus-client adds it; ours must not add another).
    let doubled: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP") && l.ends_with("..")).collect();
    assert!(doubled.is_empty(), "help texts ending in '..': {doubled:#?}");
    parse(&text)
}

#[test]
fn metrics_have_upstream_names_labels_and_buckets_and_move_with_requests() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_with(dir.path(), free_port(), &["--nodes", "1", "--no-networking", "--no-xray"]);
    // The controllers and the node work through their in-process clients from the start.
    eventually(30, "workqueue and rest client metrics", || {
        let s = scrape(&kp);
        let adds = s.sum("workqueue_adds", "workqueue_adds_total", &[]);
        let rest = s.sum(
            "rest_client_requests",
            "rest_client_requests_total",
            &[("component", "kube-controller-manager")],
        );
        (adds > 0.0 && rest > 0.0).then_some(())
    });
    let before = scrape(&kp);
    let ns_cm = [
        ("verb", "POST"),
        ("resource", "configmaps"),
        ("group", ""),
        ("version", "v1"),
        ("scope", "namespace"),
        ("component", "apiserver"),
        ("subresource", ""),
    ];
    let created = |s: &Scrape, dry: &str| {
        let mut want = ns_cm.to_vec();
        want.extend([("code", "201"), ("dry_run", dry)]);
        s.sum("apiserver_request", "apiserver_request_total", &want)
    };
    kp.kubectl_ok(&["create", "configmap", "m1", "--from-literal=a=b"]);
    kp.kubectl_ok(&["create", "configmap", "m2", "--from-literal=a=b", "--dry-run=server"]);
    kp.kubectl_ok(&["get", "configmap", "m1"]);
    let conflict = kp.kubectl(&["create", "configmap", "m1", "--from-literal=a=b"]);
    assert!(!conflict.status.success());
    let after = scrape(&kp);
    assert!(created(&after, "") >= created(&before, "") + 1.0, "a create is counted");
    assert_eq!(created(&after, "All"), created(&before, "All") + 1.0, "a dry-run create has dry_run=All");
    let conflicts = |s: &Scrape| {
        s.sum(
            "apiserver_request",
            "apiserver_request_total",
            &[("verb", "POST"), ("resource", "configmaps"), ("code", "409")],
        )
    };
    assert_eq!(conflicts(&after), conflicts(&before) + 1.0, "the 409 is counted with its code");
    let gets = |s: &Scrape| {
        s.sum(
            "apiserver_request_duration_seconds",
            "apiserver_request_duration_seconds_count",
            &[("verb", "GET"), ("resource", "configmaps"), ("scope", "namespace")],
        )
    };
    assert!(gets(&after) >= gets(&before) + 1.0);
    assert_eq!(
        normalise(after.buckets("apiserver_request_duration_seconds", &[("resource", "configmaps")])),
        les(&[
            0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0,
            15.0, 20.0, 30.0, 45.0, 60.0
        ])
    );
    assert_eq!(
        normalise(after.buckets("apiserver_response_sizes", &[("verb", "GET"), ("resource", "configmaps")])),
        les(&[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10])
    );
    // The store calls behind them, by operation and group-resource.
    let etcd = |s: &Scrape| {
        s.sum(
            "etcd_request_duration_seconds",
            "etcd_request_duration_seconds_count",
            &[("operation", "create"), ("type", "configmaps")],
        )
    };
    assert!(etcd(&after) >= etcd(&before) + 1.0);
    assert_eq!(
        normalise(after.buckets("etcd_request_duration_seconds", &[("operation", "create")])),
        les(&[
            0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0,
            15.0, 20.0, 30.0, 45.0, 60.0
        ])
    );
    // Stored objects match what kubectl lists.
    let listed = kp.kubectl_ok(&["get", "configmaps", "-A", "--no-headers"]).lines().count() as f64;
    let stored = scrape(&kp).sum(
        "apiserver_storage_objects",
        "apiserver_storage_objects",
        &[("resource", "configmaps")],
    );
    assert_eq!(stored, listed);
    let deployments = after.sum(
        "apiserver_storage_objects",
        "apiserver_storage_objects",
        &[("resource", "deployments.apps")],
    );
    assert_eq!(deployments, 0.0);
    for kind in ["readOnly", "mutating"] {
        assert!(after
            .family("apiserver_current_inflight_requests")
            .1
            .iter()
            .any(|s| s.labels["request_kind"] == kind));
    }
    // Controllers' workqueues and the in-process clients, in the same document.
    assert!(
        after.sum("workqueue_adds", "workqueue_adds_total", &[("name", "serviceaccount-controller")]) > 0.0
    );
    assert_eq!(
        normalise(after.buckets("workqueue_work_duration_seconds", &[("name", "serviceaccount-controller")])),
        les(&[1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    );
    assert!(
        after.sum(
            "rest_client_requests",
            "rest_client_requests_total",
            &[("component", "kubelet"), ("method", "GET")]
        ) > 0.0
    );
    assert_eq!(
        normalise(after.buckets("rest_client_request_duration_seconds", &[("component", "kubelet")])),
        les(&[0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0])
    );

    // A watch: registered while open, its events counted, gone once it ends.
    let cm = [("group", ""), ("version", "v1"), ("kind", "ConfigMap")];
    // kubectl's watch is the only one in a namespace (the components' are cluster-wide, and come
    // and go as they re-watch), so the namespace-scoped gauge is the one that tells it apart.
    let ns_watch = [("verb", "WATCH"), ("resource", "configmaps"), ("scope", "namespace")];
    let open_watches =
        |s: &Scrape| s.sum("apiserver_longrunning_requests", "apiserver_longrunning_requests", &ns_watch);
    let baseline = open_watches(&scrape(&kp));
    let mut watch = Command::new("kubectl")
        .args([
            "--kubeconfig",
            kp.kubeconfig.to_str().unwrap(),
            "get",
            "configmaps",
            "--watch",
            "--output-watch-events",
            "-o",
            "name",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watching = eventually(20, "the watch is registered", || {
        let s = scrape(&kp);
        let w = s.sum("apiserver_registered_watchers", "apiserver_registered_watchers", &cm);
        (w >= 1.0 && open_watches(&s) == baseline + 1.0).then_some(s)
    });
    let events = |s: &Scrape| s.sum("apiserver_watch_events", "apiserver_watch_events_total", &cm);
    kp.kubectl_ok(&["create", "configmap", "m3", "--from-literal=a=b"]);
    eventually(20, "the watch event is counted", || (events(&scrape(&kp)) > events(&watching)).then_some(()));
    let _ = watch.kill();
    let _ = watch.wait();
    // A write to the dead connection is the surest way for the server to notice it is gone.
    kp.kubectl_ok(&["create", "configmap", "m4", "--from-literal=a=b"]);
    eventually(20, "the watch is unregistered", || (open_watches(&scrape(&kp)) == baseline).then_some(()));
    let ended = scrape(&kp);
    assert!(
        ended.sum(
            "apiserver_request",
            "apiserver_request_total",
            &[("verb", "WATCH"), ("resource", "configmaps"), ("code", "200")]
        ) > watching.sum(
            "apiserver_request",
            "apiserver_request_total",
            &[("verb", "WATCH"), ("resource", "configmaps"), ("code", "200")]
        ),
        "an ended watch is counted"
    );
}
