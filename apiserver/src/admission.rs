//! Mutating admission that upstream enables by default and kplane's components rely on.
//!
//! DefaultTolerationSeconds: every pod tolerates the `not-ready` and `unreachable` NoExecute taints for
//! a bounded time (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`,
//! 300 s upstream), so a node that stops reporting has its pods evicted after that long, not at once.
//!
//! LimitRanger: a pod created in a namespace with LimitRanges of type Container gets their default
//! limits and requests where its containers set none (annotated `kubernetes.io/limit-ranger`), and
//! is refused (403, upstream's messages) when a container is outside a Container item's
//! min/max/maxLimitRequestRatio or the pod's totals outside a Pod item's; a PersistentVolumeClaim
//! when its storage request is outside a PersistentVolumeClaim item's min/max.
//!
//! ResourceQuota: an object created in a namespace with ResourceQuotas is refused (403, upstream's
//! `exceeded quota: ...`) when it would take a quota's usage past `spec.hard`. Usage is counted
//! from the stored objects at admission (kplane has no quota controller to keep `status.used`):
//! object counts (`pods`, `services`, `count/<resource>[.<group>]`, ...) and, for pods not yet
//! finished, `requests.*`/`limits.*` of cpu, memory and ephemeral-storage, plus PVCs'
//! `requests.storage`. Quotas with scopes are not enforced.
//!
//! DefaultIngressClass: an Ingress created with neither `spec.ingressClassName` nor the legacy
//! `kubernetes.io/ingress.class` annotation gets the IngressClass annotated
//! `ingressclass.kubernetes.io/is-default-class: "true"`; when several are, the newest (then the
//! first by name), as upstream's plugin since 1.28.
//!
//! DefaultStorageClass: a PersistentVolumeClaim created without `spec.storageClassName` (absent or
//! null; an explicit `""` asks for no class) gets the StorageClass annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (the newest when several are).

use std::sync::Arc;

use api_types::ResourceDef;
use serde_json::{json, Value};

use api_types::quota::{counts_toward_quota, format_milli, milli, resource_list, usage_of};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Marks the IngressClass that class-less Ingresses get (upstream's `AnnotationIsDefaultIngressClass`).
pub const DEFAULT_INGRESS_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy class annotation (`networking/v1beta1.AnnotationIngressClass`): when set, no default.
pub const LEGACY_INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Marks the default StorageClass (upstream's `IsDefaultStorageClassAnnotation`).
pub const DEFAULT_STORAGE_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

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
            limit_ranger(st, res, obj).await?;
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
        ("", "PersistentVolumeClaim") => {
            if obj.pointer("/spec/storageClassName").is_none_or(Value::is_null) {
                let name = crate::meta::name(obj).unwrap_or("").to_string();
                let classes =
                    cluster_objects(st, "storage.k8s.io", "v1", "storageclasses").await.map_err(|e| {
                        ApiError::forbidden(res, &name, &format!("cannot list StorageClasses: {e}"))
                    })?;
                if let Some(class) = newest_default(&classes, DEFAULT_STORAGE_CLASS_ANNOTATION) {
                    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("storageClassName".into(), json!(class));
                    }
                }
            }
            limit_ranger_pvc(st, res, obj).await?;
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crate::crd::admit_create(st, obj).await?,
        _ => {}
    }
    Ok(())
}

/// The stored objects of `res` in one namespace, from the watch cache or else the store.
async fn objects_in(st: &AppState, res: &'static ResourceDef, ns: &str) -> Result<Vec<Arc<Value>>, String> {
    let prefix = res.list_prefix(Some(ns));
    if let Some(found) = st.cacher.cache(&st.store, res).and_then(|c| c.under(&prefix)) {
        return Ok(found);
    }
    let list =
        st.store.list(store::ListOptions { prefix, ..Default::default() }).await.map_err(|e| e.to_string())?;
    list.items.iter().map(|kv| crate::objects::decode(res, kv).map(Arc::new).map_err(|e| e.message)).collect()
}

const LIMIT_RANGER_ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Upstream's LimitRanger for pods: defaults (as `SetDefaults_LimitRangeItem` completes them), then
/// the min/max checks of each Container item.
async fn limit_ranger(st: &AppState, res: &ResourceDef, pod: &mut Value) -> ApiResult<()> {
    let Some(ns) = crate::meta::namespace(pod).map(str::to_string) else { return Ok(()) };
    let name = crate::meta::name(pod).unwrap_or("").to_string();
    let Some(ranges_res) = api_types::resources::lookup("", "v1", "limitranges") else { return Ok(()) };
    let ranges = objects_in(st, ranges_res, &ns)
        .await
        .map_err(|e| ApiError::forbidden(res, &name, &format!("error listing LimitRanges: {e}")))?;
    let all_items = limit_items(&ranges);
    let items: Vec<Value> = all_items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
        .cloned()
        .collect();
    let mut notes = Vec::new();
    for item in &items {
        let max = resource_list(item.get("max"));
        let min = resource_list(item.get("min"));
        let mut default = resource_list(item.get("default"));
        for (k, v) in &max {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut default_request = resource_list(item.get("defaultRequest"));
        for (k, v) in default.iter().chain(min.iter()) {
            default_request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (list, prefix) in [("initContainers", "init container"), ("containers", "container")] {
            let Some(cs) = pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in cs {
                let cname = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let mut set = |field: &str, defaults: &std::collections::BTreeMap<String, String>| {
                    let mut names = Vec::new();
                    if !c.get("resources").is_some_and(Value::is_object) {
                        c["resources"] = json!({});
                    }
                    let r = &mut c["resources"];
                    if !r.get(field).is_some_and(Value::is_object) {
                        r[field] = json!({});
                    }
                    if let Some(m) = r.get_mut(field).and_then(Value::as_object_mut) {
                        for (k, v) in defaults {
                            if !m.contains_key(k) {
                                m.insert(k.clone(), json!(v));
                                names.push(k.clone());
                            }
                        }
                        if m.is_empty() {
                            r.as_object_mut().map(|o| o.remove(field));
                        }
                    }
                    names
                };
                let limits = set("limits", &default);
                let requests = set("requests", &default_request);
                if !requests.is_empty() {
                    notes.push(format!("{} request for {prefix} {cname}", requests.join(", ")));
                }
                if !limits.is_empty() {
                    notes.push(format!("{} limit for {prefix} {cname}", limits.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        if let Some(m) = crate::meta::meta_mut(pod) {
            let annotations = m.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(
                    LIMIT_RANGER_ANNOTATION.into(),
                    json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
                );
            }
        }
        let qos = crate::strategy::qos_class(pod);
        if pod.pointer("/status/qosClass").is_some() {
            crate::meta::set_path(pod, &["status", "qosClass"], json!(qos));
        }
    }
    forbid(res, &name, pod_limit_violations(&all_items, pod))
}

/// Every `spec.limits` item of a namespace's LimitRanges.
fn limit_items(ranges: &[Arc<Value>]) -> Vec<Value> {
    ranges
        .iter()
        .flat_map(|lr| lr.pointer("/spec/limits").and_then(Value::as_array).cloned().unwrap_or_default())
        .collect()
}

/// Upstream's aggregate of admission errors as one 403.
fn forbid(res: &ResourceDef, name: &str, errors: Vec<String>) -> ApiResult<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(ApiError::forbidden(res, name, &errors[0])),
        _ => Err(ApiError::forbidden(res, name, &format!("[{}]", errors.join(", ")))),
    }
}

/// Upstream's LimitRanger for PersistentVolumeClaims: `min` and `max` of PersistentVolumeClaim
/// items against `spec.resources.requests` (a claim's limits are not user input there).
async fn limit_ranger_pvc(st: &AppState, res: &ResourceDef, pvc: &Value) -> ApiResult<()> {
    let Some(ns) = crate::meta::namespace(pvc).map(str::to_string) else { return Ok(()) };
    let name = crate::meta::name(pvc).unwrap_or("").to_string();
    let Some(ranges_res) = api_types::resources::lookup("", "v1", "limitranges") else { return Ok(()) };
    let ranges = objects_in(st, ranges_res, &ns)
        .await
        .map_err(|e| ApiError::forbidden(res, &name, &format!("error listing LimitRanges: {e}")))?;
    forbid(res, &name, pvc_limit_violations(&limit_items(&ranges), pvc))
}

/// A quantity as upstream's `Quantity.String()` prints a sum: from thousandths.
fn shown(m: i128) -> String {
    format_milli(m)
}

/// Upstream's `minConstraint`: the request must be there and at least `min`, and so must a limit
/// that is there.
fn min_constraint(
    kind: &str,
    r: &str,
    min: &str,
    requests: &Quantities,
    limits: &Quantities,
) -> Option<String> {
    let enforced = milli(min)?;
    let Some((req, req_text)) = requests.get(r) else {
        return Some(format!("minimum {r} usage per {kind} is {min}.  No request is specified"));
    };
    if *req < enforced {
        return Some(format!("minimum {r} usage per {kind} is {min}, but request is {req_text}"));
    }
    match limits.get(r) {
        Some((lim, lim_text)) if *lim < enforced => {
            Some(format!("minimum {r} usage per {kind} is {min}, but limit is {lim_text}"))
        }
        _ => None,
    }
}

/// Upstream's `maxConstraint`: the limit must be there and at most `max`, and so must a request
/// that is there.
fn max_constraint(
    kind: &str,
    r: &str,
    max: &str,
    requests: &Quantities,
    limits: &Quantities,
) -> Option<String> {
    let enforced = milli(max)?;
    let Some((lim, lim_text)) = limits.get(r) else {
        return Some(format!("maximum {r} usage per {kind} is {max}.  No limit is specified"));
    };
    if *lim > enforced {
        return Some(format!("maximum {r} usage per {kind} is {max}, but limit is {lim_text}"));
    }
    match requests.get(r) {
        Some((req, req_text)) if *req > enforced => {
            Some(format!("maximum {r} usage per {kind} is {max}, but request is {req_text}"))
        }
        _ => None,
    }
}

/// Upstream's `limitRequestRatioConstraint`: limit / request at most `ratio`, both set and nonzero.
fn ratio_constraint(
    kind: &str,
    r: &str,
    ratio: &str,
    requests: &Quantities,
    limits: &Quantities,
) -> Option<String> {
    let enforced = milli(ratio)?;
    let req = requests.get(r).map(|(v, _)| *v).filter(|v| *v != 0);
    let Some(req) = req else {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
        ));
    };
    let lim = limits.get(r).map(|(v, _)| *v).filter(|v| *v != 0);
    let Some(lim) = lim else {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
        ));
    };
    let observed = lim as f64 / req as f64;
    (observed * 1000.0 > enforced as f64).then(|| {
        format!("{r} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}")
    })
}

/// Resource name → (thousandths, text as shown in messages).
type Quantities = std::collections::BTreeMap<String, (i128, String)>;

fn quantities(list: Option<&Value>) -> Quantities {
    resource_list(list).into_iter().filter_map(|(k, q)| milli(&q).map(|m| (k, (m, q)))).collect()
}

/// Every min, max and maxLimitRequestRatio of one item against one set of requests and limits.
fn item_violations(
    kind: &str,
    item: &Value,
    requests: &Quantities,
    limits: &Quantities,
    out: &mut Vec<String>,
) {
    for (r, min) in resource_list(item.get("min")) {
        out.extend(min_constraint(kind, &r, &min, requests, limits));
    }
    for (r, max) in resource_list(item.get("max")) {
        out.extend(max_constraint(kind, &r, &max, requests, limits));
    }
    for (r, ratio) in resource_list(item.get("maxLimitRequestRatio")) {
        out.extend(ratio_constraint(kind, &r, &ratio, requests, limits));
    }
}

/// Upstream's `PodValidateLimitFunc`: Container items against each container (init containers
/// too), Pod items against the pod's total requests and limits (the containers' sum, or the
/// largest init container's when that is more).
fn pod_limit_violations(items: &[Value], pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for list in ["containers", "initContainers"] {
                    for c in
                        pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten()
                    {
                        let requests = quantities(c.pointer("/resources/requests"));
                        let limits = quantities(c.pointer("/resources/limits"));
                        item_violations("Container", item, &requests, &limits, &mut errors);
                    }
                }
            }
            Some("Pod") => {
                let total = |field: &str| -> Quantities {
                    api_types::quota::pod_resources(pod, field)
                        .into_iter()
                        .map(|(k, m)| (k, (m, shown(m))))
                        .collect()
                };
                item_violations("Pod", item, &total("requests"), &total("limits"), &mut errors);
            }
            _ => {}
        }
    }
    errors
}

/// Upstream's `PersistentVolumeClaimValidateLimitFunc`: `min` as for containers (no limits), `max`
/// against the request only.
fn pvc_limit_violations(items: &[Value], pvc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let kind = "PersistentVolumeClaim";
    let requests = quantities(pvc.pointer("/spec/resources/requests"));
    for item in items.iter().filter(|i| i.get("type").and_then(Value::as_str) == Some(kind)) {
        for (r, min) in resource_list(item.get("min")) {
            errors.extend(min_constraint(kind, &r, &min, &requests, &Quantities::new()));
        }
        for (r, max) in resource_list(item.get("max")) {
            let Some(enforced) = milli(&max) else { continue };
            match requests.get(&r) {
                None => errors.push(format!("maximum {r} usage per {kind} is {max}.  No request is specified")),
                Some((req, text)) if *req > enforced => {
                    errors.push(format!("maximum {r} usage per {kind} is {max}, but request is {text}"))
                }
                _ => {}
            }
        }
    }
    errors
}

/// Pod compute resources a quota on them requires every container to state (upstream's
/// `podEvaluator.Constraints`).
fn missing_pod_constraints(pod: &Value, hard: &serde_json::Map<String, Value>) -> Option<String> {
    let mut missing: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for list in ["containers", "initContainers"] {
        for c in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            for (key, field, r) in [
                ("requests.cpu", "requests", "cpu"),
                ("cpu", "requests", "cpu"),
                ("requests.memory", "requests", "memory"),
                ("memory", "requests", "memory"),
                ("limits.cpu", "limits", "cpu"),
                ("limits.memory", "limits", "memory"),
            ] {
                if hard.contains_key(key) && c.pointer(&format!("/resources/{field}/{r}")).is_none() {
                    missing.entry(key.to_string()).or_default().insert(cname.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(k, names)| format!("{k} for: {}", names.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

type Exceeded<'a> = (&'a String, i128, i128, i128);

/// Upstream's ResourceQuota admission on create: refuses `obj` when it would take any quota of its
/// namespace past `spec.hard`. Runs after validation, as upstream's validating admission does.
pub async fn check_quota(st: &AppState, res: &'static ResourceDef, obj: &Value) -> ApiResult<()> {
    if !res.namespaced || !res.stored {
        return Ok(());
    }
    let Some(ns) = crate::meta::namespace(obj).map(str::to_string) else { return Ok(()) };
    let name = crate::meta::name(obj).unwrap_or("").to_string();
    let Some(quotas_res) = api_types::resources::lookup("", "v1", "resourcequotas") else { return Ok(()) };
    let quotas = objects_in(st, quotas_res, &ns)
        .await
        .map_err(|e| ApiError::forbidden(res, &name, &format!("error listing ResourceQuotas: {e}")))?;
    if quotas.is_empty() || !counts_toward_quota(res, obj) {
        return Ok(());
    }
    let requested = usage_of(res, obj);
    let mut used: Option<std::collections::BTreeMap<String, i128>> = None;
    for q in &quotas {
        let scoped = q.pointer("/spec/scopes").and_then(Value::as_array).is_some_and(|s| !s.is_empty())
            || q.pointer("/spec/scopeSelector").is_some_and(|s| !s.is_null());
        let Some(hard) = q.pointer("/spec/hard").and_then(Value::as_object) else { continue };
        if scoped {
            continue;
        }
        let qname = crate::meta::name(q).unwrap_or("");
        if res.kind == "Pod" && res.group.is_empty() {
            if let Some(why) = missing_pod_constraints(obj, hard) {
                return Err(ApiError::forbidden(res, &name, &format!("failed quota: {qname}: {why}")));
            }
        }
        let relevant: Vec<(&String, i128)> = hard
            .iter()
            .filter(|(k, _)| requested.contains_key(*k))
            .filter_map(|(k, v)| v.as_str().and_then(milli).map(|h| (k, h)))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        if used.is_none() {
            let mut total = std::collections::BTreeMap::new();
            let existing = objects_in(st, res, &ns)
                .await
                .map_err(|e| ApiError::forbidden(res, &name, &format!("error counting {}: {e}", res.plural)))?;
            for o in existing.iter().filter(|o| counts_toward_quota(res, o)) {
                for (k, v) in usage_of(res, o) {
                    *total.entry(k).or_insert(0) += v;
                }
            }
            used = Some(total);
        }
        let used_now = used.clone().unwrap_or_default();
        // (resource, requested, used, hard) of each resource the object would take past its hard.
        let mut failed: Vec<Exceeded<'_>> = Vec::new();
        for (k, h) in relevant {
            let req = requested.get(k).copied().unwrap_or(0);
            let u = used_now.get(k).copied().unwrap_or(0);
            if u + req > h {
                failed.push((k, req, u, h));
            }
        }
        if !failed.is_empty() {
            let show = |f: &dyn Fn(&Exceeded<'_>) -> i128| {
                failed.iter().map(|x| format!("{}={}", x.0, format_milli(f(x)))).collect::<Vec<_>>().join(",")
            };
            let why = format!(
                "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                show(&|x| x.1),
                show(&|x| x.2),
                show(&|x| x.3)
            );
            return Err(ApiError::forbidden(res, &name, &why));
        }
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

/// Upstream's Priority admission for PriorityClasses: at most one may be the global default. A
/// create or update setting `globalDefault` while another class is the default is its 403.
pub async fn one_default_priority_class(st: &AppState, res: &ResourceDef, obj: &Value) -> ApiResult<()> {
    if (res.group, res.kind) != ("scheduling.k8s.io", "PriorityClass")
        || obj.get("globalDefault").and_then(Value::as_bool) != Some(true)
    {
        return Ok(());
    }
    let name = crate::meta::name(obj).unwrap_or("");
    let classes = cluster_objects(st, "scheduling.k8s.io", "v1", "priorityclasses")
        .await
        .map_err(|e| ApiError::forbidden(res, name, &format!("failed to get default priority class: {e}")))?;
    let other = classes.iter().find(|c| {
        c.get("globalDefault").and_then(Value::as_bool) == Some(true) && crate::meta::name(c) != Some(name)
    });
    match other.and_then(|c| crate::meta::name(c)) {
        Some(other) => Err(ApiError::forbidden(
            res,
            name,
            &format!("PriorityClass {other} is already marked as default. Only one default can exist"),
        )),
        None => Ok(()),
    }
}

/// Every IngressClass, from the watch cache or else the store.
async fn ingress_classes(st: &AppState) -> Result<Vec<Arc<Value>>, String> {
    cluster_objects(st, "networking.k8s.io", "v1", "ingressclasses").await
}

/// Every object of a cluster-scoped resource, from the watch cache or else the store.
async fn cluster_objects(
    st: &AppState,
    group: &str,
    version: &str,
    plural: &str,
) -> Result<Vec<Arc<Value>>, String> {
    let res = api_types::resources::lookup(group, version, plural).ok_or(format!("no {plural} resource"))?;
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
    newest_default(classes, DEFAULT_INGRESS_CLASS_ANNOTATION)
}

/// Of the objects annotated `<annotation>: "true"`, the newest one's name (ties: smallest name).
fn newest_default(classes: &[Arc<Value>], annotation: &str) -> Option<String> {
    let created = |c: &Value| {
        let ts = c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("");
        ts.parse::<jiff::Timestamp>().map(|t| t.as_nanosecond()).unwrap_or(0)
    };
    classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations").and_then(|a| a.get(annotation)).and_then(Value::as_str)
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
    fn limit_ranges_of_pods_and_claims_in_upstreams_words() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}},
            {"name": "b", "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}}},
        ]}});
        let per_pod = json!({"type": "Pod", "max": {"cpu": "2"}});
        assert_eq!(pod_limit_violations(&[per_pod], &pod), ["maximum cpu usage per Pod is 2, but limit is 3"]);
        let ratio = json!({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}});
        let greedy = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}}]}});
        assert_eq!(
            pod_limit_violations(std::slice::from_ref(&ratio), &greedy),
            ["cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"]
        );
        assert!(pod_limit_violations(std::slice::from_ref(&ratio), &pod).is_empty(), "2 and 2: at the limit");
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            pod_limit_violations(&[ratio], &bare),
            ["cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"]
        );
        let min_pod = json!({"type": "Pod", "min": {"memory": "1Gi"}});
        assert_eq!(
            pod_limit_violations(&[min_pod], &pod),
            ["minimum memory usage per Pod is 1Gi.  No request is specified"]
        );
        let container_max = json!({"type": "Container", "max": {"cpu": "800m"}});
        let over_request = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "900m"}, "limits": {"cpu": "700m"}}}]}});
        assert_eq!(
            pod_limit_violations(&[container_max], &over_request),
            ["maximum cpu usage per Container is 800m, but request is 900m"]
        );

        let claims =
            json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}});
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        assert_eq!(
            pvc_limit_violations(std::slice::from_ref(&claims), &claim("500Mi")),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        assert_eq!(
            pvc_limit_violations(std::slice::from_ref(&claims), &claim("5Gi")),
            ["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
        assert!(pvc_limit_violations(&[claims], &claim("1536Mi")).is_empty());
    }

    #[test]
    fn quota_usage_and_constraints() {
        let pods = api_types::resources::lookup("", "v1", "pods").unwrap();
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}}]}});
        let u = usage_of(pods, &pod);
        assert_eq!((u["pods"], u["count/pods"], u["requests.cpu"], u["cpu"]), (1000, 1000, 500, 500));
        assert_eq!(u["limits.memory"], 1_073_741_824_000);
        let hard = json!({"limits.memory": "2Gi", "requests.cpu": "1"});
        assert_eq!(
            missing_pod_constraints(&pod, hard.as_object().unwrap()).as_deref(),
            Some("must specify limits.memory for: b")
        );
        let jobs = api_types::resources::lookup("batch", "v1", "jobs").unwrap();
        assert_eq!(usage_of(jobs, &json!({}))["count/jobs.batch"], 1000);
    }

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
