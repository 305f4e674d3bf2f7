//! Three gaps of the API closed, each driven by the real clients against `kplane apiserver` and
//! checked in `/registry` with etcdctl:
//! - `kubectl auth can-i --list` (a SelfSubjectRulesReview) as a ServiceAccount token user and as
//!   the administrator, with kubectl 1.32 and 1.27: the rules of the user's ClusterRoleBindings and
//!   of the namespace's RoleBindings, in the table upstream prints;
//! - LimitRange validation (upstream's `ValidateLimitRange`) through `kubectl apply` (1.32, 1.28):
//!   422 with upstream's causes, nothing stored; a valid one stored with its Container defaults;
//! - CertificateSigningRequests take `spec.uid` and `spec.extra` from the authenticated requester
//!   (a ServiceAccount token's uid and credential id, a static token's uid), whatever the body
//!   says; read back with etcdctl and the Python client.

mod common;

use std::process::Command;

use common::{free_port, stderr, stdout, Kplane};

fn start(dir: &std::path::Path) -> Kplane {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001,\"dev\"\n").unwrap();
    Kplane::start_cmd(
        "apiserver",
        &dir.join("data"),
        free_port(),
        &["--token-auth-file", tokens.to_str().unwrap()],
    )
}

/// The rows kubectl prints for everyone's rules: upstream's system:basic-user,
/// system:discovery and system:public-info-viewer, as `kubectl auth can-i --list` orders them.
const SELF_REVIEWS: &[&str] = &[
    "selfsubjectreviews.authentication.k8s.io        []                  []               [create]",
    "selfsubjectaccessreviews.authorization.k8s.io   []                  []               [create]",
    "selfsubjectrulesreviews.authorization.k8s.io    []                  []               [create]",
];
const DISCOVERY: &[&str] = &[
    "                                                [/api/*]            []               [get]",
    "                                                [/api]              []               [get]",
    "                                                [/apis/*]           []               [get]",
    "                                                [/apis]             []               [get]",
    "                                                [/healthz]          []               [get]",
    "                                                [/healthz]          []               [get]",
    "                                                [/livez]            []               [get]",
    "                                                [/livez]            []               [get]",
    "                                                [/openapi/*]        []               [get]",
    "                                                [/openapi]          []               [get]",
    "                                                [/readyz]           []               [get]",
    "                                                [/readyz]           []               [get]",
    "                                                [/version/]         []               [get]",
    "                                                [/version/]         []               [get]",
    "                                                [/version]          []               [get]",
    "                                                [/version]          []               [get]",
];
const HEADER: &str =
    "Resources                                       Non-Resource URLs   Resource Names   Verbs";

/// `kubectl.<version>`, on PATH or where this machine keeps them; missing is a failure.
fn versioned_kubectl(version: &str) -> String {
    let name = format!("kubectl.{version}");
    store::etcd_process::find_program(&name, &["/usr/lib/google-cloud-sdk/bin"])
        .unwrap_or_else(|| panic!("{name} is missing: the version-skew checks need it"))
        .to_string_lossy()
        .into_owned()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(|l| l.trim_end().to_string()).collect()
}

#[test]
fn can_i_list_as_a_service_account_and_as_the_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    for ns in ["team", "other"] {
        kp.kubectl_ok(&["create", "namespace", ns]);
    }
    kp.kubectl_ok(&["create", "serviceaccount", "bot", "-n", "team"]);
    kp.kubectl_ok(&[
        "create",
        "role",
        "reader",
        "-n",
        "team",
        "--verb=get,list,watch",
        "--resource=pods,configmaps",
    ]);
    kp.kubectl_ok(&[
        "create",
        "role",
        "one-secret",
        "-n",
        "team",
        "--verb=get",
        "--resource=secrets",
        "--resource-name=s1",
    ]);
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "bot-reads",
        "-n",
        "team",
        "--role=reader",
        "--serviceaccount=team:bot",
    ]);
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "bot-secret",
        "-n",
        "team",
        "--role=one-secret",
        "--serviceaccount=team:bot",
    ]);
    // Another namespace's binding does not show in `team`; a ClusterRoleBinding to the
    // ServiceAccounts' group shows everywhere; a binding to someone else nowhere.
    kp.kubectl_ok(&[
        "create",
        "role",
        "deployer",
        "-n",
        "other",
        "--verb=create",
        "--resource=deployments.apps",
    ]);
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "bot-deploys",
        "-n",
        "other",
        "--role=deployer",
        "--serviceaccount=team:bot",
    ]);
    kp.kubectl_ok(&["create", "clusterrole", "node-reader", "--verb=get,list", "--resource=nodes"]);
    kp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "sas-read-nodes",
        "--clusterrole=node-reader",
        "--group=system:serviceaccounts:team",
    ]);
    kp.kubectl_ok(&[
        "create",
        "clusterrole",
        "lease-admin",
        "--verb=*",
        "--resource=leases.coordination.k8s.io",
    ]);
    kp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "alice-leases",
        "--clusterrole=lease-admin",
        "--user=alice",
    ]);
    let token = kp.kubectl_ok(&["create", "token", "bot", "-n", "team"]);
    let token = token.trim();

    let mut want_team = vec![HEADER.to_string()];
    want_team.extend(SELF_REVIEWS.iter().map(|s| s.to_string()));
    // kubectl sorts the rules by their Go text, verbs first: `[get list watch]` before `[get list]`.
    want_team.extend([
        "configmaps                                      []                  []               [get list watch]"
            .to_string(),
        "pods                                            []                  []               [get list watch]"
            .to_string(),
        "nodes                                           []                  []               [get list]"
            .to_string(),
    ]);
    want_team.extend(DISCOVERY.iter().map(|s| s.to_string()));
    want_team.push(
        "secrets                                         []                  [s1]             [get]"
            .to_string(),
    );
    let team = kp.kubectl_as(&["--token", token], &["auth", "can-i", "--list", "-n", "team"]);
    assert!(team.status.success(), "{}", stderr(&team));
    assert_eq!(lines(&stdout(&team)), want_team, "{}", stdout(&team));

    let other = kp.kubectl_as(&["--token", token], &["auth", "can-i", "--list", "-n", "other"]);
    let other = stdout(&other);
    let first: Vec<&str> = other.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(first.contains(&"deployments.apps") && first.contains(&"nodes"), "{other}");
    assert!(
        !first.contains(&"pods")
            && !first.contains(&"secrets")
            && !first.contains(&"leases.coordination.k8s.io"),
        "{other}"
    );

    // The same review through kubectl 1.27 (its own table code).
    let empty = dir.path().join("empty.kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    let old = Command::new(versioned_kubectl("1.27"))
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(&empty)
        .args(["--cache-dir", dir.path().join("cache127").to_str().unwrap()])
        .args(["--server", &kp.api, "--insecure-skip-tls-verify", "--token", token])
        .args(["auth", "can-i", "--list", "-n", "team"])
        .output()
        .expect("kubectl.1.27 runs");
    assert!(old.status.success(), "{}", stderr(&old));
    let old = stdout(&old);
    for row in ["pods", "configmaps", "nodes", "secrets"] {
        assert!(old.lines().any(|l| l.starts_with(row)), "{row}: {old}");
    }

    // The administrator (system:masters): everything, then what everyone may.
    let mut want_admin = vec![
        HEADER.to_string(),
        "*.*                                             []                  []               [*]".to_string(),
        "                                                [*]                 []               [*]".to_string(),
    ];
    want_admin.extend(SELF_REVIEWS.iter().map(|s| s.to_string()));
    want_admin.extend(DISCOVERY.iter().map(|s| s.to_string()));
    assert_eq!(lines(&kp.kubectl_ok(&["auth", "can-i", "--list", "-n", "team"])), want_admin);

    // A static-token user's ClusterRoleBinding, in any namespace, with the review's own JSON.
    let alice = kp.kubectl_as(&["--token", "alice-token"], &["auth", "can-i", "--list", "-n", "other"]);
    let leases = stdout(&alice);
    assert!(
        leases.lines().any(|l| l.starts_with("leases.coordination.k8s.io") && l.trim_end().ends_with("[*]")),
        "{leases}"
    );
    let script = r#"
import json, sys
from kubernetes import client
cfg = client.Configuration()
cfg.host = sys.argv[1]
cfg.verify_ssl = False
cfg.api_key = {"authorization": "Bearer " + sys.argv[2]}
api = client.AuthorizationV1Api(client.ApiClient(cfg))
r = api.create_self_subject_rules_review(client.V1SelfSubjectRulesReview(
    spec=client.V1SelfSubjectRulesReviewSpec(namespace="team")))
print(json.dumps({"incomplete": r.status.incomplete,
                  "rules": [[x.verbs, x.api_groups, x.resources, x.resource_names] for x in r.status.resource_rules],
                  "urls": [[x.verbs, x.non_resource_urls] for x in r.status.non_resource_rules]}))
"#;
    let out = Command::new("python3")
        .args(["-W", "ignore", "-c", script, &kp.api, token])
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(r["incomplete"], false, "{r}");
    let rules = r["rules"].as_array().unwrap();
    assert!(
        rules.contains(&serde_json::json!([["get", "list", "watch"], [""], ["pods", "configmaps"], null])),
        "{r}"
    );
    assert!(rules.contains(&serde_json::json!([["get"], [""], ["secrets"], ["s1"]])), "{r}");
    assert!(
        rules.contains(&serde_json::json!([
            ["create"],
            ["authentication.k8s.io"],
            ["selfsubjectreviews"],
            null
        ])),
        "{r}"
    );
    assert!(
        r["urls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u[1] == serde_json::json!(["/healthz", "/livez", "/readyz", "/version", "/version/"])),
        "{r}"
    );
}

fn apply(kp: &Kplane, program: &str, yaml: &str) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.arg("--kubeconfig").arg(&kp.kubeconfig).args(["apply", "-f", "-"]);
    common::with_stdin(cmd, yaml.as_bytes())
}

#[test]
fn limit_ranges_are_validated_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    let ep = kp.endpoint();
    let lr = |name: &str, items: &str| {
        format!("apiVersion: v1\nkind: LimitRange\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  limits:\n{items}")
    };
    let cases = [
        (
            "min-over-max",
            "  - type: PersistentVolumeClaim\n    min: {storage: 10Gi}\n    max: {storage: 1Gi}\n",
            vec!["spec.limits[0].min[storage]: Invalid value: resource.Quantity{i:resource.int64Amount{value:10737418240, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"10Gi\", Format:\"BinarySI\"}: min value 10Gi is greater than max value 1Gi"],
        ),
        (
            "pod-defaults",
            "  - type: Pod\n    max: {cpu: \"2\"}\n    default: {cpu: \"1\"}\n",
            vec!["spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'"],
        ),
        (
            "claim-without-storage",
            "  - type: PersistentVolumeClaim\n    max: {cpu: \"1\"}\n",
            vec!["spec.limits[0].limits: Required value: either minimum or maximum storage value is required, but neither was provided"],
        ),
        (
            "ratio",
            "  - type: Container\n    min: {cpu: 500m}\n    max: {cpu: \"1\"}\n    maxLimitRequestRatio: {cpu: 500m, memory: \"3\"}\n",
            vec!["spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: resource.Quantity{i:resource.int64Amount{value:500, scale:-3}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"500m\", Format:\"DecimalSI\"}: ratio 500m is less than 1"],
        ),
        (
            "request-over-limit",
            "  - type: Container\n    default: {memory: 256Mi}\n    defaultRequest: {memory: 512Mi}\n",
            vec!["spec.limits[0].defaultRequest[memory]: Invalid value: resource.Quantity{i:resource.int64Amount{value:536870912, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"\", Format:\"BinarySI\"}: default request value 512Mi is greater than default limit value 256Mi"],
        ),
        (
            "types",
            "  - type: Container\n    max: {gpu: \"1\"}\n  - type: Container\n  - type: Node\n",
            vec![
                "spec.limits[0].max[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
                "spec.limits[1].type: Duplicate value: \"Container\"",
                "spec.limits[2].type: Invalid value: \"Node\": must be a standard limit type or fully qualified",
            ],
        ),
    ];
    for (program, suffix) in [("kubectl".to_string(), ""), (versioned_kubectl("1.28"), "-old")] {
        for (name, items, messages) in &cases {
            let name = format!("{name}{suffix}");
            let out = apply(&kp, &program, &lr(&name, items));
            assert!(!out.status.success(), "{program} applied {name}");
            let err = stderr(&out);
            assert!(err.contains(&format!("The LimitRange \"{name}\" is invalid")), "{program}: {err}");
            for m in messages {
                assert!(err.contains(m), "{program} {name}: want {m}\ngot {err}");
            }
            assert!(
                kp.etcd_get(&ep, &format!("/registry/limitranges/default/{name}")).is_none(),
                "{name} stored"
            );
        }
    }
    // The Status itself, through the Python client: 422 Invalid with one cause per violation.
    let script = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
body = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "py"},
        "spec": {"limits": [{"type": "Pod", "default": {"cpu": "1"}, "defaultRequest": {"cpu": "1"}}]}}
try:
    client.CoreV1Api().create_namespaced_limit_range("default", body)
    print(json.dumps("created"))
except ApiException as e:
    print(json.dumps({"status": e.status, "body": json.loads(e.body)}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, kp.kubeconfig.to_str().unwrap()])
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(r["status"], 422, "{r}");
    assert_eq!(r["body"]["reason"], "Invalid", "{r}");
    assert_eq!(
        r["body"]["details"]["causes"],
        serde_json::json!([
            {"reason": "FieldValueForbidden", "message": "Forbidden: may not be specified when `type` is 'Pod'", "field": "spec.limits[0].default"},
            {"reason": "FieldValueForbidden", "message": "Forbidden: may not be specified when `type` is 'Pod'", "field": "spec.limits[0].defaultRequest"}
        ]),
        "{r}"
    );
    assert!(kp.etcd_get(&ep, "/registry/limitranges/default/py").is_none());

    // A valid one is stored with upstream's Container defaults.
    let good = "  - type: Container\n    max: {cpu: \"2\", memory: 1Gi}\n    min: {cpu: 100m}\n    maxLimitRequestRatio: {cpu: \"4\"}\n  - type: PersistentVolumeClaim\n    max: {storage: 10Gi}\n";
    let out = apply(&kp, "kubectl", &lr("good", good));
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = kp.etcd_get(&ep, "/registry/limitranges/default/good").unwrap();
    let item = &stored["spec"]["limits"][0];
    assert_eq!(item["default"], serde_json::json!({"cpu": "2", "memory": "1Gi"}), "{stored}");
    assert_eq!(item["defaultRequest"], serde_json::json!({"cpu": "2", "memory": "1Gi"}), "{stored}");
    assert!(stored["spec"]["limits"][1].get("default").is_none(), "{stored}");
}

#[test]
fn csrs_take_uid_and_extra_from_the_requester() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    let ep = kp.endpoint();
    kp.kubectl_ok(&["create", "serviceaccount", "bot"]);
    kp.kubectl_ok(&[
        "create",
        "clusterrole",
        "csr-maker",
        "--verb=create,get",
        "--resource=certificatesigningrequests.certificates.k8s.io",
    ]);
    kp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "bot-csrs",
        "--clusterrole=csr-maker",
        "--serviceaccount=default:bot",
        "--user=alice",
    ]);
    let sa_uid = kp.kubectl_ok(&["get", "sa", "bot", "-o", "jsonpath={.metadata.uid}"]);
    let token = kp.kubectl_ok(&["create", "token", "bot"]);
    let token = token.trim();

    let key = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
        .arg(dir.path().join("k.pem"))
        .args(["-subj", "/CN=bot"])
        .output()
        .expect("openssl (this test must not be skipped)");
    assert!(key.status.success(), "{}", stderr(&key));
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(stdout(&key));
    let csr = |name: &str| {
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n  username: mallory\n  uid: spoofed-uid\n  groups: [evil]\n  extra: {{spoofed: [\"x\"]}}\n"
        )
    };
    let file = dir.path().join("csr.yaml");
    for (name, who) in [("from-bot", token), ("from-alice", "alice-token")] {
        std::fs::write(&file, csr(name)).unwrap();
        let out = kp.kubectl_as(&["--token", who], &["create", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let bot = kp.etcd_get(&ep, "/registry/certificatesigningrequests/from-bot").unwrap();
    let spec = &bot["spec"];
    assert_eq!(spec["username"], "system:serviceaccount:default:bot", "{bot}");
    assert_eq!(spec["uid"], sa_uid.trim(), "{bot}");
    let extra = spec["extra"].as_object().unwrap_or_else(|| panic!("{bot}"));
    assert!(extra.get("spoofed").is_none(), "{bot}");
    let id = extra["authentication.kubernetes.io/credential-id"][0].as_str().unwrap();
    assert!(id.starts_with("JTI=") && id.len() > 10, "{bot}");
    assert!(!spec["groups"].as_array().unwrap().contains(&serde_json::json!("evil")), "{bot}");
    // The same credential id as `kubectl auth whoami` reports for the token.
    let who = kp.kubectl_as(&["--token", token], &["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value =
        serde_json::from_str(&stdout(&who)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&who)));
    assert_eq!(who["status"]["userInfo"]["uid"], sa_uid.trim(), "{who}");
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/credential-id"][0], id,
        "{who}"
    );

    let alice = kp.etcd_get(&ep, "/registry/certificatesigningrequests/from-alice").unwrap();
    assert_eq!(alice["spec"]["username"], "alice", "{alice}");
    assert_eq!(alice["spec"]["uid"], "1001", "the token file's uid column: {alice}");
    assert!(alice["spec"].get("extra").is_none(), "{alice}");

    // The Python client reads the same fields back.
    let script = r#"
import json, sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.CertificatesV1Api()
out = {}
for name in ["from-bot", "from-alice"]:
    s = api.read_certificate_signing_request(name).spec
    out[name] = {"username": s.username, "uid": s.uid, "extra": s.extra}
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script, kp.kubeconfig.to_str().unwrap()])
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(r["from-bot"]["uid"], sa_uid.trim(), "{r}");
    assert_eq!(r["from-bot"]["extra"]["authentication.kubernetes.io/credential-id"][0], id, "{r}");
    assert_eq!(r["from-alice"]["uid"], "1001", "{r}");
    assert_eq!(r["from-alice"]["extra"], serde_json::Value::Null, "{r}");
}

/// The class kinds' validation and the one-default rule of PriorityClasses, through `kubectl apply`
/// (422s and the 403 in upstream's words, nothing stored, checked with etcdctl).
#[test]
fn class_kinds_are_validated_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    let ep = kp.endpoint();
    let refused = |yaml: &str, want: &[&str]| {
        let out = apply(&kp, "kubectl", yaml);
        assert!(!out.status.success(), "applied: {yaml}");
        let err = stderr(&out);
        for w in want {
            assert!(err.contains(w), "want {w}\ngot {err}");
        }
    };
    let pc = |name: &str, value: i64, default: bool| {
        format!("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {name}}}\nvalue: {value}\nglobalDefault: {default}\n")
    };
    refused(
        &pc("huge", 1_000_000_001, false),
        &["The PriorityClass \"huge\" is invalid: value: Forbidden: maximum allowed value of a user defined priority is 1000000000"],
    );
    refused(
        &pc("system-mine", 10, false),
        &["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"],
    );
    let ok = apply(&kp, "kubectl", &pc("first", 100, true));
    assert!(ok.status.success(), "{}", stderr(&ok));
    refused(
        &pc("second", 200, true),
        &["priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass first is already marked as default. Only one default can exist"],
    );
    // Not a default: fine; then made one by an update: the same 403. The value may not change.
    let ok = apply(&kp, "kubectl", &pc("second", 200, false));
    assert!(ok.status.success(), "{}", stderr(&ok));
    refused(&pc("second", 200, true), &["PriorityClass first is already marked as default"]);
    refused(&pc("second", 300, false), &["value: Forbidden: may not be changed in an update."]);

    refused(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: rc}\nhandler: Run_C\n",
        &["The RuntimeClass \"rc\" is invalid: handler: Invalid value: \"Run_C\": a lowercase RFC 1123 label must consist of"],
    );
    refused(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ic}\nspec: {controller: nginx}\n",
        &["The IngressClass \"ic\" is invalid: spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"],
    );
    refused(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: sc}\nprovisioner: my provisioner\nreclaimPolicy: Recycle\n",
        &[
            "provisioner: Invalid value: \"my provisioner\": name part must consist of alphanumeric characters",
            "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
        ],
    );
    let sc = |p: &str| {
        format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: good}}\nprovisioner: {p}\n"
        )
    };
    let ok = apply(&kp, "kubectl", &sc("example.com/disk"));
    assert!(ok.status.success(), "{}", stderr(&ok));
    refused(&sc("example.com/other"), &["provisioner: Forbidden: updates to provisioner are forbidden."]);
    for key in [
        "/registry/priorityclasses/huge",
        "/registry/priorityclasses/system-mine",
        "/registry/runtimeclasses/rc",
        "/registry/ingressclasses/ic",
        "/registry/storageclasses/sc",
    ] {
        assert!(kp.etcd_get(&ep, key).is_none(), "{key} stored");
    }
    assert_eq!(kp.etcd_get(&ep, "/registry/priorityclasses/second").unwrap()["value"], 200);
    assert_eq!(kp.etcd_get(&ep, "/registry/priorityclasses/second").unwrap()["globalDefault"], false);
    assert_eq!(kp.etcd_get(&ep, "/registry/storageclasses/good").unwrap()["provisioner"], "example.com/disk");
}

/// Server-side apply on a `scale` subresource through the Python client (an
/// `application/apply-patch+yaml` PATCH of a Scale, as client-go's ApplyScale and kube-rs send
/// it): a 409 naming the parent's owner of `spec.replicas`, taken with `force=true`, then owned by
/// an `Apply` entry with `subresource: scale` (read with etcdctl); the same manager re-applies
/// without force; a dry run writes nothing.
#[test]
fn server_side_apply_on_scale_subresources() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    let ep = kp.endpoint();
    let dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: nginx}]}\n";
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(&kp.kubeconfig).args(["apply", "--server-side", "-f", "-"]);
    let out = common::with_stdin(cmd, dep.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let script = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
api = client.AppsV1Api()
def scale(n, **kw):
    body = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": n}}
    try:
        r = api.patch_namespaced_deployment_scale("web", "default", body, field_manager="scaler",
                                                  _content_type="application/apply-patch+yaml", **kw)
        return {"kind": r.kind, "replicas": r.spec.replicas}
    except ApiException as e:
        return {"status": e.status, "body": json.loads(e.body)}
out = {"plain": scale(3), "forced": scale(3, force=True), "again": scale(4), "dry": scale(7, dry_run="All")}
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script, kp.kubeconfig.to_str().unwrap()])
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(r["plain"]["status"], 409, "{r}");
    assert_eq!(
        r["plain"]["body"]["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas",
        "{r}"
    );
    assert_eq!(r["plain"]["body"]["details"]["causes"][0]["field"], ".spec.replicas", "{r}");
    assert_eq!(r["forced"], serde_json::json!({"kind": "Scale", "replicas": 3}), "{r}");
    assert_eq!(r["again"], serde_json::json!({"kind": "Scale", "replicas": 4}), "{r}");
    assert_eq!(r["dry"], serde_json::json!({"kind": "Scale", "replicas": 7}), "{r}");

    let stored = kp.etcd_get(&ep, "/registry/deployments/default/web").unwrap();
    assert_eq!(stored["spec"]["replicas"], 4, "the dry run wrote nothing: {stored}");
    let entries = stored["metadata"]["managedFields"].as_array().unwrap();
    let scaler = entries.iter().find(|e| e["manager"] == "scaler").unwrap_or_else(|| panic!("{stored}"));
    assert_eq!(scaler["operation"], "Apply");
    assert_eq!(scaler["subresource"], "scale");
    assert_eq!(scaler["apiVersion"], "apps/v1");
    assert_eq!(scaler["fieldsV1"], serde_json::json!({"f:spec": {"f:replicas": {}}}));
    let kubectl = entries.iter().find(|e| e["manager"] == "kubectl").unwrap();
    assert!(kubectl["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "taken by force: {stored}");
    assert!(kubectl["fieldsV1"]["f:spec"].get("f:template").is_some(), "{stored}");
}
