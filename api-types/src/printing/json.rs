//! Tolerant readers over stored JSON objects. Printing must never fail or panic: any field may be
//! missing, `null`, or of the wrong type, and each reader then yields what upstream's Go structs hold
//! for an absent field (zero value, nil pointer, empty slice or map).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

/// The value at a path of object keys, if every step is an object holding the next key.
pub(crate) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.as_object()?.get(*key))
}

/// Go's nil-pointer test: the field is present and not `null`.
pub(crate) fn is_set(v: &Value, path: &[&str]) -> bool {
    get(v, path).is_some_and(|x| !x.is_null())
}

/// A present object field (Go's non-nil pointer to a struct). Wrong types count as absent.
pub(crate) fn obj<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(v, path)?.as_object()
}

/// A string field, `""` when absent (Go's zero value).
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    opt_str(v, path).unwrap_or("")
}

/// A `*string` field: `None` when absent, `Some("")` when present but empty.
pub(crate) fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path)?.as_str()
}

/// An integer field. JSON numbers written as `3.0` still count, as Go's decoder accepts them.
pub(crate) fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    let x = get(v, path)?;
    x.as_i64().or_else(|| x.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

pub(crate) fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

pub(crate) fn bool_at(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// An array field, empty when absent.
pub(crate) fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The number of entries of a map or list field (`len(obj.Data)` upstream).
pub(crate) fn len_at(v: &Value, path: &[&str]) -> i64 {
    let n = match get(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `metav1.Time`/`MicroTime` field. `None` for absent, unparseable, or Go's zero time
/// (`0001-01-01T00:00:00Z`), which upstream treats as unset (`IsZero`).
pub(crate) fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    let ts: Timestamp = opt_str(v, path)?.parse().ok()?;
    // Go's zero time.Time is year 1, January 1, 00:00:00 UTC.
    const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;
    (ts.as_second() != GO_ZERO_TIME_SECONDS || ts.subsec_nanosecond() != 0).then_some(ts)
}

pub(crate) fn name(v: &Value) -> &str {
    str_at(v, &["metadata", "name"])
}

pub(crate) fn creation(v: &Value) -> Option<Timestamp> {
    time_at(v, &["metadata", "creationTimestamp"])
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, comma-joined, `<none>` when empty.
pub(crate) fn format_labels(v: Option<&Value>) -> String {
    let Some(map) = v.and_then(Value::as_object) else {
        return "<none>".to_string();
    };
    // serde_json's Map iterates in key order (no preserve_order feature here), but sort anyway so
    // the output never depends on that feature being off.
    let mut pairs: Vec<(&str, &str)> =
        map.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key, `k=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`. A nil or empty selector prints as `""` (Nothing/Everything).
/// `Err` where upstream's conversion errors (bad operator, wrong value count, wrong types).
pub(crate) fn label_selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let sel = sel.as_object().ok_or(())?;
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").filter(|x| !x.is_null()) {
        for (k, v) in labels.as_object().ok_or(())? {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().ok_or(())?)));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").filter(|x| !x.is_null()) {
        for e in exprs.as_array().ok_or(())? {
            let key = e.get("key").and_then(Value::as_str).ok_or(())?;
            let mut values = match e.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => {
                    a.iter().map(|x| x.as_str().ok_or(())).collect::<Result<Vec<_>, _>>()?
                }
                Some(_) => return Err(()),
            };
            // In/NotIn print their values as a sorted set.
            values.sort_unstable();
            values.dedup();
            let text = match e.get("operator").and_then(Value::as_str) {
                Some("In") if !values.is_empty() => format!("{key} in ({})", values.join(",")),
                Some("NotIn") if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
                Some("Exists") if values.is_empty() => key.to_string(),
                Some("DoesNotExist") if values.is_empty() => format!("!{key}"),
                _ => return Err(()),
            };
            reqs.push((key.to_string(), text));
        }
    }
    // Upstream sorts requirements by key only; a stable sort keeps ties in input order.
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: like the above but `<none>` when empty and `<error>` on failure.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    match label_selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// `layoutContainerCells`: container names and images, each comma-joined.
pub(crate) fn container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// `listWithMoreString`: the first `max` items, then `+ N more...`; `<unset>` when empty.
pub(crate) fn list_with_more(list: &[String], count: usize, max: usize) -> String {
    let ret = list.join(",");
    if count > max {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readers_tolerate_wrong_types() {
        let v = json!({"a": {"s": 5, "n": "x", "f": 3.0, "b": "true", "arr": {}}, "t": 7});
        assert_eq!(str_at(&v, &["a", "s"]), "");
        assert_eq!(opt_int(&v, &["a", "n"]), None);
        assert_eq!(opt_int(&v, &["a", "f"]), Some(3));
        assert!(!bool_at(&v, &["a", "b"]));
        assert!(arr_at(&v, &["a", "arr"]).is_empty());
        assert_eq!(get(&v, &["t", "x"]), None);
        assert_eq!(len_at(&json!("str"), &["data"]), 0);
        assert_eq!(time_at(&json!({"t": "yesterday"}), &["t"]), None);
        assert_eq!(time_at(&json!({"t": "0001-01-01T00:00:00Z"}), &["t"]), None);
        assert!(time_at(&json!({"t": "2024-01-01T00:00:00.123456Z"}), &["t"]).is_some());
    }

    #[test]
    fn labels_and_selectors_format_like_upstream() {
        assert_eq!(format_labels(Some(&json!({"tier": "web", "app": "nginx"}))), "app=nginx,tier=web");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");

        let sel = json!({
            "matchLabels": {"app": "nginx"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "zone", "operator": "DoesNotExist"},
                {"key": "beta", "operator": "Exists"},
                {"key": "tier", "operator": "NotIn", "values": ["db"]}
            ]
        });
        assert_eq!(
            label_selector_string(Some(&sel)),
            Ok("app=nginx,beta,env in (dev,prod),tier notin (db),!zone".to_string())
        );
        assert_eq!(label_selector_string(None), Ok(String::new()));
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_label_selector(Some(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]}))),
            "<error>"
        );
        assert_eq!(
            format_label_selector(Some(
                &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
            )),
            "<error>"
        );
        assert_eq!(format_label_selector(Some(&json!({"matchLabels": {"a": 1}}))), "<error>");
    }

    #[test]
    fn list_with_more_caps_at_max() {
        let l = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(list_with_more(&l(&[]), 0, 3), "<unset>");
        assert_eq!(list_with_more(&l(&["a", "b"]), 2, 3), "a,b");
        assert_eq!(list_with_more(&l(&["a", "b", "c"]), 5, 3), "a,b,c + 2 more...");
    }
}
