//! Request bodies, namespaces in them, and field validation.

use api_types::ResourceDef;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::objects::set_kind;
use crate::params::Params;
use crate::route::ResourcePath;

/// Reads and parses a JSON body into an object of the resource's kind.
pub fn decode_body(res: &ResourceDef, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let mime = media_type(headers);
    let mut obj: Value = match mime {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}",
                res.kind,
                res.version,
                res.kind,
                json_error_text(&e)
            ))
        })?,
        api_types::protobuf::CONTENT_TYPE => api_types::protobuf::decode_to_json(body, res.group, res.version, res.kind)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    res.kind, res.version, res.kind
                ))
            })?,
        "application/yaml" => serde_yaml_ng::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("{} in version \"{}\" cannot be handled as a {}: {e}", res.kind, res.version, res.kind))
        })?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other:?})"
            )))
        }
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
            res.kind, res.version, res.kind
        )));
    }
    let want_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "{k} in version \"{}\" cannot be handled as a {}: the kind in the data ({k}) does not match the expected kind ({})",
                res.version, res.kind, res.kind
            )))
        }
        _ => {}
    }
    set_kind(res, &mut obj);
    Ok(obj)
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

pub(crate) fn json_error_text(e: &serde_json::Error) -> String {
    format!("json: {e}")
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

/// Runs field validation per the `fieldValidation` parameter on the raw JSON of an object: unknown
/// and duplicate fields are an error under Strict, warnings under Warn (the default), ignored under
/// Ignore.
pub(crate) fn field_validation(res: &ResourceDef, params: &Params, raw: &[u8]) -> ApiResult<Vec<String>> {
    let mode = params.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let findings = match api_types::fieldcheck::strict_findings(res.group, res.version, res.kind, raw) {
        Ok(f) => f,
        // The body already parsed as JSON; a scan failure here is not the client's problem.
        Err(e) => {
            tracing::debug!(error = %e, "field validation scan failed");
            return Ok(Vec::new());
        }
    };
    if findings.is_empty() {
        return Ok(Vec::new());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(api_types::fieldcheck::strict_decoding_error(
            res.kind,
            res.version,
            &findings,
        )));
    }
    Ok(findings.iter().map(|f| f.to_string()).collect())
}
