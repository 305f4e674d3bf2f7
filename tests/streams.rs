//! `pods/exec`, `pods/attach` and `pods/portforward` with the real kubectl against the real binary:
//! port-forward carrying many requests (kubectl 1.32 tunnels SPDY in a WebSocket; kubectl 1.27
//! speaks plain SPDY), RBAC's `create` on `pods/exec`, upstream's answers to bad input, and (once
//! the sandboxed runtime is merged) the seed's client-pod steps, `exec -i` with an exit code and
//! `cp` both ways.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, stderr, stdout, Kplane};

/// A `kubectl port-forward` child, killed on drop.
struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `<program> port-forward <target> <local>:<remote>` and waits for its "Forwarding from" line.
fn port_forward(kp: &Kplane, program: &str, target: &str, remote: u16) -> (Forward, u16) {
    let local = free_port();
    let mut child = Command::new(program)
        .arg("--kubeconfig")
        .arg(&kp.kubeconfig)
        .args(["port-forward", target, &format!("{local}:{remote}"), "--address", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}); these tests must not be skipped"));
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut fwd = Forward(child);
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.contains("Forwarding from 127.0.0.1") => {}
        other => {
            let _ = fwd.0.kill();
            let mut err = String::new();
            if let Some(mut e) = fwd.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("{program} port-forward {target}: {other:?} {err}");
        }
    }
    (fwd, local)
}

/// `n` GETs to `127.0.0.1:port`, each on its own connection (so each is a new forwarded stream);
/// the status codes curl saw.
fn curl_many(port: u16, n: usize) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}/");
    let mut args: Vec<String> = ["-s", "-w", "%{http_code}\n", "-H", "Connection: close", "--max-time", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for _ in 0..n {
        args.extend(["-o".to_string(), "/dev/null".to_string(), url.clone()]);
    }
    let out = Command::new("curl").args(&args).output().expect("curl runs");
    stdout(&out).lines().map(str::to_string).collect()
}

/// Five GETs through the Python client's port-forward, one WebSocket each; prints each status line.
const PY_PORT_FORWARD: &str = r#"
import sys
from kubernetes import config, client
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
for _ in range(5):
    pf = portforward(api.connect_get_namespaced_pod_portforward, sys.argv[2], 'default', ports='80')
    s = pf.socket(80)
    s.setblocking(True)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    print(data.split(b"\r\n")[0].decode())
    assert pf.error(80) is None, pf.error(80)
    s.close()
    pf.close()
"#;

/// Whether curl got exactly `n` answers, all 200.
fn all_ok(codes: &[String], n: usize) -> bool {
    codes.len() == n && codes.iter().all(|c| c == "200")
}

fn nginx_pod(kp: &Kplane) -> String {
    let out = kp.kubectl_ok(&["get", "pods", "-l", "app=nginx", "-o", "jsonpath={.items[0].metadata.name}"]);
    out.trim().to_string()
}

#[test]
fn port_forward_carries_many_requests_to_a_pod_and_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    kp.seed_nginx();
    let pod = nginx_pod(&kp);
    eventually(30, "the pod running with an IP", || {
        let ip = kp.kubectl_ok(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"]);
        (!ip.trim().is_empty()).then_some(())
    });

    // kubectl 1.32: SPDY tunnelled through a WebSocket.
    let (fwd, local) = port_forward(&kp, "kubectl", &format!("pod/{pod}"), 80);
    let codes = curl_many(local, 200);
    assert!(all_ok(&codes, 200), "{codes:?}");
    drop(fwd);

    // A service: kubectl picks one of its pods and maps the service port to the target port.
    let (fwd, local) = port_forward(&kp, "kubectl", "svc/nginx-svc", 8080);
    let codes = curl_many(local, 50);
    assert!(all_ok(&codes, 50), "{codes:?}");
    drop(fwd);

    // kubectl 1.27: plain SPDY/3.1.
    let old = store::etcd_process::find_program("kubectl.1.27", &["/usr/lib/google-cloud-sdk/bin"])
        .expect("kubectl.1.27 is needed for the SPDY check");
    let (fwd, local) = port_forward(&kp, old.to_str().unwrap(), &format!("pod/{pod}"), 80);
    let codes = curl_many(local, 50);
    assert!(all_ok(&codes, 50), "{codes:?}");
    drop(fwd);

    // The Python client: port-forward over WebSocket (`v4.channel.k8s.io`, a channel pair per port).
    let out = Command::new("python3")
        .args(["-c", PY_PORT_FORWARD, kp.kubeconfig.to_str().unwrap(), &pod])
        .output()
        .expect("python3 could not run: install Python 3 and `pip install kubernetes` (this test must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["HTTP/1.1 200 OK"; 5], "{}", stderr(&out));

    // exec reaches the pod's kubelet through the API server (WebSocket v5 from kubectl 1.32, SPDY
    // from 1.27) and runs in the nginx container's sandbox beside its server.
    for (program, method) in [("kubectl", "GET"), (old.to_str().unwrap(), "POST")] {
        let out = kp.kubectl_program(program, &["exec", &pod, "-v=6", "--", "hostname"]);
        let err = stderr(&out);
        assert!(err.contains(&format!("\"{method}\"")) || err.contains(&format!("{method} https")), "{err}");
        assert_eq!(stdout(&out).trim(), pod, "{program}: {err}");
        assert_eq!(out.status.code(), Some(0), "{program}: {err}");
    }

    // A port nothing listens on: the connection is closed and kubectl reports the pod's refusal.
    let (mut fwd, local) = port_forward(&kp, "kubectl", &format!("pod/{pod}"), 81);
    let codes = curl_many(local, 1);
    assert_ne!(codes.first().map(String::as_str), Some("200"), "{codes:?}");
    let _ = fwd.0.kill();
    let out = fwd.0.wait_with_output_compat();
    assert!(out.contains("error forwarding port 81"), "{out}");
}

trait WaitOutput {
    fn wait_with_output_compat(&mut self) -> String;
}

impl WaitOutput for Child {
    /// Everything the child wrote to stderr (it has been killed).
    fn wait_with_output_compat(&mut self) -> String {
        let _ = self.wait();
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }
}

/// `kubectl` with an empty kubeconfig and a bearer token.
fn kubectl_token(kp: &Kplane, token: &str, args: &[&str]) -> std::process::Output {
    let empty = kp.data_dir.join("empty.kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(&empty)
        .args(["--server", &kp.api, "--insecure-skip-tls-verify", "--token", token])
        .args(args)
        .output()
        .expect("kubectl runs")
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, '3600']
  - name: side
    image: busybox
";

#[test]
fn rbac_and_bad_input_get_upstreams_answers() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "viewer-token,viewer,1001\neditor-token,editor,1002\n").unwrap();
    // The API server alone: the pod is never scheduled.
    let kp = Kplane::start_cmd(
        "apiserver",
        &dir.path().join("data"),
        free_port(),
        &["--token-auth-file", tokens.to_str().unwrap()],
    );
    let out = kp.kubectl_stdin(&["create", "-f", "-"], POD);
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["create", "rolebinding", "v", "--clusterrole=view", "--user=viewer", "-n", "default"]);
    kp.kubectl_ok(&["create", "rolebinding", "e", "--clusterrole=edit", "--user=editor", "-n", "default"]);

    // view may read pods but not step into them: create on pods/exec, for the WebSocket GET too.
    let denied = kubectl_token(&kp, "viewer-token", &["exec", "p", "-c", "main", "--", "ls"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("User \"viewer\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""),
        "{}",
        stderr(&denied)
    );
    let denied = kubectl_token(&kp, "viewer-token", &["port-forward", "pod/p", "18080:80"]);
    assert!(!denied.status.success());
    let can = kubectl_token(&kp, "viewer-token", &["auth", "can-i", "create", "pods/exec"]);
    assert_eq!(stdout(&can).trim(), "no");
    let can = kubectl_token(&kp, "editor-token", &["auth", "can-i", "create", "pods/portforward"]);
    assert_eq!(stdout(&can).trim(), "yes", "{}", stderr(&can));

    // edit may; the pod has no node yet.
    let out = kubectl_token(&kp, "editor-token", &["exec", "p", "-c", "main", "--", "ls"]);
    assert!(stderr(&out).contains("pod p does not have a host assigned"), "{}", stderr(&out));
    // A container the pod does not have.
    let out = kp.kubectl(&["exec", "p", "-c", "nope", "--", "ls"]);
    assert!(stderr(&out).contains("container nope is not valid for pod p"), "{}", stderr(&out));
    // Two containers and none named.
    let out = kp.kubectl(&["attach", "p", "-c", ""]);
    assert!(!out.status.success());
    // No command (kubectl refuses before asking, so the raw request).
    let out =
        kp.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/p/exec?container=main&stdout=true"]);
    assert!(stderr(&out).contains("you must specify at least 1 command"), "{}", stderr(&out));
    // A pod that does not exist.
    let out = kp.kubectl(&["exec", "gone", "--", "ls"]);
    assert!(stderr(&out).contains("pods \"gone\" not found"), "{}", stderr(&out));

    // Discovery lists the connect subresources as upstream does.
    let list: serde_json::Value = serde_json::from_str(&kp.kubectl_ok(&["get", "--raw", "/api/v1"])).unwrap();
    for (name, kind) in [
        ("pods/exec", "PodExecOptions"),
        ("pods/attach", "PodAttachOptions"),
        ("pods/portforward", "PodPortForwardOptions"),
    ] {
        let r = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == name).expect(name);
        assert_eq!(r["kind"], kind);
        assert_eq!(r["verbs"], serde_json::json!(["create", "get"]));
    }
}

// ---- Needing the sandboxed runtime (H1): the merger enables these. ----

fn up_with_nginx() -> (Kplane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    kp.seed_nginx();
    (kp, dir)
}

#[test]
fn the_seeds_client_pod_steps() {
    let (kp, _dir) = up_with_nginx();
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kp.kubeconfig)
        .args(["run", "-i", "--tty", "client", "--image=tutum/curl", "--restart=Never", "--rm"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(
            b"cat /etc/resolv.conf\ncurl -I nginx-svc:8080\ncurl -I nginx-svc.default.svc.cluster.local:8080\nexit\n",
        )
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{text}");
    assert!(text.contains("options ndots:5"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}\n{}", stderr(&out));
}

#[test]
fn exec_with_stdin_and_an_exit_code() {
    let (kp, _dir) = up_with_nginx();
    let pod = nginx_pod(&kp);
    let old = store::etcd_process::find_program("kubectl.1.27", &["/usr/lib/google-cloud-sdk/bin"])
        .expect("kubectl.1.27 is needed for the SPDY check");
    for program in ["kubectl", old.to_str().unwrap()] {
        let out = Command::new(program)
            .arg("--kubeconfig")
            .arg(&kp.kubeconfig)
            .args(["exec", "-i", &pod, "--", "sh", "-c", "cat; echo oops >&2; exit 3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(b"from stdin\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(stdout(&out), "from stdin\n", "{program}");
        assert!(stderr(&out).contains("oops"), "{program}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(3), "{program}: {}", stderr(&out));
    }
}

#[test]
fn cp_round_trips_a_file() {
    let (kp, dir) = up_with_nginx();
    let pod = nginx_pod(&kp);
    let src = dir.path().join("hello.txt");
    std::fs::write(&src, "a file for the pod\n").unwrap();
    kp.kubectl_ok(&["cp", src.to_str().unwrap(), &format!("{pod}:/tmp/hello.txt")]);
    let back = dir.path().join("back.txt");
    kp.kubectl_ok(&["cp", &format!("{pod}:/tmp/hello.txt"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back).unwrap(), "a file for the pod\n");
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    let (kp, _dir) = up_with_nginx();
    let out = kp.kubectl_stdin(&["run", "done", "--image=busybox", "--restart=Never", "--", "true"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(30, "the pod to finish", || {
        let phase = kp.kubectl_ok(&["get", "pod", "done", "-o", "jsonpath={.status.phase}"]);
        (phase.trim() == "Succeeded").then_some(())
    });
    let out = kp.kubectl(&["exec", "done", "--", "ls"]);
    assert!(
        stderr(&out).contains("cannot exec into a container in a completed pod; current phase is Succeeded"),
        "{}",
        stderr(&out)
    );
}
