//! The HorizontalPodAutoscaler controller with the real kubectl against `kplane up` (issue 18,
//! items 6 and 8): `kubectl autoscale` creates an HPA for a Deployment; HTTP load sent from this
//! test through the Service's ClusterIP (loopback) raises the simulated pods' CPU, the HPA scales
//! the Deployment up (`SuccessfulRescale` naming upstream's reason, `kubectl get hpa` TARGETS like
//! `cpu: 80%/50%`, conditions with upstream's reasons), and once the load stops it scales back down
//! after its (short) scale-down stabilization window. Faults: a missing target (FailedGetScale) and
//! pods without CPU requests (FailedGetResourceMetric, `missing request for cpu`).

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, free_port, stderr, Kplane};
use serde_json::Value;

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: server
        image: nginx
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 50m}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bare}
spec:
  replicas: 1
  selector: {matchLabels: {app: bare}}
  template:
    metadata: {labels: {app: bare}}
    spec:
      containers: [{name: server, image: nginx, ports: [{containerPort: 8080}]}]
"#;

fn hpa(k: &Kplane, name: &str) -> Value {
    serde_json::from_str(&k.kubectl_ok(&["get", "hpa", name, "-o", "json"])).unwrap()
}

fn condition(h: &Value, ty: &str) -> Option<(String, String, String)> {
    let c = h["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == ty)?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

fn replicas(k: &Kplane) -> i64 {
    let d: Value = serde_json::from_str(&k.kubectl_ok(&["get", "deployment", "web", "-o", "json"])).unwrap();
    d["spec"]["replicas"].as_i64().unwrap_or(0)
}

/// Sends HTTP requests to `addr` (one connection each, so the proxy spreads them over the pods)
/// from `threads` threads, each pausing `pause` between requests, until `stop`.
fn load(
    addr: String,
    threads: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    assert!(addr.starts_with("127."), "load goes to loopback only: {addr}");
    (0..threads)
        .map(|_| {
            let (addr, stop, ok) = (addr.clone(), stop.clone(), ok.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        if s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").is_ok() {
                            let mut buf = Vec::new();
                            if s.read_to_end(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    std::thread::sleep(pause);
                }
            })
        })
        .collect()
}

#[test]
fn an_hpa_scales_a_deployment_up_under_load_and_down_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kplane::start_with(dir.path(), free_port(), &["--horizontal-pod-autoscaler-sync-period", "1s"]);
    let out = k.kubectl_stdin(&["apply", "-f", "-"], WEB);
    assert!(out.status.success(), "{}", stderr(&out));
    k.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    k.kubectl_ok(&["rollout", "status", "deployment/bare", "--timeout=60s"]);

    // The real kubectl's generator (autoscaling/v2 in 1.32), then a short scale-down window.
    k.kubectl_ok(&["autoscale", "deployment", "web", "--cpu-percent=50", "--min=1", "--max=4"]);
    k.kubectl_ok(&[
        "patch",
        "hpa",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":5}}}}"#,
    ]);
    assert_eq!(hpa(&k, "web")["apiVersion"], "autoscaling/v2");

    // Idle: the metric is found, below target, nothing to do at 1 replica.
    let idle = eventually(60, "the HPA to find its metric", || {
        let h = hpa(&k, "web");
        let active = condition(&h, "ScalingActive")?;
        (active.1 == "ValidMetricFound").then_some(h)
    });
    let (_, _, msg) = condition(&idle, "ScalingActive").unwrap();
    assert_eq!(msg, "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)");
    assert_eq!(condition(&idle, "AbleToScale").unwrap().0, "True");
    let util =
        idle["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64().unwrap();
    assert!(util < 45, "an idle pod uses its baseline (5% of its request plus little): {util}%");
    assert_eq!(replicas(&k), 1);

    // Load through the Service's ClusterIP: ~100 requests/s = ~100m against 50m requests.
    let vip = k.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let threads = load(format!("{}:80", vip.trim()), 2, Duration::from_millis(20), stop.clone(), ok.clone());
    let targets = eventually(90, "the HPA to scale web up", || {
        let r = replicas(&k);
        if r < 2 {
            return None;
        }
        let line = k.kubectl_ok(&["get", "hpa", "web"]);
        Some((r, line))
    });
    // TARGETS as upstream's printer shows it, e.g. `cpu: 180%/50%`.
    let row = targets.1.lines().nth(1).unwrap().to_string();
    assert!(row.contains(" cpu: "), "{row}");
    let t = row.split_whitespace().find(|w| w.contains("%/")).unwrap_or_else(|| panic!("TARGETS in {row}"));
    let pct: i64 = t.split('%').next().unwrap().parse().unwrap_or_else(|_| panic!("TARGETS in {row}"));
    assert!(pct > 50, "{row}");
    assert!(row.contains("/50%"), "{row}");
    let events = k.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
        "-o",
        "json",
    ]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let note = events["items"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(
        note.starts_with("New size: ")
            && note.ends_with("; reason: cpu resource utilization (percentage of request) above target"),
        "{note}"
    );
    let h = hpa(&k, "web");
    assert!(h["status"]["lastScaleTime"].is_string(), "{h}");
    assert!(h["status"]["desiredReplicas"].as_i64().unwrap() >= 2, "{h}");
    // The load keeps it up to the maximum at most.
    std::thread::sleep(Duration::from_secs(5));
    let r = replicas(&k);
    assert!((2..=4).contains(&r), "{r}");

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 100, "the load was served through the VIP");

    // After the load: back to minReplicas once the 5 s window has passed.
    eventually(120, "the HPA to scale web back down to 1", || (replicas(&k) == 1).then_some(()));
    let h = hpa(&k, "web");
    assert_eq!(h["status"]["desiredReplicas"], 1, "{h}");
    let events = k.kubectl_ok(&["get", "events", "--field-selector", "reason=SuccessfulRescale", "-o", "json"]);
    assert!(events.contains("; reason: All metrics below target"), "{events}");

    // Faults: pods without a CPU request, and a target that does not exist.
    k.kubectl_ok(&["autoscale", "deployment", "bare", "--cpu-percent=50", "--min=1", "--max=3"]);
    let h = eventually(60, "ScalingActive=False on bare", || {
        let h = hpa(&k, "bare");
        (condition(&h, "ScalingActive")?.0 == "False").then_some(h)
    });
    let (_, reason, msg) = condition(&h, "ScalingActive").unwrap();
    assert_eq!(reason, "FailedGetResourceMetric");
    assert!(msg.contains("missing request for cpu in container server of Pod bare-"), "{msg}");
    let row = k.kubectl_ok(&["get", "hpa", "bare"]);
    assert!(row.contains("<unknown>/50%"), "{row}");

    let out = k.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: ghost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}}]\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let h = eventually(60, "AbleToScale=False on ghost", || {
        let h = hpa(&k, "ghost");
        (condition(&h, "AbleToScale")?.0 == "False").then_some(h)
    });
    let (_, reason, msg) = condition(&h, "AbleToScale").unwrap();
    assert_eq!(reason, "FailedGetScale");
    assert!(msg.starts_with("the HPA controller was unable to get the target's current scale: "), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
}
