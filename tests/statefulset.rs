//! StatefulSets on a real `kplane up`, driven by the real kubectl (and the real `dig`): ordered
//! creation and scale-down, Parallel management, per-pod DNS through the headless Service, claims
//! bound by the built-in provisioner with the retention policy honoured, a partitioned rolling
//! update, OnDelete, `kubectl rollout status/history/undo`, and DefaultStorageClass admission.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_rollback_skipped, eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

/// A cluster on address ranges of its own (`i` < 4), apart from those other test binaries use.
fn up(i: u32) -> (Kplane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--cluster-cidr".to_string(),
        format!("127.{}.0.0/16", 60 + i),
        "--service-cluster-ip-range".into(),
        format!("127.{}.0.0/16", 70 + i),
        "--ingress-http-address".into(),
        format!("127.{}.0.1:80", 80 + i),
        "--ingress-https-address".into(),
        format!("127.{}.0.1:443", 80 + i),
        "--service-node-port-range".into(),
        format!("{}-{}", 32500 + 60 * i, 32559 + 60 * i),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let kp = Kplane::start_with(dir.path(), free_port(), &flags);
    (kp, dir)
}

fn json(kp: &Kplane, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&a)).unwrap()
}

fn apply(kp: &Kplane, yaml: &str) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// name -> pod, of the pods labelled app=`app`.
fn pods(kp: &Kplane, app: &str) -> Vec<Value> {
    json(kp, &["get", "pods", "-l", &format!("app={app}")])["items"].as_array().unwrap().clone()
}

fn names(pods: &[Value]) -> BTreeSet<String> {
    pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn ready_since(pod: &Value) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| c["lastTransitionTime"].as_str().unwrap().to_string())
}

fn dig(server: &str, name: &str) -> BTreeSet<String> {
    let out = Command::new("dig")
        .args([&format!("@{server}"), "+short", "+time=2", "+tries=1", name])
        .output()
        .unwrap_or_else(|e| {
            panic!("dig could not run ({e}); install dnsutils: these tests must not be skipped")
        });
    assert!(out.status.success(), "dig {name}: {}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

fn set_yaml(name: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}-svc}}
spec:
  clusterIP: None
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  serviceName: {name}-svc
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
{extra_spec}  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: nginx, image: nginx, ports: [{{containerPort: 80}}]}}]
"
    )
}

/// The messages of the events of `reason`, oldest first (by eventTime: the controller's events are
/// events.k8s.io ones, without lastTimestamp).
fn event_messages(kp: &Kplane, reason: &str) -> Vec<String> {
    let ev = json(kp, &["get", "events", "--field-selector", &format!("reason={reason}")]);
    let mut v: Vec<(String, String)> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let t = e["eventTime"].as_str().or(e["lastTimestamp"].as_str()).unwrap_or("").to_string();
            (t, e["message"].as_str().unwrap_or("").to_string())
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, m)| m).collect()
}

fn images(kp: &Kplane, app: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pods(kp, app)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["containers"][0]["image"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn ordered_set_with_claims_per_pod_dns_and_retention() {
    let (kp, _dir) = up(0);
    let extra = "  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
";
    apply(&kp, &set_yaml("web", 3, extra));
    kp.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=90s"]);

    // Ordered: each pod was created only once the one before it was Ready.
    let all = pods(&kp, "web");
    assert_eq!(names(&all), ["web-0", "web-1", "web-2"].map(String::from).into_iter().collect());
    let by = |n: &str| all.iter().find(|p| p["metadata"]["name"] == n).unwrap().clone();
    for i in 1..3 {
        let created = by(&format!("web-{i}"))["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
        let before = ready_since(&by(&format!("web-{}", i - 1))).expect("ready");
        assert!(created >= before, "web-{i} created at {created}, before web-{} was Ready at {before}", i - 1);
    }
    // Identity: labels, hostname, subdomain, the claim as a volume.
    let p1 = by("web-1");
    assert_eq!(p1["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(p1["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    let set = json(&kp, &["get", "statefulset", "web"]);
    let rev = set["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_eq!(p1["metadata"]["labels"]["controller-revision-hash"], rev.as_str());
    assert_eq!(p1["spec"]["hostname"], "web-1");
    assert_eq!(p1["spec"]["subdomain"], "web-svc");
    assert_eq!(p1["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "www-web-1");
    assert_eq!(p1["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    let st = &set["status"];
    for f in ["replicas", "readyReplicas", "availableReplicas", "currentReplicas", "updatedReplicas"] {
        assert_eq!(st[f], 3, "{f} in {st}");
    }
    assert_eq!(st["currentRevision"], rev.as_str());
    assert_eq!(st["observedGeneration"], set["metadata"]["generation"]);
    let events = kp.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.kind=StatefulSet"]);
    for i in 0..3 {
        assert!(events.contains(&format!("create Pod web-{i} in StatefulSet web successful")), "{events}");
    }

    // Claims: made by the set, defaulted to the default class, bound to provisioned volumes.
    let sc = json(&kp, &["get", "storageclass", "standard"]);
    assert_eq!(sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"], "true");
    assert_eq!(sc["provisioner"], "kplane.io/hostpath");
    for i in 0..3 {
        let pvc = eventually(20, "claim bound", || {
            let c = json(&kp, &["get", "pvc", &format!("www-web-{i}")]);
            (c["status"]["phase"] == "Bound").then_some(c)
        });
        assert_eq!(pvc["spec"]["storageClassName"], "standard");
        assert_eq!(pvc["metadata"]["labels"]["app"], "web");
        assert_eq!(pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
        let pv_name = pvc["spec"]["volumeName"].as_str().unwrap();
        let pv = json(&kp, &["get", "pv", pv_name]);
        assert_eq!(pv["status"]["phase"], "Bound");
        assert_eq!(pv["spec"]["claimRef"]["name"], format!("www-web-{i}"));
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        let path = pv["spec"]["hostPath"]["path"].as_str().unwrap();
        assert_eq!(path, format!("{}/volumes/{pv_name}", kp.data_dir.display()));
        // whenDeleted=Delete: the set owns its claims.
        assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    }

    // Per-pod DNS through the headless Service.
    let dns = json(&kp, &["get", "svc", "-n", "kube-system", "kube-dns"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let ips: Vec<String> =
        (0..3).map(|i| by(&format!("web-{i}"))["status"]["podIP"].as_str().unwrap().to_string()).collect();
    for (i, ip) in ips.iter().enumerate() {
        let got = eventually(20, "per-pod A record", || {
            let a = dig(&dns, &format!("web-{i}.web-svc.default.svc.cluster.local"));
            (!a.is_empty()).then_some(a)
        });
        assert_eq!(got, [ip.clone()].into_iter().collect(), "web-{i}");
    }
    let all_ips: BTreeSet<String> = ips.iter().cloned().collect();
    eventually(20, "headless service lists every ready pod", || {
        (dig(&dns, "web-svc.default.svc.cluster.local") == all_ips).then_some(())
    });

    // Scale down: the highest ordinal first, one at a time; whenScaled=Delete removes their claims.
    kp.kubectl_ok(&["scale", "statefulset/web", "--replicas=1"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = names(&pods(&kp, "web"));
        // web-1 must not go while web-2 is still there.
        assert!(!live.contains("web-2") || live.contains("web-1"), "web-1 went before web-2: {live:?}");
        if live == ["web-0".to_string()].into_iter().collect() {
            break;
        }
        assert!(Instant::now() < deadline, "scale down did not finish: {live:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deletes = event_messages(&kp, "SuccessfulDelete");
    assert_eq!(
        deletes,
        ["delete Pod web-2 in StatefulSet web successful", "delete Pod web-1 in StatefulSet web successful"]
    );
    eventually(30, "the scaled-away claims and their volumes deleted", || {
        let claims = kp.kubectl_ok(&["get", "pvc", "-o", "name"]);
        let volumes = kp.kubectl_ok(&["get", "pv", "-o", "name"]);
        (claims.trim() == "persistentvolumeclaim/www-web-0" && volumes.lines().count() == 1).then_some(())
    });

    // whenDeleted=Delete: deleting the set deletes the last claim, and its Delete-policy volume.
    kp.kubectl_ok(&["delete", "statefulset", "web"]);
    eventually(30, "claims and volumes gone with the set", || {
        let claims = kp.kubectl_ok(&["get", "pvc", "-o", "name"]);
        let volumes = kp.kubectl_ok(&["get", "pv", "-o", "name"]);
        (claims.trim().is_empty() && volumes.trim().is_empty()).then_some(())
    });
}

#[test]
fn partitioned_rolling_update_history_and_undo() {
    let (kp, _dir) = up(1);
    apply(&kp, &set_yaml("db", 3, ""));
    kp.kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    let rev1 =
        json(&kp, &["get", "statefulset", "db"])["status"]["currentRevision"].as_str().unwrap().to_string();

    // partition 2 of 3: only db-2 is updated.
    kp.kubectl_ok(&[
        "patch",
        "statefulset",
        "db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    kp.kubectl_ok(&["annotate", "statefulset", "db", "kubernetes.io/change-cause=to 1.25"]);
    kp.kubectl_ok(&["set", "image", "statefulset/db", "nginx=nginx:1.25"]);
    let out = kp.kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    assert!(out.contains("partitioned roll out complete: 1 new pods have been updated"), "{out}");
    let want = |imgs: [&str; 3]| -> Vec<(String, String)> {
        imgs.iter().enumerate().map(|(i, im)| (format!("db-{i}"), im.to_string())).collect()
    };
    eventually(30, "only db-2 updated", || {
        (images(&kp, "db") == want(["nginx", "nginx", "nginx:1.25"])).then_some(())
    });
    let st = json(&kp, &["get", "statefulset", "db"])["status"].clone();
    assert_eq!(st["updatedReplicas"], 1, "{st}");
    assert_eq!(st["currentReplicas"], 2, "{st}");
    assert_eq!(st["currentRevision"], rev1.as_str());
    let rev2 = st["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);

    // partition 0: the rest, from the highest ordinal down.
    kp.kubectl_ok(&[
        "patch",
        "statefulset",
        "db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    kp.kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    eventually(30, "all updated", || (images(&kp, "db") == want(["nginx:1.25"; 3])).then_some(()));
    let st = eventually(30, "rollout completes", || {
        let st = json(&kp, &["get", "statefulset", "db"])["status"].clone();
        (st["currentRevision"] == rev2.as_str() && st["currentReplicas"] == 3).then_some(st)
    });
    assert_eq!(st["updatedReplicas"], 3);
    let deletes = event_messages(&kp, "SuccessfulDelete");
    let at =
        |pod: &str| deletes.iter().position(|m| m == &format!("delete Pod {pod} in StatefulSet db successful"));
    assert!(at("db-2").is_some() && at("db-2") < at("db-1") && at("db-1") < at("db-0"), "{deletes:?}");

    // History through ControllerRevisions: kubectl lists both, with the change cause.
    let hist = kp.kubectl_ok(&["rollout", "history", "statefulset/db"]);
    let rows: Vec<Vec<&str>> =
        hist.lines().skip(2).filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{hist}");
    assert_eq!(rows[0][0], "1");
    assert_eq!(rows[1][0], "2");
    assert!(hist.contains("to 1.25"), "{hist}");
    let r1 = kp.kubectl_ok(&["rollout", "history", "statefulset/db", "--revision=1"]);
    assert!(r1.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Image:", "nginx"]), "{r1}");
    let crs = json(&kp, &["get", "controllerrevisions", "-l", "app=db"]);
    let crs = crs["items"].as_array().unwrap();
    assert_eq!(crs.len(), 2);
    for cr in crs {
        assert_eq!(cr["metadata"]["ownerReferences"][0]["name"], "db");
        let name = cr["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            name,
            format!("db-{}", cr["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap())
        );
    }

    // Undo: back to revision 1's template, which becomes revision 3.
    let out = kp.kubectl_ok(&["rollout", "undo", "statefulset/db"]);
    assert!(out.contains("rolled back"), "{out}");
    kp.kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    eventually(60, "rolled back", || (images(&kp, "db") == want(["nginx"; 3])).then_some(()));
    let st = eventually(30, "undo completes", || {
        let st = json(&kp, &["get", "statefulset", "db"])["status"].clone();
        (st["currentRevision"] == rev1.as_str() && st["updateRevision"] == rev1.as_str()).then_some(st)
    });
    assert_eq!(st["updatedReplicas"], 3);
    let hist = kp.kubectl_ok(&["rollout", "history", "statefulset/db"]);
    let revs: Vec<&str> = hist.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revs, ["2", "3"], "{hist}");
    // Undoing to what is already current is refused by kubectl.
    assert_rollback_skipped(&kp.kubectl(&["rollout", "undo", "statefulset/db", "--to-revision=3"]));
}

#[test]
fn parallel_ordered_and_on_delete() {
    let (kp, _dir) = up(2);
    // Pods that cannot be scheduled stay Pending (never Ready): OrderedReady makes only the first,
    // Parallel makes them all.
    let pinned = "  template:\n    metadata: {labels: {app: X}}\n    spec:\n      nodeSelector: {nowhere: \"true\"}\n      containers: [{name: nginx, image: nginx}]\n";
    let yaml = |name: &str, policy: &str| {
        set_yaml(name, 3, &format!("  podManagementPolicy: {policy}\n"))
            .split("  template:")
            .next()
            .unwrap()
            .to_string()
            + &pinned.replace("app: X", &format!("app: {name}"))
    };
    apply(&kp, &yaml("par", "Parallel"));
    apply(&kp, &yaml("ord", "OrderedReady"));
    eventually(20, "Parallel creates every pod at once", || {
        (names(&pods(&kp, "par")).len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(names(&pods(&kp, "ord")), ["ord-0".to_string()].into_iter().collect());
    // Parallel scale-down removes all extra pods without waiting for any to be Ready.
    kp.kubectl_ok(&["scale", "statefulset/par", "--replicas=1"]);
    eventually(30, "Parallel scale down", || {
        let live: Vec<Value> =
            pods(&kp, "par").into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        (names(&live) == ["par-0".to_string()].into_iter().collect()).then_some(())
    });

    // OnDelete: a new template reaches only the pods someone deletes.
    apply(&kp, &set_yaml("od", 2, "  updateStrategy: {type: OnDelete}\n"));
    eventually(60, "od ready", || {
        let s = json(&kp, &["get", "statefulset", "od"]);
        (s["status"]["readyReplicas"] == 2).then_some(())
    });
    kp.kubectl_ok(&["set", "image", "statefulset/od", "nginx=nginx:1.25"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(images(&kp, "od"), vec![("od-0".into(), "nginx".into()), ("od-1".into(), "nginx".into())]);
    let st = json(&kp, &["get", "statefulset", "od"])["status"].clone();
    assert_eq!(st["updatedReplicas"], 0, "{st}");
    kp.kubectl_ok(&["delete", "pod", "od-1"]);
    eventually(60, "od-1 recreated at the new revision", || {
        (images(&kp, "od") == vec![("od-0".into(), "nginx".into()), ("od-1".into(), "nginx:1.25".into())])
            .then_some(())
    });
    let st = eventually(30, "status counts", || {
        let st = json(&kp, &["get", "statefulset", "od"])["status"].clone();
        (st["updatedReplicas"] == 1 && st["currentReplicas"] == 1).then_some(st)
    });
    assert_ne!(st["currentRevision"], st["updateRevision"]);

    // DefaultStorageClass: a claim naming no class gets the default one (and is bound); an
    // explicit "" asks for no class: not defaulted, not ours to provision.
    let claim = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 2Gi}}}}\n"
        )
    };
    apply(&kp, &claim("plain", ""));
    apply(&kp, &claim("none", "  storageClassName: \"\"\n"));
    let plain = eventually(20, "plain claim bound", || {
        let c = json(&kp, &["get", "pvc", "plain"]);
        (c["status"]["phase"] == "Bound").then_some(c)
    });
    assert_eq!(plain["spec"]["storageClassName"], "standard");
    assert_eq!(plain["status"]["capacity"]["storage"], "2Gi");
    std::thread::sleep(Duration::from_secs(1));
    let none = json(&kp, &["get", "pvc", "none"]);
    assert_eq!(none["spec"]["storageClassName"], "");
    assert_eq!(none["status"]["phase"], "Pending");
    assert!(none["spec"]["volumeName"].is_null());
}
