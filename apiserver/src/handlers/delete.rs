//! Delete and deletecollection.

use api_types::ResourceDef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::error::{ApiError, ApiResult};
use crate::objects::{decode, encode};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::strategy::{self};
use crate::{meta, AppState};

/// `DeleteOptions` from the body or the query.
#[derive(Debug, Default)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    /// The options' preconditions (uid, resourceVersion) against the current object: upstream's 409
    /// when one does not hold.
    pub fn check_preconditions(&self, res: &ResourceDef, name: &str, current: &Value) -> ApiResult<()> {
        if let Some(uid) = &self.uid {
            if meta::uid(current) != Some(uid.as_str()) {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(current).unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(rv) = &self.resource_version {
            if meta::resource_version(current) != Some(rv.as_str()) {
                return Err(ApiError::conflict(res, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta::resource_version(current).unwrap_or("")
                )));
            }
        }
        Ok(())
    }
}

pub fn delete_opts(
    res: &ResourceDef,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<DeleteOpts> {
    let mut o = DeleteOpts { grace: params.int("gracePeriodSeconds")?, ..Default::default() };
    o.propagation = params.get("propagationPolicy").map(str::to_string);
    if params.bool("orphanDependents")? {
        o.propagation = Some("Orphan".into());
    }
    // The body's options, where given, replace the query's (upstream decodes the query, then the body).
    let mut dry_run: Vec<String> = params.all("dryRun").to_vec();
    if !body.is_empty() {
        let invalid = |e: &dyn std::fmt::Display| {
            ApiError::bad_request(format!("the body of the request is not a valid DeleteOptions: {e}"))
        };
        let v: Value = if media_type(headers) == api_types::protobuf::CONTENT_TYPE {
            // Typed clients send DeleteOptions as protobuf too.
            api_types::protobuf::decode_to_json(body, res.group, res.version, "DeleteOptions")
                .map_err(|e| invalid(&e))?
        } else {
            serde_json::from_slice(body).map_err(|e| invalid(&e))?
        };
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        o.uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        o.resource_version =
            v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        match v.get("dryRun") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                dry_run = list
                    .iter()
                    .map(|d| d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string()))
                    .collect();
            }
            Some(other) => {
                return Err(invalid(&format!(
                    "json: cannot unmarshal {} into Go struct field DeleteOptions.dryRun of type []string",
                    api_types::typecheck::json_kind(other)
                )))
            }
        }
    }
    o.dry_run = crate::params::dry_run_of("DeleteOptions", &dry_run)?;
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    if o.grace.is_some_and(|g| g < 0) {
        o.grace = Some(0);
    }
    Ok(o)
}

/// Resources whose upstream registry sets `ReturnDeletedObject`: a DELETE that removes the object
/// answers with the object as it was deleted, not a Status (`pkg/registry/core/*/storage`).
pub fn returns_deleted_object(res: &ResourceDef) -> bool {
    res.group.is_empty()
        && matches!(
            res.kind,
            "Pod"
                | "Service"
                | "ServiceAccount"
                | "Namespace"
                | "PersistentVolume"
                | "PersistentVolumeClaim"
                | "PodTemplate"
                | "ResourceQuota"
        )
}

/// Upstream's NamespaceLifecycle admission keeps these namespaces forever.
const IMMORTAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

fn is_immortal(res: &ResourceDef, name: &str) -> bool {
    res.kind == "Namespace" && res.group.is_empty() && IMMORTAL_NAMESPACES.contains(&name)
}

pub(crate) async fn delete(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let opts = delete_opts(rp.res, params, headers, body)?;
    let (code, out) = delete_one(st, rp, name, &opts).await?;
    Ok(json_response(code, &out))
}

/// Deletes one object: at once, or by marking it (deletionTimestamp) when finalizers or a pod's grace
/// period hold it.
pub async fn delete_one(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<(StatusCode, Value)> {
    let res = rp.res;
    if is_immortal(res, name) {
        return Err(ApiError::forbidden(res, name, "this namespace may not be deleted"));
    }
    for _ in 0..MAX_RETRIES {
        let (old, old_rev) = read(st, rp, name).await?;
        opts.check_preconditions(res, name, &old)?;
        let mut finalizers = meta::finalizers(&old);
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
            _ => {}
        }
        let on_node = res.kind == "Pod"
            && old.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let grace = if on_node {
            opts.grace.unwrap_or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
            })
        } else {
            0
        };
        let already = meta::deletion_timestamp(&old).is_some();
        let current_grace =
            meta::meta(&old).and_then(|m| m.get("deletionGracePeriodSeconds")).and_then(Value::as_i64);
        let mut with_added = old.clone();
        meta::set(&mut with_added, "finalizers", json!(finalizers));
        let must_wait = strategy::holds_deletion(res, &with_added) || grace > 0;
        if must_wait {
            if already && current_grace.is_none_or(|g| g <= grace) && finalizers == meta::finalizers(&old) {
                // Already being deleted, and this request shortens nothing.
                return Ok((StatusCode::OK, old));
            }
            let mut marked = old.clone();
            if !already || current_grace.is_some_and(|g| grace < g) {
                let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                meta::set(
                    &mut marked,
                    "deletionTimestamp",
                    json!(when.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                meta::set(&mut marked, "deletionGracePeriodSeconds", json!(grace));
            }
            if finalizers.is_empty() {
                meta::remove(&mut marked, "finalizers");
            } else {
                meta::set(&mut marked, "finalizers", json!(finalizers));
            }
            if res.kind == "Namespace" {
                meta::set_path(&mut marked, &["status", "phase"], json!("Terminating"));
            }
            if opts.dry_run {
                return Ok((StatusCode::OK, marked));
            }
            match st.store.update(&key(rp, name), encode(res, &marked), old_rev, 0).await {
                Ok(kv) => return Ok((StatusCode::OK, decode(res, &kv)?)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(res, name, e)),
            }
        }
        let mut details = json!({"name": name, "kind": res.plural, "uid": meta::uid(&old).unwrap_or("")});
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details,
        });
        let answer = if returns_deleted_object(res) { old.clone() } else { status };
        if opts.dry_run {
            return Ok((StatusCode::OK, answer));
        }
        match st.store.delete(&key(rp, name), Some(old_rev)).await {
            Ok(_) => {
                crate::services::after_delete(st, res, &old).await;
                return Ok((StatusCode::OK, answer));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(res, name, e)),
        }
    }
    Err(ApiError::modified(res, name))
}

pub(crate) async fn delete_collection(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let opts = delete_opts(rp.res, params, headers, body)?;
    let (items, list_meta, _) = list_items(st, rp, params).await?;
    // A collection that holds a namespace which may not be deleted is refused whole, before anything
    // is deleted.
    if let Some(immortal) = items.iter().filter_map(meta::name).find(|n| is_immortal(rp.res, n)) {
        return Err(ApiError::forbidden(rp.res, immortal, "this namespace may not be deleted"));
    }
    let mut deleted = Vec::new();
    for obj in items {
        let Some(name) = meta::name(&obj).map(str::to_string) else { continue };
        let mut one = rp.clone();
        if rp.res.namespaced {
            one.namespace = meta::namespace(&obj).map(str::to_string);
        }
        match delete_one(st, &one, &name, &opts).await {
            Ok((_, out)) if out.get("kind").and_then(Value::as_str) != Some("Status") => deleted.push(out),
            Ok(_) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut list = json!({"kind": rp.res.list_kind(), "apiVersion": rp.res.api_version(), "metadata": list_meta, "items": deleted});
    if let Some(m) = list.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("continue");
        m.remove("remainingItemCount");
    }
    Ok(json_response(StatusCode::OK, &list))
}
