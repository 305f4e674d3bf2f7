//! The seed's request path on kplane, with the real kubectl, a plain HTTP client and the real `dig`:
//! a ClusterIP service reaches both pods through the service proxy, NodePorts answer on every node,
//! the cluster DNS resolves services (A, headless, SRV), and the ingress routes foobar.com to nginx
//! and everything else to its default backend. Traffic follows a deleted pod within a second.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

fn json(kp: &Kplane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&all)).unwrap()
}

/// One HTTP/1.1 request over a plain socket (loopback only); the whole response text.
fn http(addr: &str, host: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn pod_name_in(answer: &str) -> Option<String> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("X-Pod-Name: ").or_else(|| l.strip_prefix("x-pod-name: ")))
        .map(|s| s.trim().to_string())
}

/// Repeated requests to `addr` get 200s from each of `pods` (and no other), within `secs`.
fn answers_from_each(addr: &str, pods: &[String], secs: u64) {
    let mut seen = std::collections::BTreeSet::new();
    eventually(secs, "the VIP answering from each pod", || {
        if let Ok(answer) = http(addr, "nginx-svc", "/") {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            seen.extend(pod_name_in(&answer));
        }
        (seen.len() == pods.len()).then_some(())
    });
    let mut want = pods.to_vec();
    want.sort();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), want);
}

fn pod_names(kp: &Kplane, selector: &str) -> Vec<String> {
    json(kp, &["get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn dig(server: &str, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([&format!("@{server}"), "+short", "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("dig could not run ({e}); install dnsutils: these tests must not be skipped")
        });
    assert!(out.status.success(), "dig {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn up() -> (Kplane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_with(dir.path(), free_port(), &[]);
    (kp, dir)
}

#[test]
fn services_dns_nodeports_and_ingress_carry_the_seeds_traffic() {
    let (kp, _dir) = up();
    kp.kubectl_ok(&["create", "deployment", "nginx", "--image=nginx", "--replicas=2", "--port=80"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
    let pods = pod_names(&kp, "app=nginx");
    kp.kubectl_ok(&["expose", "deployment", "nginx", "--port=8080", "--target-port=80", "--name=nginx-svc"]);
    let vip = json(&kp, &["get", "svc", "nginx-svc"])["spec"]["clusterIP"].as_str().unwrap().to_string();

    // ClusterIP: repeated requests reach both pods.
    answers_from_each(&format!("{vip}:8080"), &pods, 10);

    // NodePort: on every node's address.
    kp.kubectl_ok(&["expose", "deployment", "nginx", "--port=80", "--type=NodePort", "--name=nginx-np"]);
    let np = json(&kp, &["get", "svc", "nginx-np"]);
    let node_port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    for node in json(&kp, &["get", "nodes"])["items"].as_array().unwrap() {
        let ip = node["status"]["addresses"][0]["address"].as_str().unwrap().to_string();
        let answer =
            eventually(10, "the NodePort answering", || http(&format!("{ip}:{node_port}"), "np", "/").ok());
        assert!(answer.starts_with("HTTP/1.1 200"), "{ip}:{node_port}: {answer}");
    }

    // DNS: the service's A record, a headless service's pod IPs, an SRV record for a named port.
    let dns = json(&kp, &["get", "svc", "-n", "kube-system", "kube-dns"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let a = eventually(10, "an A record", || {
        let a = dig(&dns, &["nginx-svc.default.svc.cluster.local"]);
        (a.trim() == vip).then_some(a)
    });
    assert_eq!(a.trim(), vip);
    // kube-dns has no selector (no pod serves DNS): the DNS component, as system:kube-dns,
    // publishes its own address as the Service's Endpoints and EndpointSlice.
    assert!(json(&kp, &["get", "svc", "-n", "kube-system", "kube-dns"])["spec"]["selector"].is_null());
    let published = eventually(10, "the kube-dns endpoints", || {
        let ep = json(&kp, &["get", "endpoints", "-n", "kube-system", "kube-dns"]);
        (ep["subsets"][0]["addresses"][0]["ip"] == dns.as_str()).then_some(ep)
    });
    let ports: Vec<i64> = published["subsets"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [53, 53], "{published}");
    let stored =
        kp.etcd_get(&kp.endpoint(), "/registry/services/endpoints/kube-system/kube-dns").expect("stored");
    assert_eq!(stored["subsets"][0]["addresses"][0]["ip"], dns.as_str(), "{stored}");
    let slice = kp
        .etcd_get(&kp.endpoint(), "/registry/endpointslices/kube-system/kube-dns")
        .expect("the kube-dns EndpointSlice is stored");
    assert_eq!(slice["endpoints"][0]["addresses"][0], dns.as_str(), "{slice}");
    let headless = "apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx-headless\nspec:\n  clusterIP: None\n  selector: {app: nginx}\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n";
    assert!(kp.kubectl_stdin(&["apply", "-f", "-"], headless).status.success());
    let pod_ips: Vec<String> = {
        let mut ips: Vec<String> = json(&kp, &["get", "pods", "-l", "app=nginx"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
            .collect();
        ips.sort();
        ips
    };
    eventually(10, "headless A records", || {
        let mut got: Vec<String> =
            dig(&dns, &["nginx-headless.default.svc.cluster.local"]).lines().map(str::to_string).collect();
        got.sort();
        (got == pod_ips).then_some(())
    });
    let srv = dig(&dns, &["SRV", "_http._tcp.nginx-headless.default.svc.cluster.local"]);
    assert!(srv.contains(" 80 "), "{srv}");
    let nx = Command::new("dig")
        .args([&format!("@{dns}"), "+time=2", "+tries=1", "nope.default.svc.cluster.local"])
        .output()
        .unwrap();
    assert!(stdout(&nx).contains("NXDOMAIN"), "{}", stdout(&nx));

    // Ingress, as in the seed: foobar.com goes to nginx; other hosts get the default backend's 404.
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: foobar\n  annotations:\n    kubernetes.io/ingress.class: kplane\nspec:\n  rules:\n  - host: foobar.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: nginx-svc\n            port: {number: 8080}\n";
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], ingress);
    assert!(out.status.success(), "{}", stderr(&out));
    let address = eventually(10, "the ingress address in its status", || {
        let ing = json(&kp, &["get", "ingress", "foobar"]);
        ing["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().map(str::to_string)
    });
    let listen = format!("{address}:80");
    let answer = eventually(10, "foobar.com through the ingress", || {
        http(&listen, "foobar.com", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    let by = pod_name_in(&answer).expect("an nginx pod answered");
    assert!(pods.contains(&by), "{by} is not one of {pods:?}");
    let other = http(&listen, "other.example", "/").unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(other.contains("default backend - 404"), "{other}");

    // The seed's default-http-backend: an RC created from YAML, exposed, and named as the
    // Ingress's default backend. Other hosts now reach its pod, which answers the seed's 404.
    kp.seed_default_backend();
    kp.kubectl_ok(&[
        "patch",
        "ingress",
        "foobar",
        "--type=merge",
        "-p",
        r#"{"spec":{"defaultBackend":{"service":{"name":"default-http-backend","port":{"number":80}}}}}"#,
    ]);
    let backend_pod = eventually(30, "the default backend's pod answering for other hosts", || {
        let a = http(&listen, "other.example", "/").ok()?;
        pod_name_in(&a).filter(|p| p.starts_with("default-http-backend-")).map(|p| (p, a))
    });
    assert!(backend_pod.1.starts_with("HTTP/1.1 404"), "{}", backend_pod.1);
    assert!(backend_pod.1.contains("default backend - 404"), "{}", backend_pod.1);
    let ok = http(&listen, "foobar.com", "/").unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "foobar.com still reaches nginx: {ok}");

    // Kill a pod: once its endpoint is gone, every request reaches the other pod.
    let victim = pods[0].clone();
    kp.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually(10, "the victim's endpoint removed", || {
        let ep = json(&kp, &["get", "endpoints", "nginx-svc"]);
        let names: Vec<&str> = ep["subsets"][0]["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["targetRef"]["name"].as_str()).collect())
            .unwrap_or_default();
        (!names.contains(&victim.as_str())).then_some(())
    });
    let removed = Instant::now();
    let mut after = Vec::new();
    while removed.elapsed() < Duration::from_secs(3) {
        match http(&format!("{vip}:8080"), "nginx-svc", "/") {
            Ok(a) => after.push((removed.elapsed(), pod_name_in(&a))),
            Err(e) => panic!("a request failed after the endpoint went: {e}"),
        }
    }
    let late: Vec<_> = after
        .iter()
        .filter(|(t, who)| *t > Duration::from_secs(1) && who.as_deref() == Some(victim.as_str()))
        .collect();
    assert!(late.is_empty(), "the deleted pod still got traffic a second later: {late:?}");
}

/// `curl` over HTTPS to the ingress for `host`, trusting only `ca`: (exit code, output).
fn curl_https(ingress_ip: &str, host: &str, ca: &std::path::Path) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:443:{ingress_ip}"), &format!("https://{host}/")])
        .output()
        .expect("curl runs (install curl: these tests must not be skipped)");
    (out.status.code().unwrap_or(-1), format!("{}{}", stdout(&out), stderr(&out)))
}

#[test]
fn ingress_terminates_tls_with_the_secret_chosen_by_sni() {
    let (kp, dir) = up();
    kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx", "--replicas=1", "--port=80"]);
    kp.kubectl_ok(&["expose", "deployment", "web", "--port=80"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Two hosts, each with its own self-signed certificate in a kubernetes.io/tls Secret made by
    // `kubectl create secret tls`.
    let mut cas = Vec::new();
    for host in ["foobar.com", "bar.example"] {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let (crt, key) = (dir.path().join(format!("{host}.crt")), dir.path().join(format!("{host}.key")));
        std::fs::write(&crt, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let secret = format!("{}-tls", host.replace('.', "-"));
        kp.kubectl_ok(&[
            "create",
            "secret",
            "tls",
            &secret,
            &format!("--cert={}", crt.display()),
            &format!("--key={}", key.display()),
        ]);
        let name = host.replace('.', "-");
        kp.kubectl_ok(&[
            "create",
            "ingress",
            &name,
            "--class=kplane",
            &format!("--rule={host}/*=web:80,tls={secret}"),
        ]);
        cas.push((host, crt));
    }
    let ingress_ip = eventually(10, "the ingress address", || {
        json(&kp, &["get", "ingress", "foobar-com"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    });
    for (host, ca) in &cas {
        // The right certificate for each name: curl trusts only that host's own.
        let (code, out) = eventually(10, "HTTPS through the ingress", || {
            let (code, out) = curl_https(&ingress_ip, host, ca);
            (code == 0).then_some((code, out))
        });
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("HTTP/1.1 200"), "{host}: {out}");
        assert!(pod_name_in(&out).is_some_and(|p| p.starts_with("web-")), "a web pod answers: {out}");
    }
    // The other host's certificate does not verify: the server chose by SNI.
    let (code, out) = curl_https(&ingress_ip, "bar.example", &cas[0].1);
    assert_ne!(code, 0, "bar.example verified with foobar.com's certificate: {out}");
}

#[test]
fn a_rolling_update_with_max_unavailable_zero_loses_no_request() {
    let (kp, _dir) = up();
    kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=80"]);
    kp.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxUnavailable":0,"maxSurge":1}}}}"#,
    ]);
    kp.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    kp.kubectl_ok(&["expose", "deployment", "web", "--port=8080", "--target-port=80"]);
    let vip = json(&kp, &["get", "svc", "web"])["spec"]["clusterIP"].as_str().unwrap().to_string();
    let target = format!("{vip}:8080");
    eventually(10, "the VIP answering", || http(&target, "web", "/").ok());

    // Steady requests while the image changes; every one must be answered by some pod.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http(&target, "web", "/") {
                    Ok(a) if a.starts_with("HTTP/1.1 200") => ok += 1,
                    Ok(a) => failed.push(a.lines().next().unwrap_or("").to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        })
    };
    kp.kubectl_ok(&["set", "image", "deployment/web", "nginx=nginx:1.27"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Let the old pods finish terminating under load too.
    eventually(30, "only the new pods left", || {
        let pods = json(&kp, &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2 && items.iter().all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.27"))
            .then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 50, "too few requests made it through the test ({ok})");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
}

#[test]
fn a_component_that_cannot_bind_does_not_take_the_cluster_down() {
    // Another process holds the ingress port: the ingress controller cannot start, says so, and
    // the rest of the cluster keeps serving.
    let taken = std::net::TcpListener::bind("127.0.99.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut kp = Kplane::start_with(dir.path(), free_port(), &["--ingress-http-address", &addr]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(kp.child.try_wait().unwrap().is_none(), "kplane exited because the ingress could not bind");
    let nodes = kp.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    kp.kubectl_ok(&["create", "deployment", "still", "--image=nginx"]);
    kp.kubectl_ok(&["rollout", "status", "deployment/still", "--timeout=60s"]);
    drop(taken);
}

/// `--proxy-mode iptables` needs root and the iptables tools: without either, `kplane proxy` and
/// `kplane up` fail at once with a message that names the userspace mode (never a silent
/// fallback). userspace stays the default.
#[test]
fn iptables_mode_without_root_or_iptables_fails_at_start_naming_userspace() {
    let kplane = env!("CARGO_BIN_EXE_kplane");
    let help = Command::new(kplane).args(["up", "--help"]).output().unwrap();
    assert!(stdout(&help).contains("--proxy-mode"), "{}", stdout(&help));
    assert!(stdout(&help).contains("[default: userspace]"), "{}", stdout(&help));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", kplane])
            .args(args)
            .output()
            .expect("setpriv runs")
    };
    for out in [
        as_nobody(&["proxy", "--kubeconfig", "/nonexistent", "--proxy-mode", "iptables"]),
        as_nobody(&["up", "--data-dir", data, "--proxy-mode", "iptables"]),
    ] {
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("needs root") && err.contains("--proxy-mode userspace"), "{err}");
    }
    // Root, but a service range iptables mode would not program.
    let out = Command::new(kplane)
        .args([
            "up",
            "--data-dir",
            data,
            "--proxy-mode",
            "iptables",
            "--service-cluster-ip-range",
            "127.130.0.0/16",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("127.130.0.0/16 is not inside 127.96.0.0/12") && err.contains("userspace"), "{err}");
    assert!(!std::path::Path::new(data).exists(), "up failed before creating anything");
    // Root, but no iptables on the PATH.
    let out = Command::new(kplane)
        .args(["proxy", "--kubeconfig", "/nonexistent", "--proxy-mode", "iptables"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("`iptables` is not installed") && err.contains("--proxy-mode userspace"), "{err}");
}

/// Removes kplane's iptables chains on drop, whatever the test's outcome.
struct IptablesCleanup;

impl Drop for IptablesCleanup {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(networking::proxy::iptables::cleanup())
        })
        .join();
    }
}

fn kplane_iptables_lines() -> Vec<String> {
    ["nat", "filter"]
        .iter()
        .flat_map(|t| {
            let out = Command::new("iptables-save").args(["-t", t]).output().expect("iptables-save");
            stdout(&out).lines().map(str::to_string).collect::<Vec<_>>()
        })
        .filter(|l| l.contains("KUBE-") || l.contains("KPLANE") || l.contains("kplane"))
        .collect()
}

/// The seed's service path with `--proxy-mode iptables` (as root): the ClusterIP and the NodePort
/// reach the nginx pods through the kernel's DNAT, with no userspace listener on the VIP; the
/// rules read as upstream's (`iptables-save -t nat | grep nginx-svc`); a second kplane in iptables
/// mode is refused while this one owns the chains (the marker rule names its pid); scale to 0
/// REJECTs, back to 1 serves; nothing is left after SIGTERM, nor after `kill -9` plus a restart
/// (which removes the dead owner's chains) and its stop. Its own service range (a /24 of
/// 127.96.0.0/12) keeps its VIPs apart from other clusters on this machine.
#[test]
fn iptables_mode_carries_the_seeds_service_path_and_cleans_up() {
    let _guard = IptablesCleanup;
    let dir = tempfile::tempdir().unwrap();
    let etcd_port = free_port();
    let flags = ["--proxy-mode", "iptables", "--service-cluster-ip-range", "127.100.77.0/24"];
    let mut kp = Kplane::start_with(dir.path(), etcd_port, &flags);
    kp.seed_nginx();
    let pods = pod_names(&kp, "app=nginx");
    let svc = json(&kp, &["get", "svc", "nginx-svc"]);
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    answers_from_each(&format!("{vip}:8080"), &pods, 20);
    drop(std::net::TcpListener::bind(format!("{vip}:8080")).expect("no userspace listener on the VIP"));
    let node_ip = json(&kp, &["get", "nodes"])["items"][0]["status"]["addresses"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = eventually(10, "the NodePort", || http(&format!("{node_ip}:{node_port}"), "np", "/").ok());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let nat = stdout(&Command::new("iptables-save").args(["-t", "nat"]).output().unwrap());
    let mine: Vec<&str> = nat.lines().filter(|l| l.contains("default/nginx-svc")).collect();
    assert!(mine.iter().any(|l| l.contains(&format!("-d {vip}/32")) && l.contains("--dport 8080")), "{nat}");
    assert!(mine
        .iter()
        .any(|l| l.starts_with("-A KUBE-NODEPORTS") && l.contains(&format!("--dport {node_port}"))));
    assert_eq!(mine.iter().filter(|l| l.contains("-j DNAT")).count(), 2, "{mine:?}");
    let owner = |pid: u32| {
        format!("-A KPLANE-PROXY -m comment --comment \"kplane service proxy, pid {pid}\" -j RETURN")
    };
    assert!(nat.contains(&owner(kp.child.id())), "the marker rule names the owner: {nat}");

    // A second kplane in iptables mode would remove this one's chains: refused while it runs,
    // naming its pid, and the rules stay.
    let before = kplane_iptables_lines();
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["proxy", "--kubeconfig", kp.kubeconfig.to_str().unwrap(), "--proxy-mode", "iptables"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("belongs to a running kplane (pid {})", kp.child.id())), "{err}");
    assert!(err.contains("--proxy-mode userspace"), "{err}");
    assert_eq!(kplane_iptables_lines(), before, "the refused proxy left the rules alone");
    answers_from_each(&format!("{vip}:8080"), &pods, 20);

    // X-ray names the mode and shows the kernel hop, read from the live ruleset.
    let mut pod_ips: Vec<String> = json(&kp, &["get", "pods", "-l", "app=nginx"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:80", p["status"]["podIP"].as_str().unwrap()))
        .collect();
    pod_ips.sort();
    let xray = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["xray", "route", "--service", "nginx-svc", "-o", "json"])
        .env("KUBECONFIG", &kp.kubeconfig)
        .output()
        .unwrap();
    let route: serde_json::Value = serde_json::from_str(&stdout(&xray)).expect("xray json");
    let entry = &route["route"]["entry"];
    assert_eq!(entry["proxyMode"], "iptables", "{route}");
    assert_eq!(entry["listener"], "kernel NAT, iptables mode (ClusterIP)", "{route}");
    let rules: Vec<&str> =
        entry["kernel"]["rules"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert!(rules[0].starts_with(&format!("-A KUBE-SERVICES -d {vip}/32")), "{rules:?}");
    assert!(entry["kernel"]["serviceChain"].as_str().unwrap().starts_with("KUBE-SVC-"), "{route}");
    let mut dnat: Vec<String> = entry["kernel"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["destination"].as_str().unwrap().to_string())
        .collect();
    dnat.sort();
    assert_eq!(dnat, pod_ips, "{route}");
    let text = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["xray", "route", "--url", &format!("http://{node_ip}:{node_port}/")])
        .env("KUBECONFIG", &kp.kubeconfig)
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(text.contains("proxy mode: iptables") && text.contains("rule: -A KUBE-NODEPORTS"), "{text}");
    assert!(pod_ips.iter().all(|ip| text.contains(&format!("DNAT to {ip}"))), "{text}");

    // Scale to zero: the port's REJECT in the live filter table (a pod that stopped listening
    // before its endpoint went would refuse too, so the rule first), its DNATs gone, and the VIP
    // refuses at once; back to one: served.
    kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=0"]);
    eventually(20, "the REJECT rule", || {
        let filter = stdout(&Command::new("iptables-save").args(["-t", "filter"]).output().unwrap());
        filter
            .lines()
            .any(|l| {
                l.starts_with(&format!("-A KUBE-SERVICES -d {vip}/32"))
                    && l.contains("--dport 8080")
                    && l.contains("\"default/nginx-svc has no endpoints\"")
                    && l.contains("-j REJECT")
            })
            .then_some(())
    });
    let nat = stdout(&Command::new("iptables-save").args(["-t", "nat"]).output().unwrap());
    assert!(!nat.lines().any(|l| l.contains("default/nginx-svc") && l.contains("-j DNAT")), "{nat}");
    let refused =
        std::net::TcpStream::connect_timeout(&format!("{vip}:8080").parse().unwrap(), Duration::from_secs(2));
    assert!(matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{refused:?}");
    kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=1"]);
    eventually(30, "served again", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });

    assert!(kp.terminate().success());
    assert!(kplane_iptables_lines().is_empty(), "left after SIGTERM: {:?}", kplane_iptables_lines());

    // kill -9 leaves the rules; the restarted kplane replaces them and its stop removes them.
    let mut kp = Kplane::start_with(dir.path(), etcd_port, &flags);
    eventually(20, "served after the restart", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    let killed = kp.child.id();
    kp.kill9();
    assert!(kplane_iptables_lines().contains(&owner(killed)), "kill -9 cannot clean up");
    let mut kp = Kplane::start_with(dir.path(), etcd_port, &flags);
    eventually(20, "served after kill -9 and a restart", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    // The dead owner's chains went (its rules served until then: the same pod): the marker rule
    // names the new process.
    let lines = eventually(20, "the new owner", || {
        let lines = kplane_iptables_lines();
        lines.contains(&owner(kp.child.id())).then_some(lines)
    });
    assert!(!lines.contains(&owner(killed)), "{lines:?}");
    eventually(20, "served by the new owner's rules", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    // No stale chains: each endpoint chain is one DNAT (nginx-svc's one pod, `kubernetes`'s API).
    let lines = kplane_iptables_lines();
    let seps = lines.iter().filter(|l| l.starts_with(":KUBE-SEP-")).count();
    let dnats: Vec<&String> = lines.iter().filter(|l| l.contains("-j DNAT")).collect();
    assert_eq!(seps, dnats.len(), "{lines:?}");
    assert_eq!(dnats.iter().filter(|l| l.contains("default/nginx-svc")).count(), 1, "{dnats:?}");
    assert!(kp.terminate().success());
    assert!(kplane_iptables_lines().is_empty(), "left after the restart's stop: {:?}", kplane_iptables_lines());
}

/// `--proxy-mode nftables` needs root and `nft`: without either, `kplane proxy` and `kplane up`
/// fail at once naming the userspace mode (never a silent fallback); a service range the mode
/// would not program is refused too.
#[test]
fn nftables_mode_without_root_or_nft_fails_at_start_naming_userspace() {
    let kplane = env!("CARGO_BIN_EXE_kplane");
    let help = Command::new(kplane).args(["proxy", "--help"]).output().unwrap();
    assert!(stdout(&help).contains("nftables"), "{}", stdout(&help));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", kplane])
            .args(args)
            .output()
            .expect("setpriv runs")
    };
    for out in [
        as_nobody(&["proxy", "--kubeconfig", "/nonexistent", "--proxy-mode", "nftables"]),
        as_nobody(&["up", "--data-dir", data, "--proxy-mode", "nftables"]),
    ] {
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("--proxy-mode nftables: it needs root") && err.contains("--proxy-mode userspace"),
            "{err}"
        );
    }
    // Root, but no nft on the PATH (simulated with an empty PATH).
    for args in [
        &["proxy", "--kubeconfig", "/nonexistent", "--proxy-mode", "nftables"][..],
        &["up", "--data-dir", data, "--proxy-mode", "nftables"][..],
    ] {
        let out = Command::new(kplane).args(args).env("PATH", dir.path()).output().unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("`nft` is not installed") && err.contains("--proxy-mode userspace"), "{err}");
    }
    let out = Command::new(kplane)
        .args([
            "up",
            "--data-dir",
            data,
            "--proxy-mode",
            "nftables",
            "--service-cluster-ip-range",
            "127.130.0.0/16",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--proxy-mode nftables: the service range 127.130.0.0/16 is not inside 127.96.0.0/12"),
        "{err}"
    );
    assert!(!std::path::Path::new(data).exists(), "up failed before creating anything");
}

/// Deletes kplane's nftables table on drop, whatever the test's outcome.
struct NftablesCleanup;

impl Drop for NftablesCleanup {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "ip", "kplane-proxy"]).output();
    }
}

/// kplane's table as `nft list` prints it; empty when it does not exist.
fn kplane_nft_table() -> String {
    let out = Command::new("nft").args(["list", "table", "ip", "kplane-proxy"]).output().expect("nft runs");
    if !out.status.success() {
        assert!(stderr(&out).contains("No such file or directory"), "{}", stderr(&out));
    }
    stdout(&out)
}

/// The seed's service path with `--proxy-mode nftables` (as root): the ClusterIP and the
/// NodePort reach the nginx pods through DNAT from kplane's own table `ip kplane-proxy`, with no
/// userspace listener on the VIP; `nft list` reads as upstream's (the `service-ips` map element
/// commented `default/nginx-svc:…`, `numgen` balancing, `dnat to` each pod); X-ray names the mode
/// and shows the hop; scale to 0 rejects, back to 1 serves; a second kplane in nftables mode is
/// refused while this one owns the table; nothing is left after SIGTERM, nor after `kill -9` plus
/// a restart and its stop. Its own service range keeps it apart from the iptables-mode test
/// running beside it (whose rules live in the `nat` and `filter` tables, never in this one).
#[test]
fn nftables_mode_carries_the_seeds_service_path_and_cleans_up() {
    let _guard = NftablesCleanup;
    let dir = tempfile::tempdir().unwrap();
    let etcd_port = free_port();
    let flags = ["--proxy-mode", "nftables", "--service-cluster-ip-range", "127.100.78.0/24"];
    let mut kp = Kplane::start_with(dir.path(), etcd_port, &flags);
    kp.seed_nginx();
    let pods = pod_names(&kp, "app=nginx");
    let svc = json(&kp, &["get", "svc", "nginx-svc"]);
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    answers_from_each(&format!("{vip}:8080"), &pods, 20);
    drop(std::net::TcpListener::bind(format!("{vip}:8080")).expect("no userspace listener on the VIP"));
    let node_ip = json(&kp, &["get", "nodes"])["items"][0]["status"]["addresses"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = eventually(10, "the NodePort", || http(&format!("{node_ip}:{node_port}"), "np", "/").ok());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let table = kplane_nft_table();
    assert!(table.contains(&format!("comment \"kplane service proxy, pid {}\"", kp.child.id())), "{table}");
    assert!(
        table.contains(&format!("{vip} . tcp . 8080 comment \"default/nginx-svc\" : goto service-")),
        "{table}"
    );
    assert!(
        table.contains(&format!("tcp . {node_port} comment \"default/nginx-svc\" : goto service-")),
        "{table}"
    );
    assert!(table.contains("numgen random mod 2 vmap"), "{table}");
    let mut pod_ips: Vec<String> = json(&kp, &["get", "pods", "-l", "app=nginx"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:80", p["status"]["podIP"].as_str().unwrap()))
        .collect();
    pod_ips.sort();
    for ip in &pod_ips {
        assert!(table.contains(&format!("dnat to {ip} comment \"default/nginx-svc\"")), "{table}");
    }
    // Nothing of this cluster in the iptables tables.
    let nat = stdout(&Command::new("iptables-save").args(["-t", "nat"]).output().unwrap());
    assert!(!nat.contains(&vip), "{nat}");

    // A second kplane in nftables mode would take the table over: refused while this one runs.
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["proxy", "--kubeconfig", kp.kubeconfig.to_str().unwrap(), "--proxy-mode", "nftables"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("belongs to a running kplane (pid {})", kp.child.id())), "{err}");
    assert!(kplane_nft_table().contains(&vip), "the refused proxy left the table alone");

    // X-ray names the mode and shows the kernel hop, read from the live ruleset.
    let xray = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["xray", "route", "--service", "nginx-svc", "-o", "json"])
        .env("KUBECONFIG", &kp.kubeconfig)
        .output()
        .unwrap();
    let route: serde_json::Value = serde_json::from_str(&stdout(&xray)).expect("xray json");
    let entry = &route["route"]["entry"];
    assert_eq!(entry["proxyMode"], "nftables", "{route}");
    assert_eq!(entry["listener"], "kernel NAT, nftables mode (ClusterIP)", "{route}");
    let rules: Vec<&str> =
        entry["kernel"]["rules"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert!(rules[1].starts_with(&format!("map service-ips: {vip} . tcp . 8080")), "{rules:?}");
    let chain = entry["kernel"]["serviceChain"].as_str().unwrap();
    assert!(chain.starts_with("service-") && chain.ends_with("-default/nginx-svc/tcp/"), "{route}");
    let mut dnat: Vec<String> = entry["kernel"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["destination"].as_str().unwrap().to_string())
        .collect();
    dnat.sort();
    assert_eq!(dnat, pod_ips, "{route}");
    let text = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["xray", "route", "--url", &format!("http://{node_ip}:{node_port}/")])
        .env("KUBECONFIG", &kp.kubeconfig)
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(text.contains("proxy mode: nftables") && text.contains("rule: map service-nodeports:"), "{text}");
    assert!(pod_ips.iter().all(|ip| text.contains(&format!("DNAT to {ip}"))), "{text}");

    // Scale to zero: the port goes to `no-endpoint-services` (its chains deleted), and the VIP
    // refuses at once (reject, not a timeout); back to one: served.
    kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=0"]);
    let reject = format!("{vip} . tcp . 8080 comment \"default/nginx-svc\" : goto reject-chain");
    let table = eventually(20, "the no-endpoint element", || {
        let table = kplane_nft_table();
        table.contains(&reject).then_some(table)
    });
    assert!(
        !table.lines().any(|l| l.contains("chain service-") && l.contains("-default/nginx-svc/")),
        "the service's chains were deleted: {table}"
    );
    let refused =
        std::net::TcpStream::connect_timeout(&format!("{vip}:8080").parse().unwrap(), Duration::from_secs(2));
    assert!(matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{refused:?}");
    let xray = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["xray", "route", "--service", "nginx-svc", "-o", "json"])
        .env("KUBECONFIG", &kp.kubeconfig)
        .output()
        .unwrap();
    let route: serde_json::Value = serde_json::from_str(&stdout(&xray)).expect("xray json");
    assert!(route["route"]["entry"]["kernel"]["reject"].as_str().unwrap().ends_with("reject"), "{route}");
    kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=1"]);
    eventually(30, "served again", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });

    assert!(kp.terminate().success());
    assert_eq!(kplane_nft_table(), "", "left after SIGTERM");

    // kill -9 leaves the table; the restarted kplane replaces it and its stop deletes it.
    let mut kp = Kplane::start_with(dir.path(), etcd_port, &flags);
    eventually(20, "served after the restart", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    let killed = kp.child.id();
    kp.kill9();
    assert!(kplane_nft_table().contains(&format!("pid {killed}\"")), "kill -9 cannot clean up");
    let mut kp = Kplane::start_with(dir.path(), etcd_port, &flags);
    eventually(20, "served after kill -9 and a restart", || {
        http(&format!("{vip}:8080"), "nginx-svc", "/").ok().filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    // The stale table went (it served until then: the same pod): the owner is the new process,
    // one endpoint chain per DNAT.
    let table = eventually(20, "the new owner", || {
        let table = kplane_nft_table();
        table.contains(&format!("pid {}\"", kp.child.id())).then_some(table)
    });
    let endpoint_chains = table.lines().filter(|l| l.trim_start().starts_with("chain endpoint-")).count();
    let dnats: Vec<&str> = table.lines().filter(|l| l.contains("dnat to")).collect();
    assert_eq!(endpoint_chains, dnats.len(), "{table}");
    assert_eq!(dnats.iter().filter(|l| l.contains("default/nginx-svc")).count(), 1, "{dnats:?}");
    assert!(kp.terminate().success());
    assert_eq!(kplane_nft_table(), "", "left after the restart's stop");
}
