use serde_json::{json, Value};

use super::*;
use crate::schema::schema_of;

fn w<'a>(m: &'a str) -> Writer<'a> {
    Writer { manager: m, subresource: None, api_version: "apps/v1", time: "2026-12-07T00:00:00Z" }
}

fn dep_node() -> Node<'static> {
    Node::root(schema_of("apps", "v1", "Deployment").unwrap())
}

fn dep(replicas: i64, containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}})
}

fn fields_of(obj: &Value, manager: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn apply_create_records_keyed_field_set() {
    let node = dep_node();
    let cfg = dep(2, json!([{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]));
    let out = apply(&json!({}), &cfg, &node, &w("me"), false).unwrap();
    assert!(out.changed);
    assert_eq!(out.object["spec"]["replicas"], 2);
    let e = &out.object["metadata"]["managedFields"][0];
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
            }}}
        }})
    );
}

#[test]
fn conflicts_with_an_update_manager_then_force_takes_the_field() {
    let node = dep_node();
    let mut live = dep(1, json!([{"name": "c", "image": "nginx"}]));
    record_update(None, &mut live, false, &node, &w("kubectl-client-side-apply")).unwrap();
    let err =
        apply(&live, &dep(3, json!([{"name": "c", "image": "nginx"}])), &node, &w("other"), false).unwrap_err();
    let ApplyError::Conflicts(c) = err else { panic!("{err:?}") };
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        ApplyError::conflict_message(&c),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    // The same values are shared, not conflicts.
    let same =
        apply(&live, &dep(1, json!([{"name": "c", "image": "nginx"}])), &node, &w("other"), false).unwrap();
    assert!(!same.changed);
    assert!(fields_of(&same.object, "other")["f:spec"]["f:replicas"].is_object());
    assert!(fields_of(&same.object, "kubectl-client-side-apply")["f:spec"]["f:replicas"].is_object());

    let forced =
        apply(&live, &dep(3, json!([{"name": "c", "image": "nginx"}])), &node, &w("other"), true).unwrap();
    assert_eq!(forced.object["spec"]["replicas"], 3);
    assert!(fields_of(&forced.object, "kubectl-client-side-apply")["f:spec"].get("f:replicas").is_none());
    assert!(fields_of(&forced.object, "other")["f:spec"]["f:replicas"].is_object());
}

#[test]
fn several_conflicts_are_listed_by_manager() {
    let c = vec![
        ("\"b\"".to_string(), vec!["f:x".to_string()]),
        ("\"a\" using v1".to_string(), vec!["f:y".to_string()]),
    ];
    assert_eq!(
        ApplyError::conflict_message(&c),
        "Apply failed with 2 conflicts: conflicts with \"a\" using v1:\n- .y\nconflicts with \"b\":\n- .x"
    );
}

#[test]
fn fields_dropped_from_the_config_are_removed_unless_owned_elsewhere() {
    let node = dep_node();
    let cfg1 = dep(2, json!([{"name": "c", "image": "nginx"}, {"name": "side", "image": "busybox"}]));
    let mut cfg1 = cfg1;
    cfg1["metadata"]["labels"] = json!({"a": "1", "b": "2"});
    let live = apply(&json!({}), &cfg1, &node, &w("me"), false).unwrap().object;
    // Someone else adds an env var to the side container and a label.
    let mut edited = live.clone();
    edited["spec"]["template"]["spec"]["containers"][1]["env"] = json!([{"name": "E", "value": "1"}]);
    edited["metadata"]["labels"]["c"] = json!("3");
    record_update(Some(&live), &mut edited, false, &node, &w("editor")).unwrap();

    let mut cfg2 = dep(2, json!([{"name": "c", "image": "nginx"}]));
    cfg2["metadata"]["labels"] = json!({"a": "1"});
    let out = apply(&edited, &cfg2, &node, &w("me"), false).unwrap().object;
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
    // The side container stays, with only the field the editor owns left in it.
    let cs = out["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 2, "{cs:?}");
    assert_eq!(cs[1], json!({"name": "side", "env": [{"name": "E", "value": "1"}]}));

    // Dropping every label removes the map.
    let mut cfg3 = dep(2, json!([{"name": "c", "image": "nginx"}]));
    cfg3["metadata"]["labels"] = json!({"a": "1"});
    let base = apply(&json!({}), &cfg3, &node, &w("me"), false).unwrap().object;
    let out = apply(&base, &dep(2, json!([{"name": "c", "image": "nginx"}])), &node, &w("me"), false).unwrap();
    assert!(out.object["metadata"].get("labels").is_none(), "{}", out.object);
    assert_eq!(out.object["metadata"]["name"], "web");
}

#[test]
fn list_map_merge_keeps_live_only_items_in_place() {
    let node = dep_node();
    let live = dep(
        1,
        json!([{"name": "a", "image": "1"}, {"name": "x", "image": "live"}, {"name": "b", "image": "2"}]),
    );
    let cfg = dep(
        1,
        json!([{"name": "b", "image": "3"}, {"name": "a", "image": "1"}, {"name": "n", "image": "new"}]),
    );
    let out = ops::merge(&live, &cfg, &node).unwrap();
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["x", "b", "a", "n"]);
    assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["image"], "3");
    // Atomic selector replaced whole.
    let mut cfg2 = cfg.clone();
    cfg2["spec"]["selector"] = json!({"matchExpressions": []});
    let out = ops::merge(&live, &cfg2, &node).unwrap();
    assert_eq!(out["spec"]["selector"], json!({"matchExpressions": []}));
}

#[test]
fn missing_keys_and_duplicates_are_errors() {
    let node = dep_node();
    let err = ops::to_set(&dep(1, json!([{"image": "x"}])), &node).unwrap_err();
    assert!(
        err.0.contains("associative list with keys has an element that omits key field \"name\""),
        "{err:?}"
    );
    let err = ops::merge(&json!({}), &dep(1, json!([{"name": "a"}, {"name": "a"}])), &node);
    assert!(err.is_ok(), "no live list: duplicates are kept as given");
    let live = dep(1, json!([{"name": "a"}]));
    let err = ops::merge(&live, &dep(1, json!([{"name": "a"}, {"name": "a"}])), &node).unwrap_err();
    assert!(err.0.contains("duplicate entries for key [name=\"a\"]"), "{err:?}");
}

#[test]
fn set_lists_and_untyped_values() {
    let s = json!({"type": "object", "properties": {
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
    let node = Node::root(&s);
    let live = json!({"tags": ["a", "b"], "free": {"x": [1, 2], "y": {"z": 1}}});
    let cfg = json!({"tags": ["c", "a"], "free": {"x": [3], "y": {"w": 2}}});
    let out = ops::merge(&live, &cfg, &node).unwrap();
    assert_eq!(out, json!({"tags": ["c", "a", "b"], "free": {"x": [3], "y": {"z": 1, "w": 2}}}));
    let set = ops::to_set(&cfg, &node).unwrap();
    assert_eq!(
        fieldpath::encode(&set),
        json!({"f:tags": {"v:\"a\"": {}, "v:\"c\"": {}}, "f:free": {"f:x": {}, "f:y": {".": {}, "f:w": {}}}})
    );
}

#[test]
fn compare_reports_added_modified_removed() {
    let node = dep_node();
    let a = dep(1, json!([{"name": "c", "image": "1"}]));
    let b = dep(2, json!([{"name": "d", "image": "1"}]));
    let c = ops::compare(&a, &b, &node).unwrap();
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let item = |n: &str| format!("k:{{\"name\":\"{n}\"}}");
    let cs = ["f:spec", "f:template", "f:spec", "f:containers"];
    assert!(c.modified.contains(&p(&["f:spec", "f:replicas"])));
    assert!(c.added.contains(
        &[&cs[..], &[item("d").as_str()]].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>()
    ));
    assert!(c.removed.contains(
        &[&cs[..], &[item("c").as_str(), "f:image"]].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>()
    ));
}

#[test]
fn kubectl_takes_over_fields_from_client_side_apply() {
    let node = dep_node();
    let mut live = dep(1, json!([{"name": "c", "image": "nginx"}]));
    let last = serde_json::to_string(&dep(1, json!([{"name": "c", "image": "nginx"}]))).unwrap();
    live["metadata"]["annotations"] = json!({update::LAST_APPLIED: last});
    record_update(None, &mut live, false, &node, &w("kubectl-client-side-apply")).unwrap();
    let mut cfg = dep(4, json!([{"name": "c", "image": "nginx:2"}]));
    cfg["metadata"]["annotations"] = json!({});
    // Another manager conflicts; kubectl's upgrade path takes the fields the annotation lists.
    assert!(matches!(apply(&live, &cfg, &node, &w("someone"), false), Err(ApplyError::Conflicts(_))));
    let out = apply(&live, &cfg, &node, &w("kubectl"), false).unwrap().object;
    assert_eq!(out["spec"]["replicas"], 4);
    let ann: Value =
        serde_json::from_str(out["metadata"]["annotations"][update::LAST_APPLIED].as_str().unwrap()).unwrap();
    assert_eq!(ann["spec"]["replicas"], 4, "the annotation follows the applied configuration");
}

#[test]
fn update_records_keyed_paths_and_takes_fields_from_appliers() {
    let node = dep_node();
    let live = apply(&json!({}), &dep(1, json!([{"name": "c", "image": "1"}])), &node, &w("applier"), false)
        .unwrap()
        .object;
    let mut new = live.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("2");
    new["metadata"]["labels"] = json!({"x": "y"});
    record_update(Some(&live), &mut new, false, &node, &w("editor")).unwrap();
    assert_eq!(
        fields_of(&new, "editor"),
        json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}},
               "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {"f:image": {}}}}}}})
    );
    let applier = fields_of(&new, "applier");
    assert!(applier["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]
        .get("f:image")
        .is_none());
    assert_eq!(new["metadata"]["managedFields"][0]["manager"], "applier", "Apply entries first");
    // A write that changes nothing changes no entry.
    let mut same = new.clone();
    record_update(Some(&new), &mut same, false, &node, &w("third")).unwrap();
    assert_eq!(same, new);
}
