//! Objects and discovery in upstream's Go struct field order, as real clients see them: etcdctl
//! reading the stored values, `kubectl get --raw` reading responses, lists and watch events, kube-rs
//! reading aggregated discovery, and kubectl 1.27 / 1.33 get, apply and diff still working.

mod common;

use common::{etcdctl, free_port, stderr, stdout, Kplane};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object's members in the order written (serde_json's Value would sort them).
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Members, M::Error> {
                let mut out = Vec::new();
                while let Some(pair) = m.next_entry::<String, Box<RawValue>>()? {
                    out.push(pair);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The keys of the object at `path` (object keys; a number indexes an array) in `text`, in the
/// order written.
fn keys_at(text: &str, path: &[&str]) -> Vec<String> {
    let mut cur = text.trim().to_string();
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => {
                let items: Vec<Box<RawValue>> =
                    serde_json::from_str(&cur).unwrap_or_else(|e| panic!("{e}: {cur}"));
                items[i].get().to_string()
            }
            Err(_) => {
                let m: Members = serde_json::from_str(&cur).unwrap_or_else(|e| panic!("{e}: {cur}"));
                let (_, v) = m.0.into_iter().find(|(k, _)| k == p).unwrap_or_else(|| panic!("no {p} in {cur}"));
                v.get().to_string()
            }
        };
    }
    let m: Members = serde_json::from_str(&cur).unwrap_or_else(|e| panic!("{e}: {cur}"));
    m.0.into_iter().map(|(k, _)| k).collect()
}

/// `got` lists exactly the keys of `order` it has, in that order, with nothing else.
fn assert_order(got: &[String], order: &[&str], what: &str) {
    let want: Vec<&str> = order.iter().copied().filter(|k| got.iter().any(|g| g == k)).collect();
    assert_eq!(got, want.as_slice(), "{what}: keys out of upstream's order");
    assert!(got.len() >= 2, "{what}: too few keys to tell an order: {got:?}");
}

const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const MANIFESTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
  labels: {app: web}
binaryData:
  b: aGk=
data:
  k: v
immutable: false
---
apiVersion: v1
kind: Pod
metadata:
  name: solo
  labels: {app: solo}
spec:
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo hi"]
    env:
    - name: A
      value: b
    volumeMounts:
    - name: scratch
      mountPath: /scratch
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  replicas: 1
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
"#;

#[test]
fn stored_objects_responses_lists_and_watches_are_in_go_field_order() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], MANIFESTS);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // etcdctl: the stored values, as kube-apiserver's encoder would have written them.
    let stored = |key: &str| {
        let out = etcdctl(&kp.endpoint(), &["get", key, "--print-value-only"]);
        let text = stdout(&out).trim().to_string();
        assert!(!text.is_empty(), "nothing at {key}: {}", stderr(&out));
        text
    };
    let cm = stored("/registry/configmaps/default/cm");
    assert_eq!(
        keys_at(&cm, &[]),
        ["kind", "apiVersion", "metadata", "immutable", "data", "binaryData"],
        "{cm}"
    );
    assert_order(&keys_at(&cm, &["metadata"]), OBJECT_META, "stored ConfigMap metadata");
    assert!(!keys_at(&cm, &["metadata"]).contains(&"resourceVersion".to_string()), "{cm}");
    assert_eq!(
        keys_at(&cm, &["metadata", "managedFields", "0"]),
        ["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1"]
    );

    let pod = stored("/registry/pods/default/solo");
    assert_eq!(keys_at(&pod, &[]), ["kind", "apiVersion", "metadata", "spec", "status"], "{pod}");
    let pod_spec = keys_at(&pod, &["spec"]);
    assert_order(
        &pod_spec,
        &[
            "volumes",
            "containers",
            "restartPolicy",
            "terminationGracePeriodSeconds",
            "dnsPolicy",
            "serviceAccountName",
            "serviceAccount",
            "nodeName",
            "securityContext",
            "schedulerName",
            "tolerations",
            "priority",
            "enableServiceLinks",
            "preemptionPolicy",
        ],
        "stored PodSpec",
    );
    assert_eq!(pod_spec.first().map(String::as_str), Some("volumes"), "{pod_spec:?}");
    assert_order(
        &keys_at(&pod, &["spec", "containers", "0"]),
        &[
            "name",
            "image",
            "command",
            "args",
            "workingDir",
            "ports",
            "envFrom",
            "env",
            "resources",
            "volumeMounts",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "imagePullPolicy",
        ],
        "stored Container",
    );

    let deploy = stored("/registry/deployments/default/web");
    assert_eq!(keys_at(&deploy, &[]), ["kind", "apiVersion", "metadata", "spec", "status"], "{deploy}");
    assert_order(
        &keys_at(&deploy, &["spec"]),
        &[
            "replicas",
            "selector",
            "template",
            "strategy",
            "minReadySeconds",
            "revisionHistoryLimit",
            "progressDeadlineSeconds",
        ],
        "stored DeploymentSpec",
    );
    assert_eq!(keys_at(&deploy, &["spec", "template"]), ["metadata", "spec"]);
    assert_order(
        &keys_at(&deploy, &["spec", "template", "spec", "containers", "0", "ports", "0"]),
        &["name", "hostPort", "containerPort", "protocol", "hostIP"],
        "stored ContainerPort",
    );
    assert_order(&keys_at(&deploy, &["metadata"]), OBJECT_META, "stored Deployment metadata");

    // Responses: a GET starts as upstream's does, resourceVersion after uid.
    let raw = kp.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps/cm"]);
    assert!(
        raw.starts_with(
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm","namespace":"default","uid":""#
        ),
        "{raw}"
    );
    let meta = keys_at(&raw, &["metadata"]);
    assert_order(&meta, OBJECT_META, "served ConfigMap metadata");
    assert!(meta.contains(&"resourceVersion".to_string()), "{raw}");
    let raw = kp.kubectl_ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web"]);
    assert!(
        raw.starts_with(r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web""#),
        "{raw}"
    );
    assert_eq!(keys_at(&raw, &["spec"]), keys_at(&deploy, &["spec"]));

    // A list (the raw fast path) and its items.
    let list = kp.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/default/pods?limit=1"]);
    assert_eq!(keys_at(&list, &[]), ["kind", "apiVersion", "metadata", "items"], "{list}");
    assert_order(
        &keys_at(&list, &["metadata"]),
        &["resourceVersion", "continue", "remainingItemCount"],
        "ListMeta",
    );
    let item = keys_at(&list, &["items", "0"]);
    assert_eq!(&item[item.len() - 3..], ["metadata", "spec", "status"], "{list}");
    assert_order(&keys_at(&list, &["items", "0", "metadata"]), OBJECT_META, "listed Pod metadata");

    // A watch event: type, then the object in Go order.
    let events = kp.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dcm",
    ]);
    let first = events.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(
            r#"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm""#
        ),
        "{events}"
    );
}

#[test]
fn aggregated_discovery_is_in_go_order_with_upstreams_group_order() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut table_text = String::new();
    let (apis, api) = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kp.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let get = |path: &str| {
            http::Request::get(path)
                .header(
                    "Accept",
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                )
                .body(Vec::new())
                .unwrap()
        };
        // What `kubectl get` asks for: a Table, whose rows carry PartialObjectMetadata.
        let table = http::Request::get("/api/v1/namespaces/kube-system/services/kube-dns")
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
            .body(Vec::new())
            .unwrap();
        table_text = client.request_text(table).await.unwrap();
        (client.request_text(get("/apis")).await.unwrap(), client.request_text(get("/api")).await.unwrap())
    });
    assert!(
        table_text
            .starts_with(r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"#),
        "{table_text}"
    );
    assert!(
        table_text
            .contains(r#""columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"#),
        "{table_text}"
    );
    assert!(table_text.contains(r#""rows":[{"cells":["kube-dns","#), "{table_text}");
    assert!(
        table_text.contains(r#""object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"kube-dns","namespace":"kube-system","uid":"#),
        "{table_text}"
    );
    assert!(
        apis.starts_with(r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":"apiregistration.k8s.io","creationTimestamp":null},"versions":[{"version":"v1","resources":[{"resource":"apiservices","responseKind":{"group":"apiregistration.k8s.io","version":"v1","kind":"APIService"},"scope":"Cluster","singularResource":"apiservice","verbs":["#),
        "{apis}"
    );
    let doc: serde_json::Value = serde_json::from_str(&apis).unwrap();
    let names: Vec<&str> =
        doc["items"].as_array().unwrap().iter().filter_map(|g| g["metadata"]["name"].as_str()).collect();
    let head = [
        "apiregistration.k8s.io",
        "apps",
        "events.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
    ];
    assert_eq!(&names[..head.len()], head, "{names:?}");
    assert_eq!(names.last(), Some(&"metrics.k8s.io"), "{names:?}");
    assert_eq!(
        keys_at(&apis, &["items", "1", "versions", "0", "resources", "0"]).first().map(String::as_str),
        Some("resource")
    );
    assert!(api.contains(r#"{"resource":"pods","responseKind":{"group":"","version":"v1","kind":"Pod"},"scope":"Namespaced","singularResource":"pod","verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"shortNames":["po"],"categories":["all"],"subresources":["#), "{api}");
    assert!(api.contains(r#""freshness":"Current"}"#), "{api}");

    // The legacy form lists the groups in the same order.
    let legacy: serde_json::Value = serde_json::from_str(&kp.kubectl_ok(&["get", "--raw", "/apis"])).unwrap();
    let legacy_names: Vec<&str> =
        legacy["groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(legacy_names, names);
    let raw = kp.kubectl_ok(&["get", "--raw", "/apis"]);
    assert!(raw.starts_with(r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"apiregistration.k8s.io","versions":[{"groupVersion":"apiregistration.k8s.io/v1","version":"v1"}],"preferredVersion":{"#), "{raw}");

    // kubectl's own discovery still reads it.
    let resources = kp.kubectl_ok(&["api-resources", "--api-group=apps", "-o", "name"]);
    assert!(resources.lines().any(|l| l == "deployments.apps"), "{resources}");
}

#[test]
fn kubectl_1_27_and_1_33_get_apply_and_diff_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    let file = dir.path().join("cm.yaml");
    for (i, version) in ["1.27", "1.33"].into_iter().enumerate() {
        // Where this machine keeps them (as tests/openapi_v2.rs finds them); missing is a failure.
        let kubectl = store::etcd_process::find_program(
            &format!("kubectl.{version}"),
            &["/usr/lib/google-cloud-sdk/bin"],
        )
        .unwrap_or_else(|| panic!("kubectl.{version} is missing: the version-skew checks need it"))
        .to_string_lossy()
        .into_owned();
        let kubectl = kubectl.as_str();
        let name = format!("order-{i}");
        let manifest = |value: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: {value}\n")
        };
        std::fs::write(&file, manifest("one")).unwrap();
        let f = file.to_str().unwrap();
        let run = |args: &[&str]| kp.kubectl_program(kubectl, args);
        let out = run(&["apply", "-f", f]);
        assert!(out.status.success(), "{kubectl} apply: {}{}", stdout(&out), stderr(&out));
        let out = run(&["get", "configmap", &name, "-o", "jsonpath={.data.k}"]);
        assert_eq!(stdout(&out), "one", "{kubectl} get: {}", stderr(&out));
        // Unchanged: diff finds nothing (exit 0).
        let out = run(&["diff", "-f", f]);
        assert_eq!(out.status.code(), Some(0), "{kubectl} diff: {}{}", stdout(&out), stderr(&out));
        // Changed: diff shows it (exit 1), and nothing is written.
        std::fs::write(&file, manifest("two")).unwrap();
        let out = run(&["diff", "-f", f]);
        assert_eq!(out.status.code(), Some(1), "{kubectl} diff: {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("+  k: two"), "{}", stdout(&out));
        let out = run(&["get", "configmap", &name, "-o", "jsonpath={.data.k}"]);
        assert_eq!(stdout(&out), "one");
        let out = run(&["apply", "-f", f]);
        assert!(out.status.success(), "{kubectl} apply: {}{}", stdout(&out), stderr(&out));
        let out = run(&["get", "configmap", &name, "-o", "json"]);
        let text = stdout(&out);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["data"]["k"], "two", "{text}");
    }
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd], listKind: WidgetList}
  group: example.com
  versions:
  - subresources:
      status: {}
      scale: {statusReplicasPath: .status.replicas, specReplicasPath: .spec.replicas}
    storage: true
    served: true
    name: v1
    additionalPrinterColumns:
    - type: string
      name: Color
      jsonPath: .spec.color
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            x-kubernetes-validations:
            - rule: "self.replicas >= 0"
              message: no negative replicas
            required: [color]
            type: object
            description: the widget
            properties:
              replicas: {minimum: 0, type: integer, default: 1}
              color: {type: string, enum: [red, blue]}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

/// apiextensions.k8s.io CustomResourceDefinitions (outside the protobuf table) in the Go order of
/// their structs — JSON schemas included — in etcd, in GET and LIST responses.
#[test]
fn custom_resource_definitions_are_in_go_field_order() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", &dir.path().join("data"), free_port(), &[]);
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    kp.kubectl_ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s"]);

    let out = etcdctl(
        &kp.endpoint(),
        &[
            "get",
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
            "--print-value-only",
        ],
    );
    let stored = stdout(&out).trim().to_string();
    let got = kp.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
    ]);
    let list = kp.kubectl_ok(&["get", "--raw", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"]);
    assert_eq!(keys_at(&list, &[]), ["kind", "apiVersion", "metadata", "items"], "{list}");
    let listed = keys_at(&list, &["items", "0"]);
    assert_eq!(listed, ["kind", "apiVersion", "metadata", "spec", "status"], "{list}");
    // Upstream's struct order (apiextensions/v1 types.go, types_jsonschema.go).
    let schema_props: &[&str] = &[
        "id",
        "$schema",
        "$ref",
        "description",
        "type",
        "format",
        "title",
        "default",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
        "properties",
        "additionalProperties",
        "patternProperties",
        "dependencies",
        "additionalItems",
        "definitions",
        "externalDocs",
        "example",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
    ];
    for (what, text, base) in
        [("stored", &stored, vec![]), ("got", &got, vec![]), ("listed", &list, vec!["items", "0"])]
    {
        let at = |p: &[&str]| {
            let mut full = base.clone();
            full.extend_from_slice(p);
            keys_at(text, &full)
        };
        assert_eq!(at(&[]), ["kind", "apiVersion", "metadata", "spec", "status"], "{what}: {text}");
        assert_order(&at(&["metadata"]), OBJECT_META, what);
        assert_order(
            &at(&["spec"]),
            &["group", "names", "scope", "versions", "conversion", "preserveUnknownFields"],
            what,
        );
        assert_order(
            &at(&["spec", "names"]),
            &["plural", "singular", "shortNames", "kind", "listKind", "categories"],
            what,
        );
        let version = &[
            "name",
            "served",
            "storage",
            "deprecated",
            "deprecationWarning",
            "schema",
            "subresources",
            "additionalPrinterColumns",
            "selectableFields",
        ];
        assert_order(&at(&["spec", "versions", "0"]), version, what);
        assert_order(
            &at(&["spec", "versions", "0", "subresources", "scale"]),
            &["specReplicasPath", "statusReplicasPath", "labelSelectorPath"],
            what,
        );
        assert_order(
            &at(&["spec", "versions", "0", "additionalPrinterColumns", "0"]),
            &["name", "type", "format", "description", "priority", "jsonPath"],
            what,
        );
        let schema = ["spec", "versions", "0", "schema", "openAPIV3Schema"];
        assert_order(&at(&schema), schema_props, what);
        let spec_schema: Vec<&str> = schema.iter().copied().chain(["properties", "spec"]).collect();
        assert_order(&at(&spec_schema), schema_props, what);
        let mut replicas = spec_schema.clone();
        replicas.extend(["properties", "replicas"]);
        assert_order(&at(&replicas), schema_props, what);
        let mut rule = spec_schema.clone();
        rule.extend(["x-kubernetes-validations", "0"]);
        assert_order(
            &at(&rule),
            &["rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"],
            what,
        );
        assert_order(
            &at(&["status"]),
            &["conditions", "acceptedNames", "storedVersions", "observedGeneration"],
            what,
        );
        assert_order(
            &at(&["status", "conditions", "0"]),
            &["type", "status", "lastTransitionTime", "reason", "message", "observedGeneration"],
            what,
        );
        assert_order(
            &at(&["status", "acceptedNames"]),
            &["plural", "singular", "shortNames", "kind", "listKind", "categories"],
            what,
        );
    }
    // Clients still read it: kubectl's own decoding and its printer.
    let shown = kp.kubectl_ok(&[
        "get",
        "crd",
        "widgets.example.com",
        "-o",
        "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.required}",
    ]);
    assert_eq!(shown, r#"["color"]"#);
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {color: red}\n";
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], w);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(kp.kubectl_ok(&["get", "wd", "w", "-o", "jsonpath={.spec.replicas}"]), "1");
}
