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

/// exec through the node's `streams::Runtime`: a command with stdin and an exit code in the
/// container's sandbox (it sees the files the main process wrote), and upstream's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_in_the_containers_sandbox() {
    use nodes::kubelet::streams::{Runtime, Stdio, StreamError};
    use tokio::io::AsyncReadExt;
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let containers = nodes::runtime::registry::Containers::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = node_config("worker0", nodes::default_node_ip(0));
    // The node reads its pods from a shared informer of every bound pod, as in `kplane up`.
    let pods = nodes::PodInformer::start(client.clone(), None);
    let node = tokio::spawn(nodes::kubelet::run_node_with(
        client.clone(),
        cfg,
        containers.clone(),
        pods,
        async move {
            let _ = stop_rx.await;
        },
    ));
    eventually("node registered", || async {
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).get_opt("worker0").await.ok().flatten()
    })
    .await;
    set_pod_cidr(&client, "worker0", "127.250.43.0/24").await;
    let spec = json!({"containers": [{"name": "main", "image": "busybox",
        "command": ["sh", "-c", "echo state > /tmp/s; sleep 3600"]}]});
    create_pod(&client, "default", on("worker0", "shell", spec)).await;
    in_phase(&client, "shell", "Running").await;
    let rt: std::sync::Arc<dyn Runtime> = containers.clone();
    let (mut out_r, out_w) = tokio::io::duplex(4096);
    let (mut err_r, err_w) = tokio::io::duplex(4096);
    let io = Stdio {
        stdin: Some(Box::new(&b"from stdin\n"[..])),
        stdout: Some(Box::new(out_w)),
        stderr: Some(Box::new(err_w)),
        tty: false,
        resize: None,
    };
    let argv = ["sh", "-c", "cat /tmp/s; cat; hostname; nosuch; exit 5"].map(String::from).to_vec();
    let code = rt.exec("default", "shell", "main", argv, io).await.unwrap();
    assert_eq!(code, 5);
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).await.unwrap();
    err_r.read_to_string(&mut err).await.unwrap();
    assert_eq!(out, "state\nfrom stdin\nshell\n");
    assert_eq!(err, "sh: nosuch: not found\n");
    let none = || Stdio { stdin: None, stdout: None, stderr: None, tty: false, resize: None };
    let e = rt.exec("default", "shell", "nope", vec!["true".into()], none()).await.unwrap_err();
    assert_eq!(e.to_string(), "container nope is not valid for pod shell");
    let e = rt.exec("default", "ghost", "main", vec!["true".into()], none()).await.unwrap_err();
    assert_eq!(e, StreamError::PodNotFound("ghost".into()));
    assert!(rt.pod_ip("default", "shell").unwrap().to_string().starts_with("127.250.43."));
    // A container that has exited: not running.
    let spec = json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]});
    create_pod(&client, "default", on("worker0", "done", spec)).await;
    in_phase(&client, "done", "Succeeded").await;
    let e = rt.exec("default", "done", "main", vec!["true".into()], none()).await.unwrap_err();
    assert_eq!(e, StreamError::NotRunning("main".into()));
    let _ = stop_tx.send(());
    let _ = node.await;
    cluster.shutdown().await;
}

/// (ready, not ready) addresses of Endpoints `name`.
async fn endpoint_ips(client: &kube::Client, name: &str) -> Option<(Vec<String>, Vec<String>)> {
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints};
    let eps = Api::<Endpoints>::namespaced(client.clone(), "default").get_opt(name).await.ok()??;
    let subsets = eps.subsets.unwrap_or_default();
    let ips = |f: fn(&EndpointSubset) -> Option<&Vec<EndpointAddress>>| {
        subsets.iter().filter_map(f).flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
    };
    Some((ips(|s| s.addresses.as_ref()), ips(|s| s.not_ready_addresses.as_ref())))
}

/// The first container's status once it has a `lastState.terminated` (it was killed or exited and
/// was restarted).
async fn killed(client: &kube::Client, pod: &str, what: &str) -> k8s_openapi::api::core::v1::ContainerStatus {
    eventually(what, || async {
        let p = get_pod(client, "default", pod).await?;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).is_some().then_some(cs)
    })
    .await
}

/// A readiness probe that starts failing makes the pod unready and moves it to the Endpoints'
/// notReadyAddresses; a failing liveness probe restarts the container (exit 137).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_drive_readiness_endpoints_and_restarts() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.44.0/24").await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = controller_manager::Config {
        leader_elect: false,
        controllers: vec!["endpoint".into()],
        ..controller_manager::Config::default()
    };
    tokio::spawn(controller_manager::run(client.clone(), cfg, async move {
        let _ = stop_rx.await;
    }));
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probed"},
        "spec": {"selector": {"app": "probed"}, "ports": [{"port": 80, "targetPort": 80}]}});
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &serde_json::from_value(svc).unwrap())
        .await
        .unwrap();
    let mut p = on(
        "worker0",
        "probed",
        json!({"containers": [{"name": "main", "image": "busybox",
        "command": ["sh", "-c", "touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 3600"],
        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}}]}),
    );
    p["metadata"]["labels"] = json!({"app": "probed"});
    create_pod(&client, "default", p).await;
    let ip = eventually("ready and in the endpoints", || async {
        let p = get_pod(&client, "default", "probed").await?;
        let ip = p.status.as_ref()?.pod_ip.clone()?;
        let (ready, _) = endpoint_ips(&client, "probed").await?;
        (condition(&p, "Ready").map(|c| c.0).as_deref() == Some("True") && ready == vec![ip.clone()])
            .then_some(ip)
    })
    .await;
    eventually("unready and moved to notReadyAddresses", || async {
        let p = get_pod(&client, "default", "probed").await?;
        let (ready, not_ready) = endpoint_ips(&client, "probed").await?;
        (condition(&p, "Ready").map(|c| c.0).as_deref() == Some("False")
            && ready.is_empty()
            && not_ready == vec![ip.clone()])
        .then_some(())
    })
    .await;
    assert_eq!(phase_of(&get_pod(&client, "default", "probed").await.unwrap()), "Running");

    let spec = json!({"containers": [{"name": "main", "image": "busybox",
        "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600"],
        "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}}]});
    create_pod(&client, "default", on("worker0", "lively", spec)).await;
    let cs = killed(&client, "lively", "killed by its liveness probe").await;
    assert_eq!(cs.last_state.and_then(|s| s.terminated).unwrap().exit_code, 137);

    // A startup probe: `started` stays false and the readiness probe is held back until it
    // succeeds (the file appears after 2 s); then started, then ready.
    let spec = json!({"containers": [{"name": "main", "image": "busybox",
        "command": ["sh", "-c", "sleep 2; touch /tmp/up; sleep 3600"],
        "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/up"]}, "periodSeconds": 1, "failureThreshold": 30},
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]});
    create_pod(&client, "default", on("worker0", "slow-start", spec)).await;
    let started = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map(|c| (c.started == Some(true), c.ready))
    };
    let early = eventually("running, not yet started", || async {
        let p = get_pod(&client, "default", "slow-start").await?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    assert_eq!(started(&early), Some((false, false)), "{:?}", early.status);
    eventually("started, then ready", || async {
        let p = get_pod(&client, "default", "slow-start").await?;
        (started(&p) == Some((true, true))).then_some(())
    })
    .await;

    // A startup probe that never succeeds kills the container (137), as upstream's does.
    let spec = json!({"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"],
        "startupProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}}]});
    create_pod(&client, "default", on("worker0", "never-up", spec)).await;
    let cs = killed(&client, "never-up", "killed by its startup probe").await;
    assert_eq!(cs.last_state.and_then(|s| s.terminated).unwrap().exit_code, 137);
    assert_eq!(cs.started, Some(false));
    let _ = stop_tx.send(());
    node.stop().await;
    cluster.shutdown().await;
}
