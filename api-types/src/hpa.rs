//! Conversion between `autoscaling/v2` HorizontalPodAutoscalers (the stored form) and
//! `autoscaling/v1` ones, as upstream's `pkg/apis/autoscaling/v1/conversion.go`:
//!
//! - `spec.targetCPUUtilizationPercentage` ⇄ a Resource `cpu` metric with a Utilization target;
//!   `status.currentCPUUtilizationPercentage` ⇄ the Resource `cpu` current averageUtilization.
//! - Every other metric (spec and status) travels in the annotations
//!   `autoscaling.alpha.kubernetes.io/metrics` / `…/current-metrics`, as JSON lists in v1's
//!   (v2beta1-shaped) MetricSpec / MetricStatus form; `spec.behavior` in `…/behavior` and
//!   `status.conditions` in `…/conditions`. A v1 write reads them back and drops the annotations.

use serde_json::{json, Map, Value};

pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";

/// The spec and status fields autoscaling/v1 and v2 share, copied as they are either way.
const SAME_SPEC: &[(&str, &str)] =
    &[("scaleTargetRef", "scaleTargetRef"), ("minReplicas", "minReplicas"), ("maxReplicas", "maxReplicas")];
const SAME_STATUS: &[(&str, &str)] = &[
    ("observedGeneration", "observedGeneration"),
    ("lastScaleTime", "lastScaleTime"),
    ("currentReplicas", "currentReplicas"),
    ("desiredReplicas", "desiredReplicas"),
];

/// Copies the listed keys of `from` that are present into `to`, renamed (from-key, to-key).
fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[(&str, &str)]) {
    for (f, t) in keys {
        if let Some(v) = from.get(*f).filter(|v| !v.is_null()) {
            to.insert((*t).to_string(), v.clone());
        }
    }
}

fn obj(m: Map<String, Value>) -> Value {
    Value::Object(m)
}

/// A v2 Resource metric on cpu with a utilization on `side` ("target" or "current"): the one v1
/// carries in its own field.
fn is_cpu_utilization(m: &Value, side: &str) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer(&format!("/resource/{side}/averageUtilization")).is_some_and(|v| !v.is_null())
}

/// v2 `metrics` (`side` "target") or `currentMetrics` (`side` "current") in v1's form: the first
/// cpu utilization into `cpu_field` of `s`, every other metric into the `annotation` of `out`.
fn metrics_to_v1(
    metrics: &[Value],
    side: &str,
    cpu_field: &str,
    s: &mut Map<String, Value>,
    annotation: &str,
    out: &mut Map<String, Value>,
) {
    let mut others = Vec::new();
    for m in metrics {
        if is_cpu_utilization(m, side) {
            if !s.contains_key(cpu_field) {
                s.insert(cpu_field.into(), m["resource"][side]["averageUtilization"].clone());
            }
        } else {
            others.push(metric_to_v1(m, side));
        }
    }
    if !others.is_empty() {
        let enc = serde_json::to_string(&others).unwrap_or_default();
        annotations_mut(out).insert(annotation.into(), json!(enc));
    }
}

/// A v2 MetricSpec (`side` = "target") or MetricStatus (`side` = "current") in v1's annotation
/// form: v1 names each value after its side (`targetValue`, `currentAverageUtilization`, ...).
fn metric_to_v1(m: &Value, side: &str) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, &[("type", "type")]);
    let null = Value::Null;
    let values = |s: &Value| s.get(side).cloned().unwrap_or(Value::Null);
    let (value, average_value, average_utilization) =
        (format!("{side}Value"), format!("{side}AverageValue"), format!("{side}AverageUtilization"));
    if let Some(s) = m.get("object").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(s, &mut o, &[("describedObject", "target")]);
        copy(s.get("metric").unwrap_or(&null), &mut o, &[("name", "metricName"), ("selector", "selector")]);
        copy(&values(s), &mut o, &[("value", &value), ("averageValue", "averageValue")]);
        out.insert("object".into(), obj(o));
    }
    if let Some(s) = m.get("pods").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(s.get("metric").unwrap_or(&null), &mut o, &[("name", "metricName"), ("selector", "selector")]);
        copy(&values(s), &mut o, &[("averageValue", &average_value)]);
        out.insert("pods".into(), obj(o));
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = m.get(key).filter(|v| v.is_object()) {
            let mut o = Map::new();
            copy(s, &mut o, &[("name", "name"), ("container", "container")]);
            copy(
                &values(s),
                &mut o,
                &[("averageUtilization", &average_utilization), ("averageValue", &average_value)],
            );
            out.insert(key.into(), obj(o));
        }
    }
    if let Some(s) = m.get("external").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(
            s.get("metric").unwrap_or(&null),
            &mut o,
            &[("name", "metricName"), ("selector", "metricSelector")],
        );
        copy(&values(s), &mut o, &[("value", &value), ("averageValue", &average_value)]);
        out.insert("external".into(), obj(o));
    }
    obj(out)
}

/// A v1 annotation MetricSpec in v2's form.
fn spec_from_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, &[("type", "type")]);
    let metric = |s: &Value, selector: &str| {
        let mut id = Map::new();
        copy(s, &mut id, &[("metricName", "name"), (selector, "selector")]);
        obj(id)
    };
    if let Some(s) = m.get("object").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(s, &mut o, &[("target", "describedObject")]);
        o.insert("metric".into(), metric(s, "selector"));
        let target = match s.get("averageValue").filter(|v| !v.is_null()) {
            Some(av) => json!({"type": "AverageValue", "averageValue": av}),
            None => {
                let mut t = Map::from_iter([("type".to_string(), json!("Value"))]);
                copy(s, &mut t, &[("targetValue", "value")]);
                obj(t)
            }
        };
        o.insert("target".into(), target);
        out.insert("object".into(), obj(o));
    }
    if let Some(s) = m.get("pods").filter(|v| v.is_object()) {
        let mut t = Map::from_iter([("type".to_string(), json!("AverageValue"))]);
        copy(s, &mut t, &[("targetAverageValue", "averageValue")]);
        out.insert("pods".into(), json!({"metric": metric(s, "selector"), "target": obj(t)}));
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = m.get(key).filter(|v| v.is_object()) {
            let mut o = Map::new();
            copy(s, &mut o, &[("name", "name"), ("container", "container")]);
            let utilization = s.get("targetAverageUtilization").filter(|v| !v.is_null());
            let mut t = Map::new();
            t.insert("type".into(), json!(if utilization.is_some() { "Utilization" } else { "AverageValue" }));
            copy(
                s,
                &mut t,
                &[("targetAverageUtilization", "averageUtilization"), ("targetAverageValue", "averageValue")],
            );
            o.insert("target".into(), obj(t));
            out.insert(key.into(), obj(o));
        }
    }
    if let Some(s) = m.get("external").filter(|v| v.is_object()) {
        let value = s.get("targetValue").filter(|v| !v.is_null());
        let mut t = Map::new();
        t.insert("type".into(), json!(if value.is_some() { "Value" } else { "AverageValue" }));
        copy(s, &mut t, &[("targetValue", "value"), ("targetAverageValue", "averageValue")]);
        out.insert("external".into(), json!({"metric": metric(s, "metricSelector"), "target": obj(t)}));
    }
    obj(out)
}

/// A v1 annotation MetricStatus in v2's form.
fn status_from_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, &[("type", "type")]);
    let metric = |s: &Value, selector: &str| {
        let mut id = Map::new();
        copy(s, &mut id, &[("metricName", "name"), (selector, "selector")]);
        obj(id)
    };
    let current = |s: &Value, keys: &[(&str, &str)]| {
        let mut c = Map::new();
        copy(s, &mut c, keys);
        obj(c)
    };
    if let Some(s) = m.get("object").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(s, &mut o, &[("target", "describedObject")]);
        o.insert("metric".into(), metric(s, "selector"));
        o.insert("current".into(), current(s, &[("currentValue", "value"), ("averageValue", "averageValue")]));
        out.insert("object".into(), obj(o));
    }
    if let Some(s) = m.get("pods").filter(|v| v.is_object()) {
        let c = current(s, &[("currentAverageValue", "averageValue")]);
        out.insert("pods".into(), json!({"metric": metric(s, "selector"), "current": c}));
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = m.get(key).filter(|v| v.is_object()) {
            let mut o = Map::new();
            copy(s, &mut o, &[("name", "name"), ("container", "container")]);
            let c = current(
                s,
                &[("currentAverageUtilization", "averageUtilization"), ("currentAverageValue", "averageValue")],
            );
            o.insert("current".into(), c);
            out.insert(key.into(), obj(o));
        }
    }
    if let Some(s) = m.get("external").filter(|v| v.is_object()) {
        let c = current(s, &[("currentValue", "value"), ("currentAverageValue", "averageValue")]);
        out.insert("external".into(), json!({"metric": metric(s, "metricSelector"), "current": c}));
    }
    obj(out)
}

fn annotations_mut(o: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let m = meta.as_object_mut().expect("metadata is an object");
    let a = m.entry("annotations").or_insert_with(|| json!({}));
    if !a.is_object() {
        *a = json!({});
    }
    a.as_object_mut().expect("annotations is an object")
}

/// Drops `metadata.annotations` when it ended up empty.
fn prune_annotations(o: &mut Map<String, Value>) {
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.get("annotations").and_then(Value::as_object).is_some_and(Map::is_empty) {
            meta.remove("annotations");
        }
    }
}

/// A stored autoscaling/v2 HorizontalPodAutoscaler as served by autoscaling/v1.
pub fn to_v1(v2: &Value) -> Value {
    let Some(src) = v2.as_object() else { return v2.clone() };
    let mut out = Map::new();
    for (k, v) in src {
        if !matches!(k.as_str(), "spec" | "status") {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    let empty = Vec::new();
    if let Some(spec) = v2.get("spec").filter(|s| s.is_object()) {
        let mut s = Map::new();
        copy(spec, &mut s, SAME_SPEC);
        let metrics = spec.get("metrics").and_then(Value::as_array).unwrap_or(&empty);
        metrics_to_v1(
            metrics,
            "target",
            "targetCPUUtilizationPercentage",
            &mut s,
            METRICS_ANNOTATION,
            &mut out,
        );
        if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
            let enc = serde_json::to_string(b).unwrap_or_default();
            annotations_mut(&mut out).insert(BEHAVIOR_ANNOTATION.into(), json!(enc));
        }
        out.insert("spec".into(), obj(s));
    }
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let mut s = Map::new();
        copy(status, &mut s, SAME_STATUS);
        let current = status.get("currentMetrics").and_then(Value::as_array).unwrap_or(&empty);
        let cpu_field = "currentCPUUtilizationPercentage";
        metrics_to_v1(current, "current", cpu_field, &mut s, CURRENT_METRICS_ANNOTATION, &mut out);
        if let Some(c) = status.get("conditions").and_then(Value::as_array).filter(|c| !c.is_empty()) {
            let enc = serde_json::to_string(c).unwrap_or_default();
            annotations_mut(&mut out).insert(CONDITIONS_ANNOTATION.into(), json!(enc));
        }
        out.insert("status".into(), obj(s));
    }
    prune_annotations(&mut out);
    obj(out)
}

/// Takes an annotation off the object, parsed as JSON (a value that does not parse is dropped, as
/// upstream's conversion ignores what it cannot decode).
fn take_annotation(o: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let a = o.get_mut("metadata")?.get_mut("annotations")?.as_object_mut()?;
    let raw = a.remove(key)?;
    serde_json::from_str(raw.as_str()?).ok()
}

/// A v2 metric list from v1's two places: the annotation's metrics (each through `convert`) first,
/// then the cpu field's metric last, as upstream orders them; `None` when both are empty.
fn join_v1_metrics(
    annotation: Option<&Value>,
    convert: fn(&Value) -> Value,
    cpu: Option<&Value>,
    cpu_metric: impl Fn(&Value) -> Value,
) -> Option<Value> {
    let mut list: Vec<Value> =
        annotation.and_then(Value::as_array).map(|ms| ms.iter().map(convert).collect()).unwrap_or_default();
    if let Some(cpu) = cpu.filter(|v| !v.is_null()) {
        list.push(cpu_metric(cpu));
    }
    (!list.is_empty()).then_some(Value::Array(list))
}

/// An autoscaling/v1 HorizontalPodAutoscaler (as written by a client) as the autoscaling/v2 object
/// that is stored.
pub fn from_v1(v1: &Value) -> Value {
    let Some(src) = v1.as_object() else { return v1.clone() };
    let mut out = Map::new();
    for (k, v) in src {
        if !matches!(k.as_str(), "spec" | "status") {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("apiVersion".into(), json!("autoscaling/v2"));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    let metrics = take_annotation(&mut out, METRICS_ANNOTATION);
    let current = take_annotation(&mut out, CURRENT_METRICS_ANNOTATION);
    let behavior = take_annotation(&mut out, BEHAVIOR_ANNOTATION);
    let conditions = take_annotation(&mut out, CONDITIONS_ANNOTATION);
    prune_annotations(&mut out);
    if let Some(spec) = v1.get("spec").filter(|s| s.is_object()) {
        let mut s = Map::new();
        copy(spec, &mut s, SAME_SPEC);
        let cpu = spec.get("targetCPUUtilizationPercentage");
        if let Some(list) = join_v1_metrics(metrics.as_ref(), spec_from_v1, cpu, |cpu| {
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}})
        }) {
            s.insert("metrics".into(), list);
        }
        if let Some(b) = behavior.filter(Value::is_object) {
            s.insert("behavior".into(), b);
        }
        out.insert("spec".into(), obj(s));
    }
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut s = Map::new();
        copy(status, &mut s, SAME_STATUS);
        let cpu = status.get("currentCPUUtilizationPercentage");
        if let Some(list) = join_v1_metrics(
            current.as_ref(),
            status_from_v1,
            cpu,
            |cpu| json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}),
        ) {
            s.insert("currentMetrics".into(), list);
        }
        if let Some(c) = conditions.filter(Value::is_array) {
            s.insert("conditions".into(), c);
        }
        out.insert("status".into(), obj(s));
    }
    obj(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                "minReplicas": 1, "maxReplicas": 3,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}},
                        "target": {"type": "Value", "value": "5"}}},
                    {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s", "apiVersion": "v1"},
                        "metric": {"name": "rps"}, "target": {"type": "Value", "value": "2"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3, "lastScaleTime": "2026-12-07T10:00:00Z",
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "80Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}
                ],
                "conditions": [{"type": "AbleToScale", "status": "True"}]
            }
        })
    }

    #[test]
    fn cpu_target_is_v1s_own_field_and_other_metrics_travel_in_annotations() {
        let v1 = to_v1(&v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
        assert_eq!(v1["status"]["currentReplicas"], 2);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        let ann = &v1["metadata"]["annotations"];
        let metrics: Value = serde_json::from_str(ann[METRICS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            metrics[0],
            json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}})
        );
        assert_eq!(
            metrics[1],
            json!({"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}})
        );
        assert_eq!(
            metrics[2],
            json!({"type": "External", "external": {"metricName": "queue", "metricSelector": {"matchLabels": {"q": "a"}}, "targetValue": "5"}})
        );
        assert_eq!(metrics[3]["object"]["target"]["name"], "s");
        assert!(ann.get(BEHAVIOR_ANNOTATION).is_some() && ann.get(CONDITIONS_ANNOTATION).is_some());
        assert!(ann.get(CURRENT_METRICS_ANNOTATION).is_some());
    }

    #[test]
    fn v1_round_trips_to_the_same_v2() {
        let back = from_v1(&to_v1(&v2()));
        assert_eq!(back, v2());
    }

    #[test]
    fn plain_v1_write_becomes_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3,
                     "targetCPUUtilizationPercentage": 50}});
        let v2 = from_v1(&v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(v2["metadata"].get("annotations").is_none());
        assert_eq!(to_v1(&v2), v1);
    }
}
