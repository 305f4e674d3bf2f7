//! The ResourceQuota status controller with the real kubectl against `kplane up`: `kubectl describe
//! quota` shows Used beside Hard, following pods, services and configmaps created and deleted, and
//! a scoped quota counts only its pods; the quota admission still refuses what exceeds Hard.

mod common;

use common::{eventually, free_port, Kplane};
use serde_json::Value;

fn used(kp: &Kplane, name: &str) -> Value {
    let ns = if name == "besteffort" { "be" } else { "team" };
    let out = kp.kubectl_ok(&["get", "quota", name, "-n", ns, "-o", "json"]);
    let q: Value = serde_json::from_str(&out).unwrap();
    q["status"]["used"].clone()
}

/// The `Resource Used Hard` rows of `kubectl describe quota`, as (resource, used, hard).
fn described(kp: &Kplane, name: &str) -> Vec<(String, String, String)> {
    let out = kp.kubectl_ok(&["describe", "quota", name, "-n", "team"]);
    out.lines()
        .skip_while(|l| !l.starts_with("Resource"))
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

#[test]
fn describe_quota_shows_used_and_hard() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    kp.kubectl_ok(&["create", "namespace", "team"]);
    kp.kubectl_ok(&[
        "create",
        "quota",
        "compute",
        "-n",
        "team",
        "--hard=pods=4,requests.cpu=2,limits.memory=1Gi,services=2,configmaps=5,count/deployments.apps=2",
    ]);
    kp.kubectl_ok(&["create", "namespace", "be"]);
    kp.kubectl_ok(&["create", "quota", "besteffort", "-n", "be", "--hard=pods=10", "--scopes=BestEffort"]);
    // Nothing yet (the namespace's kube-root-ca.crt ConfigMap, where published, counts).
    let u = eventually(30, "status.used", || {
        let u = used(&kp, "compute");
        (u["pods"] == "0").then_some(u)
    });
    assert_eq!(u["requests.cpu"], "0");
    let rows = described(&kp, "compute");
    assert!(rows.contains(&("pods".into(), "0".into(), "4".into())), "{rows:?}");
    assert!(rows.contains(&("requests.cpu".into(), "0".into(), "2".into())), "{rows:?}");

    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: team}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n        resources:\n          requests: {cpu: 500m, memory: 64Mi}\n          limits: {cpu: 500m, memory: 128Mi}\n";
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], deploy);
    assert!(out.status.success(), "{}", common::stderr(&out));
    kp.kubectl_ok(&["create", "service", "clusterip", "web", "-n", "team", "--tcp=80:80"]);
    kp.kubectl_ok(&["create", "configmap", "settings", "-n", "team", "--from-literal=a=b"]);
    eventually(60, "used follows the deployment", || {
        let rows = described(&kp, "compute");
        let want = [
            ("pods", "2", "4"),
            ("requests.cpu", "1", "2"),
            ("limits.memory", "256Mi", "1Gi"),
            ("services", "1", "2"),
            ("count/deployments.apps", "1", "2"),
        ];
        want.iter().all(|(r, u, h)| rows.contains(&(r.to_string(), u.to_string(), h.to_string()))).then_some(())
    });
    // The BestEffort quota counts only pods that request nothing.
    assert_eq!(used(&kp, "besteffort")["pods"], "0");
    let paid = deploy.replace("namespace: team", "namespace: be").replace("name: web", "name: paid");
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], &paid);
    assert!(out.status.success(), "{}", common::stderr(&out));
    kp.kubectl_ok(&["run", "free", "-n", "be", "--image=nginx"]);
    eventually(30, "best-effort pod counted", || (used(&kp, "besteffort")["pods"] == "1").then_some(()));
    eventually(30, "the 2 paid pods exist", || {
        (kp.kubectl_ok(&["get", "pods", "-n", "be", "--no-headers"]).lines().count() == 3).then_some(())
    });
    assert_eq!(used(&kp, "besteffort")["pods"], "1");
    // The admission plugin refuses what would exceed Hard, whatever status says.
    let out = kp.kubectl(&["create", "deployment", "more", "-n", "team", "--image=nginx"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = kp.kubectl(&["create", "deployment", "toomany", "-n", "team", "--image=nginx"]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("exceeded quota: compute"), "{}", common::stderr(&out));

    // Deleting frees the usage again.
    kp.kubectl_ok(&["delete", "deployment", "web", "-n", "team"]);
    kp.kubectl_ok(&["delete", "service", "web", "-n", "team"]);
    eventually(60, "used drops", || {
        let u = used(&kp, "compute");
        (u["requests.cpu"] == "0" && u["services"] == "0").then_some(())
    });
}
