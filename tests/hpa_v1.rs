//! autoscaling/v1 HorizontalPodAutoscalers served next to autoscaling/v2 (the storage version),
//! with the real kubectl (1.27, which `autoscale`s through v1, and 1.32) and etcdctl: discovery
//! lists both versions with v2 preferred; objects are stored once, as v2; reads, writes and watches
//! through v1 convert as upstream (`targetCPUUtilizationPercentage` ⇄ the cpu Utilization metric,
//! other metrics and behavior in the `autoscaling.alpha.kubernetes.io/*` annotations).

mod common;

use std::process::{Command, Stdio};

use common::{eventually, free_port, stderr, stdout, Kplane};
use serde_json::Value;

fn kubectl_127() -> String {
    store::etcd_process::find_program("kubectl.1.27", &["/usr/lib/google-cloud-sdk/bin"])
        .expect("kubectl.1.27 is missing: the version-skew checks need it")
        .display()
        .to_string()
}

fn json_of(k: &Kplane, args: &[&str]) -> Value {
    serde_json::from_str(&k.kubectl_ok(args)).unwrap()
}

const MEMORY_HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: mem}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: memory, target: {type: AverageValue, averageValue: 100Mi}}
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 30}
"#;

#[test]
fn autoscaling_v1_serves_the_stored_v2_objects_converted() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kplane::start(dir.path(), free_port());
    let k127 = kubectl_127();

    // Discovery: both versions, v2 preferred (legacy and aggregated forms).
    let versions = k.kubectl_ok(&["api-versions"]);
    assert!(versions.lines().any(|l| l == "autoscaling/v1"), "{versions}");
    assert!(versions.lines().any(|l| l == "autoscaling/v2"), "{versions}");
    let group = json_of(&k, &["get", "--raw", "/apis/autoscaling"]);
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group}");
    let v1 = json_of(&k, &["get", "--raw", "/apis/autoscaling/v1"]);
    let names: Vec<&str> =
        v1["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], "{v1}");
    let v2 = json_of(&k, &["get", "--raw", "/apis/autoscaling/v2"]);
    assert_eq!(v1["resources"][0]["storageVersionHash"], v2["resources"][0]["storageVersionHash"]);
    let out = k.kubectl_program(&k127, &["api-resources", "--api-group", "autoscaling", "-o", "wide"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("autoscaling/v2"), "{}", stdout(&out));

    // kubectl 1.27 autoscales through autoscaling/v1.
    k.kubectl_ok(&["create", "deployment", "web", "--image=nginx"]);
    let out = k.kubectl_program(
        &k127,
        &["autoscale", "deployment", "web", "--min=1", "--max=3", "--cpu-percent=50", "-v=6"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"),
        "{}",
        stderr(&out)
    );
    for program in ["kubectl", k127.as_str()] {
        let out = k.kubectl_program(program, &["get", "hpa", "web"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("/50%"), "{program}: {}", stdout(&out));
    }
    // The v1 table prints the targets too.
    let row = k.kubectl_ok(&["get", "horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert!(row.contains("/50%"), "{row}");

    let h1 = json_of(&k, &["get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json"]);
    assert_eq!(h1["apiVersion"], "autoscaling/v1");
    assert_eq!(h1["spec"]["targetCPUUtilizationPercentage"], 50, "{h1}");
    assert_eq!(h1["spec"]["minReplicas"], 1);
    assert!(h1["spec"].get("metrics").is_none(), "{h1}");
    let h2 = json_of(&k, &["get", "hpa", "web", "-o", "json"]);
    assert_eq!(h2["apiVersion"], "autoscaling/v2");
    assert_eq!(h2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50, "{h2}");

    // Stored once, as v2.
    let stored = k.etcd_get(&k.endpoint(), "/registry/horizontalpodautoscalers/default/web").unwrap();
    assert_eq!(stored["apiVersion"], "autoscaling/v2", "{stored}");
    assert_eq!(stored["spec"]["metrics"][0]["resource"]["name"], "cpu", "{stored}");
    assert!(stored["spec"].get("targetCPUUtilizationPercentage").is_none(), "{stored}");

    // Status through v1: the controller's v2 status reads back as v1's fields.
    let h1 = eventually(60, "status through v1", || {
        let h = json_of(&k, &["get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json"]);
        h["status"].get("currentReplicas").is_some().then_some(h)
    });
    assert!(h1["status"].get("desiredReplicas").is_some(), "{h1}");
    assert!(h1["status"].get("currentMetrics").is_none() && h1["status"].get("conditions").is_none(), "{h1}");

    // A v2 object with a memory metric read through v1 keeps it (and its behavior) in annotations,
    // and a v1 update writes them back.
    let out = k.kubectl_stdin(&["apply", "-f", "-"], MEMORY_HPA);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut m1 = json_of(&k, &["get", "horizontalpodautoscalers.v1.autoscaling", "mem", "-o", "json"]);
    assert_eq!(m1["spec"]["targetCPUUtilizationPercentage"], 60, "{m1}");
    let ann = &m1["metadata"]["annotations"];
    let metrics: Value =
        serde_json::from_str(ann["autoscaling.alpha.kubernetes.io/metrics"].as_str().unwrap()).unwrap();
    assert_eq!(
        metrics,
        serde_json::json!([{"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}])
    );
    let behavior: Value =
        serde_json::from_str(ann["autoscaling.alpha.kubernetes.io/behavior"].as_str().unwrap()).unwrap();
    assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 30);
    m1["spec"]["maxReplicas"] = 6.into();
    m1["spec"]["targetCPUUtilizationPercentage"] = 70.into();
    let out = k.kubectl_stdin(&["replace", "-f", "-"], &m1.to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let m2 = json_of(&k, &["get", "hpa", "mem", "-o", "json"]);
    assert_eq!(m2["spec"]["maxReplicas"], 6);
    let metrics = m2["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2, "{m2}");
    assert_eq!(metrics[0]["resource"]["name"], "memory");
    assert_eq!(metrics[0]["resource"]["target"]["averageValue"], "100Mi");
    assert_eq!(metrics[1]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(m2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 30);
    let stored = k.etcd_get(&k.endpoint(), "/registry/horizontalpodautoscalers/default/mem").unwrap();
    assert_eq!(stored["apiVersion"], "autoscaling/v2");
    let annotations = stored["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    assert!(annotations.keys().all(|a| !a.starts_with("autoscaling.alpha.kubernetes.io/")), "{stored}");

    // A merge patch through v1 changes the cpu target of the stored metric.
    k.kubectl_ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":65}}"#,
    ]);
    let h2 = json_of(&k, &["get", "hpa", "web", "-o", "json"]);
    assert_eq!(h2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 65, "{h2}");

    // Bad input through v1: upstream's Invalid status, nothing written.
    let out = k.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","metadata":{"name":"bad"},"spec":{"scaleTargetRef":{"kind":"Deployment","name":"web"},"minReplicas":3,"maxReplicas":2}}"#,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("spec.minReplicas"), "{}", stderr(&out));
    assert!(k.etcd_get(&k.endpoint(), "/registry/horizontalpodautoscalers/default/bad").is_none());

    // A watch through v1 gets v1 objects.
    let mut watch = Command::new(&k127)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args([
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "--watch-only",
            "-o",
            "json",
            "--request-timeout=20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    k.kubectl_ok(&["patch", "hpa", "web", "--type=merge", "-p", r#"{"spec":{"maxReplicas":9}}"#]);
    // The event reaches kubectl well within this (it is not a timing assertion: a slower event
    // fails the test, as a missing one would).
    std::thread::sleep(std::time::Duration::from_secs(4));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut events = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    while let Some(Ok(v)) = de.next() {
        events.push(v);
    }
    let ev = events.iter().find(|e| e["metadata"]["name"] == "web" && e["spec"]["maxReplicas"] == 9);
    let ev = ev.unwrap_or_else(|| panic!("no watch event for web: {text}"));
    assert_eq!(ev["apiVersion"], "autoscaling/v1");
    assert_eq!(ev["spec"]["targetCPUUtilizationPercentage"], 65);
}
