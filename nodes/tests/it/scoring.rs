//! The scheduler's default-profile scoring and the filters the DaemonSet controller relies on,
//! against an in-process API server with fake nodes (no kubelets: pods stay bound, never run).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::helpers::*;

async fn bound_to(client: &kube::Client, name: &str) -> String {
    eventually(&format!("{name} to be bound"), || async {
        get_pod(client, "default", name).await.and_then(|p| node_name_of(&p))
    })
    .await
}

/// A pod owned (controller) by the ReplicaSet `rs` with uid `uid`.
fn owned(name: &str, labels: Value, rs: &str, uid: &str) -> Value {
    let mut p = pod(name, json!({}));
    p["metadata"]["labels"] = labels;
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
        "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    p
}

/// A daemon pod as the DaemonSet controller makes it: pinned by `matchFields metadata.name`.
fn daemon_pod(name: &str, node: &str, tolerate_unschedulable: bool) -> Value {
    let mut extra = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}});
    if tolerate_unschedulable {
        extra["tolerations"] =
            json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]);
    }
    pod(name, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_pods_pinned_by_match_fields_bind_to_their_node_even_cordoned_when_tolerated() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    for i in 0..3 {
        fake_node(&client, &format!("worker{i}"), json!({}), "4", "8Gi", "110").await;
    }
    let cordon = json!({"spec": {"unschedulable": true}});
    Api::<Node>::all(client.clone())
        .patch("worker2", &PatchParams::default(), &Patch::Merge(&cordon))
        .await
        .unwrap();
    let sched = start_scheduler(&client);
    for i in 0..3 {
        create_pod(&client, "default", daemon_pod(&format!("ds-{i}"), &format!("worker{i}"), true)).await;
    }
    for i in 0..3 {
        assert_eq!(bound_to(&client, &format!("ds-{i}")).await, format!("worker{i}"));
    }
    // Without the toleration the cordoned node refuses it (NodeUnschedulable), and the other two
    // do not match its node affinity.
    create_pod(&client, "default", daemon_pod("ds-intolerant", "worker2", false)).await;
    let msg = eventually("ds-intolerant unschedulable", || async {
        let p = get_pod(&client, "default", "ds-intolerant").await?;
        condition(&p, "PodScheduled").filter(|c| c.0 == "False")?.2
    })
    .await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_replicasets_pods_spreads_by_the_default_constraints() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    // The hostname label, as a kubelet sets it: the default constraint spreads by it (nodes
    // without it are not spread, as upstream).
    for i in 0..3 {
        let name = format!("worker{i}");
        fake_node(&client, &name, json!({"kubernetes.io/hostname": name}), "4", "8Gi", "110").await;
    }
    // worker0 already holds four unrelated pods with requests: without the ReplicaSet's own
    // spreading, least-allocated alone would keep most new pods off it.
    for i in 0..4 {
        let mut p = pod(&format!("other-{i}"), json!({"nodeName": "worker0"}));
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m", "memory": "100Mi"}});
        create_pod(&client, "default", p).await;
    }
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), "default");
    let created = rs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 9,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let uid = created.metadata.uid.unwrap();
    let sched = start_scheduler(&client);
    // All nine at once: the scheduler must count the ones it has just assumed.
    for i in 0..9 {
        create_pod(&client, "default", owned(&format!("web-{i}"), json!({"app": "web"}), "web", &uid)).await;
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..9 {
        *counts.entry(bound_to(&client, &format!("web-{i}")).await).or_default() += 1;
    }
    // The hostname default (maxSkew 3, ScheduleAnyway, weight 2) outweighs least-allocated here:
    // 3 each.
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![3, 3, 3], "{counts:?}");
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_nodes_are_chosen_at_random() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    // So large that a dozen best-effort pods (100m, 200Mi each for scoring) leave every node's
    // least-allocated score at 99: each placement is a three-way tie.
    for i in 0..3 {
        fake_node(&client, &format!("big{i}"), json!({}), "1000", "4Ti", "110").await;
    }
    let sched = start_scheduler(&client);
    let mut chosen = BTreeSet::new();
    for i in 0..12 {
        create_pod(&client, "default", pod(&format!("solo-{i}"), json!({}))).await;
        chosen.insert(bound_to(&client, &format!("solo-{i}")).await);
    }
    // Deterministic tie-breaking would put all twelve on one node (chance of that at random:
    // 3 × 3^-12).
    assert!(chosen.len() >= 2, "all on {chosen:?}");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 12);
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_with_requests_prefer_the_least_allocated_node_and_prefer_no_schedule_is_avoided() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    for i in 0..3 {
        fake_node(&client, &format!("worker{i}"), json!({}), "4", "8Gi", "110").await;
    }
    let hog = |name: &str, node: &str, cpu: &str| {
        let mut p = pod(name, json!({"nodeName": node}));
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu, "memory": "1Gi"}});
        p
    };
    create_pod(&client, "default", hog("hog0", "worker0", "3")).await;
    create_pod(&client, "default", hog("hog1", "worker1", "1")).await;
    let sched = start_scheduler(&client);
    let wants = |name: &str, tolerate: bool| {
        let mut p = pod(name, json!({}));
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "500m", "memory": "512Mi"}});
        if tolerate {
            p["spec"]["tolerations"] =
                json!([{"key": "maintenance", "operator": "Exists", "effect": "PreferNoSchedule"}]);
        }
        p
    };
    create_pod(&client, "default", wants("first", false)).await;
    assert_eq!(bound_to(&client, "first").await, "worker2", "the emptiest node");
    sched.stop().await;

    // A PreferNoSchedule taint (TaintToleration, weight 3) outweighs the resource scores.
    let taint =
        json!({"spec": {"taints": [{"key": "maintenance", "value": "soon", "effect": "PreferNoSchedule"}]}});
    Api::<Node>::all(client.clone())
        .patch("worker2", &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    let sched = start_scheduler(&client);
    create_pod(&client, "default", wants("second", false)).await;
    assert_eq!(
        bound_to(&client, "second").await,
        "worker1",
        "worker2 is tainted, worker1 is emptier than worker0"
    );
    // A pod tolerating it goes back to the emptiest node.
    create_pod(&client, "default", wants("third", true)).await;
    assert_eq!(bound_to(&client, "third").await, "worker2");
    sched.stop().await;
    cluster.shutdown().await;
}
