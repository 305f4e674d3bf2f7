//! Create, update, patch, and the update path they share.

use api_types::ResourceDef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::error::{ApiError, ApiResult};
use crate::managed::{self, Manager};
use crate::objects::{decode, encode, parse_rv, set_kind};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::strategy::{self, Half};
use crate::{meta, AppState};

/// Creates in a namespace only if it exists and is not terminating.
pub(crate) async fn check_namespace_accepts(st: &AppState, rp: &ResourcePath) -> ApiResult<()> {
    let Some(ns) = rp.namespace.as_deref().filter(|_| rp.res.namespaced) else { return Ok(()) };
    let ns_res = api_types::resources::lookup("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    let key = ns_res.key(None, ns);
    // The watch cache answers for namespaces it has; one it lacks may be brand new, so the store
    // has the last word (upstream's namespace lifecycle admission does the same).
    let cached = st.cacher.cache(&st.store, ns_res).and_then(|c| c.get(&key));
    let obj = match cached {
        Some(obj) => obj,
        None => {
            let kv = st.store.get(&key).await.map_err(|e| ApiError::from_store(ns_res, ns, e))?;
            std::sync::Arc::new(decode(ns_res, &kv)?)
        }
    };
    if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        || meta::deletion_timestamp(&obj).is_some()
    {
        let name = "";
        return Err(ApiError {
            details: Some(json!({"name": name, "kind": rp.res.plural})),
            ..ApiError::forbidden(
                rp.res,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            )
        });
    }
    Ok(())
}

pub(crate) fn random_suffix() -> String {
    // Upstream's alphabet for generated names: no vowels (no words), no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

pub(crate) async fn create(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
    user: Option<&crate::auth::UserInfo>,
) -> ApiResult<Response> {
    let dry_run = params.dry_run("CreateOptions")?;
    let manager = Manager::of(params, headers, None)?;
    let (mut obj, warnings) = decode_validated(rp.res, params, headers, body)?;
    if rp.res.kind == "CertificateSigningRequest" {
        requested_by(&mut obj, user);
    }
    create_object(st, rp, headers, obj, &warnings, &manager, dry_run).await
}

/// Upstream's CSR PrepareForCreate: who asked is the authenticated requester, whatever the body
/// says (`spec.username`, `uid`, `groups`, `extra` replaced; none without authentication).
fn requested_by(obj: &mut Value, user: Option<&crate::auth::UserInfo>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if let Some(u) = user {
        spec.insert("username".into(), json!(u.name));
        if !u.uid.is_empty() {
            spec.insert("uid".into(), json!(u.uid));
        }
        spec.insert("groups".into(), json!(u.groups));
        if !u.extra.is_empty() {
            spec.insert("extra".into(), json!(u.extra));
        }
    }
}

/// The create path after decoding: a POST's object, or the object a server-side apply creates.
pub(crate) async fn create_object(
    st: &AppState,
    rp: &ResourcePath,
    headers: &HeaderMap,
    mut obj: Value,
    warnings: &[String],
    manager: &Manager,
    dry_run: bool,
) -> ApiResult<Response> {
    let res = rp.res;
    check_namespace(rp, &mut obj)?;
    for field in ["resourceVersion", "uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta::remove(&mut obj, field);
    }
    let generate = meta::str_field(&obj, "generateName").map(str::to_string);
    if meta::name(&obj).is_none() {
        if let Some(prefix) = &generate {
            meta::set(&mut obj, "name", json!(format!("{}{}", truncate_prefix(prefix), random_suffix())));
        }
    }
    meta::set(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
    meta::set(&mut obj, "creationTimestamp", json!(meta::now_rfc3339()));
    strategy::prepare_create(res, &mut obj);
    if manager.applied {
        let entries = meta::meta(&obj).and_then(|m| m.get("managedFields")).cloned();
        managed::keep_applied(res, Half::Main, manager, &mut obj, entries);
    }
    crate::admission::on_create(st, res, &mut obj).await?;
    let name = meta::name(&obj).unwrap_or("").to_string();
    let mut causes = strategy::validate(res, &obj, None);
    causes.extend(managed::validate(&obj));
    if !causes.is_empty() {
        return Err(ApiError::invalid(res, &name, causes));
    }
    crate::admission::check_quota(st, res, &obj).await?;
    crate::admission::one_default_priority_class(st, res, &obj).await?;
    managed::record(res, manager, &mut obj, None);
    check_namespace_accepts(st, rp).await?;
    // An existing Service is AlreadyExists before its allocation could fail for its sake (the create
    // below still guards the race; other kinds allocate nothing, so they skip the extra read).
    if res.kind == "Service" {
        match st.store.get(&key(rp, &name)).await {
            Ok(_) => return Err(ApiError::already_exists(res, &name)),
            Err(store::Error::NotFound { .. }) => {}
            Err(e) => return Err(ApiError::from_store(res, &name, e)),
        }
    }
    let allocation = crate::services::allocate(st, res, &mut obj, None, dry_run).await?;
    if dry_run {
        // Everything ran but the write: the object as it would be, with no resourceVersion.
        return Ok(with_warnings(
            crate::render::object_with_code(res, obj, 0, headers, StatusCode::CREATED),
            warnings,
        ));
    }
    let mut retried_lease = false;
    let stored = loop {
        let lease = match crate::ttl::lease_for(st, res).await {
            Ok(lease) => lease,
            Err(e) => {
                allocation.release(st).await;
                return Err(e);
            }
        };
        match st.store.create(&key(rp, &name), encode(res, &obj), lease).await {
            // The shared lease was revoked before its time: forget it and write once more with a new one.
            Err(store::Error::LeaseNotFound { .. }) if lease != 0 && !retried_lease => {
                crate::ttl::forget(st, lease);
                retried_lease = true;
            }
            other => break other,
        }
    };
    match stored {
        Ok(kv) => {
            // The answer is the stored bytes with the resourceVersion spliced in (as a LIST writes
            // them), not a second serialization of `obj`; a Table or a converted kind takes the
            // encoder.
            if !crate::render::wants_table(headers) && !crate::objects::converts(res) {
                if let Some(bytes) = crate::objects::splice(res, &kv) {
                    let resp =
                        (StatusCode::CREATED, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes)
                            .into_response();
                    return Ok(with_warnings(resp, warnings));
                }
            }
            // What was stored is `obj`: no need to parse it back from the store's bytes.
            let mut obj = obj;
            meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
            Ok(with_warnings(
                crate::render::object_with_code(res, obj, kv.mod_revision, headers, StatusCode::CREATED),
                warnings,
            ))
        }
        Err(e) => {
            allocation.release(st).await;
            Err(ApiError::from_store(res, &name, e))
        }
    }
}

/// Upstream keeps generated names within 63 characters: the prefix is cut to leave room for 5.
pub(crate) fn truncate_prefix(prefix: &str) -> &str {
    let max = 63 - 5;
    if prefix.len() <= max {
        prefix
    } else {
        let mut end = max;
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        &prefix[..end]
    }
}

/// How one update-like request writes: the half it may change, who is writing (`managedFields`),
/// and whether it is a dry run (`?dryRun=All`: everything runs, nothing is written).
#[derive(Clone, Copy, Debug)]
pub struct UpdateCtx<'a> {
    pub half: Half,
    pub manager: &'a Manager,
    pub dry_run: bool,
}

/// The update path every write of an existing object goes through (PUT, PATCH, status, scale,
/// finalizer removal): prepare, validate, record the change in `managedFields` under the
/// manager, write at `old_rev`, or delete when the last finalizer of a deleting object is gone.
/// A dry run answers what would be stored (or deleted) and writes nothing.
#[allow(clippy::too_many_arguments)]
pub async fn write_update(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    ctx: UpdateCtx<'_>,
    mut new: Value,
    old: &Value,
    old_rev: i64,
) -> Result<(Value, i64), (ApiError, bool)> {
    let res = rp.res;
    let applied_entries =
        ctx.manager.applied.then(|| meta::meta(&new).and_then(|m| m.get("managedFields")).cloned());
    strategy::prepare_update(res, ctx.half, &mut new, old);
    if let Some(entries) = applied_entries {
        managed::keep_applied(res, ctx.half, ctx.manager, &mut new, entries);
    }
    meta::set(&mut new, "name", json!(name));
    let mut causes = strategy::validate(res, &new, Some(old));
    causes.extend(strategy::validate_update_half(res, ctx.half, &new, old));
    causes.extend(managed::validate(&new));
    if !causes.is_empty() {
        return Err((ApiError::invalid(res, name, causes), false));
    }
    if ctx.half == Half::Main {
        crate::admission::one_default_priority_class(st, res, &new).await.map_err(|e| (e, false))?;
    }
    managed::record(res, ctx.manager, &mut new, Some(old));
    let mut unchanged_new = new.clone();
    meta::remove(&mut unchanged_new, "resourceVersion");
    let mut unchanged_old = old.clone();
    meta::remove(&mut unchanged_old, "resourceVersion");
    if unchanged_new == unchanged_old {
        return Ok((old.clone(), old_rev));
    }
    let k = key(rp, name);
    if meta::deletion_timestamp(&new).is_some()
        && !strategy::holds_deletion(res, &new)
        && !pod_awaiting_kubelet(res, &new)
    {
        if ctx.dry_run {
            return Ok((new, old_rev));
        }
        return match st.store.delete(&k, Some(old_rev)).await {
            Ok(d) => {
                crate::services::after_delete(st, res, old).await;
                Ok((new, d.revision))
            }
            Err(StoreError::Conflict { .. }) => Err((ApiError::modified(res, name), true)),
            Err(e) => Err((ApiError::from_store(res, name, e), false)),
        };
    }
    if ctx.dry_run {
        meta::set(&mut new, "resourceVersion", json!(old_rev.to_string()));
        return Ok((new, old_rev));
    }
    let lease = crate::ttl::lease_for(st, res).await.map_err(|e| (e, false))?;
    match st.store.update(&k, encode(res, &new), old_rev, lease).await {
        Ok(kv) => Ok((decode(res, &kv).map_err(|e| (e, false))?, kv.mod_revision)),
        Err(StoreError::Conflict { .. }) => Err((ApiError::modified(res, name), true)),
        // The shared lease was revoked before its time: forget it; the retry takes a new one.
        Err(e @ StoreError::LeaseNotFound { .. }) if lease != 0 => {
            crate::ttl::forget(st, lease);
            Err((ApiError::from_store(res, name, e), true))
        }
        Err(e) => Err((ApiError::from_store(res, name, e), false)),
    }
}

/// A pod on a node with a grace period waits for its kubelet's final delete.
pub(crate) fn pod_awaiting_kubelet(res: &ResourceDef, obj: &Value) -> bool {
    res.kind == "Pod"
        && obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        && meta::meta(obj)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
}

/// What a transform hands [`update_loop`]: the object to write and the client's resourceVersion
/// precondition, if it gave one.
pub(crate) type Transformed = (Value, Option<i64>);

/// Upstream's GuaranteedUpdate at the API level, the one retry loop of every update-like request
/// (PUT, PATCH, status, scale, finalize): read, transform, write at the revision read. A conflict the
/// client caused (its precondition is stale) is a 409; one it did not (someone wrote in between) is
/// retried with a fresh read, so the transform must be free of side effects.
pub(crate) async fn update_loop<F>(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    ctx: UpdateCtx<'_>,
    mut transform: F,
) -> ApiResult<(Value, i64)>
where
    F: FnMut(&Value) -> ApiResult<Transformed>,
{
    for _ in 0..MAX_RETRIES {
        let (old, old_rev) = read(st, rp, name).await?;
        let (new, precondition) = transform(&old)?;
        if precondition.is_some_and(|p| p != old_rev) {
            return Err(ApiError::modified(rp.res, name));
        }
        match write_update(st, rp, name, ctx, new, &old, old_rev).await {
            Ok(done) => return Ok(done),
            Err((e, true)) if precondition.is_none() => {
                tracing::debug!(error = %e.message, "update conflict, retrying");
            }
            Err((e, _)) => return Err(e),
        }
    }
    Err(ApiError::modified(rp.res, name))
}

/// A client's resourceVersion, as the precondition of its write.
pub(crate) fn precondition_of(obj: &Value) -> ApiResult<Option<i64>> {
    meta::resource_version(obj).map(parse_rv).transpose()
}

pub(crate) async fn update(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    half: Half,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    let dry_run = params.dry_run("UpdateOptions")?;
    let (mut new, warnings) = decode_validated(res, params, headers, body)?;
    check_namespace(rp, &mut new)?;
    if let Some(n) = meta::name(&new) {
        if n != name {
            return Err(name_mismatch(n, name));
        }
    }
    let precondition = precondition_of(&new)?;
    let manager = Manager::of(params, headers, half.subresource())?;
    let ctx = UpdateCtx { half, manager: &manager, dry_run };
    match update_loop(st, rp, name, ctx, |_| Ok((new.clone(), precondition))).await {
        Ok((obj, rev)) => Ok(with_warnings(crate::render::object(res, obj, rev, headers), &warnings)),
        Err(e) if e.code == 404 && allow_create_on_update(res) && half == Half::Main => {
            // The kinds created by a PUT (allow_create_on_update) have no requester fields.
            create(st, rp, params, headers, body, None).await
        }
        Err(e) => Err(e),
    }
}

/// Upstream lets PUT create these (their writers upsert).
pub(crate) fn allow_create_on_update(res: &ResourceDef) -> bool {
    matches!(res.kind, "Endpoints" | "Lease" | "EndpointSlice")
}

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
    let dry_run = params.dry_run("PatchOptions")?;
    let patch_type = patch_type(headers)?;
    if patch_type == crate::patching::PatchType::ApplyYaml {
        return crate::apply::patch(st, rp, name, half, params, headers, body).await;
    }
    if params.get("force").is_some() {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            crate::error::Cause::forbidden("force", "may not be specified for non-apply patch"),
        ));
    }
    // Patch is an update transform: the same validation and conflict retry as PUT.
    let mut warnings = Vec::new();
    let manager = Manager::of(params, headers, half.subresource())?;
    let ctx = UpdateCtx { half, manager: &manager, dry_run };
    let (obj, rev) = update_loop(st, rp, name, ctx, |old| {
        let (mut patched, unknown) = crate::patching::apply(res, patch_type, old, body)?;
        set_kind(res, &mut patched);
        check_namespace(rp, &mut patched)?;
        // A resourceVersion in the patch that differs from the stored one is the client's precondition.
        let precondition = match meta::resource_version(&patched) {
            Some(rv) if Some(rv) != meta::resource_version(old) => Some(parse_rv(rv)?),
            _ => None,
        };
        if meta::name(&patched) != Some(name) {
            return Err(name_mismatch(meta::name(&patched).unwrap_or(""), name));
        }
        warnings = patch_field_validation(params, unknown)?;
        Ok((patched, precondition))
    })
    .await?;
    Ok(with_warnings(crate::render::object(res, obj, rev, headers), &warnings))
}
