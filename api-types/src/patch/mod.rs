//! PATCH bodies, applied the way upstream kube-apiserver applies them: JSON patch (RFC 6902),
//! JSON merge patch (RFC 7386) and Kubernetes' strategic merge patch (the semantics of
//! `k8s.io/apimachinery/pkg/util/strategicpatch`, apply half only).
//!
//! Everything works on `serde_json::Value` so the API server can patch any stored object without
//! knowing its Rust type; the only type knowledge strategic merge needs (which lists merge, and by
//! which key) comes in through [`PatchSchema`], implemented elsewhere from the OpenAPI schemas.
//!
//! # Errors and HTTP codes
//! [`PatchError::status`] gives the code, reason and message upstream answers with. What upstream
//! does (`apiserver/pkg/endpoints/handlers/patch.go`, `negotiation/errors.go`):
//!
//! | situation | upstream | here |
//! | --- | --- | --- |
//! | Content-Type not a patch type | 415 UnsupportedMediaType, "the body of the request was in an unknown format - accepted media types include: …" | [`PatchError::UnsupportedMediaType`] |
//! | `application/apply-patch+yaml` (server-side apply) | handled by the field manager | `crate::apply` (this module's [`apply`]: [`PatchError::ApplyNotSupported`], 415) |
//! | body not decodable (any patch type) | 400 BadRequest with the decoder's message (merge patch: "Invalid JSON Patch") | [`PatchError::MalformedPatch`] |
//! | JSON patch with more than 10000 operations | 413 RequestEntityTooLarge | [`PatchError::TooManyOperations`] |
//! | JSON patch operation fails (test fails, path missing, unknown op) | 422 Invalid, generic message "the server rejected our request due to an error in our request" (the detail is dropped) | [`PatchError::JsonPatchFailed`] |
//! | strategic: bad `$retainKeys` / `$setElementOrder` / `$deleteFromPrimitiveList` format | 400 BadRequest with the error text | [`PatchError::StrategicBadRequest`] |
//! | strategic: list of lists, patch content not matching `$retainKeys` | 422 Invalid, generic message | [`PatchError::StrategicInvalid`] |
//! | strategic: any other failure (missing merge key, unknown `$patch` value, …) | not a Status error, so 500 with reason "" (Unknown) and the error text | [`PatchError::StrategicInternal`] |
//! | stored object is not a JSON object | 500 | [`PatchError::InvalidOriginal`] |

mod json_patch;
mod strategic;

#[cfg(test)]
mod test_schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_strategic;

use serde_json::Value;

/// Upstream's cap on the number of operations in one JSON patch (`maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The patch media types kplane accepts, in the order upstream lists them in its 415 message.
/// `application/apply-patch+yaml` is server-side apply, served by the API server with
/// `crate::apply` (this module's [`apply`] does not do it).
pub const SUPPORTED_PATCH_MEDIA_TYPES: [&str; 4] =
    [PatchType::JSON, PatchType::MERGE, PatchType::STRATEGIC_MERGE, PatchType::APPLY_YAML];

/// The kind of a PATCH body, chosen by its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json`: RFC 6902 operations.
    Json,
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`: Kubernetes' strategic merge patch.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply, which is not a patch algorithm here: the
    /// API server serves it with `crate::apply`; [`apply`] rejects it with
    /// [`PatchError::ApplyNotSupported`].
    ApplyYaml,
}

impl PatchType {
    pub const JSON: &'static str = "application/json-patch+json";
    pub const MERGE: &'static str = "application/merge-patch+json";
    pub const STRATEGIC_MERGE: &'static str = "application/strategic-merge-patch+json";
    pub const APPLY_YAML: &'static str = "application/apply-patch+yaml";

    /// Parses a Content-Type header value. Like upstream, parameters (`; charset=utf-8`) are cut off
    /// at the first `;` and the rest must match a media type exactly; anything else is
    /// [`PatchError::UnsupportedMediaType`] (415).
    pub fn from_content_type(content_type: &str) -> Result<PatchType, PatchError> {
        let media_type = match content_type.find(';') {
            Some(idx) if idx > 0 => &content_type[..idx],
            _ => content_type,
        };
        match media_type.trim() {
            Self::JSON => Ok(PatchType::Json),
            Self::MERGE => Ok(PatchType::Merge),
            Self::STRATEGIC_MERGE => Ok(PatchType::StrategicMerge),
            Self::APPLY_YAML => Ok(PatchType::ApplyYaml),
            _ => Err(PatchError::UnsupportedMediaType { content_type: content_type.to_string() }),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            PatchType::Json => Self::JSON,
            PatchType::Merge => Self::MERGE,
            PatchType::StrategicMerge => Self::STRATEGIC_MERGE,
            PatchType::ApplyYaml => Self::APPLY_YAML,
        }
    }
}

impl std::str::FromStr for PatchType {
    type Err = PatchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PatchType::from_content_type(s)
    }
}

/// Upstream's 415 message for a request body in a media type the endpoint does not take. Takes the
/// list because upstream's differs per endpoint (custom resources, for one, take no strategic merge
/// patch).
pub fn unsupported_media_type_message(accepted: &[&str]) -> String {
    format!(
        "the body of the request was in an unknown format - accepted media types include: {}",
        accepted.join(", ")
    )
}

/// Per-field patch metadata, as the OpenAPI schemas carry it in `x-kubernetes-patch-strategy` and
/// `x-kubernetes-patch-merge-key`. A node describes one field (or list element); strategic merge
/// walks it alongside the object.
pub trait PatchSchema {
    /// The sub-schema of field `name` under this one (None when unknown: the field is then merged
    /// like a JSON merge patch would, i.e. maps merge and lists are replaced).
    fn field(&self, name: &str) -> Option<Box<dyn PatchSchema + '_>>;
    /// For a list field: its element schema.
    fn items(&self) -> Option<Box<dyn PatchSchema + '_>>;
    /// `x-kubernetes-patch-strategy` of this field ("merge", "replace", "retainKeys",
    /// "merge,retainKeys").
    fn strategy(&self) -> Option<&str>;
    /// `x-kubernetes-patch-merge-key` of this list field.
    fn merge_key(&self) -> Option<&str>;
}

/// A schema that knows nothing: strategic merge then degrades to a JSON merge patch that still
/// honours `$patch` directives. For objects with no schema at hand.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSchema;

impl PatchSchema for NoSchema {
    fn field(&self, _name: &str) -> Option<Box<dyn PatchSchema + '_>> {
        None
    }
    fn items(&self) -> Option<Box<dyn PatchSchema + '_>> {
        None
    }
    fn strategy(&self) -> Option<&str> {
        None
    }
    fn merge_key(&self) -> Option<&str> {
        None
    }
}

/// Why a patch could not be applied. See the module docs for where each comes from upstream;
/// [`PatchError::status`] is what the API server answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// 415: the Content-Type is no patch type.
    #[error("{}", unsupported_media_type_message(&SUPPORTED_PATCH_MEDIA_TYPES))]
    UnsupportedMediaType { content_type: String },
    /// 415: server-side apply (`application/apply-patch+yaml`) is not implemented.
    #[error("{}", unsupported_media_type_message(&SUPPORTED_PATCH_MEDIA_TYPES))]
    ApplyNotSupported,
    /// 400: the patch body does not decode as the patch type requires.
    #[error("{0}")]
    MalformedPatch(String),
    /// 413: more than [`MAX_JSON_PATCH_OPERATIONS`] operations.
    #[error("The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {0}")]
    TooManyOperations(usize),
    /// 422: a JSON patch operation failed to apply. The text is for logs: upstream's Status carries
    /// only a generic message.
    #[error("{0}")]
    JsonPatchFailed(String),
    /// 400: a strategic merge patch directive is malformed.
    #[error("{0}")]
    StrategicBadRequest(String),
    /// 422: the strategic merge patch asks for something the format cannot do.
    #[error("{0}")]
    StrategicInvalid(String),
    /// 500: any other strategic merge failure; upstream answers these as internal errors.
    #[error("{0}")]
    StrategicInternal(String),
    /// 500: the object being patched is not a JSON object.
    #[error("{0}")]
    InvalidOriginal(String),
}

/// The parts of a `metav1.Status` failure a [`PatchError`] maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchErrorStatus {
    pub code: u16,
    /// `metav1.StatusReason`; "" is `StatusReasonUnknown`.
    pub reason: &'static str,
    pub message: String,
}

/// The message upstream's `NewGenericServerResponse` gives every 422.
const GENERIC_422_MESSAGE: &str = "the server rejected our request due to an error in our request";

impl PatchError {
    /// The HTTP code, reason and message upstream kube-apiserver answers this failure with.
    pub fn status(&self) -> PatchErrorStatus {
        let (code, reason, message) = match self {
            PatchError::UnsupportedMediaType { .. } | PatchError::ApplyNotSupported => {
                (415, "UnsupportedMediaType", self.to_string())
            }
            PatchError::MalformedPatch(_) | PatchError::StrategicBadRequest(_) => {
                (400, "BadRequest", self.to_string())
            }
            PatchError::TooManyOperations(_) => {
                (413, "RequestEntityTooLarge", format!("Request entity too large: {self}"))
            }
            PatchError::JsonPatchFailed(_) | PatchError::StrategicInvalid(_) => {
                (422, "Invalid", GENERIC_422_MESSAGE.to_string())
            }
            PatchError::StrategicInternal(_) | PatchError::InvalidOriginal(_) => (500, "", self.to_string()),
        };
        PatchErrorStatus { code, reason, message }
    }
}

/// Applies `patch` (the raw request body) to `original` and returns the patched object. `original`
/// is left untouched, so a failed patch never leaves a half-applied object behind. `schema` is the
/// object's root schema; only strategic merge patch reads it.
pub fn apply(
    patch_type: PatchType,
    original: &Value,
    patch: &[u8],
    schema: &dyn PatchSchema,
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => json_patch::apply(original.clone(), patch),
        PatchType::Merge => {
            // Upstream (evanphx/json-patch MergePatch) reports every undecodable merge patch, and a
            // bare `null`, with this one fixed message.
            let patch: Value = serde_json::from_slice(patch)
                .map_err(|_| PatchError::MalformedPatch("Invalid JSON Patch".to_string()))?;
            if patch.is_null() {
                return Err(PatchError::MalformedPatch("Invalid JSON Patch".to_string()));
            }
            Ok(merge_patch(original.clone(), patch))
        }
        PatchType::StrategicMerge => {
            let patch: Value =
                serde_json::from_slice(patch).map_err(|e| PatchError::MalformedPatch(e.to_string()))?;
            strategic::apply(original.clone(), patch, schema)
        }
        PatchType::ApplyYaml => Err(PatchError::ApplyNotSupported),
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key, anything else
/// (arrays included) replaces the target wholesale.
pub fn merge_patch(target: Value, patch: Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch;
    };
    // A non-object target is replaced by an object built from the patch alone, which also drops
    // the patch's nulls at every depth, as the RFC's recursive definition does.
    let mut target = match target {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            let current = target.remove(&key).unwrap_or(Value::Null);
            target.insert(key, merge_patch(current, value));
        }
    }
    Value::Object(target)
}
