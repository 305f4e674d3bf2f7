//! The DaemonSet controller in a whole cluster, driven by the real kubectl: one pod per eligible
//! node (nodeSelector, taints and tolerations, cordoned nodes), nodes joining, relabelled and
//! deleted, rolling updates with maxUnavailable and maxSurge, `kubectl rollout status / history /
//! undo daemonset`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_rollback_skipped, eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

fn json(kp: &Kplane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&all)).unwrap()
}

fn items(kp: &Kplane, args: &[&str]) -> Vec<Value> {
    json(kp, args)["items"].as_array().cloned().unwrap_or_default()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Ready and without the node-condition taints (the scheduler will use it).
fn schedulable(n: &Value) -> bool {
    let tainted = n["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            t["key"].as_str().is_some_and(|k| {
                k.starts_with("node.kubernetes.io/") && k != "node.kubernetes.io/unschedulable"
            })
        })
    });
    ready(n) && !tainted
}

/// The live (not terminating) pods of a selector, as (node, pod).
fn pods_by_node(kp: &Kplane, selector: &str) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = items(kp, &["get", "pods", "-l", selector])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| (p["spec"]["nodeName"].as_str().unwrap_or_default().to_string(), p))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Waits until exactly the nodes `want` each run one Ready pod of `selector`, and no other pod exists.
fn wait_placement(kp: &Kplane, selector: &str, want: &[&str]) -> Vec<Value> {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(90, &format!("{selector} Running on exactly {want:?}"), || {
        let all = items(kp, &["get", "pods", "-l", selector]);
        let pods = pods_by_node(kp, selector);
        let nodes: Vec<String> = pods.iter().map(|(n, _)| n.clone()).collect();
        let ok = all.len() == want.len() && nodes == want && pods.iter().all(|(_, p)| ready(p));
        ok.then(|| pods.into_iter().map(|(_, p)| p).collect())
    })
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(kp: &Kplane, name: &str, ip: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["node", "--name", name, "--node-ip", ip, "--kubelet-port", "0", "--kubeconfig"])
        .arg(&kp.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kplane node");
    Proc(child)
}

fn daemonset(name: &str, image: &str, extra_spec: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
{extra_spec}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{pod_spec}
      containers:
      - name: c
        image: {image}
"
    )
}

fn apply(kp: &Kplane, yaml: &str) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn up() -> (Kplane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_with(dir.path(), free_port(), &[]);
    eventually(60, "3 schedulable nodes", || {
        (items(&kp, &["get", "nodes"]).iter().filter(|n| schedulable(n)).count() == 3).then_some(())
    });
    (kp, dir)
}

#[test]
fn daemon_pods_follow_nodes_selectors_taints_and_cordons() {
    let (kp, _dir) = up();
    // worker1 carries a taint nothing tolerates by default; worker2 is cordoned.
    kp.kubectl_ok(&["taint", "node", "worker1", "dedicated=infra:NoSchedule"]);
    kp.kubectl_ok(&["cordon", "worker2"]);

    apply(&kp, &daemonset("agent", "nginx", "", ""));
    let tolerate =
        "      tolerations:\n      - {key: dedicated, operator: Equal, value: infra, effect: NoSchedule}\n";
    apply(&kp, &daemonset("tolerant", "nginx", "", tolerate));

    // The cordoned node gets its daemon pod (the scheduler binds it there); the tainted one only
    // with a toleration.
    let pods = wait_placement(&kp, "app=agent", &["worker0", "worker2"]);
    wait_placement(&kp, "app=tolerant", &["worker0", "worker1", "worker2"]);
    kp.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let ds = json(&kp, &["get", "daemonset", "agent"]);
    let st = &ds["status"];
    assert_eq!(
        (
            &st["desiredNumberScheduled"],
            &st["currentNumberScheduled"],
            &st["numberReady"],
            &st["numberAvailable"],
            &st["updatedNumberScheduled"],
            &st["numberMisscheduled"],
        ),
        (&2.into(), &2.into(), &2.into(), &2.into(), &2.into(), &0.into()),
        "{st}"
    );
    assert_eq!(st["observedGeneration"], ds["metadata"]["generation"]);
    assert_eq!(ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"], "1");

    // Each pod: required affinity to exactly its node, upstream's default tolerations, the hash
    // and generation labels, and the DaemonSet as controller.
    let revisions = items(&kp, &["get", "controllerrevisions", "-l", "app=agent"]);
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    let hash = revisions[0]["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap().to_string();
    assert_eq!(revisions[0]["revision"], 1);
    assert_eq!(revisions[0]["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let terms = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(
            terms,
            &serde_json::json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}])
        );
        let tols: BTreeSet<String> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
            .collect();
        let want: BTreeSet<String> = [
            "node.kubernetes.io/not-ready:NoExecute",
            "node.kubernetes.io/unreachable:NoExecute",
            "node.kubernetes.io/disk-pressure:NoSchedule",
            "node.kubernetes.io/memory-pressure:NoSchedule",
            "node.kubernetes.io/pid-pressure:NoSchedule",
            "node.kubernetes.io/unschedulable:NoSchedule",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(tols.is_superset(&want), "{tols:?}");
        assert_eq!(p["metadata"]["labels"]["controller-revision-hash"], hash.as_str());
        assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "1");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["controller"]),
            (&"DaemonSet".into(), &"agent".into(), &true.into())
        );
    }
    let events = kp.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=agent,reason=SuccessfulCreate",
    ]);
    assert!(events.contains("Created pod: agent-"), "{events}");

    // A 4th node joins: it gets a pod of each.
    let _w3 = start_node(&kp, "worker3", "127.0.22.3");
    wait_placement(&kp, "app=agent", &["worker0", "worker2", "worker3"]);
    wait_placement(&kp, "app=tolerant", &["worker0", "worker1", "worker2", "worker3"]);

    // nodeSelector: only labelled nodes; relabelling adds and removes the pod.
    let picky = "      nodeSelector: {role: edge}\n";
    apply(&kp, &daemonset("picky", "nginx", "", picky));
    eventually(30, "picky observed with nothing to run", || {
        let st = json(&kp, &["get", "daemonset", "picky"])["status"].clone();
        (st["observedGeneration"] == 1 && st["desiredNumberScheduled"] == 0).then_some(())
    });
    assert!(items(&kp, &["get", "pods", "-l", "app=picky"]).is_empty());
    kp.kubectl_ok(&["label", "node", "worker0", "role=edge"]);
    kp.kubectl_ok(&["label", "node", "worker3", "role=edge"]);
    wait_placement(&kp, "app=picky", &["worker0", "worker3"]);
    kp.kubectl_ok(&["label", "node", "worker0", "role-"]);
    wait_placement(&kp, "app=picky", &["worker3"]);
    eventually(30, "picky status after the relabel", || {
        let st = json(&kp, &["get", "daemonset", "picky"])["status"].clone();
        (st["desiredNumberScheduled"] == 1 && st["numberMisscheduled"] == 0 && st["numberReady"] == 1)
            .then_some(())
    });
    let events = kp.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=picky,reason=SuccessfulDelete",
    ]);
    assert!(events.contains("Deleted pod: picky-"), "{events}");

    // A NoExecute taint evicts a running daemon pod that does not tolerate it; NoSchedule does not.
    kp.kubectl_ok(&["taint", "node", "worker0", "evict=now:NoSchedule"]);
    std::thread::sleep(Duration::from_secs(2));
    wait_placement(&kp, "app=agent", &["worker0", "worker2", "worker3"]);
    kp.kubectl_ok(&["taint", "node", "worker0", "evict=now:NoSchedule-"]);
    kp.kubectl_ok(&["taint", "node", "worker0", "evict=now:NoExecute"]);
    wait_placement(&kp, "app=agent", &["worker2", "worker3"]);
    kp.kubectl_ok(&["taint", "node", "worker0", "evict=now:NoExecute-"]);
    wait_placement(&kp, "app=agent", &["worker0", "worker2", "worker3"]);

    // The node leaves (its kubelet stopped, the Node deleted): its daemon pods go with it.
    drop(_w3);
    kp.kubectl_ok(&["delete", "node", "worker3"]);
    wait_placement(&kp, "app=agent", &["worker0", "worker2"]);
    wait_placement(&kp, "app=picky", &[]);

    // Deleting the DaemonSet cascades to its pods and revisions.
    kp.kubectl_ok(&["delete", "daemonset", "agent", "--cascade=foreground", "--timeout=60s"]);
    eventually(30, "agent's pods and revisions gone", || {
        (items(&kp, &["get", "pods", "-l", "app=agent"]).is_empty()
            && items(&kp, &["get", "controllerrevisions", "-l", "app=agent"]).is_empty())
        .then_some(())
    });
}

/// Per node: (Ready pods, all live pods) of a selector, and the images seen.
fn sample(kp: &Kplane, selector: &str) -> (BTreeMap<String, (usize, usize)>, BTreeSet<String>) {
    let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut images = BTreeSet::new();
    for (node, p) in pods_by_node(kp, selector) {
        let e = per.entry(node).or_default();
        e.1 += 1;
        if ready(&p) && p["status"]["phase"] == "Running" {
            e.0 += 1;
            images.insert(p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string());
        }
    }
    (per, images)
}

/// Samples the rollout of `selector` over `nodes` until every pod runs `image` and kubectl's
/// rollout status is done; returns (most nodes seen without a Ready pod at once, most pods seen on
/// one node, whether old and new images were ever Ready side by side).
fn watch_rollout(kp: &Kplane, ds: &str, selector: &str, nodes: &[&str], image: &str) -> (usize, usize, bool) {
    let (mut worst_down, mut most_on_node, mut mixed) = (0, 0, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (per, images) = sample(kp, selector);
        let down = nodes.iter().filter(|n| per.get(**n).is_none_or(|(r, _)| *r == 0)).count();
        worst_down = worst_down.max(down);
        most_on_node = most_on_node.max(per.values().map(|(_, all)| *all).max().unwrap_or(0));
        mixed |= images.len() > 1;
        let all_new =
            pods_by_node(kp, selector).iter().all(|(_, p)| p["spec"]["containers"][0]["image"] == image);
        if all_new && down == 0 && per.len() == nodes.len() && per.values().all(|(r, a)| *r == 1 && *a == 1) {
            let st = kp.kubectl(&["rollout", "status", &format!("daemonset/{ds}"), "--timeout=1s"]);
            if st.status.success() {
                return (worst_down, most_on_node, mixed);
            }
        }
        assert!(std::time::Instant::now() < deadline, "rollout of {ds} to {image} did not finish: {per:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rolling_updates_respect_max_unavailable_and_max_surge_and_undo() {
    let (kp, _dir) = up();
    let nodes = ["worker0", "worker1", "worker2"];
    let strategy = "  minReadySeconds: 2\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {maxUnavailable: 1}\n";
    apply(&kp, &daemonset("roll", "nginx:1.0", strategy, ""));
    wait_placement(&kp, "app=roll", &nodes);
    let st = kp.kubectl(&["rollout", "status", "daemonset/roll", "--timeout=60s"]);
    assert!(stdout(&st).contains("daemon set \"roll\" successfully rolled out"), "{}", stdout(&st));
    let first_hash = items(&kp, &["get", "controllerrevisions", "-l", "app=roll"])[0]["metadata"]["labels"]
        ["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();

    // maxUnavailable 1: one node at a time, never two without a Ready pod, never two pods on a node.
    kp.kubectl_ok(&["set", "image", "daemonset/roll", "c=nginx:2.0"]);
    let (down, most, mixed) = watch_rollout(&kp, "roll", "app=roll", &nodes, "nginx:2.0");
    assert!(down <= 1, "{down} nodes were without a Ready pod at once");
    assert_eq!(most, 1, "no surge: at most one pod per node");
    assert!(mixed, "old and new pods ran side by side: the update went node by node");
    let pods = wait_placement(&kp, "app=roll", &nodes);
    assert!(pods.iter().all(|p| p["metadata"]["labels"]["pod-template-generation"] == "2"));
    let history = kp.kubectl_ok(&["rollout", "history", "daemonset/roll"]);
    let revs: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revs, ["1", "2"], "{history}");
    let detail = kp.kubectl_ok(&["rollout", "history", "daemonset/roll", "--revision=1"]);
    assert!(detail.contains("nginx:1.0"), "{detail}");

    // Undo: back to revision 1's template, which becomes revision 3; its pods carry its old hash.
    let out = kp.kubectl_ok(&["rollout", "undo", "daemonset/roll"]);
    assert!(out.contains("rolled back"), "{out}");
    let (down, _, _) = watch_rollout(&kp, "roll", "app=roll", &nodes, "nginx:1.0");
    assert!(down <= 1);
    let pods = wait_placement(&kp, "app=roll", &nodes);
    assert!(pods.iter().all(|p| p["metadata"]["labels"]["controller-revision-hash"] == first_hash.as_str()));
    let history = kp.kubectl_ok(&["rollout", "history", "daemonset/roll"]);
    let revs: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revs, ["2", "3"], "{history}");
    // Undoing to what is already current is refused by kubectl.
    assert_rollback_skipped(&kp.kubectl(&["rollout", "undo", "daemonset/roll", "--to-revision=3"]));
    let ds = json(&kp, &["get", "daemonset", "roll"]);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
    assert_eq!(ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"], "3");

    // maxSurge 1, maxUnavailable 0: the new pod starts beside the old one, which goes only once
    // the new one is available; no node is ever without a Ready pod.
    let patch = r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#;
    kp.kubectl_ok(&["patch", "daemonset", "roll", "--type=merge", "-p", patch]);
    kp.kubectl_ok(&["set", "image", "daemonset/roll", "c=nginx:3.0"]);
    let (down, most, _) = watch_rollout(&kp, "roll", "app=roll", &nodes, "nginx:3.0");
    assert_eq!(down, 0, "with surge and no unavailability every node keeps a Ready pod");
    assert_eq!(most, 2, "the new pod ran beside the old one");

    // OnDelete: a template change replaces nothing until a pod is deleted.
    let patch = r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#;
    kp.kubectl_ok(&["patch", "daemonset", "roll", "--type=merge", "-p", patch]);
    kp.kubectl_ok(&["set", "image", "daemonset/roll", "c=nginx:4.0"]);
    eventually(30, "the OnDelete change observed", || {
        let ds = json(&kp, &["get", "daemonset", "roll"]);
        (ds["status"]["observedGeneration"] == ds["metadata"]["generation"]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, images) = sample(&kp, "app=roll");
    assert_eq!(images, BTreeSet::from(["nginx:3.0".to_string()]), "OnDelete replaced nothing by itself");
    let victim = pods_by_node(&kp, "app=roll").into_iter().find(|(n, _)| n == "worker1").unwrap().1;
    kp.kubectl_ok(&["delete", "pod", victim["metadata"]["name"].as_str().unwrap()]);
    eventually(60, "worker1's replacement runs the new image", || {
        let pods = pods_by_node(&kp, "app=roll");
        pods.iter()
            .any(|(n, p)| n == "worker1" && ready(p) && p["spec"]["containers"][0]["image"] == "nginx:4.0")
            .then_some(())
    });
    let (_, images) = sample(&kp, "app=roll");
    assert!(images.contains("nginx:3.0"), "the other nodes kept the old pods: {images:?}");
}
