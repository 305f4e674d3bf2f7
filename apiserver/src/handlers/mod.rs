//! The generic handlers: one implementation of get, list, create, update, patch, delete and
//! deletecollection for every resource in the table. Per-resource behaviour comes from
//! `strategy.rs`; storage conventions from `objects.rs`.
//!
//! - `list.rs`: get and list (paging at one revision, continue tokens, resourceVersion semantics).
//! - `body.rs`: request bodies (JSON, YAML, protobuf), namespace checks, field validation.
//! - `write.rs`: create, update, patch, and `write_update`, the path every write of an existing
//!   object takes.
//! - `delete.rs`: delete with DeleteOptions, and deletecollection.

pub(crate) mod body;
mod delete;
mod list;
mod write;

pub(crate) use body::*;
pub(crate) use delete::*;
pub(crate) use list::*;
pub(crate) use write::*;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use store::{Error as StoreError, ListOptions};

use crate::error::{ApiError, ApiResult};
use crate::objects::decode;
use crate::params::Params;
use crate::route::ResourcePath;
use crate::strategy::Half;
use crate::AppState;

/// How often an update retries after a conflict it caused itself (no client precondition).
const MAX_RETRIES: usize = 100;

/// A JSON body; objects of built-in kinds (and their lists, and Status) in upstream's Go field order.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], api_types::goorder::to_vec(body))
        .into_response()
}

/// Dispatches a request on a resource path.
pub async fn dispatch(
    st: &AppState,
    method: &Method,
    rp: ResourcePath,
    params: Params,
    headers: &HeaderMap,
    body: Bytes,
    user: Option<&crate::auth::UserInfo>,
) -> ApiResult<Response> {
    let res = rp.res;
    if res.namespaced && rp.name.is_some() && rp.namespace.is_none() {
        // `/api/v1/pods/x`: a namespaced object needs its namespace.
        return Err(ApiError::no_route());
    }
    if !res.stored {
        return crate::synthetic::serve(st, method, &rp, &params, headers, &body, user).await;
    }
    match (method.as_str(), rp.name.as_deref(), rp.subresource.as_deref()) {
        ("GET", None, None) if params.bool("watch")? => crate::watch::serve(st, &rp, &params, headers).await,
        ("GET", None, None) => list(st, &rp, &params, headers).await,
        ("POST", None, None) if crate::crd::custom(res).is_some_and(|cr| cr.spec.terminating) => {
            // Upstream's answer while the CRD's cleanup runs.
            Err(ApiError {
                details: Some(serde_json::json!({"group": res.group, "kind": res.plural})),
                ..ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "create not allowed while custom resource definition is terminating",
                )
            })
        }
        ("POST", None, None) if rp.namespace.is_some() || !res.namespaced => {
            if matches!(res.plural, "nodes" | "leases") {
                let obj = decode_body(res, headers, &body)?;
                if let Some(refused) =
                    crate::auth::node_restriction_create(user, res, rp.namespace.as_deref(), &obj)
                {
                    return Err(refused);
                }
            }
            create(st, &rp, &params, headers, &body, user).await
        }
        ("DELETE", None, None) => delete_collection(st, &rp, &params, headers, &body).await,
        ("GET", Some(name), None) => get(st, &rp, name, headers).await,
        ("PUT", Some(name), sub @ (None | Some("status"))) => {
            let half = if sub.is_some() { Half::Status } else { Half::Main };
            update(st, &rp, name, half, &params, headers, &body).await
        }
        ("PATCH", Some(name), sub @ (None | Some("status"))) => {
            let half = if sub.is_some() { Half::Status } else { Half::Main };
            patch(st, &rp, name, half, &params, headers, &body).await
        }
        ("PUT", Some(name), Some("approval")) if res.has(api_types::Subresource::Approval) => {
            update(st, &rp, name, Half::Approval, &params, headers, &body).await
        }
        ("PATCH", Some(name), Some("approval")) if res.has(api_types::Subresource::Approval) => {
            patch(st, &rp, name, Half::Approval, &params, headers, &body).await
        }
        ("GET", Some(name), Some("approval")) if res.has(api_types::Subresource::Approval) => {
            get(st, &rp, name, headers).await
        }
        ("DELETE", Some(name), None) => delete(st, &rp, name, &params, headers, &body).await,
        ("GET", Some(name), Some("status")) if res.has(api_types::Subresource::Status) => {
            get(st, &rp, name, headers).await
        }
        (_, Some(name), Some(sub)) => {
            crate::subresources::serve(st, method, &rp, name, sub, &params, headers, &body).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

pub fn key(rp: &ResourcePath, name: &str) -> String {
    rp.res.key(rp.namespace.as_deref(), name)
}

/// Reads one object, or NotFound.
pub async fn read(st: &AppState, rp: &ResourcePath, name: &str) -> ApiResult<(Value, i64)> {
    let kv = st.store.get(&key(rp, name)).await.map_err(|e| ApiError::from_store(rp.res, name, e))?;
    Ok((decode(rp.res, &kv)?, kv.mod_revision))
}

pub(crate) fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}
