//! `/openapi/v2` (JSON and gnostic protobuf), discovery's text and a Status body's text, against a
//! real `kplane up`, with the real clients that read them: every kubectl from 1.27 to 1.33 runs
//! `apply` (create, then a re-apply that is a strategic merge on containers by name), `diff` and
//! `explain`; kubectl 1.27 and 1.28 read `/openapi/v2` in protobuf for `apply`, and `explain
//! --output plaintext-openapiv2` makes every version read it; the Python client compares a 409's body.

mod common;

use std::process::Command;

use common::{free_port, stderr, stdout, Kplane};
use serde_json::Value;

/// `kubectl.<version>`, on PATH or where this machine keeps them; missing is a failure.
fn versioned_kubectl(version: &str) -> String {
    let name = format!("kubectl.{version}");
    store::etcd_process::find_program(&name, &["/usr/lib/google-cloud-sdk/bin"])
        .unwrap_or_else(|| panic!("{name} is missing: the version-skew checks need it"))
        .to_string_lossy()
        .into_owned()
}

/// A Deployment with two containers; `image_b` changes between applies.
fn deployment(ns: &str, image_b: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: a
        image: busybox:1.36
        command: [sleep, '3600']
      - name: b
        image: {image_b}
        command: [sleep, '3600']
"
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The response status of each `GET /openapi/v2` in a `-v=8` log (the `Response Status:` line
/// that follows the request line).
fn v2_fetches(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("GET") && l.contains("/openapi/v2"))
        .map(|(i, _)| {
            lines[i..].iter().find(|l| l.contains("Response Status:")).copied().unwrap_or("no response")
        })
        .collect()
}

#[test]
fn every_kubectl_from_1_27_applies_diffs_and_explains() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    let files = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for minor in 27..=33 {
        let version = format!("1.{minor}");
        let kubectl = versioned_kubectl(&version);
        let ns = format!("v1-{minor}");
        let run = |args: &[&str]| kp.kubectl_program(&kubectl, args);
        let ok = |args: &[&str]| {
            let out = run(args);
            assert!(out.status.success(), "{version} {args:?}: {}{}", stdout(&out), stderr(&out));
            out
        };
        ok(&["create", "namespace", &ns]);
        let first = write(files.path(), &format!("{ns}-1.yaml"), &deployment(&ns, "busybox:1.36"));
        let second = write(files.path(), &format!("{ns}-2.yaml"), &deployment(&ns, "busybox:1.37"));

        // Create by apply. 1.27 and 1.28 fetch /openapi/v2 for it, asking for protobuf, and get it.
        let out = ok(&["apply", "-f", &first, "-v=8"]);
        let log = stderr(&out);
        if minor <= 28 {
            let fetches = v2_fetches(&log);
            assert!(!fetches.is_empty() && fetches.iter().all(|l| l.contains(" 200 OK")), "{version}: {log}");
            assert!(
                log.contains("Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
                "{log}"
            );
            assert!(
                log.contains("Content-Type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
                "{log}"
            );
        }
        assert!(stdout(&out).contains("deployment.apps/web created"), "{version}: {}", stdout(&out));

        // Another actor changes container a; the re-apply changes only b's image. A strategic
        // merge on containers by name keeps a's env; a JSON merge patch would replace the list.
        ok(&["set", "env", "-n", &ns, "deployment/web", "-c", "a", "FROM_ELSEWHERE=kept"]);
        let out = ok(&["apply", "-f", &second, "-v=8"]);
        let log = stderr(&out);
        assert!(!log.contains("error calculating patch from openapi spec"), "{version}: {log}");
        assert!(log.contains("strategic-merge-patch+json"), "{version} did not send a strategic merge: {log}");
        assert!(stdout(&out).contains("deployment.apps/web configured"), "{version}: {}", stdout(&out));
        let got = ok(&["get", "-n", &ns, "deployment/web", "-o", "json"]);
        let d: Value = serde_json::from_slice(&got.stdout).unwrap();
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "a", "{version}: {containers}");
        assert_eq!(containers[0]["env"][0]["value"], "kept", "{version}: {containers}");
        assert_eq!(containers[1]["image"], "busybox:1.37", "{version}: {containers}");

        // diff against a changed manifest: exit 1 with the change shown; against the live state: 0.
        let third = write(files.path(), &format!("{ns}-3.yaml"), &deployment(&ns, "busybox:1.38"));
        let out = run(&["diff", "-f", &third]);
        let diff_changed = (out.status.code(), stdout(&out), stderr(&out));
        let out = run(&["diff", "-f", &second]);
        let diff_same = (out.status.code(), stdout(&out), stderr(&out));
        report.push(format!("{version} diff changed: {:?} {}", diff_changed.0, diff_changed.2.trim()));
        assert_eq!(diff_changed.0, Some(1), "{version} diff: {diff_changed:?}");
        assert!(diff_changed.1.contains("+        image: busybox:1.38"), "{version}: {}", diff_changed.1);
        assert_eq!(diff_same.0, Some(0), "{version} diff of the applied manifest: {diff_same:?}");

        // explain, by whatever OpenAPI version this kubectl prefers, then from v2 explicitly.
        let out = ok(&["explain", "pods.spec.containers"]);
        let text = stdout(&out);
        assert!(text.contains("KIND:") && text.contains("Pod"), "{version}: {text}");
        assert!(text.contains("image") && text.contains("Container image name"), "{version}: {text}");
        let out = ok(&[
            "explain",
            "deployments.spec.template.spec.containers.image",
            "--output",
            "plaintext-openapiv2",
        ]);
        let text = stdout(&out);
        assert!(text.contains("Container image name"), "{version} explain from v2: {text}");
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn openapi_v2_json_discovery_text_and_status_text() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());

    // The JSON form, as `kubectl get --raw` reads it.
    let raw = kp.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let containers = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    let list = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(list["operationId"], "listCoreV1NamespacedPod");
    assert_eq!(list["x-kubernetes-group-version-kind"]["kind"], "Pod");

    // Discovery text as kubectl's test-cmd greps it (run_assert_short_name_tests and
    // run_assert_categories_tests).
    let core = kp.kubectl_ok(&["get", "--raw", "/api/v1"]);
    let pods = concat!(
        r#"{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","#,
        r#""verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"#,
        r#""shortNames":["po"],"categories":["all"],"storageVersionHash":"xPOwRZ+Yhw8="}"#
    );
    let head = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"#;
    assert!(core.starts_with(head), "{core}");
    assert!(core.contains(pods), "{core}");
    assert!(core.contains(r#""shortNames":["cm"],"storageVersionHash":"qFsyl6wFWjQ="}"#), "{core}");
    let apps = kp.kubectl_ok(&["get", "--raw", "/apis/apps/v1"]);
    assert!(
        apps.contains(r#""shortNames":["deploy"],"categories":["all"],"storageVersionHash":"8aSe+NMegvE="}"#)
    );

    // A 409's body, byte for byte, as the Python client's e2e tests compare it.
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
body = client.V1Namespace(metadata=client.V1ObjectMeta(name="twice"))
v1.create_namespace(body)
try:
    v1.create_namespace(body)
    print("no conflict")
except client.exceptions.ApiException as e:
    sys.stdout.write(str(e.status) + " " + e.body.decode() if isinstance(e.body, bytes) else str(e.status) + " " + e.body)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&kp.kubeconfig)
        .output()
        .expect("python3 could not run: install Python 3 and `pip install kubernetes`");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out),
        concat!(
            r#"409 {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
            r#""message":"namespaces \"twice\" already exists","reason":"AlreadyExists","#,
            r#""details":{"name":"twice","kind":"namespaces"},"code":409}"#,
            "\n"
        )
    );
}
