//! Mutating admission that upstream enables by default and kplane's components rely on.
//!
//! DefaultTolerationSeconds: every pod tolerates the `not-ready` and `unreachable` NoExecute taints for
//! a bounded time (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`,
//! 300 s upstream), so a node that stops reporting has its pods evicted after that long, not at once.
//!
//! DefaultIngressClass: an Ingress created with neither `spec.ingressClassName` nor the legacy
//! `kubernetes.io/ingress.class` annotation gets the IngressClass annotated
//! `ingressclass.kubernetes.io/is-default-class: "true"`; when several are, the newest (then the
//! first by name), as upstream's plugin since 1.28.

use std::sync::Arc;

use api_types::ResourceDef;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Marks the IngressClass that class-less Ingresses get (upstream's `AnnotationIsDefaultIngressClass`).
pub const DEFAULT_INGRESS_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy class annotation (`networking/v1beta1.AnnotationIngressClass`): when set, no default.
pub const LEGACY_INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Applies the create-time admission mutations to `obj`. Fails (Forbidden, as upstream's plugins)
/// only when what a plugin must read cannot be read.
pub async fn on_create(st: &AppState, res: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
    match (res.group, res.kind) {
        ("", "Pod") => {
            default_toleration_seconds(obj, st.config.default_not_ready_toleration_seconds, NOT_READY_TAINT);
            default_toleration_seconds(
                obj,
                st.config.default_unreachable_toleration_seconds,
                UNREACHABLE_TAINT,
            );
        }
        ("networking.k8s.io", "Ingress") if needs_default_class(obj) => {
            let name = crate::meta::name(obj).unwrap_or("").to_string();
            let classes = ingress_classes(st)
                .await
                .map_err(|e| ApiError::forbidden(res, &name, &format!("cannot list IngressClasses: {e}")))?;
            if let Some(class) = default_ingress_class(&classes) {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("ingressClassName".into(), json!(class));
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crate::crd::admit_create(st, obj).await?,
        _ => {}
    }
    Ok(())
}

/// Whether DefaultIngressClass applies: no `spec.ingressClassName` (an explicit one, even empty, is
/// the user's: validation judges it) and no legacy class annotation (whatever its value).
fn needs_default_class(ing: &Value) -> bool {
    let named = ing.pointer("/spec/ingressClassName").is_some_and(|v| !v.is_null());
    let annotated = ing
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(LEGACY_INGRESS_CLASS_ANNOTATION));
    !named && !annotated
}

/// Every IngressClass, from the watch cache or else the store.
async fn ingress_classes(st: &AppState) -> Result<Vec<Arc<Value>>, String> {
    let res = api_types::resources::lookup("networking.k8s.io", "v1", "ingressclasses")
        .ok_or("no ingressclasses resource")?;
    let prefix = res.list_prefix(None);
    if let Some(found) = st.cacher.cache(&st.store, res).and_then(|c| c.under(&prefix)) {
        return Ok(found);
    }
    let list =
        st.store.list(store::ListOptions { prefix, ..Default::default() }).await.map_err(|e| e.to_string())?;
    list.items.iter().map(|kv| crate::objects::decode(res, kv).map(Arc::new).map_err(|e| e.message)).collect()
}

/// The name of the default IngressClass: of those annotated `is-default-class: "true"` (exactly
/// that string), the newest by creationTimestamp, ties to the smallest name.
fn default_ingress_class(classes: &[Arc<Value>]) -> Option<String> {
    let created = |c: &Value| {
        let ts = c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("");
        ts.parse::<jiff::Timestamp>().map(|t| t.as_nanosecond()).unwrap_or(0)
    };
    classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(DEFAULT_INGRESS_CLASS_ANNOTATION))
                .and_then(Value::as_str)
                == Some("true")
        })
        .map(|c| (created(c), crate::meta::name(c).unwrap_or("")))
        // Newest first; for equal times the smaller name wins.
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name)| name.to_string())
}

fn default_toleration_seconds(pod: &mut Value, seconds: i64, taint: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    let tolerated = list.iter().any(|t| {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        (key.is_empty() || key == taint) && (effect.is_empty() || effect == "NoExecute")
    });
    if !tolerated {
        list.push(
            json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_both_tolerations_once() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod, 300, NOT_READY_TAINT);
        default_toleration_seconds(&mut pod, 300, NOT_READY_TAINT);
        default_toleration_seconds(&mut pod, 7, UNREACHABLE_TAINT);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["tolerationSeconds"], 7);
    }

    fn class(name: &str, created: &str, default: Option<&str>) -> Arc<Value> {
        let mut c =
            json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {"controller": "x"}});
        if let Some(d) = default {
            c["metadata"]["annotations"] = json!({DEFAULT_INGRESS_CLASS_ANNOTATION: d});
        }
        Arc::new(c)
    }

    #[test]
    fn default_class_is_the_one_marked_true() {
        let a = class("a", "2026-01-01T00:00:00Z", Some("true"));
        let b = class("b", "2026-02-01T00:00:00Z", None);
        let c = class("c", "2026-03-01T00:00:00Z", Some("false"));
        let d = class("d", "2026-03-01T00:00:00Z", Some("TRUE"));
        assert_eq!(default_ingress_class(&[b.clone(), a, c.clone(), d.clone()]).as_deref(), Some("a"));
        assert_eq!(default_ingress_class(&[b, c, d]), None);
        assert_eq!(default_ingress_class(&[]), None);
    }

    #[test]
    fn several_defaults_pick_the_newest_then_the_first_name() {
        let old = class("old", "2026-01-01T00:00:00Z", Some("true"));
        let new = class("new", "2026-05-01T00:00:00Z", Some("true"));
        assert_eq!(default_ingress_class(&[new.clone(), old.clone()]).as_deref(), Some("new"));
        assert_eq!(default_ingress_class(&[old, new]).as_deref(), Some("new"));
        let x = class("x", "2026-05-01T00:00:00Z", Some("true"));
        let w = class("w", "2026-05-01T00:00:00Z", Some("true"));
        assert_eq!(default_ingress_class(&[x.clone(), w.clone()]).as_deref(), Some("w"));
        assert_eq!(default_ingress_class(&[w, x]).as_deref(), Some("w"));
    }

    #[test]
    fn only_ingresses_naming_no_class_are_defaulted() {
        assert!(needs_default_class(&json!({"metadata": {"name": "i"}, "spec": {}})));
        assert!(needs_default_class(&json!({"spec": {"ingressClassName": null}})));
        assert!(!needs_default_class(&json!({"spec": {"ingressClassName": "other"}})));
        assert!(!needs_default_class(&json!({"spec": {"ingressClassName": ""}})));
        let legacy = json!({"metadata": {"annotations": {LEGACY_INGRESS_CLASS_ANNOTATION: ""}}, "spec": {}});
        assert!(!needs_default_class(&legacy));
    }

    #[test]
    fn an_existing_toleration_wins() {
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut pod, 300, UNREACHABLE_TAINT);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut pod = json!({"spec": {"tolerations": [{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}]}});
        default_toleration_seconds(&mut pod, 300, UNREACHABLE_TAINT);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }
}
