//! Helpers shared by the black-box tests: the real `kplane` binary, real `etcdctl`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `kplane up` child process, killed on drop.
pub struct Kplane {
    pub child: Child,
    pub data_dir: PathBuf,
    pub etcd_port: u16,
    pub stdout_lines: Vec<String>,
    /// `http://127.0.0.1:<port>` of the API server.
    pub api: String,
    /// `http://127.0.0.1:<port>/xray`, the X-ray page (`up` only).
    pub xray: Option<String>,
    pub kubeconfig: PathBuf,
}

impl Kplane {
    /// Starts `kplane up` on the embedded store in `data_dir`, its etcd endpoint on `etcd_port`,
    /// and waits for its "ready" line.
    pub fn start(data_dir: &Path, etcd_port: u16) -> Kplane {
        Kplane::start_with(data_dir, etcd_port, &[])
    }

    /// Like [`Kplane::start`], with extra flags (e.g. `--etcd-servers`).
    pub fn start_with(data_dir: &Path, etcd_port: u16, extra: &[&str]) -> Kplane {
        Kplane::start_cmd("up", data_dir, etcd_port, extra)
    }

    /// Starts `kplane <cmd>` (`up`, or `apiserver` for the API alone). Each instance gets its own pod
    /// range (a /16 of loopback) and NodePort band, so that pods and NodePorts of tests running side by
    /// side never share an address.
    pub fn start_cmd(cmd: &str, data_dir: &Path, etcd_port: u16, extra: &[&str]) -> Kplane {
        static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut args: Vec<String> = vec![cmd.into(), "--data-dir".into(), data_dir.display().to_string()];
        args.extend([
            "--etcd-listen".into(),
            format!("127.0.0.1:{etcd_port}"),
            "--secure-port".into(),
            "0".into(),
        ]);
        if cmd == "up" {
            let k = n % 40;
            for (flag, value) in [
                ("--cluster-cidr", format!("127.{}.0.0/16", 200 + k)),
                ("--service-cluster-ip-range", format!("127.{}.0.0/16", 120 + k)),
                ("--ingress-http-address", format!("127.{}.0.1:80", 160 + k)),
                ("--ingress-https-address", format!("127.{}.0.1:443", 160 + k)),
                ("--xray-address", "127.0.0.1:0".to_string()),
                // Node IPs (127.0.10.1 + i) are the same in every instance, so each gets its own
                // NodePort band: two clusters side by side never listen on one node address and port.
                ("--service-node-port-range", format!("{}-{}", 30000 + 60 * k, 30059 + 60 * k)),
            ] {
                let off = flag == "--xray-address" && extra.contains(&"--no-xray");
                if !extra.contains(&flag) && !off {
                    args.extend([flag.to_string(), value]);
                }
            }
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_kplane"))
            .args(&args)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kplane");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line == "kplane: ready";
                    lines.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => panic!("kplane did not become ready; output so far: {lines:?}"),
            }
        }
        let api = lines
            .iter()
            .find_map(|l| l.strip_prefix("kplane: API server at "))
            .unwrap_or_else(|| panic!("no API server line in {lines:?}"))
            .to_string();
        let kubeconfig = lines
            .iter()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no KUBECONFIG line in {lines:?}"));
        let xray = lines.iter().find_map(|l| l.strip_prefix("kplane: X-ray at ")).map(str::to_string);
        Kplane {
            child,
            data_dir: data_dir.to_path_buf(),
            etcd_port,
            stdout_lines: lines,
            api,
            kubeconfig,
            xray,
        }
    }

    /// Runs the real `kubectl` against this kplane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_program("kubectl", args)
    }

    /// Runs `program` (a kubectl binary, such as a versioned `kubectl.1.27`) against this kplane.
    pub fn kubectl_program(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} could not run ({e}); these tests must not be skipped"))
    }

    /// kubectl with no credentials of its own (an empty kubeconfig): only `extra` (a token, a
    /// client certificate) authenticates, so the tests see what an outsider gets.
    pub fn kubectl_as(&self, extra: &[&str], args: &[&str]) -> Output {
        let empty = self.data_dir.join("empty.kubeconfig");
        std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
        Command::new("kubectl")
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(&empty)
            // Its own discovery cache: one left by an earlier cluster on the same port would skip
            // discovery, and with it the request whose 401 kubectl words.
            .arg("--cache-dir")
            .arg(self.data_dir.join("kubectl-cache"))
            .args(["--server", &self.api, "--insecure-skip-tls-verify"])
            .args(extra)
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and fails the test unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}{}", stdout(&out), stderr(&out));
        stdout(&out)
    }

    /// kubectl with `input` on stdin (for `apply -f -`, `create -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        with_stdin(cmd, input.as_bytes())
    }

    /// The value stored under `key`, read with the real etcdctl (embedded store's endpoint).
    pub fn etcd_get(&self, endpoint: &str, key: &str) -> Option<serde_json::Value> {
        let out = etcdctl(endpoint, &["get", key, "--print-value-only"]);
        let text = stdout(&out);
        let text = text.trim();
        if text.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("value at {key} is not JSON ({e}): {text}")),
            )
        }
    }
}

impl Kplane {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(st.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Kplane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some, at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the real `etcdctl` (API v3) against `endpoint`. Fails the test if etcdctl is missing.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("etcdctl could not run ({e}): install etcd-client; these tests must not be skipped")
        })
}

/// Like [`etcdctl`], with `input` on standard input (etcdctl put reads the value from it).
pub fn etcdctl_stdin(endpoint: &str, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={endpoint}")).args(args);
    with_stdin(cmd, input)
}

/// Runs `cmd` with `input` on stdin, written from a thread so a large input cannot deadlock
/// against the child's output.
pub fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} could not run ({e}); these tests must not be skipped"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// kubectl's `rollout undo --to-revision=<current>`: refused with "skipped rollback" (kubectl
/// compares the owner's own encoding of its template with the revision's bytes).
pub fn assert_rollback_skipped(o: &Output) {
    let (out, err) = (stdout(o), stderr(o));
    assert!(out.contains("skipped rollback") || err.contains("skipped rollback"), "{out}{err}");
}

/// The seed's `default-http-backend` ReplicationController, from YAML as the post creates it.
pub const SEED_DEFAULT_BACKEND_RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: default-http-backend
spec:
  replicas: 1
  selector:
    app: default-http-backend
  template:
    metadata:
      labels:
        app: default-http-backend
    spec:
      containers:
      - name: default-http-backend
        image: gcr.io/google_containers/defaultbackend:1.0
        ports:
        - containerPort: 8080
";

/// The seed's foobar.com Ingress in `networking.k8s.io/v1` form, with the RC's service as its
/// default backend.
pub const SEED_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: my-nginx-ingress
  annotations:
    kubernetes.io/ingress.class: kplane
spec:
  defaultBackend:
    service: {name: default-http-backend, port: {number: 80}}
  rules:
  - host: foobar.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: nginx-svc, port: {number: 8080}}
";

impl Kplane {
    /// The seed's nginx: a 2-replica deployment behind the NodePort service `nginx-svc`
    /// (8080 → 80), rolled out.
    pub fn seed_nginx(&self) {
        self.kubectl_ok(&["create", "deployment", "nginx", "--image=nginx", "--replicas=2", "--port=80"]);
        self.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
        self.kubectl_ok(&[
            "expose",
            "deployment",
            "nginx",
            "--port=8080",
            "--target-port=80",
            "--name=nginx-svc",
            "--type=NodePort",
        ]);
    }

    /// The seed's default backend: the RC from YAML, exposed as `default-http-backend` (80 → 8080).
    pub fn seed_default_backend(&self) {
        let out = self.kubectl_stdin(&["create", "-f", "-"], SEED_DEFAULT_BACKEND_RC);
        assert!(out.status.success(), "{}", stderr(&out));
        self.kubectl_ok(&[
            "expose",
            "rc",
            "default-http-backend",
            "--port=80",
            "--target-port=8080",
            "--name=default-http-backend",
        ]);
    }
}
