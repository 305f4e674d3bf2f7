//! Strict field validation: the unknown and duplicate fields upstream's strict JSON decoding
//! reports (`fieldValidation=Strict` fails the request with them, `Warn` returns them as warnings).
//!
//! Upstream decodes into the Go types with sigs.k8s.io/json, which reports, in document order:
//! `unknown field "<path>"` for a key the type does not have, and `duplicate field "<path>"` for a
//! key seen twice in one object (struct or map). Paths are dotted from the object's root, with
//! `[i]` for list items: `spec.template.spec.containers[0].imagePullPolicy`. A key that is both
//! unknown and repeated is reported once, as unknown, because the decoder skips unknown values.
//! Values Go keeps raw (FieldsV1, RawExtension) are not looked into.
//!
//! serde_json keeps only the last of duplicate keys, so the raw bytes get their own pass here,
//! into a tree that keeps every key in order.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::schema;

/// A JSON value with object keys kept in order, duplicates included.
#[derive(Debug)]
enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Scalar,
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            entries.push((key, value));
        }
        Ok(Node::Object(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Parses one JSON document, keeping duplicate keys. serde_json's recursion limit bounds the depth,
/// so hostile nesting is an error rather than a stack overflow.
fn parse(raw: &[u8]) -> Result<Node, String> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let node = Node::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(node)
}

fn from_value(v: &Value) -> Node {
    match v {
        Value::Object(map) => Node::Object(map.iter().map(|(k, v)| (k.clone(), from_value(v))).collect()),
        Value::Array(items) => Node::Array(items.iter().map(from_value).collect()),
        _ => Node::Scalar,
    }
}

/// One strict-decoding complaint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Finding {
    Unknown(String),
    Duplicate(String),
}

impl Finding {
    pub fn path(&self) -> &str {
        match self {
            Finding::Unknown(p) | Finding::Duplicate(p) => p,
        }
    }
}

/// Upstream's wording of one finding, which is also the text of its `Warn`-mode warning:
/// `unknown field "spec.foo"`, `duplicate field "spec.replicas"`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Unknown(p) => write!(f, "unknown field {p:?}"),
            Finding::Duplicate(p) => write!(f, "duplicate field {p:?}"),
        }
    }
}

/// The message a `Strict` request fails with (a 400 BadRequest upstream):
/// `Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: ...`.
pub fn strict_decoding_error(kind: &str, version: &str, findings: &[Finding]) -> String {
    let list: Vec<String> = findings.iter().map(Finding::to_string).collect();
    format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
        list.join(", ")
    )
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Collects findings in document order, each once.
struct Findings {
    list: Vec<Finding>,
    seen: HashSet<Finding>,
}

impl Findings {
    fn new() -> Self {
        Findings { list: Vec::new(), seen: HashSet::new() }
    }

    fn add(&mut self, f: Finding) {
        if self.seen.insert(f.clone()) {
            self.list.push(f);
        }
    }
}

/// Walks `node` against `schema` (None: no schema, so only duplicates are looked for).
fn walk(schema: Option<&Value>, node: &Node, path: &str, out: &mut Findings) {
    match node {
        Node::Scalar => {}
        Node::Array(items) => {
            let item_schema = match schema {
                Some(s) => match schema::items(s) {
                    Some(i) => Some(i),
                    // An array where the type has none is a type error, not ours to report.
                    None => return,
                },
                None => None,
            };
            for (i, item) in items.iter().enumerate() {
                walk(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        Node::Object(entries) => {
            let Some(s) = schema else {
                check_object(entries, path, out, |_| Some(None));
                return;
            };
            if schema::is_free_form(s) {
                return;
            }
            let resolved = schema::resolve(s);
            if let Some(props) = resolved.get("properties").and_then(Value::as_object) {
                check_object(entries, path, out, |key| props.get(key).map(Some));
            } else if let Some(values) = schema::map_values(s) {
                check_object(entries, path, out, |_| Some(Some(values)));
            }
            // Anything else (an object where a scalar or IntOrString belongs) is a type error for
            // the decoder to report, not a field problem.
        }
    }
}

/// Checks one object's keys. `field` says what a key is: None for unknown, Some(schema) for a
/// known field or map key (Some(None) when walking without schemas).
fn check_object<'s>(
    entries: &[(String, Node)],
    path: &str,
    out: &mut Findings,
    field: impl Fn(&str) -> Option<Option<&'s Value>>,
) {
    let mut seen: HashSet<&str> = HashSet::new();
    for (key, value) in entries {
        let child = join(path, key);
        match field(key) {
            None => out.add(Finding::Unknown(child)),
            Some(sub) => {
                if !seen.insert(key.as_str()) {
                    out.add(Finding::Duplicate(child.clone()));
                }
                // Go decodes every occurrence into the field, so each one is looked into.
                walk(sub, value, &child, out);
            }
        }
    }
}

/// The paths of fields in `obj` that the kind's schema does not define, in document order. Empty
/// when the kind has no schema (nothing to judge by).
pub fn unknown_fields(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<String> {
    let Some(s) = schema::schema_of(group, version, kind) else {
        return Vec::new();
    };
    let mut out = Findings::new();
    walk(Some(s), &from_value(obj), "", &mut out);
    out.list
        .into_iter()
        .filter_map(|f| match f {
            Finding::Unknown(p) => Some(p),
            Finding::Duplicate(_) => None,
        })
        .collect()
}

/// The paths of keys repeated within any one object of a raw JSON document, in document order,
/// regardless of schema. Err carries the parse error of malformed JSON.
pub fn duplicate_fields(raw: &[u8]) -> Result<Vec<String>, String> {
    let node = parse(raw)?;
    let mut out = Findings::new();
    walk(None, &node, "", &mut out);
    Ok(out.list.into_iter().map(|f| f.path().to_string()).collect())
}

/// Everything upstream's strict decoding reports for a raw request body of a kind, in its order:
/// unknown fields, and duplicates except within unknown or raw-kept values. For a kind with no
/// schema, only duplicates (anywhere). Err carries the parse error of malformed JSON.
pub fn strict_findings(group: &str, version: &str, kind: &str, raw: &[u8]) -> Result<Vec<Finding>, String> {
    let node = parse(raw)?;
    let mut out = Findings::new();
    walk(schema::schema_of(group, version, kind), &node, "", &mut out);
    Ok(out.list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_in_nested_lists_and_maps() {
        let d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"any.key/x": "v"}, "annotations": {"b": "c"}, "bogusMeta": 1},
            "spec": {
                "foo": 1,
                "replicas": 2,
                "selector": {"matchLabels": {"app": "x"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [
                        {"name": "c", "image": "i", "resources": {"limits": {"cpu": "1", "memory": 5}}},
                        {"name": "d", "image": "i", "bogus": true, "ports": [{"containerPort": 80, "nope": 1}]}
                    ]}
                }
            }
        });
        assert_eq!(
            unknown_fields("apps", "v1", "Deployment", &d),
            vec![
                "metadata.bogusMeta",
                "spec.foo",
                "spec.template.spec.containers[1].bogus",
                "spec.template.spec.containers[1].ports[0].nope",
            ]
        );
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "y"}, "binaryData": {}, "dta": 1});
        assert_eq!(unknown_fields("", "v1", "ConfigMap", &cm), vec!["dta"]);
        assert!(unknown_fields("", "v1", "Nope", &cm).is_empty());
    }

    #[test]
    fn raw_kept_values_are_not_looked_into() {
        let pod = json!({"metadata": {"managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"x": {}}}}]}});
        assert!(unknown_fields("", "v1", "Pod", &pod).is_empty());
    }

    #[test]
    fn duplicates_anywhere() {
        let raw = br#"{"spec": {"replicas": 1, "replicas": 2, "template": {"spec": {"containers": [
            {"name": "a", "image": "x", "name": "b"}]}}}, "metadata": {"labels": {"a": "1", "a": "2"}}}"#;
        assert_eq!(
            duplicate_fields(raw).unwrap(),
            vec!["spec.replicas", "spec.template.spec.containers[0].name", "metadata.labels.a"]
        );
        assert!(duplicate_fields(br#"{"a": 1, "b": {"a": 2}}"#).unwrap().is_empty());
        assert!(duplicate_fields(b"{\"a\": ").is_err());
        assert!(duplicate_fields(b"{} {}").is_err());
    }

    #[test]
    fn strict_findings_match_upstreams_order_and_wording() {
        // The body of upstream's field validation integration test, in JSON.
        let raw = br#"{
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "dupename", "name": "x", "labels": {"app": "nginx"}, "unknownMeta": "metaVal"},
            "spec": {
                "unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
                "paused": true, "paused": false,
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{
                    "name": "nginx", "image": "nginx:latest", "unknownNested": "val1",
                    "imagePullPolicy": "Always", "imagePullPolicy": "Never"}]}}
            }
        }"#;
        let findings = strict_findings("apps", "v1", "Deployment", raw).unwrap();
        assert_eq!(
            strict_decoding_error("Deployment", "v1", &findings),
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
             duplicate field \"metadata.name\", unknown field \"metadata.unknownMeta\", \
             unknown field \"spec.unknown1\", unknown field \"spec.unknownDupe\", \
             duplicate field \"spec.paused\", \
             unknown field \"spec.template.spec.containers[0].unknownNested\", \
             duplicate field \"spec.template.spec.containers[0].imagePullPolicy\""
        );
        assert_eq!(findings[0].to_string(), r#"duplicate field "metadata.name""#);
    }
}
