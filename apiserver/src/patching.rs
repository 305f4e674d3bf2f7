//! Patches applied to stored objects: the patch module's algorithms with the OpenAPI schemas as the
//! strategic-merge metadata, then the result decoded as the kind, as upstream's patcher decodes the
//! patched JSON into the Go type before anything is stored. Server-side apply of whole objects is
//! `crate::apply`; an applied Scale merges here.

use api_types::typecheck::{self, Dialect};
use api_types::ResourceDef;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};

pub use api_types::patch::PatchType;

/// Applies a patch to `old` (a stored object) as a patch of the resource's kind, and decodes the
/// result: a value of the wrong type is upstream's 422 on `patch`; unknown fields are dropped and
/// returned (for field validation).
pub fn apply(res: &ResourceDef, pt: PatchType, old: &Value, body: &[u8]) -> ApiResult<(Value, Vec<String>)> {
    if let Some(cr) = crate::crd::custom(res) {
        // Custom resources have no strategic-merge metadata: upstream refuses that patch type.
        if pt == PatchType::StrategicMerge {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let mut patched =
            api_types::patch::apply(pt, old, body, &api_types::patch::NoSchema).map_err(to_api)?;
        let unknown = crate::crd::prune(cr, &mut patched);
        return Ok((patched, unknown));
    }
    let patched = match api_types::patchmeta::patch_schema(res.group, res.version, res.kind) {
        Some(schema) => api_types::patch::apply(pt, old, body, &schema).map_err(to_api)?,
        None => api_types::patch::apply(pt, old, body, &api_types::patch::NoSchema).map_err(to_api)?,
    };
    decode_patched(res.group, res.version, res.kind, pt, patched, body)
}

/// Applies a patch to a Scale (plain JSON merge semantics for strategic patches: Scale has no
/// lists) and decodes the result as an `autoscaling/v1` Scale. Server-side apply of a Scale is
/// `apply::patch_scale`.
pub fn apply_scale(pt: PatchType, old: &Value, body: &[u8]) -> ApiResult<Value> {
    let patched = api_types::patch::apply(pt, old, body, &api_types::patch::NoSchema).map_err(to_api)?;
    decode_patched("autoscaling", "v1", "Scale", pt, patched, body).map(|(obj, _)| obj)
}

/// Decodes a patch result as the kind. Upstream's JSON and merge patches decode the patched JSON
/// (and quote it in the error); strategic merge patches convert the patched map with the
/// unstructured converter (and quote the patch, as Go prints a map).
fn decode_patched(
    group: &str,
    version: &str,
    kind: &str,
    pt: PatchType,
    patched: Value,
    body: &[u8],
) -> ApiResult<(Value, Vec<String>)> {
    let dialect = if pt == PatchType::StrategicMerge { Dialect::Unstructured } else { Dialect::Json };
    let mut typed = patched.clone();
    match typecheck::check_kind(group, version, kind, &mut typed, dialect) {
        Ok(unknown) => Ok((typed, unknown)),
        Err(e) => {
            let value = match dialect {
                Dialect::Json => patched.to_string(),
                Dialect::Unstructured => {
                    typecheck::go_format(&serde_json::from_slice(body).unwrap_or(Value::Null))
                }
            };
            Err(patch_invalid(&value, &e.0))
        }
    }
}

/// Upstream's `NewInvalid(schema.GroupKind{}, "", field.ErrorList{field.Invalid(field.NewPath("patch"), value, why)})`:
/// no kind, no name, one cause on `patch`.
fn patch_invalid(value: &str, why: &str) -> ApiError {
    let cause = format!("Invalid value: {value:?}: {why}");
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(" \"\" is invalid: patch: {cause}"),
        details: Some(json!({"causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "patch"}]})),
    }
}

/// The patch module's errors carry upstream's code, reason and message.
fn to_api(e: api_types::patch::PatchError) -> ApiError {
    let s = e.status();
    ApiError { code: s.code, reason: s.reason, message: s.message, details: None }
}
