//! The controller-manager and the simulated nodes together, driven by the real kubectl: deployments
//! roll out to Running pods that answer HTTP, services get Endpoints and EndpointSlices, deletion
//! cascades, unschedulable pods wait, failed nodes lose their pods, and leadership fails over.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

fn json(kp: &Kplane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&all)).unwrap()
}

fn items(kp: &Kplane, args: &[&str]) -> Vec<Value> {
    json(kp, args)["items"].as_array().cloned().unwrap_or_default()
}

fn running_pods(kp: &Kplane, selector: &str) -> Vec<Value> {
    items(kp, &["get", "pods", "-l", selector])
        .into_iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Ready, and without the node-condition taints the lifecycle controller lifts once it sees Ready:
/// a node the scheduler will use.
fn schedulable(n: &Value) -> bool {
    let tainted = n["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| t["key"].as_str().is_some_and(|k| k.starts_with("node.kubernetes.io/")))
    });
    ready(n) && !tainted
}

fn name(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// One HTTP/1.1 GET over a plain socket (loopback only); returns the whole response text.
fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&format!("{ip}:{port}").parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn endpoint_ips(kp: &Kplane, svc: &str) -> Vec<String> {
    let ep = json(kp, &["get", "endpoints", svc]);
    let mut ips: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

fn slice_ips(kp: &Kplane, svc: &str) -> Vec<String> {
    let mut ips: Vec<String> =
        items(kp, &["get", "endpointslices", "-l", &format!("kubernetes.io/service-name={svc}")])
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
            .collect();
    ips.sort();
    ips
}

fn pod_ips(pods: &[Value]) -> Vec<String> {
    let mut ips: Vec<String> =
        pods.iter().filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string)).collect();
    ips.sort();
    ips
}

fn up(extra: &[&str]) -> (Kplane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_with(dir.path(), free_port(), extra);
    (kp, dir)
}

#[test]
fn nodes_register_ready_and_components_report_healthy() {
    let (kp, _dir) = up(&[]);
    let nodes = eventually(30, "3 Ready nodes", || {
        let nodes = items(&kp, &["get", "nodes"]);
        let ready = nodes.iter().filter(|n| ready(n) && n["spec"]["podCIDR"].is_string()).count();
        (ready == 3).then_some(nodes)
    });
    let mut names: Vec<String> = nodes.iter().map(name).collect();
    names.sort();
    assert_eq!(names, ["worker0", "worker1", "worker2"]);
    let mut cidrs: Vec<&str> = nodes.iter().filter_map(|n| n["spec"]["podCIDR"].as_str()).collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "distinct podCIDRs: {cidrs:?}");
    for n in &nodes {
        let ip = n["status"]["addresses"][0]["address"].as_str().unwrap();
        assert!(ip.starts_with("127."), "{ip}");
        assert_eq!(n["status"]["allocatable"]["pods"], "110");
        assert!(n["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap().starts_with("v1.33"));
    }
    let wide = kp.kubectl_ok(&["get", "nodes"]);
    assert_eq!(wide.matches(" Ready ").count(), 3, "{wide}");
    eventually(30, "componentstatuses all Healthy", || {
        let cs = kp.kubectl_ok(&["get", "componentstatuses"]);
        (cs.matches("Healthy").count() == 3 && !cs.contains("Unhealthy")).then_some(())
    });
    // Node leases are renewed in kube-node-lease.
    let leases = kp.kubectl_ok(&["get", "leases", "-n", "kube-node-lease", "-o", "name"]);
    assert_eq!(leases.lines().count(), 3, "{leases}");
}

#[test]
fn deployment_rolls_out_to_pods_that_answer_and_cascades_away() {
    let (kp, _dir) = up(&[]);
    let etcd = kp.endpoint();
    kp.kubectl_ok(&["create", "deployment", "nginx", "--image=nginx", "--replicas=2", "--port=80"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
    let pods = running_pods(&kp, "app=nginx");
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_ne!(pods[0]["spec"]["nodeName"], pods[1]["spec"]["nodeName"], "spread across nodes");
    let rs = items(&kp, &["get", "rs", "-l", "app=nginx"]);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0]["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs[0]["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let hash = rs[0]["metadata"]["labels"]["pod-template-hash"].as_str().unwrap().to_string();
    for p in &pods {
        assert_eq!(p["metadata"]["ownerReferences"][0]["name"], rs[0]["metadata"]["name"]);
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        assert!(ready(p));
        let stored = kp.etcd_get(&etcd, &format!("/registry/pods/default/{}", name(p))).expect("pod key");
        assert_eq!(stored["status"]["podIP"], p["status"]["podIP"]);
    }
    assert!(kp.etcd_get(&etcd, "/registry/deployments/default/nginx").is_some());
    assert!(kp.etcd_get(&etcd, &format!("/registry/replicasets/default/{}", name(&rs[0]))).is_some());
    let d = json(&kp, &["get", "deployment", "nginx"]);
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);

    // The pods answer HTTP on their own IPs, and kubectl logs shows the request.
    let pod = &pods[0];
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let answer = http_get(ip, 80, "/hello").expect("the pod answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&name(pod)), "the answer names the pod: {answer}");
    let logs = eventually(10, "the request in kubectl logs", || {
        let logs = kp.kubectl_ok(&["logs", &name(pod)]);
        logs.contains("/hello").then_some(logs)
    });
    assert!(logs.contains("GET"), "{logs}");

    // expose: Endpoints and EndpointSlices list both pod IPs.
    kp.kubectl_ok(&["expose", "deployment", "nginx", "--port=8080", "--target-port=80", "--name=nginx-svc"]);
    let want = pod_ips(&pods);
    eventually(10, "Endpoints with both pods", || (endpoint_ips(&kp, "nginx-svc") == want).then_some(()));
    eventually(10, "an EndpointSlice with both pods", || (slice_ips(&kp, "nginx-svc") == want).then_some(()));
    let describe = kp.kubectl_ok(&["describe", "svc", "nginx-svc"]);
    for ip in &want {
        assert!(describe.contains(ip.as_str()), "describe svc shows {ip}:\n{describe}");
    }
    let ep_key = kp.etcd_get(&etcd, "/registry/services/endpoints/default/nginx-svc").expect("endpoints key");
    assert_eq!(ep_key["subsets"][0]["ports"][0]["port"], 80);

    // A pod deleted by hand is replaced.
    kp.kubectl_ok(&["delete", "pod", &name(pod), "--wait=false"]);
    eventually(30, "a replacement pod", || {
        let now = running_pods(&kp, "app=nginx");
        (now.len() == 2 && now.iter().all(|p| name(p) != name(pod)) && now.iter().all(ready)).then_some(())
    });

    // A new image rolls out; rollout undo brings the old one back.
    kp.kubectl_ok(&["set", "image", "deployment/nginx", "nginx=nginx:1.27"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
    let images: Vec<Value> =
        running_pods(&kp, "app=nginx").iter().map(|p| p["spec"]["containers"][0]["image"].clone()).collect();
    assert_eq!(images, ["nginx:1.27", "nginx:1.27"]);
    assert_eq!(items(&kp, &["get", "rs", "-l", "app=nginx"]).len(), 2, "the old RS is kept for undo");
    kp.kubectl_ok(&["rollout", "undo", "deployment/nginx"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
    let d = json(&kp, &["get", "deployment", "nginx"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    let rs_now = items(&kp, &["get", "rs", "-l", "app=nginx"]);
    assert!(
        rs_now.iter().any(|r| name(r) == name(&rs[0]) && r["spec"]["replicas"] == 2),
        "the first RS is reused"
    );

    // Scale to zero and back.
    kp.kubectl_ok(&["scale", "deployment/nginx", "--replicas=0"]);
    eventually(30, "no pods", || items(&kp, &["get", "pods", "-l", "app=nginx"]).is_empty().then_some(()));
    eventually(10, "empty endpoints", || endpoint_ips(&kp, "nginx-svc").is_empty().then_some(()));
    kp.kubectl_ok(&["scale", "deployment/nginx", "--replicas=2"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
    eventually(10, "endpoints back", || (endpoint_ips(&kp, "nginx-svc").len() == 2).then_some(()));

    // Deleting the deployment leaves no replica set and no pod behind.
    kp.kubectl_ok(&["delete", "deployment", "nginx"]);
    eventually(30, "no RS and no pods", || {
        (items(&kp, &["get", "rs"]).is_empty() && items(&kp, &["get", "pods"]).is_empty()).then_some(())
    });
    let keys = stdout(&common::etcdctl(&etcd, &["get", "/registry/", "--prefix", "--keys-only"]));
    assert!(!keys.contains("/registry/replicasets/default/"), "{keys}");
    assert!(!keys.contains("/registry/pods/default/"), "{keys}");
    // Events were recorded as upstream records them.
    let events = kp.kubectl_ok(&["get", "events"]);
    for reason in ["ScalingReplicaSet", "SuccessfulCreate", "Scheduled"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }
}

/// `up` runs the simulated nodes on a runtime of their own and the API's listener on another
/// (`cli.rs`, `SideRuntime`): pods come up and answer on the nodes' runtime, a client's GET and watch
/// are served on the API's, and SIGTERM with all of it running stops every runtime cleanly (exit
/// 0: no panic from a runtime dropped inside another, nothing left hanging).
#[test]
fn sigterm_with_pods_running_and_a_watch_open_stops_every_runtime_cleanly() {
    let (mut kp, _dir) = up(&[]);
    kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=80"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pods = running_pods(&kp, "app=web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let ip = pods[0]["status"]["podIP"].as_str().unwrap().to_string();
    let answer = http_get(&ip, 80, "/").expect("the pod answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(json(&kp, &["get", "deployment", "web"])["status"]["availableReplicas"], 3);
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kp.kubeconfig)
        .args(["get", "pods", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let mut first = [0u8; 4];
    watch.stdout.as_mut().unwrap().read_exact(&mut first).expect("the watch lists the pods");
    assert_eq!(&first, b"pod/");
    let status = kp.terminate();
    assert!(status.success(), "kplane exited with {status:?} on SIGTERM");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn replication_controller_from_yaml_as_in_the_seed() {
    let (kp, _dir) = up(&[]);
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: default-http-backend\nspec:\n  replicas: 2\n  selector:\n    app: default-http-backend\n  template:\n    metadata:\n      labels:\n        app: default-http-backend\n    spec:\n      containers:\n      - name: default-http-backend\n        image: gcr.io/google_containers/defaultbackend:1.0\n        ports:\n        - containerPort: 8080\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], rc);
    assert!(out.status.success(), "{}", stderr(&out));
    let pods = eventually(30, "2 Running RC pods", || {
        let p = running_pods(&kp, "app=default-http-backend");
        (p.len() == 2 && p.iter().all(ready)).then_some(p)
    });
    for p in &pods {
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicationController");
        assert!(name(p).starts_with("default-http-backend-"));
    }
    let stored =
        kp.etcd_get(&kp.endpoint(), "/registry/controllers/default/default-http-backend").expect("RC key");
    assert_eq!(stored["kind"], "ReplicationController");
    kp.kubectl_ok(&["expose", "rc", "default-http-backend", "--port=80", "--target-port=8080"]);
    let want = pod_ips(&pods);
    eventually(10, "RC endpoints", || (endpoint_ips(&kp, "default-http-backend") == want).then_some(()));
    let rc_status = json(&kp, &["get", "rc", "default-http-backend"]);
    assert_eq!(rc_status["status"]["readyReplicas"], 2);
}

#[test]
fn unschedulable_pod_waits_until_a_node_is_labelled() {
    let (kp, _dir) = up(&[]);
    eventually(30, "3 Ready nodes", || {
        (items(&kp, &["get", "nodes"]).iter().filter(|n| ready(n)).count() == 3).then_some(())
    });
    kp.kubectl_ok(&[
        "run",
        "picky",
        "--image=nginx",
        "--port=80",
        "--overrides",
        r#"{"spec":{"nodeSelector":{"disk":"ssd"}}}"#,
    ]);
    let events = eventually(15, "a FailedScheduling event", || {
        let ev = kp.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=picky"]);
        ev.contains("FailedScheduling").then_some(ev)
    });
    assert!(events.contains("0/3 nodes are available"), "{events}");
    let pod = json(&kp, &["get", "pod", "picky"]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["reason"] == "Unschedulable"));
    kp.kubectl_ok(&["label", "node", "worker1", "disk=ssd"]);
    let pod = eventually(30, "the pod runs on worker1", || {
        let p = json(&kp, &["get", "pod", "picky"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(pod["spec"]["nodeName"], "worker1");
    // Deleting it closes its listener.
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert!(http_get(&ip, 80, "/").is_ok(), "the running pod answers on its container port");
    kp.kubectl_ok(&["delete", "pod", "picky"]);
    eventually(15, "the pod's listener closed", || http_get(&ip, 80, "/").is_err().then_some(()));
}

#[test]
fn namespace_deletion_empties_it_and_cascades_follow_the_policy() {
    let (kp, _dir) = up(&[]);
    kp.kubectl_ok(&["create", "namespace", "team"]);
    eventually(10, "a default ServiceAccount", || {
        kp.kubectl(&["get", "serviceaccount", "default", "-n", "team"]).status.success().then_some(())
    });
    kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", "team"]);
    kp.kubectl_ok(&["create", "configmap", "cfg", "-n", "team", "--from-literal=a=b"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/web", "-n", "team", "--timeout=60s"]);
    kp.kubectl_ok(&["delete", "namespace", "team", "--timeout=60s"]);
    let out = kp.kubectl(&["get", "namespace", "team"]);
    assert!(!out.status.success() && stderr(&out).contains("NotFound"), "{}", stderr(&out));
    let keys = stdout(&common::etcdctl(&kp.endpoint(), &["get", "/registry/", "--prefix", "--keys-only"]));
    assert!(!keys.contains("/team/"), "nothing of team is left: {keys}");

    // --cascade=orphan leaves the replica set, without its ownerReference.
    kp.kubectl_ok(&["create", "deployment", "orphans", "--image=nginx", "--replicas=1"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/orphans", "--timeout=60s"]);
    kp.kubectl_ok(&["delete", "deployment", "orphans", "--cascade=orphan"]);
    let rs = eventually(15, "an orphaned RS", || {
        let rs = items(&kp, &["get", "rs", "-l", "app=orphans"]);
        (rs.len() == 1 && rs[0]["metadata"]["ownerReferences"].is_null()).then(|| rs[0].clone())
    });
    assert_eq!(running_pods(&kp, "app=orphans").len(), 1, "its pod stays");
    // Foreground: the deployment goes only after its dependents.
    kp.kubectl_ok(&["delete", "rs", &name(&rs)]);
    kp.kubectl_ok(&["create", "deployment", "fg", "--image=nginx", "--replicas=1"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/fg", "--timeout=60s"]);
    kp.kubectl_ok(&["delete", "deployment", "fg", "--cascade=foreground", "--timeout=60s"]);
    assert!(items(&kp, &["get", "rs", "-l", "app=fg"]).is_empty());
    assert!(items(&kp, &["get", "pods", "-l", "app=fg"]).is_empty());
}

/// A separate `kplane <args> --kubeconfig K` process, killed on drop.
struct Proc(Child);

impl Proc {
    fn start(args: &[&str], kubeconfig: &std::path::Path) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_kplane"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a kplane component");
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_stopped_node_loses_its_pods_to_the_others() {
    let (kp, _dir) = up(&[
        "--nodes",
        "0",
        "--node-monitor-grace-period",
        "3s",
        "--default-unreachable-toleration-seconds",
        "2",
        "--default-not-ready-toleration-seconds",
        "2",
    ]);
    // Leases of 2 s, renewed every 0.5 s: well inside the 3 s grace period while the node lives.
    let node = |name: &str, ip: &str| {
        let args = [
            "node",
            "--name",
            name,
            "--node-ip",
            ip,
            "--kubelet-port",
            "0",
            "--node-lease-duration-seconds",
            "2",
        ];
        Proc::start(&args, &kp.kubeconfig)
    };
    let _a = node("node-a", "127.0.20.1");
    let mut b = node("node-b", "127.0.20.2");
    eventually(30, "2 schedulable nodes", || {
        (items(&kp, &["get", "nodes"]).iter().filter(|n| schedulable(n)).count() == 2).then_some(())
    });
    kp.kubectl_ok(&["create", "deployment", "mover", "--image=nginx", "--replicas=2", "--port=80"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/mover", "--timeout=60s"]);
    let on_b = running_pods(&kp, "app=mover").iter().filter(|p| p["spec"]["nodeName"] == "node-b").count();
    assert_eq!(on_b, 1, "one pod per node");
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    let node = eventually(30, "node-b NotReady and tainted", || {
        let n = json(&kp, &["get", "node", "node-b"]);
        let tainted = n["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable"));
        tainted.then_some(n)
    });
    assert!(!ready(&node));
    eventually(60, "both pods Running on node-a", || {
        let pods = running_pods(&kp, "app=mover");
        (pods.len() == 2 && pods.iter().all(|p| p["spec"]["nodeName"] == "node-a" && ready(p))).then_some(())
    });
}

/// The controller-manager Lease's holder, if it has one.
fn lease_holder(kp: &Kplane) -> Option<String> {
    let jsonpath = "jsonpath={.spec.holderIdentity}";
    let out = kp.kubectl(&["get", "lease", "-n", "kube-system", "kube-controller-manager", "-o", jsonpath]);
    let holder = stdout(&out);
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

/// Leases of 4 s renewed every 0.5 s, lost 3 s after the last renewal: quick failovers.
const SHORT_LEASES: [&str; 6] = [
    "--leader-elect-lease-duration",
    "4s",
    "--leader-elect-renew-deadline",
    "3s",
    "--leader-elect-retry-period",
    "500ms",
];

#[test]
fn leadership_fails_over_between_two_controller_managers() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let flags: Vec<&str> = std::iter::once("controller-manager").chain(SHORT_LEASES).collect();
    let mut first = Some(Proc::start(&flags, &kp.kubeconfig));
    let holder = eventually(20, "a leader", || lease_holder(&kp));
    let _second = Proc::start(&flags, &kp.kubeconfig);
    // Exactly one controller-manager acts: a replica set gets exactly its replicas.
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: once\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: once}\n  template:\n    metadata:\n      labels: {app: once}\n    spec:\n      containers: [{name: c, image: nginx}]\n";
    assert!(kp.kubectl_stdin(&["create", "-f", "-"], rs).status.success());
    eventually(20, "3 pods", || (items(&kp, &["get", "pods", "-l", "app=once"]).len() == 3).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(items(&kp, &["get", "pods", "-l", "app=once"]).len(), 3, "never more than the replicas");
    // The leader dies; the other takes over within the lease duration and acts.
    drop(first.take());
    let next = eventually(20, "a new leader", || lease_holder(&kp).filter(|h| *h != holder));
    assert_ne!(next, holder);
    kp.kubectl_ok(&["scale", "rs", "once", "--replicas=4"]);
    eventually(20, "4 pods", || (items(&kp, &["get", "pods", "-l", "app=once"]).len() == 4).then_some(()));
    let cs = kp.kubectl_ok(&["get", "componentstatuses", "controller-manager"]);
    assert!(cs.contains("Healthy") && !cs.contains("Unhealthy"), "{cs}");
}

/// `leaseTransitions` of the Lease `kube-system/<name>`; None while it cannot be read.
fn lease_transitions(kp: &Kplane, name: &str) -> Option<i64> {
    let out = kp.kubectl(&["get", "lease", "-n", "kube-system", name, "-o", "json"]);
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["leaseTransitions"].as_i64()
}

/// Waits until the component holding `kube-system/<name>` leads a term after the one counted
/// `before` (each acquisition bumps `leaseTransitions`).
fn new_term(kp: &Kplane, name: &str, before: i64) {
    eventually(60, &format!("{name} leads a new term"), || {
        lease_transitions(kp, name).filter(|t| *t > before).map(|_| ())
    });
}

/// Issue 19: against a real etcd that becomes unreachable for longer than the renew deadline, the
/// controller-manager and the scheduler lose their leases, step down and campaign again; once etcd
/// is back they lead again, in the same process (it used to exit with "the scheduler lost its
/// leader lease", taking the API server with it).
#[test]
fn controllers_lead_again_after_etcd_is_unreachable_past_the_renew_deadline() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Our own etcd (never a shared one: this test kills it).
    let mut etcd =
        rt.block_on(store::etcd_process::EtcdProcess::start()).expect("start a real etcd (etcd-server)");
    let dir = tempfile::tempdir().unwrap();
    let endpoint = etcd.endpoint();
    let mut flags = vec!["--etcd-servers", &endpoint, "--nodes", "1", "--no-networking"];
    flags.extend(SHORT_LEASES);
    let mut kp = Kplane::start_with(dir.path(), free_port(), &flags);
    let pid = kp.child.id();
    eventually(30, "a controller-manager leader", || lease_holder(&kp));
    kp.kubectl_ok(&["create", "deployment", "before", "--image=nginx", "--replicas=1"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/before", "--timeout=60s"]);
    let cm_before = lease_transitions(&kp, "kube-controller-manager").expect("controller-manager lease");
    let sched_before = lease_transitions(&kp, "kube-scheduler").expect("scheduler lease");

    // etcd goes away for twice the renew deadline: both leases are lost.
    etcd.kill9().unwrap();
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        assert!(kp.child.try_wait().unwrap().is_none(), "kplane exited while etcd was down");
        // The API server itself keeps answering what needs no store.
        let ping = kp.kubectl(&["get", "--raw", "/livez/ping", "--request-timeout=2s"]);
        assert!(ping.status.success(), "{}", stderr(&ping));
        std::thread::sleep(Duration::from_millis(500));
    }
    rt.block_on(etcd.restart()).expect("etcd restarts on its data dir");

    // Same process; the components campaigned again and lead a new term each.
    assert!(kp.child.try_wait().unwrap().is_none(), "kplane exited");
    assert_eq!(kp.child.id(), pid);
    new_term(&kp, "kube-controller-manager", cm_before);
    new_term(&kp, "kube-scheduler", sched_before);
    // Their new terms act: a Deployment created now gets its ReplicaSet and a scheduled, Running pod.
    kp.kubectl_ok(&["create", "deployment", "after", "--image=nginx", "--replicas=2"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/after", "--timeout=60s"]);
    let pods = running_pods(&kp, "app=after");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p["spec"]["nodeName"] == "worker0"), "scheduled");
    // Fresh caches made nothing twice.
    assert_eq!(running_pods(&kp, "app=before").len(), 1);
    assert_eq!(items(&kp, &["get", "rs", "-l", "app=after"]).len(), 1);
    assert!(kp.child.try_wait().unwrap().is_none());

    // Second outage, the nastier kind: etcd frozen (SIGSTOP), so requests hang instead of failing.
    // The leases are lost on time all the same (every renewal is bounded by the renew deadline).
    let cm_before = lease_transitions(&kp, "kube-controller-manager").expect("controller-manager lease");
    let frozen = Frozen::new(etcd_pid(&endpoint));
    std::thread::sleep(Duration::from_secs(6));
    assert!(kp.child.try_wait().unwrap().is_none(), "kplane exited while etcd was frozen");
    let ping = kp.kubectl(&["get", "--raw", "/livez/ping", "--request-timeout=2s"]);
    assert!(ping.status.success(), "{}", stderr(&ping));
    drop(frozen);
    new_term(&kp, "kube-controller-manager", cm_before);
    kp.kubectl_ok(&["scale", "deployment", "after", "--replicas=3"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/after", "--timeout=60s"]);
    assert_eq!(running_pods(&kp, "app=after").len(), 3);
    assert_eq!(kp.child.id(), pid);
    assert!(kp.child.try_wait().unwrap().is_none());
    // A clean stop still works (and releases the leases).
    assert!(kp.terminate().success());
}

/// The pid of the etcd serving `endpoint` (its own `--listen-client-urls`, so never another etcd).
fn etcd_pid(endpoint: &str) -> u32 {
    let flag = format!("--listen-client-urls={endpoint}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == flag.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no etcd process listening on {endpoint}"))
}

/// A process stopped with SIGSTOP, continued (SIGCONT) when dropped, panics included.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// Durations under which a leader could lose its lease unnoticed are refused before anything
/// starts, naming the flags (client-go's checks).
#[test]
fn leader_election_durations_that_cannot_work_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (lease, renew, retry, why) in [
        ("3s", "3s", "500ms", "leaseDuration must be greater than renewDeadline"),
        ("4s", "1s", "900ms", "renewDeadline must be greater than retryPeriod*JitterFactor"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .args(["--etcd-listen", &format!("127.0.0.1:{}", free_port()), "--secure-port", "0"])
            .args(["--leader-elect-lease-duration", lease, "--leader-elect-renew-deadline", renew])
            .args(["--leader-elect-retry-period", retry])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("--leader-elect-renew-deadline") && err.contains(why), "{err}");
        assert!(!stdout(&out).contains("kplane: ready"));
    }
}
