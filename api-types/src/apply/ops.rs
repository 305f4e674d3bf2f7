//! The operations on objects by schema that server-side apply is built from, as
//! structured-merge-diff's `typed` package defines them: the field set of an object, the
//! comparison of two objects, the merge of an applied configuration into a live object, and the
//! removal of a set of fields.

use serde_json::{Map, Value};

use super::fieldpath::{self, Path, Set};
use super::schema::{Node, Shape};

/// An object that cannot be read by its schema (an item of a map-keyed list without its key, or
/// two items with one key where that is not allowed), in structured-merge-diff's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

/// The path element of a list item: its keys for a list map, its value for a set.
fn item_element(shape: &Shape, item: &Value, at: &Path, i: usize) -> Result<String, ShapeError> {
    match shape {
        Shape::MapList(keys, defaults) => {
            let mut fields = Map::new();
            for k in keys {
                let v =
                    item.get(k).cloned().or_else(|| defaults.iter().find(|(d, _)| d == k).map(|d| d.1.clone()));
                match v {
                    Some(v) => {
                        fields.insert(k.clone(), v);
                    }
                    None => {
                        return Err(ShapeError(format!(
                            "{}: element {i}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)",
                            fieldpath::display(at)
                        )))
                    }
                }
            }
            Ok(fieldpath::key(&fields))
        }
        _ => Ok(fieldpath::value(item)),
    }
}

fn is_granular_object(shape: &Shape) -> bool {
    matches!(shape, Shape::Struct | Shape::Map)
}

fn is_granular_list(shape: &Shape) -> bool {
    matches!(shape, Shape::SetList | Shape::MapList(..))
}

/// The fields an object sets (structured-merge-diff's `ToFieldSet`): scalars and atomic values as
/// members, list items as members with their fields, map entries as members, and struct fields
/// only when they hold null or an empty object.
pub fn to_set(v: &Value, node: &Node<'_>) -> Result<Set, ShapeError> {
    let mut out = Set::new();
    walk_set(v, node, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk_set(v: &Value, node: &Node<'_>, at: &mut Path, out: &mut Set) -> Result<(), ShapeError> {
    let shape = node.shape(v);
    match (v, &shape) {
        (Value::Object(m), s) if is_granular_object(s) => {
            for (k, child) in m {
                at.push(fieldpath::field(k));
                walk_set(child, &node.field(k), at, out)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || shape == Shape::Map {
                    out.insert(at.clone());
                }
                at.pop();
            }
        }
        (Value::Array(items), s) if is_granular_list(s) => {
            let item_node = node.item();
            for (i, item) in items.iter().enumerate() {
                let pe = item_element(s, item, at, i)?;
                at.push(pe);
                walk_set(item, &item_node, at, out)?;
                out.insert(at.clone());
                at.pop();
            }
        }
        _ => {
            if !at.is_empty() {
                out.insert(at.clone());
            }
        }
    }
    Ok(())
}

/// What changed from one object to another (structured-merge-diff's `Compare`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

/// Compares `old` with `new` by schema: leaves (scalars, atomic values, empty maps and lists)
/// that differ are modified; paths present on one side only are added or removed, including the
/// maps and list items that appear or disappear.
pub fn compare(old: &Value, new: &Value, node: &Node<'_>) -> Result<Comparison, ShapeError> {
    let mut c = Comparison::default();
    walk_compare(Some(old), Some(new), node, &mut Vec::new(), &mut c)?;
    Ok(c)
}

fn walk_compare(
    old: Option<&Value>,
    new: Option<&Value>,
    node: &Node<'_>,
    at: &mut Path,
    c: &mut Comparison,
) -> Result<(), ShapeError> {
    let (lhs_shape, rhs_shape) = (old.map(|v| node.shape(v)), new.map(|v| node.shape(v)));
    let shape = rhs_shape.clone().or(lhs_shape.clone()).unwrap_or(Shape::Scalar);
    let same_kind = old.is_none() || new.is_none() || lhs_shape == rhs_shape;
    let mut leaf = true;
    match (old, new) {
        (o, n) if same_kind && is_granular_object(&shape) && both_objects(o, n) => {
            let empty = |v: Option<&Value>| v.and_then(Value::as_object).is_none_or(Map::is_empty);
            if !(empty(o) && empty(n)) {
                leaf = false;
                let om = o.and_then(Value::as_object);
                let nm = n.and_then(Value::as_object);
                let mut keys: Vec<&String> = om.into_iter().flat_map(|m| m.keys()).collect();
                keys.extend(nm.into_iter().flat_map(|m| m.keys()));
                keys.sort();
                keys.dedup();
                for k in keys {
                    at.push(fieldpath::field(k));
                    walk_compare(om.and_then(|m| m.get(k)), nm.and_then(|m| m.get(k)), &node.field(k), at, c)?;
                    at.pop();
                }
            }
        }
        (o, n) if same_kind && is_granular_list(&shape) && both_arrays(o, n) => {
            let empty = |v: Option<&Value>| v.and_then(Value::as_array).is_none_or(Vec::is_empty);
            if !(empty(o) && empty(n)) {
                leaf = false;
                let ol = index(o, &shape, at)?;
                let nl = index(n, &shape, at)?;
                let mut pes: Vec<&String> = ol.iter().map(|(pe, _)| pe).collect();
                pes.extend(nl.iter().map(|(pe, _)| pe));
                pes.sort();
                pes.dedup();
                let item_node = node.item();
                for pe in pes {
                    let lv = ol.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
                    let rv = nl.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
                    at.push(pe.clone());
                    walk_compare(lv, rv, &item_node, at, c)?;
                    at.pop();
                }
            }
        }
        _ => {}
    }
    if leaf {
        match (old, new) {
            (None, Some(_)) => {
                c.added.insert(at.clone());
            }
            (Some(_), None) => {
                c.removed.insert(at.clone());
            }
            (Some(o), Some(n)) if o != n => {
                c.modified.insert(at.clone());
            }
            _ => {}
        }
    } else if old.is_none() && (shape != Shape::Struct || at.last().is_some_and(|pe| !pe.starts_with("f:"))) {
        // A new map or list item is itself added; a struct only through its fields (upstream's
        // zero-valued Go structs are never absent, so only pointers to structs show up there).
        c.added.insert(at.clone());
    } else if new.is_none() {
        c.removed.insert(at.clone());
    }
    c.added.remove(&Vec::new());
    c.removed.remove(&Vec::new());
    c.modified.remove(&Vec::new());
    Ok(())
}

fn both_objects(o: Option<&Value>, n: Option<&Value>) -> bool {
    o.is_none_or(Value::is_object) && n.is_none_or(Value::is_object)
}

fn both_arrays(o: Option<&Value>, n: Option<&Value>) -> bool {
    o.is_none_or(Value::is_array) && n.is_none_or(Value::is_array)
}

/// A list's items by path element, in order (the first of duplicates).
fn index<'v>(
    list: Option<&'v Value>,
    shape: &Shape,
    at: &Path,
) -> Result<Vec<(String, &'v Value)>, ShapeError> {
    let mut out: Vec<(String, &Value)> = Vec::new();
    for (i, item) in list.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let pe = item_element(shape, item, at, i)?;
        if !out.iter().any(|(p, _)| *p == pe) {
            out.push((pe, item));
        }
    }
    Ok(out)
}

/// Merges an applied configuration into a live object (structured-merge-diff's `Merge`): structs
/// and maps key by key, map-keyed lists and sets item by item (the configuration's order for its
/// items, the live-only items where they were), everything else replaced by the configuration.
pub fn merge(live: &Value, config: &Value, node: &Node<'_>) -> Result<Value, ShapeError> {
    merge_at(Some(live), config, node, &mut Vec::new())
}

fn merge_at(live: Option<&Value>, config: &Value, node: &Node<'_>, at: &mut Path) -> Result<Value, ShapeError> {
    let shape = node.shape(config);
    let Some(live) = live.filter(|l| node.shape(l) == shape) else {
        // Nothing to merge with: the configuration as it is, still checked for its keys.
        walk_set(config, node, at, &mut Set::new())?;
        return Ok(config.clone());
    };
    match (live, config) {
        (Value::Object(lm), Value::Object(cm)) if is_granular_object(&shape) => {
            let mut out = lm.clone();
            for (k, cv) in cm {
                at.push(fieldpath::field(k));
                let merged = merge_at(lm.get(k), cv, &node.field(k), at)?;
                at.pop();
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Value::Array(_), Value::Array(citems)) if is_granular_list(&shape) => {
            let ol = index(Some(live), &shape, at)?;
            let mut cl: Vec<(String, &Value)> = Vec::new();
            for (i, item) in citems.iter().enumerate() {
                let pe = item_element(&shape, item, at, i)?;
                if cl.iter().any(|(p, _)| *p == pe) {
                    return Err(ShapeError(format!(
                        "{}: duplicate entries for key {}",
                        fieldpath::display(at),
                        fieldpath::display(&vec![pe])
                    )));
                }
                cl.push((pe, item));
            }
            let item_node = node.item();
            let in_config = |pe: &String| cl.iter().any(|(p, _)| p == pe);
            // The configuration's order for its items; live-only items stay where they were.
            let shared: Vec<&String> =
                cl.iter().map(|(p, _)| p).filter(|p| ol.iter().any(|(l, _)| l == *p)).collect();
            let mut next_shared = 0;
            let mut placed: Vec<&String> = Vec::new();
            let mut out = Vec::new();
            let (mut li, mut ri) = (0, 0);
            while li < ol.len() || ri < cl.len() {
                if li < ol.len() && ri < cl.len() {
                    let pe = &ol[li].0;
                    if *pe == cl[ri].0 {
                        at.push(pe.clone());
                        out.push(merge_at(Some(ol[li].1), cl[ri].1, &item_node, at)?);
                        at.pop();
                        placed.push(pe);
                        li += 1;
                        ri += 1;
                        if shared.get(next_shared) == Some(&pe) {
                            next_shared += 1;
                        }
                        continue;
                    }
                    if in_config(pe) && shared.get(next_shared).is_some_and(|s| *s != pe) {
                        li += 1;
                        continue;
                    }
                }
                if li < ol.len() {
                    let pe = &ol[li].0;
                    if !in_config(pe) {
                        out.push(ol[li].1.clone());
                        li += 1;
                        continue;
                    } else if placed.contains(&pe) {
                        li += 1;
                    }
                }
                if ri < cl.len() {
                    let (pe, cv) = (&cl[ri].0, cl[ri].1);
                    let lv = ol.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
                    at.push(pe.clone());
                    out.push(merge_at(lv, cv, &item_node, at)?);
                    at.pop();
                    placed.push(pe);
                    ri += 1;
                    if shared.get(next_shared) == Some(&pe) {
                        next_shared += 1;
                    }
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(config.clone()),
    }
}

/// Removes the members of `set` from an object (structured-merge-diff's `RemoveItems`): a field
/// or map key, or a list item, named by a member goes with everything below it.
pub fn remove(v: &mut Value, set: &Set, node: &Node<'_>) -> Result<(), ShapeError> {
    for p in set {
        remove_path(v, p, node, &mut Vec::new())?;
    }
    Ok(())
}

fn remove_path(v: &mut Value, p: &[String], node: &Node<'_>, at: &mut Path) -> Result<(), ShapeError> {
    let Some((first, rest)) = p.split_first() else { return Ok(()) };
    let shape = node.shape(v);
    match v {
        Value::Object(m) => {
            let Some(name) = first.strip_prefix("f:") else { return Ok(()) };
            if rest.is_empty() {
                m.remove(name);
            } else if let Some(child) = m.get_mut(name) {
                at.push(first.clone());
                remove_path(child, rest, &node.field(name), at)?;
                at.pop();
            }
        }
        Value::Array(items) if is_granular_list(&shape) => {
            let mut pes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                pes.push(item_element(&shape, item, at, i)?);
            }
            if rest.is_empty() {
                let mut i = 0;
                items.retain(|_| {
                    i += 1;
                    pes[i - 1] != *first
                });
            } else {
                let item_node = node.item();
                for (item, pe) in items.iter_mut().zip(&pes) {
                    if pe == first {
                        at.push(pe.clone());
                        remove_path(item, rest, &item_node, at)?;
                        at.pop();
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}
