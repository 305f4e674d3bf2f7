//! Containers that run their command, with the real kubectl: a failing command and its exit code
//! and logs, a crash loop, init containers in order, a Job-like pod that completes, and a pod that
//! reaches a Service through the cluster DNS with curl, from its own IP.

mod common;

use common::{eventually, free_port, stderr, Kplane};
use serde_json::Value;

fn pod_json(kp: &Kplane, name: &str) -> Value {
    serde_json::from_str(&kp.kubectl_ok(&["get", "pod", name, "-o", "json"])).unwrap()
}

fn apply(kp: &Kplane, yaml: &str) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// The STATUS column `kubectl get pod` prints.
fn kubectl_status(kp: &Kplane, name: &str) -> String {
    let out = kp.kubectl_ok(&["get", "pod", name, "--no-headers"]);
    out.split_whitespace().nth(2).unwrap_or_default().to_string()
}

#[test]
fn commands_run_exit_and_log_as_kubectl_shows() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    // The pod: exit 3, restartPolicy Never → Failed; `kubectl logs` shows its output.
    apply(
        &kp,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: fails}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, \"echo hi; exit 3\"]\n",
    );
    let p = eventually(30, "fails Failed", || {
        let p = pod_json(&kp, "fails");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((t["exitCode"].as_i64(), t["reason"].as_str()), (Some(3), Some("Error")));
    assert_eq!(kp.kubectl_ok(&["logs", "fails"]), "hi\n");
    // Never restarted: no previous instance, upstream's kubelet error.
    let out = kp.kubectl(&["logs", "fails", "--previous"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("previous terminated container"), "{}", stderr(&out));
    assert_eq!(kubectl_status(&kp, "fails"), "Error");

    // A Job-like pod: runs to success → Succeeded, STATUS Completed.
    kp.kubectl_ok(&["run", "once", "--image=busybox", "--restart=Never", "--", "sh", "-c", "echo done"]);
    eventually(30, "once Succeeded", || {
        (pod_json(&kp, "once")["status"]["phase"] == "Succeeded").then_some(())
    });
    assert_eq!(kubectl_status(&kp, "once"), "Completed");
    assert_eq!(kp.kubectl_ok(&["logs", "once"]), "done\n");

    // A command that keeps failing: CrashLoopBackOff, then restarted after the back-off.
    kp.kubectl_ok(&["run", "crashy", "--image=busybox", "--", "sh", "-c", "echo boom; exit 1"]);
    eventually(30, "CrashLoopBackOff", || (kubectl_status(&kp, "crashy") == "CrashLoopBackOff").then_some(()));
    let p = eventually(40, "restarted once", || {
        let p = pod_json(&kp, "crashy");
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(p)
    });
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(kp.kubectl_ok(&["logs", "crashy"]), "boom\n");
    // The instance before the restart, as `--previous` shows it.
    assert_eq!(kp.kubectl_ok(&["logs", "crashy", "--previous"]), "boom\n");

    // Init containers run in order before the app container (kubectl shows Init:1/2 meanwhile).
    apply(
        &kp,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ordered}\nspec:\n  restartPolicy: Never\n  volumes: [{name: work, emptyDir: {}}]\n  initContainers:\n  - {name: first, image: busybox, command: [sh, -c, 'echo first > /work/log'], volumeMounts: [{name: work, mountPath: /work}]}\n  - {name: second, image: busybox, command: [sh, -c, 'sleep 2; echo second >> /work/log'], volumeMounts: [{name: work, mountPath: /work}]}\n  containers:\n  - {name: main, image: busybox, command: [cat, /work/log], volumeMounts: [{name: work, mountPath: /work}]}\n",
    );
    eventually(30, "Init:1/2", || (kubectl_status(&kp, "ordered") == "Init:1/2").then_some(()));
    eventually(30, "ordered Completed", || (kubectl_status(&kp, "ordered") == "Completed").then_some(()));
    assert_eq!(kp.kubectl_ok(&["logs", "ordered"]), "first\nsecond\n");
    assert_eq!(kp.kubectl_ok(&["logs", "ordered", "-c", "first"]), "");
}

#[test]
fn a_pod_curls_a_service_by_name_through_the_cluster_dns() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port().to_string();
    let kp = Kplane::start_with(dir.path(), free_port(), &["--cluster-dns-port", &dns_port]);
    kp.seed_nginx();
    kp.kubectl_ok(&[
        "run",
        "client",
        "--image=tutum/curl",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "cat /etc/resolv.conf; curl -I nginx-svc:8080; curl -s -o /dev/null nginx-svc.default.svc.cluster.local:8080 && echo fqdn ok; curl -sS 8.8.8.8:53; echo $?",
    ]);
    eventually(60, "client done", || (pod_json(&kp, "client")["status"]["phase"] == "Succeeded").then_some(()));
    let log = kp.kubectl_ok(&["logs", "client"]);
    assert!(
        log.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver "),
        "{log}"
    );
    assert!(log.contains("options ndots:5\n"), "{log}");
    assert!(log.contains("HTTP/1.1 200 OK"), "{log}");
    assert!(log.contains("fqdn ok\n"), "{log}");
    assert!(
        log.ends_with("curl: (7) Failed to connect to 8.8.8.8 port 53: address not in the cluster\n7\n"),
        "{log}"
    );
}

/// Containers get upstream's Service variables: every Service of the pod's namespace (the
/// kubelet's Service informer), and `kubernetes` only when service links are off or the pod is in
/// another namespace.
#[test]
fn containers_see_the_services_of_their_namespace_as_variables() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    kp.kubectl_ok(&["create", "service", "clusterip", "web-svc", "--tcp=80:8080"]);
    kp.kubectl_ok(&["create", "namespace", "other"]);
    kp.kubectl_ok(&["-n", "other", "create", "service", "clusterip", "db", "--tcp=5432:5432"]);
    let ip = |ns: &str, name: &str| {
        kp.kubectl_ok(&["-n", ns, "get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"])
    };
    let (web, db, api) = (ip("default", "web-svc"), ip("other", "db"), ip("default", "kubernetes"));
    let show = "echo web=$WEB_SVC_SERVICE_HOST:$WEB_SVC_SERVICE_PORT db=$DB_SERVICE_HOST:$DB_PORT_5432_TCP_PORT api=$KUBERNETES_SERVICE_HOST";
    let run = |ns: &str, name: &str, links: bool| {
        apply(
            &kp,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  restartPolicy: Never\n  enableServiceLinks: {links}\n  containers:\n  - {{name: main, image: busybox, command: [sh, -c, '{show}']}}\n"
            ),
        );
        eventually(30, "Succeeded", || {
            let p: Value =
                serde_json::from_str(&kp.kubectl_ok(&["-n", ns, "get", "pod", name, "-o", "json"])).unwrap();
            (p["status"]["phase"] == "Succeeded").then_some(())
        });
        kp.kubectl_ok(&["-n", ns, "logs", name])
    };
    assert_eq!(run("default", "here", true), format!("web={web}:80 db=: api={api}\n"));
    assert_eq!(run("other", "there", true), format!("web=: db={db}:5432 api={api}\n"));
    assert_eq!(run("other", "nolinks", false), format!("web=: db=: api={api}\n"));
}
