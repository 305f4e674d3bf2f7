//! The audit log of `kplane up --audit-policy-file P --audit-log-path L`, driven by the real
//! `kubectl`: levels and stages as the policy says, one `audit.k8s.io/v1` Event per line, a Secret
//! at Metadata with none of its data, rotation with lumberjack's names, and a bad policy refused at
//! startup.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, free_port, stderr, Kplane};
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
  omitStages: []
- level: None
"#;

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON event per line ({e}): {l}")))
        .collect()
}

fn named<'a>(evs: &'a [Value], resource: &str, name: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["objectRef"]["resource"] == resource && e["objectRef"]["name"] == name).collect()
}

fn start(dir: &Path, extra: &[&str]) -> Kplane {
    let mut args = vec!["--nodes", "0", "--no-networking", "--no-xray"];
    args.extend_from_slice(extra);
    Kplane::start_with(dir, free_port(), &args)
}

#[test]
fn kubectl_requests_are_audited_at_the_policys_levels_and_stages() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("audit").join("audit.log");
    let data = dir.path().join("data");
    let kp = start(
        &data,
        &["--audit-policy-file", policy.to_str().unwrap(), "--audit-log-path", log.to_str().unwrap()],
    );

    kp.kubectl_ok(&["create", "configmap", "audited", "--from-literal=colour=blue"]);
    kp.kubectl_ok(&["get", "configmap", "audited"]);
    kp.kubectl_ok(&["delete", "configmap", "audited"]);
    kp.kubectl_ok(&["create", "secret", "generic", "hush", "--from-literal=password=hunter2"]);
    kp.kubectl_ok(&["get", "secret", "hush", "-o", "yaml"]);
    kp.kubectl_ok(&["delete", "secret", "hush"]);
    let refused = kp.kubectl(&["--as", "nobody", "get", "configmap", "kube-root-ca.crt"]);
    assert!(!refused.status.success(), "impersonating nobody is forbidden");

    let evs = eventually(10, "the secret's delete is logged", || {
        let evs = events(&log);
        named(&evs, "secrets", "hush")
            .iter()
            .any(|e| e["verb"] == "delete" && e["stage"] == "ResponseComplete")
            .then_some(evs)
    });
    for e in &evs {
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        for field in [
            "auditID",
            "stage",
            "requestURI",
            "verb",
            "user",
            "sourceIPs",
            "requestReceivedTimestamp",
            "stageTimestamp",
            "level",
        ] {
            assert!(!e[field].is_null(), "{field} missing in {e}");
        }
        assert_ne!(e["level"], "None");
    }

    // The ConfigMap at RequestResponse: RequestReceived then ResponseComplete for each verb, the
    // objects in the later stage only.
    let cm = named(&evs, "configmaps", "audited");
    for verb in ["create", "get", "delete"] {
        let of_verb: Vec<&&Value> =
            cm.iter().filter(|e| e["verb"] == verb && e["user"]["username"] == "kubernetes-admin").collect();
        // The first request of each verb (kubectl delete then reads the object, a 404).
        let stages: Vec<&str> = of_verb.iter().take(2).map(|e| e["stage"].as_str().unwrap()).collect();
        assert_eq!(stages, ["RequestReceived", "ResponseComplete"], "{verb}: {of_verb:?}");
        assert_eq!(of_verb[0]["auditID"], of_verb[1]["auditID"]);
        assert!(of_verb[0].get("requestObject").is_none() && of_verb[0].get("responseObject").is_none());
        let done = of_verb[1];
        assert_eq!(done["level"], "RequestResponse");
        assert_eq!(done["objectRef"]["namespace"], "default");
        assert_eq!(done["objectRef"]["apiVersion"], "v1");
        assert_eq!(done["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(done["annotations"]["authorization.k8s.io/reason"].as_str().is_some());
        assert!(done["userAgent"].as_str().unwrap().starts_with("kubectl"), "{done}");
        assert!(done["sourceIPs"].as_array().unwrap().iter().any(|ip| ip == "127.0.0.1"), "{done}");
        let code = done["responseStatus"]["code"].as_u64().unwrap();
        assert_eq!(code, if verb == "create" { 201 } else { 200 });
        assert!(done["responseObject"].is_object(), "{verb}: {done}");
    }
    let create = cm.iter().find(|e| e["verb"] == "create" && e["stage"] == "ResponseComplete").unwrap();
    assert_eq!(create["requestObject"]["data"]["colour"], "blue");
    assert_eq!(create["responseObject"]["data"]["colour"], "blue");
    assert_eq!(create["responseObject"]["metadata"]["name"], "audited");

    // The Secret at Metadata: the events, none of its data anywhere in the log.
    let secret = named(&evs, "secrets", "hush");
    assert!(secret.len() >= 6, "{secret:?}");
    for e in &secret {
        assert_eq!(e["level"], "Metadata");
        assert!(e.get("requestObject").is_none() && e.get("responseObject").is_none(), "{e}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVyMg=="),
        "the secret's value is in the audit log"
    );

    // The refused request: forbidden, decision forbid, 403.
    let forbidden = named(&evs, "configmaps", "kube-root-ca.crt")
        .into_iter()
        .find(|e| e["stage"] == "ResponseComplete" && e["responseStatus"]["code"] == 403)
        .expect("the forbidden get is logged");
    assert_eq!(forbidden["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert_eq!(forbidden["responseStatus"]["reason"], "Forbidden");
    assert_eq!(forbidden["user"]["username"], "kubernetes-admin");
    assert_eq!(forbidden["impersonatedUser"]["username"], "nobody");

    // A watch has ResponseStarted, and ResponseComplete once it ends.
    let mut watch = Command::new("kubectl")
        .args([
            "--kubeconfig",
            kp.kubeconfig.to_str().unwrap(),
            "get",
            "configmaps",
            "--watch",
            "--request-timeout=3s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch_events = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .filter(|e| {
                e["verb"] == "watch"
                    && e["objectRef"]["resource"] == "configmaps"
                    && e["user"]["username"] == "kubernetes-admin"
            })
            .map(|e| e["stage"].as_str().unwrap().to_string())
            .collect()
    };
    eventually(15, "the watch's ResponseStarted", || {
        watch_events(&events(&log)).contains(&"ResponseStarted".to_string()).then_some(())
    });
    let _ = watch.wait();
    kp.kubectl_ok(&["create", "configmap", "after-watch"]);
    let stages = eventually(15, "the watch's ResponseComplete", || {
        let stages = watch_events(&events(&log));
        stages.contains(&"ResponseComplete".to_string()).then_some(stages)
    });
    assert_eq!(stages[..3], ["RequestReceived", "ResponseStarted", "ResponseComplete"], "{stages:?}");
}

#[test]
fn the_audit_log_rotates_by_size_and_keeps_maxbackup_files() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("audit.log");
    let kp = start(
        &dir.path().join("data"),
        &[
            "--audit-policy-file",
            policy.to_str().unwrap(),
            "--audit-log-path",
            log.to_str().unwrap(),
            "--audit-log-maxsize",
            "1",
            "--audit-log-maxbackup",
            "2",
        ],
    );
    // Each create logs its 200 KB object twice (request and response).
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(200 * 1024)).unwrap();
    for i in 0..12 {
        kp.kubectl_ok(&[
            "create",
            "configmap",
            &format!("big{i}"),
            &format!("--from-file=f={}", big.display()),
        ]);
    }
    let files = eventually(10, "two backups beside the log", || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("audit"))
            .collect();
        names.sort();
        (names.len() == 3).then_some(names)
    });
    assert!(files.contains(&"audit.log".to_string()), "{files:?}");
    for backup in files.iter().filter(|n| *n != "audit.log") {
        // lumberjack's `<name>-<timestamp>.<ext>`: audit-2026-12-07T10-40-01.123.log
        let stamp = backup
            .strip_prefix("audit-")
            .and_then(|s| s.strip_suffix(".log"))
            .unwrap_or_else(|| panic!("{backup}"));
        assert_eq!(stamp.len(), "2006-01-02T15-04-05.000".len(), "{backup}");
        let size = std::fs::metadata(dir.path().join(backup)).unwrap().len();
        assert!(size <= 1024 * 1024, "{backup} has {size} bytes");
        for line in std::fs::read_to_string(dir.path().join(backup)).unwrap().lines() {
            serde_json::from_str::<Value>(line).expect("whole events in each file");
        }
    }
}

#[test]
fn a_bad_audit_policy_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("bad-policy.yaml");
    std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["up", "--data-dir", dir.path().join("data").to_str().unwrap(), "--secure-port", "0"])
        .args([
            "--etcd-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-xray",
            "--no-networking",
            "--nodes",
            "0",
        ])
        .args(["--audit-policy-file", policy.to_str().unwrap(), "--audit-log-path", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kplane started with a bad audit policy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad-policy.yaml") && err.contains("Loud"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kplane: ready"));
}

#[test]
fn requests_refused_for_want_of_authentication_are_audited_without_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n").unwrap();
    let log = dir.path().join("audit.log");
    let kp = start(
        &dir.path().join("data"),
        &["--audit-policy-file", policy.to_str().unwrap(), "--audit-log-path", log.to_str().unwrap()],
    );
    const TOKEN: &str = "not-a-token-anyone-issued-4f1d";

    // kubectl with a bad token: refused with 401.
    let out = kp.kubectl_as(&["--token", TOKEN], &["get", "configmaps"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the server has asked for the client to provide credentials"),
        "{}",
        stderr(&out)
    );
    // curl: the same token on a resource request, then no credential at all.
    let curl = |extra: &[&str], path: &str| {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(extra)
            .arg(format!("{}{path}", kp.api))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(curl(&["-H", &auth, "-H", "Audit-ID: bad-token-1"], "/api/v1/namespaces/default/pods"), "401");
    assert_eq!(curl(&["-H", "Audit-ID: no-credential-1"], "/apis/apps/v1/deployments"), "401");

    let evs = eventually(10, "the refusals logged", || {
        let evs = events(&log);
        (evs.iter().filter(|e| e["responseStatus"]["code"] == 401).count() >= 3).then_some(evs)
    });
    let by_id = |id: &str| evs.iter().filter(|e| e["auditID"] == id).collect::<Vec<_>>();
    let bad = by_id("bad-token-1");
    assert_eq!(bad.len(), 1, "one event, at ResponseStarted, as upstream: {bad:?}");
    let bad = bad[0];
    assert_eq!(bad["stage"], "ResponseStarted");
    assert_eq!(bad["level"], "Metadata");
    assert_eq!(bad["verb"], "list");
    assert_eq!(bad["user"], serde_json::json!({}), "no user is named");
    assert_eq!(bad["objectRef"]["resource"], "pods");
    assert_eq!(bad["objectRef"]["namespace"], "default");
    assert_eq!(bad["responseStatus"]["code"], 401);
    assert_eq!(bad["responseStatus"]["message"], "Authentication failed, attempted: bearer");
    assert_eq!(bad["requestURI"], "/api/v1/namespaces/default/pods");
    let none = by_id("no-credential-1");
    assert_eq!(none.len(), 1, "{none:?}");
    assert_eq!(none[0]["responseStatus"]["message"], "Authentication failed, no credentials provided");
    assert_eq!(none[0]["objectRef"]["apiGroup"], "apps");
    // kubectl's refused request is there too.
    assert!(
        evs.iter().any(|e| e["responseStatus"]["message"] == "Authentication failed, attempted: bearer"
            && e["userAgent"].as_str().is_some_and(|ua| ua.starts_with("kubectl"))),
        "kubectl's refusal is logged"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "the token is in the audit log");
}
