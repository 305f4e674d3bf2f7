//! The real `kubectl` against kplane's API server (`kplane apiserver`, no controllers, so each step's
//! stored result is exactly what the API made of it), on the embedded store and on a real etcd. After each step the
//! matching `/registry` key is checked with the real `etcdctl`.

mod common;

use common::{etcdctl, eventually, free_port, stderr, stdout, Kplane};
use serde_json::{json, Value};
use store::etcd_process::EtcdProcess;

/// kplane plus the etcd endpoint that holds its data.
struct Cluster {
    kp: Kplane,
    etcd: String,
    _real: Option<EtcdProcess>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn embedded() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
        let etcd = kp.endpoint();
        Cluster { kp, etcd, _real: None, _dir: dir }
    }

    fn real_etcd() -> Cluster {
        Cluster::real_etcd_with(&[])
    }

    fn real_etcd_with(extra: &[&str]) -> Cluster {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let real = rt.block_on(EtcdProcess::start()).expect("start a real etcd (install etcd-server)");
        let dir = tempfile::tempdir().unwrap();
        let etcd = real.endpoint();
        let args: Vec<&str> =
            ["--etcd-servers", etcd.as_str()].into_iter().chain(extra.iter().copied()).collect();
        let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &args);
        Cluster { kp, etcd, _real: Some(real), _dir: dir }
    }

    fn key(&self, key: &str) -> Option<Value> {
        self.kp.etcd_get(&self.etcd, key)
    }
}

/// `kubectl.<version>`: on PATH, or in the Cloud SDK's folder where this machine keeps them.
/// Missing is a failure (these tests must not skip).
fn versioned_kubectl(version: &str) -> String {
    let name = format!("kubectl.{version}");
    store::etcd_process::find_program(&name, &["/usr/lib/google-cloud-sdk/bin"])
        .unwrap_or_else(|| panic!("{name} is missing: the version-skew checks need it"))
        .to_string_lossy()
        .into_owned()
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name(&super::Cluster::embedded()); } )*
        }
        mod real_etcd {
            $( #[test] fn $name() { super::$name(&super::Cluster::real_etcd()); } )*
        }
    };
}

both_backends!(
    api_resources_and_bootstrap_objects,
    create_get_describe_and_registry_keys,
    expose_allocates_a_loopback_cluster_ip,
    apply_twice_then_change,
    label_annotate_scale_and_patch,
    delete_and_namespaces,
    bad_input_gets_upstream_errors,
    watch_edit_wait_and_explain,
    server_dry_runs_store_nothing,
    delete_namespace_all_spares_the_system_ones,
    health_endpoints_with_curl,
    events_of_one_lease_all_deleted_and_chunked_lists,
);

fn api_resources_and_bootstrap_objects(c: &Cluster) {
    let out = c.kp.kubectl_ok(&["api-resources"]);
    for line in ["pods", "po", "deployments", "deploy", "services", "svc", "ingresses", "endpointslices"] {
        assert!(out.contains(line), "api-resources lacks {line}:\n{out}");
    }
    // Aggregated discovery: kubectl 1.32 (v2), 1.27 (v2beta1) and 1.33 each read /api and /apis
    // once, never a group-version's resource list, and know the same resources as before.
    for kubectl in ["kubectl".to_string(), versioned_kubectl("1.27"), versioned_kubectl("1.33")] {
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().to_str().unwrap();
        let out = c.kp.kubectl_program(&kubectl, &["api-resources", "-v=6", "--cache-dir", cache_dir]);
        assert!(out.status.success(), "{kubectl}: {}", stderr(&out));
        let log = stderr(&out);
        let gets: Vec<&str> = log.lines().filter(|l| l.contains("GET")).collect();
        assert!(
            gets.iter().any(|l| l.contains("/api?")) && gets.iter().any(|l| l.contains("/apis?")),
            "{kubectl}: {log}"
        );
        assert!(
            !gets.iter().any(|l| l.contains("/api/v1?") || l.contains("/apis/apps/v1?")),
            "{kubectl} fell back to legacy discovery: {log}"
        );
        let listed = stdout(&out);
        for line in ["deployments", "deploy", "apps/v1", "endpointslices", "discovery.k8s.io/v1", "leases"] {
            assert!(listed.contains(line), "{kubectl} api-resources lacks {line}:\n{listed}");
        }
    }
    let ns = c.kp.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    let svc = c.kp.kubectl_ok(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(svc, "127.96.0.1");
    let dns =
        c.kp.kubectl_ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(dns, "127.96.0.10");
    let ep = c.key("/registry/services/endpoints/default/kubernetes").expect("kubernetes endpoints stored");
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    let version = c.kp.kubectl_ok(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "33");
}

fn create_get_describe_and_registry_keys(c: &Cluster) {
    c.kp.kubectl_ok(&["create", "deployment", "nginx", "--image=nginx", "--replicas=2", "--port=80"]);
    let stored = c.key("/registry/deployments/default/nginx").expect("deployment stored under upstream key");
    assert_eq!(stored["spec"]["replicas"], 2);
    assert!(stored["metadata"].get("resourceVersion").is_none(), "resourceVersion is not stored in the value");
    assert_eq!(stored["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%", "defaults applied");

    let table = c.kp.kubectl_ok(&["get", "deployments"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("nginx") && table.contains("UP-TO-DATE"), "{table}");
    let wide = c.kp.kubectl_ok(&["get", "deploy", "-o", "wide"]);
    assert!(wide.contains("IMAGES") && wide.contains("app=nginx"), "{wide}");
    let yaml = c.kp.kubectl_ok(&["get", "deploy", "nginx", "-o", "yaml"]);
    assert!(yaml.contains("kind: Deployment") && yaml.contains("generation: 1"), "{yaml}");
    let rv = c.kp.kubectl_ok(&["get", "deploy", "nginx", "-o", "jsonpath={.metadata.resourceVersion}"]);
    assert!(rv.parse::<i64>().unwrap() > 1);

    c.kp.kubectl_ok(&["run", "web", "--image=nginx", "--labels=app=web,tier=front"]);
    let pod = c.key("/registry/pods/default/web").expect("pod stored");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
    let all = c.kp.kubectl_ok(&["get", "pods", "-A", "--show-labels"]);
    assert!(all.contains("tier=front") && all.contains("NAMESPACE"), "{all}");
    let sel = c.kp.kubectl_ok(&["get", "pods", "-l", "tier in (front),app!=nginx", "-o", "name"]);
    assert_eq!(sel.trim(), "pod/web");
    let none = c.kp.kubectl(&["get", "pods", "-l", "tier=back"]);
    assert!(stderr(&none).contains("No resources found"), "{}", stderr(&none));
    let describe = c.kp.kubectl_ok(&["describe", "deployment", "nginx"]);
    assert!(describe.contains("Replicas:") && describe.contains("nginx"), "{describe}");
}

/// Whether a stored `RangeAllocation` of 127.96.0.0/12 has `ip`'s bit set: `data` is base64 of the
/// big-endian integer whose bit i is the range's (i+1)-th address, as upstream stores it.
fn ip_allocated(range: &Value, ip: &str) -> bool {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(range["data"].as_str().unwrap_or("")).unwrap();
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let bit = (u32::from(ip) - u32::from(std::net::Ipv4Addr::new(127, 96, 0, 0)) - 1) as usize;
    bytes.len() > bit / 8 && bytes[bytes.len() - 1 - bit / 8] & (1 << (bit % 8)) != 0
}

fn expose_allocates_a_loopback_cluster_ip(c: &Cluster) {
    c.kp.kubectl_ok(&["create", "deployment", "nginx", "--image=nginx", "--replicas=2", "--port=80"]);
    c.kp.kubectl_ok(&["expose", "deployment", "nginx", "--port=8080", "--target-port=80", "--name=nginx-svc"]);
    let svc = c.key("/registry/services/specs/default/nginx-svc").expect("service stored");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("127.9") || ip.starts_with("127.10") || ip.starts_with("127.11"), "{ip}");
    let ips = c.key("/registry/ranges/serviceips").expect("allocator persisted");
    assert_eq!((ips["kind"].as_str(), ips["range"].as_str()), (Some("RangeAllocation"), Some("127.96.0.0/12")));
    assert!(ip_allocated(&ips, &ip), "{ips}");
    c.kp.kubectl_ok(&[
        "expose",
        "deployment",
        "nginx",
        "--port=8080",
        "--target-port=80",
        "--name=np",
        "--type=NodePort",
    ]);
    let np = c.kp.kubectl_ok(&["get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let port: i64 = np.parse().unwrap();
    assert!((30000..=32767).contains(&port));
    let get = c.kp.kubectl_ok(&["get", "svc", "np"]);
    assert!(get.contains(&format!("8080:{port}/TCP")), "{get}");
    c.kp.kubectl_ok(&["delete", "svc", "nginx-svc"]);
    let ips = c.key("/registry/ranges/serviceips").unwrap();
    assert!(!ip_allocated(&ips, &ip), "IP released");
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"1\"\n";

fn apply_twice_then_change(c: &Cluster) {
    let first = c.kp.kubectl_stdin(&["apply", "-f", "-"], CM);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("configmap/app created"), "{}", stdout(&first));
    let second = c.kp.kubectl_stdin(&["apply", "-f", "-"], CM);
    assert!(stdout(&second).contains("configmap/app unchanged"), "{}{}", stdout(&second), stderr(&second));
    let changed = c.kp.kubectl_stdin(&["apply", "-f", "-"], &CM.replace("a: \"1\"", "a: \"2\"\n  b: \"3\""));
    assert!(stdout(&changed).contains("configmap/app configured"), "{}{}", stdout(&changed), stderr(&changed));
    let stored = c.key("/registry/configmaps/default/app").unwrap();
    assert_eq!(stored["data"]["a"], "2");
    assert_eq!(stored["data"]["b"], "3");
}

fn label_annotate_scale_and_patch(c: &Cluster) {
    c.kp.kubectl_ok(&["create", "deployment", "nginx", "--image=nginx", "--replicas=1"]);
    c.kp.kubectl_ok(&["label", "deployment", "nginx", "team=blue"]);
    c.kp.kubectl_ok(&["annotate", "deployment", "nginx", "note=hello"]);
    c.kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=3"]);
    let d = c.key("/registry/deployments/default/nginx").unwrap();
    assert_eq!(d["metadata"]["labels"]["team"], "blue");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2, "scale changed the spec once; labels do not bump generation");
    c.kp.kubectl_ok(&["patch", "deployment", "nginx", "--type=merge", "-p", r#"{"spec":{"replicas":4}}"#]);
    c.kp.kubectl_ok(&[
        "patch",
        "deployment",
        "nginx",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    c.kp.kubectl_ok(&["set", "image", "deployment/nginx", "nginx=nginx:1.25"]);
    let d = c.key("/registry/deployments/default/nginx").unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["name"], "nginx",
        "strategic merge kept the container"
    );
    let scale = c.kp.kubectl_ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/nginx/scale"]);
    let s: Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(s["spec"]["replicas"], 5);
    assert_eq!(s["status"]["selector"], "app=nginx");
}

fn delete_and_namespaces(c: &Cluster) {
    c.kp.kubectl_ok(&["create", "namespace", "team"]);
    assert!(c.key("/registry/namespaces/team").is_some());
    c.kp.kubectl_ok(&["create", "configmap", "x", "-n", "team", "--from-literal=k=v"]);
    assert!(c.key("/registry/configmaps/team/x").is_some());
    c.kp.kubectl_ok(&["delete", "configmap", "x", "-n", "team"]);
    assert!(c.key("/registry/configmaps/team/x").is_none());
    let missing = c.kp.kubectl(&["create", "configmap", "y", "-n", "nowhere"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("namespaces \"nowhere\" not found"), "{}", stderr(&missing));
    c.kp.kubectl_ok(&["create", "deployment", "d", "--image=nginx"]);
    c.kp.kubectl_ok(&["delete", "deployment", "d", "--cascade=foreground", "--wait=false"]);
    let d =
        eventually(5, "foreground deletion marks the deployment", || c.key("/registry/deployments/default/d"));
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(d["metadata"]["finalizers"][0], "foregroundDeletion");
}

fn bad_input_gets_upstream_errors(c: &Cluster) {
    let bad_name = c.kp.kubectl(&["create", "configmap", "Bad_Name"]);
    assert!(!bad_name.status.success());
    assert!(
        stderr(&bad_name).contains("is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{}",
        stderr(&bad_name)
    );
    let mismatch = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: m\nspec:\n  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      labels: {app: b}\n    spec:\n      containers: [{name: c, image: nginx}]\n";
    let out = c.kp.kubectl_stdin(&["create", "-f", "-"], mismatch);
    assert!(stderr(&out).contains("`selector` does not match template `labels`"), "{}", stderr(&out));
    assert!(c.key("/registry/deployments/default/m").is_none(), "nothing written");
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\nbogus: 1\n";
    let out = c.kp.kubectl_stdin(&["create", "--validate=strict", "-f", "-"], unknown);
    assert!(stderr(&out).contains("unknown field \"bogus\""), "{}", stderr(&out));
    assert!(c.key("/registry/configmaps/default/u").is_none(), "nothing written");
    c.kp.kubectl_ok(&["create", "configmap", "s", "--from-literal=a=b"]);
    let stale =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\n  resourceVersion: \"1\"\ndata: {a: c}\n";
    let out = c.kp.kubectl_stdin(&["replace", "-f", "-"], stale);
    assert!(stderr(&out).contains("the object has been modified"), "{}", stderr(&out));
    assert_eq!(c.key("/registry/configmaps/default/s").unwrap()["data"]["a"], "b");
}

/// A long-running kubectl (`get -w`) and its stdout, line by line, on a channel.
fn kubectl_lines(c: &Cluster, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kp.kubeconfig)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn watch_edit_wait_and_explain(c: &Cluster) {
    use std::process::Command;
    c.kp.kubectl_ok(&["create", "configmap", "w", "--from-literal=a=1"]);
    // kubectl get -w: the header and the current row, then a row per change.
    let (mut watch, rx) = kubectl_lines(
        c,
        &["get", "configmaps", "w", "-w", "-o", "custom-columns=NAME:.metadata.name,A:.data.a"],
    );
    let first = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(first.starts_with("NAME"), "{first}");
    let row = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(row.starts_with("w ") && row.trim_end().ends_with('1'), "{row}");
    c.kp.kubectl_ok(&["patch", "configmap", "w", "--type=merge", "-p", r#"{"data":{"a":"2"}}"#]);
    let changed = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(changed.trim_end().ends_with('2'), "{changed}");
    let _ = watch.kill();
    let _ = watch.wait();

    // kubectl edit with an EDITOR script, then wait on the edited value.
    let editor = c._dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/a: \"2\"/a: \"3\"/' \"$1\"\n").unwrap();
    let st = Command::new("chmod").arg("+x").arg(&editor).status().unwrap();
    assert!(st.success());
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kp.kubeconfig)
        .args(["edit", "configmap", "w"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("configmap/w edited"), "{}", stdout(&out));
    assert_eq!(c.key("/registry/configmaps/default/w").unwrap()["data"]["a"], "3");
    c.kp.kubectl_ok(&["wait", "--for=jsonpath={.data.a}=3", "configmap/w", "--timeout=10s"]);

    let explain = c.kp.kubectl_ok(&["explain", "deployment.spec.strategy.rollingUpdate"]);
    assert!(explain.contains("maxSurge") && explain.contains("<IntOrString>"), "{explain}");
}

/// A key's mod_revision, read with etcdctl (0 when absent).
fn mod_revision(c: &Cluster, key: &str) -> i64 {
    let out = etcdctl(&c.etcd, &["get", key, "-w", "json"]);
    let v: Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("etcdctl json ({e}): {}", stdout(&out)));
    v["kvs"][0]["mod_revision"].as_i64().unwrap_or(0)
}

/// Every verb kubectl can run with `--dry-run=server` answers as if it wrote, and etcdctl shows no
/// key changed.
fn server_dry_runs_store_nothing(c: &Cluster) {
    c.kp.kubectl_ok(&["create", "configmap", "dr", "--from-literal=a=1"]);
    c.kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx"]);
    let keys = [
        "/registry/configmaps/default/dr",
        "/registry/deployments/default/web",
        "/registry/configmaps/default/new",
        "/registry/services/specs/default/s",
        "/registry/ranges/serviceips",
        "/registry/ranges/servicenodeports",
    ];
    let revisions = || keys.map(|k| mod_revision(c, k));
    let before = revisions();
    let dry = "--dry-run=server";
    let json = |args: &[&str]| -> Value {
        let out = c.kp.kubectl_ok(&[args, &[dry, "-o", "json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    assert_eq!(json(&["patch", "cm", "dr", "--type=merge", "-p", r#"{"data":{"a":"2"}}"#])["data"]["a"], "2");
    let replaced = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dr\ndata: {a: \"3\"}\n";
    let out = c.kp.kubectl_stdin(&["replace", "-f", "-", dry], replaced);
    assert!(out.status.success() && stdout(&out).contains("(server dry run)"), "{}", stderr(&out));
    let applied = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dr\ndata: {a: \"4\"}\n";
    let out = c.kp.kubectl_stdin(&["apply", "-f", "-", dry], applied);
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: new\ndata: {a: \"1\"}\n";
    let out = c.kp.kubectl_stdin(&["apply", "-f", "-", dry], fresh);
    assert!(out.status.success() && stdout(&out).contains("created (server dry run)"), "{}", stderr(&out));
    assert_eq!(json(&["create", "configmap", "new", "--from-literal=x=y"])["data"]["x"], "y");
    assert_eq!(json(&["label", "cm", "dr", "team=a"])["metadata"]["labels"]["team"], "a");
    assert_eq!(json(&["annotate", "cm", "dr", "note=b"])["metadata"]["annotations"]["note"], "b");
    let out = c.kp.kubectl_ok(&["scale", "deployment", "web", "--replicas=5", dry]);
    assert!(out.contains("scaled (server dry run)"), "{out}");
    let svc = json(&["create", "service", "nodeport", "s", "--tcp=80:80"]);
    assert!(svc["spec"]["clusterIP"].is_string() && svc["spec"]["ports"][0]["nodePort"].is_i64(), "{svc}");
    let out = c.kp.kubectl_ok(&["delete", "cm", "dr", dry]);
    assert!(out.contains("deleted (server dry run)"), "{out}");
    let out = c.kp.kubectl(&["patch", "cm", "dr", "-p", "{}", "--dry-run=bogus"]);
    assert!(!out.status.success(), "kubectl refuses an unknown --dry-run value itself");

    assert_eq!(revisions(), before, "a server dry run changed a key: {keys:?}");
    assert_eq!(c.key("/registry/configmaps/default/dr").unwrap()["data"]["a"], "1");
    assert_eq!(c.key("/registry/deployments/default/web").unwrap()["spec"]["replicas"], 1);
    assert!(c.key("/registry/configmaps/default/new").is_none());
    assert!(c.key("/registry/services/specs/default/s").is_none());
}

/// Upstream's test-cmd step: `kubectl delete namespace --all` deletes the user's namespaces, the
/// four system ones refuse, and the server goes on serving.
fn delete_namespace_all_spares_the_system_ones(c: &Cluster) {
    c.kp.kubectl_ok(&["create", "namespace", "team-a"]);
    c.kp.kubectl_ok(&["create", "namespace", "team-b"]);
    let out = c.kp.kubectl(&["delete", "namespace", "--all", "--wait=false"]);
    assert!(!out.status.success(), "the system namespaces must refuse");
    let err = stderr(&out);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let want = format!("Error from server (Forbidden): namespaces \"{ns}\" is forbidden: this namespace may not be deleted");
        assert!(err.contains(&want), "{err}");
        let stored = c.key(&format!("/registry/namespaces/{ns}")).unwrap();
        assert!(stored["metadata"].get("deletionTimestamp").is_none(), "{stored}");
    }
    for ns in ["team-a", "team-b"] {
        assert!(stdout(&out).contains(&format!("namespace \"{ns}\" deleted")), "{}", stdout(&out));
        // `kplane apiserver` runs no namespace controller: the namespace stays Terminating.
        let stored = c.key(&format!("/registry/namespaces/{ns}")).unwrap();
        assert_eq!(stored["status"]["phase"], "Terminating");
    }
    let out = c.kp.kubectl_ok(&["get", "ns", "-o", "name"]);
    assert!(out.contains("namespace/default") && out.contains("namespace/kube-system"), "{out}");
    c.kp.kubectl_ok(&["create", "configmap", "still", "-n", "default", "--from-literal=a=b"]);
}

/// `/healthz`, `/livez`, `/readyz` with the real curl, anonymous over HTTPS as a load balancer would
/// probe them: `ok`, the verbose check list, and one check alone.
fn health_endpoints_with_curl(c: &Cluster) {
    let ca = c.kp.data_dir.join("tls").join("ca.crt");
    let curl = |path: &str| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-w", "\\n%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(format!("{}{path}", c.kp.api))
            .output()
            .expect("curl runs (install curl: these tests must not be skipped)");
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl {path}: {}", stderr(&out)));
        (code.to_string(), body.to_string())
    };
    for probe in ["healthz", "livez", "readyz"] {
        assert_eq!(curl(&format!("/{probe}")), ("200".to_string(), "ok".to_string()));
        let (code, body) = curl(&format!("/{probe}?verbose"));
        assert_eq!(code, "200");
        assert!(body.starts_with("[+]ping ok\n[+]log ok\n[+]etcd ok\n"), "{body}");
        assert!(body.ends_with(&format!("{probe} check passed\n")), "{body}");
        assert_eq!(curl(&format!("/{probe}/etcd")), ("200".to_string(), "ok".to_string()));
    }
}

/// Issue 14: `kubectl get events -w` sees every DELETED of a lease that goes (revoked with the real
/// `etcdctl`, which is what its expiry does: one revision deletes every key), and `kubectl get
/// --chunk-size` pages at one revision.
fn events_of_one_lease_all_deleted_and_chunked_lists(c: &Cluster) {
    use std::time::Duration;
    const N: usize = 50;
    let docs: Vec<String> = (0..N)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": format!("e{i:02}")},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": "m", "type": "Normal"})
            .to_string()
        })
        .collect();
    let out = c.kp.kubectl_stdin(&["create", "-f", "-"], &docs.join("\n---\n"));
    assert!(out.status.success(), "{}", stderr(&out));

    let (mut watch, rx) = kubectl_lines(
        c,
        &[
            "get",
            "events",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ],
    );
    let recv = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("kubectl get events -w: no line for {what}"))
    };
    for i in 0..N {
        let line = recv("the initial events");
        assert!(line.starts_with("ADDED "), "initial line {i}: {line}");
    }

    // The events share one lease; the real etcdctl revokes it.
    let out = common::etcdctl(&c.etcd, &["get", "/registry/events/default/", "--prefix", "-w", "json"]);
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let leases: std::collections::BTreeSet<i64> =
        got["kvs"].as_array().unwrap().iter().map(|kv| kv["lease"].as_i64().unwrap_or(0)).collect();
    assert_eq!(got["kvs"].as_array().unwrap().len(), N);
    assert_eq!(leases.len(), 1, "one lease for all {N} events: {leases:?}");
    let lease = *leases.iter().next().unwrap();
    assert_ne!(lease, 0);
    let out = common::etcdctl(&c.etcd, &["lease", "revoke", &format!("{lease:x}")]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let mut deleted = std::collections::BTreeSet::new();
    for _ in 0..N {
        let line = recv("the DELETED events");
        let name = line.strip_prefix("DELETED ").unwrap_or_else(|| panic!("expected DELETED, got {line}"));
        assert!(deleted.insert(name.to_string()), "{name} deleted twice");
    }
    assert_eq!(deleted.len(), N);
    let _ = watch.kill();
    let _ = watch.wait();

    // kubectl get --chunk-size pages (limit + continue) and still lists everything.
    for i in 0..10 {
        c.kp.kubectl_ok(&["create", "configmap", &format!("chunk{i}"), "--from-literal=a=b"]);
    }
    let out = c.kp.kubectl(&["get", "configmaps", "--chunk-size=3", "-o", "name", "-v=6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out).lines().filter(|l| l.contains("chunk")).map(str::to_string).collect();
    assert_eq!(names.len(), 10, "{}", stdout(&out));
    let pages = stderr(&out).matches("continue=").count();
    assert!(pages >= 3, "kubectl paged with continue tokens: {}", stderr(&out));
}

/// Issue 14: with `--etcd-compaction-interval`, a real etcd is compacted (etcdctl refuses the old
/// revision), and a watch from a compacted resourceVersion gets 410.
#[test]
fn etcd_compaction_interval_compacts_real_etcd() {
    use std::time::{Duration, Instant};
    let c = Cluster::real_etcd_with(&["--etcd-compaction-interval", "1s"]);
    c.kp.kubectl_ok(&["create", "configmap", "old", "--from-literal=a=b"]);
    let rv = c.kp.kubectl_ok(&["get", "configmap", "old", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        c.kp.kubectl_ok(&["create", "configmap", &format!("new{i}"), "--from-literal=a=b"]);
        // A watch from rv starts at rv + 1: that revision must be gone too.
        let after = rv.parse::<i64>().unwrap() + 1;
        let out =
            common::etcdctl(&c.etcd, &["get", "/registry/configmaps/default/old", &format!("--rev={after}")]);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        if !out.status.success() && text.contains("required revision has been compacted") {
            break;
        }
        assert!(Instant::now() < deadline, "etcd was not compacted within 60 s: {text}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = c.kp.kubectl(&[
        "get",
        "--raw",
        // A kind nothing watches here (no controllers), so no watch cache window covers the old revision (as
        // upstream, a cache that still holds the events after it would serve them).
        &format!("/api/v1/namespaces/default/replicationcontrollers?watch=true&resourceVersion={rv}&timeoutSeconds=5"),
    ]);
    let text = stdout(&out);
    let first: Value = serde_json::from_str(text.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {text}{}", stderr(&out)));
    assert_eq!(first["type"], "ERROR", "{text}");
    assert_eq!(first["object"]["code"], 410, "{text}");
    assert!(first["object"]["message"].as_str().unwrap().starts_with("too old resource version"), "{text}");
    let out = common::etcdctl(&c.etcd, &["get", "compact_rev_key"]);
    assert!(stdout(&out).contains("compact_rev_key"), "the compactor's key is in etcd: {}", stdout(&out));
}
