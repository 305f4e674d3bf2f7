//! The review kinds (`authorization.k8s.io` access and rules reviews, `authentication.k8s.io` token
//! and self reviews) with the real kubectl and the Python client against `kplane apiserver`:
//! `kubectl auth can-i` (also `--as` and `--list`) and `kubectl auth whoami` answer from kplane's
//! RBAC and authenticator, SubjectAccessReviews and LocalSubjectAccessReviews through `kubectl
//! create -f`, TokenReviews through the Python client, bad input answered with upstream's Status,
//! and nothing ever written to the store.

mod common;

use std::process::Command;

use common::{etcdctl, free_port, stderr, stdout, Kplane};

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

/// Every key under `/registry/`, read with etcdctl.
fn keys(kp: &Kplane) -> Vec<String> {
    let out = etcdctl(&kp.endpoint(), &["get", "/registry/", "--prefix", "--keys-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn can_i_whoami_and_access_reviews_answer_from_rbac() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    let alice = ["--token", "alice-token"];

    // The administrator (system:masters) may; a ServiceAccount nobody bound may not: kubectl prints
    // yes/no and exits 0/1.
    let yes = kp.kubectl(&["auth", "can-i", "create", "pods"]);
    assert!(yes.status.success(), "{}", stderr(&yes));
    assert_eq!(stdout(&yes).trim(), "yes");
    let no = kp.kubectl(&["auth", "can-i", "get", "pods", "--as=system:serviceaccount:default:default"]);
    assert_eq!(no.status.code(), Some(1), "{}{}", stdout(&no), stderr(&no));
    assert_eq!(stdout(&no).trim(), "no");
    let path = kp.kubectl(&["auth", "can-i", "get", "/version", "--as=system:serviceaccount:default:default"]);
    assert_eq!(stdout(&path).trim(), "yes", "system:discovery covers /version for everyone authenticated");

    // `--list` is a SelfSubjectRulesReview: the administrator's cluster-admin rules.
    let list = kp.kubectl_ok(&["auth", "can-i", "--list"]);
    assert!(list.lines().any(|l| l.starts_with("*.*") && l.ends_with("[*]")), "{list}");
    assert!(list.lines().any(|l| l.trim_start().starts_with("[*]")), "non-resource rules: {list}");

    // alice gets a Role in `team`; her own view of it follows.
    kp.kubectl_ok(&["create", "namespace", "team"]);
    kp.kubectl_ok(&["create", "role", "pod-reader", "-n", "team", "--verb=get,list", "--resource=pods"]);
    kp.kubectl_ok(&["create", "rolebinding", "alice-reads", "-n", "team", "--role=pod-reader", "--user=alice"]);
    let can = kp.kubectl_as(&alice, &["auth", "can-i", "list", "pods", "-n", "team"]);
    assert_eq!(stdout(&can).trim(), "yes", "{}", stderr(&can));
    let cannot = kp.kubectl_as(&alice, &["auth", "can-i", "delete", "pods", "-n", "team"]);
    assert_eq!((stdout(&cannot).trim(), cannot.status.code()), ("no", Some(1)), "{}", stderr(&cannot));
    let elsewhere = kp.kubectl_as(&alice, &["auth", "can-i", "list", "pods", "-n", "default"]);
    assert_eq!(stdout(&elsewhere).trim(), "no");
    let hers = kp.kubectl_as(&alice, &["auth", "can-i", "--list", "-n", "team"]);
    let hers = stdout(&hers);
    let pods =
        hers.lines().find(|l| l.split_whitespace().next() == Some("pods")).unwrap_or_else(|| panic!("{hers}"));
    assert!(pods.ends_with("[get list]"), "{pods}");
    assert!(hers.contains("selfsubjectaccessreviews.authorization.k8s.io"), "basic-user: {hers}");
    let outside = stdout(&kp.kubectl_as(&alice, &["auth", "can-i", "--list", "-n", "default"]));
    assert!(!outside.lines().any(|l| l.split_whitespace().next() == Some("pods")), "{outside}");

    let who = kp.kubectl_as(&alice, &["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value =
        serde_json::from_str(&stdout(&who)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&who)));
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert_eq!(who["status"]["userInfo"]["groups"], serde_json::json!(["dev", "system:authenticated"]));

    // SubjectAccessReview: the administrator asks about alice.
    let sar = |verb: &str, ns: &str| {
        format!(
            "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: alice\n  resourceAttributes:\n    verb: {verb}\n    resource: pods\n    namespace: {ns}\n"
        )
    };
    let review = |input: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["create", "-f", "-", "-o", "json"];
        args.extend(extra);
        let out = kp.kubectl_stdin(&args, input);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let allowed = review(&sar("list", "team"), &[]);
    assert_eq!(allowed["status"]["allowed"], true, "{allowed}");
    let reason = allowed["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("RoleBinding \"alice-reads\"") && reason.contains("Role \"pod-reader\""),
        "{reason}"
    );
    assert_eq!(allowed["spec"]["user"], "alice", "the spec comes back");
    let denied = review(&sar("delete", "team"), &[]);
    assert_eq!(denied["status"]["allowed"], false, "{denied}");
    // Groups count as given, with no implied system:authenticated.
    let group = "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  groups: [system:authenticated]\n  nonResourceAttributes: {path: /version, verb: get}\n";
    assert_eq!(review(group, &[])["status"]["allowed"], true);
    let nobody = "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: nobody\n  nonResourceAttributes: {path: /version, verb: get}\n";
    assert_eq!(review(nobody, &[])["status"]["allowed"], false);

    // LocalSubjectAccessReview: the same, in the path's namespace.
    let local = sar("get", "team").replace("kind: SubjectAccessReview", "kind: LocalSubjectAccessReview");
    let lsar = review(&local, &["-n", "team"]);
    assert_eq!(
        (lsar["kind"].as_str(), lsar["status"]["allowed"].as_bool()),
        (Some("LocalSubjectAccessReview"), Some(true))
    );

    // Bad input: upstream's 422s (kubectl prints the Status message) and 403s.
    let mismatched = kp.kubectl_stdin(&["create", "-f", "-", "-n", "default"], &local);
    assert!(
        stderr(&mismatched).contains(
            "spec.resourceAttributes.namespace: Invalid value: \"team\": must match metadata.namespace"
        ),
        "{}",
        stderr(&mismatched)
    );
    let no_subject = "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  resourceAttributes: {verb: get, resource: pods}\n";
    let refused = kp.kubectl_stdin(&["create", "-f", "-"], no_subject);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused)
            .contains("spec.user: Invalid value: \"\": at least one of user or group must be specified"),
        "{}",
        stderr(&refused)
    );
    let empty = "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec: {}\n";
    let refused = kp.kubectl_stdin(&["create", "-f", "-"], empty);
    assert!(
        stderr(&refused)
            .contains("exactly one of nonResourceAttributes or resourceAttributes must be specified"),
        "{}",
        stderr(&refused)
    );
    let mut cmd = Command::new("kubectl");
    let empty_config = kp.data_dir.join("empty.kubeconfig");
    cmd.env_remove("KUBECONFIG").arg("--kubeconfig").arg(&empty_config).args([
        "--server",
        &kp.api,
        "--insecure-skip-tls-verify",
        "--token",
        "alice-token",
        "create",
        // kubectl's client-side validation would list CRDs, which alice may not.
        "--validate=false",
        "-f",
        "-",
    ]);
    let as_alice = pipe(cmd, &sar("get", "team"));
    assert!(
        stderr(&as_alice).contains("subjectaccessreviews.authorization.k8s.io is forbidden: User \"alice\" cannot create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope"),
        "{}",
        stderr(&as_alice)
    );
    let get = kp.kubectl(&["get", "--raw", "/apis/authorization.k8s.io/v1/subjectaccessreviews"]);
    assert!(stderr(&get).contains("MethodNotAllowed") || stderr(&get).contains("405"), "{}", stderr(&get));

    // Discovery lists every review, create only; a local review is namespaced.
    let resources = kp.kubectl_ok(&["api-resources", "--api-group=authorization.k8s.io", "-o", "wide"]);
    for (name, namespaced) in [
        ("localsubjectaccessreviews", "true"),
        ("selfsubjectaccessreviews", "false"),
        ("selfsubjectrulesreviews", "false"),
        ("subjectaccessreviews", "false"),
    ] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{resources}"));
        assert!(
            line.split_whitespace().any(|w| w == namespaced)
                && line.split_whitespace().last() == Some("create"),
            "{line}"
        );
    }
    let auth = kp.kubectl_ok(&["api-resources", "--api-group=authentication.k8s.io", "-o", "name"]);
    assert!(
        auth.contains("tokenreviews.authentication.k8s.io") && auth.contains("selfsubjectreviews"),
        "{auth}"
    );
    let explain = kp.kubectl_ok(&["explain", "tokenreviews.spec"]);
    assert!(explain.contains("audiences"), "{explain}");

    // Nothing was stored by any of it.
    let stored = keys(&kp);
    assert!(!stored.iter().any(|k| k.to_lowercase().contains("review")), "{stored:?}");
}

fn pipe(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn token_reviews_through_the_python_client() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    kp.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let sa_token = kp.kubectl_ok(&["create", "token", "robot"]);
    let script = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
api = client.AuthenticationV1Api()
def review(token, audiences=None):
    body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=audiences))
    r = api.create_token_review(body)
    u = r.status.user
    return {"authenticated": r.status.authenticated, "error": r.status.error,
            "user": u.username if u else None, "uid": u.uid if u else None,
            "groups": u.groups if u else None, "audiences": r.status.audiences}
out = {"static": review("alice-token"), "bogus": review("not-a-token"),
       "sa": review(sys.argv[2]), "elsewhere": review(sys.argv[2], ["https://elsewhere.example"])}
try:
    api.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token="")))
    out["empty"] = "accepted"
except ApiException as e:
    out["empty"] = {"status": e.status, "body": json.loads(e.body)}
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&kp.kubeconfig)
        .arg(sa_token.trim())
        .output()
        .expect("python3 with the kubernetes client (this test must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(r["static"]["authenticated"], true, "{r}");
    assert_eq!(r["static"]["user"], "alice");
    assert_eq!(r["static"]["groups"], serde_json::json!(["dev", "system:authenticated"]));
    assert_eq!(r["bogus"]["authenticated"], serde_json::Value::Null, "{r}");
    assert_eq!(r["bogus"]["user"], serde_json::Value::Null);
    assert_eq!(r["sa"]["authenticated"], true, "{r}");
    assert_eq!(r["sa"]["user"], "system:serviceaccount:default:robot");
    let uid = kp.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(r["sa"]["uid"], uid.trim());
    assert!(r["sa"]["groups"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("system:serviceaccounts:default")));
    assert!(!r["sa"]["audiences"].as_array().unwrap().is_empty(), "{r}");
    assert_ne!(r["elsewhere"]["authenticated"], true, "{r}");
    assert!(r["elsewhere"]["error"].as_str().unwrap().contains("invalid bearer token"), "{r}");
    assert_eq!(r["empty"]["status"], 400, "{r}");
    assert_eq!(r["empty"]["body"]["reason"], "BadRequest");
    assert_eq!(r["empty"]["body"]["message"], "token is required for TokenReview in authentication");
    let stored = keys(&kp);
    assert!(!stored.iter().any(|k| k.to_lowercase().contains("review")), "{stored:?}");
}

/// core/v1 `bindings`, the older form of `pods/binding` (create only, never stored itself): `kubectl
/// create -f` of a Binding assigns the pod, which etcdctl then shows with `spec.nodeName` and
/// PodScheduled; a second Binding is upstream's 409, one without a name a 422, one for a missing
/// pod a 404, and a dry run writes nothing.
#[test]
fn a_binding_created_with_kubectl_assigns_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: nginx}]\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], pod);
    assert!(out.status.success(), "{}", stderr(&out));
    let resources = kp.kubectl(&["api-resources", "--api-group=", "-o", "wide"]);
    let line = stdout(&resources).lines().find(|l| l.starts_with("bindings ")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("{}", stdout(&resources)));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[..5], ["bindings", "v1", "true", "Binding", "create"], "{line}");

    let binding = |pod: &str, node: &str| {
        format!("apiVersion: v1\nkind: Binding\nmetadata: {{name: {pod}}}\ntarget: {{apiVersion: v1, kind: Node, name: {node}}}\n")
    };
    let dry = kp.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &binding("web", "node-a"));
    assert!(dry.status.success(), "{}", stderr(&dry));
    let stored_pod = || {
        let out = etcdctl(&kp.endpoint(), &["get", "/registry/pods/default/web", "--print-value-only"]);
        serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap()
    };
    assert!(stored_pod().pointer("/spec/nodeName").is_none(), "a dry run wrote");

    let out = kp.kubectl_stdin(&["create", "-f", "-"], &binding("web", "node-a"));
    assert!(out.status.success(), "{}", stderr(&out));
    let p = stored_pod();
    assert_eq!(p.pointer("/spec/nodeName").and_then(|v| v.as_str()), Some("node-a"));
    let conds = p.pointer("/status/conditions").and_then(|c| c.as_array()).cloned().unwrap_or_default();
    assert!(conds.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "True"), "{conds:?}");

    let again = kp.kubectl_stdin(&["create", "-f", "-"], &binding("web", "node-b"));
    assert!(!again.status.success());
    assert!(stderr(&again).contains("pod web is already assigned to node \"node-a\""), "{}", stderr(&again));
    let missing = kp.kubectl_stdin(&["create", "-f", "-"], &binding("nope", "node-a"));
    assert!(
        stderr(&missing).contains("NotFound") || stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    let unnamed = kp.kubectl_stdin(
        &["create", "-f", "-", "--validate=false"],
        "apiVersion: v1\nkind: Binding\nmetadata: {generateName: x-}\ntarget: {name: node-a}\n",
    );
    assert!(stderr(&unnamed).contains("metadata.name: Required value"), "{}", stderr(&unnamed));
    assert!(!keys(&kp).iter().any(|k| k.starts_with("/registry/bindings")), "{:?}", keys(&kp));
}
