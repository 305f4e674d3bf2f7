//! The HorizontalPodAutoscaler controller (upstream's `pkg/controller/podautoscaler`), for
//! autoscaling/v2 HPAs. Every `--horizontal-pod-autoscaler-sync-period` each HPA is reconciled:
//! the target's `scale` subresource (Deployment, ReplicaSet, StatefulSet, ReplicationController)
//! gives the current replicas and the pod selector; Resource metrics (cpu/memory, Utilization or
//! AverageValue) come from `metrics.k8s.io` through the API, the pods from the API; `calc.rs`
//! computes the desired count, `behavior.rs` stabilizes and rate-limits it, min/max bound it. A
//! change is written to the scale subresource (a `SuccessfulRescale` event), and the status
//! (currentReplicas, desiredReplicas, currentMetrics, lastScaleTime, and the AbleToScale,
//! ScalingActive and ScalingLimited conditions with upstream's reasons) is written when it changed.
//! Pods/Object/External/ContainerResource metrics need APIs kplane does not serve: they are
//! reported as upstream reports a metric it cannot get.

pub mod behavior;
pub mod calc;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::Stop;

pub const CONTROLLER: &str = "horizontal-pod-autoscaler";

struct State {
    ctx: Arc<Ctx>,
    history: Mutex<HashMap<String, behavior::History>>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let api: Api<HorizontalPodAutoscaler> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let state = Arc::new(State { ctx, history: Mutex::default() });
    drive(CONTROLLER, controller, stop, 5, reconcile, state).await;
}

/// The target's resource path (`apis/apps/v1/namespaces/ns/deployments`) from its scaleTargetRef.
fn target_path(api_version: &str, kind: &str, ns: &str) -> Option<String> {
    let plural = match kind {
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "StatefulSet" => "statefulsets",
        "ReplicationController" => "replicationcontrollers",
        _ => return None,
    };
    let base =
        if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    Some(format!("{base}/namespaces/{ns}/{plural}"))
}

async fn raw(client: &kube::Client, req: http::Request<Vec<u8>>) -> Result<Value, kube::Error> {
    client.request::<Value>(req).await
}

fn http_get(url: &str) -> http::Request<Vec<u8>> {
    http::Request::get(url).body(Vec::new()).unwrap_or_default()
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A metric's name as upstream's events and conditions say it.
fn metric_name(resource: &str, utilization: bool) -> String {
    if utilization {
        format!("{resource} resource utilization (percentage of request)")
    } else {
        format!("{resource} resource")
    }
}

/// A milli-unit amount as a quantity string (`40m`, `4194304`).
fn quantity(milli: i64) -> String {
    if milli % 1000 == 0 {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// One condition, keeping the old transition time when its status did not change.
fn condition(old: &[Value], ty: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let t = old
        .iter()
        .find(|c| c["type"] == ty && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    json!({"type": ty, "status": status, "lastTransitionTime": t, "reason": reason, "message": message})
}

struct Outcome {
    replicas: i32,
    name: String,
    statuses: Vec<Value>,
}

/// The pods' metrics for `resource` (milli-units, summed over containers) from metrics.k8s.io.
async fn pod_metrics(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
) -> Result<BTreeMap<String, calc::PodMetric>, String> {
    let url = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}", encode(selector));
    let list = raw(client, http_get(&url))
        .await
        .map_err(|e| format!("unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"))?;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else { continue };
        let mut sum = 0;
        let mut any = false;
        for c in item["containers"].as_array().into_iter().flatten() {
            if let Some(v) =
                c.pointer(&format!("/usage/{resource}")).and_then(Value::as_str).and_then(calc::milli)
            {
                sum += v;
                any = true;
            }
        }
        if !any {
            continue;
        }
        let timestamp =
            item["timestamp"].as_str().and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or_else(Timestamp::now);
        let window = item["window"]
            .as_str()
            .and_then(|w| w.strip_suffix('s'))
            .and_then(|w| w.parse::<f64>().ok())
            .and_then(|s| SignedDuration::try_from_secs_f64(s).ok())
            .unwrap_or(SignedDuration::from_secs(15));
        out.insert(name.to_string(), calc::PodMetric { value: sum, timestamp, window });
    }
    Ok(out)
}

/// Computes one metric's replica proposal and status.
async fn compute(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
    pods: &[Pod],
) -> Result<Outcome, (String, String)> {
    let Some(r) = spec.resource.as_ref().filter(|_| spec.type_ == "Resource") else {
        let (reason, what) = match spec.type_.as_str() {
            "Pods" => ("FailedGetPodsMetric", "pods"),
            "Object" => ("FailedGetObjectMetric", "object"),
            "External" => ("FailedGetExternalMetric", "external"),
            "ContainerResource" => ("FailedGetContainerResourceMetric", "container resource"),
            _ => ("InvalidMetricSourceType", ""),
        };
        let msg = if what.is_empty() {
            format!("unknown metric source type \"{}\"", spec.type_)
        } else {
            format!("unable to get {what} metric: kplane serves only the resource metrics API (metrics.k8s.io)")
        };
        return Err((reason.into(), msg));
    };
    let resource = r.name.as_str();
    let fail = |e: String| {
        (
            "FailedGetResourceMetric".to_string(),
            if r.target.type_ == "Utilization" {
                format!("failed to get {resource} utilization: {e}")
            } else {
                format!("failed to get {resource} usage: {e}")
            },
        )
    };
    let target = match (r.target.type_.as_str(), r.target.average_utilization, &r.target.average_value) {
        ("Utilization", Some(u), _) => calc::Target::Utilization(u),
        ("AverageValue", _, Some(v)) => calc::Target::AverageValue(calc::milli(&v.0).unwrap_or(0)),
        _ => {
            return Err((
                "FailedGetResourceMetric".into(),
                "invalid resource metric source: neither a utilization target nor a value target was set"
                    .into(),
            ))
        }
    };
    let metrics = pod_metrics(client, ns, selector, resource).await.map_err(fail)?;
    let c =
        calc::resource_replicas(current, target, resource, pods, &metrics, Timestamp::now()).map_err(fail)?;
    let mut cur = json!({"averageValue": quantity(c.average)});
    if let Some(u) = c.utilization {
        cur["averageUtilization"] = json!(u);
    }
    Ok(Outcome {
        replicas: c.replicas,
        name: metric_name(resource, matches!(target, calc::Target::Utilization(_))),
        statuses: vec![json!({"type": "Resource", "resource": {"name": resource, "current": cur}})],
    })
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, st: Arc<State>) -> Result<Action, ReconcileError> {
    let ctx = &st.ctx;
    let sync = ctx.config.horizontal_pod_autoscaler_sync_period.max(Duration::from_millis(100));
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let key = format!("{ns}/{name}");
    let client = &ctx.client;
    let spec = hpa.spec.clone().unwrap_or_default();
    let old_status = hpa.status.clone().unwrap_or_default();
    let old_conditions: Vec<Value> =
        old_status.conditions.iter().flatten().filter_map(|c| serde_json::to_value(c).ok()).collect();
    let now_ts = Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| Timestamp::now()).to_string();
    let cond =
        |ty: &str, ok: bool, reason: &str, msg: &str| condition(&old_conditions, ty, ok, reason, msg, &now_ts);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let write_status = |status: Value| {
        let hpas = hpas.clone();
        let name = name.clone();
        let old = serde_json::to_value(&old_status).unwrap_or(Value::Null);
        async move {
            let mut merged = old.clone();
            if let (Some(m), Some(s)) = (merged.as_object_mut(), status.as_object()) {
                for (k, v) in s {
                    m.insert(k.clone(), v.clone());
                }
            }
            if merged == old {
                return Ok::<(), kube::Error>(());
            }
            hpas.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
            Ok(())
        }
    };

    // The target's scale.
    let r = &spec.scale_target_ref;
    let Some(base) = target_path(&r.api_version.clone().unwrap_or_default(), &r.kind, &ns) else {
        let msg = format!("the HPA controller was unable to get the target's current scale: no matches for kind \"{}\" in group \"{}\"", r.kind, r.api_version.clone().unwrap_or_default());
        ctx.events.warning(CONTROLLER, hpa.as_ref(), "FailedGetScale", msg.clone());
        write_status(json!({"conditions": [cond("AbleToScale", false, "FailedGetScale", &msg)]})).await?;
        return Ok(Action::requeue(sync));
    };
    let scale_url = format!("{base}/{}/scale", r.name);
    let scale = match raw(client, http_get(&scale_url)).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("the HPA controller was unable to get the target's current scale: {e}");
            ctx.events.warning(CONTROLLER, hpa.as_ref(), "FailedGetScale", msg.clone());
            write_status(json!({"conditions": [cond("AbleToScale", false, "FailedGetScale", &msg)]})).await?;
            return Ok(Action::requeue(sync));
        }
    };
    let current = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) as i32;
    let status_replicas = scale.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0) as i32;
    let selector = scale.pointer("/status/selector").and_then(Value::as_str).unwrap_or("").to_string();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut conditions = vec![cond(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    )];
    let mut statuses: Vec<Value> = Vec::new();
    let mut reason = String::new();
    let desired;
    if current == 0 && min != 0 {
        desired = 0;
        conditions.push(cond(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
    } else if current > max {
        desired = max;
        reason = "Current number of replicas above Spec.MaxReplicas".into();
    } else if current < min {
        desired = min;
        reason = "Current number of replicas below Spec.MinReplicas".into();
    } else {
        // Metrics.
        if selector.is_empty() {
            let msg = "the HPA target's scale is missing a selector";
            ctx.events.warning(CONTROLLER, hpa.as_ref(), "SelectorRequired", "selector is required".into());
            conditions.push(cond("ScalingActive", false, "InvalidSelector", msg));
            write_status(json!({"conditions": conditions})).await?;
            return Ok(Action::requeue(sync));
        }
        let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        let mut best: Option<Outcome> = None;
        let mut invalid = 0;
        let mut first_err: Option<(String, String)> = None;
        let metric_specs = spec.metrics.clone().unwrap_or_default();
        for m in &metric_specs {
            match compute(client, &ns, &selector, current, m, &pods).await {
                Ok(o) => {
                    statuses.extend(o.statuses.iter().cloned());
                    if best.as_ref().is_none_or(|b| o.replicas > b.replicas) {
                        best = Some(o);
                    }
                }
                Err(e) => {
                    invalid += 1;
                    ctx.events.warning(CONTROLLER, hpa.as_ref(), &e.0, e.1.clone());
                    first_err.get_or_insert(e);
                }
            }
        }
        match best {
            Some(b) if !(invalid > 0 && b.replicas < current) => {
                conditions.push(cond(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    &format!("the HPA was able to successfully calculate a replica count from {}", b.name),
                ));
                let d = b.replicas;
                if d > current {
                    reason = format!("{} above target", b.name);
                } else if d < current {
                    reason = "All metrics below target".into();
                }
                let (up, mut down) = behavior::rules(spec.behavior.as_ref());
                if spec
                    .behavior
                    .as_ref()
                    .and_then(|b| b.scale_down.as_ref())
                    .and_then(|d| d.stabilization_window_seconds)
                    .is_none()
                {
                    down.window = ctx.config.horizontal_pod_autoscaler_downscale_stabilization;
                }
                let now = Instant::now();
                let n = {
                    let mut h = st.history.lock().unwrap_or_else(|e| e.into_inner());
                    behavior::normalize(
                        h.entry(key.clone()).or_default(),
                        &up,
                        &down,
                        current,
                        d,
                        min,
                        max,
                        now,
                    )
                };
                conditions[0] = match n.stabilized {
                    Some((r, m)) => cond("AbleToScale", true, r, m),
                    None => {
                        cond("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size")
                    }
                };
                conditions.push(cond("ScalingLimited", n.limited, n.limit_reason, n.limit_message));
                desired = n.replicas;
                if desired != current {
                    let mut h = st.history.lock().unwrap_or_else(|e| e.into_inner());
                    behavior::record(h.entry(key.clone()).or_default(), &up, &down, current, desired, now);
                }
            }
            _ => {
                let (r, m) = first_err
                    .unwrap_or_else(|| ("FailedGetResourceMetric".into(), "no metrics to scale on".into()));
                let msg = format!("the HPA was unable to compute the replica count: {m}");
                ctx.events.warning(
                    CONTROLLER,
                    hpa.as_ref(),
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({invalid} invalid out of {}), first error is: {m}",
                        metric_specs.len()
                    ),
                );
                conditions.push(cond("ScalingActive", false, &r, &msg));
                write_status(json!({
                    "currentReplicas": status_replicas, "desiredReplicas": current,
                    "currentMetrics": statuses, "conditions": conditions,
                }))
                .await?;
                return Ok(Action::requeue(sync));
            }
        }
    }

    let mut status = json!({"currentReplicas": status_replicas, "desiredReplicas": desired,
                            "currentMetrics": statuses, "conditions": conditions});
    if desired != current && !(current == 0 && min != 0) {
        let patch = serde_json::to_vec(&json!({"spec": {"replicas": desired}})).unwrap_or_default();
        let req = http::Request::patch(&scale_url)
            .header("Content-Type", "application/merge-patch+json")
            .body(patch)
            .unwrap_or_default();
        match raw(client, req).await {
            Ok(_) => {
                ctx.events.normal(
                    CONTROLLER,
                    hpa.as_ref(),
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {reason}"),
                );
                status["conditions"][0] = cond(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    &format!("the HPA controller was able to update the target scale to {desired}"),
                );
                status["lastScaleTime"] = json!(now_ts);
            }
            Err(e) => {
                ctx.events.warning(
                    CONTROLLER,
                    hpa.as_ref(),
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {e}"),
                );
                status["conditions"][0] = cond(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    &format!("the HPA controller was unable to update the target scale: {e}"),
                );
                status["desiredReplicas"] = json!(current);
            }
        }
    }
    write_status(status).await?;
    Ok(Action::requeue(sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_names() {
        assert_eq!(
            target_path("apps/v1", "Deployment", "ns").unwrap(),
            "/apis/apps/v1/namespaces/ns/deployments"
        );
        assert_eq!(
            target_path("v1", "ReplicationController", "ns").unwrap(),
            "/api/v1/namespaces/ns/replicationcontrollers"
        );
        assert_eq!(target_path("apps/v1", "Pod", "ns"), None);
        assert_eq!(metric_name("cpu", true), "cpu resource utilization (percentage of request)");
        assert_eq!(quantity(40), "40m");
        assert_eq!(quantity(4_194_304_000), "4194304");
        assert_eq!(encode("app=web,tier in (a)"), "app%3Dweb%2Ctier%20in%20%28a%29");
    }
}
