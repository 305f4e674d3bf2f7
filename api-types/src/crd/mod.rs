//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): what a CRD object defines, as the pure
//! functions the API server calls.
//!
//! - this file: a CRD's served versions as [`CustomResource`]s (interned `&'static`, see below),
//!   validation of the CRD object itself with upstream's messages, its status (`NamesAccepted`,
//!   `Established`, `acceptedNames`, `storedVersions`), Kubernetes version priority.
//! - `schema.rs`: structural schemas — the CRD-time structural check, and on custom resources
//!   pruning of unknown fields, defaulting and validation with upstream's messages.
//! - `printing.rs`: `additionalPrinterColumns` (JSONPath) as the `Table` kubectl prints.
//! - `openapi.rs`: the OpenAPI v3 definitions and document of a CRD's group-version (kubectl
//!   explain); the definitions are the schema source OpenAPI v2 can use too.
//!
//! Interning: the API server's call sites hold resources as `&'static ResourceDef`. A served CRD
//! version becomes one by [`intern`]: each distinct definition (names, scope, subresources, schema,
//! columns) is leaked once and reused whenever it is seen again, by any API server in the process.
//! The table only grows, by the number of distinct CRD definitions the process ever saw; which
//! entries a server actually serves is its own [`crate::resources::Registry`]'s business.

pub mod cel;
mod cel_lib;
mod cel_time;
pub mod openapi;
pub mod printing;
pub mod schema;

use std::sync::Mutex;

use serde_json::{json, Value};

use crate::resources::{ResourceDef, Subresource};

/// The finalizer that holds a CRD until its custom resources are gone (upstream's name).
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One validation failure, in upstream's field-error terms (the API server turns it into a
/// `StatusCause`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    pub field: String,
    /// The message after `<field>: `, e.g. `Required value`.
    pub message: String,
}

impl Violation {
    pub fn required(field: impl Into<String>, detail: &str) -> Violation {
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        Violation { reason: "FieldValueRequired", field: field.into(), message }
    }
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Violation {
        Violation {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", go_value(value)),
        }
    }
    pub fn type_invalid(field: impl Into<String>, value: &Value, detail: &str) -> Violation {
        Violation {
            reason: "FieldValueTypeInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", go_value(value)),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[String]) -> Violation {
        let list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        Violation {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {}: supported values: {list}", go_value(value)),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Violation {
        Violation {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
    pub fn too_long(field: impl Into<String>, max: i64) -> Violation {
        let unit = if max == 1 { "byte" } else { "bytes" };
        Violation {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} {unit}"),
        }
    }
    pub fn too_many(field: impl Into<String>, actual: usize, max: i64) -> Violation {
        Violation {
            reason: "FieldValueTooMany",
            field: field.into(),
            message: format!("Too many: {actual}: must have at most {max} items"),
        }
    }
}

/// A value as Go's field errors print it (`%#v`-like for strings: quoted; numbers and booleans
/// bare).
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".into(),
        other => other.to_string(),
    }
}

/// `spec.scale`: where a custom resource keeps its replicas and selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// `.spec.replicas`-style JSON path.
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// What one served version of a CRD defines, in owned form (what interning compares).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub crd_name: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// The version's `openAPIV3Schema` (Null when it has none).
    pub schema: Value,
    pub columns: Vec<PrinterColumn>,
    /// The storage version (objects are written with it; with conversion None all versions share
    /// one storage and differ only in `apiVersion`).
    pub storage_version: String,
    /// The CRD is being deleted: its custom resources may be read and deleted, not created.
    pub terminating: bool,
    /// The version's `selectableFields` as field-selector keys (`spec.color` for `.spec.color`).
    pub selectable_fields: Vec<String>,
}

/// One served version of a CRD: its resource entry plus everything the API server needs.
#[derive(Debug)]
pub struct CustomResource {
    pub def: ResourceDef,
    pub spec: Spec,
}

fn interned() -> &'static Mutex<Vec<&'static CustomResource>> {
    static TABLE: Mutex<Vec<&'static CustomResource>> = Mutex::new(Vec::new());
    &TABLE
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(list: &[String]) -> &'static [&'static str] {
    Box::leak(list.iter().map(|s| leak(s)).collect::<Vec<_>>().into_boxed_slice())
}

/// The interned resource of `spec`: the same `&'static` for equal specs (see the module doc).
pub fn intern(spec: Spec) -> &'static CustomResource {
    let mut table = match interned().lock() {
        Ok(t) => t,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(hit) = table.iter().find(|c| c.spec == spec) {
        return hit;
    }
    let mut subs = Vec::new();
    if spec.status {
        subs.push(Subresource::Status);
    }
    if spec.scale.is_some() {
        subs.push(Subresource::Scale);
    }
    let def = ResourceDef {
        group: leak(&spec.group),
        version: leak(&spec.version),
        kind: leak(&spec.kind),
        plural: leak(&spec.plural),
        singular: leak(&spec.singular),
        namespaced: spec.namespaced,
        etcd_prefix: leak(&format!("/registry/{}/{}", spec.group, spec.plural)),
        short_names: leak_list(&spec.short_names),
        categories: leak_list(&spec.categories),
        subresources: Box::leak(subs.into_boxed_slice()),
        stored: true,
        field_selectors: leak_list(&spec.selectable_fields),
    };
    let cr: &'static CustomResource = Box::leak(Box::new(CustomResource { def, spec }));
    table.push(cr);
    cr
}

/// The custom resource behind a resource entry, None for built-ins.
pub fn custom(res: &ResourceDef) -> Option<&'static CustomResource> {
    // Built-ins live in the static table; only interned entries can match.
    if crate::resources::RESOURCES.as_ptr_range().contains(&(res as *const ResourceDef)) {
        return None;
    }
    let table = interned().lock().ok()?;
    table.iter().copied().find(|c| std::ptr::eq(&c.def, res))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strings_at(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The resources a stored CRD serves: one per served version, from its accepted names. None while
/// it is not Established.
pub fn served(crd: &Value) -> Vec<&'static CustomResource> {
    let established = crd.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| {
        c.iter().any(|c| str_at(c, "/type") == "Established" && str_at(c, "/status") == "True")
    });
    if !established {
        return Vec::new();
    }
    let names = crd.pointer("/status/acceptedNames").filter(|n| n.is_object()).unwrap_or(&Value::Null);
    let group = str_at(crd, "/spec/group");
    let plural = str_at(names, "/plural");
    let kind = str_at(names, "/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match str_at(names, "/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let list_kind = match str_at(names, "/listKind") {
        "" => format!("{kind}List"),
        s => s.to_string(),
    };
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| str_at(v, "/name").to_string())
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in &versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let scale = v.pointer("/subresources/scale").filter(|s| s.is_object()).map(|s| ScalePaths {
            spec_replicas: str_at(s, "/specReplicasPath").to_string(),
            status_replicas: str_at(s, "/statusReplicasPath").to_string(),
            label_selector: s.get("labelSelectorPath").and_then(Value::as_str).map(str::to_string),
        });
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: str_at(c, "/name").to_string(),
                        ty: str_at(c, "/type").to_string(),
                        format: str_at(c, "/format").to_string(),
                        description: str_at(c, "/description").to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: str_at(c, "/jsonPath").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(intern(Spec {
            crd_name: str_at(crd, "/metadata/name").to_string(),
            group: group.to_string(),
            version: str_at(v, "/name").to_string(),
            kind: kind.to_string(),
            list_kind: list_kind.clone(),
            plural: plural.to_string(),
            singular: singular.clone(),
            namespaced: str_at(crd, "/spec/scope") == "Namespaced",
            short_names: strings_at(names, "/shortNames"),
            categories: strings_at(names, "/categories"),
            status: v.pointer("/subresources/status").is_some_and(Value::is_object),
            scale,
            schema: v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or(Value::Null),
            columns,
            storage_version: storage_version.clone(),
            terminating: crd.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()),
            selectable_fields: v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| p.strip_prefix('.').unwrap_or(p).to_string())
                .collect(),
        }));
    }
    out
}

/// Kubernetes version priority (`v1` > `v1beta2` > `v1beta1` > `v1alpha1` > non-Kubernetes
/// versions alphabetically), as `Ordering` for sorting most preferred first.
pub fn version_priority(a: &&str, b: &&str) -> std::cmp::Ordering {
    fn rank(v: &str) -> (u8, u64, u64, String) {
        let parsed = v.strip_prefix('v').and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let major: u64 = digits.parse().ok()?;
            let tail = &rest[digits.len()..];
            if tail.is_empty() {
                return Some((3, major, 0));
            }
            for (label, level) in [("beta", 2u8), ("alpha", 1u8)] {
                if let Some(n) = tail.strip_prefix(label) {
                    if let Ok(minor) = n.parse::<u64>() {
                        return Some((level, major, minor));
                    }
                }
            }
            None
        });
        match parsed {
            Some((level, major, minor)) => (level, major, minor, String::new()),
            None => (0, 0, 0, v.to_string()),
        }
    }
    let (ra, rb) = (rank(a), rank(b));
    // Higher level, major, minor first; non-Kubernetes versions alphabetically.
    rb.0.cmp(&ra.0).then(rb.1.cmp(&ra.1)).then(rb.2.cmp(&ra.2)).then(ra.3.cmp(&rb.3))
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Upstream's validation of a CRD (`ValidateCustomResourceDefinition`), the parts kplane serves:
/// name, group, scope, names, versions (one storage version), conversion, per-version schemas
/// (structural), subresources and printer columns.
pub fn validate_crd(crd: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let name = str_at(crd, "/metadata/name");
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    if !name.is_empty() && name != format!("{plural}.{group}") {
        out.push(Violation::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        out.push(Violation::required("spec.group", ""));
    } else if !is_dns1123_subdomain(group) {
        out.push(Violation::invalid(
            "spec.group",
            &json!(group),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    } else if !group.contains('.') {
        out.push(Violation::invalid("spec.group", &json!(group), "should be a domain with at least one dot"));
    }
    match str_at(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => out.push(Violation::required("spec.scope", "")),
        other => out.push(Violation::not_supported(
            "spec.scope",
            &json!(other),
            &["Cluster".to_string(), "Namespaced".to_string()],
        )),
    }
    // Names.
    let kind = str_at(crd, "/spec/names/kind");
    if plural.is_empty() {
        out.push(Violation::required("spec.names.plural", ""));
    } else if !is_dns1123_label(plural) {
        out.push(Violation::invalid("spec.names.plural", &json!(plural), DNS1123_LABEL_MSG));
    }
    let singular = str_at(crd, "/spec/names/singular");
    if !singular.is_empty() && !is_dns1123_label(singular) {
        out.push(Violation::invalid("spec.names.singular", &json!(singular), DNS1123_LABEL_MSG));
    }
    if kind.is_empty() {
        out.push(Violation::required("spec.names.kind", ""));
    }
    let list_kind = str_at(crd, "/spec/names/listKind");
    if !list_kind.is_empty() && list_kind == kind {
        out.push(Violation::invalid(
            "spec.names.listKind",
            &json!(list_kind),
            "kind and listKind may not be the same",
        ));
    }
    for (i, s) in strings_at(crd, "/spec/names/shortNames").iter().enumerate() {
        if !is_dns1123_label(s) {
            out.push(Violation::invalid(format!("spec.names.shortNames[{i}]"), &json!(s), DNS1123_LABEL_MSG));
        }
    }
    for (i, s) in strings_at(crd, "/spec/names/categories").iter().enumerate() {
        if !is_dns1123_label(s) {
            out.push(Violation::invalid(format!("spec.names.categories[{i}]"), &json!(s), DNS1123_LABEL_MSG));
        }
    }
    // Conversion: only None.
    match crd.pointer("/spec/conversion/strategy").and_then(Value::as_str) {
        None | Some("None") => {}
        Some("Webhook") => out.push(Violation::forbidden(
            "spec.conversion.strategy",
            "Webhook conversion is not supported by kplane (only \"None\")",
        )),
        Some(other) => out.push(Violation::not_supported(
            "spec.conversion.strategy",
            &json!(other),
            &["None".to_string(), "Webhook".to_string()],
        )),
    }
    // Versions.
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        out.push(Violation::invalid(
            "spec.versions",
            &json!("null"),
            "must have exactly one version marked as storage version",
        ));
        return out;
    }
    let storage = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if storage != 1 {
        out.push(Violation::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    // Upstream converts a v1 CRD whose versions all have the same schema into one top-level
    // `spec.validation`, so its schema errors are reported there; per version otherwise.
    let first = versions[0].pointer("/schema/openAPIV3Schema").filter(|s| !s.is_null());
    let hoisted = first.is_some() && versions.iter().all(|v| v.pointer("/schema/openAPIV3Schema") == first);
    if let Some(s) = first.filter(|_| hoisted) {
        out.extend(schema_errors(s, "spec.validation.openAPIV3Schema"));
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        let vname = str_at(v, "/name");
        if vname.is_empty() {
            out.push(Violation::required(format!("{at}.name"), ""));
        } else if !is_dns1123_label(vname) {
            out.push(Violation::invalid(format!("{at}.name"), &json!(vname), DNS1123_LABEL_MSG));
        } else if seen.contains(&vname) {
            out.push(Violation::invalid("spec.versions", &json!(vname), "must appear only once"));
        }
        seen.push(vname);
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => {
                out.push(Violation::required(format!("{at}.schema.openAPIV3Schema"), "schemas are required"))
            }
            Some(_) if hoisted => {}
            Some(s) => out.extend(schema_errors(s, &format!("{at}.schema.openAPIV3Schema"))),
        }
        if let Some(scale) = v.pointer("/subresources/scale").filter(|s| s.is_object()) {
            for field in ["specReplicasPath", "statusReplicasPath"] {
                let p = str_at(scale, &format!("/{field}"));
                let fp = format!("{at}.subresources.scale.{field}");
                if p.is_empty() {
                    out.push(Violation::required(fp, ""));
                } else if !p.starts_with('.') {
                    out.push(Violation::invalid(fp, &json!(p), "should be a json path under .spec or .status"));
                }
            }
        }
        if let Some(fields) = v.get("selectableFields").and_then(Value::as_array).filter(|f| !f.is_empty()) {
            match v.pointer("/schema/openAPIV3Schema").filter(|s| !s.is_null()) {
                None => out.push(Violation::invalid(
                    format!("{at}.selectableFields"),
                    &json!(""),
                    "selectableFields may only be set when version.schema.openAPIV3Schema is not included",
                )),
                Some(schema) => {
                    out.extend(validate_selectable_fields(fields, schema, &format!("{at}.selectableFields")))
                }
            }
        }
        for (j, c) in
            v.get("additionalPrinterColumns").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let cat = format!("{at}.additionalPrinterColumns[{j}]");
            if str_at(c, "/name").is_empty() {
                out.push(Violation::required(format!("{cat}.name"), ""));
            }
            let ty = str_at(c, "/type");
            let types = ["integer", "number", "string", "boolean", "date"];
            if ty.is_empty() {
                out.push(Violation::required(format!("{cat}.type"), ""));
            } else if !types.contains(&ty) {
                let allowed: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                out.push(Violation::not_supported(format!("{cat}.type"), &json!(ty), &allowed));
            }
            let jp = str_at(c, "/jsonPath");
            if jp.is_empty() {
                out.push(Violation::required(format!("{cat}.JSONPath"), ""));
            } else if let Err(e) = printing::parse_path(jp) {
                out.push(Violation::invalid(format!("{cat}.JSONPath"), &json!(jp), &e));
            }
        }
    }
    out
}

/// Upstream's limit on a version's `selectableFields`.
const MAX_SELECTABLE_FIELDS: usize = 8;

/// Upstream's `validateSelectableFields`: each `jsonPath` given, unique, a dotted path (no array
/// notation) to a field of the schema outside `metadata` whose type is string, boolean or integer.
fn validate_selectable_fields(fields: &[Value], schema: &Value, at: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    if fields.len() > MAX_SELECTABLE_FIELDS {
        out.push(Violation::too_many(at, fields.len(), MAX_SELECTABLE_FIELDS as i64));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let jp = str_at(f, "/jsonPath");
        let field = format!("{at}[{i}].jsonPath");
        if jp.is_empty() {
            out.push(Violation::required(format!("{at}[{i}].jsonPath"), ""));
            continue;
        }
        if seen.contains(&jp) {
            out.push(Violation {
                reason: "FieldValueDuplicate",
                field: field.clone(),
                message: format!("Duplicate value: {jp:?}"),
            });
        }
        seen.push(jp);
        match field_path_schema(jp, schema) {
            Err(e) => out.push(Violation::invalid(&field, &json!(jp), &format!("is an invalid path: {e}"))),
            Ok((root, found)) => {
                if root == "metadata" {
                    out.push(Violation::invalid(&field, &json!(jp), "must not point to fields in metadata"));
                }
                if !matches!(str_at(found, "/type"), "string" | "boolean" | "integer") {
                    out.push(Violation::invalid(
                        &field,
                        &json!(jp),
                        "must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed.",
                    ));
                }
            }
        }
    }
    out
}

/// Walks a `.a.b` JSON path through a structural schema as upstream's `cel.ValidFieldPath` (array
/// notation off) does: the path's first segment and the schema it ends at, or upstream's error.
fn field_path_schema<'a>(path: &'a str, schema: &'a Value) -> Result<(&'a str, &'a Value), String> {
    let mut tokens = Vec::new();
    let mut start = 0;
    for (i, c) in path.char_indices() {
        if matches!(c, '.' | '[' | ']') {
            if start < i {
                tokens.push(&path[start..i]);
            }
            tokens.push(&path[i..i + 1]);
            start = i + 1;
        }
    }
    if start < path.len() {
        tokens.push(&path[start..]);
    }
    let mut tokens = tokens.into_iter();
    let mut cur = schema;
    let mut root = None;
    while let Some(tok) = tokens.next() {
        match tok {
            "[" => return Err("array notation is not allowed".into()),
            "." => {
                let Some(name) = tokens.next() else { return Err("unexpected end of JSON path".into()) };
                let next = match cur.get("properties").and_then(Value::as_object) {
                    Some(props) => props.get(name),
                    None => cur.get("additionalProperties").filter(|a| a.is_object()),
                };
                cur = next.ok_or_else(|| "does not refer to a valid field".to_string())?;
                root.get_or_insert(name);
            }
            other => return Err(format!("expected [ or . but got: {other}")),
        }
    }
    Ok((root.unwrap_or(""), cur))
}

/// A version's schema errors: structural ones, then (if structural) its CEL rules'.
fn schema_errors(s: &Value, at: &str) -> Vec<Violation> {
    let structural = schema::structural_errors(s, at);
    if !structural.is_empty() {
        return structural;
    }
    cel::check_schema(s, at)
}

/// Upstream's immutable-field checks on update: the scope may not change, and the storage version
/// of stored objects stays listed.
pub fn validate_crd_update(new: &Value, old: &Value) -> Vec<Violation> {
    let mut out = validate_crd(new);
    let (ns, os) = (str_at(new, "/spec/scope"), str_at(old, "/spec/scope"));
    if ns != os && !os.is_empty() {
        out.push(Violation::invalid("spec.scope", &json!(ns), "field is immutable"));
    }
    if str_at(new, "/spec/group") != str_at(old, "/spec/group") {
        out.push(Violation::invalid("spec.group", &json!(str_at(new, "/spec/group")), "field is immutable"));
    }
    out
}

/// The names a CRD asks for, with upstream's defaults (singular: lowercased kind; listKind:
/// `<Kind>List`).
pub fn default_names(crd: &mut Value) {
    let kind = str_at(crd, "/spec/names/kind").to_string();
    if let Some(names) = crd.pointer_mut("/spec/names").and_then(Value::as_object_mut) {
        if names.get("singular").and_then(Value::as_str).unwrap_or("").is_empty() && !kind.is_empty() {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if names.get("listKind").and_then(Value::as_str).unwrap_or("").is_empty() && !kind.is_empty() {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        if !spec.contains_key("conversion") {
            spec.insert("conversion".into(), json!({"strategy": "None"}));
        }
    }
}

/// The status a CRD gets from the server: its names accepted (unless `taken` says another CRD
/// holds them), Established, and its storage version recorded. `now` is the RFC 3339 time for new
/// condition transitions; conditions whose status is unchanged keep their old time.
pub fn status_for(crd: &Value, old_status: Option<&Value>, conflict: Option<String>, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let old_conditions =
        old_status.and_then(|s| s.get("conditions")).and_then(Value::as_array).cloned().unwrap_or_default();
    let cond = |ty: &str, status: &str, reason: &str, message: &str| {
        let time = old_conditions
            .iter()
            .find(|c| str_at(c, "/type") == ty && str_at(c, "/status") == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": ty, "status": status, "lastTransitionTime": time, "reason": reason, "message": message})
    };
    let mut stored: Vec<String> = old_status
        .and_then(|s| s.get("storedVersions"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    for v in crd.pointer("/spec/versions").and_then(Value::as_array).into_iter().flatten() {
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            let name = str_at(v, "/name").to_string();
            if !stored.contains(&name) {
                stored.push(name);
            }
        }
    }
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
    let mut conditions = Vec::new();
    let accepted = match conflict {
        None => {
            conditions.push(cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"));
            conditions.push(cond(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ));
            names
        }
        Some(why) => {
            conditions.push(cond("NamesAccepted", "False", "NameConflict", &why));
            conditions.push(cond("Established", "False", "NotAccepted", "not all names are accepted"));
            old_status
                .and_then(|s| s.get("acceptedNames"))
                .cloned()
                .unwrap_or_else(|| json!({"plural": "", "kind": ""}))
        }
    };
    if terminating {
        conditions.push(cond(
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    json!({"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored})
}

/// Whether another CRD (`others`: stored CRDs, this one excluded) already uses a name this one asks
/// for in the same group: upstream's NamesAccepted=False reasons.
pub fn name_conflict(crd: &Value, others: &[Value]) -> Option<String> {
    let group = str_at(crd, "/spec/group");
    let me = str_at(crd, "/metadata/name");
    let plural = str_at(crd, "/spec/names/plural");
    let kind = str_at(crd, "/spec/names/kind");
    let shorts = strings_at(crd, "/spec/names/shortNames");
    for o in others.iter().filter(|o| str_at(o, "/spec/group") == group && str_at(o, "/metadata/name") != me) {
        let accepted = o.pointer("/status/acceptedNames").unwrap_or(&Value::Null);
        if str_at(accepted, "/plural") == plural {
            return Some(format!("\"{plural}\" is already in use"));
        }
        if str_at(accepted, "/kind") == kind {
            return Some(format!("\"{kind}\" is already in use"));
        }
        let theirs = strings_at(accepted, "/shortNames");
        if let Some(s) = shorts.iter().find(|s| theirs.contains(s)) {
            return Some(format!("\"{s}\" is already in use"));
        }
    }
    None
}

#[cfg(test)]
mod tests;
