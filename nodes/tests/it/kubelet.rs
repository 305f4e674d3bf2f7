use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, EndpointAddress, EndpointSubset, Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

use crate::helpers::*;
use crate::registration::http_get;
use crate::traffic::kubelet_port;

/// A node with a podCIDR, and pods placed on it directly (spec.nodeName, no scheduler).
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

async fn running(client: &kube::Client, name: &str) -> Pod {
    eventually(&format!("{name} Running"), || async {
        get_pod(client, "default", name).await.filter(|p| phase_of(p) == "Running")
    })
    .await
}

pub fn pod_ip(p: &Pod) -> Ipv4Addr {
    p.status.as_ref().unwrap().pod_ip.as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pod_runs_with_an_ip_from_the_pod_cidr_and_every_condition() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.10.0/24").await;
    create_pod(&client, "default", on("worker0", "web", json!({}))).await;
    let p = running(&client, "web").await;
    let st = p.status.clone().unwrap();
    let ip = pod_ip(&p);
    assert_eq!(&ip.octets()[..3], &[127, 250, 10], "{ip}");
    assert_eq!(st.host_ip.as_deref(), Some(nodes::default_node_ip(0).to_string().as_str()));
    assert_eq!(st.pod_ips.unwrap()[0].ip, ip.to_string());
    assert!(st.start_time.is_some());
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    for t in ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        assert_eq!(condition(&p, t).map(|c| c.0), Some("True".to_string()), "{t}");
    }
    let cs = &st.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
    assert!(cs.container_id.as_deref().unwrap().starts_with("kplane-sim://"));
    assert_eq!(cs.image, "nginx:1.27");
    assert!(!cs.image_id.is_empty());
    assert!(cs.state.as_ref().unwrap().running.as_ref().unwrap().started_at.is_some());
    let started =
        eventually("Started event", || async { events_for(&client, "default", "web", "Started").await.pop() })
            .await;
    assert_eq!(started.message.as_deref(), Some("Started container app"));
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_initial_delay_holds_ready_back() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.11.0/24").await;
    let spec = json!({"containers": [{"name": "app", "image": "nginx",
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 2}}]});
    create_pod(&client, "default", on("worker0", "slow", spec)).await;
    let p = running(&client, "slow").await;
    let created = Instant::now();
    assert_eq!(
        condition(&p, "Ready").map(|c| (c.0, c.1)),
        Some(("False".into(), Some("ContainersNotReady".into())))
    );
    eventually("Ready", || async {
        let p = get_pod(&client, "default", "slow").await?;
        (condition(&p, "Ready")?.0 == "True").then_some(())
    })
    .await;
    assert!(created.elapsed() > Duration::from_millis(1000), "Ready came too early: {:?}", created.elapsed());
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion_removes_the_pod_after_the_capped_grace_and_frees_ip_and_port() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.12.0/24").await;
    let spec = json!({"terminationGracePeriodSeconds": 30,
        "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}]});
    create_pod(&client, "default", on("worker0", "old", spec.clone())).await;
    let ip = pod_ip(&running(&client, "old").await);
    assert!(http_get(ip, 8080, "/").await.starts_with("HTTP/1.1 200"));

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let asked = Instant::now();
    api.delete("old", &DeleteParams::default()).await.unwrap();
    // Terminating: listeners closed, containers terminated, the object still there.
    let p = eventually("containers terminated", || async {
        get_pod(&client, "default", "old").await.filter(|p| {
            let terminated =
                || p.status.as_ref()?.container_statuses.as_ref()?[0].state.as_ref()?.terminated.as_ref();
            terminated().is_some()
        })
    })
    .await;
    assert!(p.metadata.deletion_timestamp.is_some());
    assert!(tokio::net::TcpStream::connect((ip, 8080)).await.is_err(), "the listener must be closed");
    eventually("the pod to be gone", || async {
        get_pod(&client, "default", "old").await.is_none().then_some(())
    })
    .await;
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "grace capped at 300ms: {took:?}"
    );

    // The address and the port are free again: the next pod gets them and answers.
    create_pod(&client, "default", on("worker0", "new", spec)).await;
    let new_ip = pod_ip(&running(&client, "new").await);
    assert_eq!(new_ip, ip);
    let resp = http_get(ip, 8080, "/").await;
    assert!(resp.contains("pod: default/new"), "{resp}");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pods_run_quickly_and_never_share_an_ip() {
    let _heavy = HEAVY.lock().await;
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let mut cfg = node_config("worker0", nodes::default_node_ip(0));
    cfg.max_pods = 2000;
    let node = start_node(&client, cfg);
    set_pod_cidr(&client, "worker0", "127.250.16.0/22").await;
    let creates = (0..1000).map(|i| {
        let client = client.clone();
        async move { create_pod(&client, "default", on("worker0", &format!("many-{i}"), json!({}))).await }
    });
    futures::stream::iter(creates).buffer_unordered(32).collect::<Vec<_>>().await;
    let started = Instant::now();
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Polls only the pods not yet Running (a field selector), so that polling costs little.
    let not_running = ListParams::default().fields("status.phase!=Running");
    eventually_within("1000 pods Running", Duration::from_secs(90), || async {
        api.list_metadata(&not_running).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    eprintln!("1000 pods running in {:?}", started.elapsed());
    let pods = api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pods.len(), 1000);
    let ips: HashSet<Ipv4Addr> = pods.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 1000, "every pod has its own IP");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_keeps_its_pods_addresses() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.13.0/24").await;
    let spec = json!({"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}]});
    create_pod(&client, "default", on("worker0", "a", spec.clone())).await;
    let ip_a = pod_ip(&running(&client, "a").await);
    node.stop().await;
    assert!(
        tokio::net::TcpStream::connect((ip_a, 8080)).await.is_err(),
        "a stopped node's pods stop answering"
    );

    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    create_pod(&client, "default", on("worker0", "b", spec)).await;
    let ip_b = pod_ip(&running(&client, "b").await);
    assert_ne!(ip_a, ip_b, "nothing is persisted, yet a's address is not handed out again");
    eventually("a answers again", || async {
        tokio::net::TcpStream::connect((ip_a, 8080)).await.ok().map(|_| ())
    })
    .await;
    assert_eq!(pod_ip(&get_pod(&client, "default", "a").await.unwrap()), ip_a);
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_never_pods_with_simple_commands_complete() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.14.0/24").await;
    let ok = json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox", "command": ["echo", "hello"]}]});
    let bad = json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", "exit 3"]}]});
    create_pod(&client, "default", on("worker0", "ok", ok)).await;
    create_pod(&client, "default", on("worker0", "bad", bad)).await;
    let done = |name: &'static str, phase: &'static str| {
        let client = client.clone();
        async move {
            eventually(name, || async {
                get_pod(&client, "default", name).await.filter(|p| phase_of(p) == phase)
            })
            .await
        }
    };
    let p = done("ok", "Succeeded").await;
    let t = p.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let p = done("bad", "Failed").await;
    let t = p.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    // A completed pod is deleted at once when asked.
    Api::<Pod>::namespaced(client.clone(), "default").delete("ok", &DeleteParams::default()).await.unwrap();
    eventually("ok gone", || async { get_pod(&client, "default", "ok").await.is_none().then_some(()) }).await;
    node.stop().await;
    cluster.shutdown().await;
}

/// The state of a pod's first container, once `f` accepts it.
async fn first_container(
    client: &kube::Client,
    name: &str,
    what: &str,
    f: impl Fn(&ContainerStatus) -> bool,
) -> Pod {
    eventually(what, || async {
        get_pod(client, "default", name).await.filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .is_some_and(&f)
        })
    })
    .await
}

fn container(p: &Pod) -> ContainerStatus {
    p.status.clone().unwrap().container_statuses.unwrap()[0].clone()
}

/// The endpoints controller alone, stopped when the returned sender is dropped.
fn endpoints_controller(client: &kube::Client) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = controller_manager::Config {
        leader_elect: false,
        controllers: vec!["endpoint".into()],
        ..controller_manager::Config::default()
    };
    tokio::spawn(controller_manager::run(client.clone(), cfg, async move {
        let _ = rx.await;
    }));
    tx
}

/// A Service `name` selecting `app=<name>`, port 80 to `target`.
async fn create_service_for(client: &kube::Client, name: &str, target: u16) {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": target}]}});
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&kube::api::PostParams::default(), &serde_json::from_value(svc).unwrap())
        .await
        .unwrap();
}

/// (ready, not ready) addresses of Endpoints `name`.
async fn endpoint_ips(client: &kube::Client, name: &str) -> Option<(Vec<String>, Vec<String>)> {
    let eps = Api::<Endpoints>::namespaced(client.clone(), "default").get_opt(name).await.ok()??;
    let subsets = eps.subsets.unwrap_or_default();
    let ips = |f: fn(&EndpointSubset) -> Option<&Vec<EndpointAddress>>| {
        subsets.iter().filter_map(f).flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
    };
    Some((ips(|s| s.addresses.as_ref()), ips(|s| s.not_ready_addresses.as_ref())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_whose_port_is_taken_crashes_is_not_ready_and_leaves_the_endpoints() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let _cm = endpoints_controller(&client);
    // The node's first pod gets the range's first address (.2); something else holds its port,
    // as a privileged port does for a server without the privilege.
    let taken = std::net::TcpListener::bind("127.250.15.2:8080").expect("bind the port first");
    let node = ready_node(&client, "worker0", 0, "127.250.15.0/24").await;
    create_service_for(&client, "web", 8080).await;
    let mut spec = on(
        "worker0",
        "clash",
        json!({"containers": [
        {"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]}),
    );
    spec["metadata"]["labels"] = json!({"app": "web"});
    create_pod(&client, "default", spec).await;

    // The container exits with the bind error and waits to be restarted, as upstream's kubelet
    // reports a server that exits at once.
    let p = first_container(&client, "clash", "CrashLoopBackOff", |c| {
        c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
            == Some("CrashLoopBackOff")
    })
    .await;
    assert_eq!(pod_ip(&p), Ipv4Addr::new(127, 250, 15, 2));
    assert_eq!(phase_of(&p), "Running");
    let c = container(&p);
    assert!(!c.ready && c.started == Some(false), "{c:?}");
    assert_eq!(c.restart_count, 0);
    let waiting = c.state.unwrap().waiting.unwrap();
    assert!(waiting
        .message
        .as_deref()
        .unwrap()
        .starts_with("back-off 10s restarting failed container=web pod=clash_default("));
    let last = c.last_state.unwrap().terminated.expect("the failed run is lastState.terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let msg = last.message.unwrap_or_default();
    assert!(msg.contains("127.250.15.2:8080") && msg.contains("in use"), "{msg}");
    for cond in ["Ready", "ContainersReady"] {
        let (status, reason, _) = condition(&p, cond).unwrap();
        assert_eq!((status.as_str(), reason.as_deref()), ("False", Some("ContainersNotReady")), "{cond}");
    }
    let ev = eventually("BackOff", || async { events_for(&client, "default", "clash", "BackOff").await.pop() })
        .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev
        .message
        .as_deref()
        .unwrap()
        .starts_with("Back-off restarting failed container web in pod clash_default("));
    let log = http_get(
        nodes::default_node_ip(0),
        kubelet_port(&client, "worker0").await,
        "/containerLogs/default/clash/web",
    )
    .await;
    assert!(log.contains("127.250.15.2:8080"), "{log}");
    // Not Ready: the Endpoints list it as not ready, so no traffic goes to it.
    eventually("the pod listed as not ready", || async {
        let (ready, not_ready) = endpoint_ips(&client, "web").await?;
        (ready.is_empty() && not_ready == ["127.250.15.2"]).then_some(())
    })
    .await;

    // Once the port is free, the restart after the back-off succeeds.
    drop(taken);
    let p = first_container(&client, "clash", "restarted and running", |c| {
        c.state.as_ref().is_some_and(|s| s.running.is_some()) && c.ready
    })
    .await;
    let c = container(&p);
    assert_eq!(c.restart_count, 1);
    assert_eq!(c.last_state.unwrap().terminated.map(|t| t.exit_code), Some(1));
    assert_eq!(condition(&p, "Ready").unwrap().0, "True");
    assert!(http_get(pod_ip(&p), 8080, "/").await.starts_with("HTTP/1.1 200"));
    eventually("the pod listed as ready", || async {
        let (ready, _) = endpoint_ips(&client, "web").await?;
        (ready == ["127.250.15.2"]).then_some(())
    })
    .await;
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_cannot_bind_fails_a_pod_that_never_restarts() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let _taken = std::net::TcpListener::bind("127.250.19.2:9090").expect("bind the port first");
    let node = ready_node(&client, "worker0", 0, "127.250.19.0/24").await;
    let spec = json!({"restartPolicy": "Never", "containers": [
        {"name": "app", "image": "nginx", "ports": [{"containerPort": 9090}]}]});
    create_pod(&client, "default", on("worker0", "once", spec)).await;
    let p = eventually("Failed", || async {
        get_pod(&client, "default", "once").await.filter(|p| phase_of(p) == "Failed")
    })
    .await;
    let c = container(&p);
    assert!(!c.ready);
    let t = c.state.unwrap().terminated.expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (1, Some("Error")));
    assert!(t.message.unwrap_or_default().contains("127.250.19.2:9090"));
    assert_eq!(condition(&p, "Ready").unwrap().0, "False");
    let ev =
        eventually("Failed event", || async { events_for(&client, "default", "once", "Failed").await.pop() })
            .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.message.as_deref().unwrap().contains("127.250.19.2:9090"), "{ev:?}");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pod_cidr_is_reported_and_the_pod_starts_when_an_address_frees() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    // A /30 has one assignable address (.2): network .0, gateway .1, broadcast .3.
    let node = ready_node(&client, "worker0", 0, "127.250.17.0/30").await;
    create_pod(&client, "default", on("worker0", "first", json!({}))).await;
    assert_eq!(pod_ip(&running(&client, "first").await), Ipv4Addr::new(127, 250, 17, 2));
    create_pod(&client, "default", on("worker0", "second", json!({}))).await;
    let ev = eventually("FailedCreatePodSandBox", || async {
        events_for(&client, "default", "second", "FailedCreatePodSandBox").await.pop()
    })
    .await;
    assert!(ev.message.as_deref().unwrap().contains("no IP addresses available in range set: 127.250.17.0/30"));
    assert_ne!(phase_of(&get_pod(&client, "default", "second").await.unwrap()), "Running");
    Api::<Pod>::namespaced(client.clone(), "default").delete("first", &DeleteParams::default()).await.unwrap();
    assert_eq!(pod_ip(&running(&client, "second").await), Ipv4Addr::new(127, 250, 17, 2));
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_object_is_registered_again() {
    use k8s_openapi::api::core::v1::Node;
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = start_node(&client, node_config("worker0", nodes::default_node_ip(0)));
    let api: Api<Node> = Api::all(client.clone());
    let first = eventually("registration", || async { api.get_opt("worker0").await.unwrap() }).await;
    api.delete("worker0", &DeleteParams::default()).await.unwrap();
    let again = eventually("re-registration", || async {
        api.get_opt("worker0").await.unwrap().filter(|n| n.metadata.uid != first.metadata.uid)
    })
    .await;
    assert_eq!(again.metadata.labels.unwrap()["kubernetes.io/hostname"], "worker0");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_use_the_node_ip_and_start_before_the_pod_cidr() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    // A node IP of its own: this pod binds on it.
    let node_ip = nodes::default_node_ip(40);
    let node = start_node(&client, node_config("worker40", node_ip));
    let spec = json!({"hostNetwork": true, "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}]});
    create_pod(&client, "default", on("worker40", "hostnet", spec)).await;
    let p = running(&client, "hostnet").await;
    assert_eq!(pod_ip(&p), node_ip);
    assert!(http_get(node_ip, 8080, "/").await.contains("pod: default/hostnet"));
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_complete_before_the_pod_runs() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let node = ready_node(&client, "worker0", 0, "127.250.18.0/24").await;
    let spec = json!({"initContainers": [{"name": "setup", "image": "busybox", "command": ["sh", "-c", "echo setup done"]}],
                      "containers": [{"name": "app", "image": "nginx"}]});
    create_pod(&client, "default", on("worker0", "inited", spec)).await;
    let p = running(&client, "inited").await;
    assert_eq!(condition(&p, "Initialized").map(|c| c.0), Some("True".into()));
    let init = &p.status.as_ref().unwrap().init_container_statuses.as_ref().unwrap()[0];
    let t = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((init.name.as_str(), t.exit_code, t.reason.as_deref()), ("setup", 0, Some("Completed")));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let params = kube::api::LogParams { container: Some("setup".into()), ..Default::default() };
    let log = api.logs("inited", &params).await.unwrap();
    assert_eq!(log, "setup done\n", "the init container's command ran");
    node.stop().await;
    cluster.shutdown().await;
}

/// `kplane up`'s wiring: the kubelets of one process read their pods from one shared informer (one
/// watch of every bound pod, indexed by node) instead of a watch each. Each runs only its own pods,
/// a deletion reaches only the pod's node, and the index drops the pod once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_sharing_one_pod_informer_each_run_only_their_own_pods() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let client = cluster.client.clone();
    let informer = nodes::PodInformer::start(client.clone(), None);
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for (i, cidr) in [(0, "127.250.23.0/24"), (1, "127.250.24.0/24")] {
        let name = format!("worker{i}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = node_config(&name, nodes::default_node_ip(i));
        handles.push(tokio::spawn(nodes::run_node_shared(client.clone(), cfg, informer.clone(), async move {
            let _ = rx.await;
        })));
        stops.push(tx);
        set_pod_cidr(&client, &name, cidr).await;
    }
    create_pod(&client, "default", on("worker0", "a", json!({}))).await;
    create_pod(&client, "default", on("worker1", "b", json!({}))).await;
    // A pod nobody binds stays out of the index and is run by no one.
    create_pod(&client, "default", pod("unbound", json!({}))).await;
    let (a, b) = (running(&client, "a").await, running(&client, "b").await);
    assert_eq!(&pod_ip(&a).octets()[..3], &[127, 250, 23]);
    assert_eq!(&pod_ip(&b).octets()[..3], &[127, 250, 24]);
    assert_eq!(
        a.status.as_ref().unwrap().host_ip.as_deref(),
        Some(nodes::default_node_ip(0).to_string().as_str())
    );
    assert_eq!(
        b.status.as_ref().unwrap().host_ip.as_deref(),
        Some(nodes::default_node_ip(1).to_string().as_str())
    );
    assert_eq!(informer.len(), 2, "the index holds the two bound pods only");
    let unbound = get_pod(&client, "default", "unbound").await.unwrap();
    assert!(unbound.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Pending"));
    assert!(unbound.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_none());

    // worker0 finishes a's graceful deletion; b, on the other node, runs on.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("a deleted for good", || async {
        get_pod(&client, "default", "a").await.is_none().then_some(())
    })
    .await;
    eventually("the index drops a", || async { (informer.len() == 1).then_some(()) }).await;
    let b = get_pod(&client, "default", "b").await.unwrap();
    assert_eq!(phase_of(&b), "Running");
    assert!(b.metadata.deletion_timestamp.is_none());

    for tx in stops {
        let _ = tx.send(());
    }
    for h in handles {
        h.await.expect("node task").expect("node ran");
    }
    cluster.shutdown().await;
}
