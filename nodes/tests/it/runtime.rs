//! Containers that run their command in the sandboxed shell: exit codes in the status, logs,
//! restart policies and CrashLoopBackOff, init containers in order, the container's files and
//! environment.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, LogParams, PostParams};
use serde_json::json;

use crate::helpers::*;

async fn ready_node(client: &kube::Client, name: &str, index: usize, cidr: &str) -> RunningNode {
    let node = start_node(client, node_config(name, nodes::default_node_ip(index)));
    set_pod_cidr(client, name, cidr).await;
    node
}

fn on(node: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut p = pod(name, spec);
    p["spec"]["nodeName"] = json!(node);
    p
}

async fn in_phase(client: &kube::Client, name: &str, phase: &str) -> Pod {
    eventually(&format!("{name} {phase}"), || async {
        get_pod(client, "default", name).await.filter(|p| phase_of(p) == phase)
    })
    .await
}

async fn logs(client: &kube::Client, pod: &str, container: Option<&str>) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let params = LogParams { container: container.map(str::to_string), ..Default::default() };
    api.logs(pod, &params).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_the_pod_with_its_exit_code_and_output() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.40.0/24").await;
    let spec = json!({"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hi; exit 3"]}]});
    create_pod(&client, "default", on("worker0", "fails", spec)).await;
    let p = in_phase(&client, "fails", "Failed").await;
    let cs = p.status.clone().unwrap().container_statuses.unwrap()[0].clone();
    let t = cs.state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    assert_eq!(cs.restart_count, 0);
    assert_eq!(logs(&client, "fails", None).await, "hi\n");
    // A pod whose command runs to success completes.
    let spec = json!({"restartPolicy": "OnFailure", "containers": [
        {"name": "job", "image": "busybox", "command": ["sh", "-c", "for i in 1 2 3; do echo step $i; done"]}]});
    create_pod(&client, "default", on("worker0", "job", spec)).await;
    let p = in_phase(&client, "job", "Succeeded").await;
    let t = p.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(logs(&client, "job", None).await, "step 1\nstep 2\nstep 3\n");
    // An unknown program: the shell's message and 127.
    let spec = json!({"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "busybox", "command": ["python3", "app.py"]}]});
    create_pod(&client, "default", on("worker0", "noprog", spec)).await;
    let p = in_phase(&client, "noprog", "Failed").await;
    let t = p.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(t.exit_code, 127);
    assert_eq!(logs(&client, "noprog", None).await, "sh: python3: not found\n");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_command_loops_with_back_off_and_is_restarted() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.41.0/24").await;
    let spec = json!({"containers": [{"name": "crash", "image": "busybox", "command": ["sh", "-c", "echo boom; exit 2"]}]});
    create_pod(&client, "default", on("worker0", "crashy", spec)).await;
    let p = eventually("CrashLoopBackOff", || async {
        get_pod(&client, "default", "crashy").await.filter(|p| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).is_some_and(
                |c| {
                    c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
                },
            )
        })
    })
    .await;
    assert_eq!(phase_of(&p), "Running");
    let cs = p.status.unwrap().container_statuses.unwrap()[0].clone();
    let msg = cs.state.unwrap().waiting.unwrap().message.unwrap();
    assert!(msg.starts_with("back-off 10s restarting failed container=crash pod=crashy_default("), "{msg}");
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
    assert!(!cs.ready);
    // After the back-off it runs again (and fails again: 20 s next).
    let p = eventually_within("restarted", std::time::Duration::from_secs(30), || async {
        get_pod(&client, "default", "crashy").await.filter(|p| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).is_some_and(
                |c| {
                    c.restart_count == 1
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.message.as_deref())
                            .is_some_and(|m| m.starts_with("back-off 20s"))
                },
            )
        })
    })
    .await;
    assert_eq!(phase_of(&p), "Running");
    assert!(!events_for(&client, "default", "crashy", "BackOff").await.is_empty());
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_and_share_volumes_files_and_env() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.42.0/24").await;
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "settings"},
        "data": {"MODE": "fast", "app.conf": "level=3\n"}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&PostParams::default(), &cm).await.unwrap();
    let spec = json!({
        "restartPolicy": "Never",
        "volumes": [{"name": "work", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "settings"}}],
        "initContainers": [
            {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo first > /work/order"],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            {"name": "second", "image": "busybox", "command": ["sh", "-c", "sleep 0.3; echo second >> /work/order"],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
        "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "cat /work/order; cat /etc/config/app.conf; echo $MODE $GREETING $(hostname); cat /etc/resolv.conf; echo x > /etc/config/y || echo read-only"],
            "env": [{"name": "GREETING", "value": "hi-$(MODE)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "conf", "mountPath": "/etc/config"}]}]});
    create_pod(&client, "default", on("worker0", "ordered", spec)).await;
    // While the second init container runs, kubectl's STATUS is Init:1/2.
    let p = eventually("second init running", || async {
        get_pod(&client, "default", "ordered").await.filter(|p| {
            p.status.as_ref().and_then(|s| s.init_container_statuses.as_ref()).is_some_and(|i| {
                i.len() == 2
                    && i[0].state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0)
                    && i[1].state.as_ref().is_some_and(|s| s.running.is_some())
            })
        })
    })
    .await;
    assert_eq!(phase_of(&p), "Pending");
    assert_eq!(condition(&p, "Initialized").map(|c| c.0), Some("False".into()));
    let p = in_phase(&client, "ordered", "Succeeded").await;
    assert_eq!(condition(&p, "Initialized").map(|c| c.0), Some("True".into()));
    let out = logs(&client, "ordered", Some("main")).await;
    let expected = "first\nsecond\nlevel=3\nfast hi-fast ordered\n\
        search default.svc.cluster.local svc.cluster.local cluster.local\n";
    assert!(out.starts_with(expected), "{out}");
    assert!(out.contains("options ndots:5\n"), "{out}");
    assert!(out.ends_with("sh: can't create /etc/config/y: Read-only file system\nread-only\n"), "{out}");
    node.stop().await;
    cluster.shutdown().await;
}
