//! `metrics.k8s.io` and `kubectl top` with the real kubectl against `kplane up` (issue 18, item 6):
//! the simulated kubelets' `/metrics/resource`, the built-in metrics-server's NodeMetrics and
//! PodMetrics (discovery, list, get, selectors, 404, RBAC), and `kubectl top nodes|pods` printing
//! non-zero rows (also `-A`, `--containers`, `-l`, and kubectl 1.27).

mod common;

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: server
        image: nginx
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 200m, memory: 64Mi}}
      - name: sidecar
        image: busybox
        command: [sh, -c, "sleep 3600"]
        resources: {requests: {cpu: 100m, memory: 32Mi}}
"#;

/// Parses a `kubectl top` table into rows of columns (the header dropped).
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines().skip(1).map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

/// `12m` → 12, `1` → 1000; `64Mi` → 64.
fn number(s: &str) -> i64 {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = digits.parse().unwrap_or_else(|_| panic!("not a number: {s}"));
    if s.ends_with('m') || s.ends_with("Mi") || s.ends_with("Ki") {
        n
    } else {
        n * 1000
    }
}

#[test]
fn kubectl_top_shows_the_simulated_usage() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kplane::start(dir.path(), free_port());
    let out = k.kubectl_stdin(&["apply", "-f", "-"], WEB);
    assert!(out.status.success(), "{}", stderr(&out));
    k.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // Discovery lists the group, as the aggregator lists metrics-server's APIService.
    let groups = k.kubectl_ok(&["api-versions"]);
    assert!(groups.lines().any(|l| l == "metrics.k8s.io/v1beta1"), "{groups}");
    let res = k.kubectl_ok(&["api-resources", "--api-group=metrics.k8s.io", "-o", "wide"]);
    assert!(res.contains("PodMetrics") && res.contains("NodeMetrics"), "{res}");

    // The kubelets' own endpoint: upstream's families.
    let nodes: Value = serde_json::from_str(&k.kubectl_ok(&["get", "nodes", "-o", "json"])).unwrap();
    let node = &nodes["items"][0];
    let ip =
        node["status"]["addresses"].as_array().unwrap().iter().find(|a| a["type"] == "InternalIP").unwrap()
            ["address"]
            .as_str()
            .unwrap()
            .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap();
    let text = ureq_get(&format!("http://{ip}:{port}/metrics/resource"));
    for family in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
        "pod_cpu_usage_seconds_total",
        "pod_memory_working_set_bytes",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing in {text}");
    }

    // kubectl top nodes: every node with non-zero CPU and memory.
    let top = eventually(30, "kubectl top nodes", || {
        let out = k.kubectl(&["top", "nodes"]);
        out.status.success().then(|| stdout(&out))
    });
    let node_rows = rows(&top);
    assert_eq!(node_rows.len(), nodes["items"].as_array().unwrap().len(), "{top}");
    for r in &node_rows {
        assert!(number(&r[1]) > 0, "CPU of {r:?} in {top}");
        assert!(number(&r[3]) > 0, "memory of {r:?} in {top}");
        assert!(r[2].ends_with('%') && r[4].ends_with('%'), "{top}");
    }

    // kubectl top pods: both pods, CPU and memory non-zero; memory follows the requests
    // (4 MiB + 20% of each container's request: 16.8 + 10.4 MiB ≈ 27 MiB).
    let top = eventually(30, "kubectl top pods", || {
        let out = k.kubectl(&["top", "pods"]);
        let text = stdout(&out);
        (out.status.success() && rows(&text).len() == 2).then_some(text)
    });
    for r in rows(&top) {
        assert!(r[0].starts_with("web-"), "{top}");
        assert!(number(&r[1]) > 0, "{top}");
        let mem = number(&r[2]);
        assert!((25..=29).contains(&mem), "memory {mem}Mi in {top}");
    }
    // --containers: one row per container.
    let top = k.kubectl_ok(&["top", "pods", "--containers", "-l", "app=web"]);
    let r = rows(&top);
    assert_eq!(r.len(), 4, "{top}");
    assert!(r.iter().any(|r| r[1] == "server") && r.iter().any(|r| r[1] == "sidecar"), "{top}");
    // -A: the namespace column, our pods in default.
    let top = k.kubectl_ok(&["top", "pods", "-A"]);
    assert!(top.starts_with("NAMESPACE"), "{top}");
    assert_eq!(rows(&top).iter().filter(|r| r[0] == "default").count(), 2, "{top}");
    // A selector that matches nothing.
    let out = k.kubectl(&["top", "pods", "-l", "app=none"]);
    assert!(!out.status.success() || stdout(&out).trim().is_empty(), "{}", stdout(&out));
    // An older kubectl.
    let old = store::etcd_process::find_program("kubectl.1.27", &["/usr/lib/google-cloud-sdk/bin"])
        .expect("kubectl.1.27 is missing: the version-skew check needs it");
    let out = k.kubectl_program(&old.to_string_lossy(), &["top", "pods", "-l", "app=web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&stdout(&out)).len(), 2, "{}", stdout(&out));

    // The API itself: a PodMetrics with upstream's fields, a list with a selector, a 404.
    let pods: Value =
        serde_json::from_str(&k.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    let pod = pods["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
    let pm: Value = serde_json::from_str(&k.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}"),
    ]))
    .unwrap();
    assert_eq!(pm["kind"], "PodMetrics");
    assert_eq!(pm["metadata"]["labels"]["app"], "web");
    assert!(pm["timestamp"].as_str().unwrap().ends_with('Z'), "{pm}");
    assert!(pm["window"].as_str().unwrap().ends_with('s'), "{pm}");
    assert_eq!(pm["containers"].as_array().unwrap().len(), 2, "{pm}");
    let list: Value = serde_json::from_str(&k.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dweb",
    ]))
    .unwrap();
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let out = k.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NotFound") || stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = k.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a%3D%3D%3Db"]);
    assert!(!out.status.success(), "a bad selector is a 400");
    let nm: Value =
        serde_json::from_str(&k.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])).unwrap();
    assert_eq!(nm["kind"], "NodeMetricsList");
    assert!(nm["items"][0]["usage"]["cpu"].as_str().unwrap().ends_with('n'), "{nm}");

    // RBAC: a ServiceAccount may not read metrics until bound to view (which aggregates
    // system:aggregated-metrics-reader, as upstream).
    let sa = "system:serviceaccount:default:default";
    let can = |verb: &str| stdout(&k.kubectl(&["auth", "can-i", verb, "pods.metrics.k8s.io", "--as", sa]));
    assert_eq!(can("list").trim(), "no");
    let out = k.kubectl(&["top", "pods", "--as", sa]);
    assert!(!out.status.success() && stderr(&out).contains("forbidden"), "{}", stderr(&out));
    k.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    assert_eq!(can("list").trim(), "yes");
    let out = k.kubectl(&["top", "pods", "--as", sa]);
    assert!(out.status.success(), "{}", stderr(&out));
    let roles = k.kubectl_ok(&["get", "clusterrole", "system:aggregated-metrics-reader", "-o", "name"]);
    assert!(roles.contains("system:aggregated-metrics-reader"));
}

/// A plain HTTP GET on loopback.
fn ureq_get(url: &str) -> String {
    let out = std::process::Command::new("curl").args(["-sS", "--max-time", "5", url]).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", stderr(&out));
    stdout(&out)
}
