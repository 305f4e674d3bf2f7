//! `kplane xray route` on the seed's scenario, built with the real kubectl: an nginx deployment
//! behind the NodePort service nginx-svc, the default-http-backend ReplicationController from
//! YAML, and the foobar.com Ingress. X-ray must name the same hops the traffic really takes, with
//! each object's /registry key, and say plainly why traffic fails once there are no pods.

mod common;

use std::process::{Command, Output};

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

fn xray(kp: &Kplane, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kplane"))
        .arg("xray")
        .args(args)
        .env("KUBECONFIG", &kp.kubeconfig)
        .output()
        .expect("kplane xray runs")
}

fn xray_json(kp: &Kplane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = xray(kp, &all);
    assert!(out.status.success(), "xray {args:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn pods(kp: &Kplane, selector: &str) -> Vec<(String, String)> {
    let list: Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"])).unwrap();
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["status"]["podIP"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn route_follows_the_seeds_request_and_says_why_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    kp.seed_nginx();
    kp.seed_default_backend();
    let ing = kp.kubectl_stdin(&["create", "-f", "-"], common::SEED_INGRESS);
    assert!(ing.status.success(), "{}", stderr(&ing));
    let nginx = pods(&kp, "app=nginx");
    assert_eq!(nginx.len(), 2);
    eventually(20, "the default backend's pod running", || {
        (pods(&kp, "app=default-http-backend").iter().all(|(_, ip)| !ip.is_empty())).then_some(())
    });

    // foobar.com: the ingress rule, nginx-svc, both pods with their IPs and /registry keys.
    let doc = eventually(20, "a whole route for foobar.com", || {
        let doc = xray_json(&kp, &["route", "--host", "foobar.com"]);
        let ready =
            doc["route"]["service"]["pods"].as_array().is_some_and(|p| p.iter().all(|p| p["ready"] == true))
                && doc["route"]["entry"]["address"].is_string();
        (ready && doc["route"]["problems"].as_array().unwrap().is_empty()).then_some(doc)
    });
    let route = &doc["route"];
    assert_eq!(route["ingress"]["object"]["key"], "/registry/ingress/default/my-nginx-ingress");
    assert_eq!(route["ingress"]["rule"], "foobar.com / (Prefix)");
    assert!(route["ingress"]["reason"].as_str().unwrap().contains("matched exactly"), "{route}");
    assert_eq!(route["service"]["object"]["key"], "/registry/services/specs/default/nginx-svc");
    assert_eq!(route["service"]["type"], "NodePort");
    assert_eq!(
        route["service"]["endpoints"]["object"]["key"],
        "/registry/services/endpoints/default/nginx-svc"
    );
    let mut seen: Vec<(String, String)> = route["service"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["object"]["name"].as_str().unwrap().to_string(), p["ip"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    assert_eq!(seen, nginx);
    for p in route["service"]["pods"].as_array().unwrap() {
        let name = p["object"]["name"].as_str().unwrap();
        assert_eq!(p["object"]["key"], format!("/registry/pods/default/{name}"));
        assert_eq!(p["port"], 80, "targetPort 80 on {name}");
        // The kubelet wrote each pod's status last; managedFields say so.
        assert_eq!(p["object"]["writer"]["manager"], "kubelet", "{p}");
        // The revision is the key's etcd mod_revision, as etcdctl shows it.
        let etcd =
            common::etcdctl(&kp.endpoint(), &["get", &format!("/registry/pods/default/{name}"), "-w", "json"]);
        let kv: Value = serde_json::from_str(&stdout(&etcd)).unwrap();
        let rev = kv["kvs"][0]["mod_revision"].as_i64().unwrap();
        assert!(p["object"]["modRevision"].as_i64().unwrap() <= rev, "{p} vs etcd {rev}");
    }
    let slice_ips: Vec<&str> = route["service"]["slices"][0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    assert_eq!(slice_ips.len(), 2, "{route}");

    // The readable tree names the same things.
    let text = xray(&kp, &["route", "--host", "foobar.com"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    for want in [
        "Ingress",
        "default/my-nginx-ingress",
        "nginx-svc",
        &nginx[0].1,
        &nginx[1].1,
        "/registry/pods/default/",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(!text.contains("\x1b["), "no colour when stdout is not a terminal");

    // --probe really sends the request: through the ingress to an nginx pod, then to each pod.
    let probed = xray_json(&kp, &["route", "--host", "foobar.com", "--probe"]);
    let hops = probed["probe"]["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 3, "{probed}");
    assert_eq!(hops[0]["status"], 200, "{probed}");
    let by = probed["probe"]["answeredBy"].as_str().unwrap();
    assert!(nginx.iter().any(|(n, _)| n == by), "{by}");

    // Another host: the Ingress's spec.defaultBackend, the RC's service and its pod.
    let other = xray_json(&kp, &["route", "--host", "other.example", "--probe"]);
    assert!(other["route"]["ingress"]["reason"].as_str().unwrap().contains("spec.defaultBackend"), "{other}");
    assert_eq!(other["route"]["service"]["object"]["name"], "default-http-backend");
    let backend_pod = pods(&kp, "app=default-http-backend")[0].0.clone();
    assert_eq!(other["probe"]["answeredBy"], backend_pod.as_str());
    assert_eq!(other["probe"]["hops"][0]["status"], 404, "the seed's default backend answers 404: {other}");

    // The ClusterIP and NodePort as URLs.
    let svc: Value = serde_json::from_str(&kp.kubectl_ok(&["get", "svc", "nginx-svc", "-o", "json"])).unwrap();
    let vip = svc["spec"]["clusterIP"].as_str().unwrap();
    let by_url = xray_json(&kp, &["route", "--url", &format!("http://{vip}:8080/"), "--probe"]);
    assert_eq!(by_url["route"]["entry"]["listener"], "service proxy (ClusterIP)");
    // The default proxy mode, seen from the listener on the VIP.
    assert_eq!(by_url["route"]["entry"]["proxyMode"], "userspace", "{by_url}");
    assert_eq!(by_url["probe"]["hops"][0]["status"], 200, "{by_url}");
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let node_ip = by_url["route"]["service"]["ports"][0]["nodeListeners"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let by_np = xray_json(&kp, &["route", "--url", &format!("http://{node_ip}:{node_port}/"), "--probe"]);
    assert_eq!(by_np["route"]["entry"]["listener"], "service proxy (NodePort)");
    assert_eq!(by_np["route"]["entry"]["proxyMode"], "userspace", "{by_np}");
    assert_eq!(by_np["probe"]["hops"][0]["status"], 200, "{by_np}");

    // Scaled to zero: no pods, no ready endpoints, and the ingress would answer 503.
    kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=0"]);
    let gone = eventually(20, "the route to report no ready endpoints", || {
        let doc = xray_json(&kp, &["route", "--host", "foobar.com"]);
        let problems = doc["route"]["problems"].to_string();
        (problems.contains("no ready endpoints") && problems.contains("matches no pods")).then_some(doc)
    });
    let problems = gone["route"]["problems"].to_string();
    assert!(problems.contains("matches no pods"), "{problems}");
    assert!(problems.contains("503"), "{problems}");
    let text = stdout(&xray(&kp, &["route", "--host", "foobar.com"]));
    assert!(text.contains("traffic would fail"), "{text}");
}

#[test]
fn bad_input_gets_a_clear_message_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    for (args, want) in [
        (&["route", "--service", "nope"][..], "Service default/nope does not exist"),
        (&["route", "--url", "ht!tp://x"][..], "is not a URL"),
        (&["route", "--url", "http://host:99999/"][..], "is not a URL"),
        (&["route", "--url", "http://127.0.0.1:1/"][..], "is not a Service's ClusterIP port"),
        (&["route", "--host", "foobar.com", "--path", "no-slash"][..], "is not a URL path"),
        (&["route"][..], "required"),
    ] {
        let out = xray(&kp, args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {}", stdout(&out));
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A Service whose named targetPort no pod declares: the route says so, naming the pod.
    let objects = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\n  labels: {app: lonely}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    ports:\n    - {name: http, containerPort: 80}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: lonely\nspec:\n  selector: {app: lonely}\n  ports:\n  - {port: 80, targetPort: web}\n";
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], objects);
    assert!(out.status.success(), "{}", stderr(&out));
    let route = xray_json(&kp, &["route", "--service", "lonely"]);
    let problems = route["route"]["problems"].to_string();
    assert!(
        problems.contains(r#"targets the container port named \"web\", which pod lonely does not declare"#),
        "{problems}"
    );
    assert!(problems.contains("is ready"), "an unscheduled pod is not ready: {problems}");

    // A kubeconfig that points nowhere: an error, not a hang or a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["xray", "route", "--service", "x", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("kubeconfig"), "{}", stderr(&out));
}

/// `curl -si` to the ingress listener with a Host header (loopback only): the whole answer.
fn curl_host(listen: &str, host: &str) -> String {
    let out = Command::new("curl")
        .args(["-si", "--max-time", "5", "-H", &format!("Host: {host}"), &format!("http://{listen}/")])
        .output()
        .expect("curl runs");
    stdout(&out)
}

fn pod_of(answer: &str) -> Option<String> {
    answer.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-pod-name").then(|| v.trim().to_string())
    })
}

/// kplane's IngressClass is the cluster's default: `kubectl create ingress` without `--class` gets
/// `spec.ingressClassName: kplane` from the DefaultIngressClass admission and is served; another
/// class is not; the legacy annotation naming kplane is (and gets no class name); x-ray follows
/// the class-less Ingress instead of reporting the built-in 404.
#[test]
fn an_ingress_without_a_class_gets_the_default_class_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_port = free_port();
    let kp = Kplane::start(dir.path(), etcd_port);
    // The ingress controller creates its class as it starts, alongside the other components.
    let class: Value = eventually(30, "the default IngressClass", || {
        let out = kp.kubectl(&["get", "ingressclass", "kplane", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    });
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"], "true",
        "{class}"
    );
    // kubectl shows it as the default too.
    let listed = kp.kubectl_ok(&["get", "ingressclass"]);
    assert!(listed.contains("kplane"), "{listed}");
    kp.seed_nginx();
    let nginx = pods(&kp, "app=nginx");

    kp.kubectl_ok(&["create", "ingress", "x", "--rule=foo.example/*=nginx-svc:8080"]);
    kp.kubectl_ok(&["create", "ingress", "y", "--class=other", "--rule=bar.example/*=nginx-svc:8080"]);
    let legacy = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: legacy\n  annotations:\n    kubernetes.io/ingress.class: kplane\nspec:\n  rules:\n  - host: legacy.example\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: nginx-svc, port: {number: 8080}}}}\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], legacy);
    assert!(out.status.success(), "{}", stderr(&out));
    let get = |name: &str| -> Value {
        serde_json::from_str(&kp.kubectl_ok(&["get", "ingress", name, "-o", "json"])).unwrap()
    };
    assert_eq!(get("x")["spec"]["ingressClassName"], "kplane");
    assert_eq!(get("y")["spec"]["ingressClassName"], "other");
    assert!(get("legacy")["spec"]["ingressClassName"].is_null(), "the legacy annotation is not defaulted");

    let address = eventually(20, "the ingress address in x's status", || {
        get("x")["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().map(str::to_string)
    });
    let listen = format!("{address}:80");
    for host in ["foo.example", "legacy.example"] {
        let answer = eventually(20, &format!("{host} through the ingress"), || {
            Some(curl_host(&listen, host)).filter(|a| a.starts_with("HTTP/1.1 200"))
        });
        let by = pod_of(&answer).expect("a pod answered");
        assert!(nginx.iter().any(|(n, _)| *n == by), "{by} is not one of {nginx:?}");
    }
    let other = curl_host(&listen, "bar.example");
    assert!(other.starts_with("HTTP/1.1 404"), "another class's Ingress is not served: {other}");
    assert!(get("y")["status"]["loadBalancer"]["ingress"].is_null(), "another class's status is left alone");

    let doc = xray_json(&kp, &["route", "--host", "foo.example"]);
    assert_eq!(doc["route"]["ingress"]["object"]["key"], "/registry/ingress/default/x", "{doc}");
    assert_eq!(doc["route"]["service"]["object"]["name"], "nginx-svc", "{doc}");
    assert!(!doc["route"]["ingress"].to_string().contains("built-in"), "{doc}");
    // The other class's host is left to the built-in default backend.
    let theirs = xray_json(&kp, &["route", "--host", "bar.example"]);
    assert!(theirs["route"]["ingress"]["object"].is_null(), "{theirs}");
    assert!(theirs["route"]["ingress"]["reason"].as_str().unwrap().contains("built-in"), "{theirs}");

    // A class from an older kplane (no annotation) is marked default when kplane starts again,
    // by the ingress controller under its own RBAC role.
    kp.kubectl_ok(&["annotate", "ingressclass", "kplane", "ingressclass.kubernetes.io/is-default-class-"]);
    let class: Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "ingressclass", "kplane", "-o", "json"])).unwrap();
    assert!(class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"].is_null());
    let mut kp = kp;
    assert!(kp.terminate().success());
    let kp = Kplane::start(dir.path(), etcd_port);
    eventually(20, "the default mark restored", || {
        let class: Value =
            serde_json::from_str(&kp.kubectl_ok(&["get", "ingressclass", "kplane", "-o", "json"])).unwrap();
        (class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true")
            .then_some(())
    });
}
