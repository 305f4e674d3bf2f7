//! How server-side apply reads a kind's schema: each node is a scalar, a struct (named fields,
//! merged field by field), a map (any keys, merged key by key), an atomic map or struct (replaced
//! whole), or a list that is atomic, a set, or a map keyed by some of its items' fields — the
//! `x-kubernetes-list-type`, `-list-map-keys` and `-map-type` markers (and `-structType` for
//! structs) as structured-merge-diff reads them.
//!
//! CRD schemas carry the markers themselves. The schemas generated for the built-in kinds carry
//! none (see `crate::schema`), so their markers are taken from upstream's Go tags: the list
//! strategies of [`crate::patchmeta::PATCH_META`] (a `merge` list with a key is a map keyed by it,
//! one without a key is a set, as upstream's schema conversion treats them), corrected by
//! [`LIST_MAPS`] where upstream declares other keys, and the structs upstream marks atomic in
//! [`ATOMIC_STRUCTS`]. A schema-less node (a free-form field, or an unknown kind) is deduced from
//! its value as structured-merge-diff deduces it: objects merge by key, lists are atomic.

use serde_json::Value;

use crate::patchmeta::{definition_of, PATCH_META};
use crate::schema;

/// One list's markers: (definition, field, keys (none: atomic), key defaults).
pub type ListMap =
    (&'static str, &'static str, &'static [&'static str], &'static [(&'static str, &'static str)]);

/// List maps whose keys upstream declares with `+listType=map` beside (or instead of) a patch
/// merge key, and lists it declares atomic though they have a patch strategy.
pub const LIST_MAPS: &[ListMap] = &[
    ("io.k8s.api.core.v1.Container", "ports", &["containerPort", "protocol"], &[("protocol", "TCP")]),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", &["containerPort", "protocol"], &[("protocol", "TCP")]),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", &["port", "protocol"], &[("protocol", "TCP")]),
    ("io.k8s.api.core.v1.EndpointSubset", "ports", &[], &[]),
];

/// Structs upstream marks `+structType=atomic` (and `+mapType=atomic` maps): replaced whole.
pub const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
];

/// What a node is, for merging and for field sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    Scalar,
    /// Named fields, merged one by one.
    Struct,
    /// Any keys, merged one by one.
    Map,
    /// A map or struct replaced whole.
    AtomicMap,
    AtomicList,
    SetList,
    /// A list merged by these item fields, with defaults for keys an item may omit.
    MapList(Vec<String>, Vec<(String, Value)>),
}

/// A place in a kind's schema: the schema there (None when unknown), and the list or map markers
/// of the field that led here.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    schema: Option<&'a Value>,
    list: Option<Shape>,
}

impl<'a> Node<'a> {
    /// The root of a kind's schema (a built-in definition or a CRD's `openAPIV3Schema`).
    pub fn root(schema: &'a Value) -> Node<'a> {
        let schema = if schema.is_null() { None } else { Some(schema) };
        Node { schema, list: None }
    }

    /// A node with no schema: everything is deduced from values.
    pub fn untyped() -> Node<'static> {
        Node { schema: None, list: None }
    }

    /// The shape of this node for the value found there.
    pub fn shape(&self, v: &Value) -> Shape {
        let deduced = || match v {
            Value::Object(_) => Shape::Map,
            Value::Array(_) => Shape::AtomicList,
            _ => Shape::Scalar,
        };
        let Some(s) = self.schema else { return deduced() };
        if let Some(list) = &self.list {
            return list.clone();
        }
        let r = schema::resolve(s);
        let ext = |name: &str| s.get(name).or_else(|| r.get(name)).and_then(Value::as_str);
        if r.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
            && r.get("properties").is_none()
        {
            return deduced();
        }
        if r.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
            return Shape::Scalar;
        }
        let ty = r.get("type").and_then(Value::as_str);
        if ty == Some("array") || r.get("items").is_some() {
            return match ext("x-kubernetes-list-type") {
                Some("set") => Shape::SetList,
                Some("map") => {
                    let keys: Vec<String> = s
                        .get("x-kubernetes-list-map-keys")
                        .or_else(|| r.get("x-kubernetes-list-map-keys"))
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                        .unwrap_or_default();
                    let defaults = self.key_defaults(&keys);
                    Shape::MapList(keys, defaults)
                }
                _ => Shape::AtomicList,
            };
        }
        let atomic = ext("x-kubernetes-map-type") == Some("atomic")
            || definition_of(s).is_some_and(|d| ATOMIC_STRUCTS.contains(&d));
        if r.get("properties").is_some() {
            return if atomic { Shape::AtomicMap } else { Shape::Struct };
        }
        if r.get("additionalProperties").is_some_and(Value::is_object) {
            return if atomic { Shape::AtomicMap } else { Shape::Map };
        }
        if ty == Some("object") || schema::is_free_form(s) {
            return match v {
                Value::Object(_) if atomic => Shape::AtomicMap,
                Value::Object(_) => Shape::Map,
                _ => deduced(),
            };
        }
        if ty.is_none() {
            return deduced();
        }
        Shape::Scalar
    }

    /// Defaults of a list map's key fields, from the items' schema (`default`).
    fn key_defaults(&self, keys: &[String]) -> Vec<(String, Value)> {
        let Some(item) = self.schema.and_then(schema::items) else { return Vec::new() };
        keys.iter()
            .filter_map(|k| {
                let d = schema::property(item, k)?;
                let d = d.get("default").or_else(|| schema::resolve(d).get("default"))?;
                Some((k.clone(), d.clone()))
            })
            .collect()
    }

    /// The node of a field (or map value) below this one.
    pub fn field(&self, name: &str) -> Node<'a> {
        let Some(s) = self.schema else { return Node::untyped() };
        let Some(child) = schema::property(s, name).or_else(|| schema::map_values(s)) else {
            return Node::untyped();
        };
        let list = definition_of(s).and_then(|d| builtin_list(d, name));
        Node { schema: Some(child), list }
    }

    /// The node of a list's items.
    pub fn item(&self) -> Node<'a> {
        match self.schema.and_then(schema::items) {
            Some(item) => Node { schema: Some(item), list: None },
            None => Node::untyped(),
        }
    }
}

/// The list shape of a built-in struct's field, from upstream's tags.
fn builtin_list(def: &str, field: &str) -> Option<Shape> {
    if let Some((_, _, keys, defaults)) = LIST_MAPS.iter().find(|(d, f, _, _)| *d == def && *f == field) {
        if keys.is_empty() {
            return Some(Shape::AtomicList);
        }
        return Some(Shape::MapList(
            keys.iter().map(|k| k.to_string()).collect(),
            defaults.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect(),
        ));
    }
    let (_, _, strategy, key) = PATCH_META.iter().find(|(d, f, _, _)| *d == def && *f == field)?;
    if !strategy.split(',').any(|s| s == "merge") {
        return None;
    }
    Some(match key {
        Some(k) => Shape::MapList(vec![k.to_string()], Vec::new()),
        None => Shape::SetList,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_markers_come_from_upstream_tags() {
        let dep = Node::root(schema::schema_of("apps", "v1", "Deployment").unwrap());
        let spec = dep.field("spec");
        assert_eq!(spec.shape(&json!({})), Shape::Struct);
        assert_eq!(spec.field("selector").shape(&json!({})), Shape::AtomicMap);
        let pod = spec.field("template").field("spec");
        let containers = pod.field("containers");
        assert_eq!(containers.shape(&json!([])), Shape::MapList(vec!["name".into()], vec![]));
        let ports = containers.item().field("ports");
        assert_eq!(
            ports.shape(&json!([])),
            Shape::MapList(
                vec!["containerPort".into(), "protocol".into()],
                vec![("protocol".into(), json!("TCP"))]
            )
        );
        assert_eq!(containers.item().field("args").shape(&json!([])), Shape::AtomicList);
        assert_eq!(dep.field("metadata").field("labels").shape(&json!({})), Shape::Map);
        assert_eq!(dep.field("metadata").field("finalizers").shape(&json!([])), Shape::SetList);
        assert_eq!(spec.field("replicas").shape(&json!(1)), Shape::Scalar);
    }

    #[test]
    fn crd_markers_are_read_from_the_schema() {
        let s = json!({"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                      "items": {"type": "object", "properties": {"id": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "sel": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"a": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }});
        let root = Node::root(&s);
        assert_eq!(root.field("items").shape(&json!([])), Shape::MapList(vec!["id".into()], vec![]));
        assert_eq!(root.field("tags").shape(&json!([])), Shape::SetList);
        assert_eq!(root.field("sel").shape(&json!({})), Shape::AtomicMap);
        assert_eq!(root.field("free").shape(&json!({})), Shape::Map);
        assert_eq!(root.field("free").field("x").shape(&json!([1])), Shape::AtomicList);
    }

    #[test]
    fn every_listed_definition_and_field_exists() {
        for (def, field, _, _) in LIST_MAPS {
            let d = schema::definition(def).unwrap_or_else(|| panic!("no definition {def}"));
            assert!(schema::property(d, field).is_some(), "{def} has no field {field}");
        }
        for def in ATOMIC_STRUCTS {
            assert!(schema::definition(def).is_some(), "no definition {def}");
        }
    }
}
