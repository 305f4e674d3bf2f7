//! Field paths and sets of them, as structured-merge-diff's `fieldpath` package defines them, in
//! the `FieldsV1` encoding `metadata.managedFields` stores.
//!
//! A path element is kept as its serialized form: `f:<field>` for a struct field or map key,
//! `k:{"name":"c"}` for an item of a map-keyed list (its keys as a JSON object with sorted keys),
//! `v:<json>` for an item of a set list, `i:<n>` for a list index (read, never produced here). A
//! [`Set`] holds its members; in `FieldsV1` a member that also has members below it is written as a
//! `.` key under its node.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// One path: `["f:spec", "f:replicas"]`.
pub type Path = Vec<String>;

/// A set of paths (its members).
pub type Set = BTreeSet<Path>;

/// The `FieldsV1` object of a set.
pub fn encode(set: &Set) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut node = &mut root;
        for seg in p {
            node = obj(node.entry(seg.clone()).or_insert_with(|| json!({})));
        }
        // A member with members below it says so with `.`; one added before its children is
        // fixed up below.
        if !node.is_empty() {
            node.insert(".".into(), json!({}));
        }
    }
    fix_dots(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// Adds `.` to nodes that are members and have children (members inserted before their children).
fn fix_dots(node: &mut Map<String, Value>, set: &Set, at: &mut Path) {
    for (k, child) in node.iter_mut() {
        if k == "." {
            continue;
        }
        at.push(k.clone());
        let m = obj(child);
        if !m.is_empty() {
            if set.contains(at) {
                m.insert(".".into(), json!({}));
            }
            fix_dots(m, set, at);
        }
        at.pop();
    }
}

/// The set a `FieldsV1` object holds; anything that is not an object holds nothing.
pub fn decode(fields: Option<&Value>) -> Set {
    fn walk(v: &Map<String, Value>, at: &mut Path, out: &mut Set) {
        for (k, child) in v {
            if k == "." {
                if !at.is_empty() {
                    out.insert(at.clone());
                }
                continue;
            }
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
    let mut out = Set::new();
    if let Some(m) = fields.and_then(Value::as_object) {
        walk(m, &mut Vec::new(), &mut out);
    }
    out
}

/// The element naming a struct field or map key.
pub fn field(name: &str) -> String {
    format!("f:{name}")
}

/// The element naming a map-keyed list item by its key fields (sorted by name, as upstream does).
pub fn key(fields: &Map<String, Value>) -> String {
    format!("k:{}", Value::Object(fields.clone()))
}

/// The element naming a set-list item by its value.
pub fn value(v: &Value) -> String {
    format!("v:{v}")
}

/// A path as structured-merge-diff prints it in conflicts: `.spec.replicas`,
/// `.spec.containers[name="c"].image`, `.metadata.finalizers[="a"]`, `.x[3]`.
pub fn display(path: &Path) -> String {
    let mut out = String::new();
    for seg in path {
        match seg.split_at(seg.len().min(2)) {
            ("f:", name) => {
                out.push('.');
                out.push_str(name);
            }
            ("k:", keys) => {
                let parts: Vec<String> = match serde_json::from_str::<Map<String, Value>>(keys) {
                    Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    Err(_) => vec![keys.to_string()],
                };
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            ("v:", v) => out.push_str(&format!("[={v}]")),
            ("i:", i) => out.push_str(&format!("[{i}]")),
            _ => out.push_str(seg),
        }
    }
    out
}

/// Whether any member of `set` is `p` or lies below it.
pub fn owns_under(set: &Set, p: &Path) -> bool {
    set.range(p.clone()..).next().is_some_and(|q| q.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&[&str]]) -> Set {
        paths.iter().map(|p| p.iter().map(|s| s.to_string()).collect()).collect()
    }

    #[test]
    fn encode_decode_round_trip_with_dots() {
        let s = set(&[
            &["f:spec", "f:replicas"],
            &["f:spec", "f:containers", "k:{\"name\":\"c\"}"],
            &["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"],
            &["f:metadata", "f:finalizers", "v:\"a\""],
        ]);
        let enc = encode(&s);
        assert_eq!(
            enc,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {"f:replicas": {}, "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}},
            })
        );
        assert_eq!(decode(Some(&enc)), s);
        assert!(decode(Some(&json!("x"))).is_empty());
    }

    #[test]
    fn paths_print_as_upstream() {
        let p: Path = vec![
            "f:spec".into(),
            "f:ports".into(),
            key(json!({"protocol": "TCP", "containerPort": 80}).as_object().unwrap()),
            "f:name".into(),
        ];
        assert_eq!(p[2], "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(display(&p), ".spec.ports[containerPort=80,protocol=\"TCP\"].name");
        assert_eq!(display(&vec!["f:a".into(), value(&json!("x"))]), ".a[=\"x\"]");
    }

    #[test]
    fn owns_under_finds_descendants_only() {
        let s = set(&[&["f:a", "f:b"], &["f:ab"]]);
        assert!(owns_under(&s, &vec!["f:a".into()]));
        assert!(owns_under(&s, &vec!["f:a".into(), "f:b".into()]));
        assert!(!owns_under(&s, &vec!["f:a".into(), "f:c".into()]));
        assert!(!owns_under(&s, &vec!["f:abc".into()]));
    }
}
