//! CustomResourceDefinitions against `kplane up`, driven by the real kubectl (plus the Python
//! client and kube-rs), with the stored bytes read back with the real etcdctl.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::{json, Value};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: The desired schedule of the cron job.
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              mode:
                type: string
                enum: [Fast, Slow]
              replicas:
                type: integer
                minimum: 1
                maximum: 10
                default: 1
          status:
            type: object
            properties:
              replicas:
                type: integer
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const CR: &str = r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-cron
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
  unknownField: dropped
"#;

const KEY: &str = "/registry/stable.example.com/crontabs/default/my-cron";

fn up(dir: &std::path::Path) -> Kplane {
    Kplane::start_with(dir, free_port(), &["--nodes", "1", "--no-networking", "--no-xray"])
}

fn apply_crd(kp: &Kplane) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s"]);
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

#[test]
fn crd_lifecycle_with_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let kp = up(dir.path());
    apply_crd(&kp);
    let crd: Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "crd", "crontabs.stable.example.com", "-o", "json"]))
            .unwrap();
    let types: Vec<&str> =
        crd["status"]["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["NamesAccepted", "Established"]);
    assert_eq!(crd["status"]["acceptedNames"]["shortNames"], json!(["ct"]));
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    let stored = kp.etcd_get(
        &kp.endpoint(),
        "/registry/apiextensions.k8s.io/customresourcedefinitions/crontabs.stable.example.com",
    );
    assert_eq!(stored.unwrap()["spec"]["group"], "stable.example.com");

    // Discovery: api-resources lists it with its short name and category.
    let resources = kp.kubectl_ok(&["api-resources", "--api-group=stable.example.com"]);
    assert!(
        resources.contains("crontabs") && resources.contains(" ct ") && resources.contains("CronTab"),
        "{resources}"
    );

    // Strict field validation (kubectl's default) refuses the unknown field, as upstream does...
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], CR);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"CronTab in version "v1" cannot be handled as a CronTab: strict decoding error: unknown field "spec.unknownField""#),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&kp.endpoint(), KEY).is_none(), "nothing stored");
    // ...and without it the field is pruned; the default is applied; both visible in etcd.
    ok(&kp.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], CR));
    let stored = kp.etcd_get(&kp.endpoint(), KEY).expect("stored at upstream's key");
    assert_eq!(
        stored["spec"],
        json!({"cronSpec": "* * * * */5", "image": "my-awesome-cron-image", "replicas": 1})
    );
    let yaml = kp.kubectl_ok(&["get", "ct", "my-cron", "-o", "yaml"]);
    assert!(yaml.contains("replicas: 1") && !yaml.contains("unknownField: dropped\n  "), "{yaml}");
    assert!(!stored["spec"].as_object().unwrap().contains_key("unknownField"));

    // Two served versions, one storage version (conversion None): v1 is preferred, either reads
    // the object in its own apiVersion, and what is written through v1beta1 is stored as v1.
    let group: Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "--raw", "/apis/stable.example.com"])).unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    assert_eq!(group["versions"].as_array().unwrap().len(), 2);
    let beta = kp.kubectl_ok(&[
        "get",
        "crontabs.v1beta1.stable.example.com",
        "my-cron",
        "-o",
        "jsonpath={.apiVersion}",
    ]);
    assert_eq!(beta, "stable.example.com/v1beta1");
    ok(&kp.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: stable.example.com/v1beta1\nkind: CronTab\nmetadata:\n  name: beta\nspec:\n  anything: goes\n",
    ));
    let stored = kp.etcd_get(&kp.endpoint(), "/registry/stable.example.com/crontabs/default/beta").unwrap();
    assert_eq!(
        (stored["apiVersion"].as_str(), &stored["spec"]),
        (Some("stable.example.com/v1"), &json!({"anything": "goes"}))
    );
    ok(&kp.kubectl(&["delete", "crontabs.v1beta1.stable.example.com", "beta"]));

    // Printer columns, by plural, short name and category.
    for what in ["crontabs", "ct", "crontab.stable.example.com"] {
        let table = kp.kubectl_ok(&["get", what]);
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "SPEC", "REPLICAS"], "{table}");
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row, ["my-cron", "*", "*", "*", "*", "*/5", "1"], "{table}");
    }
    let all = kp.kubectl_ok(&["get", "all"]);
    assert!(all.contains("crontab.stable.example.com/my-cron"), "{all}");

    // explain reads the CRD's OpenAPI v3 schema.
    let explain = kp.kubectl_ok(&["explain", "crontabs.spec"]);
    assert!(explain.contains("The desired schedule of the cron job."), "{explain}");
    assert!(explain.contains("cronSpec") && explain.contains("-required-"), "{explain}");
    // kubectl 1.27 explains from /openapi/v2 (protobuf), which follows the registry too.
    let k127 = store::etcd_process::find_program("kubectl.1.27", &["/usr/lib/google-cloud-sdk/bin"])
        .expect("kubectl.1.27 is missing: the version-skew checks need it");
    let out = kp.kubectl_program(&k127.to_string_lossy(), &["explain", "crontabs.spec"]);
    let explain = stdout(&out);
    assert!(out.status.success(), "{explain}{}", stderr(&out));
    assert!(explain.contains("The desired schedule of the cron job."), "{explain}");
    let v2 = kp.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    assert!(v2.contains("com.example.stable.v1.CronTab"), "the CRD is missing from /openapi/v2");

    // Validation with upstream's messages, nothing stored.
    let bad = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  cronSpec: nope\n  replicas: 11\n  mode: Medium\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    for want in [
        r#"The CronTab "bad" is invalid: "#,
        r#"spec.cronSpec: Invalid value: "nope": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#,
        r#"spec.mode: Unsupported value: "Medium": supported values: "Fast", "Slow""#,
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    let typed =
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  replicas: many\n";
    let err = stderr(&kp.kubectl_stdin(&["create", "-f", "-"], typed));
    assert!(err.contains("spec.cronSpec: Required value"), "{err}");
    assert!(
        err.contains(
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
        ),
        "{err}"
    );
    assert!(kp.etcd_get(&kp.endpoint(), "/registry/stable.example.com/crontabs/default/bad").is_none());

    // The status subresource: a main write cannot change status, a status write only status.
    ok(&kp.kubectl(&[
        "patch",
        "ct",
        "my-cron",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2}}"#,
    ]));
    ok(&kp.kubectl(&["patch", "ct", "my-cron", "--type=merge", "-p", r#"{"status":{"replicas":7}}"#]));
    let got: Value = serde_json::from_str(&kp.kubectl_ok(&["get", "ct", "my-cron", "-o", "json"])).unwrap();
    assert_eq!(got["status"]["replicas"], 2);
    assert_eq!(got["metadata"]["generation"], 1, "status writes do not bump the generation");

    // The scale subresource.
    ok(&kp.kubectl(&["scale", "ct", "my-cron", "--replicas=3"]));
    let scale: Value = serde_json::from_str(&kp.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron/scale",
    ]))
    .unwrap();
    assert_eq!(
        (scale["kind"].as_str(), &scale["spec"]["replicas"], &scale["status"]["replicas"]),
        (Some("Scale"), &json!(3), &json!(2))
    );
    assert_eq!(kp.etcd_get(&kp.endpoint(), KEY).unwrap()["spec"]["replicas"], 3);
    assert_eq!(kp.etcd_get(&kp.endpoint(), KEY).unwrap()["metadata"]["generation"], 2);

    // Watch: a CR created while `kubectl get -w` runs is printed.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kp.kubeconfig)
        .args(["get", "ct", "-w", "--request-timeout=8s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ok(&kp.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: second\n  labels: {tier: b}\n  finalizers: [example.com/hold]\nspec:\n  cronSpec: '* * * * *'\n",
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let seen = stdout(&watch.wait_with_output().unwrap());
    assert!(seen.contains("my-cron") && seen.contains("second"), "{seen}");

    // Label and field selectors.
    assert_eq!(
        kp.kubectl_ok(&["get", "ct", "-l", "tier=b", "-o", "name"]).trim(),
        "crontab.stable.example.com/second"
    );
    assert_eq!(
        kp.kubectl_ok(&["get", "ct", "--field-selector", "metadata.name=my-cron", "-o", "name"]).trim(),
        "crontab.stable.example.com/my-cron"
    );

    // Deleting the CRD deletes its CRs first; a CR's own finalizer holds the CRD until removed.
    ok(&kp.kubectl(&["delete", "crd", "crontabs.stable.example.com", "--wait=false"]));
    eventually(20, "my-cron deleted by the CRD's cleanup", || {
        kp.etcd_get(&kp.endpoint(), KEY).is_none().then_some(())
    });
    let crd_key = "/registry/apiextensions.k8s.io/customresourcedefinitions/crontabs.stable.example.com";
    let held = kp.etcd_get(&kp.endpoint(), crd_key).expect("the CRD waits for the held CR");
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let terminating =
        held["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Terminating");
    assert!(terminating, "{held}");
    let refused = kp.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: late\nspec:\n  cronSpec: '* * * * *'\n",
    );
    assert!(
        stderr(&refused).contains("create not allowed while custom resource definition is terminating"),
        "{}",
        stderr(&refused)
    );
    ok(&kp.kubectl(&["patch", "ct", "second", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]));
    eventually(20, "the CRD gone", || kp.etcd_get(&kp.endpoint(), crd_key).is_none().then_some(()));
    eventually(10, "crontabs gone from discovery", || {
        let out = kp.kubectl(&["get", "--raw", "/apis/stable.example.com/v1"]);
        (!out.status.success()).then_some(())
    });
    let groups = kp.kubectl_ok(&["get", "--raw", "/apis"]);
    assert!(!groups.contains("stable.example.com"), "{groups}");
    assert!(kp.kubectl_ok(&["get", "--raw", "/openapi/v3"]).find("stable.example.com").is_none());
}

#[test]
fn a_crd_with_an_invalid_schema_or_webhook_conversion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let bad = CRD.replace("          spec:\n            type: object\n", "          spec:\n");
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &bad);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(r#"The CustomResourceDefinition "crontabs.stable.example.com" is invalid: spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"#), "{}", stderr(&out));
    let misnamed = CRD.replace("name: crontabs.stable.example.com", "name: crontab.stable.example.com");
    let err = stderr(&kp.kubectl_stdin(&["create", "-f", "-"], &misnamed));
    assert!(err.contains(r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#), "{err}");
    let two_storage = CRD.replace(
        "  - name: v1\n    served: true\n    storage: true\n",
        "  - name: v1\n    served: true\n    storage: false\n",
    );
    let err = stderr(&kp.kubectl_stdin(&["create", "-f", "-"], &two_storage));
    assert!(err.contains("must have exactly one version marked as storage version"), "{err}");
    let webhook =
        CRD.replace("  scope: Namespaced\n", "  scope: Namespaced\n  conversion:\n    strategy: Webhook\n");
    let err = stderr(&kp.kubectl_stdin(&["create", "-f", "-"], &webhook));
    assert!(err.contains("spec.conversion.strategy: Forbidden: Webhook conversion is not supported"), "{err}");
    // The 422 is upstream's Status.
    let raw = kp.kubectl_stdin(&["create", "-f", "-", "-o", "json", "-v=6"], &bad);
    assert!(stderr(&raw).contains("422"), "{}", stderr(&raw));
    let keys =
        common::etcdctl(&kp.endpoint(), &["get", "--prefix", "--keys-only", "/registry/apiextensions.k8s.io/"]);
    assert_eq!(stdout(&keys).trim(), "", "nothing stored");
}

#[test]
fn crds_survive_a_restart_and_are_followed_by_another_apiserver() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_port = free_port();
    let mut a = Kplane::start_cmd("apiserver", dir.path(), etcd_port, &[]);
    apply_crd(&a);
    ok(&a.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], CR));

    // A second API server on the same store: it serves what the first one defined, and follows
    // a CRD written through the first one later.
    let dir_b = tempfile::tempdir().unwrap();
    let endpoint = a.endpoint();
    let b = Kplane::start_cmd("apiserver", dir_b.path(), free_port(), &["--etcd-servers", &endpoint]);
    assert!(b.kubectl_ok(&["get", "ct", "-o", "name"]).contains("crontab.stable.example.com/my-cron"));
    let widgets = CRD
        .replace("crontabs", "widgets")
        .replace("crontab", "widget")
        .replace("CronTab", "Widget")
        .replace("[ct]", "[wd]");
    ok(&a.kubectl_stdin(&["create", "-f", "-"], &widgets));
    eventually(10, "widgets served by the second API server", || {
        b.kubectl(&["get", "--raw", "/apis/stable.example.com/v1"]).status.success().then(|| {
            let list = stdout(&b.kubectl(&["get", "--raw", "/apis/stable.example.com/v1"]));
            list.contains("\"widgets\"").then_some(())
        })?
    });
    // Deleted through the second, gone from the first.
    ok(&b.kubectl(&["delete", "crd", "widgets.stable.example.com", "--timeout=20s"]));
    eventually(10, "widgets gone from the first API server", || {
        let list = stdout(&a.kubectl(&["get", "--raw", "/apis/stable.example.com/v1"]));
        (!list.contains("\"widgets\"")).then_some(())
    });
    drop(b);

    // Restart: the CRD and its CR are served again.
    a.terminate();
    let a2 = Kplane::start_cmd("apiserver", dir.path(), etcd_port, &[]);
    let out = a2.kubectl_ok(&["get", "ct"]);
    assert!(out.contains("my-cron"), "{out}");
}

#[test]
fn python_client_custom_objects_api_creates_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    apply_crd(&kp);
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
api = client.CustomObjectsApi()
body = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "py"},
        "spec": {"cronSpec": "*/5 * * * *"}}
made = api.create_namespaced_custom_object("stable.example.com", "v1", "default", "crontabs", body)
assert made["spec"]["replicas"] == 1, made
items = api.list_namespaced_custom_object("stable.example.com", "v1", "default", "crontabs")["items"]
print(",".join(i["metadata"]["name"] for i in items))
try:
    api.create_namespaced_custom_object("stable.example.com", "v1", "default", "crontabs",
        {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "bad"}, "spec": {}})
    print("created bad")
except client.exceptions.ApiException as e:
    print(e.status)
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&kp.kubeconfig).output().expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["py", "422"]);
}

#[test]
fn kube_rs_dynamic_client_creates_lists_and_watches_custom_resources() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
    use kube::runtime::{watcher, WatchStreamExt};

    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kp.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        // The CRD itself through kube-rs's typed API.
        let crds: Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = Api::all(client.clone());
        let crd: Value = serde_yaml_ng_free(CRD);
        crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await.unwrap();
        // Discovery finds it, as kube-rs's own discovery resolves it.
        let gvk = GroupVersionKind::gvk("stable.example.com", "v1", "CronTab");
        let (ar, _caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        assert_eq!(ar.plural, "crontabs");
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "default",
            &ApiResource::from_gvk_with_plural(&gvk, "crontabs"),
        );
        let mut events = watcher(api.clone(), watcher::Config::default()).applied_objects().boxed();
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "rs"}, "spec": {"cronSpec": "* * * * *"}
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
        let seen =
            tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap();
        assert_eq!(seen.metadata.name.as_deref(), Some("rs"));
        assert_eq!(seen.data["spec"]["replicas"], 1);
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
    });
}

/// The CRD YAML as JSON (through kubectl-free conversion: the test's YAML is simple block YAML).
fn serde_yaml_ng_free(yaml: &str) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(yaml.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 with PyYAML (the kubernetes client's dependency)");
    serde_json::from_slice(&out.stdout).expect("YAML as JSON")
}

/// What an operator author writes: the CRD comes from the type (kube-derive and schemars).
mod derived {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[kube(group = "kplane.example.com", version = "v1", kind = "Backup", namespaced)]
    #[kube(
        status = "BackupStatus",
        shortname = "bk",
        printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#
    )]
    pub struct BackupSpec {
        pub target: String,
        pub keep: Option<i32>,
    }

    #[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
    pub struct BackupStatus {
        pub done: bool,
    }
}

#[test]
fn kube_rs_derived_custom_resource_is_created_listed_and_watched() {
    use derived::{Backup, BackupSpec, BackupStatus};
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use kube::runtime::{watcher, WatchStreamExt};
    use kube::CustomResourceExt;

    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kp.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let crds: Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = Api::all(client.clone());
        crds.create(&PostParams::default(), &Backup::crd()).await.expect("the derived CRD is accepted");
        let backups: Api<Backup> = Api::namespaced(client.clone(), "default");
        let mut events = watcher(backups.clone(), watcher::Config::default()).applied_objects().boxed();
        let b = Backup::new("nightly", BackupSpec { target: "db".into(), keep: Some(7) });
        backups.create(&PostParams::default(), &b).await.unwrap();
        let seen =
            tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap();
        assert_eq!((seen.metadata.name.as_deref(), seen.spec.keep), (Some("nightly"), Some(7)));
        let status = serde_json::json!({"status": BackupStatus { done: true }});
        backups.patch_status("nightly", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        let list = backups.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert!(list.items[0].status.as_ref().is_some_and(|s| s.done));
    });
    // kubectl sees it by its short name, with its printer column.
    let table = kp.kubectl_ok(&["get", "bk"]);
    assert_eq!(
        table.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(),
        ["nightly", "db"],
        "{table}"
    );
}
