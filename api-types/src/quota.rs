//! ResourceQuota accounting shared by the API server's quota admission and the controller-manager's
//! quota status controller: quantities in thousandths, what one object uses of each quota
//! resource name (upstream's evaluators), and which quota scopes an object falls under.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ResourceDef;

pub use crate::quantity::milli_wide as milli;

/// A sum of quantities printed as upstream's canonical forms mostly read: whole numbers plain,
/// binary multiples with their suffix, the rest in milli-units.
pub fn format_milli(m: i128) -> String {
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let v = m / 1000;
    for (suffix, unit) in [
        ("Ei", 1i128 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if v != 0 && v % unit == 0 {
            return format!("{}{suffix}", v / unit);
        }
    }
    v.to_string()
}

/// A resource list (`{"cpu": "100m"}`) as name -> quantity string.
pub fn resource_list(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, q)| q.as_str().map(|q| (k.clone(), q.to_string()))).collect())
        .unwrap_or_default()
}

/// The resource names a pod's containers set under `field` (`requests`/`limits`), summed.
pub fn pod_resources(pod: &Value, field: &str) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        for (k, q) in resource_list(c.pointer(&format!("/resources/{field}"))) {
            *out.entry(k).or_insert(0) += milli(&q).unwrap_or(0);
        }
    }
    // Init containers run one at a time, before the others: the pod needs the larger of the two.
    for c in pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten() {
        for (k, q) in resource_list(c.pointer(&format!("/resources/{field}"))) {
            let v = milli(&q).unwrap_or(0);
            let e = out.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    out
}

/// What one object adds to each quota resource name, as upstream's evaluators count it.
pub fn usage_of(res: &ResourceDef, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let count_key = if res.group.is_empty() {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    };
    u.insert(count_key, 1000);
    if res.group.is_empty() {
        let legacy = match res.kind {
            "Pod" => Some("pods"),
            "Service" => Some("services"),
            "ConfigMap" => Some("configmaps"),
            "Secret" => Some("secrets"),
            "PersistentVolumeClaim" => Some("persistentvolumeclaims"),
            "ReplicationController" => Some("replicationcontrollers"),
            "ResourceQuota" => Some("resourcequotas"),
            _ => None,
        };
        if let Some(l) = legacy {
            u.insert(l.to_string(), 1000);
        }
    }
    match (res.group, res.kind) {
        ("", "Pod") => {
            for (k, v) in pod_resources(obj, "requests") {
                u.insert(format!("requests.{k}"), v);
                if k == "cpu" || k == "memory" || k == "ephemeral-storage" {
                    u.insert(k, v);
                }
            }
            for (k, v) in pod_resources(obj, "limits") {
                u.insert(format!("limits.{k}"), v);
            }
        }
        ("", "Service") => {
            let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if ty == "NodePort" || ty == "LoadBalancer" {
                let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
                u.insert("services.nodeports".into(), ports as i128 * 1000);
            }
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), 1000);
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(q) = obj.pointer("/spec/resources/requests/storage").and_then(Value::as_str) {
                u.insert("requests.storage".into(), milli(q).unwrap_or(0));
            }
        }
        _ => {}
    }
    u
}

/// Finished pods use nothing (upstream's `QuotaV1Pod`).
pub fn counts_toward_quota(res: &ResourceDef, obj: &Value) -> bool {
    !(res.kind == "Pod"
        && res.group.is_empty()
        && matches!(obj.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
}

/// Is `pod` in a quota scope (`Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`)?
/// `None` for scopes that do not apply to pods or that we do not evaluate.
pub fn pod_in_scope(pod: &Value, scope: &str) -> Option<bool> {
    let terminating = pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some();
    let best_effort = ["containers", "initContainers"].iter().all(|list| {
        pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten().all(|c| {
            ["requests", "limits"].iter().all(|f| {
                c.pointer(&format!("/resources/{f}")).and_then(Value::as_object).is_none_or(|m| m.is_empty())
            })
        })
    });
    match scope {
        "Terminating" => Some(terminating),
        "NotTerminating" => Some(!terminating),
        "BestEffort" => Some(best_effort),
        "NotBestEffort" => Some(!best_effort),
        _ => None,
    }
}

/// Does a quota (its `spec.scopes` and `spec.scopeSelector`) count `obj` of `res`? A quota without
/// scopes counts everything; scoped quotas count only pods in every scope named (upstream's
/// `podMatchesScopeFunc`; `PriorityClass` by `In`/`NotIn`/`Exists`/`DoesNotExist` on
/// `spec.priorityClassName`). `None` when a scope cannot be evaluated.
pub fn quota_counts(quota: &Value, res: &ResourceDef, obj: &Value) -> Option<bool> {
    let mut scopes: Vec<(String, String, Vec<String>)> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), vec![]))
        .collect();
    for e in
        quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten()
    {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("").to_string();
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("").to_string();
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        scopes.push((name, op, values));
    }
    if scopes.is_empty() {
        return Some(true);
    }
    let is_pod = res.group.is_empty() && res.kind == "Pod";
    if !is_pod {
        // Scopes select pods only (the quota's resources of other kinds are not counted).
        return Some(false);
    }
    for (name, op, values) in scopes {
        let ok = if name == "PriorityClass" {
            let class =
                obj.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|c| !c.is_empty());
            match op.as_str() {
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                _ => return None,
            }
        } else {
            let inside = pod_in_scope(obj, &name)?;
            match op.as_str() {
                "Exists" => inside,
                "DoesNotExist" => !inside,
                _ => return None,
            }
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

/// A quota's `status.used` over `objects` of the kinds it names: every resource name of
/// `spec.hard` gets a value (0 when nothing uses it), printed as upstream's quantities read.
pub fn used_by<'a>(
    quota: &Value,
    objects: impl IntoIterator<Item = (&'a ResourceDef, &'a Value)>,
) -> BTreeMap<String, String> {
    let hard: Vec<String> = quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut total: BTreeMap<String, i128> = hard.iter().map(|k| (k.clone(), 0)).collect();
    for (res, obj) in objects {
        if !counts_toward_quota(res, obj) || quota_counts(quota, res, obj) != Some(true) {
            continue;
        }
        for (k, v) in usage_of(res, obj) {
            if let Some(t) = total.get_mut(&k) {
                *t += v;
            }
        }
    }
    total.into_iter().map(|(k, v)| (k, format_milli(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_and_print() {
        assert_eq!(format_milli(500), "500m");
        assert_eq!(format_milli(3000), "3");
        assert_eq!(format_milli(536_870_912_000), "512Mi");
    }

    #[test]
    fn scopes_and_used() {
        let pods = crate::resources::lookup("", "v1", "pods").unwrap();
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        let burst = json!({"spec": {"activeDeadlineSeconds": 5, "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}});
        assert_eq!(pod_in_scope(&be, "BestEffort"), Some(true));
        assert_eq!(pod_in_scope(&burst, "BestEffort"), Some(false));
        assert_eq!(pod_in_scope(&burst, "Terminating"), Some(true));
        let q = json!({"spec": {"hard": {"pods": "10", "requests.cpu": "1", "requests.memory": "1Gi"}}});
        let used = used_by(&q, [(pods, &be), (pods, &burst)]);
        assert_eq!(used["pods"], "2");
        assert_eq!(used["requests.cpu"], "250m");
        assert_eq!(used["requests.memory"], "64Mi");
        let scoped = json!({"spec": {"hard": {"pods": "10"}, "scopes": ["BestEffort"]}});
        assert_eq!(used_by(&scoped, [(pods, &be), (pods, &burst)])["pods"], "1");
        let not = json!({"spec": {"hard": {"pods": "10"}, "scopes": ["NotTerminating", "NotBestEffort"]}});
        assert_eq!(used_by(&not, [(pods, &be), (pods, &burst)])["pods"], "0");
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert_eq!(used_by(&q, [(pods, &done)])["pods"], "0");
        let cms = crate::resources::lookup("", "v1", "configmaps").unwrap();
        let q = json!({"spec": {"hard": {"configmaps": "3", "count/configmaps": "3"}}});
        let used = used_by(&q, [(cms, &json!({})), (cms, &json!({}))]);
        assert_eq!((used["configmaps"].as_str(), used["count/configmaps"].as_str()), ("2", "2"));
    }
}
