//! `ApiError`: every failure the API server answers with, rendered as a `metav1.Status` with upstream's
//! code, reason and message (k8s.io/apimachinery/pkg/api/errors). The error *is* the response.

use api_types::ResourceDef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One validation failure inside an Invalid error (`details.causes`).
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// Upstream's cause type: FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, …
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }
    pub fn required(field: impl Into<String>) -> Cause {
        Cause { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
    }
    pub fn required_because(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {detail}"),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: impl std::fmt::Display, allowed: &[&str]) -> Cause {
        let list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {list}"),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {detail}") }
    }
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }
}

/// An error response: a `Status` with a code and reason.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `deployments.apps` or `pods`: how upstream names a resource in messages.
pub fn qualified(res: &ResourceDef) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

fn details(res: &ResourceDef, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn not_found(res: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            details: Some(details(res, name)),
            ..ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(res)))
        }
    }

    pub fn already_exists(res: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            details: Some(details(res, name)),
            ..ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(res)))
        }
    }

    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Some(details(res, name)),
            ..ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(res)),
            )
        }
    }

    /// The optimistic-concurrency conflict.
    pub fn modified(res: &ResourceDef, name: &str) -> ApiError {
        ApiError::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(res: &ResourceDef, name: &str, causes: Vec<Cause>) -> ApiError {
        let kind_group =
            if res.group.is_empty() { res.kind.to_string() } else { format!("{}.{}", res.kind, res.group) };
        let summary = causes
            .iter()
            .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
            .collect::<Vec<_>>();
        let summary = if summary.len() == 1 { summary[0].clone() } else { format!("[{}]", summary.join(", ")) };
        let mut d = json!({
            "name": name,
            "kind": res.kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        });
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        ApiError {
            details: Some(d),
            ..ApiError::new(422, "Invalid", format!("{kind_group} \"{name}\" is invalid: {summary}"))
        }
    }

    /// Invalid request options (`CreateOptions`, `DeleteOptions`, …, group `meta.k8s.io`), as
    /// upstream's handlers answer a failed `ValidateCreateOptions` and its siblings.
    pub fn invalid_options(kind: &str, cause: Cause) -> ApiError {
        let message = format!("{kind}.meta.k8s.io \"\" is invalid: {}: {}", cause.field, cause.message);
        let details = json!({
            "name": "", "group": "meta.k8s.io", "kind": kind,
            "causes": [{"reason": cause.reason, "message": cause.message, "field": cause.field}],
        });
        ApiError { details: Some(details), ..ApiError::new(422, "Invalid", message) }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn forbidden(res: &ResourceDef, name: &str, why: &str) -> ApiError {
        let msg = format!("{} \"{name}\" is forbidden: {why}", qualified(res));
        ApiError { details: Some(details(res, name)), ..ApiError::new(403, "Forbidden", msg) }
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// A path that names no resource: upstream answers 404 with reason NotFound and this message.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn no_route() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, "NotAcceptable", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, "Timeout", message)
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// The `metav1.Status` body as upstream's JSON encoder writes it: fields in the Go struct's
    /// order (`kind, apiVersion, metadata, status, message, reason, details, code`; details'
    /// `name, group, kind, uid, causes, retryAfterSeconds`; a cause's `reason, message, field`),
    /// followed by a newline. Clients compare this text (the Python client's e2e tests do).
    pub fn status_text(&self) -> String {
        let mut out = String::from(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure""#);
        let field = |out: &mut String, key: &str, value: &Value| {
            out.push_str(&format!(",{}:{value}", Value::from(key)));
        };
        field(&mut out, "message", &Value::from(self.message.as_str()));
        field(&mut out, "reason", &Value::from(self.reason));
        if let Some(d) = &self.details {
            out.push_str(",\"details\":");
            out.push_str(&ordered(d, &["name", "group", "kind", "uid", "causes", "retryAfterSeconds"]));
        }
        field(&mut out, "code", &Value::from(self.code));
        out.push_str("}\n");
        out
    }

    /// Maps a store error on `res`/`name` to the API error upstream gives.
    pub fn from_store(res: &ResourceDef, name: &str, e: store::Error) -> ApiError {
        use store::Error as E;
        match e {
            E::NotFound { .. } => ApiError::not_found(res, name),
            E::AlreadyExists { .. } => ApiError::already_exists(res, name),
            E::Conflict { .. } => ApiError::modified(res, name),
            E::Compacted { requested, compact_revision } => {
                ApiError::gone(format!("too old resource version: {requested} ({compact_revision})"))
            }
            E::FutureRevision { requested, current } => {
                ApiError::timeout(format!("Too large resource version: {requested}, current: {current}"))
            }
            E::ValueTooLarge { size, limit, .. } => ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: the object is {size} bytes, the store's limit is {limit}"),
            ),
            E::Unavailable(m) => ApiError::unavailable(m),
            other => ApiError::internal(other),
        }
    }
}

/// An object's text with `order`'s keys first, in that order (then any others, sorted); `causes`
/// entries ordered as `metav1.StatusCause`.
fn ordered(v: &Value, order: &[&str]) -> String {
    let Value::Object(map) = v else { return v.to_string() };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
    let fields: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let value = match (k.as_str(), &map[k]) {
                ("causes", Value::Array(causes)) => {
                    let causes: Vec<String> =
                        causes.iter().map(|c| ordered(c, &["reason", "message", "field"])).collect();
                    format!("[{}]", causes.join(","))
                }
                (_, other) => other.to_string(),
            };
            format!("{}:{value}", Value::from(k.as_str()))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.status_text();
        let mut resp = (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        // As upstream's response writer: a suggested retry is also the Retry-After header.
        let retry = self.details.as_ref().and_then(|d| d.get("retryAfterSeconds")).and_then(Value::as_i64);
        if let Some(secs) = retry.filter(|s| *s > 0) {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_is_upstreams_field_order_and_newline() {
        let ns = api_types::resources::lookup("", "v1", "namespaces").unwrap();
        let text = ApiError::already_exists(ns, "foo").status_text();
        assert_eq!(
            text,
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"namespaces \"foo\" already exists","reason":"AlreadyExists","#,
                r#""details":{"name":"foo","kind":"namespaces"},"code":409}"#,
                "\n"
            )
        );
        let deploy = api_types::resources::lookup("apps", "v1", "deployments").unwrap();
        let invalid = ApiError::invalid(deploy, "d", vec![Cause::required("spec.selector")]).status_text();
        assert!(
            invalid.contains(concat!(
                r#""details":{"name":"d","group":"apps","kind":"Deployment","causes":"#,
                r#"[{"reason":"FieldValueRequired","message":"Required value","field":"spec.selector"}]},"code":422}"#
            )),
            "{invalid}"
        );
        // The text is the same object as the Value form.
        let parsed: Value = serde_json::from_str(&invalid).unwrap();
        assert_eq!(parsed, ApiError::invalid(deploy, "d", vec![Cause::required("spec.selector")]).status());
        assert_eq!(
            ApiError::no_route().status_text(),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"the server could not find the requested resource","reason":"NotFound","code":404}"#,
                "\n"
            )
        );
    }
}
