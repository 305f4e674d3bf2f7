//! etcd over TLS, both ways, with the real etcd and etcdctl:
//! - kplane on a real etcd that serves TLS and requires client certificates: `--etcd-cafile`,
//!   `--etcd-certfile` and `--etcd-keyfile` work, the data is where etcdctl (over TLS) finds it,
//!   and a wrong CA or a missing client certificate is a clear error exit, not a hang. Fails (never
//!   skips) when etcd is not installed.
//! - the embedded store's etcd endpoint serving TLS (`--etcd-listen-certfile`, `-keyfile`,
//!   `-cafile` for client-certificate auth), read and written by etcdctl over TLS, its `/metrics`
//!   read by curl over TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, stderr, stdout, Kplane};

/// PEM files of one certificate and its key.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

fn write_pair(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Pem {
    let pem = Pem { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
    std::fs::write(&pem.cert, cert.pem()).unwrap();
    std::fs::write(&pem.key, key.serialize_pem()).unwrap();
    pem
}

/// A CA, and a way to sign server and client certificates with it.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: Pem,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let pem = write_pair(dir, name, &cert, &key);
        Ca { issuer: rcgen::Issuer::new(params, key), pem }
    }

    fn sign(&self, dir: &Path, name: &str, server: bool) -> Pem {
        let key = rcgen::KeyPair::generate().unwrap();
        let sans = if server { vec!["localhost".to_string(), "127.0.0.1".to_string()] } else { vec![] };
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = if server {
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write_pair(dir, name, &cert, &key)
    }
}

/// A real etcd on loopback serving TLS with client-certificate auth; killed on drop.
struct TlsEtcd {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsEtcd {
    fn start(dir: &Path, ca: &Ca, server: &Pem) -> TlsEtcd {
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("https://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = dir.join("etcd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("etcd")
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.join("etcd-data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg(format!("--cert-file={}", server.cert.display()))
            .arg(format!("--key-file={}", server.key.display()))
            .arg(format!("--trusted-ca-file={}", ca.pem.cert.display()))
            .arg("--client-cert-auth")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("etcd could not run ({e}): install etcd-server; this test must not be skipped")
            });
        TlsEtcd { child, endpoint: client_url, log }
    }

    fn etcdctl(&self, client: &Pem, ca: &Path, args: &[&str]) -> std::process::Output {
        etcdctl_tls(&self.endpoint, ca, Some(client), args)
    }

    fn wait_healthy(&mut self, client: &Pem, ca: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("etcd exited ({status}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if self.etcdctl(client, ca, &["endpoint", "health"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The real etcdctl over TLS, trusting `ca`, with a client certificate if given.
fn etcdctl_tls(endpoint: &str, ca: &Path, client: Option<&Pem>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", ca.display()))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s");
    if let Some(c) = client {
        cmd.arg(format!("--cert={}", c.cert.display())).arg(format!("--key={}", c.key.display()));
    }
    cmd.args(args).output().unwrap_or_else(|e| panic!("etcdctl could not run ({e}): install etcd-client"))
}

/// Runs `kplane apiserver` expecting it to fail; returns its stderr. Fails the test if it is still
/// running after `secs`.
fn expect_exit(args: &[String], secs: u64) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = stderr(&out);
            assert!(!status.success(), "kplane should have failed: {err}");
            assert!(!err.contains("panicked"), "a panic: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kplane hung for {secs}s instead of failing: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn apiserver_on_a_tls_etcd_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "etcd-ca");
    let server = ca.sign(dir.path(), "etcd-server", true);
    let client = ca.sign(dir.path(), "kube-apiserver-etcd-client", false);
    let mut etcd = TlsEtcd::start(dir.path(), &ca, &server);
    etcd.wait_healthy(&client, &ca.pem.cert);

    let flags = |ca_file: &Path, client: Option<&Pem>| -> Vec<String> {
        let mut f = vec![
            "--etcd-servers".to_string(),
            etcd.endpoint.clone(),
            "--etcd-cafile".into(),
            ca_file.display().to_string(),
        ];
        if let Some(c) = client {
            f.extend(["--etcd-certfile".into(), c.cert.display().to_string()]);
            f.extend(["--etcd-keyfile".into(), c.key.display().to_string()]);
        }
        f
    };
    let good = flags(&ca.pem.cert, Some(&client));
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let kp = Kplane::start_cmd("apiserver", &dir.path().join("kplane"), free_port(), &good);
    assert!(
        kp.stdout_lines.iter().any(|l| l.starts_with(&format!("kplane: using etcd at {}", etcd.endpoint))),
        "{:?}",
        kp.stdout_lines
    );
    kp.kubectl_ok(&["create", "configmap", "over-tls", "--from-literal=a=b"]);
    let got = kp.kubectl_ok(&["get", "configmap", "over-tls", "-o", "jsonpath={.data.a}"]);
    assert_eq!(got, "b");
    let keys = etcd.etcdctl(&client, &ca.pem.cert, &["get", "/registry", "--prefix", "--keys-only"]);
    assert!(keys.status.success(), "{}", stderr(&keys));
    let keys = stdout(&keys);
    for key in [
        "/registry/configmaps/default/over-tls",
        "/registry/namespaces/default",
        "/registry/clusterroles/admin",
    ] {
        assert!(keys.lines().any(|l| l == key), "etcdctl over TLS lacks {key}:\n{keys}");
    }
    drop(kp);

    // A CA that did not sign etcd's certificate: a clear error, quickly.
    let other = Ca::new(dir.path(), "other-ca");
    let data = dir.path().join("kplane2").display().to_string();
    let base = ["apiserver", "--data-dir", &data, "--secure-port", "0", "--no-etcd-listen"].map(String::from);
    let err = expect_exit(&[&base[..], &flags(&other.pem.cert, Some(&client))].concat(), 30);
    assert!(err.contains("connecting to etcd at"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "the error names the certificate problem: {err}");
    // No client certificate, while etcd requires one.
    let err = expect_exit(&[&base[..], &flags(&ca.pem.cert, None)].concat(), 30);
    assert!(err.contains("connecting to etcd at"), "{err}");
    assert!(err.contains("no client certificate was configured"), "{err}");
    // A certificate file without its key.
    let mut half = flags(&ca.pem.cert, None);
    half.extend(["--etcd-certfile".into(), client.cert.display().to_string()]);
    let err = expect_exit(&[&base[..], &half].concat(), 30);
    assert!(err.contains("both a certificate file and a key file"), "{err}");
    // A CA file that is not there.
    let err = expect_exit(&[&base[..], &flags(&dir.path().join("missing.crt"), Some(&client))].concat(), 30);
    assert!(err.contains("missing.crt"), "{err}");
}

#[test]
fn embedded_etcd_endpoint_serves_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "endpoint-ca");
    let server = ca.sign(dir.path(), "endpoint-server", true);
    let client = ca.sign(dir.path(), "etcdctl-client", false);
    let other = Ca::new(dir.path(), "other-ca");
    let stranger = other.sign(dir.path(), "stranger", false);
    let port = free_port();
    let tls_flags = [
        "--etcd-listen-certfile".to_string(),
        server.cert.display().to_string(),
        "--etcd-listen-keyfile".into(),
        server.key.display().to_string(),
        "--etcd-listen-cafile".into(),
        ca.pem.cert.display().to_string(),
    ];
    let flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    let kp = Kplane::start_cmd("apiserver", &dir.path().join("kplane"), port, &flags);
    let endpoint = format!("https://127.0.0.1:{port}");
    assert!(
        kp.stdout_lines.iter().any(|l| l.ends_with(&format!("etcd endpoint {endpoint}"))),
        "{:?}",
        kp.stdout_lines
    );
    kp.kubectl_ok(&["create", "configmap", "seen-over-tls", "--from-literal=a=b"]);

    // etcdctl with a client certificate from the CA: reads, writes, watches history.
    let keys =
        etcdctl_tls(&endpoint, &ca.pem.cert, Some(&client), &["get", "/registry", "--prefix", "--keys-only"]);
    assert!(keys.status.success(), "{}", stderr(&keys));
    assert!(
        stdout(&keys).lines().any(|l| l == "/registry/configmaps/default/seen-over-tls"),
        "{}",
        stdout(&keys)
    );
    let put = etcdctl_tls(&endpoint, &ca.pem.cert, Some(&client), &["put", "/registry/kplane-test/x", "y"]);
    assert!(put.status.success(), "{}", stderr(&put));
    let got = etcdctl_tls(
        &endpoint,
        &ca.pem.cert,
        Some(&client),
        &["get", "/registry/kplane-test/x", "--print-value-only"],
    );
    assert_eq!(stdout(&got).trim(), "y");
    let status = etcdctl_tls(&endpoint, &ca.pem.cert, Some(&client), &["endpoint", "status", "-w", "json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    // `/metrics` on the same port over TLS, as on etcd's https client URL: with a client
    // certificate from the CA, and refused without one.
    let curl = |cert: Option<&Pem>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail", "--max-time", "10", "--cacert"]).arg(&ca.pem.cert);
        if let Some(c) = cert {
            cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        cmd.arg(format!("{endpoint}/metrics")).output().unwrap()
    };
    let metrics = curl(Some(&client));
    assert!(metrics.status.success(), "{}", stderr(&metrics));
    assert!(stdout(&metrics).contains("etcd_debugging_mvcc_keys_total"), "{}", stdout(&metrics));
    let refused = curl(None);
    assert!(!refused.status.success() && !stdout(&refused).contains("etcd_"), "{}", stdout(&refused));

    // Refused: no client certificate, one from another CA, plain text, and trusting another CA.
    for (what, out) in [
        (
            "no client certificate",
            etcdctl_tls(&endpoint, &ca.pem.cert, None, &["get", "/registry/kplane-test/x"]),
        ),
        (
            "another CA's client",
            etcdctl_tls(&endpoint, &ca.pem.cert, Some(&stranger), &["get", "/registry/kplane-test/x"]),
        ),
        (
            "the server's CA unknown",
            etcdctl_tls(&endpoint, &other.pem.cert, Some(&client), &["get", "/registry/kplane-test/x"]),
        ),
    ] {
        assert!(!out.status.success(), "{what}: {}", stdout(&out));
        assert!(!stdout(&out).contains('y'), "{what}: no data leaks: {}", stdout(&out));
    }
    let plain = common::etcdctl(
        &format!("http://127.0.0.1:{port}"),
        &["--dial-timeout=3s", "--command-timeout=5s", "get", "/registry/kplane-test/x"],
    );
    assert!(!plain.status.success(), "plain text: {}", stdout(&plain));

    // The API server still works after all that, and the endpoint stays loopback-only.
    kp.kubectl_ok(&["get", "configmap", "seen-over-tls"]);
    drop(kp);
    let data = dir.path().join("kplane2").display().to_string();
    let bad = ["apiserver", "--data-dir", &data, "--secure-port", "0", "--etcd-listen", "0.0.0.0:0"]
        .map(String::from);
    let err = expect_exit(&[&bad[..], &tls_flags[..]].concat(), 30);
    assert!(err.contains("not a loopback address"), "{err}");
    // A key that is not a key: a clear error at startup.
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let args = [
        "apiserver",
        "--data-dir",
        &data,
        "--secure-port",
        "0",
        "--etcd-listen",
        "127.0.0.1:0",
        "--etcd-listen-certfile",
        server.cert.to_str().unwrap(),
        "--etcd-listen-keyfile",
        junk.to_str().unwrap(),
    ]
    .map(String::from);
    let err = expect_exit(&args, 30);
    assert!(err.contains("etcd endpoint TLS configuration"), "{err}");
    // A key without a certificate is refused by the flags.
    let args =
        ["apiserver", "--data-dir", &data, "--etcd-listen-keyfile", junk.to_str().unwrap()].map(String::from);
    let err = expect_exit(&args, 30);
    assert!(err.contains("--etcd-listen-certfile"), "{err}");
}
