//! Rows for the batch and apps kinds added with issue 15: Jobs, CronJobs, StatefulSets, DaemonSets,
//! ControllerRevisions, and the autoscaling/policy kinds that manage them (HPA, PDB).

use super::duration::{human_duration_nanos, since};
use super::json::{
    arr_at, container_cells, creation, format_label_selector, format_labels, get, int_at, is_set, name, obj,
    opt_int, opt_str, str_at, time_at,
};
use super::Row;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// `hasJobCondition`: the first condition of the type decides.
fn has_condition(v: &Value, ty: &str) -> bool {
    arr_at(v, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == ty)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn nanos_between(from: Timestamp, to: Timestamp) -> i64 {
    let n = to.as_nanosecond() - from.as_nanosecond();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn job_row(job: &Value, now: Timestamp) -> Row {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = match opt_int(job, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match opt_int(job, &["spec", "parallelism"]).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (time_at(job, &["status", "startTime"]), time_at(job, &["status", "completionTime"])) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration_nanos(nanos_between(start, now)),
        (Some(start), Some(end)) => human_duration_nanos(nanos_between(start, end)),
    };
    let status = if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if is_set(job, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(arr_at(job, &["spec", "template", "spec", "containers"]));
    Row::new(vec![
        name(job).into(),
        status.into(),
        completions.into(),
        duration.into(),
        since(creation(job), now).into(),
        names.into(),
        images.into(),
        format_label_selector(get(job, &["spec", "selector"])).into(),
    ])
}

/// `printBoolPtr`.
fn bool_ptr(v: &Value, path: &[&str]) -> &'static str {
    match get(v, path).and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

pub(crate) fn cron_job_row(cj: &Value, now: Timestamp) -> Row {
    let last = match time_at(cj, &["status", "lastScheduleTime"]) {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    let tz = opt_str(cj, &["spec", "timeZone"]).unwrap_or("<none>");
    let job_spec = get(cj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let (names, images) = container_cells(arr_at(job_spec, &["template", "spec", "containers"]));
    Row::new(vec![
        name(cj).into(),
        str_at(cj, &["spec", "schedule"]).into(),
        tz.into(),
        bool_ptr(cj, &["spec", "suspend"]).into(),
        (arr_at(cj, &["status", "active"]).len() as i64).into(),
        last.into(),
        since(creation(cj), now).into(),
        names.into(),
        images.into(),
        format_label_selector(get(job_spec, &["selector"])).into(),
    ])
}

pub(crate) fn stateful_set_row(sts: &Value, now: Timestamp) -> Row {
    let (names, images) = container_cells(arr_at(sts, &["spec", "template", "spec", "containers"]));
    Row::new(vec![
        name(sts).into(),
        format!(
            "{}/{}",
            int_at(sts, &["status", "readyReplicas"]),
            opt_int(sts, &["spec", "replicas"]).unwrap_or(1)
        )
        .into(),
        since(creation(sts), now).into(),
        names.into(),
        images.into(),
    ])
}

pub(crate) fn daemon_set_row(ds: &Value, now: Timestamp) -> Row {
    let (names, images) = container_cells(arr_at(ds, &["spec", "template", "spec", "containers"]));
    Row::new(vec![
        name(ds).into(),
        int_at(ds, &["status", "desiredNumberScheduled"]).into(),
        int_at(ds, &["status", "currentNumberScheduled"]).into(),
        int_at(ds, &["status", "numberReady"]).into(),
        int_at(ds, &["status", "updatedNumberScheduled"]).into(),
        int_at(ds, &["status", "numberAvailable"]).into(),
        format_labels(get(ds, &["spec", "template", "spec", "nodeSelector"])).into(),
        since(creation(ds), now).into(),
        names.into(),
        images.into(),
        format_label_selector(get(ds, &["spec", "selector"])).into(),
    ])
}

pub(crate) fn controller_revision_row(cr: &Value, now: Timestamp) -> Row {
    // `metav1.GetControllerOf`, then `formatResourceName` with the GroupKind: `statefulset.apps/web`.
    let controller = arr_at(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| get(r, &["controller"]).and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let group = str_at(r, &["apiVersion"]).rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let kind = str_at(r, &["kind"]);
            let gk = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
            if gk.is_empty() {
                str_at(r, &["name"]).to_string()
            } else {
                format!("{}/{}", gk.to_lowercase(), str_at(r, &["name"]))
            }
        })
        .unwrap_or_else(|| "<none>".to_string());
    Row::new(vec![
        name(cr).into(),
        controller.into(),
        int_at(cr, &["revision"]).into(),
        since(creation(cr), now).into(),
    ])
}

/// An IntOrString as `String()` prints it.
fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn pod_disruption_budget_row(pdb: &Value, now: Timestamp) -> Row {
    let field = |k: &str| match get(pdb, &["spec", k]) {
        Some(v) if !v.is_null() => int_or_string(v),
        _ => "N/A".to_string(),
    };
    Row::new(vec![
        name(pdb).into(),
        field("minAvailable").into(),
        field("maxUnavailable").into(),
        int_at(pdb, &["status", "disruptionsAllowed"]).into(),
        since(creation(pdb), now).into(),
    ])
}

/// A Quantity field as printed (`<unknown>`-free: the stored string, "0" when absent).
fn quantity(v: &Value, path: &[&str]) -> String {
    match get(v, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// `formatHPAMetrics`: at most two targets, then `+ N more...`.
fn hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let mut list = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let has = |k: &str| status.is_some_and(|s| obj(s, &[k]).is_some());
        let cur = |k: &str, field: &str| match status {
            Some(s) if obj(s, &[k]).is_some() => quantity(s, &[k, "current", field]),
            _ => "<unknown>".to_string(),
        };
        let entry = match str_at(spec, &["type"]) {
            "External" | "Object" => {
                let k = if str_at(spec, &["type"]) == "External" { "external" } else { "object" };
                if is_set(spec, &[k, "target", "averageValue"]) {
                    let current =
                        if has(k) && status.is_some_and(|s| is_set(s, &[k, "current", "averageValue"])) {
                            cur(k, "averageValue")
                        } else {
                            "<unknown>".to_string()
                        };
                    format!("{current}/{} (avg)", quantity(spec, &[k, "target", "averageValue"]))
                } else {
                    format!("{}/{}", cur(k, "value"), quantity(spec, &[k, "target", "value"]))
                }
            }
            "Pods" => format!(
                "{}/{}",
                cur("pods", "averageValue"),
                quantity(spec, &["pods", "target", "averageValue"])
            ),
            t @ ("Resource" | "ContainerResource") => {
                let k = if t == "Resource" { "resource" } else { "containerResource" };
                let res_name = str_at(spec, &[k, "name"]);
                if is_set(spec, &[k, "target", "averageValue"]) {
                    format!(
                        "{res_name}: {}/{}",
                        cur(k, "averageValue"),
                        quantity(spec, &[k, "target", "averageValue"])
                    )
                } else {
                    let current = match status.and_then(|s| opt_int(s, &[k, "current", "averageUtilization"])) {
                        Some(u) => format!("{u}%"),
                        None => "<unknown>".to_string(),
                    };
                    let target = match opt_int(spec, &[k, "target", "averageUtilization"]) {
                        Some(u) => format!("{u}%"),
                        None => "<auto>".to_string(),
                    };
                    format!("{res_name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    let count = list.len();
    if count > 2 {
        list.truncate(2);
        return format!("{} + {} more...", list.join(", "), count - 2);
    }
    list.join(", ")
}

pub(crate) fn horizontal_pod_autoscaler_row(hpa: &Value, now: Timestamp) -> Row {
    let reference = format!(
        "{}/{}",
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        str_at(hpa, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = match opt_int(hpa, &["spec", "minReplicas"]) {
        Some(n) => n.to_string(),
        None => "<unset>".to_string(),
    };
    Row::new(vec![
        name(hpa).into(),
        reference.into(),
        hpa_metrics(arr_at(hpa, &["spec", "metrics"]), arr_at(hpa, &["status", "currentMetrics"])).into(),
        min_pods.into(),
        int_at(hpa, &["spec", "maxReplicas"]).into(),
        int_at(hpa, &["status", "currentReplicas"]).into(),
        since(creation(hpa), now).into(),
    ])
}
