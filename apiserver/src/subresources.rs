//! Subresources other than status: `scale` (an `autoscaling/v1` Scale view of `spec.replicas`) and
//! `pods/binding` (the scheduler's assignment of a pod to a node). Both write through the same
//! update path as everything else. `pods/log` is proxied to the pod's kubelet (`podlog.rs`).

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::{json_response, precondition_of, read, update_loop, UpdateCtx};
use crate::managed::Manager;
use crate::objects::parse_rv;
use crate::params::Params;
use crate::route::ResourcePath;
use crate::strategy::Half;
use crate::{meta, AppState};

#[allow(clippy::too_many_arguments)]
pub async fn serve(
    st: &AppState,
    method: &Method,
    rp: &ResourcePath,
    name: &str,
    sub: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    match (method.as_str(), sub) {
        ("GET", "scale") if res.has(api_types::Subresource::Scale) => {
            let (obj, _) = read(st, rp, name).await?;
            Ok(json_response(StatusCode::OK, &scale_for(res, &obj)))
        }
        ("PATCH", "scale")
            if res.has(api_types::Subresource::Scale)
                && crate::handlers::patch_type(headers)? == api_types::patch::PatchType::ApplyYaml =>
        {
            crate::apply::patch_scale(st, rp, name, params, headers, body).await
        }
        ("PUT" | "PATCH", "scale") if res.has(api_types::Subresource::Scale) => {
            let patch_type =
                if method == Method::PATCH { Some(crate::handlers::patch_type(headers)?) } else { None };
            let options = if patch_type.is_some() { "PatchOptions" } else { "UpdateOptions" };
            let dry_run = params.dry_run(options)?;
            let manager = Manager::of(params, headers, Some("scale"))?;
            let ctx = UpdateCtx { half: Half::Main, manager: &manager, dry_run };
            let (updated, _) = update_loop(st, rp, name, ctx, |obj| {
                let scale = match patch_type {
                    Some(pt) => crate::patching::apply_scale(pt, &scale_for(res, obj), body)?,
                    None => crate::handlers::decode_typed("autoscaling", "v1", "Scale", headers, body)?.0,
                };
                let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                if replicas < 0 {
                    let cause = crate::error::Cause::invalid(
                        "spec.replicas",
                        replicas,
                        "must be greater than or equal to 0",
                    );
                    return Err(ApiError::invalid(res, name, vec![cause]));
                }
                let mut new = obj.clone();
                match crate::crd::custom(res).and_then(|cr| cr.spec.scale.as_ref()) {
                    Some(paths) => {
                        api_types::crd::printing::set(&paths.spec_replicas, &mut new, json!(replicas));
                    }
                    None => meta::set_path(&mut new, &["spec", "replicas"], json!(replicas)),
                }
                // A PUT's resourceVersion is the client's precondition; a patch's only when the patch
                // itself changed it (the rest came from the object just read).
                let precondition = match patch_type {
                    None => precondition_of(&scale)?,
                    Some(_) => match meta::resource_version(&scale) {
                        Some(rv) if Some(rv) != meta::resource_version(obj) => Some(parse_rv(rv)?),
                        _ => None,
                    },
                };
                Ok((new, precondition))
            })
            .await?;
            Ok(json_response(StatusCode::OK, &scale_for(res, &updated)))
        }
        ("POST", "binding") if res.kind == "Pod" => {
            let dry_run = params.dry_run("CreateOptions")?;
            let (binding, _) = crate::handlers::decode_typed("", "v1", "Binding", headers, body)?;
            bind(st, rp, name, &binding, dry_run).await
        }
        ("POST", "eviction") if res.has(api_types::Subresource::Eviction) => {
            crate::eviction::evict(st, rp, name, params, headers, body).await
        }
        ("POST", "token") if res.has(api_types::Subresource::Token) => {
            // Not a storage write: the options are checked, and a token is minted either way.
            params.dry_run("CreateOptions")?;
            crate::tokenrequest::create(st, rp, name, headers, body).await
        }
        ("GET", "log") if res.has(api_types::Subresource::Log) => {
            crate::podlog::serve(st, rp, name, params).await
        }
        ("PUT", "finalize") if res.has(api_types::Subresource::Finalize) => {
            let dry_run = params.dry_run("UpdateOptions")?;
            let new = crate::handlers::decode_body(res, headers, body)?;
            let precondition = precondition_of(&new)?;
            let manager = Manager::of(params, headers, Some("finalize"))?;
            let ctx = UpdateCtx { half: Half::Finalize, manager: &manager, dry_run };
            let (obj, rev) = update_loop(st, rp, name, ctx, |_| Ok((new.clone(), precondition))).await?;
            Ok(crate::render::object(res, obj, rev, headers))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// The Scale of any resource with the subresource: a custom resource's from its CRD's
/// `specReplicasPath`, `statusReplicasPath` and `labelSelectorPath`.
pub fn scale_for(res: &api_types::ResourceDef, obj: &Value) -> Value {
    let Some(paths) = crate::crd::custom(res).and_then(|cr| cr.spec.scale.as_ref()) else {
        return scale_of(obj);
    };
    let m = meta::meta(obj);
    let pick = |k: &str| m.and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    let at = |p: &str| api_types::crd::printing::first(p, obj).cloned();
    let mut status = json!({"replicas": at(&paths.status_replicas).and_then(|v| v.as_i64()).unwrap_or(0)});
    if let Some(sel) = paths.label_selector.as_deref().and_then(at).and_then(|v| v.as_str().map(str::to_string))
    {
        status["selector"] = json!(sel);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": at(&paths.spec_replicas).and_then(|v| v.as_i64()).unwrap_or(0)},
        "status": status,
    })
}

/// The autoscaling/v1 Scale of a deployment, replica set or replication controller.
pub fn scale_of(obj: &Value) -> Value {
    let m = meta::meta(obj);
    let pick = |k: &str| m.and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    let selector = match obj.pointer("/spec/selector") {
        Some(sel) if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() => {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(sel.clone())
                .ok()
                .and_then(|s| api_types::selectors::LabelSelector::from_k8s(&s).ok())
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        // ReplicationControllers select with a plain map.
        Some(Value::Object(map)) => {
            let mut pairs: Vec<String> =
                map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
            pairs.sort();
            pairs.join(",")
        }
        _ => String::new(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// `pods/binding` (and core/v1 `bindings`): sets `spec.nodeName` once, as the scheduler's bind.
/// `rp` addresses the pod.
pub(crate) async fn bind(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    binding: &Value,
    dry_run: bool,
) -> ApiResult<Response> {
    let res = rp.res;
    let node = binding.pointer("/target/name").and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some(node) = node else {
        return Err(ApiError::invalid(res, name, vec![crate::error::Cause::required("target.name")]));
    };
    for _ in 0..100 {
        let (pod, rev) = read(st, rp, name).await?;
        if meta::deletion_timestamp(&pod).is_some() {
            return Err(ApiError::conflict(
                res,
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(cur) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict(
                res,
                name,
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        let mut new = pod.clone();
        meta::set_path(&mut new, &["spec", "nodeName"], json!(node));
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()});
        let conds = new.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut conds: Vec<Value> =
            conds.into_iter().filter(|c| c.get("type") != Some(&json!("PodScheduled"))).collect();
        conds.push(cond);
        meta::set_path(&mut new, &["status", "conditions"], json!(conds));
        // Binding writes spec.nodeName and a status condition together, straight to the store at the
        // revision read: neither half's strategy would let both through.
        let status =
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        if dry_run {
            return Ok(json_response(StatusCode::CREATED, &status));
        }
        match st.store.update(&crate::handlers::key(rp, name), crate::objects::encode(res, &new), rev, 0).await
        {
            Ok(_) => return Ok(json_response(StatusCode::CREATED, &status)),
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(res, name, e)),
        }
    }
    Err(ApiError::modified(res, name))
}
