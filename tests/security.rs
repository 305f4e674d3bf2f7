//! HTTPS by default with a generated CA and a client-certificate kubeconfig; anonymous requests get
//! 401 except health and version; static tokens authenticate; --insecure-http is loopback-only.

mod common;

use std::process::Command;

use common::{free_port, stderr, stdout, Kplane};

fn kubectl_as(kp: &Kplane, extra: &[&str], args: &[&str]) -> std::process::Output {
    let server =
        kp.stdout_lines.iter().find_map(|l| l.strip_prefix("kplane: API server at ")).unwrap().to_string();
    // An empty kubeconfig: no credentials at all.
    let empty = kp.data_dir.join("empty.kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(&empty)
        .args(["--server", &server, "--insecure-skip-tls-verify"])
        .args(extra)
        .args(args)
        .output()
        .expect("kubectl runs")
}

#[test]
fn https_by_default_anonymous_401_tokens_and_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret-token,alice,1001,\"dev,ops\"\n").unwrap();
    let data = dir.path().join("data");
    let kp =
        Kplane::start_cmd("apiserver", &data, free_port(), &["--token-auth-file", tokens.to_str().unwrap()]);
    assert!(
        kp.stdout_lines.iter().any(|l| l.starts_with("kplane: API server at https://")),
        "{:?}",
        kp.stdout_lines
    );
    // The written kubeconfig works with no flags: it embeds the CA and the admin's certificate.
    let ns = kp.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(ns.contains("namespace/kube-system"), "{ns}");
    let kubeconfig = std::fs::read_to_string(&kp.kubeconfig).unwrap();
    for field in
        ["certificate-authority-data", "client-certificate-data", "client-key-data", "server: https://"]
    {
        assert!(kubeconfig.contains(field), "kubeconfig lacks {field}");
    }

    // Anonymous (curl with no credentials; kubectl would prompt for a password): 401 with upstream's
    // Status for the API, while health and version stay open.
    let server =
        kp.stdout_lines.iter().find_map(|l| l.strip_prefix("kplane: API server at ")).unwrap().to_string();
    let curl = |path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sk", "-o", "-", "-w", "\n%{http_code}", &format!("{server}{path}")])
            .output()
            .expect("curl runs (install curl)");
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    for path in ["/api/v1/pods", "/apis", "/metrics", "/openapi/v3"] {
        let (code, body) = curl(path);
        assert_eq!(code, "401", "{path}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "Unauthorized");
    }
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        assert_eq!(curl(path).0, "200", "{path} stays open");
    }

    // A static token authenticates (alice, with no role yet, is then forbidden rather than
    // unauthorized); a wrong one does not.
    let good = kubectl_as(&kp, &["--token", "s3cret-token"], &["get", "configmaps"]);
    assert!(stderr(&good).contains("User \"alice\" cannot list"), "{}", stderr(&good));
    let bad = kubectl_as(&kp, &["--token", "nope"], &["get", "configmaps"]);
    assert!(stderr(&bad).contains("Unauthorized"), "{}", stderr(&bad));

    // Keys and certificates are private, and a restart reuses them.
    use std::os::unix::fs::PermissionsExt;
    let tls = data.join("tls");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tls), 0o700);
    for entry in std::fs::read_dir(&tls).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&kp.kubeconfig), 0o600);
    let ca = std::fs::read(tls.join("ca.crt")).unwrap();
    drop(kp);
    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    assert_eq!(std::fs::read(tls.join("ca.crt")).unwrap(), ca, "the CA is reused");
    kp.kubectl_ok(&["get", "namespaces"]);
}

#[test]
fn insecure_http_is_explicit_and_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["apiserver", "--insecure-http", "--bind-address", "0.0.0.0", "--secure-port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("only on a loopback"), "{}", stderr(&out));

    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &["--insecure-http"]);
    assert!(kp.stdout_lines.iter().any(|l| l.starts_with("kplane: API server at http://")));
    let ns = kp.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(stdout(&kp.kubectl(&["get", "ns", "default", "-o", "name"])).contains("namespace/default"), "{ns}");
    assert!(!dir.path().join("tls").exists(), "no certificates in insecure mode");
}

#[test]
fn rbac_denies_until_a_binding_allows_and_can_i_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001\n").unwrap();
    let kp = Kplane::start_cmd(
        "apiserver",
        &dir.path().join("data"),
        free_port(),
        &["--token-auth-file", tokens.to_str().unwrap()],
    );
    let alice = ["--token", "alice-token"];

    let denied = kubectl_as(&kp, &alice, &["get", "pods", "-n", "default"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        stderr(&denied)
    );
    let no = kubectl_as(&kp, &alice, &["auth", "can-i", "list", "pods", "-n", "default"]);
    assert_eq!(stdout(&no).trim(), "no", "{}", stderr(&no));
    // Discovery is open to every authenticated user (system:discovery), so kubectl works at all.
    let discovery = kubectl_as(&kp, &alice, &["get", "--raw", "/apis"]);
    assert!(discovery.status.success(), "{}", stderr(&discovery));

    // The admin grants view in default.
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        "default",
    ]);
    kp.kubectl_ok(&["create", "configmap", "c", "--from-literal=a=b"]);
    let allowed = kubectl_as(&kp, &alice, &["get", "configmaps", "-n", "default", "-o", "name"]);
    assert!(stdout(&allowed).contains("configmap/c"), "{}", stderr(&allowed));
    let yes = kubectl_as(&kp, &alice, &["auth", "can-i", "list", "pods", "-n", "default"]);
    assert_eq!(stdout(&yes).trim(), "yes", "{}", stderr(&yes));
    let elsewhere = kubectl_as(&kp, &alice, &["get", "pods", "-n", "kube-system"]);
    assert!(stderr(&elsewhere).contains("in the namespace \"kube-system\""), "{}", stderr(&elsewhere));
    let write = kubectl_as(&kp, &alice, &["create", "configmap", "d", "-n", "default"]);
    assert!(stderr(&write).contains("cannot create resource \"configmaps\""), "{}", stderr(&write));
    assert!(kp.etcd_get(&kp.endpoint(), "/registry/configmaps/default/d").is_none(), "nothing written");
    // The bootstrap roles are there, as upstream's.
    let roles = kp.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for r in ["cluster-admin", "admin", "edit", "view", "system:kube-controller-manager", "system:node"] {
        assert!(roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{r}\n")), "{r}: {roles}");
    }
    let key =
        kp.etcd_get(&kp.endpoint(), "/registry/clusterrolebindings/cluster-admin").expect("stored binding");
    assert_eq!(key["subjects"][0]["name"], "system:masters");
}
