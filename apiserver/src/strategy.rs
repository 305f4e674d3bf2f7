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
}

impl Half {
    /// The subresource a write of this half goes through, as `managedFields` names it.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Half::Main => None,
            Half::Status => Some("status"),
            Half::Finalize => Some("finalize"),
        }
    }
}

/// Resources whose generation counts spec changes (upstream's strategies that set it).
fn tracks_generation(res: &ResourceDef) -> bool {
    matches!(res.kind, "Deployment" | "ReplicaSet" | "ReplicationController" | "Ingress" | "Pod" | "Service")
        || crate::crd::is_crd(res)
        || crate::crd::custom(res).is_some()
}

fn has_status(res: &ResourceDef) -> bool {
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
    default(res, obj);
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
        "Event" if res.group.is_empty() => {
            set_default(obj, &["type"], json!("Normal"));
        }
        _ => {}
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
fn qos_class(pod: &Value) -> &'static str {
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
        "Service" => validate_service(obj, &mut causes),
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
                causes.push(Cause::invalid("spec.selector", "{}", "empty selector is invalid for deployment"));
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
