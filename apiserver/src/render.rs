//! Rendering responses: plain JSON objects and lists, or a `meta.k8s.io/v1` Table when the client
//! asks for one (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, as kubectl get does).

use api_types::ResourceDef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::json_response;
use crate::params::Params;

/// Whether the client accepts a Table (and prefers it).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            let m = m.replace(' ', "");
            m.contains("as=Table") && m.contains("g=meta.k8s.io") && m.starts_with("application/json")
        })
}

/// Table options for a request: now, and `includeObject` (upstream rejects unknown values with 400).
pub fn table_options(params: Option<&Params>) -> ApiResult<api_types::printing::TableOptions> {
    let mut opts = api_types::printing::TableOptions::new(jiff::Timestamp::now());
    if let Some(v) = params.and_then(|p| p.get("includeObject")) {
        opts.include_object = api_types::printing::IncludeObject::from_query(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "includeObject: Unsupported value: \"{v}\": supported values: \"Metadata\", \"None\", \"Object\""
            ))
        })?;
    }
    Ok(opts)
}

pub fn object(res: &ResourceDef, obj: Value, rev: i64, headers: &HeaderMap) -> Response {
    object_with_code(res, obj, rev, headers, StatusCode::OK)
}

pub fn object_with_code(
    res: &ResourceDef,
    obj: Value,
    rev: i64,
    headers: &HeaderMap,
    code: StatusCode,
) -> Response {
    if wants_table(headers) {
        let opts = api_types::printing::TableOptions::new(jiff::Timestamp::now());
        let mut t = api_types::printing::table(res, std::slice::from_ref(&obj), &opts);
        t["metadata"] = json!({"resourceVersion": rev.to_string()});
        return json_response(code, &t);
    }
    json_response(code, &obj)
}

pub fn list(
    res: &ResourceDef,
    items: Vec<Value>,
    list_meta: Value,
    headers: &HeaderMap,
    params: &Params,
) -> ApiResult<Response> {
    if wants_table(headers) {
        let mut t = api_types::printing::table(res, &items, &table_options(Some(params))?);
        t["metadata"] = list_meta;
        return Ok(json_response(StatusCode::OK, &t));
    }
    let list = json!({
        "kind": res.list_kind(),
        "apiVersion": res.api_version(),
        "metadata": list_meta,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}
