//! Server-side apply against `kplane apiserver`, driven by the real kubectl (`apply --server-side`,
//! `--field-manager`, `--force-conflicts`, `diff`, `get --show-managed-fields`, the upgrade from
//! client-side apply), a CRD with a map-keyed list, and kube-rs `Patch::Apply`.

mod common;

use std::process::Output;

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::{json, Value};

fn start() -> (tempfile::TempDir, Kplane) {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    (dir, kp)
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "kubectl failed:\n{}\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

fn get(kp: &Kplane, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&kp.kubectl_ok(&all)).unwrap()
}

fn cm(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n{data}")
}

#[test]
fn kubectl_server_side_apply_conflicts_force_and_diff() {
    let (_dir, kp) = start();
    let out = ok(kp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &cm("  a: \"1\"\n  b: \"2\"\n")));
    assert!(out.contains("configmap/cfg serverside-applied"), "{out}");
    assert_eq!(get(&kp, &["cm", "cfg"])["data"], json!({"a": "1", "b": "2"}));

    // b left the manifest: it leaves the object.
    ok(kp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &cm("  a: \"1\"\n")));
    let obj = get(&kp, &["cm", "cfg"]);
    assert_eq!(obj["data"], json!({"a": "1"}));
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!((entry["manager"].as_str(), entry["operation"].as_str()), (Some("kubectl"), Some("Apply")));
    let yaml = kp.kubectl_ok(&["get", "cm", "cfg", "-o", "yaml", "--show-managed-fields"]);
    assert!(
        yaml.contains("manager: kubectl") && yaml.contains("operation: Apply") && yaml.contains("f:a: {}"),
        "{yaml}"
    );

    // Another manager changing a conflicts, as kubectl prints it.
    let other = &["apply", "--server-side", "--field-manager=other", "-f", "-"];
    let o = kp.kubectl_stdin(other, &cm("  a: \"9\"\n"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"),
        "{}",
        stderr(&o)
    );
    assert_eq!(get(&kp, &["cm", "cfg"])["data"]["a"], "1", "a conflict writes nothing");
    ok(kp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-"],
        &cm("  a: \"9\"\n"),
    ));
    let obj = get(&kp, &["cm", "cfg"]);
    assert_eq!(obj["data"]["a"], "9");
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert_eq!(managers, ["other"], "kubectl lost its only field: {obj}");

    // kubectl diff shows the change (exit 1) and writes nothing; no change is exit 0.
    for extra in [&[][..], &["--server-side", "--field-manager=other"][..]] {
        let mut args = vec!["diff"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-f", "-"]);
        let o = kp.kubectl_stdin(&args, &cm("  a: \"10\"\n"));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}\n{}", stdout(&o), stderr(&o));
        let d = stdout(&o);
        assert!(d.contains("-  a: \"9\"") && d.contains("+  a: \"10\""), "{args:?}: {d}");
        let o = kp.kubectl_stdin(&args, &cm("  a: \"9\"\n"));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}\n{}", stdout(&o), stderr(&o));
    }
    assert_eq!(get(&kp, &["cm", "cfg"])["data"]["a"], "9");

    // A manifest of the wrong shape is refused with the server's message.
    let o = kp.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: [1]\n",
    );
    assert!(!o.status.success());
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx
";

#[test]
fn server_side_apply_takes_over_from_client_side_apply() {
    let (_dir, kp) = start();
    ok(kp.kubectl_stdin(&["apply", "-f", "-"], &DEPLOY.replace("REPLICAS", "1")));
    let obj = get(&kp, &["deploy", "web"]);
    assert!(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    // Anyone but kubectl conflicts with the client-side applier.
    let o = kp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=intruder", "-f", "-"],
        &DEPLOY.replace("REPLICAS", "3"),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"),
        "{}",
        stderr(&o)
    );

    // kubectl itself upgrades: the fields of the last-applied annotation are its own to take.
    ok(kp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &DEPLOY.replace("REPLICAS", "3")));
    let obj = get(&kp, &["deploy", "web"]);
    assert_eq!(obj["spec"]["replicas"], 3);
    let last: Value = serde_json::from_str(
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(last["spec"]["replicas"], 3, "the annotation follows the applied manifest");
    let apply = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
        .expect("kubectl's Apply entry");
    assert!(apply["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
        ["f:image"]
        .is_object());
    // And a later client-side apply still works on top.
    ok(kp.kubectl_stdin(&["apply", "-f", "-"], &DEPLOY.replace("REPLICAS", "2")));
    assert_eq!(get(&kp, &["deploy", "web"])["spec"]["replicas"], 2);
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              parts:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    count: {type: integer}
";

fn widget(parts: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w}}\nspec:\n  parts: {parts}\n")
}

#[test]
fn custom_resource_list_map_applied_by_two_managers() {
    let (_dir, kp) = start();
    ok(kp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], CRD));
    eventually(20, "widgets served", || kp.kubectl(&["get", "widgets"]).status.success().then_some(()));
    ok(kp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        &widget("[{name: p1, count: 1}]"),
    ));
    ok(kp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        &widget("[{name: p2, count: 2}]"),
    ));
    let obj = get(&kp, &["widget", "w"]);
    assert_eq!(obj["spec"]["parts"], json!([{"name": "p1", "count": 1}, {"name": "p2", "count": 2}]));
    let b = obj["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == "b").unwrap();
    assert_eq!(
        b["fieldsV1"],
        json!({"f:spec": {"f:parts": {"k:{\"name\":\"p2\"}": {".": {}, "f:count": {}, "f:name": {}}}}})
    );
    // b changing p1's count conflicts with a; a dropping p1 removes it and leaves p2 (as YAML
    // 1.1, `y` would be a boolean).
    let o = kp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        &widget("[{name: p2, count: 2}, {name: p1, count: 5}]"),
    );
    assert!(stderr(&o).contains("conflict with \"a\": .spec.parts[name=\"p1\"].count"), "{}", stderr(&o));
    ok(kp.kubectl_stdin(&["apply", "--server-side", "--field-manager=a", "-f", "-"], &widget("[]")));
    assert_eq!(get(&kp, &["widget", "w"])["spec"]["parts"], json!([{"name": "p2", "count": 2}]));
    // A wrong apiVersion is the field manager's 400; nothing is written.
    let o = kp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        &widget("[]").replace("example.com/v1", "example.com/v2"),
    );
    assert!(!o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_patch_apply_with_force() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};

    let (_dir, kp) = start();
    let kc = kube::config::Kubeconfig::read_from(&kp.kubeconfig).unwrap();
    let cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "k"}, "data": {"x": "1"}});
    let made = api.patch("k", &PatchParams::apply("one"), &Patch::Apply(&body)).await.unwrap();
    assert_eq!(made.data.unwrap()["x"], "1");
    let mut changed = body.clone();
    changed["data"]["x"] = json!("2");
    let err = api.patch("k", &PatchParams::apply("two"), &Patch::Apply(&changed)).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.message, "Apply failed with 1 conflict: conflict with \"one\": .data.x");
        }
        other => panic!("{other:?}"),
    }
    let forced = api.patch("k", &PatchParams::apply("two").force(), &Patch::Apply(&changed)).await.unwrap();
    assert_eq!(forced.data.unwrap()["x"], "2");
    let entries = forced.metadata.managed_fields.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].manager.as_deref(), Some("two"));
    assert_eq!(entries[0].operation.as_deref(), Some("Apply"));
}

#[test]
fn python_client_applies_server_side() {
    let (_dir, kp) = start();
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py"}, "data": {"k": "1"}}
made = v1.patch_namespaced_config_map("py", "default", body, field_manager="py-one",
                                      _content_type="application/apply-patch+yaml")
assert made.data == {"k": "1"}, made.data
assert made.metadata.managed_fields[0].operation == "Apply"
body["data"]["k"] = "2"
try:
    v1.patch_namespaced_config_map("py", "default", body, field_manager="py-two",
                                   _content_type="application/apply-patch+yaml")
    raise SystemExit("no conflict")
except ApiException as e:
    assert e.status == 409, e.status
    assert 'conflict with \\"py-one\\": .data.k' in e.body, e.body
forced = v1.patch_namespaced_config_map("py", "default", body, field_manager="py-two", force=True,
                                        _content_type="application/apply-patch+yaml")
assert forced.data == {"k": "2"}, forced.data
print("python apply: ok")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&kp.kubeconfig)
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("python apply: ok"));
}

#[test]
fn every_kubectl_from_1_27_applies_server_side_and_diffs() {
    let (_dir, kp) = start();
    for minor in 27..=33 {
        let name = format!("kubectl.1.{minor}");
        let program = store::etcd_process::find_program(&name, &["/usr/lib/google-cloud-sdk/bin"])
            .unwrap_or_else(|| panic!("{name} is missing: the version-skew checks need it"));
        let program = program.to_string_lossy();
        let manifest = |v: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: v{minor}\ndata:\n  a: \"{v}\"\n")
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cm.yaml");
        std::fs::write(&file, manifest("1")).unwrap();
        let f = file.to_string_lossy().to_string();
        let o = kp.kubectl_program(&program, &["apply", "--server-side", "-f", &f]);
        assert!(o.status.success(), "{name}: {}\n{}", stdout(&o), stderr(&o));
        std::fs::write(&file, manifest("2")).unwrap();
        let o = kp.kubectl_program(&program, &["diff", "--server-side", "-f", &f]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}\n{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("+  a: \"2\""), "{name}: {}", stdout(&o));
        let o = kp.kubectl_program(&program, &["apply", "--server-side", "-f", &f]);
        assert!(o.status.success(), "{name}: {}\n{}", stdout(&o), stderr(&o));
        assert_eq!(get(&kp, &["cm", &format!("v{minor}")])["data"]["a"], "2", "{name}");
    }
}
