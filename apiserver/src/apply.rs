//! Server-side apply: `PATCH` with `Content-Type: application/apply-patch+yaml`, as upstream's
//! apply patcher and field manager serve it. The body (YAML or JSON) is the manager's whole
//! intent for the object; `api_types::apply` merges it into the live object by the schema,
//! removes what the manager applied before and no longer does, moves field ownership
//! (`managedFields` `Apply` entries) and finds conflicts with other managers (409, or taken over
//! with `force=true`). The result then goes through the same update path as every write
//! (defaulting, validation, admission, dry run, the retry on a concurrent write), or, when the
//! object does not exist, through the create path (201).

use api_types::apply::{ApplyError, Writer};
use api_types::typecheck::{self, json_kind, Dialect};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::handlers::{
    check_namespace, create_object, name_mismatch, patch_field_validation, update_loop, with_warnings,
    UpdateCtx,
};
use crate::managed::{self, Manager};
use crate::objects::set_kind;
use crate::params::Params;
use crate::route::ResourcePath;
use crate::strategy::Half;
use crate::{meta, AppState};

/// An apply's options: `dryRun` and `force`, and the `fieldManager` it requires (upstream's 422
/// for a missing one).
fn apply_options(params: &Params) -> ApiResult<(bool, bool)> {
    let dry_run = params.dry_run("PatchOptions")?;
    if params.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            Cause {
                reason: "FieldValueRequired",
                field: "fieldManager".into(),
                message: "Required value: is required for apply patch".into(),
            },
        ));
    }
    Ok((dry_run, params.bool("force")?))
}

/// Serves an apply patch on `name` (its main resource or its status).
pub(crate) async fn patch(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    half: Half,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    let (dry_run, force) = apply_options(params)?;
    let mut manager = Manager::of(params, headers, half.subresource())?;
    manager.applied = true;
    let (config, unknown) = config_of(rp, name, body)?;
    let warnings = patch_field_validation(params, unknown)?;
    let node = managed::node_of(res);
    let api_version = res.api_version();
    let now = meta::now_rfc3339();
    let writer = Writer {
        manager: &manager.name,
        subresource: manager.subresource,
        api_version: &api_version,
        time: &now,
    };
    let run = |live: &Value| -> ApiResult<Value> {
        let applied = api_types::apply::apply(live, &config, &node, &writer, force)
            .map_err(|e| apply_error(rp, name, e))?;
        let mut obj = applied.object;
        set_kind(res, &mut obj);
        check_namespace(rp, &mut obj)?;
        meta::set(&mut obj, "name", json!(name));
        decode_result(res, obj)
    };
    let ctx = UpdateCtx { half, manager: &manager, dry_run };
    match update_loop(st, rp, name, ctx, |old| Ok((run(old)?, None))).await {
        Ok((obj, rev)) => Ok(with_warnings(crate::render::object(res, obj, rev, headers), &warnings)),
        Err(e) if e.code == 404 && half == Half::Main => {
            // Apply creates what does not exist yet.
            let obj = run(&json!({}))?;
            create_object(st, rp, headers, obj, &warnings, &manager, dry_run).await
        }
        Err(e) => Err(e),
    }
}

/// Server-side apply of a `scale` subresource (`kubectl apply --server-side --subresource=scale`):
/// as upstream's scale handler, the applied Scale's `spec.replicas` becomes the manager's applied
/// configuration of the parent's replicas field (`spec.replicas`, a custom resource's
/// `specReplicasPath`), owned by an `Apply` entry with `subresource: scale`, so conflicts with the
/// parent's other managers (409, or taken with `force=true`) are the parent's. Answers the Scale.
pub(crate) async fn patch_scale(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    let (dry_run, force) = apply_options(params)?;
    let mut manager = Manager::of(params, headers, Some("scale"))?;
    manager.applied = true;
    // The applied Scale, typed as upstream decodes it (a wrong type is its 400).
    let given: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !given.is_object() {
        return Err(ApiError::bad_request(format!(
            "error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(&given)
        )));
    }
    let mut scale = given.clone();
    typecheck::check_kind("autoscaling", "v1", "Scale", &mut scale, Dialect::Json)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let replicas = scale.pointer("/spec/replicas").cloned();
    if let Some(r) = replicas.as_ref().and_then(Value::as_i64).filter(|r| *r < 0) {
        let cause = Cause::invalid("spec.replicas", r, "must be greater than or equal to 0");
        return Err(ApiError::invalid(res, name, vec![cause]));
    }
    let mut config = json!({"apiVersion": res.api_version(), "kind": res.kind, "metadata": {"name": name}});
    if let Some(ns) = rp.namespace.as_deref().filter(|_| res.namespaced) {
        config["metadata"]["namespace"] = json!(ns);
    }
    if let Some(replicas) = replicas {
        match crate::crd::custom(res).and_then(|cr| cr.spec.scale.as_ref()) {
            Some(paths) => {
                api_types::crd::printing::set(&paths.spec_replicas, &mut config, replicas);
            }
            None => meta::set_path(&mut config, &["spec", "replicas"], replicas),
        }
    }
    let node = managed::node_of(res);
    let api_version = res.api_version();
    let now = meta::now_rfc3339();
    let writer =
        Writer { manager: &manager.name, subresource: Some("scale"), api_version: &api_version, time: &now };
    let ctx = UpdateCtx { half: Half::Main, manager: &manager, dry_run };
    let (updated, _) = update_loop(st, rp, name, ctx, |live| {
        let applied = api_types::apply::apply(live, &config, &node, &writer, force)
            .map_err(|e| apply_error(rp, name, e))?;
        let mut obj = applied.object;
        set_kind(res, &mut obj);
        Ok((decode_result(res, obj)?, None))
    })
    .await?;
    Ok(crate::handlers::json_response(
        axum::http::StatusCode::OK,
        &crate::subresources::scale_for(res, &updated),
    ))
}

/// The applied configuration: a YAML or JSON object of the resource's group-version and kind,
/// named as the URL, decoded as the kind (wrong types are upstream's 400, unknown fields dropped
/// and returned for field validation). A custom resource is pruned by its schema.
fn config_of(rp: &ResourcePath, name: &str, body: &Bytes) -> ApiResult<(Value, Vec<String>)> {
    let res = rp.res;
    let parsed: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let mut config = match parsed {
        Value::Object(_) => parsed,
        Value::Null => json!({}),
        other => {
            return Err(ApiError::bad_request(format!(
                "error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(&other)
            )))
        }
    };
    let want = res.api_version();
    let av = config.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if av != want {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {}, expected: {want}",
            if av.is_empty() { "/" } else { av }
        )));
    }
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {}: the kind in the data ({kind}) does not match the expected kind ({})",
            res.version, res.kind, res.kind
        )));
    }
    if let Some(n) = meta::name(&config) {
        if n != name {
            return Err(name_mismatch(n, name));
        }
    }
    if meta::meta(&config).is_some_and(|m| m.get("managedFields").is_some_and(|v| !v.is_null())) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    check_namespace(rp, &mut config)?;
    meta::set(&mut config, "name", json!(name));
    // The typed decode checks types and finds unknown fields; the configuration keeps only what
    // it said (the typed form adds the Go zero values of fields it left out, which are not the
    // manager's intent).
    let mut typed = config.clone();
    let mut unknown = typecheck::check_kind(res.group, res.version, res.kind, &mut typed, Dialect::Json)
        .map_err(|e| cannot(res, &e.0))?;
    let mut config = as_given(&typed, &config);
    if let Some(cr) = crate::crd::custom(res) {
        unknown.extend(crate::crd::prune(cr, &mut config));
    }
    Ok((config, unknown))
}

/// `typed` cut down to the keys `given` has (recursively; list items by position).
fn as_given(typed: &Value, given: &Value) -> Value {
    match (typed, given) {
        (Value::Object(t), Value::Object(g)) => Value::Object(
            t.iter().filter_map(|(k, tv)| g.get(k).map(|gv| (k.clone(), as_given(tv, gv)))).collect(),
        ),
        (Value::Array(t), Value::Array(g)) => {
            Value::Array(t.iter().zip(g).map(|(tv, gv)| as_given(tv, gv)).collect())
        }
        _ => typed.clone(),
    }
}

fn cannot(res: &api_types::ResourceDef, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {why}",
        res.kind, res.version, res.kind
    ))
}

/// The merged object decoded as the kind; a wrong type is upstream's 422 on `patch`.
fn decode_result(res: &api_types::ResourceDef, obj: Value) -> ApiResult<Value> {
    let mut typed = obj.clone();
    match typecheck::check_kind(res.group, res.version, res.kind, &mut typed, Dialect::Json) {
        Ok(_) => Ok(typed),
        Err(e) => {
            let cause = format!("Invalid value: {:?}: {}", obj.to_string(), e.0);
            Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: format!(" \"\" is invalid: patch: {cause}"),
                details: Some(
                    json!({"causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "patch"}]}),
                ),
            })
        }
    }
}

/// Conflicts are upstream's 409 with one cause per field; an object the schema cannot read is
/// the field manager's plain error, a 500 as upstream answers it.
fn apply_error(rp: &ResourcePath, name: &str, e: ApplyError) -> ApiError {
    match e {
        ApplyError::Conflicts(conflicts) => {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"),
                           "field": api_types::apply::fieldpath::display(p)})
                })
                .collect();
            ApiError {
                details: Some(json!({"causes": causes})),
                ..ApiError::new(409, "Conflict", ApplyError::conflict_message(&conflicts))
            }
        }
        ApplyError::Shape(e) => {
            let res = rp.res;
            let gv = res.api_version();
            let ns = rp.namespace.as_deref().filter(|_| res.namespaced).unwrap_or("");
            ApiError::internal(format!(
                "failed to create typed patch object ({gv}, Kind={} {ns}/{name}): {}",
                res.kind, e.0
            ))
        }
    }
}
