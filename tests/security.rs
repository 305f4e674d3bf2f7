//! HTTPS by default with a generated CA and a client-certificate kubeconfig; anonymous requests get
//! 401 except health and version; static tokens authenticate; --insecure-http is loopback-only.

mod common;

use std::process::Command;

use common::{free_port, stderr, stdout, Kplane};

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
    let server = kp.api.clone();
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
    let good = kp.kubectl_as(&["--token", "s3cret-token"], &["get", "configmaps"]);
    assert!(stderr(&good).contains("User \"alice\" cannot list"), "{}", stderr(&good));
    let bad = kp.kubectl_as(&["--token", "nope"], &["get", "configmaps"]);
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
    // Credentials mean nothing there: whatever a client sends, it is the administrator.
    for header in ["Authorization: Basic YWRtaW46YWRtaW4=", "Authorization: Bearer whatever"] {
        let (code, body) = curl(&["-H", header], &format!("{}/api/v1/namespaces", kp.api));
        assert_eq!(code, "200", "{header}: {body}");
    }
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

    let denied = kp.kubectl_as(&alice, &["get", "pods", "-n", "default"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        stderr(&denied)
    );
    let no = kp.kubectl_as(&alice, &["auth", "can-i", "list", "pods", "-n", "default"]);
    assert_eq!(stdout(&no).trim(), "no", "{}", stderr(&no));
    // Discovery is open to every authenticated user (system:discovery), so kubectl works at all.
    let discovery = kp.kubectl_as(&alice, &["get", "--raw", "/apis"]);
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
    let allowed = kp.kubectl_as(&alice, &["get", "configmaps", "-n", "default", "-o", "name"]);
    assert!(stdout(&allowed).contains("configmap/c"), "{}", stderr(&allowed));
    let yes = kp.kubectl_as(&alice, &["auth", "can-i", "list", "pods", "-n", "default"]);
    assert_eq!(stdout(&yes).trim(), "yes", "{}", stderr(&yes));
    let elsewhere = kp.kubectl_as(&alice, &["get", "pods", "-n", "kube-system"]);
    assert!(stderr(&elsewhere).contains("in the namespace \"kube-system\""), "{}", stderr(&elsewhere));
    let write = kp.kubectl_as(&alice, &["create", "configmap", "d", "-n", "default"]);
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

    // Impersonation: the admin may act as alice (`--as`), and sees what alice may do; alice may not
    // impersonate anyone.
    let as_alice = kp.kubectl(&["auth", "can-i", "list", "configmaps", "-n", "default", "--as", "alice"]);
    assert_eq!(stdout(&as_alice).trim(), "yes", "{}", stderr(&as_alice));
    let as_alice = kp.kubectl(&["auth", "can-i", "delete", "configmaps", "-n", "default", "--as", "alice"]);
    assert_eq!(stdout(&as_alice).trim(), "no", "{}", stderr(&as_alice));
    let denied = kp.kubectl(&["delete", "configmap", "c", "-n", "default", "--as", "alice"]);
    assert!(
        stderr(&denied).contains("User \"alice\" cannot delete resource \"configmaps\""),
        "{}",
        stderr(&denied)
    );
    let who = kp.kubectl_ok(&["auth", "whoami", "--as", "system:serviceaccount:default:robot", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:serviceaccount:default:robot");
    assert!(
        who["status"]["userInfo"]["groups"].to_string().contains("system:serviceaccounts:default"),
        "{who}"
    );
    let escalate =
        kp.kubectl_as(&alice, &["get", "secrets", "--as", "kubernetes-admin", "--as-group", "system:masters"]);
    assert!(
        stderr(&escalate).contains("users \"kubernetes-admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{}",
        stderr(&escalate)
    );
}

/// `curl` with `args` against `url`: (HTTP code, body).
fn curl(args: &[&str], url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs (install curl)");
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// Asserts upstream's 401 Status.
fn assert_401(what: &str, (code, body): (String, String)) {
    assert_eq!(code, "401", "{what}: {body}");
    let status: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not a Status ({e}): {body}"));
    assert_eq!(status["kind"], "Status", "{what}");
    assert_eq!(status["reason"], "Unauthorized", "{what}");
    assert_eq!(status["code"], 401, "{what}");
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// An ES256 JWT over `header` and `claims`, signed by the PKCS#8 PEM key `key_pem`.
fn sign_jwt(key_pem: &str, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let der = rcgen::KeyPair::from_pem(key_pem).unwrap().serialize_der();
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &rng,
    )
    .unwrap();
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(sig.as_ref()))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn service_account_tokens_from_kubectl_create_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001\n").unwrap();
    let data = dir.path().join("data");
    let token_flags = ["--token-auth-file", tokens.to_str().unwrap()];
    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &token_flags);
    kp.kubectl_ok(&["create", "serviceaccount", "robot"]);
    // `kplane apiserver` runs no ServiceAccount controller, so `default` is made here.
    kp.kubectl_ok(&["create", "serviceaccount", "default"]);
    let default_token = kp.kubectl_ok(&["create", "token", "default"]);
    let who = kp.kubectl_as(&["--token", default_token.trim()], &["auth", "whoami"]);
    assert!(stdout(&who).contains("system:serviceaccount:default:default"), "{}", stderr(&who));

    // kubectl create token: an ES256 JWT with upstream's claims, one hour by default.
    let token = kp.kubectl_ok(&["create", "token", "robot"]).trim().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: serde_json::Value = serde_json::from_slice(&unb64url(parts[0])).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: serde_json::Value = serde_json::from_slice(&unb64url(parts[1])).unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["aud"][0], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    let sa_uid = kp.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], sa_uid.as_str());
    let robot = ["--token", token.as_str()];

    // It authenticates as the ServiceAccount, in upstream's groups.
    let who = kp.kubectl_as(&robot, &["auth", "whoami", "-o", "json"]);
    assert!(who.status.success(), "{}", stderr(&who));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:serviceaccount:default:robot");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    for g in ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"] {
        assert!(groups.contains(&format!("\"{g}\"")), "{g} in {groups}");
    }
    // RBAC applies to it: nothing until a binding names the ServiceAccount.
    let denied = kp.kubectl_as(&robot, &["get", "pods"]);
    assert!(
        stderr(&denied).contains("User \"system:serviceaccount:default:robot\" cannot list resource \"pods\""),
        "{}",
        stderr(&denied)
    );
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    let allowed = kp.kubectl_as(&robot, &["get", "pods"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let no = kp.kubectl_as(&robot, &["auth", "can-i", "delete", "pods"]);
    assert_eq!(stdout(&no).trim(), "no");

    // expirationSeconds and audiences, with upstream's defaults and limits.
    let short = kp.kubectl(&["create", "token", "robot", "--duration", "5m"]);
    assert!(
        stderr(&short).contains(
            "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
        ),
        "{}",
        stderr(&short)
    );
    let long = kp.kubectl_ok(&["create", "token", "robot", "--duration", "2h"]);
    let claims: serde_json::Value =
        serde_json::from_slice(&unb64url(long.trim().split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 7200);
    let vault = kp.kubectl_ok(&["create", "token", "robot", "--audience", "vault"]);
    let claims: serde_json::Value =
        serde_json::from_slice(&unb64url(vault.trim().split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims["aud"], serde_json::json!(["vault"]));
    let other_audience = kp.kubectl_as(&["--token", vault.trim()], &["get", "pods"]);
    assert!(
        stderr(&other_audience).contains("Unauthorized"),
        "a token for another audience: {}",
        stderr(&other_audience)
    );
    let missing = kp.kubectl(&["create", "token", "nobody"]);
    assert!(stderr(&missing).contains("serviceaccounts \"nobody\" not found"), "{}", stderr(&missing));

    // Who may create tokens: edit (and admin) may, view may not.
    let alice = ["--token", "alice-token"];
    kp.kubectl_ok(&["create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice"]);
    let viewer = kp.kubectl_as(&alice, &["create", "token", "robot"]);
    assert!(
        stderr(&viewer).contains(
            "cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        stderr(&viewer)
    );
    kp.kubectl_ok(&["create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice"]);
    let editor = kp.kubectl_as(&alice, &["create", "token", "robot"]);
    assert!(editor.status.success(), "{}", stderr(&editor));

    // The signing key is private and survives a restart, so issued tokens stay valid.
    use std::os::unix::fs::PermissionsExt;
    let key_file = data.join("tls").join("sa.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let key_pem = std::fs::read_to_string(&key_file).unwrap();
    drop(kp);
    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &token_flags);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key_pem, "the key is reused");
    let again = kp.kubectl_as(&robot, &["get", "pods"]);
    assert!(again.status.success(), "after a restart: {}", stderr(&again));

    // Deleting the ServiceAccount revokes its tokens; a new one of the same name (new uid) does not
    // bring them back.
    kp.kubectl_ok(&["delete", "serviceaccount", "robot"]);
    common::eventually(10, "the deleted ServiceAccount's token to be refused", || {
        let out = kp.kubectl_as(&robot, &["get", "pods"]);
        stderr(&out).contains("Unauthorized").then_some(())
    });
    kp.kubectl_ok(&["create", "serviceaccount", "robot"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let recreated = kp.kubectl_as(&robot, &["get", "pods"]);
    assert!(stderr(&recreated).contains("Unauthorized"), "{}", stderr(&recreated));
    let fresh = kp.kubectl_ok(&["create", "token", "robot"]);
    let fresh = kp.kubectl_as(&["--token", fresh.trim()], &["auth", "whoami"]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
}

/// A client certificate signed by `issuer` (cert PEM, key PEM), valid from `from` to `until`.
fn client_cert(
    issuer: (&str, &str),
    cn: &str,
    org: &str,
    from: (i32, u8, u8),
    until: (i32, u8, u8),
) -> (String, String) {
    let ca_key = rcgen::KeyPair::from_pem(issuer.1).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(issuer.0, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, org);
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn self_signed_ca(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn bad_certificates_and_tokens_get_401_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    let server = kp.api.clone();
    let url = format!("{server}/api/v1/namespaces/default/pods");
    let tls = data.join("tls");
    let ca_crt = tls.join("ca.crt");
    let ca = (std::fs::read_to_string(&ca_crt).unwrap(), std::fs::read_to_string(tls.join("ca.key")).unwrap());
    let cacert = ["--cacert", ca_crt.to_str().unwrap()];
    let write = |name: &str, (cert, key): (String, String)| {
        let (c, k) = (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c.display().to_string(), k.display().to_string())
    };

    // A valid certificate from the cluster CA, made here, works: the forging below is sound.
    let good = write(
        "good",
        client_cert((&ca.0, &ca.1), "kubernetes-admin", "system:masters", (2024, 1, 1), (2035, 1, 1)),
    );
    let (code, body) = curl(&[&cacert[..], &["--cert", &good.0, "--key", &good.1]].concat(), &url);
    assert_eq!(code, "200", "{body}");
    // Expired (same CA, same subject), not yet valid, and from another CA: 401 with upstream's Status,
    // from curl and from kubectl alike.
    let expired = write(
        "expired",
        client_cert((&ca.0, &ca.1), "kubernetes-admin", "system:masters", (2020, 1, 1), (2021, 1, 1)),
    );
    let future = write(
        "future",
        client_cert((&ca.0, &ca.1), "kubernetes-admin", "system:masters", (2090, 1, 1), (2091, 1, 1)),
    );
    let other_ca = self_signed_ca("kplane-ca");
    let foreign = write(
        "foreign",
        client_cert(
            (&other_ca.0, &other_ca.1),
            "kubernetes-admin",
            "system:masters",
            (2024, 1, 1),
            (2035, 1, 1),
        ),
    );
    for (what, (cert, key)) in [("expired", &expired), ("not yet valid", &future), ("another CA", &foreign)] {
        assert_401(what, curl(&[&cacert[..], &["--cert", cert, "--key", key]].concat(), &url));
        let out = kp.kubectl_as(&["--client-certificate", cert, "--client-key", key], &["get", "pods"]);
        // kubectl words a 401 to a client-certificate user as upstream's does.
        assert!(
            stderr(&out).contains("the server has asked for the client to provide credentials"),
            "{what}: {}",
            stderr(&out)
        );
    }

    // Malformed bearer tokens and other schemes.
    for header in [
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "bearer nope",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer e30.e30.e30",
        "Bearer eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.AAAA",
        "Basic a3ViZXJuZXRlcy1hZG1pbjpwYXNzd29yZA==",
        "Negotiate YIIB",
        "Bearer \u{00e9}t\u{00e9}",
    ] {
        assert_401(header, curl(&["-k", "-H", &format!("Authorization: {header}")], &url));
    }

    // JWTs: a real one from the API, then forged variants of it.
    kp.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let token = kp.kubectl_ok(&["create", "token", "robot"]).trim().to_string();
    kp.kubectl_ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    let bearer = |t: &str| curl(&["-k", "-H", &format!("Authorization: Bearer {t}")], &url);
    assert_eq!(bearer(&token).0, "200", "the real token works");
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&unb64url(parts[0])).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&unb64url(parts[1])).unwrap();
    let key_pem = std::fs::read_to_string(tls.join("sa.key")).unwrap();
    // Signed here with the cluster's key, claims unchanged: accepted (the forging is sound).
    assert_eq!(bearer(&sign_jwt(&key_pem, &header, &claims)).0, "200");

    // Tampered: the payload now names a cluster-admin ServiceAccount; the signature is the old one.
    let mut evil = claims.clone();
    evil["sub"] = serde_json::json!("system:serviceaccount:kube-system:robot");
    evil["kubernetes.io"]["namespace"] = serde_json::json!("kube-system");
    let tampered = format!("{}.{}.{}", parts[0], b64url(evil.to_string().as_bytes()), parts[2]);
    assert_401("tampered payload", bearer(&tampered));
    // Signed by another key.
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    assert_401("another key", bearer(&sign_jwt(&other_key, &header, &claims)));
    // alg none, with no signature and with the real one.
    let none = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    assert_401("alg none", bearer(&format!("{none}.{}.", parts[1])));
    assert_401("alg none, signature kept", bearer(&format!("{none}.{}.{}", parts[1], parts[2])));
    // HS256 with the public key as the secret would need the key; any HS256 is refused by alg.
    let hs = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    assert_401("alg HS256", bearer(&format!("{hs}.{}.{}", parts[1], parts[2])));
    // Expired (beyond the one-minute leeway) and not yet valid, signed with the real key.
    let mut old = claims.clone();
    old["iat"] = serde_json::json!(now_secs() - 7200);
    old["nbf"] = serde_json::json!(now_secs() - 7200);
    old["exp"] = serde_json::json!(now_secs() - 120);
    assert_401("expired JWT", bearer(&sign_jwt(&key_pem, &header, &old)));
    let mut later = claims.clone();
    later["nbf"] = serde_json::json!(now_secs() + 600);
    assert_401("not yet valid JWT", bearer(&sign_jwt(&key_pem, &header, &later)));
    // Another issuer, another audience, another ServiceAccount uid: all signed with the real key.
    let mut iss = claims.clone();
    iss["iss"] = serde_json::json!("https://evil.example");
    assert_401("other issuer", bearer(&sign_jwt(&key_pem, &header, &iss)));
    let mut aud = claims.clone();
    aud["aud"] = serde_json::json!(["https://evil.example"]);
    assert_401("other audience", bearer(&sign_jwt(&key_pem, &header, &aud)));
    let mut uid = claims.clone();
    uid["kubernetes.io"]["serviceaccount"]["uid"] = serde_json::json!("00000000-0000-0000-0000-000000000000");
    assert_401("stale uid", bearer(&sign_jwt(&key_pem, &header, &uid)));

    // Still alive and well.
    assert_eq!(curl(&["-k"], &format!("{server}/healthz")).0, "200");
    kp.kubectl_ok(&["get", "pods"]);
    assert!(kp.child.try_wait().unwrap().is_none(), "kplane is still running");
    assert!(kp.terminate().success());
}

/// xorshift64*: a reproducible stream of junk without a dependency.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize, pick: impl Fn(u8) -> u8) -> Vec<u8> {
        (0..len).map(|_| pick(self.next() as u8)).collect()
    }

    /// One Authorization value: printable junk, raw high bytes, random schemes, JWT-shaped junk,
    /// and now and then a huge one.
    fn authorization(&mut self) -> Vec<u8> {
        let len = match self.below(100) {
            0..=1 => 64 * 1024 + self.below(256 * 1024) as usize,
            2..=9 => 1024 + self.below(8192) as usize,
            _ => self.below(200) as usize,
        };
        let printable = |b: u8| b' ' + b % 95;
        let any_allowed = |b: u8| if b < b' ' || b == 0x7f { b'\t' } else { b };
        let scheme: &[u8] = match self.below(8) {
            0 => b"Bearer ",
            1 => b"bearer ",
            2 => b"BEARER\t",
            3 => b"Basic ",
            4 => b"Digest ",
            5 => b"",
            6 => b"Bearer  ",
            _ => b"X-Whatever ",
        };
        let mut v = scheme.to_vec();
        match self.below(4) {
            0 => v.extend(self.bytes(len, printable)),
            1 => v.extend(self.bytes(len, any_allowed)),
            2 => {
                let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                for i in 0..3 {
                    if i > 0 {
                        v.push(b'.');
                    }
                    let part = len / 3;
                    v.extend(self.bytes(part, |b| b64[(b % 64) as usize]));
                }
            }
            _ => {
                // A JWT-looking prefix with junk JSON inside.
                let header_len = self.below(40) as usize;
                let header = self.bytes(header_len, printable);
                let payload = self.bytes(len, any_allowed);
                v.extend(b64url(&header).bytes());
                v.push(b'.');
                v.extend(b64url(&payload).bytes());
                v.extend(b".c2ln");
            }
        }
        v
    }
}

#[test]
fn ten_thousand_random_authorization_headers_cause_no_5xx() {
    use http_body_util::BodyExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    let server = kp.api.clone();
    let addr: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
    let ca = std::fs::read(data.join("tls").join("ca.crt")).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts = rt.block_on(async move {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let connect = move || {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let tls = connector.connect(name, tcp).await.unwrap();
                let (send, conn) = hyper::client::conn::http1::handshake::<
                    _,
                    http_body_util::Empty<hyper::body::Bytes>,
                >(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
                tokio::spawn(conn);
                send
            }
        };
        // Four connections in parallel, 2,500 requests each, reconnecting whenever the server
        // closes one (it does after an oversized header).
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..4u64 {
            let connect = connect.clone();
            tasks.spawn(async move {
                let mut junk = Junk(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
                let mut counts = std::collections::BTreeMap::<u16, u32>::new();
                let mut send = connect().await;
                for _ in 0..2500 {
                    let value = junk.authorization();
                    let Ok(value) = http::HeaderValue::from_bytes(&value) else {
                        panic!("the generator made an invalid header value");
                    };
                    if send.ready().await.is_err() {
                        send = connect().await;
                    }
                    let req = http::Request::get("/api/v1/namespaces/default/pods")
                        .header(http::header::HOST, "127.0.0.1")
                        .header(http::header::AUTHORIZATION, value)
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    let code = match send.send_request(req).await {
                        Ok(resp) => {
                            let code = resp.status().as_u16();
                            let body =
                                resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            assert!(code < 500, "{code}: {}", String::from_utf8_lossy(&body));
                            code
                        }
                        // The server may close the connection on a header too big to read.
                        Err(_) => 0,
                    };
                    *counts.entry(code).or_default() += 1;
                }
                counts
            });
        }
        let mut all = std::collections::BTreeMap::<u16, u32>::new();
        while let Some(done) = tasks.join_next().await {
            for (code, n) in done.unwrap() {
                *all.entry(code).or_default() += n;
            }
        }
        all
    });
    let total: u32 = counts.values().sum();
    assert_eq!(total, 10_000, "{counts:?}");
    assert!(counts.keys().all(|c| *c < 500), "{counts:?}");
    assert!(counts.get(&401).copied().unwrap_or(0) > 9_000, "almost all are plain 401s: {counts:?}");
    // Still serving, for real clients too.
    assert_eq!(curl(&["-k"], &format!("{server}/healthz")).0, "200");
    kp.kubectl_ok(&["get", "namespaces"]);
}

fn node_ready(kp: &Kplane, name: &str) -> bool {
    let out = kp.kubectl(&["get", "node", name, "-o", "json"]);
    let Ok(n) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return false };
    n["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn kubectl_with(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_split_node_runs_as_system_node_with_a_minted_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kp = Kplane::start_with(&data, free_port(), &["--nodes", "1"]);
    let node_kubeconfig = dir.path().join("worker7.kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["kubeconfig", "--data-dir", data.to_str().unwrap(), "--user", "system:node:worker7"])
        .args(["--group", "system:nodes", "--out", node_kubeconfig.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&node_kubeconfig).unwrap().permissions().mode() & 0o777, 0o600);
    let who = kubectl_with(&node_kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(who.status.success(), "{}", stderr(&who));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:worker7");
    assert!(who["status"]["userInfo"]["groups"].to_string().contains("\"system:nodes\""), "{who}");

    // In a whole cluster the ServiceAccount controller makes `default`, so `kubectl create token
    // default` works as upstream's.
    let token = common::eventually(20, "a token for the default ServiceAccount", || {
        let out = kp.kubectl(&["create", "token", "default"]);
        out.status.success().then(|| stdout(&out).trim().to_string())
    });
    let who = kp.kubectl_as(&["--token", &token], &["auth", "whoami"]);
    assert!(stdout(&who).contains("system:serviceaccount:default:default"), "{}", stderr(&who));

    // The node registers, heartbeats and becomes Ready under that identity alone.
    let mut node = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["node", "--name", "worker7", "--node-ip", "127.0.21.7", "--kubelet-port", "0", "--kubeconfig"])
        .arg(&node_kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    common::eventually(60, "worker7 Ready", || node_ready(&kp, "worker7").then_some(()));
    let lease = kp.kubectl_ok(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "worker7",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, "worker7");

    // It may change itself, not another node (upstream's NodeRestriction).
    let own = kubectl_with(&node_kubeconfig, &["label", "node", "worker7", "kplane.test/mine=yes"]);
    assert!(own.status.success(), "{}", stderr(&own));
    let other = kubectl_with(&node_kubeconfig, &["label", "node", "worker0", "kplane.test/theirs=yes"]);
    assert!(
        stderr(&other).contains(
            "nodes \"worker0\" is forbidden: node \"worker7\" is not allowed to modify node \"worker0\""
        ),
        "{}",
        stderr(&other)
    );
    let delete = kubectl_with(&node_kubeconfig, &["delete", "node", "worker0"]);
    assert!(stderr(&delete).contains("is forbidden"), "{}", stderr(&delete));
    let impostor = dir.path().join("worker9.yaml");
    std::fs::write(&impostor, "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker9\n").unwrap();
    let create = kubectl_with(&node_kubeconfig, &["create", "-f", impostor.to_str().unwrap()]);
    assert!(
        stderr(&create).contains(
            "nodes \"worker9\" is forbidden: node \"worker7\" is not allowed to modify node \"worker9\""
        ),
        "{}",
        stderr(&create)
    );
    let lease =
        kubectl_with(&node_kubeconfig, &["annotate", "lease", "-n", "kube-node-lease", "worker0", "x=y"]);
    assert!(stderr(&lease).contains("can only access node lease with the same name"), "{}", stderr(&lease));
    // Nor is a node an administrator.
    let secrets = kubectl_with(&node_kubeconfig, &["create", "secret", "generic", "s", "--from-literal=a=b"]);
    assert!(
        stderr(&secrets).contains("User \"system:node:worker7\" cannot create resource \"secrets\""),
        "{}",
        stderr(&secrets)
    );
    assert!(node_ready(&kp, "worker0"), "worker0 untouched");
    let _ = node.kill();
    let _ = node.wait();

    // Without a cluster CA there is nothing to mint from.
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args([
            "kubeconfig",
            "--data-dir",
            dir.path().join("nothing").to_str().unwrap(),
            "--user",
            "x",
            "--out",
        ])
        .arg(dir.path().join("x.kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no cluster CA"), "{}", stderr(&out));
}

#[test]
fn components_get_403_once_their_role_binding_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kp = Kplane::start_with(&data, free_port(), &["--nodes", "1", "--no-networking"]);
    let scheduler = data.join("scheduler.kubeconfig");
    let can_bind = || {
        stdout(&kubectl_with(&scheduler, &["auth", "can-i", "create", "pods", "--subresource=binding", "-A"]))
            .trim()
            .to_string()
    };
    let node_of = |pod: &str| kp.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);

    let can_bind_as = || {
        let out = kp.kubectl(&[
            "auth",
            "can-i",
            "create",
            "pods",
            "--subresource=binding",
            "-A",
            "--as",
            "system:kube-scheduler",
        ]);
        stdout(&out).trim().to_string()
    };
    // With its binding, the scheduler (in-process, and with its kubeconfig) does its job.
    assert_eq!(can_bind(), "yes");
    assert_eq!(can_bind_as(), "yes");
    assert!(kubectl_with(&scheduler, &["get", "pods", "-A"]).status.success());
    kp.kubectl_ok(&["run", "before", "--image=nginx"]);
    common::eventually(30, "the pod scheduled", || (node_of("before") == "worker0").then_some(()));

    // Without it: 403 for the scheduler's identity, and new pods stay unscheduled.
    kp.kubectl_ok(&["delete", "clusterrolebinding", "system:kube-scheduler"]);
    common::eventually(10, "the scheduler denied", || (can_bind() == "no").then_some(()));
    assert_eq!(can_bind_as(), "no", "kubectl auth can-i --as agrees");
    let list = kubectl_with(&scheduler, &["get", "pods", "-A"]);
    assert!(
        stderr(&list).contains("User \"system:kube-scheduler\" cannot list resource \"pods\" in API group \"\" at the cluster scope"),
        "{}",
        stderr(&list)
    );
    kp.kubectl_ok(&["run", "during", "--image=nginx"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(node_of("during"), "", "no binding without the role");

    // Restored (within the leader lease's renew deadline), it works again: the pending pod gets
    // scheduled.
    kp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "system:kube-scheduler",
        "--clusterrole=system:kube-scheduler",
        "--user=system:kube-scheduler",
    ]);
    assert_eq!(can_bind(), "yes");
    common::eventually(90, "the pending pod scheduled", || (node_of("during") == "worker0").then_some(()));

    // The controller-manager likewise gets 403s; left without its role it cannot renew its leader
    // lease, so it stops its controllers and campaigns again, while kplane goes on serving. With
    // the role back it leads a new term and reconciles again.
    let cm = data.join("controller-manager.kubeconfig");
    assert!(kubectl_with(&cm, &["get", "replicasets", "-A"]).status.success());
    fn transitions(kp: &Kplane) -> i64 {
        let jsonpath = "jsonpath={.spec.leaseTransitions}";
        kp.kubectl_ok(&["get", "lease", "-n", "kube-system", "kube-controller-manager", "-o", jsonpath])
            .trim()
            .parse()
            .unwrap_or(0)
    }
    let before = transitions(&kp);
    kp.kubectl_ok(&["delete", "clusterrolebinding", "system:kube-controller-manager"]);
    common::eventually(10, "the controller-manager denied", || {
        let out = kubectl_with(&cm, &["get", "replicasets", "-A"]);
        stderr(&out).contains("User \"system:kube-controller-manager\" cannot list").then_some(())
    });
    // Past the renew deadline (10 s by default) the lease is lost; the process stays up.
    std::thread::sleep(std::time::Duration::from_secs(12));
    let mut kp = kp;
    assert!(kp.child.try_wait().unwrap().is_none(), "a lost lease must not end kplane");
    kp.kubectl_ok(&["get", "namespaces"]);
    kp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "system:kube-controller-manager",
        "--clusterrole=system:kube-controller-manager",
        "--user=system:kube-controller-manager",
    ]);
    kp.kubectl_ok(&["create", "deployment", "after", "--image=nginx"]);
    common::eventually(90, "the deployment reconciled by a new term", || {
        let rs = kp.kubectl_ok(&["get", "rs", "-l", "app=after", "-o", "name"]);
        (!rs.trim().is_empty() && transitions(&kp) > before).then_some(())
    });
    assert!(kp.child.try_wait().unwrap().is_none(), "kplane still runs");
}

/// Lines of a PEM file's body long enough to identify it (the base64 of the key itself).
fn pem_body_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_string)
        .collect()
}

#[test]
fn secrets_tokens_and_keys_stay_out_of_trace_logs() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let static_token = "static-tok-4f1d9c2e8b7a6350";
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, format!("{static_token},carol,1003,\"system:masters\"\n")).unwrap();
    let (out_path, err_path) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["-vv", "up", "--nodes", "1", "--data-dir", data.to_str().unwrap()])
        .args(["--etcd-listen", &format!("127.0.0.1:{}", free_port()), "--secure-port", "0"])
        .args(["--token-auth-file", tokens.to_str().unwrap()])
        .args(["--cluster-cidr", "127.239.0.0/16", "--service-cluster-ip-range", "127.119.0.0/16"])
        .args(["--ingress-http-address", "127.159.0.1:80", "--ingress-https-address", "127.159.0.1:443"])
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let ready = common::eventually(60, "kplane ready", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kplane exited ({status}): {}", std::fs::read_to_string(&err_path).unwrap_or_default());
        }
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        out.contains("kplane: ready").then_some(out)
    });
    let server = ready.lines().find_map(|l| l.strip_prefix("kplane: API server at ")).unwrap().to_string();
    let kubeconfig = data.join("kubeconfig");
    let kubectl = |extra: &[&str], args: &[&str]| -> std::process::Output {
        Command::new("kubectl")
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(extra)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };

    // A Secret (plus one the ingress controller watches), a static token, a ServiceAccount JWT.
    let secret_value = "s3cr3t-v4lue-8d0b1f7e2c";
    ok(kubectl(
        &[],
        &["create", "secret", "generic", "creds", &format!("--from-literal=password={secret_value}")],
    ));
    ok(kubectl(&[], &["get", "secret", "creds", "-o", "yaml"]));
    // A watch over Secrets, ended by its request timeout.
    let _ = kubectl(&[], &["get", "secrets", "-A", "--watch-only", "--request-timeout=2s"]);
    ok(kubectl(
        &["--token", static_token, "--server", &server, "--insecure-skip-tls-verify"],
        &["get", "secrets"],
    ));
    ok(kubectl(&[], &["create", "serviceaccount", "robot"]));
    ok(kubectl(
        &[],
        &["create", "rolebinding", "robot-edit", "--clusterrole=edit", "--serviceaccount=default:robot"],
    ));
    let jwt = ok(kubectl(&[], &["create", "token", "robot"])).trim().to_string();
    ok(kubectl(
        &["--token", &jwt, "--server", &server, "--insecure-skip-tls-verify"],
        &["get", "secret", "creds", "-o", "json"],
    ));
    // A rejected JWT and a rejected static-looking token are logged as rejected, not printed.
    let forged = format!("{}x", jwt);
    let _ = kubectl(&["--token", &forged, "--server", &server, "--insecure-skip-tls-verify"], &["get", "pods"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();

    let logs = std::fs::read_to_string(&out_path).unwrap() + &std::fs::read_to_string(&err_path).unwrap();
    assert!(logs.lines().count() > 1000, "trace logging is on: {} lines", logs.lines().count());
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret_value);
    let mut needles: Vec<(String, String)> = vec![
        ("the Secret's value".into(), secret_value.into()),
        ("the Secret's value in base64".into(), b64),
        ("the static token".into(), static_token.into()),
        ("the JWT".into(), jwt.clone()),
        ("the JWT's signature".into(), jwt.rsplit('.').next().unwrap().to_string()),
        ("the forged JWT".into(), forged),
    ];
    for key in ["ca.key", "sa.key", "apiserver.key", "admin.key", "scheduler.key", "controller-manager.key"] {
        for line in pem_body_lines(&data.join("tls").join(key)) {
            needles.push((format!("a line of {key}"), line));
        }
    }
    for (what, needle) in &needles {
        if let Some(at) = logs.find(needle.as_str()) {
            let line = logs[..at].rsplit('\n').next().unwrap_or("");
            panic!("{what} appears in kplane's output: …{}", &line[line.len().saturating_sub(300)..]);
        }
    }
}

#[test]
fn a_connection_stops_authenticating_when_its_certificate_expires() {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kp = Kplane::start_cmd("apiserver", &data, free_port(), &[]);
    let addr: std::net::SocketAddr = kp.api.trim_start_matches("https://").parse().unwrap();
    let tls = data.join("tls");
    let (ca_cert, ca_key) = (
        std::fs::read_to_string(tls.join("ca.crt")).unwrap(),
        std::fs::read_to_string(tls.join("ca.key")).unwrap(),
    );
    // Valid for four more seconds.
    let ca_issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_cert, rcgen::KeyPair::from_pem(&ca_key).unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
    params.distinguished_name.push(rcgen::DnType::CommonName, "short-lived");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(now_secs() as u64 + 4);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_issuer).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let codes = rt.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca_cert.as_bytes()).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream =
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Empty<hyper::body::Bytes>,
        >(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut codes = Vec::new();
        for wait in [0, 6] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            send.ready().await.expect("the same connection stays open");
            let req = http::Request::get("/api/v1/namespaces")
                .header(http::header::HOST, "127.0.0.1")
                .body(http_body_util::Empty::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            codes.push((code, String::from_utf8_lossy(&body).into_owned()));
        }
        codes
    });
    assert_eq!(codes[0].0, 200, "{}", codes[0].1);
    assert_eq!(codes[1].0, 401, "after expiry, on the same connection: {}", codes[1].1);
    assert!(codes[1].1.contains("\"reason\":\"Unauthorized\""), "{}", codes[1].1);
}
