//! The PodDisruptionBudget status controller (upstream's `disruption` controller,
//! `pkg/controller/disruption`).
//!
//! Per PDB, from the caches: its pods (the selector, same namespace; an empty selector selects
//! every pod), then
//! - `expectedPods` and `desiredHealthy`: with an integer `minAvailable`, the pods found and that
//!   number; with `maxUnavailable` or a percentage, the summed `spec.replicas` of the pods'
//!   controllers (Deployment through its ReplicaSet, ReplicaSet, ReplicationController,
//!   StatefulSet), percentages rounded up (upstream's `getExpectedScale`). Pods without a
//!   controller are left out with an `UnmanagedPods` warning; a controller that cannot be found
//!   fails the sync: `disruptionsAllowed` 0 and `DisruptionAllowed` False/`SyncFailed`;
//! - `currentHealthy`: Ready pods not terminating and not recently evicted;
//! - `disruptedPods`: the eviction subresource's entries, kept until the pod is deleted or 2 min
//!   passed (then a `NotDeleted` warning on the pod), with a requeue at the earliest expiry;
//! - `disruptionsAllowed` = currentHealthy - desiredHealthy (0 when negative or nothing is
//!   expected), `observedGeneration`, and the `DisruptionAllowed` condition
//!   (`SufficientPods`/`InsufficientPods`).
//!
//! The status is written (with its resourceVersion) only when it changed. A second loop resets a
//! pod's `DisruptionTarget` condition to False when it was set more than 2 min ago and the pod was
//! never deleted (upstream's stale pod disruption handling: an eviction that did not finish).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::informer::{wait_ready, Informer};
use crate::queue::Controller;
use crate::{util, Stop};

pub const CONTROLLER: &str = "disruption-controller";
/// Upstream's `DeletionTimeout`: how long an evicted pod may take to be deleted.
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);
/// Upstream's `stalePodDisruptionTimeout`.
pub const STALE_POD_DISRUPTION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

pub const CONDITION: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

struct PdbCtx {
    ctx: Arc<Ctx>,
    pdbs: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let inf: Arc<Informer<PodDisruptionBudget>> = Informer::new(Api::all(ctx.client.clone()));
    let pdbs = inf.store();
    let pods = ctx.inf.pods.store();
    let mapper = {
        let pdbs = pdbs.clone();
        move |pod: Arc<Pod>| pdbs_of_pod(&pod, &pdbs)
    };
    let controller = Controller::for_shared_stream(inf.subscribe(), pdbs.clone())
        .watches_shared_stream(ctx.inf.pods.subscribe(), mapper);
    let work = async {
        let ready = async {
            wait_ready(&pdbs).await;
            ctx.informers_ready(&stop).await
        };
        let ready = tokio::select! {
            _ = stop.clone().wait() => false,
            r = ready => r,
        };
        if ready {
            let pctx = Arc::new(PdbCtx { ctx: ctx.clone(), pdbs, pods });
            tokio::join!(
                drive(CONTROLLER, controller, stop.clone(), 1, reconcile, pctx),
                stale_disruptions(ctx.clone(), stop.clone()),
            );
        }
    };
    // The PDB informer lives in this task, so it stops (or is aborted) with the controller.
    tokio::join!(inf.clone().run(stop.clone()), work);
}

/// Does the PDB select the pod? No selector selects nothing; an empty one selects every pod of
/// the namespace (policy/v1).
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.namespace() != pod.namespace() {
        return false;
    }
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    empty || util::selector_matches(Some(sel), pod.metadata.labels.as_ref())
}

fn pdbs_of_pod(pod: &Pod, pdbs: &Store<PodDisruptionBudget>) -> Vec<ObjectRef<PodDisruptionBudget>> {
    pdbs.state().iter().filter(|p| selects(p, pod)).map(|p| ObjectRef::from_obj(p.as_ref())).collect()
}

/// Upstream's `GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
pub fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let v = (p * i64::from(total) + 99).div_euclid(100);
            i32::try_from(v).map_err(|_| format!("invalid value {s:?}"))
        }
    }
}

/// What a PDB expects: (expectedPods, desiredHealthy, unmanaged pod names).
pub fn expected_pod_count(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale: impl Fn(&[Arc<Pod>]) -> Result<(i32, Vec<String>), String>,
) -> Result<(i32, i32, Vec<String>), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let (expected, unmanaged) = scale(pods)?;
        let max = scaled(max, expected)?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, vec![])),
        Some(pct @ IntOrString::String(_)) => {
            let (expected, unmanaged) = scale(pods)?;
            Ok((expected, scaled(pct, expected)?, unmanaged))
        }
        None => Ok((0, 0, vec![])),
    }
}

/// Upstream's `buildDisruptedPodMap`: the entries still awaiting their pod's deletion, the pods
/// whose entry expired (for a warning), and when the earliest kept entry expires.
pub fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Vec<Arc<Pod>>, Option<Timestamp>) {
    let mut kept = BTreeMap::new();
    let mut expired = Vec::new();
    let mut recheck: Option<Timestamp> = None;
    let Some(recorded) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (kept, expired, recheck);
    };
    for pod in pods {
        if util::is_terminating(&pod.metadata) {
            continue;
        }
        let Some(at) = recorded.get(&pod.name_any()) else { continue };
        let deadline = at.0 + DELETION_TIMEOUT;
        if deadline < now {
            expired.push(pod.clone());
        } else {
            recheck = Some(recheck.map_or(deadline, |r| r.min(deadline)));
            kept.insert(pod.name_any(), at.clone());
        }
    }
    (kept, expired, recheck)
}

/// Upstream's `countHealthyPods`.
pub fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| !util::is_terminating(&p.metadata))
        .filter(|p| disrupted.get(&p.name_any()).is_none_or(|at| at.0 + DELETION_TIMEOUT <= now))
        .filter(|p| util::pod_is_ready(p))
        .count() as i32
}

/// `apimeta.SetStatusCondition`: the transition time moves only when the status does.
fn set_condition(
    conds: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) {
    let since = match conds.iter().find(|c| c.type_ == CONDITION) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let cond = Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time: since,
    };
    match conds.iter_mut().find(|c| c.type_ == CONDITION) {
        Some(c) => *c = cond,
        None => conds.push(cond),
    }
}

/// The status upstream's `updatePdbStatus` writes.
pub fn desired_status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = pdb.metadata.generation.unwrap_or(0);
    let old = pdb.status.clone().unwrap_or_default();
    let mut conds = old.conditions.clone().unwrap_or_default();
    let (st, reason) = if allowed > 0 { ("True", SUFFICIENT_PODS) } else { ("False", INSUFFICIENT_PODS) };
    set_condition(&mut conds, st, reason, String::new(), generation, now);
    PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: Some(generation),
        conditions: Some(conds),
    }
}

/// The spec.replicas of each pod's controller, summed once per controller (upstream's
/// `getExpectedScale`), plus the pods that have no controller.
async fn expected_scale(pc: &PdbCtx, pods: &[Arc<Pod>]) -> Result<(i32, Vec<String>), String> {
    let inf = &pc.ctx.inf;
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        let Some(cref) = util::controller_ref(&pod.metadata) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if scales.contains_key(&cref.uid) {
            continue;
        }
        let group = cref.api_version.split_once('/').map_or("", |(g, _)| g);
        let found: Option<(String, i32)> = match (group, cref.kind.as_str()) {
            ("apps", "ReplicaSet") => {
                match inf.replicasets.store().get(&ObjectRef::new(&cref.name).within(&ns)) {
                    Some(rs) if rs.metadata.uid.as_deref() == Some(cref.uid.as_str()) => {
                        match util::controller_ref(&rs.metadata).filter(|r| r.kind == "Deployment") {
                            Some(dref) => inf
                                .deployments
                                .store()
                                .get(&ObjectRef::new(&dref.name).within(&ns))
                                .filter(|d| d.metadata.uid.as_deref() == Some(dref.uid.as_str()))
                                .map(|d| {
                                    (dref.uid.clone(), d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
                                }),
                            None => {
                                Some((cref.uid.clone(), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
                            }
                        }
                    }
                    _ => None,
                }
            }
            ("", "ReplicationController") => inf
                .rcs
                .store()
                .get(&ObjectRef::new(&cref.name).within(&ns))
                .filter(|rc| rc.metadata.uid.as_deref() == Some(cref.uid.as_str()))
                .map(|rc| (cref.uid.clone(), rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
            ("apps", "StatefulSet") => {
                let api: Api<StatefulSet> = Api::namespaced(pc.ctx.client.clone(), &ns);
                let sts = api.get_opt(&cref.name).await.map_err(|e| e.to_string())?;
                sts.filter(|s| s.metadata.uid.as_deref() == Some(cref.uid.as_str()))
                    .map(|s| (cref.uid.clone(), s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            _ => None,
        };
        let Some((uid, scale)) = found else {
            return Err(format!("found no controllers for pod {:?}", pod.name_any()));
        };
        scales.insert(uid.clone(), scale);
        // The pod's own controller (a Deployment's ReplicaSet) is known now too.
        scales.entry(cref.uid.clone()).or_insert(0);
    }
    Ok((scales.values().sum(), unmanaged))
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, pc: Arc<PdbCtx>) -> Result<Action, ReconcileError> {
    let ns = pdb.namespace().unwrap_or_default();
    let name = pdb.name_any();
    let Some(pdb) = pc.pdbs.get(&ObjectRef::new(&name).within(&ns)) else { return Ok(Action::await_change()) };
    if util::is_terminating(&pdb.metadata) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let mut pods: Vec<Arc<Pod>> = pc.pods.state().into_iter().filter(|p| selects(&pdb, p)).collect();
    pods.sort_by_key(|p| p.name_any());
    if pods.is_empty() {
        pc.ctx.events.normal(CONTROLLER, pdb.as_ref(), "NoPods", "No matching pods found".into());
    }
    let counted = match expected_pod_count(&pdb, &pods, |_| Err(String::new())) {
        // Only the scale lookups are asynchronous: compute them when the spec needs them.
        Err(_) => match expected_scale(&pc, &pods).await {
            Ok(found) => expected_pod_count(&pdb, &pods, |_| Ok(found.clone())),
            Err(e) => Err(e),
        },
        ok => ok,
    };
    let (expected, desired, unmanaged) = match counted {
        Ok(c) => c,
        Err(e) => {
            pc.ctx.events.warning(
                CONTROLLER,
                pdb.as_ref(),
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {e}"),
            );
            fail_safe(&pc, &pdb, &e, now).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    if !unmanaged.is_empty() {
        let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
        pc.ctx.events.warning(
            CONTROLLER,
            pdb.as_ref(),
            "UnmanagedPods",
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                sel.map(|s| serde_json::to_string(s).unwrap_or_default()).unwrap_or_default()
            ),
        );
    }
    let (disrupted, expired, recheck) = disrupted_pods(&pdb, &pods, now);
    for pod in &expired {
        pc.ctx.events.warning(
            CONTROLLER,
            pod.as_ref(),
            "NotDeleted",
            format!("Pod was expected by PDB {ns}/{name} to be deleted but it wasn't"),
        );
    }
    let healthy = count_healthy(&pods, &disrupted, now);
    let status = desired_status(&pdb, healthy, desired, expected, disrupted, now);
    if pdb.status.as_ref() != Some(&status) {
        write_status(&pc, &pdb, status).await?;
    }
    Ok(match recheck {
        Some(at) => Action::requeue(Duration::from_secs(at.duration_since(now).as_secs().max(1) as u64)),
        None => Action::await_change(),
    })
}

async fn write_status(
    pc: &PdbCtx,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), kube::Error> {
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(pc.ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    let mut new = pdb.clone();
    new.status = Some(status);
    match api.replace_status(&pdb.name_any(), &PostParams::default(), &new).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Upstream's `failSafe`: no disruptions allowed, and the condition says why.
async fn fail_safe(
    pc: &PdbCtx,
    pdb: &PodDisruptionBudget,
    why: &str,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let observed = status.observed_generation.unwrap_or(0);
    let mut conds = status.conditions.take().unwrap_or_default();
    set_condition(&mut conds, "False", SYNC_FAILED, why.to_string(), observed, now);
    status.conditions = Some(conds);
    if pdb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    write_status(pc, pdb, status).await
}

/// Is the pod's `DisruptionTarget` condition stale (True for over 2 min on a pod not deleted)?
/// Returns when it becomes stale otherwise.
pub fn stale_disruption(pod: &Pod, now: Timestamp) -> Option<Result<(), Timestamp>> {
    if util::is_terminating(&pod.metadata) {
        return None;
    }
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conds.iter().find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
    let at =
        c.last_transition_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0) + STALE_POD_DISRUPTION_TIMEOUT;
    Some(if at <= now { Ok(()) } else { Err(at) })
}

/// Resets stale `DisruptionTarget` conditions to False, checking every 15 s.
async fn stale_disruptions(ctx: Arc<Ctx>, stop: Stop) {
    let pods = ctx.inf.pods.store();
    loop {
        let now = Timestamp::now();
        for pod in pods.state() {
            if let Some(Ok(())) = stale_disruption(&pod, now) {
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
                let patch = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget", "status": "False",
                    "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                }]}});
                if let Err(e) =
                    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await
                {
                    tracing::debug!(error = %e, pod = %pod.name_any(), "resetting a stale DisruptionTarget failed");
                }
            }
        }
        tokio::select! {
            _ = stop.clone().wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn pod(name: &str, ready: bool, terminating: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                deletion_timestamp: terminating.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Ok(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 10), Ok(1));
        assert_eq!(scaled(&IntOrString::String("0%".into()), 10), Ok(0));
        assert_eq!(scaled(&IntOrString::Int(4), 10), Ok(4));
        assert!(scaled(&IntOrString::String("x".into()), 10).is_err());
    }

    #[test]
    fn expected_counts_per_spec_form() {
        let pods = vec![pod("a", true, false), pod("b", true, false)];
        let scale = |_: &[Arc<Pod>]| Ok((5, vec![]));
        assert_eq!(expected_pod_count(&pdb(Some(IntOrString::Int(2)), None), &pods, scale), Ok((2, 2, vec![])));
        assert_eq!(
            expected_pod_count(&pdb(Some(IntOrString::String("50%".into())), None), &pods, scale),
            Ok((5, 3, vec![]))
        );
        assert_eq!(expected_pod_count(&pdb(None, Some(IntOrString::Int(1))), &pods, scale), Ok((5, 4, vec![])));
        assert_eq!(expected_pod_count(&pdb(None, Some(IntOrString::Int(9))), &pods, scale), Ok((5, 0, vec![])));
        assert_eq!(
            expected_pod_count(&pdb(None, Some(IntOrString::String("30%".into()))), &pods, scale),
            Ok((5, 3, vec![]))
        );
        let failing = |_: &[Arc<Pod>]| Err("found no controllers for pod \"a\"".to_string());
        assert!(expected_pod_count(&pdb(None, Some(IntOrString::Int(1))), &pods, failing).is_err());
    }

    #[test]
    fn healthy_excludes_unready_terminating_and_recently_disrupted() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let pods =
            vec![pod("a", true, false), pod("b", false, false), pod("c", true, true), pod("d", true, false)];
        let mut disrupted = BTreeMap::new();
        disrupted.insert("d".to_string(), Time(now - SignedDuration::from_secs(10)));
        assert_eq!(count_healthy(&pods, &disrupted, now), 1);
        disrupted.insert("d".to_string(), Time(now - SignedDuration::from_secs(130)));
        assert_eq!(count_healthy(&pods, &disrupted, now), 2);
    }

    #[test]
    fn disrupted_entries_expire_and_recheck() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let mut p = pdb(Some(IntOrString::Int(1)), None);
        p.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(
                [
                    ("a".to_string(), Time(now - SignedDuration::from_secs(30))),
                    ("b".to_string(), Time(now - SignedDuration::from_secs(300))),
                    ("gone".to_string(), Time(now)),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let pods = vec![pod("a", true, false), pod("b", true, false)];
        let (kept, expired, recheck) = disrupted_pods(&p, &pods, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(expired.len(), 1);
        assert_eq!(recheck, Some(now + SignedDuration::from_secs(90)));
    }

    #[test]
    fn status_and_condition() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let p = pdb(Some(IntOrString::Int(2)), None);
        let s = desired_status(&p, 3, 2, 3, BTreeMap::new(), now);
        assert_eq!((s.disruptions_allowed, s.observed_generation), (1, Some(3)));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", SUFFICIENT_PODS));
        let s = desired_status(&p, 1, 2, 3, BTreeMap::new(), now);
        assert_eq!(s.disruptions_allowed, 0);
        assert_eq!(s.conditions.as_ref().unwrap()[0].reason, INSUFFICIENT_PODS);
        // Nothing expected: no disruptions, whatever the health.
        assert_eq!(desired_status(&p, 3, 0, 0, BTreeMap::new(), now).disruptions_allowed, 0);
    }

    #[test]
    fn empty_selector_selects_the_namespace_and_none_nothing() {
        let mut p = pdb(None, None);
        assert!(selects(&p, &pod("a", true, false)));
        p.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        assert!(selects(&p, &pod("a", true, false)));
        p.spec.as_mut().unwrap().selector = None;
        assert!(!selects(&p, &pod("a", true, false)));
    }

    #[test]
    fn stale_disruption_targets() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let mut p = (*pod("a", true, false)).clone();
        assert_eq!(stale_disruption(&p, now), None);
        p.status.as_mut().unwrap().conditions.as_mut().unwrap().push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            last_transition_time: Some(Time(now - SignedDuration::from_secs(200))),
            ..Default::default()
        });
        assert_eq!(stale_disruption(&p, now), Some(Ok(())));
    }
}
