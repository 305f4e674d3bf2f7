use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::helpers::*;

async fn pods_by_node(client: &kube::Client, prefix: &str) -> HashMap<String, usize> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut m = HashMap::new();
    for p in api.list(&ListParams::default()).await.unwrap().items {
        if p.metadata.name.as_deref().is_some_and(|n| n.starts_with(prefix)) {
            *m.entry(node_name_of(&p).unwrap_or_default()).or_default() += 1;
        }
    }
    m
}

async fn bound_to(client: &kube::Client, name: &str) -> String {
    eventually(&format!("{name} to be bound"), || async {
        get_pod(client, "default", name).await.and_then(|p| node_name_of(&p))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_owner_spread_across_nodes_and_get_a_scheduled_event() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    for i in 0..3 {
        fake_node(&client, &format!("worker{i}"), json!({}), "4", "8Gi", "110").await;
    }
    let sched = start_scheduler(&client);
    for i in 0..6 {
        create_pod(&client, "default", pod(&format!("web-{i}"), json!({})).tap_labels(json!({"app": "web"})))
            .await;
    }
    let counts = eventually("all bound", || async {
        let c = pods_by_node(&client, "web-").await;
        (!c.contains_key("") && c.values().sum::<usize>() == 6).then_some(c)
    })
    .await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 2), "{counts:?}");
    let node = bound_to(&client, "web-0").await;
    let ev = eventually("Scheduled event", || async {
        events_for(&client, "default", "web-0", "Scheduled").await.pop()
    })
    .await;
    assert_eq!(ev.message.as_deref(), Some(format!("Successfully assigned default/web-0 to {node}").as_str()));
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    let p = get_pod(&client, "default", "web-0").await.unwrap();
    assert_eq!(condition(&p, "PodScheduled").map(|c| c.0), Some("True".into()));
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_node_selector_stays_pending_then_schedules_when_a_node_gets_the_label() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    for i in 0..3 {
        fake_node(&client, &format!("worker{i}"), json!({}), "4", "8Gi", "110").await;
    }
    let sched = start_scheduler(&client);
    create_pod(&client, "default", pod("picky", json!({"nodeSelector": {"disk": "ssd"}}))).await;
    let (status, reason, message) = eventually("PodScheduled=False", || async {
        let p = get_pod(&client, "default", "picky").await?;
        condition(&p, "PodScheduled").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!((status.as_str(), reason.as_deref()), ("False", Some("Unschedulable")));
    assert_eq!(
        message.as_deref(),
        Some(
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        )
    );
    let ev = eventually("FailedScheduling", || async {
        events_for(&client, "default", "picky", "FailedScheduling").await.pop()
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message, message);
    let p = get_pod(&client, "default", "picky").await.unwrap();
    assert_eq!(node_name_of(&p), None);
    assert_eq!(phase_of(&p), "Pending");

    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {"disk": "ssd"}}});
    nodes.patch("worker1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(bound_to(&client, "picky").await, "worker1");
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_tolerations_unschedulable_affinity_and_resources_are_respected() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    fake_node(&client, "tainted", json!({"zone": "a"}), "4", "8Gi", "110").await;
    let taint = json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    nodes.patch("tainted", &PatchParams::default(), &Patch::Merge(&taint)).await.unwrap();
    fake_node(&client, "cordoned", json!({"zone": "b"}), "4", "8Gi", "110").await;
    nodes
        .patch("cordoned", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();
    fake_node(&client, "small", json!({"zone": "c"}), "1", "1Gi", "2").await;
    let sched = start_scheduler(&client);

    // No toleration: only "small" is possible.
    create_pod(&client, "default", pod("plain", json!({}))).await;
    assert_eq!(bound_to(&client, "plain").await, "small");
    // The toleration opens "tainted"; affinity to zone a picks it.
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}});
    create_pod(
        &client,
        "default",
        pod(
            "db",
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
                   "affinity": affinity}),
        ),
    )
    .await;
    assert_eq!(bound_to(&client, "db").await, "tainted");
    // Too big for "small", and nothing else is open to it.
    let big = json!({"containers": [{"name": "app", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "512Mi"}}}]});
    create_pod(&client, "default", pod("big", big)).await;
    let (_, _, message) = eventually("big unschedulable", || async {
        let p = get_pod(&client, "default", "big").await?;
        condition(&p, "PodScheduled").filter(|c| c.0 == "False")
    })
    .await;
    let message = message.unwrap();
    assert!(message.starts_with("0/3 nodes are available: 1 Insufficient cpu, "), "{message}");
    assert!(message.contains("1 node(s) had untolerated taint {dedicated: db}"), "{message}");
    assert!(message.contains("1 node(s) were unschedulable"), "{message}");
    // Pod count: "small" allows 2 pods, one is there; a second fits, a third does not.
    create_pod(&client, "default", pod("second", json!({}))).await;
    assert_eq!(bound_to(&client, "second").await, "small");
    create_pod(&client, "default", pod("third", json!({}))).await;
    let (_, _, message) = eventually("third unschedulable", || async {
        let p = get_pod(&client, "default", "third").await?;
        condition(&p, "PodScheduled").filter(|c| c.0 == "False")
    })
    .await;
    assert!(message.unwrap().contains("1 Too many pods"));
    // Uncordoning lets "big" and "third" in.
    nodes
        .patch("cordoned", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"unschedulable": false}})))
        .await
        .unwrap();
    assert_eq!(bound_to(&client, "big").await, "cordoned");
    assert_eq!(bound_to(&client, "third").await, "cordoned");
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_nodes_are_skipped_and_other_schedulers_pods_left_alone() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    fake_node(&client, "down", json!({}), "4", "8Gi", "110").await;
    let not_ready =
        json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}});
    nodes.patch_status("down", &PatchParams::default(), &Patch::Merge(&not_ready)).await.unwrap();
    fake_node(&client, "up", json!({}), "4", "8Gi", "110").await;
    let sched = start_scheduler(&client);
    for i in 0..4 {
        create_pod(&client, "default", pod(&format!("p{i}"), json!({}))).await;
    }
    create_pod(&client, "default", pod("other", json!({"schedulerName": "my-scheduler"}))).await;
    for i in 0..4 {
        assert_eq!(bound_to(&client, &format!("p{i}")).await, "up");
    }
    // The other scheduler's pod: never touched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = get_pod(&client, "default", "other").await.unwrap();
    assert_eq!(node_name_of(&other), None);
    assert_eq!(condition(&other, "PodScheduled"), None);
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pending_pods_bind_in_seconds() {
    let _heavy = HEAVY.lock().await;
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    for i in 0..10 {
        fake_node(&client, &format!("worker{i}"), json!({}), "64", "256Gi", "110").await;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let creates = (0..1000).map(|i| {
        let client = client.clone();
        async move {
            create_pod(
                &client,
                "default",
                pod(&format!("bulk-{i}"), json!({})).tap_labels(json!({"app": "bulk"})),
            )
            .await
        }
    });
    futures::stream::iter(creates).buffer_unordered(32).collect::<Vec<_>>().await;
    let started = Instant::now();
    let sched = start_scheduler(&client);
    // Polls only the unbound pods (a field selector), so that polling costs little next to binding.
    let unbound = ListParams::default().fields("spec.nodeName=");
    eventually_within("1000 pods bound", Duration::from_secs(60), || async {
        api.list_metadata(&unbound).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    let took = started.elapsed();
    let counts = pods_by_node(&client, "bulk-").await;
    eprintln!("1000 pods bound in {took:?}: {counts:?}");
    assert_eq!(counts.len(), 10);
    // Unowned best-effort pods are spread by least-allocated alone (100m/200Mi each for scoring),
    // whose integer score moves every few pods on a 64-cpu node; equal scores are broken at random
    // as upstream does, so the counts are even within a few pods.
    assert!(counts.values().all(|n| (92..=108).contains(n)), "spread evenly: {counts:?}");
    sched.stop().await;
    cluster.shutdown().await;
}

trait TapLabels {
    fn tap_labels(self, labels: serde_json::Value) -> Self;
}

impl TapLabels for serde_json::Value {
    fn tap_labels(mut self, labels: serde_json::Value) -> Self {
        self["metadata"]["labels"] = labels;
        self
    }
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_is_retried_at_once_when_its_spec_gains_a_toleration() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    fake_node(&client, "gpu", json!({}), "4", "8Gi", "110").await;
    let taint = json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}});
    nodes.patch("gpu", &PatchParams::default(), &Patch::Merge(&taint)).await.unwrap();
    // No periodic retry within the test: only the spec change can trigger it.
    let sched = start_scheduler_retrying_every(&client, Duration::from_secs(3600));
    create_pod(&client, "default", pod("job", json!({}))).await;
    eventually("unschedulable", || async {
        let p = get_pod(&client, "default", "job").await?;
        condition(&p, "PodScheduled").filter(|c| c.0 == "False")
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let toleration =
        json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}});
    pods.patch("job", &PatchParams::default(), &Patch::Merge(&toleration)).await.unwrap();
    assert_eq!(bound_to(&client, "job").await, "gpu");
    sched.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_is_no_longer_a_candidate() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    fake_node(&client, "stays", json!({}), "4", "8Gi", "110").await;
    fake_node(&client, "goes", json!({}), "4", "8Gi", "110").await;
    let sched = start_scheduler(&client);
    create_pod(&client, "default", pod("before", json!({}))).await;
    bound_to(&client, "before").await;
    Api::<Node>::all(client.clone()).delete("goes", &Default::default()).await.unwrap();
    // A probe shows when the scheduler has seen the deletion: it counts one node.
    create_pod(&client, "default", pod("probe", json!({"nodeSelector": {"none": "x"}}))).await;
    eventually("the scheduler to count one node", || async {
        let p = get_pod(&client, "default", "probe").await?;
        condition(&p, "PodScheduled")?.2.filter(|m| m.starts_with("0/1 nodes are available"))
    })
    .await;
    // Every new pod must land on "stays" (spreading alone would put some on the emptier node).
    for i in 0..4 {
        create_pod(&client, "default", pod(&format!("after-{i}"), json!({})).tap_labels(json!({"app": "a"})))
            .await;
    }
    for i in 0..4 {
        assert_eq!(bound_to(&client, &format!("after-{i}")).await, "stays");
    }
    sched.stop().await;
    cluster.shutdown().await;
}
