//! The namespace controller: empties a Terminating namespace, then finalizes it.
//!
//! For a namespace with a deletionTimestamp: discover every namespaced resource from the API,
//! `deletecollection` each (list + delete where deletecollection is not served), count what is
//! left and which finalizers hold it, report upstream's five conditions, and once nothing is left
//! PUT `/finalize` without the `kubernetes` finalizer so the API server removes the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "namespace-controller";
const FINALIZER: &str = "kubernetes";

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let controller = Controller::for_shared_stream(ctx.inf.namespaces.subscribe(), ctx.inf.namespaces.store());
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_namespace_syncs;
    drive(CONTROLLER, controller, stop, concurrency, reconcile, ctx).await;
}

fn cond(type_: &str, status: &str, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if !u::is_terminating(&ns.metadata) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let client = ctx.client.clone();
    let mut discovery_failure = None;
    let mut content_failures: Vec<String> = Vec::new();
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    match Discovery::new(client.clone()).run().await {
        Err(e) => discovery_failure = Some(e.to_string()),
        Ok(d) => {
            for group in d.groups() {
                for (ar, caps) in group.recommended_resources() {
                    if !matches!(caps.scope, Scope::Namespaced) || !caps.supports_operation(verbs::LIST) {
                        continue;
                    }
                    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &ar);
                    let label = if ar.group.is_empty() {
                        ar.plural.clone()
                    } else {
                        format!("{}.{}", ar.plural, ar.group)
                    };
                    if caps.supports_operation(verbs::DELETE_COLLECTION) {
                        if let Err(e) =
                            api.delete_collection(&DeleteParams::default(), &ListParams::default()).await
                        {
                            if !u::is_not_found(&e) {
                                content_failures.push(format!("{label}: {e}"));
                            }
                        }
                    } else if caps.supports_operation(verbs::DELETE) {
                        if let Ok(list) = api.list(&ListParams::default()).await {
                            for o in list.items.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
                                if let Err(e) = api.delete(&o.name_any(), &DeleteParams::default()).await {
                                    if !u::is_not_found(&e) {
                                        content_failures.push(format!("{label}: {e}"));
                                    }
                                }
                            }
                        }
                    }
                    match api.list(&ListParams::default()).await {
                        Ok(list) if !list.items.is_empty() => {
                            remaining.insert(label, list.items.len());
                            for o in &list.items {
                                for f in o.finalizers() {
                                    *finalizers.entry(f.clone()).or_default() += 1;
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => content_failures.push(format!("{label}: {e}")),
                    }
                }
            }
        }
    }
    let mut conds = vec![
        match &discovery_failure {
            Some(e) => cond(
                "NamespaceDeletionDiscoveryFailure",
                "True",
                "DiscoveryFailed",
                format!("Discovery failed for some groups: {e}"),
            ),
            None => cond(
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
        },
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if content_failures.is_empty() {
            cond(
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            cond(
                "NamespaceDeletionContentFailure",
                "True",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    content_failures.len(),
                    content_failures.join(", ")
                ),
            )
        },
        if remaining.is_empty() {
            cond(
                "NamespaceContentRemaining",
                "False",
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            let parts: Vec<String> =
                remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
            cond(
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        },
        if finalizers.is_empty() {
            cond(
                "NamespaceFinalizersRemaining",
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            let parts: Vec<String> =
                finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
            cond(
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                format!("Some content in the namespace has finalizers remaining: {}", parts.join(", ")),
            )
        },
    ];
    // Keep transition times of conditions whose status and reason did not change (no churn).
    let old = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    for c in conds.iter_mut() {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason)
        {
            *c = o.clone();
        }
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
    let mut sorted_old = old.clone();
    sorted_old.sort_by(|a, b| a.type_.cmp(&b.type_));
    let mut sorted_new = conds.clone();
    sorted_new.sort_by(|a, b| a.type_.cmp(&b.type_));
    if phase != Some("Terminating") || sorted_old != sorted_new {
        let p = json!({"status": {"phase": "Terminating", "conditions": conds}});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&p)).await {
            Ok(_) => {}
            Err(e) if u::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if discovery_failure.is_some() || !content_failures.is_empty() || !remaining.is_empty() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // Empty: drop our finalizer through the finalize subresource.
    let fins: Vec<String> = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    let mut body = ns.as_ref().clone();
    body.metadata.managed_fields = None;
    body.spec.get_or_insert_with(Default::default).finalizers = Some(fins);
    match api.replace_subresource("finalize", &name, &PostParams::default(), &body).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if u::is_not_found(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
