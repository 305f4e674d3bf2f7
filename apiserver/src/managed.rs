//! `metadata.managedFields`: who set which field, as upstream's field manager records it for
//! non-apply writes.
//!
//! Each write is attributed to a manager: the request's `fieldManager` parameter, or else the
//! first `/`-separated part of its User-Agent (`kubectl-create`, `kube-controller-manager`,
//! `kubelet`...), as upstream does. The fields the write changed (compared after defaulting and the
//! strategy's resets, so a status write only ever changes `status`) move to that manager's
//! `Update` entry, which also gets the write's time; other managers lose them, and an entry left
//! with no fields is dropped. A write that changes nothing changes no entry.
//!
//! The sets are computed by `api_types::apply` (structured-merge-diff's semantics: lists by their
//! list type, `k:{"name":...}` for map-keyed items, `.` for maps and items that appeared), the same
//! code server-side apply (`crate::apply`) keeps its `Apply` entries with, so the two kinds of
//! entries live side by side: an update takes fields from appliers as from anyone.

use api_types::apply::{Node, Writer};
use api_types::ResourceDef;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::params::Params;
use crate::strategy::Half;

/// Who a write is attributed to.
#[derive(Debug, Clone)]
pub struct Manager {
    pub name: String,
    pub subresource: Option<&'static str>,
    /// A server-side apply: its entries are computed by the apply, not by [`record`].
    pub applied: bool,
}

impl Manager {
    /// The manager of a request: `?fieldManager=`, or the User-Agent's product name.
    pub fn of(params: &Params, headers: &HeaderMap, subresource: Option<&'static str>) -> ApiResult<Manager> {
        let name = match params.get("fieldManager") {
            Some(m) => {
                if m.chars().count() > 128 || m.chars().any(|c| c.is_control()) {
                    return Err(ApiError::bad_request(format!(
                        "fieldManager: Invalid value: {m:?}: must be at most 128 printable characters"
                    )));
                }
                m.to_string()
            }
            None => {
                let agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
                agent.split('/').next().unwrap_or("").chars().take(128).collect()
            }
        };
        Ok(Manager { name, subresource, applied: false })
    }
}

/// After the strategy reset what this half may not change, puts an apply's entries back (a status
/// write starts from the stored object) and drops from the applier's entry the fields that were
/// reset: `status` on the main resource, everything but `status` on the status subresource (as
/// upstream's reset fields do).
pub fn keep_applied(res: &ResourceDef, half: Half, manager: &Manager, obj: &mut Value, entries: Option<Value>) {
    let Some(Value::Array(mut entries)) = entries else {
        meta::remove(obj, "managedFields");
        return;
    };
    for e in &mut entries {
        let mine = e.get("manager").and_then(Value::as_str).unwrap_or("") == manager.name
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == manager.subresource;
        let Some(fields) = e.get_mut("fieldsV1").and_then(Value::as_object_mut).filter(|_| mine) else {
            continue;
        };
        match half {
            Half::Main if crate::strategy::has_status(res) => {
                fields.remove("f:status");
            }
            Half::Status => fields.retain(|k, _| k == "f:status"),
            _ => {}
        }
    }
    entries.retain(|e| e.get("fieldsV1").and_then(Value::as_object).is_none_or(|m| !m.is_empty()));
    if entries.is_empty() {
        meta::remove(obj, "managedFields");
    } else {
        meta::set(obj, "managedFields", Value::Array(entries));
    }
}

/// Checks client-supplied `managedFields` enough that [`record`] can trust their shape.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let Some(entries) = meta::meta(obj).and_then(|m| m.get("managedFields")) else { return vec![] };
    let Some(entries) = entries.as_array() else {
        return vec![Cause::invalid("metadata.managedFields", entries, "must be a list")];
    };
    let mut causes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("metadata.managedFields[{i}]");
        match e.get("fieldsV1") {
            None | Some(Value::Object(_)) => {}
            Some(other) => causes.push(Cause::invalid(format!("{at}.fieldsV1"), other, "must be an object")),
        }
        if let Some(op) = e.get("operation").filter(|op| !matches!(op.as_str(), Some("Apply" | "Update"))) {
            causes.push(Cause::not_supported(format!("{at}.operation"), op, &["Apply", "Update"]));
        }
    }
    causes
}

/// The schema node server-side apply and the field manager read a resource's objects by: the
/// CRD version's schema for custom resources, the kind's definition for built-in ones.
pub fn node_of(res: &ResourceDef) -> Node<'static> {
    if let Some(cr) = crate::crd::custom(res) {
        return Node::root(&cr.spec.schema);
    }
    match api_types::schema::schema_of(res.group, res.version, res.kind) {
        Some(s) => Node::root(s),
        None => Node::untyped(),
    }
}

/// Attributes the change from `old` (None for a create) to `new` to `manager`, rewriting `new`'s
/// `managedFields` (an apply has done that already: nothing to do). Client-supplied entries in
/// `new` are kept as given; an empty list resets them; none at all carries the old ones over,
/// as upstream does. An object the schema cannot read (a list item without its key, which
/// validation refuses anyway) keeps the entries it had.
pub fn record(res: &ResourceDef, manager: &Manager, new: &mut Value, old: Option<&Value>) {
    if manager.applied {
        return;
    }
    let given = meta::meta(new).and_then(|m| m.get("managedFields")).is_some_and(Value::is_array);
    let now = meta::now_rfc3339();
    let api_version = res.api_version();
    let writer = Writer {
        manager: &manager.name,
        subresource: manager.subresource,
        api_version: &api_version,
        time: &now,
    };
    // `record_update` changes `new` only once it succeeded: a failure leaves it as it was (no copy
    // kept to restore from).
    if let Err(e) = api_types::apply::record_update(old, new, given, &node_of(res), &writer) {
        tracing::debug!(error = %e.0, "managedFields not updated");
        if !given {
            match old.and_then(|o| meta::meta(o)).and_then(|m| m.get("managedFields")).cloned() {
                Some(list) => {
                    meta::set(new, "managedFields", list);
                }
                None => {
                    meta::remove(new, "managedFields");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep_res() -> &'static ResourceDef {
        api_types::resources::lookup("apps", "v1", "deployments").unwrap()
    }

    fn cm_res() -> &'static ResourceDef {
        api_types::resources::lookup("", "v1", "configmaps").unwrap()
    }

    fn mgr(name: &str, sub: Option<&'static str>) -> Manager {
        Manager { name: name.into(), subresource: sub, applied: false }
    }

    fn entries(obj: &Value) -> Vec<(String, Value)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| (e["manager"].as_str().unwrap_or("").to_string(), e["fieldsV1"].clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn create_then_scale_then_status_move_fields_between_managers() {
        let mut dep = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        });
        record(dep_res(), &mgr("kubectl-create", None), &mut dep, None);
        let got = entries(&dep);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "kubectl-create");
        assert_eq!(
            got[0].1,
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {".": {},
                       "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(dep["metadata"]["managedFields"][0]["operation"], "Update");
        assert_eq!(dep["metadata"]["managedFields"][0]["fieldsType"], "FieldsV1");

        // kubectl scale takes spec.replicas over.
        let old = dep.clone();
        dep["spec"]["replicas"] = json!(3);
        record(dep_res(), &mgr("kubectl", Some("scale")), &mut dep, Some(&old));
        let got = entries(&dep);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1["f:spec"].get("f:replicas").is_none(), "{got:?}");
        assert_eq!(got[1], ("kubectl".into(), json!({"f:spec": {"f:replicas": {}}})));
        assert_eq!(dep["metadata"]["managedFields"][1]["subresource"], "scale");

        // A status write by the controller is its own entry.
        let old = dep.clone();
        dep["status"] = json!({"replicas": 3});
        record(dep_res(), &mgr("kube-controller-manager", Some("status")), &mut dep, Some(&old));
        assert_eq!(
            entries(&dep)[2],
            ("kube-controller-manager".into(), json!({"f:status": {"f:replicas": {}}}))
        );

        // A no-op changes nothing, not even a time.
        let before = dep.clone();
        let old = dep.clone();
        record(dep_res(), &mgr("someone", None), &mut dep, Some(&old));
        assert_eq!(dep, before);

        // Taking the last field of an entry drops the entry.
        let old = dep.clone();
        dep["spec"]["replicas"] = json!(5);
        record(dep_res(), &mgr("hpa", None), &mut dep, Some(&old));
        let names: Vec<String> = entries(&dep).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["kubectl-create", "kube-controller-manager", "hpa"]);

        // Replacing a container takes its fields from their owner; the new item is the writer's.
        let old = dep.clone();
        dep["spec"]["template"]["spec"]["containers"] = json!([{"name": "d", "image": "nginx"}]);
        record(dep_res(), &mgr("editor", None), &mut dep, Some(&old));
        let got = entries(&dep);
        // The creator keeps the list itself; the replaced item's fields left it.
        assert_eq!(got[0].1["f:spec"]["f:template"]["f:spec"]["f:containers"], json!({}), "{got:?}");
        assert_eq!(
            got[3].1,
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"d\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
    }

    #[test]
    fn removed_fields_leave_every_owner_and_given_lists_win() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        record(cm_res(), &mgr("one", None), &mut cm, None);
        let old = cm.clone();
        cm["metadata"]["labels"].as_object_mut().unwrap().remove("a");
        record(cm_res(), &mgr("two", None), &mut cm, Some(&old));
        assert_eq!(
            entries(&cm),
            [(
                "one".into(),
                json!({"f:metadata": {"f:labels": {".": {}, "f:b": {}}}, "f:data": {".": {}, "f:k": {}}})
            )]
        );

        // An empty list from the client resets the entries to just this write's.
        let old = cm.clone();
        cm["metadata"]["managedFields"] = json!([]);
        cm["data"]["k"] = json!("w");
        record(cm_res(), &mgr("three", None), &mut cm, Some(&old));
        assert_eq!(entries(&cm), [("three".into(), json!({"f:data": {"f:k": {}}}))]);
    }

    #[test]
    fn manager_from_field_manager_or_user_agent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            "kubectl-create/v1.32.0 (linux/amd64) kubernetes/abc".parse().unwrap(),
        );
        let none = Params::default();
        assert_eq!(Manager::of(&none, &headers, None).unwrap().name, "kubectl-create");
        let mut given = Params::default();
        given.set("fieldManager", "mine");
        assert_eq!(Manager::of(&given, &headers, None).unwrap().name, "mine");
        let mut long = Params::default();
        long.set("fieldManager", &"x".repeat(129));
        assert_eq!(Manager::of(&long, &headers, None).unwrap_err().code, 400);
        assert_eq!(Manager::of(&none, &HeaderMap::new(), None).unwrap().name, "");
    }

    #[test]
    fn odd_given_entries_are_invalid_not_a_panic() {
        for bad in [json!("x"), json!([{"fieldsV1": 3}]), json!([{"operation": "Delete"}])] {
            let obj = json!({"metadata": {"managedFields": bad}});
            assert!(!validate(&obj).is_empty(), "{bad}");
        }
        let mut obj = json!({"metadata": {"name": "n", "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {"f:a": {"k:{\"x\":1}": {}}}}]}, "a": 1});
        let old = obj.clone();
        obj["a"] = json!(2);
        record(cm_res(), &mgr("n", None), &mut obj, Some(&old));
        assert_eq!(entries(&obj), [("n".into(), json!({"f:a": {}}))]);
    }
}
