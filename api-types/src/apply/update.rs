//! The field manager: who owns which fields (`metadata.managedFields`), updated by a write
//! (`Update`) or by an applied configuration (`Apply`), as structured-merge-diff's `merge.Updater`
//! and k8s.io/apiserver's field manager do it.

use serde_json::{json, Map, Value};

use super::fieldpath::{self, owns_under, Path, Set};
use super::ops::{self, ShapeError};
use super::schema::Node;

/// The metadata the server owns, which no manager is recorded for.
pub const SERVER_FIELDS: &[&str] = &[
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

/// The annotation client-side apply keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Who writes, and when.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: Option<&'a str>,
    /// The request's group-version (`apps/v1`).
    pub api_version: &'a str,
    /// RFC 3339, for the entry's `time`.
    pub time: &'a str,
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The configuration or the live object cannot be read by the schema.
    Shape(ShapeError),
    /// Fields owned by other managers would change: (the manager as upstream prints it, path).
    Conflicts(Vec<(String, Path)>),
}

impl From<ShapeError> for ApplyError {
    fn from(e: ShapeError) -> Self {
        ApplyError::Shape(e)
    }
}

impl ApplyError {
    /// Upstream's message for conflicts: `Apply failed with 1 conflict: conflict with "m" using
    /// apps/v1: .spec.replicas`, or one line per manager then per path for several.
    pub fn conflict_message(conflicts: &[(String, Path)]) -> String {
        if let [(m, p)] = conflicts {
            return format!("Apply failed with 1 conflict: conflict with {m}: {}", fieldpath::display(p));
        }
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in conflicts.iter().filter(|(cm, _)| cm == m) {
                lines.push(format!("- {}", fieldpath::display(p)));
            }
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    }
}

/// A managedFields entry as read: its fields set and everything else about it.
struct Entry {
    raw: Value,
    set: Set,
}

impl Entry {
    fn str(&self, k: &str) -> Option<&str> {
        self.raw.get(k).and_then(Value::as_str)
    }

    fn is(&self, w: &Writer<'_>, operation: &str) -> bool {
        self.str("manager").unwrap_or("") == w.manager
            && self.str("operation") == Some(operation)
            && self.str("subresource") == w.subresource
    }

    /// The manager as upstream's conflict messages print it.
    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.str("manager").unwrap_or(""));
        if let Some(sub) = self.str("subresource").filter(|s| !s.is_empty()) {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.str("operation") == Some("Update") {
            s.push_str(&format!(" using {}", self.str("apiVersion").unwrap_or("")));
        }
        s
    }

    fn into_value(mut self) -> Value {
        self.raw["fieldsType"] = json!("FieldsV1");
        self.raw["fieldsV1"] = fieldpath::encode(&self.set);
        self.raw
    }
}

fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.is_object())
        .map(|e| Entry { raw: e.clone(), set: fieldpath::decode(e.get("fieldsV1")) })
        .collect()
}

/// Whether a path is one that field sets leave out: apiVersion, kind, metadata itself and the
/// metadata the server owns (upstream's `stripMeta`).
fn stripped(p: &Path) -> bool {
    match p.as_slice() {
        [] => true,
        [f] => f == "f:apiVersion" || f == "f:kind" || f == "f:metadata",
        [m, f, ..] if m == "f:metadata" => f.strip_prefix("f:").is_some_and(|f| SERVER_FIELDS.contains(&f)),
        _ => false,
    }
}

/// Whether a path names a key field of a list-map item (`k:{"name":"c"}`, `f:name`): an item that
/// stays keeps its keys.
fn is_item_key(p: &Path) -> bool {
    match p.as_slice() {
        [.., item, f] => match (item.strip_prefix("k:"), f.strip_prefix("f:")) {
            (Some(keys), Some(f)) => {
                serde_json::from_str::<Map<String, Value>>(keys).is_ok_and(|k| k.contains_key(f))
            }
            _ => false,
        },
        _ => false,
    }
}

fn strip(set: Set) -> Set {
    set.into_iter().filter(|p| !stripped(p)).collect()
}

fn without_managed(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    o
}

/// Writes the entries into `obj`, Apply entries first (as upstream sorts them), dropping empty
/// ones; none at all removes the field.
fn set_entries(obj: &mut Value, entries: Vec<Entry>) {
    let mut list: Vec<Value> =
        entries.into_iter().filter(|e| !e.set.is_empty()).map(Entry::into_value).collect();
    list.sort_by_key(|e| e.get("operation").and_then(Value::as_str) != Some("Apply"));
    let Some(meta) = obj.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| json!({}))) else {
        return;
    };
    let Some(meta) = meta.as_object_mut() else { return };
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn new_entry(w: &Writer<'_>, operation: &str) -> Entry {
    let mut raw = Map::new();
    if !w.manager.is_empty() {
        raw.insert("manager".into(), json!(w.manager));
    }
    raw.insert("operation".into(), json!(operation));
    raw.insert("apiVersion".into(), json!(w.api_version));
    raw.insert("time".into(), json!(w.time));
    if let Some(sub) = w.subresource {
        raw.insert("subresource".into(), json!(sub));
    }
    Entry { raw: Value::Object(raw), set: Set::new() }
}

/// Records a non-apply write from `old` (None for a create) to `new` under the writer's
/// `Update` entry: the fields it added or changed become its own, and leave every other
/// manager; fields it removed leave everyone. `new`'s entries are `old`'s (or whatever `new`
/// carries, when `given`); a write that changes nothing changes no entry.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    given: bool,
    node: &Node<'_>,
    w: &Writer<'_>,
) -> Result<(), ShapeError> {
    let mut entries = entries_of(if given { &*new } else { old.unwrap_or(&Value::Null) });
    let before = old.map(without_managed).unwrap_or_else(|| json!({}));
    let after = without_managed(new);
    let c = ops::compare(&before, &after, node)?;
    let changed: Set = strip(c.added.union(&c.modified).cloned().collect());
    let removed = strip(c.removed);
    if changed.is_empty() && removed.is_empty() {
        set_entries(new, entries);
        return Ok(());
    }
    let gone = |p: &Path| removed.iter().chain(&changed).any(|r| p.starts_with(r));
    let mut mine = None;
    for (i, e) in entries.iter_mut().enumerate() {
        e.set.retain(|p| !gone(p));
        if e.is(w, "Update") {
            mine = Some(i);
        }
    }
    let mut entry = match mine {
        Some(i) => entries.remove(i),
        None => new_entry(w, "Update"),
    };
    entry.raw["time"] = json!(w.time);
    entry.raw["apiVersion"] = json!(w.api_version);
    entry.set.extend(changed);
    entries.push(entry);
    set_entries(new, entries);
    Ok(())
}

/// What an apply produced.
#[derive(Debug)]
pub struct Applied {
    /// The new object, with its `managedFields`.
    pub object: Value,
    /// Whether anything but the managed fields changed.
    pub changed: bool,
}

/// Applies `config` to `live` (an empty object for a create) for the writer: merges it, removes
/// the fields this manager applied before and no longer does (unless someone else owns them),
/// and moves ownership; fields owned by others whose value would change are conflicts unless
/// `force`. A `kubectl` apply over an object with client-side apply's annotation may take the
/// fields that annotation lists, and keeps the annotation up to date (upstream's upgrade path).
pub fn apply(
    live: &Value,
    config: &Value,
    node: &Node<'_>,
    w: &Writer<'_>,
    force: bool,
) -> Result<Applied, ApplyError> {
    match apply_once(live, config, node, w, force) {
        Err(ApplyError::Conflicts(conflicts)) if w.manager == "kubectl" && !force => {
            let allowed = last_applied_set(live, node);
            let rest: Vec<(String, Path)> =
                conflicts.iter().filter(|(_, p)| !allowed.contains(p)).cloned().collect();
            if rest.is_empty() {
                apply_once(live, config, node, w, true)
            } else {
                Err(ApplyError::Conflicts(rest))
            }
        }
        other => other,
    }
    .map(|mut done| {
        if w.manager == "kubectl" && keep_last_applied(live, config, &mut done.object) {
            done.changed = true;
        }
        done
    })
}

/// Keeps client-side apply's annotation in step with a `kubectl` apply (upstream's
/// lastAppliedUpdater), so a later `kubectl apply` diffs against what was applied. Whether it
/// changed.
fn keep_last_applied(live: &Value, config: &Value, object: &mut Value) -> bool {
    if last_applied(live).is_none() {
        return false;
    }
    let mut cfg = config.clone();
    if let Some(a) = cfg.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED);
    }
    let text = format!("{cfg}\n");
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return false };
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    let Some(a) = annotations.as_object_mut() else { return false };
    if a.get(LAST_APPLIED).and_then(Value::as_str) == Some(text.as_str()) {
        return false;
    }
    a.insert(LAST_APPLIED.into(), json!(text));
    true
}

fn last_applied(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?.get(LAST_APPLIED)?.as_str()
}

fn last_applied_set(live: &Value, node: &Node<'_>) -> Set {
    last_applied(live)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| ops::to_set(&v, node).ok())
        .map(strip)
        .unwrap_or_default()
}

fn apply_once(
    live: &Value,
    config: &Value,
    node: &Node<'_>,
    w: &Writer<'_>,
    force: bool,
) -> Result<Applied, ApplyError> {
    let mut entries = entries_of(live);
    let live_obj = without_managed(live);
    let new_set = strip(ops::to_set(config, node)?);
    let mut merged = ops::merge(&live_obj, config, node)?;
    let mine = entries.iter().position(|e| e.is(w, "Apply"));
    let last = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    // Everything anyone owns once this apply has taken its fields.
    let mut owned: Set = new_set.clone();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != mine {
            owned.extend(e.set.iter().cloned());
        }
    }
    // Fields applied last time and not now go, with the named fields above them, unless
    // someone still owns something there.
    let mut drop = Set::new();
    for p in &last {
        for n in (1..=p.len()).rev() {
            let prefix = p[..n].to_vec();
            if n < p.len() && !prefix.last().is_some_and(|s| s.starts_with("f:")) {
                continue;
            }
            if stripped(&prefix) || owns_under(&owned, &prefix) || is_item_key(&prefix) {
                break;
            }
            drop.insert(prefix);
        }
    }
    // The shortest paths suffice: removing a field removes what is below it.
    let drop: Set = drop.iter().filter(|p| !(1..p.len()).any(|n| drop.contains(&p[..n]))).cloned().collect();
    ops::remove(&mut merged, &drop, node)?;

    let c = ops::compare(&live_obj, &merged, node)?;
    let touched: Set = c.added.union(&c.modified).cloned().collect();
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == mine {
            continue;
        }
        for p in e.set.intersection(&touched) {
            conflicts.push((e.printed(), p.clone()));
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort();
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            e.set.retain(|p| !touched.contains(p) && !c.removed.contains(p));
        }
    }
    let changed = merged != live_obj;
    let mut entry = match mine {
        Some(i) => entries.remove(i),
        None => new_entry(w, "Apply"),
    };
    if changed || entry.set != new_set {
        entry.raw["time"] = json!(w.time);
    }
    entry.raw["apiVersion"] = json!(w.api_version);
    entry.set = new_set;
    entries.insert(0, entry);
    set_entries(&mut merged, entries);
    Ok(Applied { object: merged, changed })
}
