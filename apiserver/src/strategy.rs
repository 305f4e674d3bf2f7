//! Per-resource strategies, as upstream's `pkg/registry/<group>/<resource>/strategy.go`: what
//! happens to an object on create and update (status reset, generation, defaults) and how it is
//! validated. The generic handlers call these; a resource without special needs gets the defaults.

use api_types::ResourceDef;
use serde_json::{json, Value};

use crate::error::Cause;
use crate::meta;
use crate::validation;

/// Which half of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// The main resource: everything but status (for resources with a status subresource).
    Main,
    /// The status subresource: only status.
    Status,
    /// `namespaces/finalize`: only `spec.finalizers`.
    Finalize,
    /// `certificatesigningrequests/approval`: metadata and `status.conditions` (upstream's
    /// approval strategy), the only write that may add Approved or Denied.
    Approval,
}

impl Half {
    /// The subresource a write of this half goes through, as `managedFields` names it.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Half::Main => None,
            Half::Status => Some("status"),
            Half::Finalize => Some("finalize"),
            Half::Approval => Some("approval"),
        }
    }
}

/// Resources whose generation counts spec changes (upstream's strategies that set it).
fn tracks_generation(res: &ResourceDef) -> bool {
    matches!(
        res.kind,
        "Deployment"
            | "ReplicaSet"
            | "ReplicationController"
            | "Ingress"
            | "Pod"
            | "Service"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "CronJob"
            | "PodDisruptionBudget"
            | "NetworkPolicy"
            | "ValidatingAdmissionPolicy"
    ) || crate::crd::is_crd(res)
        || crate::crd::custom(res).is_some()
}

pub(crate) fn has_status(res: &ResourceDef) -> bool {
    res.has(api_types::Subresource::Status)
}

/// What create does before validation: upstream's PrepareForCreate plus defaulting.
/// Upstream's metadata lists and maps are `omitempty`: an empty one is stored (and served) as absent.
fn drop_empty_metadata(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, v| {
            let listy = matches!(
                k.as_str(),
                "ownerReferences" | "finalizers" | "labels" | "annotations" | "managedFields"
            );
            !(listy
                && (v.is_null()
                    || v.as_array().is_some_and(Vec::is_empty)
                    || v.as_object().is_some_and(|o| o.is_empty())))
        });
    }
}

/// A Secret's `stringData` is write-only convenience: its entries are merged into `data`
/// (base64, overriding) and the field is never stored, as upstream does.
fn fold_string_data(res: &ResourceDef, obj: &mut Value) {
    use base64::Engine;
    if res.kind != "Secret" {
        return;
    }
    let Some(map) = obj.as_object_mut() else { return };
    let Some(Value::Object(strings)) = map.remove("stringData") else { return };
    let data = map.entry("data").or_insert_with(|| Value::Object(Default::default()));
    if !data.is_object() {
        *data = Value::Object(Default::default());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in strings {
            let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            data.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}

pub fn prepare_create(res: &ResourceDef, obj: &mut Value) {
    drop_empty_metadata(obj);
    fold_string_data(res, obj);
    if has_status(res) && !matches!(res.kind, "Node") {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
    }
    if tracks_generation(res) {
        meta::set(obj, "generation", json!(1));
    }
    if res.group == "batch" && res.kind == "Job" {
        generate_job_selector(obj);
    }
    if res.kind == "DaemonSet" {
        set_template_generation(obj, 1);
    }
    default(res, obj);
    if res.kind == "Service" && res.group.is_empty() {
        // Upstream resets the status to an empty ServiceStatus, whose LoadBalancer struct is never
        // omitted: `status: {loadBalancer: {}}`.
        meta::set_path(obj, &["status"], json!({"loadBalancer": {}}));
    }
    crate::crd::prepare_create(res, obj);
    if res.kind == "Namespace" {
        meta::set_path(obj, &["status"], json!({"phase": "Active"}));
    }
    if res.kind == "Pod" {
        let status = json!({"phase": "Pending", "qosClass": qos_class(obj)});
        meta::set_path(obj, &["status"], status);
    }
}

/// What an update does: upstream's PrepareForUpdate. `new` becomes what will be stored.
pub fn prepare_update(res: &ResourceDef, half: Half, new: &mut Value, old: &Value) {
    drop_empty_metadata(new);
    fold_string_data(res, new);
    // Fields no update may change.
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match meta::meta(old).and_then(|m| m.get(field)) {
            Some(v) => meta::set(new, field, v.clone()),
            None => {
                meta::remove(new, field);
            }
        }
    }
    match half {
        Half::Main => {
            if has_status(res) {
                match old.get("status") {
                    Some(s) => meta::set_path(new, &["status"], s.clone()),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if res.kind == "Namespace" {
                // Only the namespace controller, through `finalize`, changes spec.finalizers.
                match old.pointer("/spec/finalizers") {
                    Some(f) => meta::set_path(new, &["spec", "finalizers"], f.clone()),
                    None => {
                        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.remove("finalizers");
                        }
                    }
                }
            }
            default(res, new);
            crate::crd::prepare_update(res, new, old);
            if tracks_generation(res) && spec_of(res, new) != spec_of(res, old) {
                let g = meta::meta(old).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(0);
                meta::set(new, "generation", json!(g + 1));
            }
            if res.kind == "DaemonSet" {
                // Upstream's spec.templateGeneration, served in apps/v1 as this annotation: the
                // old value, plus one when the pod template changed.
                let g = old
                    .pointer("/metadata/annotations/deprecated.daemonset.template.generation")
                    .and_then(Value::as_str)
                    .and_then(|g| g.parse::<i64>().ok())
                    .unwrap_or(0);
                let changed = new.pointer("/spec/template") != old.pointer("/spec/template");
                set_template_generation(new, if changed { g + 1 } else { g.max(1) });
            }
        }
        Half::Finalize => {
            let finalizers = new.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
            let rv = meta::resource_version(new).map(str::to_string);
            *new = old.clone();
            meta::set_path(new, &["spec", "finalizers"], finalizers);
            if let Some(rv) = rv {
                meta::set(new, "resourceVersion", json!(rv));
            }
        }
        Half::Approval => {
            // Metadata and the conditions from the request; spec and the certificate stay.
            let conditions = new.pointer("/status/conditions").cloned();
            meta::set_path(new, &["spec"], old.get("spec").cloned().unwrap_or_else(|| json!({})));
            let mut status = old.get("status").cloned().unwrap_or_else(|| json!({}));
            if let Some(map) = status.as_object_mut() {
                match conditions {
                    Some(c) if !c.is_null() => {
                        map.insert("conditions".into(), c);
                    }
                    _ => {
                        map.remove("conditions");
                    }
                }
            }
            meta::set_path(new, &["status"], status);
            stamp_csr_conditions(new, old);
        }
        Half::Status => {
            // Only status changes: everything else comes from the stored object.
            let status = new.get("status").cloned();
            let rv = meta::resource_version(new).map(str::to_string);
            *new = old.clone();
            match status {
                Some(s) => meta::set_path(new, &["status"], s),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(rv) = rv {
                meta::set(new, "resourceVersion", json!(rv));
            }
        }
    }
}

/// Upstream's `populateConditionTimestamps` for a CertificateSigningRequest: a condition without
/// `lastUpdateTime` gets now; without `lastTransitionTime`, the stored condition's of the same type
/// and status, else now. Conditions without `status` get upstream's default `True`.
fn stamp_csr_conditions(new: &mut Value, old: &Value) {
    let now = meta::now_rfc3339();
    let old_conditions =
        old.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(conditions) = new.pointer_mut("/status/conditions").and_then(Value::as_array_mut) else { return };
    for c in conditions.iter_mut().filter_map(Value::as_object_mut) {
        if c.get("status").and_then(Value::as_str).is_none_or(str::is_empty) {
            c.insert("status".into(), json!("True"));
        }
        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
            c.insert("lastUpdateTime".into(), json!(now));
        }
        if c.get("lastTransitionTime").is_none_or(Value::is_null) {
            let same = old_conditions
                .iter()
                .find(|o| o.get("type") == c.get("type"))
                .filter(|o| o.get("status") == c.get("status"))
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .cloned();
            c.insert("lastTransitionTime".into(), same.unwrap_or_else(|| json!(now)));
        }
    }
}

/// Validation that depends on which half an update writes (upstream's per-subresource
/// `ValidateUpdate`s): a CertificateSigningRequest's conditions and certificate.
pub fn validate_update_half(res: &ResourceDef, half: Half, new: &Value, old: &Value) -> Vec<Cause> {
    if (res.group, res.kind) != ("certificates.k8s.io", "CertificateSigningRequest") {
        return Vec::new();
    }
    validate_csr_update(half, new, old)
}

fn csr_conditions(csr: &Value) -> Vec<Value> {
    csr.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn of_type<'a>(conditions: &'a [Value], t: &str) -> Vec<&'a Value> {
    conditions.iter().filter(|c| c.get("type").and_then(Value::as_str) == Some(t)).collect()
}

/// Upstream's `validateConditions` plus `validateCertificateSigningRequestUpdate`: what a write of
/// `half` may do to the conditions and the certificate. Rules that stored data already breaks are
/// waived, as upstream's compatibility options do.
pub(crate) fn validate_csr_update(half: Half, new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let (new_c, old_c) = (csr_conditions(new), csr_conditions(old));
    let type_of = |c: &Value| c.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    let old_types: Vec<String> = old_c.iter().map(type_of).collect();
    let allow_both = old_types.iter().any(|t| t == "Approved") && old_types.iter().any(|t| t == "Denied");
    let allow_duplicates = old_types.iter().enumerate().any(|(i, t)| old_types[..i].contains(t));
    let allow_empty = old_types.iter().any(String::is_empty);
    let (mut approved, mut denied) = (false, false);
    let mut seen: Vec<String> = Vec::new();
    for (i, c) in new_c.iter().enumerate() {
        let at = format!("status.conditions[{i}]");
        let t = type_of(c);
        if t.is_empty() && !allow_empty {
            causes.push(Cause::required(format!("{at}.type")));
        }
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        let allowed: &[&str] = if matches!(t.as_str(), "Approved" | "Denied" | "Failed") {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if status.is_empty() {
            causes.push(Cause::required(format!("{at}.status")));
        } else if !allowed.contains(&status) {
            causes.push(Cause::not_supported(format!("{at}.status"), format!("{status:?}"), allowed));
        }
        if !allow_both {
            let clash = match t.as_str() {
                "Approved" => {
                    approved = true;
                    denied
                }
                "Denied" => {
                    denied = true;
                    approved
                }
                _ => false,
            };
            if clash {
                causes.push(Cause::invalid(
                    format!("{at}.type"),
                    format!("{t:?}"),
                    "Approved and Denied conditions are mutually exclusive",
                ));
            }
        }
        if !allow_duplicates {
            if seen.contains(&t) {
                causes.push(Cause::duplicate(format!("{at}.type"), format!("{t:?}")));
            }
            seen.push(t);
        }
    }
    for t in ["Approved", "Denied", "Failed"] {
        if of_type(&new_c, t).len() < of_type(&old_c, t).len() {
            causes.push(Cause::forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    if half != Half::Approval {
        for t in ["Approved", "Denied"] {
            let (n, o) = (of_type(&new_c, t), of_type(&old_c, t));
            if n.len() > o.len() {
                causes.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not add a condition of type {t:?}"),
                ));
            } else if n.len() == o.len() && n != o {
                causes.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not modify a condition of type {t:?}"),
                ));
            }
        }
    }
    let (new_cert, old_cert) = (new.pointer("/status/certificate"), old.pointer("/status/certificate"));
    let cert_len = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, str::len);
    if new_cert != old_cert && !(cert_len(new_cert) == 0 && cert_len(old_cert) == 0) {
        if half != Half::Status {
            causes.push(Cause::forbidden("status.certificate", "updates may not set certificate content"));
        } else if cert_len(old_cert) > 0 {
            causes.push(Cause::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    causes
}

/// Sets a DaemonSet's `deprecated.daemonset.template.generation` annotation.
fn set_template_generation(obj: &mut Value, g: i64) {
    let Some(m) = meta::meta_mut(obj) else { return };
    let ann = m.entry("annotations").or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    if let Some(a) = ann.as_object_mut() {
        a.insert("deprecated.daemonset.template.generation".into(), json!(g.to_string()));
    }
}

/// The part of an object whose change bumps the generation: `spec`; for custom resources
/// everything but metadata and status (upstream's CR strategy).
fn spec_of(res: &ResourceDef, obj: &Value) -> Value {
    if crate::crd::custom(res).is_some() {
        let mut o = obj.clone();
        if let Some(m) = o.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        return o;
    }
    match obj.get("spec") {
        Some(s) => s.clone(),
        // Objects without spec (rare among the tracked kinds): everything but metadata and status.
        None => Value::Null,
    }
}

fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, key) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        let last = i == path.len() - 1;
        let map = match cur.as_object_mut() {
            Some(m) => m,
            None => return,
        };
        if last {
            let slot = map.entry(key.to_string()).or_insert(Value::Null);
            if slot.is_null() {
                *slot = value;
            }
            return;
        }
        cur = map.entry(key.to_string()).or_insert_with(|| json!({}));
    }
}

/// Finalizers that hold an object being deleted: `metadata.finalizers`, and for namespaces also
/// `spec.finalizers` (removed by the namespace controller once the namespace is empty).
pub fn holds_deletion(res: &ResourceDef, obj: &Value) -> bool {
    !meta::finalizers(obj).is_empty()
        || (res.kind == "Namespace"
            && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty()))
}

/// Upstream's defaulting (pkg/apis/*/v1/defaults.go) for the kinds kplane serves.
pub fn default(res: &ResourceDef, obj: &mut Value) {
    match res.kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        "Deployment" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            let strategy_type = obj.pointer("/spec/strategy/type").and_then(Value::as_str).map(str::to_string);
            match strategy_type.as_deref() {
                None | Some("RollingUpdate") => {
                    set_default(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
                    set_default(obj, &["spec", "strategy", "rollingUpdate", "maxUnavailable"], json!("25%"));
                    set_default(obj, &["spec", "strategy", "rollingUpdate", "maxSurge"], json!("25%"));
                }
                _ => {}
            }
            default_template(obj);
        }
        "ReplicaSet" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            default_template(obj);
        }
        "ReplicationController" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            // An RC without a selector selects its template's labels, and takes them as its own.
            let tmpl_labels = obj.pointer("/spec/template/metadata/labels").cloned();
            if let Some(labels) = tmpl_labels {
                let empty =
                    obj.pointer("/spec/selector").and_then(Value::as_object).is_none_or(|m| m.is_empty());
                if empty {
                    meta::set_path(obj, &["spec", "selector"], labels.clone());
                }
                let no_labels = meta::meta(obj)
                    .and_then(|m| m.get("labels"))
                    .and_then(Value::as_object)
                    .is_none_or(|m| m.is_empty());
                if no_labels {
                    meta::set(obj, "labels", labels);
                }
            }
            default_template(obj);
        }
        "Service" => default_service(obj),
        "Namespace" => {
            if let Some(name) = meta::name(obj).map(str::to_string) {
                if let Some(m) = meta::meta_mut(obj) {
                    let labels = m.entry("labels").or_insert_with(|| json!({}));
                    if let Some(l) = labels.as_object_mut() {
                        l.insert("kubernetes.io/metadata.name".into(), json!(name));
                    }
                }
            }
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
        }
        "Secret" => set_default(obj, &["type"], json!("Opaque")),
        "Job" => default_job(obj),
        "CronJob" => {
            set_default(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
            set_default(obj, &["spec", "suspend"], json!(false));
            set_default(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
            set_default(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "StatefulSet" => {
            set_default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            let strategy_type =
                obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str).map(str::to_string);
            if matches!(strategy_type.as_deref(), None | Some("RollingUpdate")) {
                set_default(obj, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
                set_default(obj, &["spec", "updateStrategy", "rollingUpdate", "partition"], json!(0));
            }
            set_default(obj, &["spec", "replicas"], json!(1));
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(obj, &["spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"], json!("Retain"));
            set_default(obj, &["spec", "persistentVolumeClaimRetentionPolicy", "whenScaled"], json!("Retain"));
            if let Some(claims) = obj.pointer_mut("/spec/volumeClaimTemplates").and_then(Value::as_array_mut) {
                for claim in claims {
                    set_default(claim, &["spec", "volumeMode"], json!("Filesystem"));
                    set_default(claim, &["status", "phase"], json!("Pending"));
                }
            }
            default_template(obj);
        }
        "DaemonSet" => {
            let strategy_type =
                obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str).map(str::to_string);
            if matches!(strategy_type.as_deref(), None | Some("RollingUpdate")) {
                set_default(obj, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
                set_default(obj, &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"], json!(1));
                set_default(obj, &["spec", "updateStrategy", "rollingUpdate", "maxSurge"], json!(0));
            }
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default_template(obj);
        }
        "HorizontalPodAutoscaler" => {
            set_default(obj, &["spec", "minReplicas"], json!(1));
            // autoscaling/v1 (stored as v2): upstream applies v2's default metric whenever the
            // stored object is decoded; with no cpu target and no metrics annotation, that default
            // reads back through v1 as targetCPUUtilizationPercentage 80.
            if res.version == "v1" {
                let annotated = obj
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(api_types::hpa::METRICS_ANNOTATION))
                    .is_some();
                if !annotated && obj.get("spec").is_some_and(Value::is_object) {
                    set_default(obj, &["spec", "targetCPUUtilizationPercentage"], json!(80));
                }
            }
            let no_metrics = obj.pointer("/spec/metrics").and_then(Value::as_array).is_none_or(Vec::is_empty);
            if res.version == "v2" && no_metrics && obj.get("spec").is_some_and(Value::is_object) {
                meta::set_path(
                    obj,
                    &["spec", "metrics"],
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
            }
        }
        "PersistentVolume" => {
            set_default(obj, &["spec", "persistentVolumeReclaimPolicy"], json!("Retain"));
            set_default(obj, &["spec", "volumeMode"], json!("Filesystem"));
            set_default(obj, &["status", "phase"], json!("Pending"));
        }
        "PersistentVolumeClaim" => {
            set_default(obj, &["spec", "volumeMode"], json!("Filesystem"));
            set_default(obj, &["status", "phase"], json!("Pending"));
        }
        "PodTemplate" => {
            if let Some(spec) = obj.pointer_mut("/template/spec") {
                default_pod_spec(spec);
            }
        }
        "StorageClass" => {
            set_default(obj, &["reclaimPolicy"], json!("Delete"));
            set_default(obj, &["volumeBindingMode"], json!("Immediate"));
        }
        "PriorityClass" => set_default(obj, &["preemptionPolicy"], json!("PreemptLowerPriority")),
        "LimitRange" => crate::limitrange::default(obj),
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            let mutating = res.kind == "MutatingWebhookConfiguration";
            if let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) {
                for hook in hooks {
                    set_default(hook, &["failurePolicy"], json!("Fail"));
                    set_default(hook, &["matchPolicy"], json!("Equivalent"));
                    set_default(hook, &["namespaceSelector"], json!({}));
                    set_default(hook, &["objectSelector"], json!({}));
                    set_default(hook, &["timeoutSeconds"], json!(10));
                    if mutating {
                        set_default(hook, &["reinvocationPolicy"], json!("Never"));
                    }
                    if let Some(rules) = hook.get_mut("rules").and_then(Value::as_array_mut) {
                        for rule in rules {
                            set_default(rule, &["scope"], json!("*"));
                        }
                    }
                    if let Some(svc) = hook.pointer_mut("/clientConfig/service") {
                        set_default(svc, &["port"], json!(443));
                    }
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            set_default(obj, &["spec", "failurePolicy"], json!("Fail"));
            if obj.pointer("/spec/matchConstraints").is_some_and(Value::is_object) {
                set_default(obj, &["spec", "matchConstraints", "matchPolicy"], json!("Equivalent"));
                set_default(obj, &["spec", "matchConstraints", "namespaceSelector"], json!({}));
                set_default(obj, &["spec", "matchConstraints", "objectSelector"], json!({}));
            }
        }
        "Event" if res.group.is_empty() => {
            set_default(obj, &["type"], json!("Normal"));
        }
        _ => {}
    }
}

/// Upstream's `SetDefaults_Job` (batch/v1, Kubernetes 1.33).
fn default_job(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let completions = obj.pointer("/spec/completions").is_some_and(|v| !v.is_null());
    let parallelism = obj.pointer("/spec/parallelism").is_some_and(|v| !v.is_null());
    if !completions && !parallelism {
        meta::set_path(obj, &["spec", "completions"], json!(1));
    }
    set_default(obj, &["spec", "parallelism"], json!(1));
    let per_index = obj.pointer("/spec/backoffLimitPerIndex").is_some_and(|v| !v.is_null());
    set_default(obj, &["spec", "backoffLimit"], json!(if per_index { i32::MAX as i64 } else { 6 }));
    set_default(obj, &["spec", "completionMode"], json!("NonIndexed"));
    set_default(obj, &["spec", "suspend"], json!(false));
    set_default(obj, &["spec", "manualSelector"], json!(false));
    let failure_policy = obj.pointer("/spec/podFailurePolicy").is_some_and(|v| !v.is_null());
    set_default(
        obj,
        &["spec", "podReplacementPolicy"],
        json!(if failure_policy { "Failed" } else { "TerminatingOrFailed" }),
    );
    if let Some(rules) = obj.pointer_mut("/spec/podFailurePolicy/rules").and_then(Value::as_array_mut) {
        for rule in rules {
            if let Some(conds) = rule.get_mut("onPodConditions").and_then(Value::as_array_mut) {
                for c in conds {
                    set_default(c, &["status"], json!("True"));
                }
            }
        }
    }
    // A Job without labels takes its pod template's.
    let no_labels =
        meta::meta(obj).and_then(|m| m.get("labels")).and_then(Value::as_object).is_none_or(|m| m.is_empty());
    if no_labels {
        if let Some(labels) = obj.pointer("/spec/template/metadata/labels").filter(|l| l.is_object()).cloned() {
            meta::set(obj, "labels", labels);
        }
    }
    default_template(obj);
}

pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

/// The Job strategy's `generateSelector` (unless `spec.manualSelector` is true): the pod template
/// gets the job-name and controller-uid labels (both spellings, where not set), and the selector
/// selects the controller-uid.
fn generate_job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let name = meta::name(obj).unwrap_or("").to_string();
    let uid = meta::uid(obj).unwrap_or("").to_string();
    if !obj.pointer("/spec/template/metadata/labels").is_some_and(Value::is_object) {
        meta::set_path(obj, &["spec", "template", "metadata", "labels"], json!({}));
    }
    if let Some(labels) = obj.pointer_mut("/spec/template/metadata/labels").and_then(Value::as_object_mut) {
        for (k, v) in [
            (LEGACY_JOB_NAME_LABEL, &name),
            (JOB_NAME_LABEL, &name),
            (LEGACY_CONTROLLER_UID_LABEL, &uid),
            (CONTROLLER_UID_LABEL, &uid),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
    if !obj.pointer("/spec/selector").is_some_and(Value::is_object) {
        meta::set_path(obj, &["spec", "selector"], json!({}));
    }
    if !obj.pointer("/spec/selector/matchLabels").is_some_and(Value::is_object) {
        meta::set_path(obj, &["spec", "selector", "matchLabels"], json!({}));
    }
    if let Some(ml) = obj.pointer_mut("/spec/selector/matchLabels").and_then(Value::as_object_mut) {
        ml.entry(CONTROLLER_UID_LABEL).or_insert_with(|| json!(uid));
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["securityContext"], json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
                let tag_latest = {
                    let last = image.rsplit('/').next().unwrap_or("");
                    !last.contains(':') && !image.contains('@') || last.ends_with(":latest")
                };
                set_default(c, &["imagePullPolicy"], json!(if tag_latest { "Always" } else { "IfNotPresent" }));
                set_default(c, &["terminationMessagePath"], json!("/dev/termination-log"));
                set_default(c, &["terminationMessagePolicy"], json!("File"));
                set_default(c, &["resources"], json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, &["protocol"], json!("TCP"));
                    }
                }
            }
        }
    }
}

fn default_service(obj: &mut Value) {
    set_default(obj, &["spec", "type"], json!("ClusterIP"));
    set_default(obj, &["spec", "sessionAffinity"], json!("None"));
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        set_default(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, &["protocol"], json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, &["targetPort"], port);
            }
        }
    }
}

/// Upstream's QoS class from container requests and limits.
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        let full = |m: Option<&serde_json::Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        if !full(lim) || (req.is_some() && req != lim && req.is_some_and(|r| !r.is_empty())) {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Validation of an object about to be stored (`old` on update). Empty means valid.
pub fn validate(res: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta::name(obj).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required_because("metadata.name", "name or generateName is required"));
    } else {
        let check: fn(&str) -> Vec<String> = match res.kind {
            "Namespace" => validation::dns1123_label,
            "Service" => validation::dns1035_label,
            "Event" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => validation::path_segment,
            _ => validation::dns1123_subdomain,
        };
        causes.extend(validation::name_causes("metadata.name", name, check));
    }
    if let Some(labels) = meta::meta(obj).and_then(|m| m.get("labels")).and_then(Value::as_object) {
        for (k, v) in labels {
            for e in api_types::selectors::label_key_errors(k) {
                causes.push(Cause::invalid("metadata.labels", format!("\"{k}\""), &e));
            }
            match v.as_str() {
                Some(s) => {
                    for e in api_types::selectors::label_value_errors(s) {
                        causes.push(Cause::invalid("metadata.labels", format!("\"{s}\""), &e));
                    }
                }
                None => causes.push(Cause::invalid("metadata.labels", v, "label values must be strings")),
            }
        }
    }
    match res.kind {
        "Pod" => validate_pod_spec(obj.get("spec"), "spec", &mut causes),
        "Deployment" | "ReplicaSet" | "ReplicationController" => validate_workload(res, obj, old, &mut causes),
        "StatefulSet" | "DaemonSet" => {
            validate_workload(res, obj, old, &mut causes);
            validate_restart_policy(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &["Always"],
                &mut causes,
            );
        }
        "Job" if res.group == "batch" => validate_job(obj, old, &mut causes),
        "CronJob" => validate_cron_job(obj, old, &mut causes),
        "PodDisruptionBudget" => validate_pdb(obj, &mut causes),
        "HorizontalPodAutoscaler" => validate_hpa(obj, &mut causes),
        "PersistentVolumeClaim" => validate_pvc(obj, &mut causes),
        "PodTemplate" => validate_pod_spec(obj.pointer("/template/spec"), "template.spec", &mut causes),
        "Service" => validate_service(obj, &mut causes),
        "LimitRange" => crate::limitrange::validate(obj, &mut causes),
        "PriorityClass" | "RuntimeClass" | "IngressClass" | "StorageClass" => {
            crate::classes::validate(res.kind, obj, old, &mut causes)
        }
        _ => {}
    }
    causes.extend(crate::crd::validate(res, obj, old));
    causes
}

fn validate_pod_spec(spec: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{at}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{at}.containers"))),
        Some(cs) => {
            let mut names = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let field = format!("{at}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(format!("{field}.name"))),
                    Some(n) => {
                        causes.extend(validation::name_causes(
                            &format!("{field}.name"),
                            n,
                            validation::dns1123_label,
                        ));
                        if !names.insert(n.to_string()) {
                            causes.push(Cause::duplicate(format!("{field}.name"), format!("\"{n}\"")));
                        }
                    }
                }
                if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                    causes.push(Cause::required(format!("{field}.image")));
                }
                if let Some(ports) = c.get("ports").and_then(Value::as_array) {
                    for (j, p) in ports.iter().enumerate() {
                        let f = format!("{field}.ports[{j}].containerPort");
                        match p.get("containerPort").and_then(Value::as_i64) {
                            None => causes.push(Cause::required(f)),
                            Some(n) if !(1..=65535).contains(&n) => {
                                causes.push(Cause::invalid(f, n, "must be between 1 and 65535, inclusive"))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

fn validate_workload(res: &ResourceDef, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if let Some(r) = obj.pointer("/spec/replicas") {
        match r.as_i64() {
            Some(n) if n < 0 => {
                causes.push(Cause::invalid("spec.replicas", n, "must be greater than or equal to 0"))
            }
            None if !r.is_null() => causes.push(Cause::invalid("spec.replicas", r, "must be an integer")),
            _ => {}
        }
    }
    let template_labels: std::collections::BTreeMap<String, String> = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    let selector = obj.pointer("/spec/selector");
    let rc = res.kind == "ReplicationController";
    let matches = match selector {
        None | Some(Value::Null) => {
            if !rc {
                causes.push(Cause::required("spec.selector"));
            }
            true
        }
        Some(sel) if rc => sel
            .as_object()
            .map(|m| {
                m.iter().all(|(k, v)| {
                    v.as_str().is_some_and(|v| template_labels.get(k).map(String::as_str) == Some(v))
                })
            })
            .unwrap_or(false),
        Some(sel) => {
            let ml = sel.get("matchLabels").and_then(Value::as_object);
            let me = sel.get("matchExpressions").and_then(Value::as_array);
            if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|e| e.is_empty()) {
                // Upstream's ReplicaSet validation says "deployment" too.
                let what = match res.kind {
                    "StatefulSet" => "statefulset",
                    "DaemonSet" => "daemonset",
                    _ => "deployment",
                };
                causes.push(Cause::invalid(
                    "spec.selector",
                    "{}",
                    &format!("empty selector is invalid for {what}"),
                ));
            }
            ml.is_none_or(|m| {
                m.iter().all(|(k, v)| {
                    v.as_str().is_some_and(|v| template_labels.get(k).map(String::as_str) == Some(v))
                })
            })
        }
    };
    if !matches {
        let labels = template_labels.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",");
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            format!("map[string]string{{{labels}}}"),
            "`selector` does not match template `labels`",
        ));
    }
    if obj.pointer("/spec/template").is_none() {
        causes.push(Cause::required("spec.template"));
    } else {
        validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", causes);
    }
    if !rc {
        if let Some(old) = old {
            let old_sel = old.pointer("/spec/selector");
            if old_sel != selector && old_sel.is_some() {
                causes.push(Cause::invalid(
                    "spec.selector",
                    selector.map(|s| s.to_string()).unwrap_or_default(),
                    "field is immutable",
                ));
            }
        }
    }
}

fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        causes.push(Cause::not_supported("spec.type", format!("\"{ty}\""), TYPES));
    }
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    if ty != "ExternalName" && ports.is_none_or(|p| p.is_empty()) && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let f = format!("spec.ports[{i}].port");
        match p.get("port").and_then(Value::as_i64) {
            None => causes.push(Cause::required(f)),
            Some(n) if !(1..=65535).contains(&n) => {
                causes.push(Cause::invalid(f, n, "must be between 1 and 65535, inclusive"))
            }
            _ => {}
        }
        if ports.is_some_and(|ps| ps.len() > 1)
            && p.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(Cause::not_supported(
                format!("spec.ports[{i}].protocol"),
                format!("\"{proto}\""),
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
}

/// `spec.template.spec.restartPolicy` must be one of `allowed` (after defaulting, so never empty).
fn validate_restart_policy(spec: Option<&Value>, at: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    let Some(spec) = spec else { return };
    let policy = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("");
    if !allowed.contains(&policy) {
        causes.push(Cause::not_supported(format!("{at}.restartPolicy"), format!("\"{policy}\""), allowed));
    }
}

fn non_negative(obj: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = obj.pointer(pointer).and_then(Value::as_i64) {
        if n < 0 {
            causes.push(Cause::invalid(field, n, "must be greater than or equal to 0"));
        }
    }
}

/// Whether a LabelSelector's matchLabels all appear in `labels` (expressions are not checked).
fn selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) else { return true };
    ml.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn labels_go_map(labels: Option<&Value>) -> String {
    let pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    format!("map[string]string{{{}}}", pairs.join(","))
}

/// Upstream's `ValidateJob` / `ValidateJobUpdate`, the parts a user hits.
fn validate_job(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    for f in ["parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"]
    {
        non_negative(obj, &format!("/spec/{f}"), &format!("spec.{f}"), causes);
    }
    let labels = obj.pointer("/spec/template/metadata/labels");
    match obj.pointer("/spec/selector").filter(|s| !s.is_null()) {
        None => causes.push(Cause::required("spec.selector")),
        Some(sel) => {
            if !selector_matches(sel, labels) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    labels_go_map(labels),
                    "`selector` does not match template `labels`",
                ));
            }
            // With a generated selector, the selector must be the one generated for this Job.
            if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) {
                let uid = meta::uid(obj).unwrap_or("");
                let generated =
                    sel.pointer(&format!("/matchLabels/{}", CONTROLLER_UID_LABEL.replace('/', "~1")));
                if generated.and_then(Value::as_str) != Some(uid) {
                    causes.push(Cause::invalid("spec.selector", sel, "`selector` not auto-generated"));
                }
            }
        }
    }
    if obj.pointer("/spec/template").is_none_or(Value::is_null) {
        causes.push(Cause::required("spec.template"));
    }
    let spec = obj.pointer("/spec/template/spec");
    validate_pod_spec(spec, "spec.template.spec", causes);
    validate_restart_policy(spec, "spec.template.spec", &["OnFailure", "Never"], causes);
    let mode = obj.pointer("/spec/completionMode").and_then(Value::as_str).unwrap_or("NonIndexed");
    if !["NonIndexed", "Indexed"].contains(&mode) {
        causes.push(Cause::not_supported(
            "spec.completionMode",
            format!("\"{mode}\""),
            &["NonIndexed", "Indexed"],
        ));
    }
    if let Some(old) = old {
        for (pointer, field) in [
            ("/spec/selector", "spec.selector"),
            ("/spec/completionMode", "spec.completionMode"),
            ("/spec/podFailurePolicy", "spec.podFailurePolicy"),
        ] {
            if obj.pointer(pointer) != old.pointer(pointer) {
                let v = obj.pointer(pointer).map(Value::to_string).unwrap_or_else(|| "null".into());
                causes.push(Cause::invalid(field, v, "field is immutable"));
            }
        }
        // Completions may change only together with parallelism in an Indexed Job (elastic).
        let elastic = mode == "Indexed" && obj.pointer("/spec/completions") == obj.pointer("/spec/parallelism");
        if !elastic && obj.pointer("/spec/completions") != old.pointer("/spec/completions") {
            let v = obj.pointer("/spec/completions").map(Value::to_string).unwrap_or_else(|| "null".into());
            causes.push(Cause::invalid("spec.completions", v, "field is immutable"));
        }
        // The pod template may change only while the Job is suspended (and has not started).
        let suspended = obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        if !suspended && obj.pointer("/spec/template") != old.pointer("/spec/template") {
            let v = obj.pointer("/spec/template").map(Value::to_string).unwrap_or_else(|| "null".into());
            causes.push(Cause::invalid("spec.template", v, "field is immutable"));
        }
    }
}

/// robfig/cron's `ParseStandard` (what upstream's validation calls), with its messages: a `TZ=` /
/// `CRON_TZ=` prefix naming a known zone, a descriptor (`@hourly`, …, `@every <duration>`), or 5
/// fields of comma-separated `*`/`?`/number/name, `a-b` ranges and `/step`s within each field's bounds.
fn cron_schedule_error(schedule: &str) -> Option<String> {
    let s = schedule.trim();
    if s.is_empty() {
        return Some("empty spec string".into());
    }
    let s = match s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
        Some(rest) => {
            let (zone, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(e) = time_zone_error(zone) {
                return Some(format!("provided bad location {zone}: {e}"));
            }
            tail.trim()
        }
        None => s,
    };
    if s.starts_with('@') {
        const DESCRIPTORS: &[&str] =
            &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
        if DESCRIPTORS.contains(&s) {
            return None;
        }
        if let Some(d) = s.strip_prefix("@every ") {
            let ok = !d.is_empty() && parse_go_duration_ok(d);
            return (!ok).then(|| format!("failed to parse duration {s}: time: invalid duration \"{d}\""));
        }
        return Some(format!("unrecognized descriptor: {s}"));
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!("expected exactly 5 fields, found {}: {}", fields.len(), fields.join(" ")));
    }
    const MONTHS: &[&str] =
        &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str], u32); 5] =
        [(0, 59, &[], 0), (0, 23, &[], 0), (1, 31, &[], 0), (1, 12, MONTHS, 1), (0, 6, DAYS, 0)];
    for (field, (min, max, names, first)) in fields.iter().zip(bounds) {
        for expr in field.split(',').filter(|e| !e.is_empty()) {
            if let Err(e) = cron_range(expr, min, max, names, first) {
                return Some(e);
            }
        }
    }
    None
}

/// robfig's `getRange` for one `expr` of a field with bounds `min..=max` and `names` (numbered from
/// `first`).
fn cron_range(expr: &str, min: u32, max: u32, names: &[&str], first: u32) -> Result<(), String> {
    let int = |t: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(t)) {
            return Ok(i as u32 + first);
        }
        match t.parse::<i64>() {
            Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {t}")),
            Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(_) => {
                Err(format!("failed to parse int from {t}: strconv.Atoi: parsing \"{t}\": invalid syntax"))
            }
        }
    };
    let range_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_step[0].split('-').collect();
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        (min, max)
    } else {
        let start = int(low_high[0])?;
        match low_high.len() {
            1 => (start, start),
            2 => (start, int(low_high[1])?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_step.len() {
        1 => 1,
        2 => {
            let step = int_plain(range_step[1])?;
            if low_high.len() == 1 {
                end = max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!("beginning of range ({start}) below minimum ({min}): {expr}"));
    }
    if end > max {
        return Err(format!("end of range ({end}) above maximum ({max}): {expr}"));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn int_plain(t: &str) -> Result<u32, String> {
    match t.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {t}")),
        Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        Err(_) => Err(format!("failed to parse int from {t}: strconv.Atoi: parsing \"{t}\": invalid syntax")),
    }
}

/// Go's `time.ParseDuration` shape: one or more `<decimal><unit>`, unit one of ns us µs ms s m h.
fn parse_go_duration_ok(d: &str) -> bool {
    let mut rest = d;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 || rest[..n].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        if !matches!(&rest[..u], "ns" | "us" | "µs" | "ms" | "s" | "m" | "h") {
            return false;
        }
        rest = &rest[u..];
    }
    true
}

/// Upstream's `validateTimeZone` for a set `spec.timeZone` (Go's `time.LoadLocation` message).
fn time_zone_error(tz: &str) -> Option<String> {
    if tz.is_empty() {
        return Some("timeZone must be nil or non-empty string".into());
    }
    let bad_part = tz.split('/').any(|p| {
        p == "."
            || p == ".."
            || p.starts_with('-')
            || !p.chars().all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c))
    });
    if bad_part {
        return Some(format!("unknown time zone {tz}"));
    }
    if tz.eq_ignore_ascii_case("local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".into(),
        );
    }
    jiff::tz::TimeZone::get(tz).is_err().then(|| format!("unknown time zone {tz}"))
}

fn validate_cron_job(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if let Some(name) = meta::name(obj) {
        // The CronJob's name plus an 11-character suffix names its Jobs, which are labelled with it.
        if name.len() > 52 {
            causes.push(Cause::invalid(
                "metadata.name",
                format!("\"{name}\""),
                "must be no more than 52 characters",
            ));
        }
    }
    match obj.pointer("/spec/schedule").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.schedule")),
        Some(schedule) => {
            if let Some(e) = cron_schedule_error(schedule) {
                causes.push(Cause::invalid("spec.schedule", format!("\"{schedule}\""), &e));
            }
            // Upstream: TZ in the schedule only on an update of a schedule that already had it.
            let old_had_tz = old
                .and_then(|o| o.pointer("/spec/schedule"))
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("TZ"));
            let time_zone_set = obj.pointer("/spec/timeZone").is_some_and(|v| !v.is_null());
            if schedule.contains("TZ") {
                if !old_had_tz {
                    causes.push(Cause::invalid(
                        "spec.schedule",
                        format!("\"{schedule}\""),
                        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                    ));
                } else if time_zone_set {
                    causes.push(Cause::invalid(
                        "spec.schedule",
                        format!("\"{schedule}\""),
                        "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                    ));
                }
            }
        }
    }
    match obj.pointer("/spec/timeZone") {
        None | Some(Value::Null) => {}
        Some(Value::String(tz)) => {
            if let Some(e) = time_zone_error(tz) {
                causes.push(Cause::invalid("spec.timeZone", format!("\"{tz}\""), &e));
            }
        }
        Some(v) => causes.push(Cause::invalid("spec.timeZone", v.to_string(), "must be a string")),
    }
    let policy = obj.pointer("/spec/concurrencyPolicy").and_then(Value::as_str).unwrap_or("Allow");
    if !["Allow", "Forbid", "Replace"].contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.concurrencyPolicy",
            format!("\"{policy}\""),
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for f in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        non_negative(obj, &format!("/spec/{f}"), &format!("spec.{f}"), causes);
    }
    let spec = obj.pointer("/spec/jobTemplate/spec/template/spec");
    validate_pod_spec(spec, "spec.jobTemplate.spec.template.spec", causes);
    validate_restart_policy(spec, "spec.jobTemplate.spec.template.spec", &["OnFailure", "Never"], causes);
}

fn validate_pdb(obj: &Value, causes: &mut Vec<Cause>) {
    let set = |k: &str| obj.pointer(&format!("/spec/{k}")).is_some_and(|v| !v.is_null());
    if set("minAvailable") && set("maxUnavailable") {
        causes.push(Cause::invalid(
            "spec",
            obj.pointer("/spec").map(Value::to_string).unwrap_or_default(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for k in ["minAvailable", "maxUnavailable"] {
        match obj.pointer(&format!("/spec/{k}")) {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
                causes.push(Cause::invalid(format!("spec.{k}"), n, "must be greater than or equal to 0"))
            }
            Some(Value::String(s)) => {
                let pct = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok());
                match pct {
                    None => causes.push(Cause::invalid(
                        format!("spec.{k}"),
                        format!("\"{s}\""),
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    )),
                    Some(p) if !(0..=100).contains(&p) => causes.push(Cause::invalid(
                        format!("spec.{k}"),
                        format!("\"{s}\""),
                        "must not be greater than 100%",
                    )),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

fn validate_hpa(obj: &Value, causes: &mut Vec<Cause>) {
    for k in ["kind", "name"] {
        if obj.pointer(&format!("/spec/scaleTargetRef/{k}")).and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.scaleTargetRef.{k}")));
        }
    }
    let min = obj.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if let Some(min) = min {
        if min < 1 {
            causes.push(Cause::invalid("spec.minReplicas", min, "must be greater than or equal to 1"));
        }
    }
    if max < 1 {
        causes.push(Cause::invalid("spec.maxReplicas", max, "must be greater than 0"));
    }
    if let Some(min) = min {
        if min > max && max >= 1 {
            causes.push(Cause::invalid("spec.minReplicas", min, "must be less than or equal to maxReplicas"));
        }
    }
}

fn validate_pvc(obj: &Value, causes: &mut Vec<Cause>) {
    const MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];
    let modes = obj.pointer("/spec/accessModes").and_then(Value::as_array);
    // A claim bound to a data source may omit its modes; everything else names at least one.
    match modes {
        None => causes.push(Cause::required_because("spec.accessModes", "at least 1 access mode is required")),
        Some(m) if m.is_empty() => {
            causes.push(Cause::required_because("spec.accessModes", "at least 1 access mode is required"))
        }
        Some(m) => {
            for mode in m {
                let s = mode.as_str().unwrap_or("");
                if !MODES.contains(&s) {
                    causes.push(Cause::not_supported("spec.accessModes", format!("\"{s}\""), MODES));
                }
            }
        }
    }
    if obj.pointer("/spec/resources/requests/storage").is_none_or(Value::is_null) {
        causes.push(Cause::required("spec.resources[storage]"));
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn csr_conditions_follow_upstreams_rules_per_subresource() {
        let csr = |conditions: Value| json!({"spec": {}, "status": {"conditions": conditions}});
        let cond = |t: &str| json!({"type": t, "status": "True"});
        let msgs = |half: Half, new: &Value, old: &Value| -> Vec<String> {
            validate_csr_update(half, new, old).iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
        };
        let pending = csr(json!([]));
        let approved = csr(json!([cond("Approved")]));
        assert!(msgs(Half::Approval, &approved, &pending).is_empty());
        assert_eq!(
            msgs(Half::Status, &approved, &pending),
            ["status.conditions: Forbidden: updates may not add a condition of type \"Approved\""]
        );
        assert_eq!(
            msgs(Half::Approval, &csr(json!([cond("Approved"), cond("Denied")])), &approved),
            ["status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"]
        );
        assert_eq!(
            msgs(Half::Approval, &pending, &approved),
            ["status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""]
        );
        assert_eq!(
            msgs(Half::Approval, &csr(json!([cond("Approved"), cond("Approved")])), &pending),
            ["status.conditions[1].type: Duplicate value: \"Approved\""]
        );
        let mut signed = approved.clone();
        signed["status"]["certificate"] = json!("Y2VydA==");
        assert!(msgs(Half::Status, &signed, &approved).is_empty());
        assert_eq!(
            msgs(Half::Approval, &signed, &approved),
            ["status.certificate: Forbidden: updates may not set certificate content"]
        );
        let mut resigned = signed.clone();
        resigned["status"]["certificate"] = json!("b3RoZXI=");
        assert_eq!(
            msgs(Half::Status, &resigned, &signed),
            ["status.certificate: Forbidden: updates may not modify existing certificate content"]
        );
    }

    use super::*;

    fn res(group: &str, version: &str, plural: &str) -> &'static ResourceDef {
        api_types::resources::lookup(group, version, plural).unwrap()
    }

    fn created(r: &ResourceDef, mut obj: Value) -> Value {
        meta::set(&mut obj, "uid", json!("u-1"));
        prepare_create(r, &mut obj);
        obj
    }

    #[test]
    fn job_defaults_and_generated_selector_are_upstreams() {
        let jobs = res("batch", "v1", "jobs");
        let job = created(
            jobs,
            json!({"metadata": {"name": "x", "namespace": "default"}, "spec": {"template": {"spec": {
                "containers": [{"name": "x", "image": "busybox"}], "restartPolicy": "Never"}}}}),
        );
        let spec = &job["spec"];
        assert_eq!(
            (&spec["parallelism"], &spec["completions"], &spec["backoffLimit"], &spec["completionMode"]),
            (&json!(1), &json!(1), &json!(6), &json!("NonIndexed"))
        );
        assert_eq!((&spec["suspend"], &spec["manualSelector"]), (&json!(false), &json!(false)));
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["selector"], json!({"matchLabels": {CONTROLLER_UID_LABEL: "u-1"}}));
        let want = json!({"batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "x",
                          "controller-uid": "u-1", "job-name": "x"});
        assert_eq!(spec["template"]["metadata"]["labels"], want);
        assert_eq!(job["metadata"]["labels"], want, "a Job without labels takes its template's");
        assert_eq!(job["metadata"]["generation"], 1);
        assert!(validate(jobs, &job, None).is_empty(), "{:?}", validate(jobs, &job, None));
        assert_eq!(spec["template"]["spec"]["terminationGracePeriodSeconds"], 30);
    }

    #[test]
    fn job_faults_have_upstreams_causes() {
        let jobs = res("batch", "v1", "jobs");
        let job = created(
            jobs,
            json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": []}}}}),
        );
        let fields: Vec<String> = validate(jobs, &job, None).iter().map(|c| c.field.clone()).collect();
        assert_eq!(fields, ["spec.template.spec.containers", "spec.template.spec.restartPolicy"]);
        let causes = validate(jobs, &job, None);
        assert_eq!(
            causes[1].message,
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        // Immutable fields on update.
        let ok = created(
            jobs,
            json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {
                "containers": [{"name": "x", "image": "busybox"}], "restartPolicy": "Never"}}}}),
        );
        let mut changed = ok.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx");
        changed["spec"]["completions"] = json!(3);
        let causes = validate(jobs, &changed, Some(&ok));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.completions", "spec.template"], "{causes:?}");
        assert!(causes.iter().all(|c| c.message.ends_with("field is immutable")));
        // A selector the user wrote without manualSelector is refused.
        let mut foreign = ok.clone();
        foreign["spec"]["selector"]["matchLabels"][CONTROLLER_UID_LABEL] = json!("other");
        let causes = validate(jobs, &foreign, None);
        assert!(causes.iter().any(|c| c.message.contains("`selector` not auto-generated")), "{causes:?}");
    }

    #[test]
    fn workload_and_storage_defaults() {
        let sts = created(
            res("apps", "v1", "statefulsets"),
            json!({"metadata": {"name": "w"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                   "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                   "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
        );
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!((&sts["spec"]["replicas"], &sts["spec"]["revisionHistoryLimit"]), (&json!(1), &json!(10)));
        assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
        let ds = created(res("apps", "v1", "daemonsets"), json!({"metadata": {"name": "d"}, "spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let cj = created(
            res("batch", "v1", "cronjobs"),
            json!({"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *"}}),
        );
        assert_eq!(
            (&cj["spec"]["concurrencyPolicy"], &cj["spec"]["suspend"]),
            (&json!("Allow"), &json!(false))
        );
        assert_eq!(
            (&cj["spec"]["successfulJobsHistoryLimit"], &cj["spec"]["failedJobsHistoryLimit"]),
            (&json!(3), &json!(1))
        );
        let pvc =
            created(res("", "v1", "persistentvolumeclaims"), json!({"metadata": {"name": "p"}, "spec": {}}));
        assert_eq!(
            (&pvc["spec"]["volumeMode"], &pvc["status"]["phase"]),
            (&json!("Filesystem"), &json!("Pending"))
        );
        let pv = created(res("", "v1", "persistentvolumes"), json!({"metadata": {"name": "p"}, "spec": {}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        let svc = created(
            res("", "v1", "services"),
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
        );
        assert_eq!(svc["status"], json!({"loadBalancer": {}}), "a created Service's status is reset");
        let hpa = created(
            res("autoscaling", "v2", "horizontalpodautoscalers"),
            json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    }

    #[test]
    fn cron_schedules_are_checked_as_robfig_cron_parses_them() {
        assert_eq!(cron_schedule_error("*/1 * * * *"), None);
        assert_eq!(cron_schedule_error("@hourly"), None);
        assert_eq!(cron_schedule_error("TZ=UTC 0 0 * * *"), None);
        assert_eq!(cron_schedule_error("nope").as_deref(), Some("expected exactly 5 fields, found 1: nope"));
        assert!(cron_schedule_error("@sometimes").is_some());
        assert_eq!(cron_schedule_error("0 9 * JAN mon-FRI"), None);
        assert_eq!(cron_schedule_error("5/15 */2 1,15 * ?"), None);
        assert_eq!(cron_schedule_error("@every 1h30m"), None);
        assert_eq!(
            cron_schedule_error("60 * * * *").as_deref(),
            Some("end of range (60) above maximum (59): 60")
        );
        assert_eq!(cron_schedule_error("* * * * 7").as_deref(), Some("end of range (7) above maximum (6): 7"));
        assert_eq!(
            cron_schedule_error("* * 0 * *").as_deref(),
            Some("beginning of range (0) below minimum (1): 0")
        );
        assert_eq!(
            cron_schedule_error("5-1 * * * *").as_deref(),
            Some("beginning of range (5) beyond end of range (1): 5-1")
        );
        assert_eq!(
            cron_schedule_error("*/0 * * * *").as_deref(),
            Some("step of range should be a positive number: */0")
        );
        assert_eq!(
            cron_schedule_error("L * * * *").as_deref(),
            Some("failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax")
        );
        assert!(cron_schedule_error("TZ=Mars/Base * * * * *").is_some());
        assert_eq!(time_zone_error("America/New_York"), None);
        assert_eq!(time_zone_error("Mars/Base").as_deref(), Some("unknown time zone Mars/Base"));
        assert!(time_zone_error("Local").is_some());
        assert!(time_zone_error("../etc").is_some());
        let tz_in_schedule = validate(
            res("batch", "v1", "cronjobs"),
            &json!({"metadata": {"name": "c"}, "spec": {"schedule": "TZ=UTC 0 0 * * *"}}),
            None,
        );
        assert_eq!(tz_in_schedule[0].field, "spec.schedule");
        let causes = validate(
            res("batch", "v1", "cronjobs"),
            &json!({"metadata": {"name": "c"}, "spec": {"schedule": "x y"}}),
            None,
        );
        assert_eq!(causes[0].field, "spec.schedule");
    }
}
