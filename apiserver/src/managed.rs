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
//! What this does not do (said plainly, so no one relies on it): server-side apply (`Apply`
//! entries and conflicts) is not served, and lists are owned as a whole (`f:containers: {}`)
//! rather than per key (`k:{"name":...}`) as upstream's structured-merge-diff does with the
//! schema's list types.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::params::Params;

/// A field path: `["f:spec", "f:replicas"]`.
type Path = Vec<String>;

/// The metadata the server owns, which no manager is recorded for.
const SERVER_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Who a write is attributed to.
#[derive(Debug, Clone)]
pub struct Manager {
    pub name: String,
    pub subresource: Option<&'static str>,
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
        Ok(Manager { name, subresource })
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

/// Attributes the change from `old` (None for a create) to `new` to `manager`, rewriting `new`'s
/// `managedFields`. Client-supplied entries in `new` are kept as given; an empty list resets them;
/// none at all carries the old ones over, as upstream does.
pub fn record(api_version: &str, manager: &Manager, new: &mut Value, old: Option<&Value>) {
    let given = meta::meta(new).and_then(|m| m.get("managedFields")).cloned();
    let mut entries: Vec<Value> = match (given, old) {
        (Some(Value::Array(list)), _) => list,
        (_, Some(old)) => meta::meta(old)
            .and_then(|m| m.get("managedFields"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut changed = BTreeSet::new();
    let mut removed = BTreeSet::new();
    diff(old, Some(&*new), &mut Vec::new(), &mut changed, &mut removed);
    if changed.is_empty() && removed.is_empty() {
        set_entries(new, entries);
        return;
    }
    let gone = |p: &Path| {
        removed.iter().any(|r: &Path| p.starts_with(r))
            || changed.iter().any(|c: &Path| p.starts_with(c) || c.starts_with(p))
    };
    let mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str).unwrap_or("") == manager.name
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str) == manager.subresource
    };
    let mut owned = BTreeSet::new();
    for e in &mut entries {
        let fields = paths_of(e.get("fieldsV1"));
        if mine(e) {
            owned = fields.into_iter().filter(|p| !gone(p)).collect();
        } else {
            let kept: BTreeSet<Path> = fields.into_iter().filter(|p| !gone(p)).collect();
            e["fieldsV1"] = tree_of(&kept);
        }
    }
    entries.retain(|e| !mine(e) && e.get("fieldsV1").and_then(Value::as_object).is_some_and(|m| !m.is_empty()));
    owned.extend(changed);
    if !owned.is_empty() {
        let mut entry = json!({
            "manager": manager.name,
            "operation": "Update",
            "apiVersion": api_version,
            "time": meta::now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": tree_of(&owned),
        });
        if manager.name.is_empty() {
            entry.as_object_mut().map(|m| m.remove("manager"));
        }
        if let Some(sub) = manager.subresource {
            entry["subresource"] = json!(sub);
        }
        entries.push(entry);
    }
    set_entries(new, entries);
}

fn set_entries(obj: &mut Value, entries: Vec<Value>) {
    if entries.is_empty() {
        meta::remove(obj, "managedFields");
    } else {
        meta::set(obj, "managedFields", Value::Array(entries));
    }
}

/// Whether a top-level field (`at` empty) or a metadata field (`at` = `[f:metadata]`) is one that
/// field sets leave out: apiVersion, kind, and the metadata the server owns.
fn skipped(at: &Path, key: &str) -> bool {
    match at.as_slice() {
        [] => key == "apiVersion" || key == "kind",
        [m] if m == "f:metadata" => SERVER_FIELDS.contains(&key),
        _ => false,
    }
}

/// Collects the leaf paths whose value differs between `old` and `new` (present in `new`) into
/// `changed`, and the paths that exist in `old` only (or changed shape) into `removed`.
fn diff(
    old: Option<&Value>,
    new: Option<&Value>,
    at: &mut Path,
    changed: &mut BTreeSet<Path>,
    removed: &mut BTreeSet<Path>,
) {
    match (old, new) {
        (Some(Value::Object(o)), Some(Value::Object(n)))
            if (!o.is_empty() && !n.is_empty()) || at.len() < 2 =>
        {
            for (k, nv) in n {
                if skipped(at, k) {
                    continue;
                }
                at.push(format!("f:{k}"));
                diff(o.get(k), Some(nv), at, changed, removed);
                at.pop();
            }
            for k in o.keys() {
                if n.contains_key(k) || skipped(at, k) {
                    continue;
                }
                at.push(format!("f:{k}"));
                removed.insert(at.clone());
                at.pop();
            }
        }
        (Some(o), Some(n)) if o == n => {}
        (old, Some(n)) => {
            if old.is_some() {
                removed.insert(at.clone());
            }
            leaves(n, at, changed);
        }
        (Some(_), None) => {
            removed.insert(at.clone());
        }
        (None, None) => {}
    }
}

/// Every leaf path of `v` under `at`: scalars, lists and empty maps are leaves.
fn leaves(v: &Value, at: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() || at.len() < 2 => {
            for (k, child) in m {
                if skipped(at, k) {
                    continue;
                }
                at.push(format!("f:{k}"));
                leaves(child, at, out);
                at.pop();
            }
        }
        _ => {
            if !at.is_empty() {
                out.insert(at.clone());
            }
        }
    }
}

/// The paths a `fieldsV1` tree holds (its keys taken as they are, so entries written by others,
/// with `k:`/`v:`/`.` keys, survive untouched unless a write takes their fields).
fn paths_of(fields: Option<&Value>) -> BTreeSet<Path> {
    fn walk(v: &Map<String, Value>, at: &mut Path, out: &mut BTreeSet<Path>) {
        for (k, child) in v {
            at.push(k.clone());
            match child.as_object() {
                Some(m) if !m.is_empty() => walk(m, at, out),
                _ => {
                    out.insert(at.clone());
                }
            }
            at.pop();
        }
    }
    let mut out = BTreeSet::new();
    if let Some(m) = fields.and_then(Value::as_object) {
        walk(m, &mut Vec::new(), &mut out);
    }
    out
}

fn tree_of(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p {
            node = match node.entry(seg.clone()).or_insert_with(|| json!({})) {
                Value::Object(m) => m,
                other => {
                    *other = json!({});
                    other.as_object_mut().expect("just made an object")
                }
            };
        }
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mgr(name: &str, sub: Option<&'static str>) -> Manager {
        Manager { name: name.into(), subresource: sub }
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
        record("apps/v1", &mgr("kubectl-create", None), &mut dep, None);
        let got = entries(&dep);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "kubectl-create");
        assert_eq!(
            got[0].1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}})
        );
        assert_eq!(dep["metadata"]["managedFields"][0]["operation"], "Update");
        assert_eq!(dep["metadata"]["managedFields"][0]["fieldsType"], "FieldsV1");

        // kubectl scale takes spec.replicas over.
        let old = dep.clone();
        dep["spec"]["replicas"] = json!(3);
        record("apps/v1", &mgr("kubectl", Some("scale")), &mut dep, Some(&old));
        let got = entries(&dep);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1["f:spec"].get("f:replicas").is_none(), "{got:?}");
        assert_eq!(got[1], ("kubectl".into(), json!({"f:spec": {"f:replicas": {}}})));
        assert_eq!(dep["metadata"]["managedFields"][1]["subresource"], "scale");

        // A status write by the controller is its own entry.
        let old = dep.clone();
        dep["status"] = json!({"replicas": 3});
        record("apps/v1", &mgr("kube-controller-manager", Some("status")), &mut dep, Some(&old));
        assert_eq!(
            entries(&dep)[2],
            ("kube-controller-manager".into(), json!({"f:status": {"f:replicas": {}}}))
        );

        // A no-op changes nothing, not even a time.
        let before = dep.clone();
        let old = dep.clone();
        record("apps/v1", &mgr("someone", None), &mut dep, Some(&old));
        assert_eq!(dep, before);

        // Taking the last field of an entry drops the entry.
        let old = dep.clone();
        dep["spec"]["replicas"] = json!(5);
        record("apps/v1", &mgr("hpa", None), &mut dep, Some(&old));
        let names: Vec<String> = entries(&dep).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["kubectl-create", "kube-controller-manager", "hpa"]);
    }

    #[test]
    fn removed_fields_leave_every_owner_and_given_lists_win() {
        let mut cm = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        record("v1", &mgr("one", None), &mut cm, None);
        let old = cm.clone();
        cm["metadata"]["labels"].as_object_mut().unwrap().remove("a");
        record("v1", &mgr("two", None), &mut cm, Some(&old));
        assert_eq!(
            entries(&cm),
            [("one".into(), json!({"f:metadata": {"f:labels": {"f:b": {}}}, "f:data": {"f:k": {}}}))]
        );

        // An empty list from the client resets the entries to just this write's.
        let old = cm.clone();
        cm["metadata"]["managedFields"] = json!([]);
        cm["data"]["k"] = json!("w");
        record("v1", &mgr("three", None), &mut cm, Some(&old));
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
        let mut obj = json!({"metadata": {"name": "n", "managedFields": [{"manager": "m", "fieldsV1": {"f:a": {"k:{\"x\":1}": {}}}}]}, "a": 1});
        let old = obj.clone();
        obj["a"] = json!(2);
        record("v1", &mgr("n", None), &mut obj, Some(&old));
        assert_eq!(entries(&obj), [("n".into(), json!({"f:a": {}}))]);
    }
}
