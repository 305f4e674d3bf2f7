//! The review kinds: created, answered, never stored (upstream's `pkg/registry/authentication` and
//! `pkg/registry/authorization` REST storages). Each asks kplane's own authenticator
//! (`auth::review_token`) or RBAC authorizer (`auth::rbac`), so the answers are the ones real
//! requests get.
//!
//! - `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`): the caller as
//!   authentication found it; TokenReview: the user behind `spec.token`, for `spec.audiences`.
//! - `authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth can-i`): may the caller do
//!   this?; SubjectAccessReview: may `spec.user`/`spec.groups` do this?; LocalSubjectAccessReview:
//!   the same, limited to the path's namespace; SelfSubjectRulesReview (`kubectl auth can-i
//!   --list`): every rule that applies to the caller in `spec.namespace`.
//!
//! Who may create them is RBAC's business like any request: the self reviews through upstream's
//! `system:basic-user`, the others through `system:auth-delegator` and `admin`.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::auth::rbac::{self, Attributes};
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult, Cause};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::AppState;

/// Answers a POST to a review resource.
pub async fn serve(
    st: &AppState,
    method: &Method,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &bytes::Bytes,
    user: Option<&UserInfo>,
) -> ApiResult<Response> {
    if method != Method::POST || rp.name.is_some() || rp.subresource.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    if rp.res.namespaced && rp.namespace.is_none() {
        // A namespaced review has no cluster-wide collection to create in.
        return Err(ApiError::no_route());
    }
    // Validated like any create's options, though nothing is ever written.
    let dry_run = params.dry_run("CreateOptions")?;
    if rp.res.kind == "Binding" {
        return create_binding(st, rp, headers, body, dry_run).await;
    }
    if rp.res.kind == "SelfSubjectReview" {
        // Who the caller is, as authentication found it. The body carries nothing to read.
        let user = match user {
            Some(u) => user_info(u),
            None => json!({"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}),
        };
        let obj = json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                         "metadata": {"creationTimestamp": null}, "status": {"userInfo": user}});
        return Ok(crate::handlers::json_response(StatusCode::CREATED, &obj));
    }
    let obj = crate::handlers::body::decode_body(rp.res, headers, body)?;
    let status = match rp.res.kind {
        "TokenReview" => token_review(st, &obj).await?,
        "SelfSubjectRulesReview" => rules_review(st, &obj, user).await?,
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            access_review(st, rp, &obj, user).await?
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(crate::handlers::json_response(StatusCode::CREATED, &answer(rp.res, obj, status)))
}

/// `POST /api/v1/namespaces/<ns>/bindings`: the Binding names the pod to bind, in the path's
/// namespace; answered as `pods/<name>/binding` is.
async fn create_binding(
    st: &AppState,
    rp: &ResourcePath,
    headers: &HeaderMap,
    body: &bytes::Bytes,
    dry_run: bool,
) -> ApiResult<Response> {
    let (binding, _) = crate::handlers::decode_typed("", "v1", "Binding", headers, body)?;
    let name = binding.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::invalid(rp.res, "", vec![Cause::required("metadata.name")]));
    }
    let ns = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    if !ns.is_empty() && Some(ns) != rp.namespace.as_deref() {
        // Upstream's check of an object's namespace against the request's.
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let Some(pods) = api_types::resources::lookup("", "v1", "pods") else { return Err(ApiError::no_route()) };
    let pod = ResourcePath {
        res: pods,
        namespace: rp.namespace.clone(),
        name: Some(name.to_string()),
        subresource: Some("binding".into()),
    };
    crate::subresources::bind(st, &pod, name, &binding, dry_run).await
}

/// The review as sent, with its type, an empty `metadata` shown as upstream's encoder shows a zero
/// ObjectMeta, and `status` filled in.
fn answer(res: &api_types::ResourceDef, obj: Value, status: Value) -> Value {
    let mut obj = match obj {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    obj.insert("kind".into(), json!(res.kind));
    obj.insert("apiVersion".into(), json!(res.api_version()));
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    obj.entry("spec").or_insert_with(|| json!({}));
    obj.insert("status".into(), status);
    Value::Object(obj)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `TokenReview`: the user behind `spec.token` (upstream's tokenreview REST).
async fn token_review(st: &AppState, obj: &Value) -> ApiResult<Value> {
    let token = obj.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request("token is required for TokenReview in authentication"));
    }
    let audiences = strings(obj.pointer("/spec/audiences"));
    Ok(match crate::auth::review_token(st, token, &audiences).await {
        Ok(id) => {
            let mut status = json!({"authenticated": true, "user": user_info(&id.user)});
            if !id.audiences.is_empty() {
                status["audiences"] = json!(id.audiences);
            }
            status
        }
        Err(None) => json!({"user": {}}),
        Err(Some(why)) => json!({"user": {}, "error": why}),
    })
}

/// An `authentication.k8s.io/v1` UserInfo: username, uid, groups, extra (uid and extra only when
/// set, as upstream's omitempty).
pub(crate) fn user_info(u: &UserInfo) -> Value {
    let mut user = Map::new();
    user.insert("username".into(), json!(u.name));
    if !u.uid.is_empty() {
        user.insert("uid".into(), json!(u.uid));
    }
    user.insert("groups".into(), json!(u.groups));
    if !u.extra.is_empty() {
        user.insert("extra".into(), json!(u.extra));
    }
    Value::Object(user)
}

/// Go's `%#v` of the internal NonResourceAttributes, as upstream's Invalid message prints it.
fn go_non_resource(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    format!("authorization.NonResourceAttributes{{Path:{:?}, Verb:{:?}}}", s("path"), s("verb"))
}

/// Upstream's validation of the three access reviews (`pkg/apis/authorization/validation`).
fn validate_access_review(kind: &str, obj: &Value, path_namespace: Option<&str>) -> Vec<Cause> {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let mut causes = Vec::new();
    match (resource, non_resource) {
        (Some(_), Some(n)) => causes.push(Cause::invalid(
            "spec.nonResourceAttributes",
            go_non_resource(n),
            "cannot be specified in combination with resourceAttributes",
        )),
        (None, None) => causes.push(Cause::invalid(
            "spec.resourceAttributes",
            "\"null\"",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        _ => {}
    }
    if kind != "SelfSubjectAccessReview" {
        let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
        if user.is_empty() && strings(spec.get("groups")).is_empty() {
            causes.push(Cause::invalid("spec.user", "\"\"", "at least one of user or group must be specified"));
        }
    }
    // metadata must be empty (but for a LocalSubjectAccessReview's namespace).
    let mut meta = obj.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    meta.remove("managedFields");
    meta.remove("creationTimestamp");
    let local = kind == "LocalSubjectAccessReview";
    let meta_namespace = if local { meta.remove("namespace") } else { None };
    if !meta.is_empty() {
        let detail = if local { "must be empty except for namespace" } else { "must be empty" };
        causes.push(Cause::invalid("metadata", Value::Object(meta), detail));
    }
    if local {
        // The object's namespace is the path's when the body gives none (upstream's create
        // handler fills it in before validation).
        let namespace = meta_namespace
            .as_ref()
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .or(path_namespace)
            .unwrap_or("");
        if let Some(r) = resource {
            let ns = r.get("namespace").and_then(Value::as_str).unwrap_or("");
            if ns != namespace {
                causes.push(Cause::invalid(
                    "spec.resourceAttributes.namespace",
                    format!("{ns:?}"),
                    "must match metadata.namespace",
                ));
            }
        }
        if let Some(n) = non_resource {
            causes.push(Cause::invalid(
                "spec.nonResourceAttributes",
                go_non_resource(n),
                "disallowed on this kind of request",
            ));
        }
    }
    causes
}

/// `SelfSubjectAccessReview`, `SubjectAccessReview`, `LocalSubjectAccessReview`: RBAC's decision
/// for the caller, or for the spec's user and groups.
async fn access_review(
    st: &AppState,
    rp: &ResourcePath,
    obj: &Value,
    user: Option<&UserInfo>,
) -> ApiResult<Value> {
    let kind = rp.res.kind;
    if kind == "LocalSubjectAccessReview" {
        // Upstream's create handler refuses a body whose namespace is not the path's, first.
        let body_ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let path_ns = rp.namespace.as_deref().unwrap_or("");
        if !body_ns.is_empty() && body_ns != path_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let causes = validate_access_review(kind, obj, rp.namespace.as_deref());
    if !causes.is_empty() {
        return Err(ApiError::invalid(rp.res, "", causes));
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let Some(attrs) = Attributes::of_review(&spec) else {
        return Err(ApiError::internal("validated review has no attributes"));
    };
    let subject = if kind == "SelfSubjectAccessReview" {
        match user {
            Some(u) => u.clone(),
            None => UserInfo::new("system:admin", &["system:masters", "system:authenticated"]),
        }
    } else {
        // The subject is exactly who the spec names: no implied groups, as upstream.
        UserInfo {
            name: spec.get("user").and_then(Value::as_str).unwrap_or("").to_string(),
            groups: strings(spec.get("groups")),
            ..Default::default()
        }
    };
    Ok(if st.config.auth.insecure {
        json!({"allowed": true, "reason": "no authorization in --insecure-http mode"})
    } else {
        match rbac::allowed(st, &subject, &attrs).await {
            Some(reason) => json!({"allowed": true, "reason": reason}),
            None => json!({"allowed": false}),
        }
    })
}

/// `SelfSubjectRulesReview`: the caller's rules in `spec.namespace` (upstream's
/// selfsubjectrulesreview REST over RBAC's `RulesFor`).
async fn rules_review(st: &AppState, obj: &Value, user: Option<&UserInfo>) -> ApiResult<Value> {
    let namespace = obj.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or("");
    if namespace.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let admin = UserInfo::new("system:admin", &["system:masters", "system:authenticated"]);
    let user = user.unwrap_or(&admin);
    if st.config.auth.insecure {
        return Ok(json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }));
    }
    let (resource_rules, non_resource_rules, errors) = rbac::rules_for(st, user, namespace).await;
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(format!("[{}]", errors.join(", ")));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn access_reviews_are_validated_as_upstream() {
        let none = json!({"spec": {}});
        assert_eq!(
            messages(&validate_access_review("SelfSubjectAccessReview", &none, None)),
            ["spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"]
        );
        let both = json!({"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/x", "verb": "get"}}});
        assert_eq!(
            messages(&validate_access_review("SelfSubjectAccessReview", &both, None)),
            ["spec.nonResourceAttributes: Invalid value: authorization.NonResourceAttributes{Path:\"/x\", Verb:\"get\"}: cannot be specified in combination with resourceAttributes"]
        );
        let nobody = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
        assert_eq!(
            messages(&validate_access_review("SubjectAccessReview", &nobody, None)),
            ["spec.user: Invalid value: \"\": at least one of user or group must be specified"]
        );
        assert!(validate_access_review("SelfSubjectAccessReview", &nobody, None).is_empty());
        let named = json!({"metadata": {"name": "x"}, "spec": {"user": "a", "nonResourceAttributes": {"path": "/", "verb": "get"}}});
        assert_eq!(
            messages(&validate_access_review("SubjectAccessReview", &named, None)),
            ["metadata: Invalid value: {\"name\":\"x\"}: must be empty"]
        );
        let elsewhere = json!({"spec": {"user": "a", "resourceAttributes": {"namespace": "b", "verb": "get"}}});
        assert_eq!(
            messages(&validate_access_review("LocalSubjectAccessReview", &elsewhere, Some("a"))),
            ["spec.resourceAttributes.namespace: Invalid value: \"b\": must match metadata.namespace"]
        );
        let here = json!({"metadata": {"namespace": "b"}, "spec": {"user": "a", "resourceAttributes": {"namespace": "b", "verb": "get"}}});
        assert!(validate_access_review("LocalSubjectAccessReview", &here, Some("b")).is_empty());
        let paths = json!({"spec": {"groups": ["g"], "nonResourceAttributes": {"path": "/x", "verb": "get"}}});
        assert_eq!(
            messages(&validate_access_review("LocalSubjectAccessReview", &paths, Some("a"))),
            ["spec.nonResourceAttributes: Invalid value: authorization.NonResourceAttributes{Path:\"/x\", Verb:\"get\"}: disallowed on this kind of request"]
        );
    }

    #[test]
    fn answers_keep_the_spec_and_fill_the_status() {
        let res = api_types::resources::lookup("authentication.k8s.io", "v1", "tokenreviews").unwrap();
        let out = answer(res, json!({"spec": {"token": "t"}}), json!({"authenticated": false}));
        assert_eq!(
            out,
            json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                   "metadata": {"creationTimestamp": null}, "spec": {"token": "t"},
                   "status": {"authenticated": false}})
        );
    }
}
