//! Rows for Nodes, Namespaces, Events (both APIs), Leases, ConfigMaps, Secrets, ServiceAccounts,
//! ComponentStatuses, and the generic fallback.

use super::duration::since;
use super::json::{arr_at, bool_at, creation, int_at, is_set, len_at, name, obj, str_at, time_at};
use super::Row;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeSet;

const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";
const LEGACY_ROLE_LABEL: &str = "kubernetes.io/role";

pub(crate) fn node_row(node: &Value, now: Timestamp) -> Row {
    // Only the Ready condition feeds STATUS; upstream keeps the last condition of each type.
    let ready = arr_at(node, &["status", "conditions"]).iter().rfind(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }

    let mut roles: BTreeSet<&str> = BTreeSet::new();
    if let Some(labels) = obj(node, &["metadata", "labels"]) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix(ROLE_LABEL_PREFIX).filter(|r| !r.is_empty()) {
                roles.insert(role);
            } else if k == LEGACY_ROLE_LABEL {
                if let Some(role) = v.as_str().filter(|r| !r.is_empty()) {
                    roles.insert(role);
                }
            }
        }
    }
    let roles =
        if roles.is_empty() { "<none>".to_string() } else { roles.into_iter().collect::<Vec<_>>().join(",") };

    let info = |field: &str| match str_at(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>",
        s => s,
    };
    Row::new(vec![
        name(node).into(),
        status.join(",").into(),
        roles.into(),
        since(creation(node), now).into(),
        str_at(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        node_address(node, "InternalIP").into(),
        node_address(node, "ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ])
}

/// The first address of a type, `<none>` if there is none.
fn node_address<'a>(node: &'a Value, ty: &str) -> &'a str {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == ty)
        .map(|a| str_at(a, &["address"]))
        .unwrap_or("<none>")
}

pub(crate) fn namespace_row(ns: &Value, now: Timestamp) -> Row {
    // Defaulting sets an empty phase to Active on every read.
    let phase = match str_at(ns, &["status", "phase"]) {
        "" => "Active",
        p => p,
    };
    Row::new(vec![name(ns).into(), phase.into(), since(creation(ns), now).into()])
}

/// The fields the event printer reads. Upstream prints events.k8s.io/v1 Events after converting them
/// to the internal (core-shaped) Event, so both APIs go through one view.
struct EventView<'a> {
    v: &'a Value,
    /// Key of the involved object: `involvedObject` (core) or `regarding` (events.k8s.io).
    regarding: &'a str,
    message: &'a str,
    source: &'a str,
    first: &'a str,
    last: &'a str,
    count: &'a str,
    reporting_controller: &'a str,
}

const CORE_EVENT: EventView<'static> = EventView {
    v: &Value::Null,
    regarding: "involvedObject",
    message: "message",
    source: "source",
    first: "firstTimestamp",
    last: "lastTimestamp",
    count: "count",
    reporting_controller: "reportingComponent",
};

const EVENTS_V1_EVENT: EventView<'static> = EventView {
    v: &Value::Null,
    regarding: "regarding",
    message: "note",
    source: "deprecatedSource",
    first: "deprecatedFirstTimestamp",
    last: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    reporting_controller: "reportingController",
};

pub(crate) fn core_event_row(ev: &Value, now: Timestamp) -> Row {
    event_row(&EventView { v: ev, ..CORE_EVENT }, now)
}

pub(crate) fn events_v1_event_row(ev: &Value, now: Timestamp) -> Row {
    event_row(&EventView { v: ev, ..EVENTS_V1_EVENT }, now)
}

fn event_row(e: &EventView<'_>, now: Timestamp) -> Row {
    let v = e.v;
    // New-style events carry only eventTime; old-style only first/lastTimestamp.
    let first = match time_at(v, &[e.first]) {
        Some(t) => since(Some(t), now),
        None => since(time_at(v, &["eventTime"]), now),
    };
    let mut last = match time_at(v, &[e.last]) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int_at(v, &[e.count]);
    if is_set(v, &["series"]) {
        last = since(time_at(v, &["series", "lastObservedTime"]), now);
        count = int_at(v, &["series", "count"]);
    } else if count == 0 {
        // Singleton events don't set a count in the new API.
        count = 1;
    }

    let kind = str_at(v, &[e.regarding, "kind"]).to_lowercase();
    let target = match str_at(v, &[e.regarding, "name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    // The legacy source wins; the reporting controller/instance stand in for missing parts.
    let component = first_non_empty(str_at(v, &[e.source, "component"]), str_at(v, &[e.reporting_controller]));
    let instance = first_non_empty(str_at(v, &[e.source, "host"]), str_at(v, &["reportingInstance"]));
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };

    Row::new(vec![
        last.into(),
        str_at(v, &["type"]).into(),
        str_at(v, &["reason"]).into(),
        target.into(),
        str_at(v, &[e.regarding, "fieldPath"]).into(),
        source.into(),
        str_at(v, &[e.message]).trim().into(),
        first.into(),
        count.into(),
        name(v).into(),
    ])
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

pub(crate) fn lease_row(lease: &Value, now: Timestamp) -> Row {
    Row::new(vec![
        name(lease).into(),
        str_at(lease, &["spec", "holderIdentity"]).into(),
        since(creation(lease), now).into(),
    ])
}

pub(crate) fn config_map_row(cm: &Value, now: Timestamp) -> Row {
    let entries = len_at(cm, &["data"]).saturating_add(len_at(cm, &["binaryData"]));
    Row::new(vec![name(cm).into(), entries.into(), since(creation(cm), now).into()])
}

pub(crate) fn secret_row(secret: &Value, now: Timestamp) -> Row {
    // Defaulting sets an empty type to Opaque.
    let ty = match str_at(secret, &["type"]) {
        "" => "Opaque",
        t => t,
    };
    Row::new(vec![
        name(secret).into(),
        ty.into(),
        len_at(secret, &["data"]).into(),
        since(creation(secret), now).into(),
    ])
}

pub(crate) fn service_account_row(sa: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(sa).into(), len_at(sa, &["secrets"]).into(), since(creation(sa), now).into()])
}

pub(crate) fn component_status_row(cs: &Value) -> Row {
    let healthy = arr_at(cs, &["conditions"]).iter().find(|c| str_at(c, &["type"]) == "Healthy");
    let (status, message, error) = match healthy {
        None => ("Unknown", "", ""),
        Some(c) => (
            if str_at(c, &["status"]) == "True" { "Healthy" } else { "Unhealthy" },
            str_at(c, &["message"]),
            str_at(c, &["error"]),
        ),
    };
    Row::new(vec![name(cs).into(), status.into(), message.into(), error.into()])
}

pub(crate) fn default_row(v: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(v).into(), since(creation(v), now).into()])
}
