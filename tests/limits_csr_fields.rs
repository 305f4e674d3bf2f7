//! Three v1.33 behaviours with the real kubectl against `kplane apiserver`, each checked in
//! `/registry` with etcdctl: LimitRanger's Pod, Container ratio and PersistentVolumeClaim limits
//! (upstream's 403 messages, nothing stored), `certificatesigningrequests/approval` (`kubectl
//! certificate approve|deny`, upstream's condition rules), and a CRD's `selectableFields` as field
//! selectors on its custom resources (list and watch).

mod common;

use std::process::Command;

use common::{free_port, stderr, stdout, Kplane};

fn apiserver(dir: &std::path::Path) -> Kplane {
    Kplane::start_cmd("apiserver", &dir.join("data"), free_port(), &[])
}

fn refused(kp: &Kplane, yaml: &str) -> String {
    let out = kp.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(!out.status.success(), "created: {}", stdout(&out));
    stderr(&out)
}

#[test]
fn limit_ranges_of_pods_ratios_and_claims() {
    let dir = tempfile::tempdir().unwrap();
    let kp = apiserver(dir.path());
    let ep = kp.endpoint();
    kp.kubectl_ok(&["create", "namespace", "lim"]);
    let ranges = r#"
apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: lim}
spec:
  limits:
  - type: Pod
    max: {cpu: "2"}
  - type: Container
    maxLimitRequestRatio: {cpu: "2"}
  - type: PersistentVolumeClaim
    min: {storage: 1Gi}
    max: {storage: 2Gi}
"#;
    let out = kp.kubectl_stdin(&["create", "-f", "-"], ranges);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = kp.kubectl_ok(&["describe", "limitrange", "limits", "-n", "lim"]);
    assert!(shown.contains("PersistentVolumeClaim") && shown.contains("storage"), "{shown}");

    let pod = |name: &str, containers: &[(&str, &str)]| {
        let mut y = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: lim}}\nspec:\n  containers:\n"
        );
        for (i, (req, lim)) in containers.iter().enumerate() {
            y.push_str(&format!(
                "  - name: c{i}\n    image: busybox\n    resources:\n      requests: {{cpu: \"{req}\"}}\n      limits: {{cpu: \"{lim}\"}}\n"
            ));
        }
        y
    };
    let too_big = refused(&kp, &pod("too-big", &[("1", "2"), ("1", "1")]));
    assert!(
        too_big.contains("pods \"too-big\" is forbidden: maximum cpu usage per Pod is 2, but limit is 3"),
        "{too_big}"
    );
    let greedy = refused(&kp, &pod("greedy", &[("250m", "1")]));
    assert!(
        greedy.contains(
            "pods \"greedy\" is forbidden: cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
        ),
        "{greedy}"
    );
    let fits = kp.kubectl_stdin(&["create", "-f", "-"], &pod("fits", &[("500m", "1"), ("1", "1")]));
    assert!(fits.status.success(), "{}", stderr(&fits));

    let claim = |name: &str, size: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: lim}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {{storage: {size}}}\n"
        )
    };
    let big = refused(&kp, &claim("big", "5Gi"));
    assert!(
        big.contains("persistentvolumeclaims \"big\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
        "{big}"
    );
    let small = refused(&kp, &claim("small", "500Mi"));
    assert!(
        small.contains("minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"),
        "{small}"
    );
    let ok = kp.kubectl_stdin(&["create", "-f", "-"], &claim("right", "1536Mi"));
    assert!(ok.status.success(), "{}", stderr(&ok));

    for key in
        ["/registry/pods/lim/too-big", "/registry/pods/lim/greedy", "/registry/persistentvolumeclaims/lim/big"]
    {
        assert!(kp.etcd_get(&ep, key).is_none(), "{key} stored");
    }
    assert!(kp.etcd_get(&ep, "/registry/pods/lim/fits").is_some());
    assert!(kp.etcd_get(&ep, "/registry/persistentvolumeclaims/lim/right").is_some());
}

/// A PEM certificate request for `cn` in `org`, from openssl.
fn csr_pem(dir: &std::path::Path, cn: &str, org: &str) -> String {
    let key = dir.join(format!("{cn}.key"));
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", &format!("/CN={cn}/O={org}")])
        .output()
        .expect("openssl (these tests must not be skipped)");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn csr_yaml(name: &str, pem: &str) -> String {
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n"
    )
}

#[test]
fn kubectl_certificate_approve_and_deny() {
    let dir = tempfile::tempdir().unwrap();
    let kp = apiserver(dir.path());
    let ep = kp.endpoint();
    let pem = csr_pem(dir.path(), "jane", "dev");
    for name in ["jane", "joe", "status-only"] {
        let out = kp.kubectl_stdin(&["create", "-f", "-"], &csr_yaml(name, &pem));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let resources = kp.kubectl_ok(&["get", "--raw", "/apis/certificates.k8s.io/v1"]);
    assert!(resources.contains("\"certificatesigningrequests/approval\""), "{resources}");

    let approved = kp.kubectl_ok(&["certificate", "approve", "jane"]);
    assert!(approved.contains("certificatesigningrequest.certificates.k8s.io/jane approved"), "{approved}");
    let stored = kp.etcd_get(&ep, "/registry/certificatesigningrequests/jane").unwrap();
    let conditions = stored["status"]["conditions"].as_array().unwrap().clone();
    assert_eq!(conditions.len(), 1, "{stored}");
    assert_eq!(conditions[0]["type"], "Approved");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[0]["reason"], "KubectlApprove");
    assert!(conditions[0]["lastTransitionTime"].is_string() && conditions[0]["lastUpdateTime"].is_string());
    let rv = kp.kubectl_ok(&["get", "csr", "jane", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let table = kp.kubectl_ok(&["get", "csr", "jane"]);
    assert!(table.contains("Approved"), "{table}");

    // Denying an approved request: kubectl refuses on its own; a client that sends it anyway
    // (the approval PUT with a Denied condition added) gets the server's 422, nothing written.
    let deny = kp.kubectl(&["certificate", "deny", "jane"]);
    assert!(stderr(&deny).contains("is already Approved"), "{}", stderr(&deny));
    let mut both: serde_json::Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "csr", "jane", "-o", "json"])).unwrap();
    both["status"]["conditions"].as_array_mut().unwrap().push(serde_json::json!({
        "type": "Denied", "status": "True", "reason": "KubectlDeny",
    }));
    let deny = kp.kubectl_stdin(
        &[
            "replace",
            "--raw",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/jane/approval",
            "-f",
            "-",
        ],
        &both.to_string(),
    );
    assert!(!deny.status.success());
    assert!(
        stderr(&deny).contains("status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"),
        "{}",
        stderr(&deny)
    );
    assert_eq!(kp.kubectl_ok(&["get", "csr", "jane", "-o", "jsonpath={.metadata.resourceVersion}"]), rv);

    let denied = kp.kubectl_ok(&["certificate", "deny", "joe"]);
    assert!(denied.contains("certificatesigningrequest.certificates.k8s.io/joe denied"), "{denied}");
    let joe = kp.etcd_get(&ep, "/registry/certificatesigningrequests/joe").unwrap();
    assert_eq!(joe["status"]["conditions"][0]["type"], "Denied", "{joe}");

    // Only the approval subresource may add Approved; the status subresource may not, nor the
    // main resource change status at all; and approval never takes a certificate.
    let via_status = kp.kubectl(&[
        "patch",
        "csr",
        "status-only",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Approved","status":"True","reason":"Sneaky"}]}}"#,
    ]);
    assert!(
        stderr(&via_status)
            .contains("status.conditions: Forbidden: updates may not add a condition of type \"Approved\""),
        "{}",
        stderr(&via_status)
    );
    // PUT approval (as kubectl certificate does) with a certificate: the certificate is dropped.
    let approval = "/apis/certificates.k8s.io/v1/certificatesigningrequests/status-only/approval";
    let mut current: serde_json::Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "csr", "status-only", "-o", "json"])).unwrap();
    current["status"] = serde_json::json!({"certificate": "Zm9v"});
    let put = kp.kubectl_stdin(&["replace", "--raw", approval, "-f", "-"], &current.to_string());
    assert!(put.status.success(), "{}", stderr(&put));
    let unchanged = kp.etcd_get(&ep, "/registry/certificatesigningrequests/status-only").unwrap();
    assert!(unchanged["status"].get("certificate").is_none(), "approval kept a certificate: {unchanged}");
    assert!(unchanged["status"].get("conditions").is_none(), "{unchanged}");
    let mut current: serde_json::Value =
        serde_json::from_str(&kp.kubectl_ok(&["get", "csr", "status-only", "-o", "json"])).unwrap();
    current["status"] = serde_json::json!({"conditions": [{"type": "Approved", "status": "Maybe"}]});
    let bad_status = kp.kubectl_stdin(&["replace", "--raw", approval, "-f", "-"], &current.to_string());
    assert!(!bad_status.status.success());
    assert!(
        stderr(&bad_status)
            .contains("status.conditions[0].status: Unsupported value: \"Maybe\": supported values: \"True\""),
        "{}",
        stderr(&bad_status)
    );
    let unchanged = kp.etcd_get(&ep, "/registry/certificatesigningrequests/status-only").unwrap();
    assert!(unchanged["status"].get("conditions").is_none(), "{unchanged}");
}

#[test]
fn selectable_fields_select_custom_resources() {
    let dir = tempfile::tempdir().unwrap();
    let kp = apiserver(dir.path());
    let ep = kp.endpoint();
    let crd = |paths: &str| {
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: shirts.stable.example.com}}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {{plural: shirts, singular: shirt, kind: Shirt}}
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields: [{paths}]
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {{type: string}}
              size: {{type: integer}}
"#
        )
    };
    let bad = kp.kubectl_stdin(&["create", "-f", "-"], &crd("{jsonPath: .spec.colour}, {jsonPath: .spec}"));
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("spec.versions[0].selectableFields[0].jsonPath: Invalid value: \".spec.colour\": is an invalid path: does not refer to a valid field"),
        "{err}"
    );
    assert!(err.contains("must point to a field of type string, boolean or integer"), "{err}");
    assert!(kp
        .etcd_get(&ep, "/registry/apiextensions.k8s.io/customresourcedefinitions/shirts.stable.example.com")
        .is_none());

    let out = kp.kubectl_stdin(&["create", "-f", "-"], &crd("{jsonPath: .spec.color}, {jsonPath: .spec.size}"));
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["wait", "--for=condition=Established", "crd/shirts.stable.example.com", "--timeout=20s"]);
    for (name, color, size) in [("a", "red", 1), ("b", "blue", 2), ("c", "red", 3)] {
        let shirt = format!(
            "apiVersion: stable.example.com/v1\nkind: Shirt\nmetadata: {{name: {name}, namespace: default}}\nspec: {{color: {color}, size: {size}}}\n"
        );
        let out = kp.kubectl_stdin(&["create", "-f", "-"], &shirt);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let names = |selector: &str| {
        let out = kp.kubectl_ok(&["get", "shirts", "--field-selector", selector, "-o", "name"]);
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(names("spec.color=red"), ["shirt.stable.example.com/a", "shirt.stable.example.com/c"]);
    assert_eq!(names("spec.color!=red"), ["shirt.stable.example.com/b"]);
    assert_eq!(names("spec.color=red,spec.size=3"), ["shirt.stable.example.com/c"]);
    assert_eq!(names("metadata.name=b"), ["shirt.stable.example.com/b"]);
    let unknown = kp.kubectl(&["get", "shirts", "--field-selector", "spec.fabric=silk"]);
    assert!(stderr(&unknown).contains("field label not supported: spec.fabric"), "{}", stderr(&unknown));

    // A watch with the selector sees only the matching objects.
    let watch = kp.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/shirts?watch=1&timeoutSeconds=1&fieldSelector=spec.color%3Dblue",
    ]);
    let events: Vec<serde_json::Value> = watch.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{watch}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
}

#[test]
fn approved_client_requests_are_signed_by_the_cluster_ca() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(&dir.path().join("data"), free_port());
    let pem = csr_pem(dir.path(), "jane", "dev");
    // Who asked is the authenticated requester, whatever the body claims (upstream's
    // PrepareForCreate); `kubectl get csr` shows it as REQUESTOR.
    let spoofed =
        csr_yaml("jane", &pem).replace("  usages:", "  username: mallory\n  groups: [evil]\n  usages:");
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &spoofed);
    assert!(out.status.success(), "{}", stderr(&out));
    let me = kp.kubectl_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    let stored = kp.etcd_get(&kp.endpoint(), "/registry/certificatesigningrequests/jane").unwrap();
    assert_eq!(stored["spec"]["username"], me.trim(), "{stored}");
    let groups = stored["spec"]["groups"].as_array().cloned().unwrap_or_default();
    assert!(
        groups.contains(&serde_json::json!("system:authenticated"))
            && !groups.contains(&serde_json::json!("evil")),
        "{stored}"
    );
    let listed = kp.kubectl_ok(&["get", "csr", "jane", "--no-headers"]);
    assert!(listed.contains(me.trim()), "{listed}");
    let server_usage = csr_yaml("web", &pem).replace("[client auth]", "[client auth, server auth]");
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &server_usage);
    assert!(out.status.success(), "{}", stderr(&out));
    // Not approved: never signed.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let pending = kp.kubectl_ok(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
    assert!(pending.is_empty(), "signed before approval: {pending}");

    kp.kubectl_ok(&["certificate", "approve", "jane", "web"]);
    let cert = common::eventually(20, "the signed certificate", || {
        let c = kp.kubectl_ok(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
        (!c.is_empty()).then_some(c)
    });
    let table = kp.kubectl_ok(&["get", "csr", "jane"]);
    assert!(table.contains("Approved,Issued"), "{table}");
    let failed = common::eventually(20, "the refused request's condition", || {
        let c = kp.kubectl_ok(&[
            "get",
            "csr",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ]);
        (!c.is_empty()).then_some(c)
    });
    assert_eq!(failed, "SignerValidationFailure");

    // The certificate works: kubectl authenticates with it as jane in group dev.
    let cert_pem = base64::engine::general_purpose::STANDARD.decode(cert.trim()).unwrap();
    let cert_file = dir.path().join("jane.crt");
    std::fs::write(dir.path().join("none"), "apiVersion: v1\nkind: Config\n").unwrap();
    std::fs::write(&cert_file, &cert_pem).unwrap();
    let out = Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(dir.path().join("none"))
        .args(["--server", &kp.api, "--insecure-skip-tls-verify"])
        .arg(format!("--client-certificate={}", cert_file.display()))
        .arg(format!("--client-key={}", dir.path().join("jane.key").display()))
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let who: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "jane");
    assert_eq!(who["status"]["userInfo"]["groups"], serde_json::json!(["dev", "system:authenticated"]));
}
