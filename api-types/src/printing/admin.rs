//! Rows for the storage, scheduling, admission, certificates, flow-control and registration kinds
//! added with issue 15, and the core kinds PersistentVolume(Claim), ResourceQuota, LimitRange,
//! PodTemplate, and networking's NetworkPolicy, IPAddress and ServiceCIDR.

use super::duration::{human_duration, since};
use super::json::{
    arr_at, bool_at, container_cells, creation, format_label_selector, format_labels, get, int_at, is_set,
    len_at, name, obj, opt_int, opt_str, str_at,
};
use super::Row;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// `GetAccessModesAsString`: the short forms in upstream's fixed order, each once.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(long, _)| has(long))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// A Quantity as printed: the stored string; Go's zero Quantity prints "0".
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// `GetPersistentVolume(Claim)Class`: the beta annotation wins over `spec.storageClassName`.
fn storage_class(v: &Value) -> String {
    if let Some(a) = opt_str(v, &["metadata", "annotations", BETA_STORAGE_CLASS_ANNOTATION]) {
        return a.to_string();
    }
    str_at(v, &["spec", "storageClassName"]).to_string()
}

fn unset_or(v: &Value, path: &[&str]) -> String {
    opt_str(v, path).unwrap_or("<unset>").to_string()
}

fn phase_or_terminating(v: &Value) -> &str {
    if is_set(v, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else {
        str_at(v, &["status", "phase"])
    }
}

pub(crate) fn persistent_volume_row(pv: &Value, now: Timestamp) -> Row {
    let claim = match obj(pv, &["spec", "claimRef"]) {
        Some(_) => {
            format!(
                "{}/{}",
                str_at(pv, &["spec", "claimRef", "namespace"]),
                str_at(pv, &["spec", "claimRef", "name"])
            )
        }
        None => String::new(),
    };
    Row::new(vec![
        name(pv).into(),
        quantity(get(pv, &["spec", "capacity", "storage"])).into(),
        access_modes(arr_at(pv, &["spec", "accessModes"])).into(),
        str_at(pv, &["spec", "persistentVolumeReclaimPolicy"]).into(),
        phase_or_terminating(pv).into(),
        claim.into(),
        storage_class(pv).into(),
        unset_or(pv, &["spec", "volumeAttributesClassName"]).into(),
        str_at(pv, &["status", "reason"]).into(),
        since(creation(pv), now).into(),
        unset_or(pv, &["spec", "volumeMode"]).into(),
    ])
}

pub(crate) fn persistent_volume_claim_row(pvc: &Value, now: Timestamp) -> Row {
    let volume = str_at(pvc, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(pvc, &["status", "capacity", "storage"])),
            access_modes(arr_at(pvc, &["status", "accessModes"])),
        )
    };
    Row::new(vec![
        name(pvc).into(),
        phase_or_terminating(pvc).into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        storage_class(pvc).into(),
        unset_or(pvc, &["spec", "volumeAttributesClassName"]).into(),
        since(creation(pvc), now).into(),
        unset_or(pvc, &["spec", "volumeMode"]).into(),
    ])
}

pub(crate) fn resource_quota_row(rq: &Value, now: Timestamp) -> Row {
    let mut resources: Vec<&String> =
        obj(rq, &["status", "hard"]).map(|m| m.keys().collect()).unwrap_or_default();
    resources.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for r in resources {
        let entry = format!(
            "{r}: {}/{}",
            quantity(get(rq, &["status", "used", r])),
            quantity(get(rq, &["status", "hard", r]))
        );
        let pieces: Vec<&str> = r.split('.').collect();
        if pieces.len() > 1 && pieces[0] == "limits" {
            limit.push(entry);
        } else {
            request.push(entry);
        }
    }
    Row::new(vec![
        name(rq).into(),
        since(creation(rq), now).into(),
        request.join(", ").into(),
        limit.join(", ").into(),
    ])
}

pub(crate) fn limit_range_row(lr: &Value) -> Row {
    // Upstream puts the metav1.Time itself in the cell: its JSON form, RFC 3339.
    let created = get(lr, &["metadata", "creationTimestamp"]).cloned().unwrap_or(Value::Null);
    Row::new(vec![name(lr).into(), created])
}

pub(crate) fn pod_template_row(pt: &Value) -> Row {
    let (names, images) = container_cells(arr_at(pt, &["template", "spec", "containers"]));
    Row::new(vec![
        name(pt).into(),
        names.into(),
        images.into(),
        format_labels(get(pt, &["template", "metadata", "labels"])).into(),
    ])
}

pub(crate) fn network_policy_row(np: &Value, now: Timestamp) -> Row {
    // The pod selector is a struct, never nil: an empty one prints `<none>`.
    let sel = get(np, &["spec", "podSelector"]).cloned().unwrap_or_else(|| serde_json::json!({}));
    Row::new(vec![name(np).into(), format_label_selector(Some(&sel)).into(), since(creation(np), now).into()])
}

pub(crate) fn storage_class_row(sc: &Value, now: Timestamp) -> Row {
    let annotations = |k: &str| opt_str(sc, &["metadata", "annotations", k]);
    let default = annotations("storageclass.kubernetes.io/is-default-class") == Some("true")
        || annotations("storageclass.beta.kubernetes.io/is-default-class") == Some("true");
    let display = if default { format!("{} (default)", name(sc)) } else { name(sc).to_string() };
    Row::new(vec![
        display.into(),
        str_at(sc, &["provisioner"]).into(),
        opt_str(sc, &["reclaimPolicy"]).unwrap_or("Delete").into(),
        opt_str(sc, &["volumeBindingMode"]).unwrap_or("Immediate").into(),
        bool_at(sc, &["allowVolumeExpansion"]).into(),
        since(creation(sc), now).into(),
    ])
}

pub(crate) fn csi_driver_row(d: &Value, now: Timestamp) -> Row {
    let flag = |k: &str, default: bool| get(d, &["spec", k]).and_then(Value::as_bool).unwrap_or(default);
    let tokens = match get(d, &["spec", "tokenRequests"]).and_then(Value::as_array) {
        Some(list) => list.iter().map(|t| str_at(t, &["audience"])).collect::<Vec<_>>().join(","),
        None => "<unset>".to_string(),
    };
    let modes: Vec<&str> =
        arr_at(d, &["spec", "volumeLifecycleModes"]).iter().filter_map(Value::as_str).collect();
    let modes = if modes.is_empty() { "<none>".to_string() } else { modes.join(",") };
    Row::new(vec![
        name(d).into(),
        flag("attachRequired", true).into(),
        flag("podInfoOnMount", false).into(),
        flag("storageCapacity", false).into(),
        tokens.into(),
        flag("requiresRepublish", false).into(),
        modes.into(),
        since(creation(d), now).into(),
    ])
}

pub(crate) fn csi_node_row(n: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(n).into(), len_at(n, &["spec", "drivers"]).into(), since(creation(n), now).into()])
}

pub(crate) fn csi_storage_capacity_row(c: &Value) -> Row {
    let capacity = match get(c, &["capacity"]) {
        Some(v) if !v.is_null() => quantity(Some(v)),
        _ => "<unset>".to_string(),
    };
    Row::new(vec![name(c).into(), str_at(c, &["storageClassName"]).into(), capacity.into()])
}

pub(crate) fn volume_attachment_row(va: &Value, now: Timestamp) -> Row {
    Row::new(vec![
        name(va).into(),
        str_at(va, &["spec", "attacher"]).into(),
        str_at(va, &["spec", "source", "persistentVolumeName"]).into(),
        str_at(va, &["spec", "nodeName"]).into(),
        bool_at(va, &["status", "attached"]).into(),
        since(creation(va), now).into(),
    ])
}

pub(crate) fn priority_class_row(pc: &Value, now: Timestamp) -> Row {
    Row::new(vec![
        name(pc).into(),
        int_at(pc, &["value"]).into(),
        bool_at(pc, &["globalDefault"]).into(),
        since(creation(pc), now).into(),
        str_at(pc, &["preemptionPolicy"]).into(),
    ])
}

pub(crate) fn runtime_class_row(rc: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(rc).into(), str_at(rc, &["handler"]).into(), since(creation(rc), now).into()])
}

pub(crate) fn webhook_configuration_row(w: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(w).into(), len_at(w, &["webhooks"]).into(), since(creation(w), now).into()])
}

pub(crate) fn validating_admission_policy_row(p: &Value, now: Timestamp) -> Row {
    let param_kind = match obj(p, &["spec", "paramKind"]) {
        Some(_) => format!(
            "{}/{}",
            str_at(p, &["spec", "paramKind", "apiVersion"]),
            str_at(p, &["spec", "paramKind", "kind"])
        ),
        None => "<unset>".to_string(),
    };
    Row::new(vec![
        name(p).into(),
        len_at(p, &["spec", "validations"]).into(),
        param_kind.into(),
        since(creation(p), now).into(),
    ])
}

pub(crate) fn validating_admission_policy_binding_row(b: &Value, now: Timestamp) -> Row {
    let param_ref = match obj(b, &["spec", "paramRef"]) {
        Some(_) => {
            let ns = str_at(b, &["spec", "paramRef", "namespace"]);
            let n = str_at(b, &["spec", "paramRef", "name"]);
            if ns.is_empty() {
                format!("*/{n}")
            } else {
                format!("{ns}/{n}")
            }
        }
        None => "<unset>".to_string(),
    };
    Row::new(vec![
        name(b).into(),
        str_at(b, &["spec", "policyName"]).into(),
        param_ref.into(),
        since(creation(b), now).into(),
    ])
}

pub(crate) fn certificate_signing_request_row(csr: &Value, now: Timestamp) -> Row {
    let conds = arr_at(csr, &["status", "conditions"]);
    let has = |t: &str| conds.iter().any(|c| str_at(c, &["type"]) == t);
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    let signer = match str_at(csr, &["spec", "signerName"]) {
        "" => "<none>",
        s => s,
    };
    let requested = match opt_int(csr, &["spec", "expirationSeconds"]) {
        Some(secs) => human_duration(std::time::Duration::from_secs(secs.max(0).unsigned_abs())),
        None => "<none>".to_string(),
    };
    Row::new(vec![
        name(csr).into(),
        since(creation(csr), now).into(),
        signer.into(),
        str_at(csr, &["spec", "username"]).into(),
        requested.into(),
        status.into(),
    ])
}

pub(crate) fn flow_schema_row(fs: &Value, now: Timestamp) -> Row {
    let distinguisher = opt_str(fs, &["spec", "distinguisherMethod", "type"]).unwrap_or("<none>");
    let dangling = arr_at(fs, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Dangling")
        .map(|c| str_at(c, &["status"]).to_string())
        .unwrap_or_else(|| "?".to_string());
    Row::new(vec![
        name(fs).into(),
        str_at(fs, &["spec", "priorityLevelConfiguration", "name"]).into(),
        int_at(fs, &["spec", "matchingPrecedence"]).into(),
        distinguisher.into(),
        since(creation(fs), now).into(),
        dangling.into(),
    ])
}

pub(crate) fn priority_level_configuration_row(pl: &Value, now: Timestamp) -> Row {
    let none = || Value::from("<none>");
    let (mut ncs, mut queues, mut hand, mut qll) = (none(), none(), none(), none());
    if obj(pl, &["spec", "limited"]).is_some() {
        ncs = int_at(pl, &["spec", "limited", "nominalConcurrencyShares"]).into();
        if obj(pl, &["spec", "limited", "limitResponse", "queuing"]).is_some() {
            let q = |k: &str| Value::from(int_at(pl, &["spec", "limited", "limitResponse", "queuing", k]));
            queues = q("queues");
            hand = q("handSize");
            qll = q("queueLengthLimit");
        }
    }
    Row::new(vec![
        name(pl).into(),
        str_at(pl, &["spec", "type"]).into(),
        ncs,
        queues,
        hand,
        qll,
        since(creation(pl), now).into(),
    ])
}

pub(crate) fn api_service_row(a: &Value, now: Timestamp) -> Row {
    let service = match obj(a, &["spec", "service"]) {
        Some(_) => format!(
            "{}/{}",
            str_at(a, &["spec", "service", "namespace"]),
            str_at(a, &["spec", "service", "name"])
        ),
        None => "Local".to_string(),
    };
    let available = arr_at(a, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Available")
        .map(|c| {
            let s = str_at(c, &["status"]);
            let reason = str_at(c, &["reason"]);
            if s == "True" || reason.is_empty() {
                s.to_string()
            } else {
                format!("{s} ({reason})")
            }
        })
        .unwrap_or_else(|| "Unknown".to_string());
    Row::new(vec![name(a).into(), service.into(), available.into(), since(creation(a), now).into()])
}

pub(crate) fn ip_address_row(ip: &Value) -> Row {
    let parent = match obj(ip, &["spec", "parentRef"]) {
        Some(_) => {
            let group = str_at(ip, &["spec", "parentRef", "group"]);
            let resource = str_at(ip, &["spec", "parentRef", "resource"]);
            let gr = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
            let ns = str_at(ip, &["spec", "parentRef", "namespace"]);
            let n = str_at(ip, &["spec", "parentRef", "name"]);
            if ns.is_empty() {
                format!("{gr}/{n}")
            } else {
                format!("{gr}/{ns}/{n}")
            }
        }
        None => String::new(),
    };
    Row::new(vec![name(ip).into(), parent.into()])
}

pub(crate) fn service_cidr_row(s: &Value, now: Timestamp) -> Row {
    let cidrs: Vec<&str> = arr_at(s, &["spec", "cidrs"]).iter().filter_map(Value::as_str).collect();
    Row::new(vec![name(s).into(), cidrs.join(",").into(), since(creation(s), now).into()])
}
