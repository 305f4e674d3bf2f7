//! `POST serviceaccounts/<name>/token`: the TokenRequest subresource (`kubectl create token`), as
//! upstream's token REST storage answers it. The token is signed by `auth::serviceaccount`.

use api_types::ResourceDef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::auth::serviceaccount::Request;
use crate::error::{ApiError, ApiResult, Cause};
use crate::handlers::{json_response, read};
use crate::route::ResourcePath;
use crate::AppState;

/// `authentication.k8s.io/v1` TokenRequest: a body kind, never stored or listed.
static TOKEN_REQUEST: ResourceDef = ResourceDef {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    plural: "tokenrequests",
    singular: "tokenrequest",
    namespaced: true,
    etcd_prefix: "",
    short_names: &[],
    categories: &[],
    subresources: &[],
    stored: false,
    field_selectors: &[],
};

/// Upstream's defaults and limits for `spec.expirationSeconds`.
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 10 * 60;
const MAX_EXPIRATION: i64 = 1 << 32;

pub async fn create(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    // Without a signing key (--insecure-http) upstream does not register the subresource at all.
    let Some(keys) = st.config.auth.service_accounts.clone() else {
        return Err(ApiError::no_route());
    };
    let namespace = rp.namespace.clone().unwrap_or_default();
    let mut req = crate::handlers::decode_body(&TOKEN_REQUEST, headers, body)?;
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec.expirationSeconds: {v} is not an integer"
            ))
        })?,
    };
    let expiration = if expiration == 0 { DEFAULT_EXPIRATION } else { expiration };
    if expiration < MIN_EXPIRATION {
        let cause = Cause::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration less than 10 minutes",
        );
        return Err(ApiError::invalid(&TOKEN_REQUEST, name, vec![cause]));
    }
    if expiration > MAX_EXPIRATION {
        let cause = Cause::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        );
        return Err(ApiError::invalid(&TOKEN_REQUEST, name, vec![cause]));
    }
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = keys.audiences.clone();
    }

    let (sa, _) = read(st, rp, name).await?;
    let sa_uid = sa.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();

    // A token bound to a Pod or Secret lives only as long as that object.
    let bound_ref = spec.get("boundObjectRef").filter(|b| b.is_object()).cloned();
    let mut bound = None;
    if let Some(b) = &bound_ref {
        let field = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (kind, bound_name, want_uid) = (field("kind"), field("name"), field("uid"));
        let plural = match kind.as_str() {
            "Pod" => "pods",
            "Secret" => "secrets",
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to object of type {kind}"
                )))
            }
        };
        let Some(res) = api_types::resources::lookup("", "v1", plural) else {
            return Err(ApiError::internal(format!("no resource {plural}")));
        };
        let obj_rp = ResourcePath {
            res,
            namespace: Some(namespace.clone()),
            name: Some(bound_name.clone()),
            subresource: None,
        };
        let (obj, _) = read(st, &obj_rp, &bound_name).await?;
        let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
        if !want_uid.is_empty() && want_uid != uid {
            return Err(ApiError::conflict(
                res,
                &bound_name,
                &format!("the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"),
            ));
        }
        if kind == "Pod" {
            let pod_sa = obj.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
            if pod_sa != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                )));
            }
        }
        bound = Some((kind, bound_name, uid));
    }

    let now = jiff::Timestamp::now().as_second();
    let token = keys
        .issue(
            &Request {
                namespace: &namespace,
                name,
                uid: &sa_uid,
                audiences: &audiences,
                expiration_seconds: expiration,
                bound: bound.as_ref().map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
            },
            now,
        )
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .map_err(|e| ApiError::internal(format!("expiration: {e}")))?;
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
    if let (Some(b), Some((_, _, uid))) = (bound_ref, &bound) {
        let mut b = b;
        b["uid"] = json!(uid);
        spec_out["boundObjectRef"] = b;
    }
    req["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": null});
    req["spec"] = spec_out;
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(json_response(StatusCode::CREATED, &req))
}
