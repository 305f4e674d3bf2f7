//! CustomResourceDefinitions in the API server: the hooks the generic handlers call for CRDs and
//! for custom resources, and the CRD controller of each API server instance.
//!
//! - CRD objects: names defaulted, validated with upstream's messages (`api_types::crd`), status
//!   (NamesAccepted, Established, acceptedNames, storedVersions) set on every write, the
//!   `customresourcecleanup.apiextensions.k8s.io` finalizer added on create.
//! - Custom resources: unknown fields pruned on decode (reported to field validation), schema
//!   defaults applied, validated against their version's schema and its `x-kubernetes-validations`
//!   CEL rules (`api_types::crd::cel`; transition rules with the stored object on update);
//!   generation tracked.
//! - The controller ([`start`], from `bootstrap`): lists the stored CRDs into this server's
//!   registry before the server serves (CRDs survive restarts), then watches the CRD prefix, so
//!   CRDs written by another API server on the same etcd appear and disappear here too. A CRD being
//!   deleted has its custom resources deleted first (through the API, so their own finalizers hold),
//!   then its finalizer removed, which deletes it; the registry then drops its resources.
//!
//! The loop holds the server's state weakly: it ends when the server's state is dropped.

use std::time::Duration;

use api_types::crd::{self as crds, CustomResource, Violation};
use api_types::ResourceDef;
use axum::http::Method;
use futures::StreamExt;
use serde_json::{json, Value};
use store::ListOptions;

use crate::error::Cause;
use crate::server::WeakState;
use crate::AppState;

pub const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Whether `res` is the CustomResourceDefinition resource.
pub fn is_crd(res: &ResourceDef) -> bool {
    res.group == "apiextensions.k8s.io" && res.kind == "CustomResourceDefinition"
}

/// The custom resource behind `res`, None for built-ins.
pub fn custom(res: &ResourceDef) -> Option<&'static CustomResource> {
    crds::custom(res)
}

fn cause(v: Violation) -> Cause {
    Cause { reason: v.reason, field: v.field, message: v.message }
}

/// Removes a custom resource's unknown fields; their paths, for field validation.
pub fn prune(cr: &CustomResource, obj: &mut Value) -> Vec<String> {
    crds::schema::prune(&cr.spec.schema, obj)
}

/// Create-time preparation beyond the generic one: CRDs get their defaults, status and finalizer;
/// custom resources their schema defaults.
pub fn prepare_create(res: &ResourceDef, obj: &mut Value) {
    if is_crd(res) {
        crds::default_names(obj);
        let status = crds::status_for(obj, None, None, &crate::meta::now_rfc3339());
        crate::meta::set_path(obj, &["status"], status);
        let mut finalizers = crate::meta::finalizers(obj);
        if !finalizers.iter().any(|f| f == crds::CLEANUP_FINALIZER) {
            finalizers.push(crds::CLEANUP_FINALIZER.to_string());
            crate::meta::set(obj, "finalizers", json!(finalizers));
        }
    } else if let Some(cr) = custom(res) {
        crds::schema::apply_defaults(&cr.spec.schema, obj);
    }
}

/// Update-time preparation: a CRD's status follows its spec (the server is its own controller);
/// custom resources get their schema defaults.
pub fn prepare_update(res: &ResourceDef, new: &mut Value, old: &Value) {
    if is_crd(res) {
        crds::default_names(new);
        let status = crds::status_for(new, old.get("status"), None, &crate::meta::now_rfc3339());
        crate::meta::set_path(new, &["status"], status);
    } else if let Some(cr) = custom(res) {
        crds::schema::apply_defaults(&cr.spec.schema, new);
    }
}

/// Validation beyond the generic metadata checks.
pub fn validate(res: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    if is_crd(res) {
        let v = match old {
            Some(old) => crds::validate_crd_update(obj, old),
            None => crds::validate_crd(obj),
        };
        return v.into_iter().map(cause).collect();
    }
    match custom(res) {
        Some(cr) => {
            let mut v = crds::schema::validate(&cr.spec.schema, obj);
            // As upstream: rules run on an object whose types are right.
            if !v.iter().any(|v| v.reason == "FieldValueTypeInvalid") {
                v.extend(crds::cel::validate(&cr.spec.schema, obj, old));
            }
            v.into_iter().map(cause).collect()
        }
        None => Vec::new(),
    }
}

/// A CRD's names against the other stored CRDs: on a conflict its status says NamesAccepted False
/// and it is not Established (so it serves nothing), as upstream's naming controller decides.
pub async fn admit_create(st: &AppState, obj: &mut Value) -> crate::error::ApiResult<()> {
    let others = list_crds(st).await.map_err(crate::error::ApiError::internal)?;
    if let Some(conflict) = crds::name_conflict(obj, &others) {
        let status = crds::status_for(obj, None, Some(conflict), &crate::meta::now_rfc3339());
        crate::meta::set_path(obj, &["status"], status);
    }
    Ok(())
}

async fn list_crds(st: &AppState) -> Result<Vec<Value>, String> {
    let list = st
        .store
        .list(ListOptions { prefix: CRD_PREFIX.to_string(), ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

/// Rebuilds this server's registry from the stored CRDs; returns them.
pub async fn refresh(st: &AppState) -> Result<Vec<Value>, String> {
    let crds = list_crds(st).await?;
    let mut defs: Vec<&'static ResourceDef> = Vec::new();
    for crd in &crds {
        for cr in crds::served(crd) {
            // Never shadow a built-in resource.
            if api_types::resources::lookup(cr.def.group, cr.def.version, cr.def.plural).is_none() {
                defs.push(&cr.def);
            }
        }
    }
    st.registry.set_dynamic(defs);
    Ok(crds)
}

/// Loads the stored CRDs into the registry, then keeps it current in the background.
pub async fn start(st: &AppState) {
    if let Err(e) = refresh(st).await {
        tracing::warn!(error = %e, "cannot list CustomResourceDefinitions at start");
    }
    let weak = st.downgrade();
    tokio::spawn(run(weak));
}

async fn run(weak: WeakState) {
    loop {
        let Some(st) = weak.upgrade() else { return };
        let store = st.store.clone();
        drop(st);
        let from = match store.current_revision().await {
            Ok(r) => r + 1,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let watch = match store.watch_revisions(CRD_PREFIX, from, false).await {
            Ok(w) => w,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        drop(store);
        // Anything written before the watch began is picked up by this refresh.
        if !step(&weak).await {
            return;
        }
        let mut watch = watch;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(1), watch.next()).await;
            match event {
                Ok(Some(Ok(_))) | Err(_) => {
                    if !step(&weak).await {
                        return;
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => break,
            }
        }
    }
}

/// One pass: refresh the registry, clean up CRDs being deleted. False once the server is gone.
async fn step(weak: &WeakState) -> bool {
    let Some(st) = weak.upgrade() else { return false };
    match refresh(&st).await {
        Ok(crds) => {
            for crd in crds.iter().filter(|c| c.pointer("/metadata/deletionTimestamp").is_some()) {
                if crate::meta::finalizers(crd).iter().any(|f| f == crds::CLEANUP_FINALIZER) {
                    if let Err(e) = cleanup(&st, crd).await {
                        tracing::warn!(error = %e, "CustomResourceDefinition cleanup");
                    }
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "CustomResourceDefinition refresh"),
    }
    true
}

/// Deletes a terminating CRD's custom resources; once none is left, removes its finalizer.
async fn cleanup(st: &AppState, crd: &Value) -> Result<(), String> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = crd.pointer("/status/acceptedNames/plural").and_then(Value::as_str).unwrap_or("");
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let terminating = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Terminating");
    if !terminating {
        // Upstream's Terminating condition, through the status subresource.
        let status = crds::status_for(crd, crd.get("status"), None, &crate::meta::now_rfc3339());
        let uri = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}/status");
        let patch = json!({"status": status});
        let (code, body) =
            crate::server::call_with(st, Method::PATCH, &uri, patch, "application/merge-patch+json").await?;
        if code != 200 && code != 404 {
            return Err(format!("marking {name} Terminating: {code} {body}"));
        }
    }
    if !group.is_empty() && !plural.is_empty() {
        let prefix = format!("/registry/{group}/{plural}/");
        let list = st
            .store
            .list(ListOptions { prefix: prefix.clone(), ..Default::default() })
            .await
            .map_err(|e| e.to_string())?;
        if !list.items.is_empty() {
            let version = st
                .registry
                .versions_of(group)
                .into_iter()
                .find(|v| st.registry.lookup(group, v, plural).is_some());
            let Some(version) = version else { return Err(format!("no served version of {name}")) };
            for kv in &list.items {
                let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let n = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                let uri = match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
                    Some(ns) if !ns.is_empty() => {
                        format!("/apis/{group}/{version}/namespaces/{ns}/{plural}/{n}")
                    }
                    _ => format!("/apis/{group}/{version}/{plural}/{n}"),
                };
                let (code, body) = crate::server::call(st, Method::DELETE, &uri, Value::Null).await?;
                if code != 200 && code != 202 && code != 404 {
                    return Err(format!("deleting {uri}: {code} {body}"));
                }
            }
            return Ok(());
        }
    }
    // Nothing left: drop the finalizer (the store delete follows in the update path).
    let uri = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
    let patch = json!([{"op": "test", "path": "/metadata/finalizers",
                        "value": crd.pointer("/metadata/finalizers").cloned().unwrap_or(Value::Null)},
                       {"op": "replace", "path": "/metadata/finalizers",
                        "value": crate::meta::finalizers(crd).into_iter().filter(|f| f != crds::CLEANUP_FINALIZER).collect::<Vec<_>>()}]);
    let (code, body) =
        crate::server::call_with(st, Method::PATCH, &uri, patch, "application/json-patch+json").await?;
    if code != 200 && code != 404 && code != 422 && code != 409 {
        return Err(format!("removing the finalizer of {name}: {code} {body}"));
    }
    Ok(())
}
