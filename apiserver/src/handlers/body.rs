//! Request bodies, namespaces in them, and field validation.

use api_types::fieldcheck::Finding;
use api_types::typecheck::{json_kind, Dialect};
use api_types::ResourceDef;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::params::Params;
use crate::route::ResourcePath;

/// Reads a body (JSON, YAML or protobuf) as an object of the resource's kind, decoded as upstream's
/// codec decodes into the kind's Go type: a value of the wrong type is a 400 with upstream's
/// message, unknown fields are dropped, and what is returned is the typed object's JSON
/// (`api_types::typecheck`). Field validation's verdict on the dropped fields is
/// [`decode_validated`]'s.
pub fn decode_body(res: &ResourceDef, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    decode_resource(res, headers, body).map(|(obj, _)| obj)
}

/// [`decode_typed`] as the resource's kind; a custom resource is pruned by its schema instead (the
/// pruned paths are the unknown fields).
fn decode_resource(res: &ResourceDef, headers: &HeaderMap, body: &Bytes) -> ApiResult<(Value, Vec<String>)> {
    let (mut obj, mut unknown) = decode_typed(res.group, res.version, res.kind, headers, body)?;
    if let Some(cr) = crate::crd::custom(res) {
        unknown.extend(crate::crd::prune(cr, &mut obj));
    }
    Ok((obj, unknown))
}

/// [`decode_body`] plus field validation per `?fieldValidation`: unknown and duplicate fields fail
/// the request under Strict, come back as warnings under Warn (the default), and are dropped
/// silently under Ignore.
pub(crate) fn decode_validated(
    res: &ResourceDef,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(Value, Vec<String>)> {
    let mode = validation_mode(params)?;
    let (obj, unknown) = decode_resource(res, headers, body)?;
    if mode == "Ignore" {
        return Ok((obj, Vec::new()));
    }
    // A JSON body is scanned as sent, for duplicates and document order; other formats have no
    // duplicates left by now, and report what the decode dropped.
    let dropped = || unknown.iter().cloned().map(Finding::Unknown).collect();
    let findings = if crate::crd::custom(res).is_some() {
        // Unknown fields are what pruning dropped; duplicates come from the raw scan.
        let mut f: Vec<Finding> = unknown.iter().cloned().map(Finding::Unknown).collect();
        if is_json(headers) {
            if let Ok(dups) = api_types::fieldcheck::duplicate_fields(body) {
                f.extend(dups.into_iter().map(Finding::Duplicate));
            }
        }
        f
    } else if is_json(headers) {
        api_types::fieldcheck::strict_findings(res.group, res.version, res.kind, body)
            .unwrap_or_else(|_| dropped())
    } else {
        dropped()
    };
    if mode == "Strict" && !findings.is_empty() {
        return Err(ApiError::bad_request(api_types::fieldcheck::strict_decoding_error(
            res.kind,
            res.version,
            &findings,
        )));
    }
    Ok((obj, findings.iter().map(|f| f.to_string()).collect()))
}

/// Field validation of a patched object, whose unknown fields the patch decode dropped
/// (`patching::apply`): upstream's patch handler words the Strict failure without the kind.
pub(crate) fn patch_field_validation(params: &Params, unknown: Vec<String>) -> ApiResult<Vec<String>> {
    let mode = validation_mode(params)?;
    let findings: Vec<String> = unknown.into_iter().map(|p| Finding::Unknown(p).to_string()).collect();
    match mode {
        "Ignore" => Ok(Vec::new()),
        "Strict" if !findings.is_empty() => {
            Err(ApiError::bad_request(format!("strict decoding error: {}", findings.join(", "))))
        }
        _ => Ok(findings),
    }
}

/// The `fieldValidation` directive, Warn when absent.
fn validation_mode(params: &Params) -> ApiResult<&str> {
    let mode = params.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    Ok(mode)
}

/// Decodes a body as the given kind; also returns the unknown fields it dropped. Used directly for
/// subresource bodies that are not their resource's kind (Scale, Binding).
pub(crate) fn decode_typed(
    group: &str,
    version: &str,
    kind: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(Value, Vec<String>)> {
    let cannot = |why: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("{kind} in version \"{version}\" cannot be handled as a {kind}: {why}"))
    };
    let mut obj: Value = match media_type(headers) {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| unrecognized(kind, &format!("couldn't get version/kind; json parse error: {}", go_json_error(&e, body)), body))?,
        api_types::protobuf::CONTENT_TYPE => {
            api_types::protobuf::decode_to_json(body, group, version, kind).map_err(|e| cannot(&e))?
        }
        "application/yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| unrecognized(kind, &format!("error converting YAML to JSON: yaml: {e}"), body))?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other:?})"
            )))
        }
    };
    // A `null` document decodes into the zero object, as Go's does.
    if obj.is_null() {
        obj = json!({});
    }
    let Value::Object(map) = &obj else {
        let what = json_kind(&obj);
        return Err(unrecognized(
            kind,
            &format!("couldn't get version/kind; json parse error: json: cannot unmarshal {what} into Go value of type {TYPE_META}"),
            body,
        ));
    };
    // apiVersion and kind are read first, into a struct of two strings.
    for field in ["apiVersion", "kind"] {
        if let Some(v) = map.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            return Err(unrecognized(
                kind,
                &format!(
                    "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go struct field .{field} of type string",
                    json_kind(v)
                ),
                body,
            ));
        }
    }
    let want_av = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind => {
            return Err(ApiError::bad_request(format!(
                "{k} in version \"{version}\" cannot be handled as a {kind}: the kind in the data ({k}) does not match the expected kind ({kind})"
            )))
        }
        _ => {}
    }
    let unknown = api_types::typecheck::check_kind(group, version, kind, &mut obj, Dialect::Json)
        .map_err(|e| cannot(&e))?;
    if let Value::Object(map) = &mut obj {
        map.insert("apiVersion".into(), json!(want_av));
        map.insert("kind".into(), json!(kind));
    }
    Ok((obj, unknown))
}

/// How Go prints the anonymous struct upstream reads a body's apiVersion and kind into.
const TYPE_META: &str =
    r#"struct { APIVersion string "json:\"apiVersion,omitempty\""; Kind string "json:\"kind,omitempty\"" }"#;

/// Upstream's 400 for a body it could not even read a kind from:
/// `the object provided is unrecognized (must be of type Namespace): <why> (<the body's start>)`.
fn unrecognized(kind: &str, why: &str, body: &[u8]) -> ApiError {
    ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {kind}): {why} ({})",
        summarize(body, 30)
    ))
}

/// Upstream's summary of a body in decode errors: JSON objects as text, anything else in hex, cut at
/// `max` bytes.
fn summarize(body: &[u8], max: usize) -> String {
    let cut = &body[..body.len().min(max)];
    let more = if body.len() > max { " ..." } else { "" };
    match body.first() {
        None => "<empty>".into(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(cut)),
        Some(_) => format!("{}{more}", cut.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// A JSON syntax error in Go's words where serde's map onto them (`invalid character 'a' looking
/// for beginning of value`, `unexpected end of JSON input`), serde's own otherwise.
fn go_json_error(e: &serde_json::Error, body: &[u8]) -> String {
    if e.is_eof() {
        return "unexpected end of JSON input".into();
    }
    let at = offset_of(body, e.line(), e.column());
    let found = at.and_then(|i| body.get(i)).map(|b| go_quote_byte(*b));
    let text = e.to_string();
    match found {
        Some(c) if text.starts_with("expected value") => {
            format!("invalid character {c} looking for beginning of value")
        }
        Some(c) if text.starts_with("trailing characters") => {
            format!("invalid character {c} after top-level value")
        }
        _ => format!("json: {e}"),
    }
}

/// The byte offset of serde's 1-based line and column (the column counts the byte in error).
fn offset_of(body: &[u8], line: usize, column: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += body.get(start..)?.iter().position(|b| *b == b'\n')? + 1;
    }
    (start + column).checked_sub(1)
}

/// Go's `quoteChar`: `'a'`, `'\''`, `'\\x00'`-style escapes for control bytes.
fn go_quote_byte(b: u8) -> String {
    match b {
        b'\'' => r"'\''".into(),
        b'"' => r#"'"'"#.into(),
        0x20..=0x7e => format!("'{}'", b as char),
        _ => format!("{:?}", b as char),
    }
}

/// Whether the body is JSON (field validation scans JSON only).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    matches!(media_type(headers), "application/json" | "" | "*/*")
}

/// The request's Content-Type as sent, "" when absent.
pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The request's media type (Content-Type without parameters); JSON when absent.
pub(crate) fn media_type(headers: &HeaderMap) -> &str {
    match content_type(headers) {
        "" => "application/json",
        ct => ct.split(';').next().unwrap_or("").trim(),
    }
}

/// The patch type a PATCH names in its Content-Type, or 415 with upstream's message.
pub(crate) fn patch_type(headers: &HeaderMap) -> ApiResult<api_types::patch::PatchType> {
    api_types::patch::PatchType::from_content_type(content_type(headers))
        .map_err(|e| ApiError::unsupported_media_type(e.to_string()))
}

/// The 400 for a body whose name is not the URL's.
pub(crate) fn name_mismatch(found: &str, name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the name of the object ({found}) does not match the name on the URL ({name})"
    ))
}

/// Checks the body's namespace against the URL's and fills it in.
pub(crate) fn check_namespace(rp: &ResourcePath, obj: &mut Value) -> ApiResult<()> {
    if !rp.res.namespaced {
        meta::remove(obj, "namespace");
        return Ok(());
    }
    let url_ns = rp.namespace.clone().unwrap_or_default();
    match meta::namespace(obj) {
        Some(ns) if ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta::set(obj, "namespace", json!(url_ns));
            Ok(())
        }
    }
}
