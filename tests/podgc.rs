//! The pod garbage collector with the real kubectl, on `kplane up --terminated-pod-gc-threshold=3`:
//! finished pods beyond 3 are deleted oldest first, and a pod bound to a Node object that is
//! deleted goes after upstream's 40 s quarantine.

mod common;

use common::{eventually, free_port, stderr, Kplane};
use serde_json::Value;

fn pod_names(kp: &Kplane) -> Vec<String> {
    let list: Value = serde_json::from_str(&kp.kubectl_ok(&["get", "pods", "-o", "json"])).unwrap();
    let mut v: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn phase(kp: &Kplane, name: &str) -> String {
    kp.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])
}

#[test]
fn terminated_pods_over_the_threshold_and_pods_of_deleted_nodes_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_with(dir.path(), free_port(), &["--terminated-pod-gc-threshold=3"]);

    // A pod on a Node object that no kubelet serves; the node is then deleted.
    let out = kp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: ghost}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: stranded}\nspec:\n  nodeName: ghost\n  containers:\n  - {name: c, image: busybox, command: [sleep, '3600']}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["delete", "node", "ghost"]);
    let deleted_at = std::time::Instant::now();

    // Five pods that finish, one at a time so that their creation order is certain; a running one.
    kp.kubectl_ok(&["run", "keep", "--image=busybox", "--", "sleep", "3600"]);
    for i in 1..=5 {
        let name = format!("done{i}");
        kp.kubectl_ok(&["run", &name, "--image=busybox", "--restart=Never", "--", "sh", "-c", "true"]);
        eventually(30, "pod finished", || (phase(&kp, &name) == "Succeeded").then_some(()));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // The two oldest finished pods go; the running one and the 3 newest stay.
    eventually(60, "done1 and done2 collected", || {
        let left = pod_names(&kp);
        (!left.contains(&"done1".to_string()) && !left.contains(&"done2".to_string())).then_some(left)
    });
    let left = pod_names(&kp);
    for p in ["done3", "done4", "done5", "keep"] {
        assert!(left.contains(&p.to_string()), "{p} kept: {left:?}");
    }
    // The orphan: not before the quarantine, gone after it.
    eventually(90, "stranded force-deleted", || {
        (!pod_names(&kp).contains(&"stranded".to_string())).then_some(())
    });
    assert!(deleted_at.elapsed() >= std::time::Duration::from_secs(40), "quarantined first");
}
