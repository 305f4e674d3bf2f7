//! `kplane xray etcd`: the `/registry` tree and the live write stream, against the embedded
//! store's etcd endpoint (`kplane apiserver`) and against a real etcd (`KPLANE_TEST_ETCD`, else one
//! this test starts; a missing etcd fails the test). Bad input gets a message and a non-zero exit.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{etcdctl, etcdctl_stdin, free_port, stderr, stdout, Kplane};
use serde_json::Value;
use store::etcd_process::EtcdProcess;

fn xray(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kplane")).arg("xray").arg("etcd").args(args).output().expect("run kplane")
}

fn xray_ok(args: &[&str]) -> String {
    let out = xray(args);
    assert!(out.status.success(), "xray etcd {args:?} failed: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// A running `kplane xray etcd --watch`, killed on drop; its stdout lines arrive on `lines`.
struct Watch {
    child: Child,
    lines: Receiver<String>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kplane"))
            .args(["xray", "etcd", "--watch"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kplane xray etcd --watch");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The header on stderr says the watch's start revision is fixed: later writes all show.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut header = String::new();
        err.read_line(&mut header).unwrap();
        assert!(header.starts_with("kplane: watching "), "unexpected watch header: {header:?}");
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::stderr()));
        Watch { child, lines }
    }

    /// Waits for a line whose first field is `key` and second-to-last field is `verb`.
    fn expect(&self, key: &str, verb: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{key} <rev> {verb} <who>` line within 15 s; saw {seen:?}"));
            let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            assert_eq!(fields.len(), 4, "a watch line is `key revision verb who`: {line:?}");
            assert!(fields[1].parse::<i64>().is_ok(), "revision is a number: {line:?}");
            seen.push(line);
            if fields[0] == key && fields[2] == verb {
                return fields;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn folder_names(folder: &Value) -> Vec<String> {
    folder["folders"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn embedded_store_tree_lists_specs_and_endpoints_with_counts_sizes_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let ep = kp.endpoint();
    kp.kubectl_ok(&["create", "service", "clusterip", "nginx-svc", "--tcp=8080:80"]);

    let text = xray_ok(&["/registry/services", "--endpoints", &ep]);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("/registry/services/ "), "{text}");
    assert!(first.contains(" keys") && first.contains("B  rev "), "{text}");
    assert!(text.contains("├── endpoints/"), "{text}");
    assert!(text.contains("└── specs/"), "{text}");
    assert!(text.contains("nginx-svc"), "{text}");
    assert!(text.contains("kube-dns"), "{text}");

    // The JSON form holds the same folders and numbers, and agrees with etcdctl.
    let tree: Value =
        serde_json::from_str(&xray_ok(&["/registry/services", "--endpoints", &ep, "-o", "json"])).unwrap();
    assert_eq!(folder_names(&tree["root"]), ["endpoints", "specs"]);
    let specs = &tree["root"]["folders"][1];
    let keys = stdout(&etcdctl(&ep, &["get", "/registry/services/specs/", "--prefix", "--keys-only"]));
    assert_eq!(specs["keys"].as_u64().unwrap(), keys.lines().filter(|l| !l.is_empty()).count() as u64);
    let nginx = &specs["folders"][0]["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "nginx-svc")
        .unwrap_or_else(|| panic!("nginx-svc in {specs}"))
        .clone();
    let v: Value = serde_json::from_slice(
        &etcdctl(&ep, &["get", "/registry/services/specs/default/nginx-svc", "-w", "json"]).stdout,
    )
    .unwrap();
    assert_eq!(nginx["mod_revision"], v["kvs"][0]["mod_revision"]);
    assert_eq!(nginx["key"], "/registry/services/specs/default/nginx-svc");
    assert!(tree["revision"].as_i64().unwrap() >= nginx["mod_revision"].as_i64().unwrap());

    // The whole registry, one level deep: folders only, with their totals.
    let top = xray_ok(&["--endpoints", &ep, "--depth", "1"]);
    assert!(top.starts_with("/registry/ "), "{top}");
    for folder in ["namespaces/", "services/", "clusterroles/", "ranges/"] {
        assert!(top.contains(folder), "{folder} in {top}");
    }
    assert!(!top.contains("specs/"), "--depth 1 stays at the top: {top}");

    // A key as the prefix shows that key.
    let one = xray_ok(&["/registry/services/specs/default/nginx-svc", "--endpoints", &ep]);
    assert!(one.contains("nginx-svc") && one.contains("1 key"), "{one}");
}

#[test]
fn embedded_store_watch_streams_creates_updates_and_deletes_with_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let ep = kp.endpoint();
    let watch = Watch::start(&["/registry/configmaps", "--endpoints", &ep]);

    kp.kubectl_ok(&["create", "configmap", "seen", "--from-literal=a=1"]);
    let created = watch.expect("/registry/configmaps/default/seen", "create");
    kp.kubectl_ok(&["label", "configmap", "seen", "x=y"]);
    let updated = watch.expect("/registry/configmaps/default/seen", "update");
    assert!(updated[1].parse::<i64>().unwrap() > created[1].parse::<i64>().unwrap());
    kp.kubectl_ok(&["delete", "configmap", "seen"]);
    let deleted = watch.expect("/registry/configmaps/default/seen", "delete");
    assert_eq!(deleted[3], "-", "a delete has no writer in the value");

    // Who wrote it: the newest managedFields entry of the stored value.
    let value = r#"{"metadata":{"name":"m","managedFields":[{"manager":"kubectl-create","operation":"Update","time":"2026-01-01T00:00:00Z"},{"manager":"kube-controller-manager","operation":"Update","time":"2026-01-01T00:00:09Z"}]}}"#;
    let put = etcdctl_stdin(&ep, &["put", "/registry/configmaps/default/m"], value.as_bytes());
    assert!(put.status.success(), "{}", stderr(&put));
    let m = watch.expect("/registry/configmaps/default/m", "create");
    assert_eq!(m[3], "kube-controller-manager");
    // Writes outside the prefix do not show.
    etcdctl(&ep, &["put", "/registry/configmapsx/a", "{}"]);
    etcdctl(&ep, &["put", "/registry/configmaps/default/last", "{}"]);
    let last = watch.expect("/registry/configmaps/default/last", "create");
    assert_eq!(last[3], "-");
}

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

#[test]
fn real_etcd_tree_and_watch() {
    let (_etcd, ep) = real_etcd();
    // A prefix of its own, so a shared etcd's other keys never count.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let base = format!("/registry/xray-test-{}-{nanos}", std::process::id());
    for (key, value) in [
        ("services/specs/default/nginx-svc", r#"{"kind":"Service"}"#),
        ("services/specs/default/kubernetes", r#"{"kind":"Service","spec":{}}"#),
        ("services/endpoints/default/nginx-svc", r#"{"kind":"Endpoints"}"#),
    ] {
        let out = etcdctl(&ep, &["put", &format!("{base}/{key}"), value]);
        assert!(out.status.success(), "etcdctl put: {}", stderr(&out));
    }
    let text = xray_ok(&[&format!("{base}/services"), "--endpoints", &ep]);
    assert!(text.starts_with(&format!("{base}/services/ ")), "{text}");
    assert!(text.contains("├── endpoints/") && text.contains("└── specs/"), "{text}");
    assert!(text.contains("3 keys") && text.contains("2 keys"), "{text}");
    let tree: Value =
        serde_json::from_str(&xray_ok(&[&format!("{base}/services"), "--endpoints", &ep, "-o", "json"]))
            .unwrap();
    assert_eq!(folder_names(&tree["root"]), ["endpoints", "specs"]);
    let total = r#"{"kind":"Service"}"#.len()
        + r#"{"kind":"Service","spec":{}}"#.len()
        + r#"{"kind":"Endpoints"}"#.len();
    assert_eq!(tree["root"]["bytes"].as_u64().unwrap(), total as u64);

    let watch = Watch::start(&[&base, "--endpoints", &ep, "-o", "json"]);
    let value = r#"{"metadata":{"name":"n","managedFields":[{"manager":"kubelet","operation":"Update","time":"2026-01-01T00:00:00Z"}]}}"#;
    etcdctl_stdin(&ep, &["put", &format!("{base}/pods/default/n")], value.as_bytes());
    etcdctl(&ep, &["del", &format!("{base}/services/specs/default/nginx-svc")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = watch.lines.recv_timeout(left).unwrap_or_else(|_| panic!("watch lines so far: {got:?}"));
        got.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(got[0]["key"], format!("{base}/pods/default/n"));
    assert_eq!((got[0]["verb"].as_str(), got[0]["who"].as_str()), (Some("create"), Some("kubelet")));
    assert_eq!(got[1]["verb"], "delete");
    assert!(got[1]["revision"].as_i64().unwrap() > got[0]["revision"].as_i64().unwrap());
    etcdctl(&ep, &["del", &base, "--prefix"]);
}

#[test]
fn bad_input_gets_a_message_and_a_non_zero_exit() {
    let unused = format!("http://127.0.0.1:{}", free_port());
    let cases: &[(&[&str], &str)] = &[
        (&["/foo", "--endpoints", &unused], "outside /registry"),
        (&["/registryx", "--endpoints", &unused], "outside /registry"),
        (&["/registry/../etc", "--endpoints", &unused], "outside /registry"),
        (&["/registry", "--endpoints", &unused], "cannot reach etcd"),
        (&["/registry", "--watch", "--endpoints", &unused], "cannot reach etcd"),
        (&["/registry", "--endpoints", "not a url::"], "cannot reach etcd"),
        (&["/registry", "--endpoints", &unused, "--cacert", "/nonexistent/ca.pem"], "cannot reach etcd"),
        (&["/registry", "--depth", "x"], "invalid value"),
    ];
    for (args, want) in cases {
        let started = Instant::now();
        let out = xray(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {}", stdout(&out));
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?} took {:?}", started.elapsed());
    }
}
