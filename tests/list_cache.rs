//! LISTs served from the watch cache with upstream 1.33's semantics (ConsistentListFromCache), on
//! the embedded store and on a real etcd (`KPLANE_TEST_ETCD`, else one started here; a missing etcd
//! fails the test), driven by the real kubectl and the Python client:
//! - kubectl get with label and field selectors, `-o wide` (Tables) and `--chunk-size` (a first page
//!   from the cache, continue pages from the store) answer as before;
//! - which lists the cache answers, counted by `apiserver_cache_list_total`: `resourceVersion=0` and
//!   `NotOlderThan` always, consistent reads (resourceVersion unset) when the store reports watch
//!   progress exactly (the embedded store; etcd 3.4.31+/3.5.13+), `Exact` never;
//! - a create immediately followed by a list sees the object while another resource is written
//!   (so the store's revision is mostly not one the configmap cache saw an event at);
//! - a watch from a list's resourceVersion, with writes running, neither misses nor repeats an event.

mod common;

use common::{etcdctl, free_port, stderr, stdout, Kplane};
use serde_json::Value;
use store::etcd_process::EtcdProcess;

/// The endpoint of a real etcd: `KPLANE_TEST_ETCD`, else one started here (kept in the option).
fn real_etcd() -> (Option<EtcdProcess>, String) {
    if let Some(endpoint) = store::testing::etcd_endpoint_from_env() {
        return (None, endpoint);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let etcd = rt.block_on(EtcdProcess::start()).unwrap_or_else(|e| panic!("starting a real etcd: {e}"));
    let endpoint = etcd.endpoint();
    (Some(etcd), endpoint)
}

/// Whether an etcd answers progress requests in order with its events (upstream's check).
fn etcd_reports_progress(endpoint: &str) -> bool {
    let out = etcdctl(endpoint, &["endpoint", "status", "-w", "json"]);
    assert!(out.status.success(), "etcdctl endpoint status: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let version = v[0]["Status"]["version"].as_str().unwrap().to_string();
    let n: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    match (n[0], n[1]) {
        (3, 4) => n[2] >= 31,
        (3, 5) => n[2] >= 13,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

fn ok(kp: &Kplane, args: &[&str]) -> String {
    let out = kp.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn raw(kp: &Kplane, path: &str) -> Value {
    serde_json::from_str(&ok(kp, &["get", "--raw", path])).unwrap()
}

/// `apiserver_cache_list_total` of configmaps.
fn cache_lists(kp: &Kplane) -> u64 {
    let metrics = ok(kp, &["get", "--raw", "/metrics"]);
    metrics
        .lines()
        .find(|l| {
            l.starts_with("apiserver_cache_list_total{") && l.contains(r#"resource_prefix="/configmaps""#)
        })
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn exercise(kp: &Kplane, progress: bool) {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000;
    let ns = format!("lc-{}-{nanos}", std::process::id());
    ok(kp, &["create", "namespace", &ns]);
    let mut manifest = String::new();
    for i in 0..12 {
        let app = if i % 2 == 0 { "a" } else { "b" };
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:02}\n  namespace: {ns}\n  labels:\n    app: {app}\ndata:\n  i: \"{i}\"\n"
        ));
    }
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(out.status.success(), "{}", stderr(&out));

    // kubectl: selectors, chunks, Tables.
    let a = ok(kp, &["get", "cm", "-n", &ns, "-l", "app=a", "-o", "name"]);
    let want: Vec<String> = (0..12).step_by(2).map(|i| format!("configmap/cm-{i:02}")).collect();
    assert_eq!(a.lines().collect::<Vec<_>>(), want);
    let one = ok(kp, &["get", "cm", "-n", &ns, "--field-selector", "metadata.name=cm-03", "-o", "name"]);
    assert_eq!(one.trim(), "configmap/cm-03");
    let none = ok(
        kp,
        &["get", "cm", "-n", &ns, "-l", "app=a", "--field-selector", "metadata.name=cm-03", "-o", "name"],
    );
    assert_eq!(none.trim(), "");
    let chunked = ok(kp, &["get", "cm", "-n", &ns, "--chunk-size=5", "-o", "name"]);
    assert_eq!(chunked.lines().count(), 12, "{chunked}");
    assert_eq!(chunked, ok(kp, &["get", "cm", "-n", &ns, "--chunk-size=0", "-o", "name"]));
    let wide = ok(kp, &["get", "cm", "-n", &ns, "-l", "app=b", "-o", "wide"]);
    let rows: Vec<&str> = wide.lines().collect();
    assert!(rows[0].starts_with("NAME") && rows[0].contains("DATA"), "{wide}");
    assert_eq!(rows.len(), 7, "{wide}");
    assert!(rows[1].starts_with("cm-01 ") && rows[1].split_whitespace().nth(1) == Some("1"), "{wide}");

    // Which lists the cache answers.
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let before = cache_lists(kp);
    let any = raw(kp, &format!("{path}?resourceVersion=0"));
    assert_eq!(names(&any).len(), 12);
    assert_eq!(cache_lists(kp), before + 1, "resourceVersion=0 from the cache");
    let consistent = raw(kp, &path);
    assert_eq!(names(&consistent).len(), 12);
    assert_eq!(cache_lists(kp), before + 1 + u64::from(progress), "a consistent read (progress: {progress})");
    let rv = consistent["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let exact = raw(kp, &format!("{path}?resourceVersion={rv}&resourceVersionMatch=Exact"));
    assert_eq!(exact["metadata"]["resourceVersion"], rv.as_str());
    assert_eq!(names(&exact), names(&consistent));
    let not_older = raw(
        kp,
        &format!("{path}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan&labelSelector=app%3Db"),
    );
    assert_eq!(names(&not_older).len(), 6);
    let after_exact = cache_lists(kp);
    assert_eq!(
        after_exact,
        before + 2 + u64::from(progress),
        "Exact from the store, NotOlderThan from the cache"
    );
    // A limited consistent read: the first page from the cache (when it may answer) with a continue
    // token at its revision, the next page from the store at that revision.
    let page = raw(kp, &format!("{path}?limit=5"));
    assert_eq!(names(&page).len(), 5);
    assert_eq!(page["metadata"]["remainingItemCount"], 7);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let next = raw(kp, &format!("{path}?limit=5&continue={token}"));
    assert_eq!(next["metadata"]["resourceVersion"], page["metadata"]["resourceVersion"]);
    assert_eq!(names(&next), names(&consistent)[5..10].to_vec());
    assert_eq!(cache_lists(kp), after_exact + u64::from(progress), "continue pages from the store");
    // Bad input keeps upstream's answers.
    let out = kp.kubectl(&["get", "--raw", &format!("{path}?resourceVersionMatch=Exact")]);
    assert!(!out.status.success() && stderr(&out).contains("BadRequest"), "{}", stderr(&out));
    let out = kp.kubectl(&["get", "--raw", &format!("{path}?resourceVersion=0&resourceVersionMatch=Exact")]);
    assert!(!out.status.success() && stderr(&out).contains("BadRequest"), "{}", stderr(&out));

    // The Python client: read-your-writes and a gapless list+watch under concurrent writes.
    let script = r#"
import sys, threading, time
from kubernetes import client, config, watch
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
ns = sys.argv[2]
other = ns + "-other"
v1.create_namespace({"metadata": {"name": other}})
stop = threading.Event()
def noise():
    i = 0
    while not stop.is_set():
        v1.create_namespaced_secret(other, {"metadata": {"name": "s%d" % i}, "stringData": {"k": "v"}})
        i += 1
t = threading.Thread(target=noise); t.start()
try:
    # A create, then at once a list: the object is there.
    for i in range(40):
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "ryw-%d" % i}})
        got = [c.metadata.name for c in v1.list_namespaced_config_map(ns, field_selector="metadata.name=ryw-%d" % i).items]
        assert got == ["ryw-%d" % i], (i, got)
    # A list, then a watch from its resourceVersion while configmaps change.
    first = v1.list_namespaced_config_map(ns)
    state = {c.metadata.name: c.metadata.resource_version for c in first.items}
    def writes():
        for i in range(60):
            v1.create_namespaced_config_map(ns, {"metadata": {"name": "w-%d" % i}})
            if i % 3 == 0:
                v1.patch_namespaced_config_map("w-%d" % i, ns, {"data": {"x": "1"}})
            if i % 5 == 0:
                v1.delete_namespaced_config_map("w-%d" % i, ns)
        # The last write: once the watch sees it, it must have seen everything before it.
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "w-end"}})
    w = threading.Thread(target=writes); w.start()
    seen = set()
    last = 0
    final = None
    wt = watch.Watch()
    for ev in wt.stream(v1.list_namespaced_config_map, ns, resource_version=first.metadata.resource_version,
                        timeout_seconds=120):
        o = ev["object"]; name = o.metadata.name; rv = int(o.metadata.resource_version)
        key = (ev["type"], name, rv)
        assert key not in seen, ("repeated", key)
        seen.add(key)
        assert rv > last, ("out of order", key, last)
        last = rv
        if ev["type"] == "ADDED":
            assert name not in state, ("ADDED twice", key)
            state[name] = str(rv)
        elif ev["type"] == "MODIFIED":
            assert name in state, ("MODIFIED unknown", key)
            state[name] = str(rv)
        elif ev["type"] == "DELETED":
            assert name in state, ("DELETED unknown", key)
            del state[name]
        if name == "w-end":
            final = {c.metadata.name: c.metadata.resource_version for c in v1.list_namespaced_config_map(ns).items}
            wt.stop()
    w.join()
    assert final is not None, "the watch ended before the last write"
    assert state == final, ("missed events", sorted(set(final.items()) ^ set(state.items())))
    # 60 creates, 20 patches, 12 deletes and the last create.
    assert len(seen) == 60 + 20 + 12 + 1, len(seen)
finally:
    stop.set(); t.join()
print("list-watch: ok", len(seen))
"#;
    let out = std::process::Command::new("timeout")
        .args(["180", "python3", "-c"])
        .arg(script)
        .arg(&kp.kubeconfig)
        .arg(&ns)
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("list-watch: ok"), "{}", stdout(&out));
}

#[test]
fn lists_from_the_watch_cache_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    exercise(&kp, true);
}

#[test]
fn lists_from_the_watch_cache_on_etcd() {
    let (_etcd, endpoint) = real_etcd();
    let progress = etcd_reports_progress(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &["--etcd-servers", &endpoint]);
    exercise(&kp, progress);
}
