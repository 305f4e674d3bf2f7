//! RFC 6902 JSON patch, written here rather than taken from a crate so that errors split the way
//! upstream splits them: a body that is not a list of objects is a decode error (400), while an
//! operation that is unknown, incomplete or fails to apply is an apply error (422), because
//! upstream's evanphx/json-patch decodes operations as plain maps and only inspects them on apply.
//! Messages follow evanphx/json-patch v4's wording.

use serde_json::{Map, Value};

use super::{PatchError, MAX_JSON_PATCH_OPERATIONS};

pub(super) fn apply(mut doc: Value, patch: &[u8]) -> Result<Value, PatchError> {
    let ops: Vec<Map<String, Value>> =
        serde_json::from_slice(patch).map_err(|e| PatchError::MalformedPatch(e.to_string()))?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations(ops.len()));
    }
    for op in &ops {
        apply_op(&mut doc, op).map_err(PatchError::JsonPatchFailed)?;
    }
    Ok(doc)
}

fn apply_op(doc: &mut Value, op: &Map<String, Value>) -> Result<(), String> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("unknown");
    let path = string_field(op, "path")?;
    // A missing "value" is null, as in evanphx/json-patch.
    let value = op.get("value").cloned().unwrap_or(Value::Null);
    match kind {
        "add" => add(doc, path, value).map_err(|e| format!("add operation does not apply: {e}")),
        "remove" => remove(doc, path).map(drop).map_err(|e| format!("remove operation does not apply: {e}")),
        "replace" => replace(doc, path, value).map_err(|e| format!("replace operation does not apply: {e}")),
        "move" => {
            let from = string_field(op, "from")?;
            if path != from && path.starts_with(from) && path[from.len()..].starts_with('/') {
                return Err(format!(
                    "move operation does not apply: cannot move {from} into its own child {path}"
                ));
            }
            let moved = remove(doc, from).map_err(|e| format!("move operation does not apply: {e}"))?;
            add(doc, path, moved).map_err(|e| format!("move operation does not apply: {e}"))
        }
        "copy" => {
            let from = string_field(op, "from")?;
            let copied = get(doc, from)
                .map_err(|e| format!("copy operation does not apply: {e}"))?
                .ok_or_else(|| format!("copy operation does not apply: doc is missing from path: {from}"))?
                .clone();
            add(doc, path, copied).map_err(|e| format!("copy operation does not apply: {e}"))
        }
        "test" => test(doc, path, &value),
        other => Err(format!("Unexpected kind: {other}")),
    }
}

fn string_field<'a>(op: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    op.get(name).and_then(Value::as_str).ok_or_else(|| format!("operation missing {name} field"))
}

/// Splits a JSON pointer (RFC 6901) into unescaped tokens. "" is the whole document.
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("JSON pointer must be empty or start with a \"/\": {path:?}"));
    };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

/// An array index token: digits only, no leading zero (RFC 6901), below `len` (or equal when
/// `allow_end`, for inserting at the end).
fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let idx = if valid { token.parse::<usize>().ok() } else { None };
    match idx {
        Some(i) if i < len || (allow_end && i == len) => Ok(i),
        _ => Err(format!("Unable to access invalid index: {token}")),
    }
}

/// The value at `path`, Ok(None) when some step of it is absent.
fn get<'a>(doc: &'a Value, path: &str) -> Result<Option<&'a Value>, String> {
    let mut cur = doc;
    for token in tokens(path)? {
        let next = match cur {
            Value::Object(map) => map.get(&token),
            Value::Array(items) => index(&token, items.len(), false).ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// The container holding the last token of `path`, and that token. Err when the path is the root
/// (callers handle it) or the container is missing.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut toks = tokens(path)?;
    let last = toks.pop().ok_or_else(|| "the document root has no parent".to_string())?;
    let mut cur = doc;
    for token in toks {
        let next = match cur {
            Value::Object(map) => map.get_mut(&token),
            Value::Array(items) => {
                let len = items.len();
                index(&token, len, false).ok().and_then(move |i| items.get_mut(i))
            }
            _ => None,
        };
        cur = next.ok_or_else(|| format!("doc is missing path: {path:?}: missing value"))?;
    }
    Ok((cur, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let i = if last == "-" { items.len() } else { index(&last, items.len(), true)? };
            items.insert(i, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path:?}: missing value")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    if path.is_empty() {
        return Ok(std::mem::take(doc));
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(map) => {
            map.remove(&last).ok_or_else(|| format!("doc is missing key: {path:?}: missing value"))
        }
        Value::Array(items) => {
            let i = index(&last, items.len(), false)?;
            Ok(items.remove(i))
        }
        _ => Err(format!("doc is missing path: {path:?}: missing value")),
    }
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    let slot = match container {
        Value::Object(map) => map.get_mut(&last),
        Value::Array(items) => {
            let i = index(&last, items.len(), false)?;
            items.get_mut(i)
        }
        _ => None,
    };
    let slot = slot.ok_or_else(|| format!("doc is missing key: {path:?}: missing value"))?;
    *slot = value;
    Ok(())
}

fn test(doc: &Value, path: &str, expected: &Value) -> Result<(), String> {
    let failed = || format!("testing value {path} failed: test failed");
    match get(doc, path).map_err(|e| format!("test operation does not apply: {e}"))? {
        Some(actual) if json_equal(actual, expected) => Ok(()),
        // evanphx/json-patch lets `null` match an absent path; kubectl users rely on tests like
        // {"op":"test","path":"/metadata/annotations/x","value":null}.
        None if expected.is_null() => Ok(()),
        _ => Err(failed()),
    }
}

/// Deep equality in which numbers compare by value, so `1` equals `1.0` as it does for upstream
/// (which decodes every number to float64).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}
