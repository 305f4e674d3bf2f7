//! Patches applied to stored objects: the patch module's algorithms with the OpenAPI schemas as the
//! strategic-merge metadata.

use api_types::ResourceDef;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

pub use api_types::patch::PatchType;

/// Applies a patch to `old` (a stored object), as a patch of the resource's kind.
pub fn apply(res: &ResourceDef, pt: PatchType, old: &Value, body: &[u8]) -> ApiResult<Value> {
    match api_types::patchmeta::patch_schema(res.group, res.version, res.kind) {
        Some(schema) => api_types::patch::apply(pt, old, body, &schema).map_err(to_api),
        None => api_types::patch::apply(pt, old, body, &api_types::patch::NoSchema).map_err(to_api),
    }
}

/// Applies a patch with no schema (plain JSON merge semantics for strategic patches), for views
/// like Scale.
pub fn apply_plain(pt: PatchType, old: &Value, body: &[u8]) -> ApiResult<Value> {
    api_types::patch::apply(pt, old, body, &api_types::patch::NoSchema).map_err(to_api)
}

/// The patch module's errors carry upstream's code, reason and message.
fn to_api(e: api_types::patch::PatchError) -> ApiError {
    let s = e.status();
    ApiError { code: s.code, reason: s.reason, message: s.message, details: None }
}
