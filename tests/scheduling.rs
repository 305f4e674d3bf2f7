//! The scheduler's default profile as a new user meets it, with the real kubectl on `kplane up`
//! (3 simulated nodes): a small app spreads over the nodes (repeated: ties are broken at random,
//! so the invariant is asserted, not a placement), a 9-replica Deployment balances the totals,
//! pods with requests prefer the least-allocated node, required pod anti-affinity keeps one per
//! node and leaves the rest Pending with upstream's FailedScheduling message, and a
//! DoNotSchedule topology spread constraint holds against a preferred node affinity.

mod common;

use std::collections::BTreeMap;

use common::{eventually, free_port, Kplane};
use serde_json::Value;

fn apply(kp: &Kplane, yaml: &str) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// The pods with this label selector: name → node ("" while unbound).
fn placement(kp: &Kplane, selector: &str) -> BTreeMap<String, String> {
    let out = kp.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            (name, p["spec"]["nodeName"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// Waits for `n` pods with this selector, all bound; returns pods per node.
fn bound(kp: &Kplane, selector: &str, n: usize) -> BTreeMap<String, usize> {
    let p = eventually(60, &format!("{n} pods of {selector} bound"), || {
        let p = placement(kp, selector);
        (p.len() == n && p.values().all(|node| !node.is_empty())).then_some(p)
    });
    let mut per_node = BTreeMap::new();
    for node in p.values() {
        *per_node.entry(node.clone()).or_insert(0) += 1;
    }
    per_node
}

fn add(total: &mut BTreeMap<String, usize>, more: &BTreeMap<String, usize>) {
    for (node, n) in more {
        *total.entry(node.clone()).or_insert(0) += n;
    }
}

#[test]
fn pods_spread_as_upstreams_default_profile_places_them() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    eventually(60, "3 Ready nodes", || {
        let out = kp.kubectl_ok(&["get", "nodes", "--no-headers"]);
        (out.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() == 3).then_some(())
    });
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    // The trial, three times over: a 3-replica nginx Deployment with its Service, then a
    // 2-replica api Deployment. Each Deployment's pods land on distinct nodes (the default
    // hostname spreading plus least-allocated), so no node holds more than 2 of a round's 5.
    let mut first_nginx_nodes = Vec::new();
    for round in 0..3 {
        let (web, api) = (format!("nginx{round}"), format!("api{round}"));
        kp.kubectl_ok(&["create", "deployment", &web, "--image=nginx", "--replicas=3", "--port=80"]);
        kp.kubectl_ok(&["expose", "deployment", &web, "--port=80"]);
        kp.kubectl_ok(&["create", "deployment", &api, "--image=nginx", "--replicas=2"]);
        let w = bound(&kp, &format!("app={web}"), 3);
        let a = bound(&kp, &format!("app={api}"), 2);
        assert_eq!(w.len(), 3, "round {round}: {web} on 3 nodes: {w:?}");
        assert_eq!(a.len(), 2, "round {round}: {api} on 2 nodes: {a:?}");
        let mut this = w.clone();
        add(&mut this, &a);
        assert!(this.values().all(|n| *n <= 2), "round {round}: {this:?}");
        add(&mut total, &this);
        first_nginx_nodes.push(placement(&kp, &format!("app={web}")));
    }
    eprintln!("nginx placements per round (ties broken at random): {first_nginx_nodes:?}");
    // 15 pods so far, within 1 of 5 per node (rounds fill the node left with 1).
    assert!(total.values().all(|n| (4..=6).contains(n)), "{total:?}");

    // A 9-replica Deployment: its own pods spread 3/3/3 (hostname maxSkew 3 outweighs the few
    // points of least-allocated), and the totals stay balanced.
    kp.kubectl_ok(&["create", "deployment", "wide", "--image=nginx", "--replicas=9"]);
    let wide = bound(&kp, "app=wide", 9);
    assert_eq!(wide.len(), 3, "{wide:?}");
    assert!(wide.values().all(|n| (2..=4).contains(n)), "{wide:?}");
    add(&mut total, &wide);
    let (min, max) = (total.values().min().unwrap(), total.values().max().unwrap());
    assert!(max - min <= 2, "totals {total:?}");

    // Requests: a pod taking 3 of worker0's 4 cpus makes it the most allocated node; a pod with
    // requests then goes to one of the two others.
    apply(
        &kp,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hog, labels: {app: hog}}\nspec:\n  nodeSelector: {kubernetes.io/hostname: worker0}\n  containers:\n  - name: c\n    image: nginx\n    resources: {requests: {cpu: '3', memory: 1Gi}}\n",
    );
    assert_eq!(bound(&kp, "app=hog", 1).keys().next().unwrap(), "worker0");
    for i in 0..3 {
        apply(
            &kp,
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: light{i}, labels: {{app: light}}}}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources: {{requests: {{cpu: 200m, memory: 256Mi}}}}\n"),
        );
    }
    let light = bound(&kp, "app=light", 3);
    assert!(!light.contains_key("worker0"), "the least-allocated nodes: {light:?}");

    // Required anti-affinity on the hostname: one per node, the 4th Pending with upstream's message.
    apply(
        &kp,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: solo}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: solo}}\n  template:\n    metadata: {labels: {app: solo}}\n    spec:\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: solo}}\n            topologyKey: kubernetes.io/hostname\n      containers:\n      - {name: c, image: nginx}\n",
    );
    let want = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
                preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    let pending = eventually(60, "3 solo pods bound and one Pending", || {
        let p = placement(&kp, "app=solo");
        let unbound: Vec<&String> = p.iter().filter(|(_, n)| n.is_empty()).map(|(k, _)| k).collect();
        let nodes: std::collections::BTreeSet<&String> = p.values().filter(|n| !n.is_empty()).collect();
        (p.len() == 4 && unbound.len() == 1 && nodes.len() == 3).then(|| unbound[0].clone())
    });
    let msg = eventually(30, "PodScheduled=False", || {
        let out = kp.kubectl_ok(&["get", "pod", &pending, "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled" && c["status"] == "False").cloned())
            .map(|c| {
                (
                    c["reason"].as_str().unwrap_or_default().to_string(),
                    c["message"].as_str().unwrap_or_default().to_string(),
                )
            })
    });
    assert_eq!(msg, ("Unschedulable".to_string(), want.to_string()));
    let events = eventually(30, "FailedScheduling event", || {
        let out = kp.kubectl_ok(&["get", "events", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let items: Vec<Value> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == pending.as_str() && e["reason"] == "FailedScheduling")
            .cloned()
            .collect();
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(events[0]["message"], want);
    assert_eq!(events[0]["type"], "Warning");

    // DoNotSchedule maxSkew 1 by hostname holds even though every pod prefers worker0 (preferred
    // node affinity, weight 100): 6 replicas → 2/2/2. Without the filter they would all go there.
    apply(
        &kp,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: even}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: even}}\n  template:\n    metadata: {labels: {app: even}}\n    spec:\n      topologySpreadConstraints:\n      - maxSkew: 1\n        topologyKey: kubernetes.io/hostname\n        whenUnsatisfiable: DoNotSchedule\n        labelSelector: {matchLabels: {app: even}}\n      affinity:\n        nodeAffinity:\n          preferredDuringSchedulingIgnoredDuringExecution:\n          - weight: 100\n            preference: {matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [worker0]}]}\n      containers:\n      - {name: c, image: nginx}\n",
    );
    let even = bound(&kp, "app=even", 6);
    assert_eq!(even.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{even:?}");
}
