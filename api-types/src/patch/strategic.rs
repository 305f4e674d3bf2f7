//! Strategic merge patch, following the apply half of upstream's
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch` with
//! `MergeParallelList` and `IgnoreUnmatchedNulls` on, as the API server runs it).
//!
//! Where this deliberately differs from upstream, and why:
//! - Upstream decodes the result into a typed object, which silently drops leftover directive keys
//!   (`$retainKeys`, `$setElementOrder/…`) and null fields in newly added subtrees. We keep the
//!   result untyped, so [`clean`] drops them explicitly.
//! - `$patch: merge` (the documented default) is accepted as a no-op on maps and list elements;
//!   upstream rejects it with a 500 ("unknown patch type" / "merging lists cannot yet be
//!   specified in the patch").
//! - `$deleteFromPrimitiveList/x` on a list the schema does not mark `merge` deletes the listed
//!   values instead of replacing the list with them: the schema comes from OpenAPI and may be
//!   incomplete, and replacing would do the opposite of what the client asked.
//! - Non-list `$setElementOrder/x` values are a 400 (upstream: 500).

use serde_json::{Map, Value};

use super::{PatchError, PatchSchema};
use crate::typecheck::json_kind;

type Obj = Map<String, Value>;
type Schema<'a> = Option<&'a dyn PatchSchema>;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

// Upstream's `mergepatch` error texts for the 400 cases.
const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";
const ERR_LIST_OF_LISTS: &str = "lists of lists are not supported";

fn bad_request(msg: &str) -> PatchError {
    PatchError::StrategicBadRequest(msg.to_string())
}

fn internal(msg: String) -> PatchError {
    PatchError::StrategicInternal(msg)
}

fn no_merge_key(map: &Obj, merge_key: &str) -> PatchError {
    internal(format!("map: {} does not contain declared merge key: {merge_key}", Value::Object(map.clone())))
}

pub(super) fn apply(original: Value, patch: Value, schema: &dyn PatchSchema) -> Result<Value, PatchError> {
    let Value::Object(original) = original else {
        return Err(PatchError::InvalidOriginal("the object to patch is not a JSON object".to_string()));
    };
    let patch = match patch {
        Value::Object(patch) => patch,
        // Go's json.Unmarshal of `null` into a map succeeds with an empty map: nothing to do.
        Value::Null => Obj::new(),
        other => {
            return Err(PatchError::MalformedPatch(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(&other)
            )))
        }
    };
    merge_map(original, patch, Some(schema)).map(Value::Object)
}

/// The field's patch strategy with `retainKeys` taken out: `retainKeys` only matters when a patch
/// is computed (it makes kubectl emit `$retainKeys`); applying honours `$retainKeys` wherever it
/// appears.
fn patch_strategy(raw: Option<&str>) -> Result<Option<&str>, PatchError> {
    let Some(raw) = raw else { return Ok(None) };
    let parts: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [] | ["retainKeys"] => Ok(None),
        [one] => Ok(Some(*one)),
        ["retainKeys", other] | [other, "retainKeys"] => Ok(Some(*other)),
        _ => Err(internal(format!("unexpected patch strategy: {raw}"))),
    }
}

/// The field name a `$setElementOrder/<field>` or `$deleteFromPrimitiveList/<field>` key names.
fn directive_target<'k>(key: &'k str, prefix: &str, err: &str) -> Result<&'k str, PatchError> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field),
        _ => Err(bad_request(err)),
    }
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Upstream's `removeDirectives`, plus what its typed decode drops: a map carrying `$patch` is
/// dropped whole (None), other directive keys and null fields are removed, recursively.
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(clean_map(map))),
        Value::Array(items) => Some(Value::Array(clean_list(items))),
        other => Some(other),
    }
}

fn clean_map(map: Obj) -> Obj {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(items: Vec<Value>) -> Vec<Value> {
    items.into_iter().filter_map(clean).collect()
}

/// Merges `patch` into `original` (upstream's `mergeMap`).
fn merge_map(mut original: Obj, mut patch: Obj, schema: Schema<'_>) -> Result<Obj, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => return Ok(clean_map(patch)),
            Some("delete") => return Ok(Obj::new()),
            Some("merge") => {}
            _ => return Err(unknown_patch_type(&directive, &Value::Object(patch))),
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, schema)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (directive_target(&key, DELETE_FROM_PRIMITIVE_LIST, ERR_PRIMITIVE_LIST)?.to_string(), true)
        } else {
            (key, false)
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(original_value) = original.remove(&key) else {
            // Not in the original: take the patch value, minus its directives and nulls.
            if !is_delete_list {
                if let Some(v) = clean(patch_value) {
                    original.insert(key, v);
                }
            }
            continue;
        };
        let field = schema.and_then(|s| s.field(&key));
        let merged = match (original_value, patch_value) {
            (Value::Object(o), Value::Object(p)) => {
                if patch_strategy(field.as_deref().and_then(|f| f.strategy()))? == Some("replace") {
                    Some(Value::Object(clean_map(p)))
                } else {
                    Some(Value::Object(merge_map(o, p, field.as_deref())?))
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                Some(Value::Array(merge_list_field(o, p, field.as_deref(), is_delete_list)?))
            }
            // Different JSON types: the patch value wins, except that a deletion list never
            // replaces anything.
            (o, _) if is_delete_list => Some(o),
            (_, p) => clean(p),
        };
        if let Some(v) = merged {
            original.insert(key, v);
        }
    }
    Ok(original)
}

/// `$retainKeys: [..]`: the map keeps only the listed keys, and the patch may only set listed keys.
fn apply_retain_keys(original: &mut Obj, patch: &mut Obj) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else { return Ok(()) };
    let Value::Array(retain) = retain else { return Err(bad_request(ERR_RETAIN_KEYS)) };
    let retained = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        let exempt =
            v.is_null() || k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k.starts_with(SET_ELEMENT_ORDER);
        if !exempt && !retained(k) {
            return Err(bad_request(ERR_RETAIN_KEYS));
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

fn as_list(value: Option<&Value>) -> Result<Option<Vec<Value>>, PatchError> {
    match value {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.clone())),
        Some(other) => {
            Err(internal(format!("expected a []interface {{}}, but received a {}", json_kind(other))))
        }
    }
}

/// Handles every `$setElementOrder/<field>` together with the `<field>` list it orders (upstream's
/// `mergePatchIntoOriginal`): merges that list now, orders it, and takes it out of the patch.
fn merge_set_element_order(original: &mut Obj, patch: &mut Obj, schema: Schema<'_>) -> Result<(), PatchError> {
    let keys: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
    for key in keys {
        let Some(order) = patch.remove(&key) else { continue };
        let field_name = directive_target(&key, SET_ELEMENT_ORDER, ERR_SET_ELEMENT_ORDER)?;
        let Value::Array(order) = order else { return Err(bad_request(ERR_SET_ELEMENT_ORDER)) };
        let original_list = as_list(original.get(field_name))?;
        let patch_list = as_list(patch.get(field_name))?;
        let field = schema.and_then(|s| s.field(field_name));
        let merge_key = field.as_deref().and_then(|f| f.merge_key());
        validate_with_order(patch_list.as_deref().unwrap_or_default(), &order, merge_key)?;

        let merged = match (&original_list, patch_list.clone()) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => clean_list(p),
            (Some(o), Some(p)) => merge_list_field(o.clone(), p, field.as_deref(), false)?,
            (None, None) => continue,
        };
        let server_order = original_list.unwrap_or_default();
        let patch_list = patch_list.unwrap_or_default();
        let ordered = if element_kind(&server_order, &patch_list)?.is_none() {
            merged
        } else {
            let (patch_items, server_only) = partition(merged, &order, merge_key)?;
            normalize_element_order(patch_items, server_only, &order, &server_order, merge_key)?
        };
        original.insert(field_name.to_string(), Value::Array(ordered));
        patch.remove(field_name);
    }
    Ok(())
}

/// The patch list's items (deletions aside) must appear in `$setElementOrder` in the same relative
/// order (upstream's `validatePatchWithSetOrderList`).
fn validate_with_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if merge_key.is_some() && item.as_object().is_none() {
            return Err(not_a_map(item));
        }
        // Items with a directive (deletions, replace markers) are not ordered.
        if item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)) {
            continue;
        }
        items.push(item);
    }
    // Walk $setElementOrder once; every patch item must be met in turn.
    let mut pending = items.iter().peekable();
    for ordered in order {
        match pending.peek() {
            None => break,
            Some(item) if merge_key_equal(item, ordered, merge_key)? => {
                pending.next();
            }
            Some(_) => {}
        }
    }
    if pending.peek().is_some() {
        return Err(internal(format!(
            "the order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn merge_key_equal(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool, PatchError> {
    match merge_key {
        None => Ok(left == right),
        Some(mk) => Ok(require_key(left, mk)? == require_key(right, mk)?),
    }
}

/// The merge key value of a list element that must be a map carrying it.
fn require_key<'v>(item: &'v Value, mk: &str) -> Result<&'v Value, PatchError> {
    match item {
        Value::Object(m) => m.get(mk).ok_or_else(|| no_merge_key(m, mk)),
        other => Err(not_a_map(other)),
    }
}

fn unknown_patch_type(directive: &Value, map: &Value) -> PatchError {
    // Go prints the bare string, not its JSON form.
    let directive = directive.as_str().map_or_else(|| directive.to_string(), str::to_string);
    internal(format!("unknown patch type: {directive} in map: {map}"))
}

fn not_a_map(v: &Value) -> PatchError {
    internal(format!("expected a map[string]interface {{}}, but received a {}", json_kind(v)))
}

/// A list field: merged when the schema says `merge`, replaced otherwise (upstream's
/// `mergeSliceHandler`).
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Schema<'_>,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    let strategy = patch_strategy(field.and_then(|f| f.strategy()))?;
    if strategy == Some("merge") {
        let items = field.and_then(|f| f.items());
        merge_list(original, patch, items.as_deref(), field.and_then(|f| f.merge_key()), is_delete_list)
    } else if is_delete_list {
        Ok(delete_from_list(original, &patch))
    } else {
        Ok(clean_list(patch))
    }
}

/// The JSON type shared by every element of both lists, None when both are empty. Numbers are one
/// type here (upstream's int64/float64 split only decides replace-vs-merge for scalars, where both
/// end up taking the patch value).
fn element_kind(a: &[Value], b: &[Value]) -> Result<Option<&'static str>, PatchError> {
    let mut kind = None;
    for v in a.iter().chain(b) {
        let k = json_kind(v);
        if k == "array" {
            return Err(PatchError::StrategicInvalid(ERR_LIST_OF_LISTS.to_string()));
        }
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(internal(format!(
                    "list element types are not identical: {} {}",
                    Value::Array(a.to_vec()),
                    Value::Array(b.to_vec())
                )))
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Merges two lists of a `merge` field (upstream's `mergeSlice`): scalars union, maps merge by
/// `merge_key`; then the result is ordered patch-first-where-the-server-agrees.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Schema<'_>,
    merge_key: Option<&str>,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    let Some(kind) = element_kind(&original, &patch)? else { return Ok(original) };
    if kind != "object" {
        if is_delete_list {
            return Ok(delete_from_list(original, &patch));
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (patch_items, server_only) = partition(merged, &patch, None)?;
        return normalize_element_order(patch_items, server_only, &patch, &original, None);
    }
    let Some(mk) = merge_key else {
        return Err(internal("cannot merge lists without merge key".to_string()));
    };
    let (original, patch) = apply_list_directives(original, patch, mk)?;
    let merged = merge_by_key(original.clone(), &patch, mk, items)?;
    let (patch_items, server_only) = partition(merged, &patch, Some(mk))?;
    normalize_element_order(patch_items, server_only, &patch, &original, Some(mk))
}

/// `$deleteFromPrimitiveList/<field>`: drop every listed value.
fn delete_from_list(original: Vec<Value>, to_delete: &[Value]) -> Vec<Value> {
    original.into_iter().filter(|v| !to_delete.contains(v)).collect()
}

fn merge_key_of<'v>(item: &'v Value, mk: &str) -> Option<&'v Value> {
    item.as_object().and_then(|m| m.get(mk))
}

/// Applies the `$patch` elements of a merge list (upstream's `mergeSliceWithSpecialElements`):
/// `delete` removes the original elements with that merge key, `replace` makes the list exactly the
/// patch's other elements. Returns the new original and the patch without directive elements.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    mk: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.as_object().and_then(|m| m.get(DIRECTIVE)) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let key = require_key(&item, mk)?;
                original.retain(|o| merge_key_of(o, mk) != Some(key));
            }
            // Every other element is still pruned of directives, as upstream does.
            Some("replace") => replace = true,
            Some("merge") => {}
            _ => return Err(unknown_patch_type(directive, &item)),
        }
    }
    if replace {
        Ok((clean_list(plain), Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// Patch elements merge into the original element with the same merge key, or are appended.
fn merge_by_key(
    mut original: Vec<Value>,
    patch: &[Value],
    mk: &str,
    items: Schema<'_>,
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let Value::Object(item_map) = item else { return Err(not_a_map(item)) };
        let key = require_key(item, mk)?;
        match original.iter().position(|o| merge_key_of(o, mk) == Some(key)) {
            Some(i) => {
                if let Some(slot) = original.get_mut(i) {
                    let existing = match std::mem::take(slot) {
                        Value::Object(m) => m,
                        _ => Obj::new(),
                    };
                    *slot = Value::Object(merge_map(existing, item_map.clone(), items)?);
                }
            }
            None => {
                if let Some(v) = clean(item.clone()) {
                    original.push(v);
                }
            }
        }
    }
    Ok(original)
}

/// Splits `merged` into the elements present in `by` and the rest (server-only), keeping order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    mk: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let found = match mk {
            None => by.contains(&item),
            Some(mk) => {
                let key = require_key(&item, mk)?;
                by.iter().any(|b| merge_key_of(b, mk) == Some(key))
            }
        };
        if found {
            present.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok((present, server_only))
}

/// Position of `item` in `order`, by merge key for maps and by value for scalars.
fn position(order: &[Value], item: &Value, mk: Option<&str>) -> Option<usize> {
    match mk {
        Some(mk) => {
            let key = item.as_object().map(|m| m.get(mk));
            order.iter().position(|o| Some(o.as_object().and_then(|m| m.get(mk))) == key)
        }
        None => order.iter().position(|o| o == item),
    }
}

/// Upstream's `normalizeElementOrder`: the patch's elements in `patch_order`, the server-only ones
/// in `server_order`, then the two interleaved so each server-only element lands before the first
/// patch element that comes after it on the server.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    mk: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = sort_by_order(patch_items, patch_order, mk)?;
    let server_only = sort_by_order(server_only, server_order, mk)?;
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (position(server_order, l, mk), position(server_order, r, mk)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Stable sort by position in `order` (upstream's `normalizeSliceOrder`); elements it does not
/// list, and `$patch: delete` elements, go last.
fn sort_by_order(items: Vec<Value>, order: &[Value], mk: Option<&str>) -> Result<Vec<Value>, PatchError> {
    if let Some(mk) = mk {
        for item in items.iter().chain(order) {
            require_key(item, mk)?;
        }
    }
    let is_delete = |v: &Value| merge_key_of(v, DIRECTIVE).and_then(Value::as_str) == Some("delete");
    let (mut keep, deletes): (Vec<Value>, Vec<Value>) = items.into_iter().partition(|v| !is_delete(v));
    keep.sort_by_key(|v| position(order, v, mk).unwrap_or(usize::MAX));
    keep.extend(deletes);
    Ok(keep)
}
