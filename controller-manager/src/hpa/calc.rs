//! Upstream's replica calculator for Resource metrics (`replica_calculator.go`), as pure functions:
//! the pods are grouped (ready with a metric, unready, missing a metric, ignored), then
//! desired = ceil(ready pods × usage / target), with the tolerance and upstream's conservative
//! treatment of missing and unready pods.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

/// `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// One pod's metric (summed over its containers, in milli-units) and when/over what it was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// The target of a Resource metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Milli-units per pod.
    AverageValue(i64),
}

/// What the calculator found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub replicas: i32,
    /// Utilization in percent (Utilization targets only).
    pub utilization: Option<i32>,
    /// Average per ready pod with a metric, milli-units.
    pub average: i64,
}

/// Whether the pod's Ready condition is True.
fn ready_condition(pod: &Pod) -> Option<(bool, Option<Timestamp>)> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status == "True", c.last_transition_time.as_ref().map(|t| t.0)))
}

/// Upstream's `groupPods`: (ready pods with metrics, unready, missing, ignored).
fn group_pods(
    pods: &[Pod],
    metrics: &BTreeMap<String, PodMetric>,
    cpu: bool,
    now: Timestamp,
) -> (usize, Vec<String>, Vec<String>, Vec<String>) {
    let (mut ready, mut unready, mut missing, mut ignored) = (0, Vec::new(), Vec::new(), Vec::new());
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" || phase == "Succeeded" {
            ignored.push(name);
            continue;
        }
        if phase == "Pending" {
            unready.push(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            missing.push(name);
            continue;
        };
        if cpu {
            let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            let unready_now = match (ready_condition(pod), start) {
                (None, _) | (_, None) => true,
                (Some((is_ready, transition)), Some(start)) => {
                    let transition = transition.unwrap_or(start);
                    if start + CPU_INITIALIZATION_PERIOD > now {
                        // Still initializing: a sample counts only if the pod is ready and a whole
                        // metric window has passed since it became so.
                        !is_ready || metric.timestamp < transition + metric.window
                    } else {
                        // Unready and never ready since it started.
                        !is_ready && start + INITIAL_READINESS_DELAY > transition
                    }
                }
            };
            if unready_now {
                unready.push(name);
                continue;
            }
        }
        ready += 1;
    }
    (ready, unready, missing, ignored)
}

/// Sums a resource's requests per pod; an error names a container without one.
pub fn pod_requests(pods: &[Pod], resource: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut sum = 0;
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            let q = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource));
            match q.and_then(|q| milli(&q.0)) {
                Some(v) => sum += v,
                None => {
                    return Err(format!("missing request for {resource} in container {} of Pod {name}", c.name))
                }
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

pub use api_types::quantity::milli;

/// Upstream's `GetResourceReplicas` / `GetRawResourceReplicas` for one Resource metric.
/// `current` is the target's current replica count. Errors are upstream's messages.
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    pods: &[Pod],
    metrics: &BTreeMap<String, PodMetric>,
    now: Timestamp,
) -> Result<Computed, String> {
    if metrics.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        ));
    }
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let (ready, unready, missing, ignored) = group_pods(pods, metrics, resource == "cpu", now);
    let mut metrics: BTreeMap<String, i64> = metrics.iter().map(|(k, m)| (k.clone(), m.value)).collect();
    for name in unready.iter().chain(&ignored) {
        metrics.remove(name);
    }
    // Metrics of pods that are not in the list (other owners' leftovers) do not count.
    metrics.retain(|name, _| pods.iter().any(|p| p.metadata.name.as_deref() == Some(name.as_str())));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests = match target {
        Target::Utilization(_) => Some(pod_requests(pods, resource)?),
        Target::AverageValue(_) => None,
    };
    // usage ratio, utilization (percent) and the raw average
    let ratio_of = |m: &BTreeMap<String, i64>| -> (f64, Option<i32>, i64) {
        let total: i64 = m.values().sum();
        let avg = total / m.len().max(1) as i64;
        match (target, &requests) {
            (Target::Utilization(t), Some(req)) => {
                let req_total: i64 = m.keys().filter_map(|k| req.get(k)).sum();
                let util = if req_total > 0 { (total * 100 / req_total) as i32 } else { 0 };
                (f64::from(util) / f64::from(t.max(1)), Some(util), avg)
            }
            (Target::AverageValue(t), _) => (avg as f64 / t.max(1) as f64, None, avg),
            _ => (1.0, None, avg),
        }
    };
    let (ratio, utilization, average) = ratio_of(&metrics);
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(Computed { replicas: current, utilization, average });
        }
        return Ok(Computed { replicas: (ratio * ready as f64).ceil() as i32, utilization, average });
    }
    if !missing.is_empty() {
        for name in &missing {
            let assumed = if ratio < 1.0 {
                // Scaling down: missing pods are assumed at 100% of their request (or the target).
                match (target, &requests) {
                    (Target::Utilization(_), Some(req)) => req.get(name).copied().unwrap_or(0),
                    (Target::AverageValue(t), _) => t,
                    _ => 0,
                }
            } else {
                0
            };
            metrics.insert(name.clone(), assumed);
        }
    }
    if scale_up_with_unready {
        for name in &unready {
            metrics.insert(name.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio_of(&metrics);
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(Computed { replicas: current, utilization, average });
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(Computed { replicas: current, utilization, average });
    }
    Ok(Computed { replicas, utilization, average })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, cpu: &str, ready_for: i64, started_ago: i64, now: Timestamp) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            start_time: Some(Time(now - SignedDuration::from_secs(started_ago))),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready_for >= 0 { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(now - SignedDuration::from_secs(ready_for.abs()))),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn metric(v: i64, now: Timestamp) -> PodMetric {
        PodMetric { value: v, timestamp: now, window: SignedDuration::from_secs(15) }
    }

    #[test]
    fn scales_by_the_usage_ratio_with_tolerance() {
        let now = Timestamp::now();
        let pods: Vec<Pod> = (0..2).map(|i| pod(&format!("p{i}"), "100m", 600, 600, now)).collect();
        // 80% of request against a 50% target: ceil(2 × 1.6) = 4.
        let m: BTreeMap<_, _> = [("p0".to_string(), metric(80, now)), ("p1".into(), metric(80, now))].into();
        let c = resource_replicas(2, Target::Utilization(50), "cpu", &pods, &m, now).unwrap();
        assert_eq!(c, Computed { replicas: 4, utilization: Some(80), average: 80 });
        // 53% is within the 10% tolerance of 50%.
        let m: BTreeMap<_, _> = [("p0".to_string(), metric(53, now)), ("p1".into(), metric(53, now))].into();
        assert_eq!(resource_replicas(2, Target::Utilization(50), "cpu", &pods, &m, now).unwrap().replicas, 2);
        // 10% of a 50% target: ceil(2 × 0.2) = 1.
        let m: BTreeMap<_, _> = [("p0".to_string(), metric(10, now)), ("p1".into(), metric(10, now))].into();
        assert_eq!(resource_replicas(2, Target::Utilization(50), "cpu", &pods, &m, now).unwrap().replicas, 1);
        // AverageValue: 300m per pod against 100m: 6.
        let m: BTreeMap<_, _> = [("p0".to_string(), metric(300, now)), ("p1".into(), metric(300, now))].into();
        assert_eq!(resource_replicas(2, Target::AverageValue(100), "cpu", &pods, &m, now).unwrap().replicas, 6);
    }

    #[test]
    fn missing_and_unready_pods_are_treated_conservatively() {
        let now = Timestamp::now();
        let mut pods: Vec<Pod> = (0..2).map(|i| pod(&format!("p{i}"), "100m", 600, 600, now)).collect();
        pods.push(pod("new", "100m", 600, 600, now));
        // Scale down with a pod missing its metric: it counts as 100% of its request.
        let m: BTreeMap<_, _> = [("p0".to_string(), metric(10, now)), ("p1".into(), metric(10, now))].into();
        let c = resource_replicas(3, Target::Utilization(50), "cpu", &pods, &m, now).unwrap();
        // (10 + 10 + 100) / 300 = 40% → ratio 0.8 → ceil(3 × 0.8) = 3.
        assert_eq!(c.replicas, 3);
        // Scale up with a pod missing its metric: it counts as 0.
        let m: BTreeMap<_, _> = [("p0".to_string(), metric(100, now)), ("p1".into(), metric(100, now))].into();
        let c = resource_replicas(3, Target::Utilization(50), "cpu", &pods, &m, now).unwrap();
        // 200 / 300 = 66% → ratio 1.33 → ceil(3 × 1.33) = 4.
        assert_eq!(c.replicas, 4);
        // A pod that just became ready (within the initialization period, less than a window ago)
        // is unready for CPU: counted as 0 when scaling up.
        let mut pods: Vec<Pod> = (0..2).map(|i| pod(&format!("p{i}"), "100m", 600, 600, now)).collect();
        pods.push(pod("young", "100m", 5, 10, now));
        let m: BTreeMap<_, _> = [
            ("p0".to_string(), metric(100, now)),
            ("p1".into(), metric(100, now)),
            ("young".into(), metric(500, now)),
        ]
        .into();
        let c = resource_replicas(3, Target::Utilization(50), "cpu", &pods, &m, now).unwrap();
        assert_eq!(c.utilization, Some(100), "the young pod's sample is ignored");
        assert_eq!(c.replicas, 4, "200 / 300 = 66%: ceil(3 × 1.33)");
        // No metrics at all: upstream's error.
        let e = resource_replicas(3, Target::Utilization(50), "cpu", &pods, &BTreeMap::new(), now).unwrap_err();
        assert!(e.contains("no metrics returned from resource metrics API"), "{e}");
        // A container without a request: upstream's error.
        let mut p = pod("bare", "1", 600, 600, now);
        p.spec.as_mut().unwrap().containers[0].resources = None;
        let m: BTreeMap<_, _> = [("bare".to_string(), metric(10, now))].into();
        let e = resource_replicas(1, Target::Utilization(50), "cpu", &[p], &m, now).unwrap_err();
        assert_eq!(e, "missing request for cpu in container c of Pod bare");
    }
}
