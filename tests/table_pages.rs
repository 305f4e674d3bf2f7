//! `kubectl get` Tables written row by row (`api_types::printing::TableWriter`): a list's Table in
//! pages (a first page from the watch cache, continue pages from the store, selected pages decoded)
//! is the unpaged one, cell for cell and object for object, for pods in every phase and state that
//! changes STATUS, on the embedded store and on a real etcd:
//! - the Python client reads the Table JSON in pages of 4 and whole (includeObject Metadata and
//!   Object): the same rows, each row's object the pod's metadata (managedFields included) or the
//!   pod as a plain list serves it, remainingItemCount counting down;
//! - every kubectl (1.27 … 1.33 and the default one) prints the same `-o wide` table with
//!   `--chunk-size=4` as with `--chunk-size=0`, with and without a label selector, and the STATUS,
//!   READY and RESTARTS upstream prints for each pod.

mod common;

use common::{free_port, stderr, stdout, Kplane};
use store::etcd_process::EtcdProcess;

fn ok(kp: &Kplane, args: &[&str]) -> String {
    let out = kp.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// Pods (name, READY, STATUS, RESTARTS, status to set) covering upstream's printPod branches.
const PODS: &[(&str, &str, &str, &str, &str)] = &[
    ("a-pending", "0/1", "Pending", "0", r#"{"phase":"Pending"}"#),
    (
        "b-creating",
        "0/1",
        "ContainerCreating",
        "0",
        r#"{"phase":"Pending","containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ContainerCreating"}}}]}"#,
    ),
    (
        "c-running",
        "1/1",
        "Running",
        "0",
        r#"{"phase":"Running","podIP":"10.1.0.3","podIPs":[{"ip":"10.1.0.3"}],"conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":true,"restartCount":0,"state":{"running":{"startedAt":"2024-05-01T11:00:00Z"}}}]}"#,
    ),
    (
        "d-restarted",
        "1/1",
        "Running",
        "3",
        r#"{"phase":"Running","containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":true,"restartCount":3,"state":{"running":{"startedAt":"2024-05-01T11:00:00Z"}}}]}"#,
    ),
    (
        "e-succeeded",
        "0/1",
        "Completed",
        "0",
        r#"{"phase":"Succeeded","containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed","startedAt":null,"finishedAt":null}}}]}"#,
    ),
    (
        "f-failed",
        "0/1",
        "Error",
        "0",
        r#"{"phase":"Failed","containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":1,"reason":"Error","startedAt":null,"finishedAt":null}}}]}"#,
    ),
    ("g-evicted", "0/1", "Evicted", "0", r#"{"phase":"Failed","reason":"Evicted","message":"low on memory"}"#),
    ("h-unknown", "0/1", "Unknown", "0", r#"{"phase":"Unknown"}"#),
    (
        "i-crashloop",
        "0/1",
        "CrashLoopBackOff",
        "7",
        r#"{"phase":"Running","containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":false,"restartCount":7,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}"#,
    ),
    (
        "j-signal",
        "0/1",
        "Signal:9",
        "0",
        r#"{"phase":"Running","containerStatuses":[{"name":"c","image":"nginx","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":137,"signal":9,"startedAt":null,"finishedAt":null}}}]}"#,
    ),
    ("k-terminating", "0/1", "Terminating", "0", r#"{"phase":"Running"}"#),
];

fn python_check(kp: &Kplane, ns: &str) {
    let script = r#"
import json, sys, urllib.parse
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
ns = sys.argv[2]
api = client.ApiClient()
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
def get(accept, **q):
    url = api.configuration.host + "/api/v1/namespaces/%s/pods" % ns
    if q:
        url += "?" + urllib.parse.urlencode(q)
    r = api.call_api("GET", url, header_params={"Accept": accept})
    r.read()
    assert r.status == 200, (r.status, r.data)
    return json.loads(r.data)
def pages(**q):
    rows, cont, counts = [], None, []
    while True:
        qq = dict(q, limit=4)
        if cont: qq["continue"] = cont
        t = get(TABLE, **qq)
        assert t["kind"] == "Table", t
        if cont:
            assert t["columnDefinitions"], "every page has its columns"
        rows += t["rows"]
        cont = t["metadata"].get("continue")
        counts.append(t["metadata"].get("remainingItemCount"))
        if not cont:
            return rows, counts
def no_age(rows):
    # AGE (cell 4) may tick between two requests.
    return [dict(r, cells=r["cells"][:4] + r["cells"][5:]) for r in rows]
plain = get("application/json")["items"]
n = len(plain)
for include in ["Metadata", "Object"]:
    whole = get(TABLE, includeObject=include)
    assert "continue" not in whole["metadata"] and len(whole["rows"]) == n, whole["metadata"]
    paged, counts = pages(includeObject=include)
    assert counts == [n - 4 * (i + 1) for i in range((n + 3) // 4 - 1)] + [None], counts
    assert no_age(paged) == no_age(whole["rows"]), (include, paged, whole["rows"])
    for row, pod in zip(whole["rows"], plain):
        if include == "Object":
            assert row["object"] == pod, (row["object"], pod)
        else:
            assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                     "metadata": pod["metadata"]}, row["object"]
            assert row["object"]["metadata"]["managedFields"], "managedFields are kept"
        phase = pod["status"]["phase"]
        if phase in ("Succeeded", "Failed"):
            assert row["conditions"][0]["type"] == "Completed", row
        else:
            assert "conditions" not in row, row
# A label selector: continue pages decoded from the store.
sel, _ = pages(labelSelector="tier=odd")
whole = get(TABLE, labelSelector="tier=odd")
assert len(sel) == len(whole["rows"]) == n // 2, (len(sel), len(whole["rows"]))
assert no_age(sel) == no_age(whole["rows"]), (sel, whole["rows"])
none = get(TABLE, includeObject="None", limit="3")
assert all(r["object"] is None for r in none["rows"]) and len(none["rows"]) == 3, none
print("tables: ok", n)
"#;
    let out = std::process::Command::new("timeout")
        .args(["120", "python3", "-c"])
        .arg(script)
        .arg(&kp.kubeconfig)
        .arg(ns)
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("tables: ok 11"), "{}", stdout(&out));
}

/// A `-o wide` table's words without the AGE column (which may tick between two requests; no
/// RESTARTS cell here has the spaces of "(5m ago)").
fn without_age(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            let mut words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            assert!(words.len() > 4, "{table}");
            words.remove(4);
            words
        })
        .collect()
}

fn exercise(kp: &Kplane) {
    let ns = format!("tp-{}", std::process::id());
    ok(kp, &["create", "namespace", &ns]);
    let mut manifest = String::new();
    for (i, (name, ..)) in PODS.iter().enumerate() {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let fin = if name.ends_with("terminating") { "\n  finalizers: [example.com/hold]" } else { "" };
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    tier: {tier}{fin}\nspec:\n  nodeName: ghost\n  containers:\n  - name: c\n    image: nginx\n"
        ));
    }
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(out.status.success(), "{}", stderr(&out));
    for (name, _, _, _, status) in PODS {
        let patch = format!(r#"{{"status":{status}}}"#);
        ok(kp, &["patch", "pod", name, "-n", &ns, "--subresource=status", "--type=merge", "-p", &patch]);
    }
    ok(kp, &["delete", "pod", "k-terminating", "-n", &ns, "--wait=false"]);

    python_check(kp, &ns);

    for name in [
        "kubectl.1.27",
        "kubectl.1.28",
        "kubectl.1.29",
        "kubectl.1.30",
        "kubectl.1.31",
        "kubectl.1.32",
        "kubectl.1.33",
        "kubectl",
    ] {
        let program = store::etcd_process::find_program(name, &["/usr/lib/google-cloud-sdk/bin"])
            .unwrap_or_else(|| panic!("{name} is missing: the version-skew checks need it"));
        let program = program.to_str().unwrap();
        let get = |extra: &[&str]| {
            let mut args = vec!["get", "pods", "-n", &ns, "-o", "wide"];
            args.extend_from_slice(extra);
            let out = kp.kubectl_program(program, &args);
            assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
            stdout(&out)
        };
        let whole = get(&["--chunk-size=0"]);
        let chunked = get(&["--chunk-size=4"]);
        assert_eq!(without_age(&chunked), without_age(&whole), "{program}:\n{chunked}\n{whole}");
        let lines: Vec<&str> = whole.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].contains("READINESS GATES"), "{program}: {whole}");
        assert_eq!(lines.len(), PODS.len() + 1, "{program}: {whole}");
        for ((name, ready, status, restarts, _), line) in PODS.iter().zip(&lines[1..]) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(&cells[..4], &[*name, *ready, *status, *restarts], "{program}: {line}");
            assert!(line.contains(" ghost "), "{program}: {line}");
        }
        let selected = get(&["-l", "tier=odd", "--chunk-size=2"]);
        assert_eq!(
            without_age(&selected),
            without_age(&get(&["-l", "tier=odd", "--chunk-size=0"])),
            "{program}"
        );
        assert_eq!(selected.lines().count(), PODS.len() / 2 + 1, "{program}: {selected}");
    }
}

#[test]
fn paged_tables_are_the_whole_table_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    exercise(&kp);
}

#[test]
fn paged_tables_are_the_whole_table_on_etcd() {
    let (_etcd, endpoint) = match store::testing::etcd_endpoint_from_env() {
        Some(e) => (None, e),
        None => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let etcd =
                rt.block_on(EtcdProcess::start()).unwrap_or_else(|e| panic!("starting a real etcd: {e}"));
            let endpoint = etcd.endpoint();
            (Some(etcd), endpoint)
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &["--etcd-servers", &endpoint]);
    exercise(&kp);
}
