//! LimitRange objects: upstream's defaulting (`SetDefaults_LimitRangeItem`, stored) and validation
//! (`ValidateLimitRange` in pkg/apis/core/validation) with its messages and field paths. How a
//! LimitRange then applies to pods and claims is `admission.rs`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::Cause;
use api_types::quantity;

/// A quantity field's text (quantities are JSON strings; a bare number is accepted as one).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn list<'a>(item: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    item.get(key).and_then(Value::as_object)
}

/// Upstream's `SetDefaults_LimitRangeItem`: in a Container item, `default` takes `max`'s values it
/// lacks, then `defaultRequest` takes `default`'s, then `min`'s.
pub fn default(obj: &mut Value) {
    let Some(items) = obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else { return };
    for item in items.iter_mut().filter(|i| i.get("type").and_then(Value::as_str) == Some("Container")) {
        let Some(item) = item.as_object_mut() else { continue };
        for (from, to) in [("max", "default"), ("default", "defaultRequest"), ("min", "defaultRequest")] {
            let source = item.get(from).and_then(Value::as_object).cloned().unwrap_or_default();
            let target = item.entry(to).or_insert_with(|| Value::Object(Map::new()));
            if target.is_null() {
                *target = Value::Object(Map::new());
            }
            if let Some(target) = target.as_object_mut() {
                for (k, v) in source {
                    target.entry(k).or_insert(v);
                }
            }
        }
    }
}

const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
    "storage",
    "requests.storage",
];

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Upstream's `validateResourceName`.
fn resource_name(name: &str, at: &str) -> Vec<Cause> {
    let errs: Vec<Cause> = api_types::selectors::label_key_errors(name)
        .iter()
        .map(|m| Cause::invalid(at, format!("{name:?}"), m))
        .collect();
    if !errs.is_empty() {
        return errs;
    }
    let standard = STANDARD_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-");
    if !name.contains('/') && !standard {
        return vec![Cause::invalid(
            at,
            format!("{name:?}"),
            "must be a standard resource type or fully qualified",
        )];
    }
    errs
}

/// Upstream's `validateContainerResourceName`.
fn container_resource_name(name: &str, at: &str) -> Vec<Cause> {
    let mut errs = resource_name(name, at);
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
            errs.push(Cause::invalid(at, format!("{name:?}"), "must be a standard resource for containers"));
        }
    } else if !is_native(name) {
        let extended = !name.starts_with("requests.")
            && api_types::selectors::label_key_errors(&format!("requests.{name}")).is_empty();
        if !extended {
            errs.push(Cause::invalid(
                at,
                format!("{name:?}"),
                "doesn't follow extended resource name standard",
            ));
        }
    }
    errs
}

/// Upstream's `ValidateLimitRange` (the metadata is checked by the common code).
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(items) = obj.pointer("/spec/limits").and_then(Value::as_array) else { return };
    let mut types = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
        let type_errs = api_types::selectors::label_key_errors(ty);
        if !type_errs.is_empty() {
            for m in type_errs {
                causes.push(Cause::invalid(format!("{at}.type"), format!("{ty:?}"), &m));
            }
        } else if !ty.contains('/') && !matches!(ty, "Pod" | "Container" | "PersistentVolumeClaim") {
            causes.push(Cause::invalid(
                format!("{at}.type"),
                format!("{ty:?}"),
                "must be a standard limit type or fully qualified",
            ));
        }
        if !types.insert(ty.to_string()) {
            causes.push(Cause::duplicate(format!("{at}.type"), format!("{ty:?}")));
        }
        let name_check = |name: &str, at: &str| {
            if matches!(ty, "Pod" | "Container") {
                container_resource_name(name, at)
            } else {
                resource_name(name, at)
            }
        };
        let mut keys = BTreeSet::new();
        let mut read = |field: &str, causes: &mut Vec<Cause>| {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in list(item, field).into_iter().flatten() {
                causes.extend(name_check(k, &format!("{at}.{field}[{k}]")));
                keys.insert(k.clone());
                if let Some(t) = text(v) {
                    out.insert(k.clone(), t);
                }
            }
            out
        };
        let max = read("max", causes);
        let min = read("min", causes);
        let (defaults, default_requests) = if ty == "Pod" {
            for field in ["default", "defaultRequest"] {
                if list(item, field).is_some_and(|m| !m.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("{at}.{field}"),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
            Default::default()
        } else {
            (read("default", causes), read("defaultRequest", causes))
        };
        if ty == "PersistentVolumeClaim" && !min.contains_key("storage") && !max.contains_key("storage") {
            causes.push(Cause::required_because(
                format!("{at}.limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let ratios = read("maxLimitRequestRatio", causes);
        let cmp = |a: &str, b: &str| match (quantity::nanos(a), quantity::nanos(b)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        };
        let canon = |q: &str| quantity::canonical(q).unwrap_or_else(|| q.to_string());
        let greater = |a: &str, b: &str| cmp(a, b) == Some(std::cmp::Ordering::Greater);
        for k in &keys {
            let (mn, mx, def, req, ratio) =
                (min.get(k), max.get(k), defaults.get(k), default_requests.get(k), ratios.get(k));
            let field = |f: &str| format!("{at}.{f}[{k}]");
            if let (Some(mn), Some(mx)) = (mn, mx) {
                if greater(mn, mx) {
                    let msg = format!("min value {} is greater than max value {}", canon(mn), canon(mx));
                    causes.push(Cause::invalid(field("min"), quantity::go_repr(mn), &msg));
                }
            }
            if let (Some(req), Some(mn)) = (req, mn) {
                if greater(mn, req) {
                    let msg =
                        format!("min value {} is greater than default request value {}", canon(mn), canon(req));
                    causes.push(Cause::invalid(field("defaultRequest"), quantity::go_repr(req), &msg));
                }
            }
            if let (Some(req), Some(mx)) = (req, mx) {
                if greater(req, mx) {
                    let msg =
                        format!("default request value {} is greater than max value {}", canon(req), canon(mx));
                    causes.push(Cause::invalid(field("defaultRequest"), quantity::go_repr(req), &msg));
                }
            }
            if let (Some(req), Some(def)) = (req, def) {
                if greater(req, def) {
                    let msg = format!(
                        "default request value {} is greater than default limit value {}",
                        canon(req),
                        canon(def)
                    );
                    causes.push(Cause::invalid(field("defaultRequest"), quantity::go_repr(req), &msg));
                }
            }
            if let (Some(def), Some(mn)) = (def, mn) {
                if greater(mn, def) {
                    let msg = format!("min value {} is greater than default value {}", canon(mn), canon(def));
                    causes.push(Cause::invalid(field("default"), quantity::go_repr(mn), &msg));
                }
            }
            if let (Some(def), Some(mx)) = (def, mx) {
                if greater(def, mx) {
                    let msg = format!("default value {} is greater than max value {}", canon(def), canon(mx));
                    causes.push(Cause::invalid(field("default"), quantity::go_repr(mx), &msg));
                }
            }
            if let Some(ratio) = ratio {
                if cmp(ratio, "1") == Some(std::cmp::Ordering::Less) {
                    let msg = format!("ratio {} is less than 1", canon(ratio));
                    causes.push(Cause::invalid(field("maxLimitRequestRatio"), quantity::go_repr(ratio), &msg));
                }
                if let (Some(mn), Some(mx)) = (mn, mx) {
                    // Upstream compares in milli-units when all three fit, else in whole units.
                    let (r, lo, hi) = match (quantity::milli(ratio), quantity::milli(mn), quantity::milli(mx)) {
                        (Some(r), Some(lo), Some(hi)) => (r as f64 / 1000.0, lo, hi),
                        _ => (
                            quantity::value(ratio).unwrap_or(i64::MAX) as f64,
                            quantity::value(mn).unwrap_or(0),
                            quantity::value(mx).unwrap_or(i64::MAX),
                        ),
                    };
                    let limit = hi as f64 / lo as f64;
                    if r > limit {
                        let msg = format!("ratio {} is greater than max/min = {limit:.6}", canon(ratio));
                        causes.push(Cause::invalid(
                            field("maxLimitRequestRatio"),
                            quantity::go_repr(ratio),
                            &msg,
                        ));
                    }
                }
            }
            // Resources that may not be overcommitted (hugepages, extended resources): a default
            // limit and request must be equal.
            let overcommit = is_native(k) && !k.starts_with("hugepages-");
            if let (false, Some(def), Some(req)) = (overcommit, def, req) {
                if cmp(def, req) != Some(std::cmp::Ordering::Equal) {
                    let msg = format!(
                        "default value {} must equal to defaultRequest value {} in {k}",
                        canon(def),
                        canon(req)
                    );
                    causes.push(Cause::invalid(field("defaultRequest"), quantity::go_repr(req), &msg));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(limits: Value) -> Vec<String> {
        let mut obj = json!({"spec": {"limits": limits}});
        default(&mut obj);
        let mut causes = Vec::new();
        validate(&obj, &mut causes);
        causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn defaults_complete_container_items() {
        let mut obj = json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}},
            {"type": "Pod", "max": {"cpu": "4"}}]}});
        default(&mut obj);
        assert_eq!(
            obj["spec"]["limits"],
            json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"},
                    "default": {"cpu": "2"}, "defaultRequest": {"cpu": "2", "memory": "1Mi"}},
                   {"type": "Pod", "max": {"cpu": "4"}}])
        );
    }

    #[test]
    fn valid_ranges_pass() {
        assert!(check(json!([
            {"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "2"}, "default": {"cpu": "1"},
             "defaultRequest": {"cpu": "500m"}, "maxLimitRequestRatio": {"cpu": "4"}},
            {"type": "Pod", "max": {"memory": "1Gi"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}},
            {"type": "example.com/thing", "max": {"example.com/widgets": "3"}}
        ]))
        .is_empty());
    }

    #[test]
    fn violations_in_upstreams_words() {
        let q = |v: i64, scale: i32, s: &str, f: &str| {
            format!("resource.Quantity{{i:resource.int64Amount{{value:{v}, scale:{scale}}}, d:resource.infDecAmount{{Dec:(*inf.Dec)(nil)}}, s:\"{s}\", Format:\"{f}\"}}")
        };
        assert_eq!(
            check(
                json!([{"type": "PersistentVolumeClaim", "min": {"storage": "10Gi"}, "max": {"storage": "1Gi"}}])
            ),
            [format!(
                "spec.limits[0].min[storage]: Invalid value: {}: min value 10Gi is greater than max value 1Gi",
                q(10737418240, 0, "10Gi", "BinarySI")
            )]
        );
        assert_eq!(
            check(json!([{"type": "PersistentVolumeClaim"}])),
            ["spec.limits[0].limits: Required value: either minimum or maximum storage value is required, but neither was provided"]
        );
        assert_eq!(
            check(json!([{"type": "Pod", "default": {"cpu": "1"}, "defaultRequest": {"cpu": "1"}}])),
            [
                "spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'",
                "spec.limits[0].defaultRequest: Forbidden: may not be specified when `type` is 'Pod'"
            ]
        );
        assert_eq!(
            check(json!([{"type": "foo", "max": {"cpu": "1"}}, {"type": "Container"}, {"type": "Container"}])),
            [
                "spec.limits[0].type: Invalid value: \"foo\": must be a standard limit type or fully qualified",
                "spec.limits[2].type: Duplicate value: \"Container\""
            ]
        );
        assert_eq!(
            check(json!([{"type": "Container", "max": {"cpux": "1", "storage": "1Gi"}}])),
            [
                "spec.limits[0].max[cpux]: Invalid value: \"cpux\": must be a standard resource type or fully qualified",
                "spec.limits[0].max[cpux]: Invalid value: \"cpux\": must be a standard resource for containers",
                "spec.limits[0].max[storage]: Invalid value: \"storage\": must be a standard resource for containers",
                "spec.limits[0].default[cpux]: Invalid value: \"cpux\": must be a standard resource type or fully qualified",
                "spec.limits[0].default[cpux]: Invalid value: \"cpux\": must be a standard resource for containers",
                "spec.limits[0].default[storage]: Invalid value: \"storage\": must be a standard resource for containers",
                "spec.limits[0].defaultRequest[cpux]: Invalid value: \"cpux\": must be a standard resource type or fully qualified",
                "spec.limits[0].defaultRequest[cpux]: Invalid value: \"cpux\": must be a standard resource for containers",
                "spec.limits[0].defaultRequest[storage]: Invalid value: \"storage\": must be a standard resource for containers",
            ]
        );
        assert_eq!(
            check(json!([{"type": "Container", "min": {"cpu": "1"}, "max": {"cpu": "2"}, "default": {"cpu": "3"},
                          "defaultRequest": {"cpu": "500m"}, "maxLimitRequestRatio": {"cpu": "500m"}}])),
            [
                format!("spec.limits[0].defaultRequest[cpu]: Invalid value: {}: min value 1 is greater than default request value 500m", q(500, -3, "500m", "DecimalSI")),
                format!("spec.limits[0].default[cpu]: Invalid value: {}: default value 3 is greater than max value 2", q(2, 0, "2", "DecimalSI")),
                format!("spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: {}: ratio 500m is less than 1", q(500, -3, "500m", "DecimalSI")),
            ]
        );
        assert_eq!(
            check(json!([{"type": "Container", "min": {"memory": "512Mi"}, "max": {"memory": "2Gi"},
                          "maxLimitRequestRatio": {"memory": "10"}}])),
            [format!(
                "spec.limits[0].maxLimitRequestRatio[memory]: Invalid value: {}: ratio 10 is greater than max/min = 4.000000",
                q(10, 0, "10", "DecimalSI")
            )]
        );
        assert_eq!(
            check(json!([{"type": "Container", "default": {"hugepages-2Mi": "4Mi"}, "defaultRequest": {"hugepages-2Mi": "2Mi"}}])),
            [format!(
                "spec.limits[0].defaultRequest[hugepages-2Mi]: Invalid value: {}: default value 4Mi must equal to defaultRequest value 2Mi in hugepages-2Mi",
                q(2097152, 0, "2Mi", "BinarySI")
            )]
        );
    }
}
