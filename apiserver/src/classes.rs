//! Validation of the cluster's class kinds with upstream's messages: PriorityClass
//! (pkg/apis/scheduling/validation: reserved `system-` names, the user maximum, preemptionPolicy,
//! value immutable), RuntimeClass (pkg/apis/node/validation: handler a DNS label, immutable),
//! IngressClass (pkg/apis/networking/validation: controller a domain-prefixed path, immutable) and
//! StorageClass (pkg/apis/storage/validation: provisioner a qualified name, reclaimPolicy and
//! volumeBindingMode values, parameters/provisioner/reclaimPolicy fixed). The one-default rule of
//! PriorityClasses is admission's (`admission.rs`).

use serde_json::Value;

use crate::error::Cause;
use crate::validation;

/// Upstream's `HighestUserDefinablePriority`.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
/// Upstream's system priority classes: (name, value); neither is a global default.
const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] =
    &[("system-node-critical", 2_000_001_000), ("system-cluster-critical", 2_000_000_000)];

fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

/// Validates a class kind (`kind` as in the registry); `old` on updates.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    match kind {
        "PriorityClass" => priority_class(obj, old, causes),
        "RuntimeClass" => runtime_class(obj, old, causes),
        "IngressClass" => ingress_class(obj, old, causes),
        "StorageClass" => storage_class(obj, old, causes),
        _ => {}
    }
}

fn priority_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = crate::meta::name(obj).unwrap_or("");
    let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
    let global_default = obj.get("globalDefault").and_then(Value::as_bool).unwrap_or(false);
    if name.starts_with("system-") {
        let why = match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((_, v)) if *v != value => Some(format!("value of {name} PriorityClass must be {v}")),
            Some(_) if global_default => Some(format!("globalDefault of {name} PriorityClass must be false")),
            Some(_) => None,
        };
        if let Some(why) = why {
            causes.push(Cause::forbidden(
                "metadata.name",
                &format!(
                    "priority class names with 'system-' prefix are reserved for system use only. error: {why}"
                ),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        causes.push(Cause::forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    match obj.get("preemptionPolicy") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p == "PreemptLowerPriority" || p == "Never" => {}
        Some(Value::String(p)) if p.is_empty() => causes.push(Cause::required("preemptionPolicy")),
        Some(p) => causes.push(Cause::not_supported("preemptionPolicy", p, &["PreemptLowerPriority", "Never"])),
    }
    if let Some(old) = old {
        if old.get("value") != obj.get("value") {
            causes.push(Cause::forbidden("value", "may not be changed in an update."));
        }
        if old.get("preemptionPolicy") != obj.get("preemptionPolicy") {
            let v = obj.get("preemptionPolicy").cloned().unwrap_or(Value::Null);
            causes.push(Cause::invalid("preemptionPolicy", v, "field is immutable"));
        }
    }
}

fn runtime_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let handler = str_at(obj, "/handler").unwrap_or("");
    for msg in validation::dns1123_label(handler) {
        causes.push(Cause::invalid("handler", format!("{handler:?}"), &msg));
    }
    if let Some(old) = old {
        if old.get("handler") != obj.get("handler") {
            causes.push(Cause::invalid("handler", format!("{handler:?}"), "field is immutable"));
        }
    }
}

/// `[A-Za-z0-9/\-._~%!$&'()*+,;=:]+`, anchored.
fn is_http_path(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c))
}

fn ingress_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let controller = str_at(obj, "/spec/controller").unwrap_or("");
    let at = "spec.controller";
    if controller.len() > 250 {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: at.into(),
            message: "Too long: may not be more than 250 bytes".into(),
        });
    }
    match controller.split_once('/') {
        _ if controller.is_empty() => causes.push(Cause::required(at)),
        Some((host, path)) if !host.is_empty() && !path.is_empty() => {
            for msg in validation::dns1123_subdomain(host) {
                causes.push(Cause::invalid(at, format!("{host:?}"), &msg));
            }
            if !is_http_path(path) {
                causes.push(Cause::invalid(
                    at,
                    format!("{path:?}"),
                    "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')",
                ));
            }
        }
        _ => causes.push(Cause::invalid(
            at,
            format!("{controller:?}"),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
    }
    if let Some(old) = old {
        if old.pointer("/spec/controller") != obj.pointer("/spec/controller") {
            causes.push(Cause::invalid(at, format!("{controller:?}"), "field is immutable"));
        }
    }
}

fn storage_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let provisioner = str_at(obj, "/provisioner").unwrap_or("");
    if provisioner.is_empty() {
        causes.push(Cause::required("provisioner"));
    } else {
        let lower = provisioner.to_lowercase();
        for msg in api_types::selectors::label_key_errors(&lower) {
            causes.push(Cause::invalid("provisioner", format!("{lower:?}"), &msg));
        }
    }
    if let Some(p) = obj.get("reclaimPolicy").filter(|p| !p.is_null()) {
        if !matches!(p.as_str(), Some("Delete" | "Retain")) {
            causes.push(Cause::not_supported("reclaimPolicy", p, &["Delete", "Retain"]));
        }
    }
    match obj.get("volumeBindingMode") {
        None | Some(Value::Null) => causes.push(Cause::required("volumeBindingMode")),
        Some(Value::String(m)) if m == "Immediate" || m == "WaitForFirstConsumer" => {}
        Some(m) => {
            causes.push(Cause::not_supported("volumeBindingMode", m, &["Immediate", "WaitForFirstConsumer"]))
        }
    }
    if let Some(old) = old {
        if old.get("parameters") != obj.get("parameters") {
            causes.push(Cause::forbidden("parameters", "updates to parameters are forbidden."));
        }
        if old.get("provisioner") != obj.get("provisioner") {
            causes.push(Cause::forbidden("provisioner", "updates to provisioner are forbidden."));
        }
        if old.get("reclaimPolicy") != obj.get("reclaimPolicy") {
            causes.push(Cause::forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: &str, obj: Value, old: Option<Value>) -> Vec<String> {
        let mut causes = Vec::new();
        validate(kind, &obj, old.as_ref(), &mut causes);
        causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn priority_classes() {
        let pc = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": "PreemptLowerPriority"});
        assert!(check("PriorityClass", pc("high", 1_000_000_000), None).is_empty());
        assert!(check("PriorityClass", pc("system-node-critical", 2_000_001_000), None).is_empty());
        assert_eq!(
            check("PriorityClass", pc("huge", 1_000_000_001), None),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert_eq!(
            check("PriorityClass", pc("system-mine", 5), None),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"]
        );
        assert_eq!(
            check("PriorityClass", pc("system-cluster-critical", 5), None),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: value of system-cluster-critical PriorityClass must be 2000000000"]
        );
        let mut bad = pc("p", 1);
        bad["preemptionPolicy"] = json!("Sometimes");
        assert_eq!(
            check("PriorityClass", bad, None),
            ["preemptionPolicy: Unsupported value: \"Sometimes\": supported values: \"PreemptLowerPriority\", \"Never\""]
        );
        assert_eq!(
            check("PriorityClass", pc("p", 2), Some(pc("p", 1))),
            ["value: Forbidden: may not be changed in an update."]
        );
    }

    #[test]
    fn runtime_ingress_and_storage_classes() {
        assert!(check("RuntimeClass", json!({"handler": "runc"}), None).is_empty());
        assert_eq!(
            check("RuntimeClass", json!({"handler": "Run_C"}), None),
            ["handler: Invalid value: \"Run_C\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]
        );
        assert_eq!(
            check("RuntimeClass", json!({"handler": "crun"}), Some(json!({"handler": "runc"}))),
            ["handler: Invalid value: \"crun\": field is immutable"]
        );
        let ic = |c: &str| json!({"spec": {"controller": c}});
        assert!(check("IngressClass", ic("example.com/ingress-controller"), None).is_empty());
        assert_eq!(
            check("IngressClass", ic("nginx"), None),
            ["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"]
        );
        assert_eq!(check("IngressClass", ic(""), None), ["spec.controller: Required value"]);
        assert_eq!(
            check("IngressClass", ic("Example.com/x"), None)[0],
            "spec.controller: Invalid value: \"Example.com\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let sc =
            |p: &str| json!({"provisioner": p, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"});
        assert!(check("StorageClass", sc("kubernetes.io/no-provisioner"), None).is_empty());
        assert_eq!(check("StorageClass", sc(""), None), ["provisioner: Required value"]);
        assert_eq!(
            check("StorageClass", sc("bad provisioner"), None),
            ["provisioner: Invalid value: \"bad provisioner\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"]
        );
        let mut recycle = sc("x.io/p");
        recycle["reclaimPolicy"] = json!("Recycle");
        assert_eq!(
            check("StorageClass", recycle, None),
            ["reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\""]
        );
        assert_eq!(
            check("StorageClass", sc("x.io/q"), Some(sc("x.io/p"))),
            ["provisioner: Forbidden: updates to provisioner are forbidden."]
        );
    }
}
