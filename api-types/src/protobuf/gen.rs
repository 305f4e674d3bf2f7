//! The generator of `fields.rs`: parses k8s-pb's prost-generated sources, walks the messages
//! reachable from the kinds kplane decodes, names each field as upstream's JSON does (from the
//! served JSON schemas) and prints the table.
//!
//! Shared by `examples/gen_proto_fields.rs` (which writes the file) and the test that checks the
//! committed file is current, via `#[path]`: it is not part of the library, so it reaches the
//! crate as `api_types` (lib.rs declares that name for its own tests).
//!
//! Anything it does not understand is an error, never a silent gap: an unmatched JSON name, an
//! unknown prost type on a reachable field, a special message whose wire layout changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use api_types::k8s_openapi::api::authentication::v1::TokenRequest;
use api_types::k8s_openapi::api::policy::v1::Eviction;
use api_types::k8s_openapi::schemars::generate::SchemaSettings;
use api_types::{schema, RESOURCES};
use serde_json::Value;

/// Kinds decoded besides the resource table's: subresource bodies and delete options.
const EXTRA_KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Binding"),
    ("autoscaling", "v1", "Scale"),
    ("policy", "v1", "Eviction"),
    ("authentication.k8s.io", "v1", "TokenRequest"),
    ("meta.k8s.io", "v1", "DeleteOptions"),
];

/// Served kinds whose request bodies are never decoded: a SelfSubjectReview carries nothing the
/// server reads. CustomResourceDefinitions are sent as JSON by every client (kubectl's dynamic
/// client, kube-rs).
const NOT_DECODED: &[(&str, &str, &str)] = &[
    ("authentication.k8s.io", "v1", "SelfSubjectReview"),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
];

/// A special message's fields: (tag, prost type).
type Layout = &'static [(u32, &'static str)];

/// Messages with a hand-written JSON form, with the wire layout the decoder assumes for them.
const SPECIALS: &[(&str, &str, Layout)] = &[
    ("apimachinery.pkg.apis.meta.v1.Time", "Time", &[(1, "int64"), (2, "int32")]),
    ("apimachinery.pkg.apis.meta.v1.MicroTime", "MicroTime", &[(1, "int64"), (2, "int32")]),
    ("apimachinery.pkg.apis.meta.v1.Duration", "Duration", &[(1, "int64")]),
    ("apimachinery.pkg.apis.meta.v1.FieldsV1", "FieldsV1", &[(1, "bytes")]),
    ("apimachinery.pkg.util.intstr.IntOrString", "IntOrString", &[(1, "int64"), (2, "int32"), (3, "string")]),
    ("apimachinery.pkg.api.resource.Quantity", "Quantity", &[(1, "string")]),
    ("apimachinery.pkg.runtime.RawExtension", "RawExtension", &[(1, "bytes")]),
    // `map<string, ExtraValue>` (a CSR's and the access reviews' `spec.extra`, a TokenReview's
    // user): ExtraValue is a `[]string` in Go, a JSON list with no schema definition of its own.
    ("api.certificates.v1.ExtraValue", "StringList", &[(1, "string")]),
    ("api.authentication.v1.ExtraValue", "StringList", &[(1, "string")]),
    ("api.authorization.v1.ExtraValue", "StringList", &[(1, "string")]),
];

/// Go pointer fields whose zero means something and so must survive zero-pruning (see
/// `Field::keep_zero`). Not exhaustive: the ones kubectl and controllers are known to set to zero
/// on purpose. Entries naming messages that are not reachable (StatefulSet, Job) are checked to
/// exist and otherwise ignored, so they start working when the kind is served.
const KEEP_ZERO: &[(&str, &[&str])] = &[
    ("api.apps.v1.DeploymentSpec", &["replicas", "revisionHistoryLimit", "progressDeadlineSeconds"]),
    ("api.apps.v1.ReplicaSetSpec", &["replicas"]),
    ("api.apps.v1.StatefulSetSpec", &["replicas", "revisionHistoryLimit"]),
    ("api.apps.v1.RollingUpdateStatefulSetStrategy", &["partition", "maxUnavailable"]),
    ("api.apps.v1.DaemonSetSpec", &["revisionHistoryLimit"]),
    ("api.apps.v1.RollingUpdateDaemonSet", &["maxUnavailable", "maxSurge"]),
    (
        "api.batch.v1.CronJobSpec",
        &["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"],
    ),
    ("api.policy.v1.PodDisruptionBudgetSpec", &["minAvailable", "maxUnavailable"]),
    ("api.apps.v1.RollingUpdateDeployment", &["maxUnavailable", "maxSurge"]),
    ("api.core.v1.ReplicationControllerSpec", &["replicas"]),
    (
        "api.core.v1.PodSpec",
        &[
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "automountServiceAccountToken",
            "enableServiceLinks",
            "hostUsers",
        ],
    ),
    ("api.core.v1.ServiceAccount", &["automountServiceAccountToken"]),
    ("api.core.v1.Secret", &["immutable"]),
    ("api.core.v1.ConfigMap", &["immutable"]),
    (
        "api.core.v1.SecurityContext",
        &[
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "privileged",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
        ],
    ),
    ("api.core.v1.PodSecurityContext", &["runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup"]),
    ("api.core.v1.Toleration", &["tolerationSeconds"]),
    ("api.core.v1.ServiceSpec", &["allocateLoadBalancerNodePorts"]),
    // File modes: 0 (no permissions) differs from the 0644 default an absent mode gets.
    ("api.core.v1.ConfigMapVolumeSource", &["defaultMode"]),
    ("api.core.v1.SecretVolumeSource", &["defaultMode"]),
    ("api.core.v1.ProjectedVolumeSource", &["defaultMode"]),
    ("api.core.v1.DownwardAPIVolumeSource", &["defaultMode"]),
    ("api.core.v1.KeyToPath", &["mode"]),
    ("api.core.v1.DownwardAPIVolumeFile", &["mode"]),
    (
        "api.batch.v1.JobSpec",
        &["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"],
    ),
    ("api.discovery.v1.EndpointConditions", &["ready", "serving", "terminating"]),
    ("apimachinery.pkg.apis.meta.v1.DeleteOptions", &["gracePeriodSeconds"]),
];

/// Fields k8s-pb (Kubernetes 1.34) has and the served schemas (k8s-openapi's v1_33) do not. They
/// are left out of the table, so the decoder skips them as unknown fields, as a 1.33 server's
/// decoder would; kubectl 1.32 never sends them.
const NEWER_THAN_SCHEMA: &[&str] = &[
    "api.core.v1.Container.restart_policy_rules",
    "api.core.v1.EnvVarSource.file_key_ref",
    "api.core.v1.EphemeralContainerCommon.restart_policy_rules",
    "api.core.v1.NodeStatus.declared_features",
    "api.core.v1.PodSpec.hostname_override",
    "api.core.v1.PodSpec.workload_ref",
    "api.core.v1.PodStatus.allocated_resources",
    "api.core.v1.PodStatus.extended_resource_claim_status",
    "api.core.v1.PodStatus.resources",
    "api.core.v1.VolumeProjection.pod_certificate",
    "api.storage.v1.CSIDriverSpec.service_account_token_in_secrets",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum ProtoKind {
    Scalar(&'static str),
    Message(String),
    /// A prost type the table has no form for; an error only if a reachable field has it.
    Unsupported(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProtoLabel {
    One,
    Repeated,
    Map,
}

#[derive(Clone, Debug)]
struct ProtoField {
    tag: u32,
    rust_name: String,
    kind: ProtoKind,
    label: ProtoLabel,
}

type Messages = BTreeMap<String, Vec<ProtoField>>;

/// Every `mod.rs` under k8s-pb's `src`, as (path relative to it, contents), sorted by path.
pub fn read_sources(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "mod.rs") {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A reachable field with its JSON name settled.
struct Resolved<'a> {
    field: &'a ProtoField,
    /// Empty for an inlined embedded struct.
    json: String,
    inline: bool,
}

/// The text of `fields.rs`.
pub fn generate(sources: &[(String, String)]) -> Result<String, String> {
    let mut messages = Messages::new();
    for (path, text) in sources {
        parse_file(path, text, &mut messages)?;
    }
    check_specials(&messages)?;
    let definitions = definitions()?;
    let keep_zero = keep_zero(&messages)?;
    let roots = roots();
    // Roots are named by kind, which prost may have re-cased; find them ignoring case.
    let root_messages = roots.iter().map(|(_, _, _, m)| {
        messages.keys().find(|name| fold(name) == fold(m)).cloned().unwrap_or_else(|| m.clone())
    });
    let mut go_order = BTreeMap::new();
    let tables = resolve(&messages, &definitions, root_messages.collect(), &mut go_order)?;
    // prost renames messages as it renames fields (AWSElasticBlockStoreVolumeSource ->
    // AwsElasticBlockStoreVolumeSource), so the table is named after the schema's spelling.
    // Inlined structs without a definition of their own keep prost's spelling.
    let upstream = |m: &str| -> Result<String, String> {
        match definitions.get(m) {
            // `io.k8s.kube-aggregator...`: the Go module's dash is no identifier character.
            Ok((name, _)) => Ok(name.strip_prefix("io.k8s.").unwrap_or(name).replace('-', "_")),
            Err(_) if tables.contains_key(m) => Ok(m.to_string()),
            Err(e) => Err(e),
        }
    };

    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str("pub(crate) static KINDS: &[(&str, &str, &str, &Message)] = &[\n");
    for (g, v, k, m) in &roots {
        let _ = writeln!(out, "    ({g:?}, {v:?}, {k:?}, &{}),", static_name(&upstream(m)?));
    }
    out.push_str("];\n");
    let mut names = BTreeSet::new();
    for (prost_name, fields) in &tables {
        let name = upstream(prost_name)?;
        if !names.insert(static_name(&name)) {
            return Err(format!("two messages map to the static name {}", static_name(&name)));
        }
        let _ = writeln!(out, "\npub(crate) static {}: Message = Message {{", static_name(&name));
        let _ = writeln!(out, "    name: {name:?},\n    fields: &[");
        for Resolved { field: f, json, inline } in fields {
            let keep = keep_zero.iter().any(|(m, j)| fold(m) == fold(&name) && j == json);
            let kind = kind_expr(&name, f, &upstream)?;
            let label = match f.label {
                ProtoLabel::One if *inline => "Inline",
                ProtoLabel::One => "One",
                ProtoLabel::Repeated => "Repeated",
                ProtoLabel::Map => "Map",
            };
            let _ = writeln!(
                out,
                "        F {{ tag: {}, json: {json:?}, kind: {kind}, label: L::{label}, keep_zero: {keep} }},",
                f.tag
            );
        }
        out.push_str("    ],\n};\n");
    }
    out.push_str(GO_ORDER_HEADER);
    for (prost_name, tags) in &go_order {
        let _ = writeln!(out, "    (&{}, &{tags:?}),", static_name(&upstream(prost_name)?));
    }
    out.push_str("];\n");
    Ok(out)
}

const GO_ORDER_HEADER: &str = "
/// The messages whose Go struct field order — the order upstream's JSON encoder writes, which
/// prost keeps from `generated.proto` — differs from their tag order, with their tags in Go order.
/// Every other message's fields are in Go order already.
pub(crate) static GO_ORDER: &[(&Message, &[u32])] = &[
";

/// Walks the messages reachable from `roots` through fields the JSON schemas know, naming each
/// field. Fields the schemas lack must be listed in [`NEWER_THAN_SCHEMA`], and every entry
/// there must still be one, so the list never hides a real mismatch nor goes stale.
fn resolve<'a>(
    messages: &'a Messages,
    definitions: &Definitions,
    roots: Vec<String>,
    go_order: &mut BTreeMap<String, Vec<u32>>,
) -> Result<BTreeMap<String, Vec<Resolved<'a>>>, String> {
    let mut tables = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    // Each message with the properties it is named against: its own definition's, or for an
    // inlined struct without one (IngressRuleValue), the properties of the message inlining it.
    let mut stack: Vec<(String, Option<Definition>)> = roots.into_iter().map(|r| (r, None)).collect();
    while let Some((name, inherited)) = stack.pop() {
        if special(&name).is_some() || tables.contains_key(&name) {
            continue;
        }
        let fields = messages.get(&name).ok_or_else(|| format!("message {name} not found in k8s-pb"))?;
        let (definition, props) = match &inherited {
            Some(pair) => pair,
            None => definitions.get(&name)?,
        };
        let mut resolved = Vec::new();
        for field in fields {
            // Go structs embedded with `json:",inline"` (LocalObjectReference in
            // ConfigMapKeySelector) are a nested message in protobuf but flat in JSON.
            let inline = match &field.kind {
                ProtoKind::Message(m)
                    if field.label == ProtoLabel::One
                        && !props.iter().any(|p| fold(p) == fold(&field.rust_name)) =>
                {
                    match definitions.get(m) {
                        Ok((_, inner)) => !inner.is_empty() && inner.iter().all(|p| props.contains(p)),
                        // Inlined-only structs (ProbeHandler as Probe.handler) have no definition:
                        // recognized by name and by having fields of the parent's (not all: the
                        // inner struct may have fields newer than the schema).
                        Err(_) => {
                            let named = m
                                .rsplit('.')
                                .next()
                                .is_some_and(|s| fold(s).ends_with(&fold(&field.rust_name)));
                            let inner = messages.get(m).map(Vec::as_slice).unwrap_or_default();
                            named && inner.iter().any(|f| props.iter().any(|p| fold(p) == fold(&f.rust_name)))
                        }
                    }
                }
                _ => false,
            };
            let json = if inline {
                String::new()
            } else {
                match json_name(&name, &field.rust_name, props) {
                    Ok(json) => json,
                    Err(e) if !props.is_empty() => {
                        skipped.insert((format!("{name}.{}", field.rust_name), e));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            match &field.kind {
                ProtoKind::Message(m) if inline && definitions.get(m).is_err() => {
                    stack.push((m.clone(), Some((definition.clone(), props.clone()))));
                }
                ProtoKind::Message(m) => stack.push((m.clone(), None)),
                ProtoKind::Unsupported(k) => {
                    return Err(format!("{name}.{}: unsupported prost type {k}", field.rust_name))
                }
                ProtoKind::Scalar(_) => {}
            }
            resolved.push(Resolved { field, json, inline });
        }
        // prost keeps the fields in `generated.proto`'s order, which is the Go struct's.
        let source: Vec<u32> = resolved.iter().map(|r| r.field.tag).collect();
        resolved.sort_by_key(|r| r.field.tag);
        if resolved.iter().map(|r| r.field.tag).ne(source.iter().copied()) {
            go_order.insert(name.clone(), source);
        }
        tables.insert(name, resolved);
    }
    let unexpected: Vec<&String> =
        skipped.iter().filter(|(f, _)| !NEWER_THAN_SCHEMA.contains(&f.as_str())).map(|(_, e)| e).collect();
    if !unexpected.is_empty() {
        return Err(format!("fields match no JSON property:\n{unexpected:#?}"));
    }
    let stale: Vec<&&str> =
        NEWER_THAN_SCHEMA.iter().filter(|n| !skipped.iter().any(|(f, _)| f == *n)).collect();
    if !stale.is_empty() {
        return Err(format!("NEWER_THAN_SCHEMA lists fields that now match or are gone: {stale:?}"));
    }
    Ok(tables)
}

const HEADER: &str = "\
// @generated by api-types/examples/gen_proto_fields.rs from k8s-pb's prost types (the version
// api-types' dev-dependency pins) and the served JSON schemas. Do not edit; regenerate with
//
//   cargo run -p api-types --example gen_proto_fields -- \\
//       ~/.cargo/registry/src/<index>/k8s-pb-<version>/src > api-types/src/protobuf/fields.rs
//
// The test `protobuf::tests::fields_rs_is_up_to_date` fails while this file is stale.

use super::table::{Field as F, Kind as K, Label as L, Message, Special as S};

/// The kinds a body can be decoded as: (group, version, kind, message).
";

/// Every served kind plus [`EXTRA_KINDS`], with its protobuf message name.
fn roots() -> Vec<(String, String, String, String)> {
    let served = RESOURCES.iter().map(|r| (r.group, r.version, r.kind));
    let mut out: Vec<(String, String, String, String)> = Vec::new();
    for (g, v, k) in served.chain(EXTRA_KINDS.iter().copied()) {
        if NOT_DECODED.contains(&(g, v, k)) {
            continue;
        }
        let message = match g {
            "meta.k8s.io" => format!("apimachinery.pkg.apis.meta.{v}.{k}"),
            "" => format!("api.core.{v}.{k}"),
            // The aggregator's types live outside `api`.
            "apiregistration.k8s.io" => format!("kube_aggregator.pkg.apis.apiregistration.{v}.{k}"),
            // API groups are named after their proto package: discovery.k8s.io -> api.discovery.
            _ => format!("api.{}.{v}.{k}", g.split('.').next().unwrap_or(g)),
        };
        let row = (g.to_string(), v.to_string(), k.to_string(), message);
        if !out.contains(&row) {
            out.push(row);
        }
    }
    out
}

fn parse_file(path: &str, text: &str, messages: &mut Messages) -> Result<(), String> {
    let Some(dir) = path.strip_suffix("mod.rs") else { return Ok(()) };
    let module: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    let mut current: Option<(String, Vec<ProtoField>)> = None;
    let mut attr: Option<String> = None;
    let mut decl: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = || format!("{path}:{}", n + 1);
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches(['{', '}', ' ']).to_string();
            if rest.ends_with("{}") {
                messages.insert(qualified(&module, &name), Vec::new());
            } else {
                current = Some((name, Vec::new()));
            }
            continue;
        }
        let Some((name, fields)) = current.as_mut() else { continue };
        if line == "}" {
            messages.insert(qualified(&module, name), std::mem::take(fields));
            current = None;
        } else if let Some(a) = line.strip_prefix("#[prost(") {
            attr = Some(a.trim_end_matches(")]").to_string());
        } else if decl.is_some() || (attr.is_some() && line.starts_with("pub ")) {
            let d = decl.get_or_insert_with(String::new);
            d.push_str(line);
            let depth = d.matches('<').count() as i64 - d.matches('>').count() as i64;
            if depth == 0 && d.ends_with(',') {
                let (a, d) = (attr.take().unwrap_or_default(), decl.take().unwrap_or_default());
                fields.push(parse_field(&module, &a, &d).map_err(|e| format!("{}: {e}", at()))?);
            }
        }
    }
    Ok(())
}

fn qualified(module: &[&str], name: &str) -> String {
    let mut parts = module.to_vec();
    parts.push(name);
    parts.join(".")
}

/// One field from its `#[prost(...)]` arguments and its `pub name: Type,` declaration.
fn parse_field(module: &[&str], attr: &str, decl: &str) -> Result<ProtoField, String> {
    let args = split_args(attr);
    let (name, ty) = decl
        .strip_prefix("pub ")
        .and_then(|d| d.split_once(':'))
        .ok_or_else(|| format!("unparsed field declaration {decl:?}"))?;
    let rust_name = name.trim().trim_start_matches("r#").to_string();
    // Without whitespace, and without the trailing commas rustfmt adds to wrapped generics.
    let ty: String = ty.trim_end_matches(',').chars().filter(|c| !c.is_whitespace()).collect();
    let ty = ty.replace(",>", ">");
    let tag = args
        .iter()
        .find_map(|a| a.strip_prefix("tag = "))
        .and_then(|t| t.trim_matches('"').parse().ok())
        .ok_or_else(|| format!("no tag in #[prost({attr})]"))?;
    let first = args.first().map(String::as_str).unwrap_or_default();
    let (kind, label) = if let Some(map) = first.strip_prefix("btree_map = ") {
        let (key, value) = map.trim_matches('"').split_once(", ").unwrap_or(("?", "?"));
        if key != "string" {
            return Err(format!("map with {key} keys"));
        }
        (scalar_or_message(module, value, map_value_type(&ty))?, ProtoLabel::Map)
    } else {
        let label = if args.iter().any(|a| a == "repeated") { ProtoLabel::Repeated } else { ProtoLabel::One };
        (scalar_or_message(module, first, &ty)?, label)
    };
    Ok(ProtoField { tag, rust_name, kind, label })
}

/// `a, b = "x, y", c` -> [a, b = "x, y", c]: splits on commas outside quotes.
fn split_args(attr: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in attr.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// `BTreeMap<K,V>` -> `V`.
fn map_value_type(ty: &str) -> &str {
    let inner = ty.split_once('<').map(|(_, rest)| rest).unwrap_or(ty);
    let inner = inner.strip_suffix('>').unwrap_or(inner);
    let mut depth = 0i32;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => return inner.get(i + 1..).unwrap_or_default(),
            _ => {}
        }
    }
    inner
}

fn scalar_or_message(module: &[&str], prost_kind: &str, ty: &str) -> Result<ProtoKind, String> {
    Ok(match prost_kind {
        "string" => ProtoKind::Scalar("string"),
        "bool" => ProtoKind::Scalar("bool"),
        "int32" => ProtoKind::Scalar("int32"),
        "int64" => ProtoKind::Scalar("int64"),
        "double" => ProtoKind::Scalar("double"),
        "bytes = \"vec\"" | "bytes" => ProtoKind::Scalar("bytes"),
        "message" => ProtoKind::Message(resolve_type(module, ty)?),
        other => ProtoKind::Unsupported(other.to_string()),
    })
}

/// A field's Rust type (wrappers and all) to the full name of its message.
fn resolve_type(module: &[&str], ty: &str) -> Result<String, String> {
    let mut t = ty;
    for wrapper in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"] {
        if let Some(inner) = t.strip_prefix(wrapper).and_then(|i| i.strip_suffix('>')) {
            t = inner;
        }
    }
    if let Some(inner) = t.strip_prefix("::prost::alloc::boxed::Box<").and_then(|i| i.strip_suffix('>')) {
        t = inner;
    }
    if t.starts_with("::") || t.contains('<') {
        return Err(format!("unresolvable message type {ty}"));
    }
    let mut path: Vec<&str> = module.to_vec();
    for seg in t.split("::") {
        match seg {
            "super" => {
                path.pop().ok_or_else(|| format!("{ty} climbs above the crate"))?;
            }
            "crate" => path.clear(),
            "self" => {}
            s => path.push(s),
        }
    }
    Ok(path.join("."))
}

fn check_specials(messages: &Messages) -> Result<(), String> {
    for (name, _, layout) in SPECIALS {
        let fields = messages.get(*name).ok_or_else(|| format!("special message {name} is missing"))?;
        let mut found: Vec<(u32, &str)> = fields
            .iter()
            .map(|f| (f.tag, if let ProtoKind::Scalar(s) = &f.kind { *s } else { "message" }))
            .collect();
        found.sort();
        if found.as_slice() != *layout {
            return Err(format!("{name}'s layout changed to {found:?}; the decoder assumes {layout:?}"));
        }
    }
    Ok(())
}

fn special(name: &str) -> Option<&'static str> {
    SPECIALS.iter().find(|(n, _, _)| *n == name).map(|(_, variant, _)| *variant)
}

fn keep_zero(messages: &Messages) -> Result<BTreeSet<(&'static str, &'static str)>, String> {
    let mut out = BTreeSet::new();
    for (message, fields) in KEEP_ZERO {
        let proto = messages
            .iter()
            .find(|(name, _)| fold(name) == fold(message))
            .map(|(_, fields)| fields)
            .ok_or_else(|| format!("KEEP_ZERO names unknown message {message}"))?;
        for json in *fields {
            let folded = fold(json);
            if !proto.iter().any(|f| fold(&f.rust_name) == folded) {
                return Err(format!("KEEP_ZERO names unknown field {message}.{json}"));
            }
            out.insert((*message, *json));
        }
    }
    Ok(out)
}

/// A schema definition's name and its property names.
type Definition = (String, Vec<String>);

/// Every schema definition, found by message name ignoring case.
struct Definitions(BTreeMap<String, Definition>);

impl Definitions {
    /// The definition of a message (`api.X` -> `io.k8s.api.X`).
    fn get(&self, message: &str) -> Result<&Definition, String> {
        // Go's package path `kube-aggregator` is `kube_aggregator` in Rust module names.
        let key = format!("io.k8s.{}", message.replace("kube_aggregator.", "kube-aggregator.")).to_lowercase();
        self.0.get(&key).ok_or_else(|| format!("no JSON schema definition io.k8s.{message} for {message}"))
    }
}

fn definitions() -> Result<Definitions, String> {
    // policy/v1 Eviction and authentication/v1 TokenRequest (the `serviceaccounts/token` body) are
    // decoded but not served as resources, so the registry lacks them.
    let mut gen = SchemaSettings::openapi3().into_generator();
    gen.subschema_for::<Eviction>();
    gen.subschema_for::<TokenRequest>();
    let extra = gen.take_definitions(true);
    let mut out = BTreeMap::new();
    for (name, def) in schema::definitions().iter().chain(extra.iter()) {
        let props = schema::resolve(def).get("properties").and_then(Value::as_object);
        let props = props.map(|p| p.keys().cloned().collect()).unwrap_or_default();
        if let Some((other, _)) = out.insert(name.to_lowercase(), (name.clone(), props)) {
            if other != *name {
                return Err(format!("definitions {other} and {name} differ only in case"));
            }
        }
    }
    Ok(Definitions(out))
}

/// prost's snake_case name -> upstream's JSON name: the one property equal to it ignoring case
/// and underscores (`pod_i_ps` -> `podIPs`).
fn json_name(message: &str, rust_name: &str, props: &[String]) -> Result<String, String> {
    let folded = fold(rust_name);
    let matches: Vec<&String> = props.iter().filter(|p| fold(p) == folded).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("{message}.{rust_name} matches no property of its JSON schema ({props:?})")),
        many => Err(format!("{message}.{rust_name} matches several properties: {many:?}")),
    }
}

fn fold(name: &str) -> String {
    name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

fn kind_expr(
    message: &str,
    f: &ProtoField,
    upstream: &dyn Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    Ok(match &f.kind {
        ProtoKind::Scalar(s) => match *s {
            "string" => "K::String".to_string(),
            "bool" => "K::Bool".to_string(),
            "int32" => "K::Int32".to_string(),
            "int64" => "K::Int64".to_string(),
            "double" => "K::Double".to_string(),
            _ => "K::Bytes".to_string(),
        },
        ProtoKind::Message(m) => match special(m) {
            Some(variant) => format!("K::Special(S::{variant})"),
            None => format!("K::Message(&{})", static_name(&upstream(m)?)),
        },
        ProtoKind::Unsupported(k) => {
            return Err(format!("{message}.{}: unsupported prost type {k}", f.rust_name))
        }
    })
}

/// `api.apps.v1.DeploymentSpec` -> `API_APPS_V1_DEPLOYMENT_SPEC`.
fn static_name(message: &str) -> String {
    let mut out = String::new();
    for (i, seg) in message.split('.').enumerate() {
        if i > 0 {
            out.push('_');
        }
        let chars: Vec<char> = seg.chars().collect();
        for (j, c) in chars.iter().enumerate() {
            let prev = j.checked_sub(1).and_then(|p| chars.get(p));
            let next = chars.get(j + 1);
            let boundary = c.is_ascii_uppercase()
                && (prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                    || (prev.is_some_and(char::is_ascii_uppercase)
                        && next.is_some_and(char::is_ascii_lowercase)));
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}
