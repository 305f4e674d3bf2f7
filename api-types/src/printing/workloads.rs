//! Rows for the replica-managing workloads: Deployments, ReplicaSets, ReplicationControllers.

use super::duration::since;
use super::json::{
    arr_at, container_cells, creation, format_label_selector, format_labels, get, int_at,
    label_selector_string, name, obj, opt_int,
};
use super::Row;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// `spec.replicas`, which upstream's defaulting sets to 1 when absent, on every read from storage.
fn desired_replicas(v: &Value) -> i64 {
    opt_int(v, &["spec", "replicas"]).unwrap_or(1)
}

pub(crate) fn deployment_row(d: &Value, now: Timestamp) -> Row {
    let (names, images) = container_cells(arr_at(d, &["spec", "template", "spec", "containers"]));
    // Unlike ReplicaSets, Deployments print the raw selector string: "" when empty, "<invalid>" on error.
    let selector =
        label_selector_string(get(d, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".to_string());
    Row::new(vec![
        name(d).into(),
        format!("{}/{}", int_at(d, &["status", "readyReplicas"]), desired_replicas(d)).into(),
        int_at(d, &["status", "updatedReplicas"]).into(),
        int_at(d, &["status", "availableReplicas"]).into(),
        since(creation(d), now).into(),
        names.into(),
        images.into(),
        selector.into(),
    ])
}

pub(crate) fn replica_set_row(rs: &Value, now: Timestamp) -> Row {
    let (names, images) = container_cells(arr_at(rs, &["spec", "template", "spec", "containers"]));
    Row::new(vec![
        name(rs).into(),
        desired_replicas(rs).into(),
        int_at(rs, &["status", "replicas"]).into(),
        int_at(rs, &["status", "readyReplicas"]).into(),
        since(creation(rs), now).into(),
        names.into(),
        images.into(),
        format_label_selector(get(rs, &["spec", "selector"])).into(),
    ])
}

pub(crate) fn replication_controller_row(rc: &Value, now: Timestamp) -> Row {
    let (names, images) = container_cells(arr_at(rc, &["spec", "template", "spec", "containers"]));
    // Defaulting fills an empty selector from the template's labels.
    let selector = match obj(rc, &["spec", "selector"]) {
        Some(m) if !m.is_empty() => get(rc, &["spec", "selector"]),
        _ => get(rc, &["spec", "template", "metadata", "labels"]),
    };
    Row::new(vec![
        name(rc).into(),
        desired_replicas(rc).into(),
        int_at(rc, &["status", "replicas"]).into(),
        int_at(rc, &["status", "readyReplicas"]).into(),
        since(creation(rc), now).into(),
        names.into(),
        images.into(),
        format_labels(selector).into(),
    ])
}
