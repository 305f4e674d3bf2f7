//! `pods/eviction`: a policy/v1 (or v1beta1) Eviction deletes a pod only when its
//! PodDisruptionBudget allows it, as upstream's `pkg/registry/core/pod/storage/eviction.go`.
//!
//! - Pods that are Pending, finished, or already terminating are deleted at once: evicting them
//!   disrupts nothing more (upstream's `canIgnorePDB`).
//! - No PDB selecting the pod: deleted at once. More than one: 500, unsupported.
//! - A PDB whose `status.observedGeneration` lags its generation: 429 (retry after 10 s), the
//!   controller has not judged the new spec yet.
//! - An unready pod (not counted as healthy) is deleted without touching the budget when the PDB's
//!   `unhealthyPodEvictionPolicy` is `AlwaysAllow`, or (`IfHealthyBudget`, the default) when the
//!   budget is met; the delete then carries the pod's resourceVersion as precondition, so a pod
//!   that became ready meanwhile is not deleted.
//! - Otherwise `disruptionsAllowed` 0 answers 429 TooManyRequests with the `DisruptionBudget`
//!   cause; above 0 it is decremented and the pod recorded in `disruptedPods`, written at the
//!   revision read (a conflict re-reads and retries), and only then is the pod deleted.
//! - Before deleting, the pod gets the `DisruptionTarget` condition (`EvictionByEvictionAPI`).
//!
//! The Eviction's `deleteOptions` (grace period, preconditions, propagation) and dry run (from
//! the query or the options) are honoured; a dry run writes nothing at all.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::{delete_one, delete_opts, json_response, read, DeleteOpts};
use crate::objects::{decode, encode};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::{meta, AppState};

/// Upstream's `MaxDisruptedPodSize`.
const MAX_DISRUPTED_PODS: usize = 2000;
/// Upstream's `EvictionsRetry` steps.
const RETRIES: usize = 20;

pub const TOO_MANY_REQUESTS_MESSAGE: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn too_many_requests(cause: String, retry_after: i64) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    ApiError { details: Some(details), ..ApiError::new(429, "TooManyRequests", TOO_MANY_REQUESTS_MESSAGE) }
}

/// The Eviction body, as policy/v1 (a policy/v1beta1 one is the same shape).
fn decode_eviction(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let mut body = body.clone();
    if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&body) {
        if m.get("apiVersion").and_then(Value::as_str) == Some("policy/v1beta1") {
            m.insert("apiVersion".into(), json!("policy/v1"));
            body = Bytes::from(Value::Object(m).to_string());
        }
    }
    Ok(crate::handlers::decode_typed("policy", "v1", "Eviction", headers, &body)?.0)
}

/// The delete options the eviction carries, with the query's dry run folded in as upstream's
/// `propagateDryRun`: either may set it, and both setting different values is refused.
fn eviction_delete_opts(
    pods: &'static api_types::ResourceDef,
    eviction: &Value,
    params: &Params,
) -> ApiResult<DeleteOpts> {
    let query_dry_run = params.all("dryRun").to_vec();
    crate::params::dry_run_of("CreateOptions", &query_dry_run)?;
    let mut options = match eviction.get("deleteOptions") {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({}),
    };
    let body_dry_run: Vec<String> = options
        .get("dryRun")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if body_dry_run.is_empty() {
        options["dryRun"] = json!(query_dry_run);
    } else if !query_dry_run.is_empty() && query_dry_run != body_dry_run {
        return Err(ApiError::bad_request(format!(
            "Conflicting dryRun values: CreateOptions.dryRun {query_dry_run:?}, Eviction.deleteOptions.dryRun {body_dry_run:?}"
        )));
    }
    let mut headers = HeaderMap::new();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let empty = Params::parse(None)?;
    delete_opts(pods, &empty, &headers, &Bytes::from(options.to_string()))
}

fn pod_is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Upstream's `canIgnorePDB`: evicting these disrupts nothing the budget counts.
fn can_ignore_pdb(pod: &Value) -> bool {
    meta::deletion_timestamp(pod).is_some()
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed" | "Pending")
        )
}

/// Does the PDB select the pod? A PDB without a selector (or one that does not parse) selects
/// nothing; an empty selector selects every pod of the namespace (policy/v1).
pub fn pdb_selects(pdb: &Value, pod: &Value) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else { return false };
    let Ok(sel) =
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(sel.clone())
    else {
        return false;
    };
    let Ok(sel) = api_types::LabelSelector::from_k8s(&sel) else { return false };
    let labels = api_types::labels_of(pod);
    sel.matches(&labels)
}

/// The PDBs of the pod's namespace that select it, each with its revision, read from the store.
async fn pdbs_for(st: &AppState, pod: &Value, ns: &str) -> ApiResult<Vec<(Value, i64)>> {
    let Some(res) = api_types::resources::lookup("policy", "v1", "poddisruptionbudgets") else {
        return Ok(vec![]);
    };
    let name = meta::name(pod).unwrap_or("");
    let list = st
        .store
        .list(store::ListOptions { prefix: res.list_prefix(Some(ns)), ..Default::default() })
        .await
        .map_err(|e| ApiError::from_store(res, name, e))?;
    let mut out = Vec::new();
    for kv in &list.items {
        let pdb = decode(res, kv)?;
        if pdb_selects(&pdb, pod) {
            out.push((pdb, kv.mod_revision));
        }
    }
    Ok(out)
}

/// What the budget says about evicting one more healthy pod: `Ok(new status)` when allowed.
/// Upstream's `checkAndDecrement`, without the write.
pub fn check_and_decrement(pdb: &Value, pod_name: &str, now: &str) -> ApiResult<Value> {
    let pdb_name = meta::name(pdb).unwrap_or("");
    let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let generation = int("/metadata/generation");
    if int("/status/observedGeneration") < generation {
        return Err(too_many_requests(
            format!("The disruption budget {pdb_name} is still being processed by the server."),
            10,
        ));
    }
    let allowed = int("/status/disruptionsAllowed");
    let pdb_res = api_types::resources::lookup("policy", "v1", "poddisruptionbudgets");
    let forbidden = |why: &str| match pdb_res {
        Some(r) => ApiError::forbidden(r, pdb_name, why),
        None => ApiError::internal(why),
    };
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = pdb.pointer("/status/disruptedPods").and_then(Value::as_object);
    if disrupted.map_or(0, |m| m.len()) > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                int("/status/desiredHealthy"),
                int("/status/currentHealthy")
            ),
            0,
        ));
    }
    let mut status = pdb.get("status").cloned().unwrap_or_else(|| json!({}));
    status["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        set_disruption_allowed_condition(&mut status, false, generation, now);
    }
    let mut map = disrupted.cloned().unwrap_or_default();
    map.insert(pod_name.to_string(), json!(now));
    status["disruptedPods"] = Value::Object(map);
    Ok(status)
}

/// Upstream's `UpdateDisruptionAllowedCondition`: `DisruptionAllowed` True/SufficientPods or
/// False/InsufficientPods, its transition time moving only when the status does.
fn set_disruption_allowed_condition(status: &mut Value, allowed: bool, generation: i64, now: &str) {
    let (st, reason) = if allowed { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    let mut conds: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let prior = conds.iter().position(|c| c["type"] == "DisruptionAllowed");
    let since = match prior.map(|i| &conds[i]) {
        Some(c) if c["status"] == st => c.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
        _ => json!(now),
    };
    let cond = json!({
        "type": "DisruptionAllowed", "status": st, "reason": reason, "message": "",
        "observedGeneration": generation, "lastTransitionTime": since,
    });
    match prior {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
    status["conditions"] = json!(conds);
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// `POST .../pods/<name>/eviction`.
pub async fn evict(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let pods = rp.res;
    let eviction = decode_eviction(headers, body)?;
    if meta::name(&eviction) != Some(name) {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    if let (Some(ns), Some(want)) = (meta::namespace(&eviction).filter(|n| !n.is_empty()), &rp.namespace) {
        if ns != want {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let mut opts = eviction_delete_opts(pods, &eviction, params)?;
    let ns = rp.namespace.clone().unwrap_or_default();
    for _ in 0..RETRIES {
        let (pod, _) = read(st, rp, name).await?;
        if can_ignore_pdb(&pod) {
            return delete_evicted(st, rp, name, &opts).await;
        }
        let mut pdbs = pdbs_for(st, &pod, &ns).await?;
        if pdbs.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let Some((pdb, pdb_rev)) = pdbs.pop() else {
            return delete_evicted(st, rp, name, &opts).await;
        };
        let ready = pod_is_ready(&pod);
        let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let always_allow =
            pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
        let budget_met =
            int("/status/currentHealthy") >= int("/status/desiredHealthy") && int("/status/desiredHealthy") > 0;
        if !ready && (always_allow || budget_met) {
            // An unhealthy pod: deleting it takes nothing from the budget, as long as it is still
            // the pod judged here.
            if opts.resource_version.is_none() {
                opts.resource_version = meta::resource_version(&pod).map(str::to_string);
            }
            return delete_evicted(st, rp, name, &opts).await;
        }
        let status = check_and_decrement(&pdb, name, &meta::now_rfc3339())?;
        if !opts.dry_run {
            let Some(pdb_res) = api_types::resources::lookup("policy", "v1", "poddisruptionbudgets") else {
                return Err(ApiError::internal("poddisruptionbudgets are not served"));
            };
            let pdb_name = meta::name(&pdb).unwrap_or("").to_string();
            let mut new = pdb.clone();
            new["status"] = status;
            let key = pdb_res.key(Some(&ns), &pdb_name);
            match st.store.update(&key, encode(pdb_res, &new), pdb_rev, 0).await {
                Ok(_) => {}
                // The PDB changed since it was read: judge it again.
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(pdb_res, &pdb_name, e)),
            }
        }
        return delete_evicted(st, rp, name, &opts).await;
    }
    Err(ApiError::timeout(format!("couldn't update PodDisruptionBudget of pod {name:?} due to conflicts")))
}

/// Upstream's `addConditionAndDeletePod`: the pod gets `DisruptionTarget` (checking the delete's
/// preconditions first, and moving the resourceVersion one along with our own write), then is
/// deleted with the eviction's options.
async fn delete_evicted(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<Response> {
    let res = rp.res;
    let mut opts = DeleteOpts {
        grace: opts.grace,
        propagation: opts.propagation.clone(),
        uid: opts.uid.clone(),
        resource_version: opts.resource_version.clone(),
        dry_run: opts.dry_run,
    };
    if !opts.dry_run {
        let mut written = false;
        for _ in 0..RETRIES {
            let (pod, rev) = read(st, rp, name).await?;
            opts.check_preconditions(res, name, &pod)?;
            let mut new = pod.clone();
            set_disruption_target(&mut new, &meta::now_rfc3339());
            match st.store.update(&crate::handlers::key(rp, name), encode(res, &new), rev, 0).await {
                Ok(kv) => {
                    if opts.resource_version.is_some() {
                        opts.resource_version = Some(kv.mod_revision.to_string());
                    }
                    written = true;
                    break;
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(res, name, e)),
            }
        }
        if !written {
            return Err(ApiError::modified(res, name));
        }
    }
    delete_one(st, rp, name, &opts).await?;
    Ok(json_response(StatusCode::CREATED, &success()))
}

/// The `DisruptionTarget` pod condition the eviction API sets (its transition time moves only when
/// its status does).
fn set_disruption_target(pod: &mut Value, now: &str) {
    let mut conds: Vec<Value> =
        pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let prior = conds.iter().position(|c| c["type"] == "DisruptionTarget");
    let since = match prior.map(|i| &conds[i]) {
        Some(c) if c["status"] == "True" => c.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
        _ => json!(now),
    };
    let cond = json!({
        "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting", "lastProbeTime": null, "lastTransitionTime": since,
    });
    match prior {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
    meta::set_path(pod, &["status", "conditions"], json!(conds));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": allowed, "observedGeneration": observed,
                       "desiredHealthy": 2, "currentHealthy": 2 + allowed, "expectedPods": 3},
        })
    }

    #[test]
    fn zero_allowed_is_429_with_the_budget_cause() {
        let e = check_and_decrement(&pdb(0, 1, 1), "p", "2026-01-01T00:00:00Z").unwrap_err();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.message, TOO_MANY_REQUESTS_MESSAGE);
        let cause = &e.details.unwrap()["causes"][0];
        assert_eq!(cause["reason"], "DisruptionBudget");
        assert_eq!(cause["message"], "The disruption budget web needs 2 healthy pods and has 2 currently");
    }

    #[test]
    fn lagging_generation_is_429_retry_later() {
        let e = check_and_decrement(&pdb(1, 2, 1), "p", "2026-01-01T00:00:00Z").unwrap_err();
        assert_eq!(e.code, 429);
        let d = e.details.unwrap();
        assert_eq!(d["retryAfterSeconds"], 10);
        assert_eq!(
            d["causes"][0]["message"],
            "The disruption budget web is still being processed by the server."
        );
    }

    #[test]
    fn negative_allowed_is_forbidden() {
        assert_eq!(check_and_decrement(&pdb(-1, 1, 1), "p", "t").unwrap_err().code, 403);
    }

    #[test]
    fn allowed_decrements_and_records_the_pod() {
        let s = check_and_decrement(&pdb(2, 1, 1), "p", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(s["disruptionsAllowed"], 1);
        assert_eq!(s["disruptedPods"]["p"], "2026-01-01T00:00:00Z");
        assert!(s.get("conditions").is_none());
        let s = check_and_decrement(&pdb(1, 1, 1), "p", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(s["disruptionsAllowed"], 0);
        assert_eq!(s["conditions"][0]["reason"], "InsufficientPods");
        assert_eq!(s["conditions"][0]["status"], "False");
    }

    #[test]
    fn selectors() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(pdb_selects(&pdb(0, 1, 1), &pod));
        assert!(!pdb_selects(&json!({"spec": {}}), &pod));
        assert!(pdb_selects(&json!({"spec": {"selector": {}}}), &pod));
        assert!(!pdb_selects(&json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}), &pod));
    }

    #[test]
    fn terminal_pending_and_terminating_pods_skip_the_budget() {
        assert!(can_ignore_pdb(&json!({"status": {"phase": "Succeeded"}})));
        assert!(can_ignore_pdb(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_pdb(
            &json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_pdb(&json!({"status": {"phase": "Running"}})));
    }
}
