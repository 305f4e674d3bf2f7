//! `kubectl drain` and `kubectl uncordon` with the real kubectl against `kplane up`: the
//! PodDisruptionBudget controller's status as `kubectl get pdb` prints it, a drain blocked by a PDB
//! (kubectl retrying on the eviction subresource's 429) that succeeds once the PDB is relaxed, the
//! evicted pods recreated on other nodes, and uncordon.

mod common;

use std::process::{Command, Stdio};

use common::{eventually, free_port, Kplane};
use serde_json::Value;

fn json(kp: &Kplane, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&a)).unwrap()
}

fn ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The live (not terminating) pods labelled app=`app`, as (name, node, ready).
fn pods(kp: &Kplane, app: &str) -> Vec<(String, String, bool)> {
    let list = json(kp, &["get", "pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                ready(p),
            )
        })
        .collect()
}

/// `kubectl get pdb <name>`'s row: MIN AVAILABLE, MAX UNAVAILABLE, ALLOWED DISRUPTIONS.
fn pdb_row(kp: &Kplane, name: &str) -> Vec<String> {
    let out = kp.kubectl_ok(&["get", "pdb", name, "--no-headers"]);
    out.split_whitespace().skip(1).take(3).map(str::to_string).collect()
}

#[test]
fn drain_blocked_by_a_pdb_then_relaxed_and_uncordon() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    eventually(60, "3 Ready nodes", || {
        let nodes = json(&kp, &["get", "nodes"]);
        let ready = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        (ready >= 3).then_some(())
    });
    kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx", "--replicas=3"]);
    eventually(90, "3 web pods ready", || (pods(&kp, "web").iter().filter(|p| p.2).count() == 3).then_some(()));

    // The PDB controller's status, as kubectl prints it.
    kp.kubectl_ok(&["create", "pdb", "web", "--selector=app=web", "--min-available=3"]);
    let status = eventually(30, "pdb status", || {
        let p = json(&kp, &["get", "pdb", "web"]);
        (p["status"]["observedGeneration"] == p["metadata"]["generation"] && p["status"]["currentHealthy"] == 3)
            .then(|| p["status"].clone())
    });
    assert_eq!(status["desiredHealthy"], 3);
    assert_eq!(status["expectedPods"], 3);
    assert_eq!(status["disruptionsAllowed"], 0);
    let cond = &status["conditions"][0];
    assert_eq!((cond["type"].as_str(), cond["status"].as_str()), (Some("DisruptionAllowed"), Some("False")));
    assert_eq!(cond["reason"], "InsufficientPods");
    assert_eq!(pdb_row(&kp, "web"), ["3", "N/A", "0"]);

    // A percentage of maxUnavailable counts the Deployment's replicas, rounded up as upstream.
    kp.kubectl_ok(&["create", "deployment", "api", "--image=nginx", "--replicas=4"]);
    kp.kubectl_ok(&["create", "pdb", "api", "--selector=app=api", "--max-unavailable=30%"]);
    let status = eventually(90, "api pdb allows 2", || {
        let p = json(&kp, &["get", "pdb", "api"]);
        (p["status"]["currentHealthy"] == 4).then(|| p["status"].clone())
    });
    assert_eq!((status["expectedPods"].as_i64(), status["desiredHealthy"].as_i64()), (Some(4), Some(2)));
    assert_eq!(status["disruptionsAllowed"], 2);
    assert_eq!(status["conditions"][0]["reason"], "SufficientPods");
    assert_eq!(pdb_row(&kp, "api"), ["N/A", "30%", "2"]);
    kp.kubectl_ok(&["delete", "deployment", "api"]);
    kp.kubectl_ok(&["delete", "pdb", "api"]);

    // Drain a node holding a web pod; the PDB (minAvailable = replicas) blocks the eviction.
    let node = pods(&kp, "web")[0].1.clone();
    let log = dir.path().join("drain.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut drain = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kp.kubeconfig)
        .args(["drain", &node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"])
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(30, "drain blocked by the PDB", || {
        read_log().contains("Cannot evict pod as it would violate the pod's disruption budget").then_some(())
    });
    let n = json(&kp, &["get", "node", &node]);
    assert_eq!(n["spec"]["unschedulable"], true, "drain cordons first");
    let row = kp.kubectl_ok(&["get", "node", &node, "--no-headers"]);
    assert!(row.contains("SchedulingDisabled"), "{row}");
    // Still blocked a while later: kubectl keeps retrying, nothing is evicted.
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(drain.try_wait().unwrap().is_none(), "drain gave up: {}", read_log());
    assert!(pods(&kp, "web").iter().any(|p| p.1 == node));
    assert_eq!(pods(&kp, "web").len(), 3);

    // Relax the PDB: the drain goes through within its timeout.
    kp.kubectl_ok(&["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec":{"minAvailable":2}}"#]);
    let status = eventually(150, "drain finished", || drain.try_wait().unwrap());
    let text = read_log();
    assert!(status.success(), "drain failed: {text}");
    assert!(text.contains("evicted"), "{text}");
    assert!(text.contains(&format!("node/{node} drained")), "{text}");

    // The ReplicaSet recreated the evicted pods, and the scheduler put them elsewhere.
    eventually(90, "3 web pods ready off the drained node", || {
        let p = pods(&kp, "web");
        (p.len() == 3 && p.iter().all(|p| p.2 && p.1 != node)).then_some(())
    });
    // The eviction marked the budget's disrupted pods; the controller settles back to 1 allowed.
    eventually(60, "pdb settles", || {
        let s = json(&kp, &["get", "pdb", "web"])["status"].clone();
        (s["currentHealthy"] == 3 && s["disruptionsAllowed"] == 1).then_some(())
    });

    kp.kubectl_ok(&["uncordon", &node]);
    let n = json(&kp, &["get", "node", &node]);
    assert!(n["spec"]["unschedulable"].is_null() || n["spec"]["unschedulable"] == false, "{n}");
    let row = kp.kubectl_ok(&["get", "node", &node, "--no-headers"]);
    assert!(!row.contains("SchedulingDisabled"), "{row}");
}

#[test]
fn kubectl_evicts_through_the_subresource_and_rbac_guards_it() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    // Discovery lists pods/eviction as kubectl drain looks for it (group policy, version v1).
    let out = kp.kubectl_ok(&["get", "--raw", "/api/v1"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let ev = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/eviction").unwrap();
    assert_eq!(
        (ev["group"].as_str(), ev["version"].as_str(), ev["kind"].as_str()),
        (Some("policy"), Some("v1"), Some("Eviction"))
    );
    // Who may evict: the edit role can, the view role cannot.
    kp.kubectl_ok(&["create", "serviceaccount", "editor"]);
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "editor",
        "--clusterrole=edit",
        "--serviceaccount=default:editor",
    ]);
    kp.kubectl_ok(&["create", "serviceaccount", "viewer"]);
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    let ask = |sa: &str| {
        let o = kp.kubectl(&[
            "auth",
            "can-i",
            "create",
            "pods/eviction",
            &format!("--as=system:serviceaccount:default:{sa}"),
        ]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(ask("editor"), "yes");
    assert_eq!(ask("viewer"), "no");
}
