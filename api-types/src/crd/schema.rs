//! Structural schemas: the check a CRD's schema must pass, and what a custom resource goes
//! through against its version's schema — pruning, defaulting, validation — with upstream's
//! messages (`apiextensions-apiserver` `structuralschema`, `pruning`, `defaulting`, and
//! kube-openapi's validator as `kubeOpenAPIResultToFieldErrors` words it).
//!
//! `apiVersion`, `kind` and `metadata` at the root (and in `x-kubernetes-embedded-resource`
//! objects) are never pruned: metadata is the built-in ObjectMeta, checked by the generic
//! handlers.

use serde_json::{json, Map, Value};

use super::Violation;

fn ty(s: &Value) -> &str {
    s.get("type").and_then(Value::as_str).unwrap_or("")
}

fn flag(s: &Value, name: &str) -> bool {
    s.get(name).and_then(Value::as_bool) == Some(true)
}

fn props(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

/// The additionalProperties schema, when it is a schema (not `false`/absent).
fn additional(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|a| a.is_object())
}

/// Upstream's structural-schema errors for a version's `openAPIV3Schema` (at `at`): every node
/// with a type (unless it is int-or-string or preserves unknown fields), no `$ref`, `properties`
/// and `additionalProperties` not both, the root an object, metadata at the root limited to name
/// and generateName, `x-kubernetes-preserve-unknown-fields` only `true`.
pub fn structural_errors(schema: &Value, at: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    if !schema.is_object() {
        out.push(Violation::invalid(at, schema, "must be an object"));
        return out;
    }
    let root_ty = ty(schema);
    if root_ty.is_empty() {
        out.push(Violation::required(format!("{at}.type"), "must not be empty at the root"));
    } else if root_ty != "object" {
        out.push(Violation::invalid(format!("{at}.type"), &json!(root_ty), "must be object at the root"));
    }
    if let Some(meta) = props(schema).and_then(|p| p.get("metadata")) {
        let extra = props(meta).is_some_and(|p| p.keys().any(|k| k != "name" && k != "generateName"));
        let other = meta
            .as_object()
            .is_some_and(|m| m.keys().any(|k| !matches!(k.as_str(), "type" | "properties" | "description")));
        if extra || other || (!ty(meta).is_empty() && ty(meta) != "object") {
            out.push(Violation::forbidden(
                format!("{at}.properties[metadata]"),
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    walk_structural(schema, at, true, &mut out);
    out
}

fn walk_structural(s: &Value, at: &str, root: bool, out: &mut Vec<Violation>) {
    let Some(map) = s.as_object() else {
        out.push(Violation::invalid(at, s, "must be a schema object"));
        return;
    };
    if map.contains_key("$ref") {
        out.push(Violation::forbidden(format!("{at}.$ref"), "$ref is not supported"));
    }
    if let Some(p) = map.get("x-kubernetes-preserve-unknown-fields") {
        if p != &json!(true) {
            out.push(Violation::invalid(
                format!("{at}.x-kubernetes-preserve-unknown-fields"),
                p,
                "must be true or undefined",
            ));
        }
    }
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    if let Some(t) = map.get("type").and_then(Value::as_str) {
        let types = ["object", "array", "string", "integer", "number", "boolean"];
        if !types.contains(&t) {
            let allowed: Vec<String> = types.iter().map(|t| t.to_string()).collect();
            out.push(Violation::not_supported(format!("{at}.type"), &json!(t), &allowed));
        }
    } else if !root && !int_or_string && !preserve {
        // The caller words the missing type by where the node is.
    }
    if props(s).is_some() && additional(s).is_some() {
        out.push(Violation::forbidden(
            format!("{at}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if flag(s, "x-kubernetes-embedded-resource") && ty(s) != "object" {
        out.push(Violation::required(
            format!("{at}.type"),
            "must be object if x-kubernetes-embedded-resource is true",
        ));
    }
    let needs_type = |child: &Value| {
        ty(child).is_empty()
            && !flag(child, "x-kubernetes-int-or-string")
            && !flag(child, "x-kubernetes-preserve-unknown-fields")
    };
    if let Some(p) = props(s) {
        for (k, child) in p {
            let cat = format!("{at}.properties[{k}]");
            if needs_type(child) {
                out.push(Violation::required(
                    format!("{cat}.type"),
                    "must not be empty for specified object fields",
                ));
            }
            walk_structural(child, &cat, false, out);
        }
    }
    if let Some(items) = s.get("items") {
        let cat = format!("{at}.items");
        if items.is_array() {
            out.push(Violation::forbidden(cat.clone(), "items must be a schema object and not an array"));
        } else {
            if needs_type(items) {
                out.push(Violation::required(
                    format!("{cat}.type"),
                    "must not be empty for specified array items",
                ));
            }
            walk_structural(items, &cat, false, out);
        }
    } else if ty(s) == "array" {
        out.push(Violation::required(format!("{at}.items"), "must be specified"));
    }
    if let Some(a) = additional(s) {
        let cat = format!("{at}.additionalProperties");
        if needs_type(a) {
            out.push(Violation::required(
                format!("{cat}.type"),
                "must not be empty for specified additionalProperties",
            ));
        }
        walk_structural(a, &cat, false, out);
    }
    if let Some(d) = map.get("default") {
        if root {
            out.push(Violation::forbidden(format!("{at}.default"), "must not be set at the root"));
        } else {
            let mut copy = d.clone();
            prune_at(s, &mut copy, "", false, &mut Vec::new());
            if &copy != d {
                out.push(Violation::invalid(format!("{at}.default"), d, "must not have unknown fields"));
            }
            let errs = validate_at(s, d, "", &mut Vec::new());
            if let Some(e) = errs.into_iter().next() {
                out.push(Violation::invalid(format!("{at}.default"), d, &e.message));
            }
        }
    }
}

/// Removes fields the schema does not specify (unless preserved), returning their paths (dotted,
/// `[i]` for items) for field validation. The root's apiVersion, kind and metadata stay.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    if schema.is_null() {
        return dropped;
    }
    prune_at(schema, obj, "", true, &mut dropped);
    dropped
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn prune_at(s: &Value, v: &mut Value, path: &str, embedded: bool, dropped: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
            let embedded_here = embedded || flag(s, "x-kubernetes-embedded-resource");
            let p = props(s);
            let a = additional(s);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                if embedded_here && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    if k == "metadata" {
                        if let Some(child) = map.get_mut(&k) {
                            prune_metadata(child, &child_path, dropped);
                        }
                    }
                    continue;
                }
                let child_schema = p.and_then(|p| p.get(&k)).or(a);
                match child_schema {
                    Some(cs) => {
                        if let Some(child) = map.get_mut(&k) {
                            prune_at(cs, child, &child_path, false, dropped);
                        }
                    }
                    None if preserve || s.get("additionalProperties") == Some(&json!(true)) => {}
                    None => {
                        map.remove(&k);
                        dropped.push(child_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(is, item, &format!("{path}[{i}]"), false, dropped);
                }
            }
        }
        _ => {}
    }
}

/// ObjectMeta's fields: a custom resource's metadata keeps exactly these.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn prune_metadata(meta: &mut Value, path: &str, dropped: &mut Vec<String>) {
    if let Value::Object(m) = meta {
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if !OBJECT_META_FIELDS.contains(&k.as_str()) {
                m.remove(&k);
                dropped.push(join(path, &k));
            }
        }
    }
}

/// Applies the schema's `default`s: absent properties with a default get it (and are then
/// defaulted inside), as upstream's structural defaulting; a `null` in a non-nullable field with a
/// default is replaced by it.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    if schema.is_null() {
        return;
    }
    default_at(schema, obj);
}

fn default_at(s: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(p) = props(s) {
                for (k, cs) in p {
                    let missing = match map.get(k) {
                        None => true,
                        Some(Value::Null) => !flag(cs, "nullable"),
                        _ => false,
                    };
                    if missing {
                        if let Some(d) = cs.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(k) {
                        default_at(cs, child);
                    }
                }
            } else if let Some(a) = additional(s) {
                for child in map.values_mut() {
                    default_at(a, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for item in items {
                    default_at(is, item);
                }
            }
        }
        _ => {}
    }
}

/// Validates a custom resource against its schema; each failure as upstream's field error.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Violation> {
    if schema.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // The root's metadata is ObjectMeta's business; the schema may only say name/generateName.
    let mut root = schema.clone();
    if let Some(p) = root.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("metadata");
        p.remove("apiVersion");
        p.remove("kind");
    }
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
    }
    validate_at(&root, &o, "", &mut out);
    out
}

/// The JSON type kube-openapi's validator names for a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Go's `%v` of a float64 bound as kube-openapi prints it.
fn bound(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => v.to_string(),
    }
}

fn name_of(path: &str) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    }
}

fn validate_at(s: &Value, v: &Value, path: &str, out: &mut Vec<Violation>) -> Vec<Violation> {
    let before = out.len();
    let name = name_of(path);
    let field = path.to_string();
    let t = ty(s);
    let actual = type_name(v);
    // Type.
    if v.is_null() {
        if !flag(s, "nullable") && !t.is_empty() {
            let msg = format!("{name} in body must be of type {t}: \"null\"");
            out.push(Violation::type_invalid(field, &json!("null"), &msg));
        }
        return out[before..].to_vec();
    }
    if flag(s, "x-kubernetes-int-or-string") {
        if !matches!(actual, "integer" | "string") {
            let msg = format!("{name} in body must be of type integer,string: \"{actual}\"");
            out.push(Violation::type_invalid(field, &json!(actual), &msg));
            return out[before..].to_vec();
        }
    } else if !t.is_empty() && t != actual && !(t == "number" && actual == "integer") {
        let msg = format!("{name} in body must be of type {t}: \"{actual}\"");
        out.push(Violation::type_invalid(field, &json!(actual), &msg));
        return out[before..].to_vec();
    }
    // Enum.
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            let allowed: Vec<String> = values
                .iter()
                .map(|a| a.as_str().map(str::to_string).unwrap_or_else(|| a.to_string()))
                .collect();
            out.push(Violation::not_supported(field.clone(), v, &allowed));
        }
    }
    match v {
        Value::Number(_) => {
            let x = num(v).unwrap_or(0.0);
            if let Some(min) = s.get("minimum") {
                let m = num(min).unwrap_or(f64::MIN);
                let excl = flag(s, "exclusiveMinimum");
                if (excl && x <= m) || (!excl && x < m) {
                    let rel = if excl { "greater than" } else { "greater than or equal to" };
                    let msg = format!("{name} in body should be {rel} {}", bound(min));
                    out.push(Violation::invalid(field.clone(), v, &msg));
                }
            }
            if let Some(max) = s.get("maximum") {
                let m = num(max).unwrap_or(f64::MAX);
                let excl = flag(s, "exclusiveMaximum");
                if (excl && x >= m) || (!excl && x > m) {
                    let rel = if excl { "less than" } else { "less than or equal to" };
                    let msg = format!("{name} in body should be {rel} {}", bound(max));
                    out.push(Violation::invalid(field.clone(), v, &msg));
                }
            }
            if let Some(mo) = s.get("multipleOf").and_then(Value::as_f64).filter(|m| *m != 0.0) {
                if (x / mo).fract() != 0.0 {
                    let msg = format!("{name} in body should be a multiple of {}", bound(&json!(mo)));
                    out.push(Violation::invalid(field.clone(), v, &msg));
                }
            }
        }
        Value::String(text) => {
            let len = text.chars().count() as i64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_i64) {
                if len > max {
                    out.push(Violation::too_long(field.clone(), max));
                }
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_i64) {
                if len < min {
                    let msg = format!("{name} in body should be at least {min} chars long");
                    out.push(Violation::invalid(field.clone(), v, &msg));
                }
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if re.is_match(text) => {}
                    _ => {
                        let msg = format!("{name} in body should match '{p}'");
                        out.push(Violation::invalid(field.clone(), v, &msg));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = s.get("maxItems").and_then(Value::as_i64) {
                if items.len() as i64 > max {
                    out.push(Violation::too_many(field.clone(), items.len(), max));
                }
            }
            if let Some(min) = s.get("minItems").and_then(Value::as_i64) {
                if (items.len() as i64) < min {
                    let msg = format!("{name} in body should have at least {min} items");
                    out.push(Violation::invalid(field.clone(), v, &msg));
                }
            }
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(is, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            for req in
                s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    out.push(Violation::required(join(path, req), ""));
                }
            }
            if let Some(max) = s.get("maxProperties").and_then(Value::as_i64) {
                if map.len() as i64 > max {
                    out.push(Violation::too_many(field.clone(), map.len(), max));
                }
            }
            if let Some(min) = s.get("minProperties").and_then(Value::as_i64) {
                if (map.len() as i64) < min {
                    let msg = format!("{name} in body should have at least {min} properties");
                    out.push(Violation::invalid(field.clone(), v, &msg));
                }
            }
            if flag(s, "x-kubernetes-embedded-resource") {
                for k in ["apiVersion", "kind"] {
                    if map.get(k).and_then(Value::as_str).unwrap_or("").is_empty() {
                        out.push(Violation::required(join(path, k), "must not be empty"));
                    }
                }
            }
            let p = props(s);
            let a = additional(s);
            for (k, child) in map {
                let cs = p.and_then(|p| p.get(k)).or(a);
                if let Some(cs) = cs {
                    validate_at(cs, child, &join(path, k), out);
                }
            }
        }
        _ => {}
    }
    out[before..].to_vec()
}
