//! The Job controller (upstream's `pkg/controller/job`).
//!
//! A sync works from the caches (the Job as we last wrote it, if the cache lags behind that):
//! 1. count terminated pods through the `batch.kubernetes.io/job-tracking` finalizer, as upstream:
//!    a finished pod still carrying the finalizer goes into `status.uncountedTerminatedPods`
//!    (written first), then its finalizer is removed, and a later sync moves it into
//!    `succeeded`/`failed` (and `completedIndexes`/`failedIndexes`) once the finalizer is gone;
//!    so a pod is counted exactly once even across restarts and deleted pods;
//! 2. decide whether the Job is done: podFailurePolicy FailJob, backoffLimit (failed pods, or
//!    container restarts with OnFailure), activeDeadlineSeconds, maxFailedIndexes, failed indexes,
//!    successPolicy, completions; the interim condition (FailureTarget / SuccessCriteriaMet) comes
//!    first, active pods are deleted, and the final Failed / Complete once no pod is left running;
//! 3. suspend (active pods deleted, Suspended condition, startTime cleared; resume sets it anew);
//! 4. otherwise create or delete pods toward `parallelism` (NonIndexed: the remaining completions;
//!    Indexed: the pending indexes, in order), after the exponential back-off of failures, with
//!    expectations so a lagging cache never double-creates;
//! 5. write status only when it changed.
//!
//! Modules: `indexed` (completion indexes, interval strings), `policy` (back-off, failure and
//! success policies). The TTL-after-finished controller lives in `crate::ttlafterfinished`.

pub mod indexed;
pub mod policy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::context::{drive, Ctx, ReconcileError};
use crate::expectations::{Expectations, Seen};
use crate::queue::Controller;
use crate::{util, Stop};

use policy::Action as PolicyAction;

pub const CONTROLLER: &str = "job-controller";
/// The finalizer through which the controller counts each terminated pod exactly once.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// `spec.managedBy` of Jobs this controller manages (unset means the same).
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Upstream's `MaxPodCreateDeletePerSync`.
const MAX_CREATE_DELETE_PER_SYNC: usize = 500;

/// Per Job: the consecutive failures since the last success and when the last one happened
/// (upstream's in-memory backoff record), and the Job as our last status write returned it.
#[derive(Default)]
struct JobMemory {
    failures: u32,
    last_failure: Option<Instant>,
    written: Option<Arc<Job>>,
}

pub struct JobCtx {
    ctx: Arc<Ctx>,
    jobs: Store<Job>,
    pods: Store<Pod>,
    exp: Arc<Expectations>,
    memory: Mutex<HashMap<String, JobMemory>>,
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let jobs = ctx.inf.jobs.store();
    let pods = ctx.inf.pods.store();
    let exp = Arc::new(Expectations::default());
    // Pods still carrying our finalizer whose Job is gone (orphans): their finalizer is removed
    // by a small task, as upstream's orphan-pod cleanup does.
    let (orphans_tx, orphans_rx) = mpsc::unbounded_channel::<Arc<Pod>>();
    let mapper = {
        let (jobs, pods, exp) = (jobs.clone(), pods.clone(), exp.clone());
        move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            let cref = util::controller_ref(&pod.metadata)
                .filter(|r| r.kind == "Job" && r.api_version == "batch/v1")?;
            let pod_name = pod.name_any();
            let present = pods.get(&ObjectRef::new(&pod_name).within(&ns));
            if present.is_none() {
                exp.observe_gone(&key_of(&ns, &cref.name), &pod_name);
            }
            let job = jobs.get(&ObjectRef::new(&cref.name).within(&ns));
            if job.as_ref().and_then(|j| j.metadata.uid.as_deref()) != Some(cref.uid.as_str()) {
                if present.is_some() && has_finalizer(&pod) {
                    let _ = orphans_tx.send(pod.clone());
                }
                return None;
            }
            Some(ObjectRef::<Job>::new(&cref.name).within(&ns))
        }
    };
    let controller = Controller::for_shared_stream(ctx.inf.jobs.subscribe(), jobs.clone())
        .watches_shared_stream(ctx.inf.pods.subscribe(), mapper);
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_job_syncs;
    let jc = Arc::new(JobCtx { ctx, jobs, pods, exp, memory: Mutex::default() });
    let cleanup = tokio::spawn(orphan_cleanup(jc.clone(), orphans_rx, stop.clone()));
    drive(CONTROLLER, controller, stop, concurrency, reconcile, jc).await;
    cleanup.abort();
}

/// Removes our finalizer from pods whose Job no longer exists (checked live first).
async fn orphan_cleanup(jc: Arc<JobCtx>, mut rx: mpsc::UnboundedReceiver<Arc<Pod>>, stop: Stop) {
    loop {
        let pod = tokio::select! {
            _ = stop.clone().wait() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let ns = pod.namespace().unwrap_or_default();
        let Some(cref) = util::controller_ref(&pod.metadata).cloned() else { continue };
        let jobs: Api<Job> = Api::namespaced(jc.ctx.client.clone(), &ns);
        match jobs.get_opt(&cref.name).await {
            Ok(Some(j)) if j.metadata.uid.as_deref() == Some(cref.uid.as_str()) => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        let api: Api<Pod> = Api::namespaced(jc.ctx.client.clone(), &ns);
        let _ = remove_finalizer(&api, &pod).await;
    }
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER))
}

/// Removes the tracking finalizer, guarded by the pod's resourceVersion (a stale view gets a
/// conflict, and the newer pod triggers another sync). Ok(true) when it is gone now.
async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<bool, kube::Error> {
    let left: Vec<&String> =
        pod.metadata.finalizers.iter().flatten().filter(|f| f.as_str() != TRACKING_FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": left, "resourceVersion": pod.resource_version()}});
    match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(e) if util::is_not_found(&e) => Ok(true),
        Err(e) if util::is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn rv(j: &Job) -> u64 {
    j.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn cond<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
}

/// Is the Job finished (Complete or Failed true)?
pub fn is_finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| cond(s, "Complete").is_some() || cond(s, "Failed").is_some())
}

/// Sets (or flips) a condition; a condition already in that status keeps its transition time.
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
            return;
        }
        if c.status != value {
            c.last_transition_time = Some(Time(now));
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

fn pod_failed(pod: &Pod) -> bool {
    util::pod_phase(pod) == "Failed"
}

fn pod_succeeded(pod: &Pod) -> bool {
    util::pod_phase(pod) == "Succeeded"
}

fn pod_terminal(pod: &Pod) -> bool {
    pod_failed(pod) || pod_succeeded(pod)
}

/// When a terminated pod finished (its last container's finishedAt), for the back-off record.
fn finished_ago(pod: &Pod, now: Timestamp) -> Duration {
    let t = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    t.map(|t| now.duration_since(t).unsigned_abs()).unwrap_or_default()
}

struct Finish {
    /// true: success (SuccessCriteriaMet → Complete); false: failure (FailureTarget → Failed).
    success: bool,
    reason: String,
    message: String,
}

async fn reconcile(job: Arc<Job>, jc: Arc<JobCtx>) -> Result<Action, ReconcileError> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let key = key_of(&ns, &name);
    let Some(uid) = job.metadata.uid.clone() else { return Ok(Action::await_change()) };
    let cached = jc.jobs.get(&ObjectRef::new(&name).within(&ns));
    let Some(cached) = cached.filter(|j| j.metadata.uid.as_deref() == Some(uid.as_str())) else {
        // Deleted: forget it (its pods' finalizers go through the orphan cleanup).
        jc.memory.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        return Ok(Action::await_change());
    };
    // The cache may lag behind our own last status write; take whichever is newer.
    let job = {
        let mem = jc.memory.lock().unwrap_or_else(|p| p.into_inner());
        match mem.get(&uid).and_then(|m| m.written.clone()) {
            Some(w) if rv(&w) > rv(&cached) => w,
            _ => cached,
        }
    };
    let spec = job.spec.clone().unwrap_or_default();
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    let pod_api: Api<Pod> = Api::namespaced(jc.ctx.client.clone(), &ns);
    let pods: Vec<Arc<Pod>> = jc
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && util::controller_ref(&p.metadata).is_some_and(|r| r.uid == uid)
        })
        .collect();

    // A finished or deleted Job only lets go of its pods.
    if is_finished(&job) || util::is_terminating(&job.metadata) {
        let with: Vec<&Arc<Pod>> = pods.iter().filter(|p| has_finalizer(p)).collect();
        let results = join_all(with.iter().map(|p| remove_finalizer(&pod_api, p))).await;
        for r in results {
            r?;
        }
        return Ok(Action::await_change());
    }

    let now = Timestamp::now();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let per_index = if indexed { spec.backoff_limit_per_index } else { None };
    let replace_only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let suspended = spec.suspend == Some(true);
    let old_status = job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let n_completions = completions.unwrap_or(0);

    // 1. Counting through the finalizer.
    let by_uid: HashMap<&str, &Arc<Pod>> =
        pods.iter().filter_map(|p| p.metadata.uid.as_deref().map(|u| (u, p))).collect();
    let unc = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_s: BTreeSet<String> = unc.succeeded.unwrap_or_default().into_iter().collect();
    let mut unc_f: BTreeSet<String> = unc.failed.unwrap_or_default().into_iter().collect();
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    let gone = |u: &String| by_uid.get(u.as_str()).is_none_or(|p| !has_finalizer(p));
    let counted_s: Vec<String> = unc_s.iter().filter(|u| gone(u)).cloned().collect();
    let counted_f: Vec<String> = unc_f.iter().filter(|u| gone(u)).cloned().collect();
    for u in &counted_s {
        unc_s.remove(u);
        succeeded += 1;
    }
    for u in &counted_f {
        unc_f.remove(u);
        failed += 1;
    }
    let mut completed_ix = indexed::parse(status.completed_indexes.as_deref().unwrap_or(""), n_completions);
    let mut failed_ix = indexed::parse(status.failed_indexes.as_deref().unwrap_or(""), n_completions);
    let mut finish: Option<Finish> = None;
    let interim_success = cond(&status, "SuccessCriteriaMet").is_some();
    let interim_failure = cond(&status, "FailureTarget").is_some();
    let mut to_unfinalize: Vec<&Arc<Pod>> = Vec::new();
    let (mut new_failures, mut new_successes, mut newest_failure) = (0u32, 0u32, None::<Duration>);
    for pod in &pods {
        if !has_finalizer(pod) {
            continue;
        }
        let pu = pod.metadata.uid.clone().unwrap_or_default();
        if unc_s.contains(&pu) || unc_f.contains(&pu) {
            to_unfinalize.push(pod);
            continue;
        }
        let ix = pod_index_in_range(pod, indexed, n_completions);
        if pod_succeeded(pod) {
            to_unfinalize.push(pod);
            if !indexed || ix.is_some_and(|i| !completed_ix.contains(&i)) {
                if let Some(i) = ix.filter(|_| indexed) {
                    completed_ix.insert(i);
                }
                unc_s.insert(pu);
                new_successes += 1;
            }
            continue;
        }
        let terminating = util::is_terminating(&pod.metadata);
        if !pod_failed(pod) && !terminating {
            continue;
        }
        // A pod deleted while the Job is suspended, or after it met its success criteria, is not
        // a failure: it only lets go.
        if !pod_failed(pod) && (suspended || interim_success) {
            to_unfinalize.push(pod);
            continue;
        }
        to_unfinalize.push(pod);
        let action = spec.pod_failure_policy.as_ref().and_then(|p| policy::match_failure_policy(p, pod));
        match action {
            Some(PolicyAction::Ignore) => continue,
            Some(PolicyAction::FailJob(message))
                if finish.is_none() && !interim_failure && !interim_success =>
            {
                finish = Some(Finish { success: false, reason: "PodFailurePolicy".into(), message });
            }
            Some(PolicyAction::FailIndex) => {
                if let (Some(i), Some(_)) = (ix, per_index) {
                    failed_ix.insert(i);
                }
            }
            _ => {}
        }
        if indexed && ix.is_none() {
            continue;
        }
        if let (Some(limit), Some(i)) = (per_index, ix) {
            if indexed::pod_index_failure_count(pod) + 1 > limit {
                failed_ix.insert(i);
            }
        }
        unc_f.insert(pu);
        new_failures += 1;
        let ago = finished_ago(pod, now);
        newest_failure = Some(newest_failure.map_or(ago, |a: Duration| a.min(ago)));
    }
    // The back-off record (upstream's: failures since the last success).
    let backoff_left = {
        let mut mem = jc.memory.lock().unwrap_or_else(|p| p.into_inner());
        let m = mem.entry(uid.clone()).or_default();
        if new_failures > 0 {
            m.failures += new_failures;
            let at =
                Instant::now().checked_sub(newest_failure.unwrap_or_default()).unwrap_or_else(Instant::now);
            m.last_failure = Some(m.last_failure.map_or(at, |l| l.max(at)));
        } else if new_successes > 0 {
            m.failures = 0;
            m.last_failure = None;
        }
        m.last_failure
            .map(|l| policy::backoff_delay(m.failures).saturating_sub(l.elapsed()))
            .unwrap_or_default()
    };
    let succeeded_total = succeeded + unc_s.len() as i32;
    let failed_total = failed + unc_f.len() as i32;

    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::pod_is_active(p)).collect();
    let terminating: Vec<&Arc<Pod>> =
        pods.iter().filter(|p| util::is_terminating(&p.metadata) && !pod_terminal(p)).collect();

    // 2. Is it done?
    let deadline_left = match (spec.active_deadline_seconds, status.start_time.as_ref()) {
        (Some(s), Some(st)) if !suspended => {
            let end = st.0.as_second().saturating_add(s);
            Some(end - now.as_second())
        }
        _ => None,
    };
    if finish.is_none() && !interim_failure && !interim_success {
        let restart_on_failure = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .is_some_and(|r| r == "OnFailure");
        let active_refs: Vec<&Pod> = active.iter().map(|p| p.as_ref()).collect();
        if per_index.is_none()
            && (failed_total > backoff_limit
                || (restart_on_failure && policy::past_backoff_limit_on_failure(&active_refs, backoff_limit)))
        {
            finish = Some(Finish {
                success: false,
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            });
        } else if deadline_left.is_some_and(|l| l <= 0) {
            finish = Some(Finish {
                success: false,
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            });
        } else if per_index.is_some() && spec.max_failed_indexes.is_some_and(|m| failed_ix.len() as i32 > m) {
            finish = Some(Finish {
                success: false,
                reason: "MaxFailedIndexesExceeded".into(),
                message: "Job has exceeded the specified maximal number of failed indexes".into(),
            });
        } else if let Some(r) = spec
            .success_policy
            .as_ref()
            .filter(|_| indexed)
            .and_then(|p| policy::match_success_policy(p, &completed_ix, n_completions))
        {
            finish = Some(Finish {
                success: true,
                reason: "SuccessPolicy".into(),
                message: format!("Matched rules at index {r}"),
            });
        } else {
            let all_done = if indexed {
                completed_ix.len() as i32 + failed_ix.len() as i32 >= n_completions
            } else {
                match completions {
                    Some(c) => succeeded_total >= c,
                    None => succeeded_total > 0 && active.is_empty(),
                }
            };
            if all_done && indexed && !failed_ix.is_empty() {
                finish = Some(Finish {
                    success: false,
                    reason: "FailedIndexes".into(),
                    message: "Job has failed indexes".into(),
                });
            } else if all_done {
                finish = Some(Finish {
                    success: true,
                    reason: "CompletionsReached".into(),
                    message: "Reached expected number of succeeded pods".into(),
                });
            }
        }
    }
    if let Some(f) = &finish {
        let t = if f.success { "SuccessCriteriaMet" } else { "FailureTarget" };
        set_condition(&mut status, t, "True", &f.reason, &f.message, now);
    }
    let interim = cond(&status, "SuccessCriteriaMet")
        .map(|c| (true, c.clone()))
        .or_else(|| cond(&status, "FailureTarget").map(|c| (false, c.clone())));

    // 3 + 4. Pods.
    let mut manage_err = None;
    let mut deleted_now = 0usize;
    let satisfied = {
        let store = jc.pods.clone();
        let ns = ns.clone();
        jc.exp.satisfied(&key, move |n| match store.get(&ObjectRef::new(n).within(&ns)) {
            None => Seen::Absent,
            Some(p) if util::is_terminating(&p.metadata) => Seen::Terminating,
            Some(_) => Seen::Present,
        })
    };
    let mut requeue: Option<Duration> = None;
    if interim.is_some() || suspended {
        if !active.is_empty() {
            match delete_pods(&jc, &job, &key, &pod_api, &active).await {
                Ok(n) => deleted_now = n,
                Err(e) => manage_err = Some(e),
            }
        }
    } else if satisfied {
        if !backoff_left.is_zero() {
            requeue = Some(backoff_left);
        }
        let busy = active.len() + if replace_only_failed { terminating.len() } else { 0 };
        let r = if indexed {
            manage_indexed(
                &jc,
                &job,
                &key,
                &pod_api,
                &active,
                &terminating,
                replace_only_failed,
                &completed_ix,
                &failed_ix,
                parallelism,
                n_completions,
                backoff_left,
                &pods,
            )
            .await
        } else {
            // Completions unset: after the first success no new pod, and the others may finish.
            let want = match completions {
                Some(c) => (c - succeeded_total).clamp(0, parallelism) as usize,
                None if succeeded_total > 0 => active.len(),
                None => parallelism as usize,
            };
            if busy < want && backoff_left.is_zero() {
                create_pods(&jc, &job, &key, &pod_api, (want - busy).min(MAX_CREATE_DELETE_PER_SYNC), |_| None)
                    .await
            } else if active.len() > want {
                let victims = crate::replicas::pods_to_delete(
                    &active.iter().map(|p| (*p).clone()).collect::<Vec<_>>(),
                    active.len() - want,
                );
                let refs: Vec<&Arc<Pod>> = victims.iter().collect();
                delete_pods(&jc, &job, &key, &pod_api, &refs).await.map(|_| ())
            } else {
                Ok(())
            }
        };
        if let Err(e) = r {
            manage_err = Some(e);
        }
    }

    // Suspension and the start time.
    if suspended && interim.is_none() {
        if cond(&status, "Suspended").is_none() {
            set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", now);
            jc.ctx.events.normal(CONTROLLER, job.as_ref(), "Suspended", "Job suspended".into());
        }
        status.start_time = None;
    } else if !suspended {
        if cond(&status, "Suspended").is_some() {
            set_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed", now);
            jc.ctx.events.normal(CONTROLLER, job.as_ref(), "Resumed", "Job resumed".into());
            status.start_time = Some(Time(now));
        } else if status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
    }

    // The final condition once nothing runs and everything is counted.
    let still_running = deleted_now > 0 || pods.iter().any(|p| !pod_terminal(p));
    if let Some((success, c)) = &interim {
        if !still_running && unc_s.is_empty() && unc_f.is_empty() && to_unfinalize.is_empty() {
            let reason = c.reason.clone().unwrap_or_default();
            let message = c.message.clone().unwrap_or_default();
            if *success {
                set_condition(&mut status, "Complete", "True", &reason, &message, now);
                status.completion_time = Some(Time(now));
                jc.ctx.events.normal(CONTROLLER, job.as_ref(), "Completed", "Job completed".into());
            } else {
                set_condition(&mut status, "Failed", "True", &reason, &message, now);
                jc.ctx.events.warning(CONTROLLER, job.as_ref(), &reason, message.clone());
            }
        }
    }

    let ready = active.iter().filter(|p| util::pod_is_ready(p)).count() as i32;
    status.active = Some(active.len().saturating_sub(deleted_now) as i32).filter(|n| *n > 0);
    status.ready = Some(ready);
    status.terminating = Some((terminating.len() + deleted_now) as i32);
    status.succeeded = Some(succeeded).filter(|n| *n > 0);
    status.failed = Some(failed).filter(|n| *n > 0);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(unc_s.iter().cloned().collect()).filter(|v: &Vec<String>| !v.is_empty()),
        failed: Some(unc_f.iter().cloned().collect()).filter(|v: &Vec<String>| !v.is_empty()),
    });
    if indexed {
        // Counted indexes appear with the counts (a pod's index is in completedIndexes from the
        // write that puts it in uncountedTerminatedPods, as upstream).
        status.completed_indexes = Some(indexed::format(&completed_ix));
        if per_index.is_some() {
            status.failed_indexes = Some(indexed::format(&failed_ix));
        }
    }
    if status != old_status {
        let patch = json!({"status": {
            "conditions": status.conditions,
            "startTime": status.start_time,
            "completionTime": status.completion_time,
            "active": status.active,
            "ready": status.ready,
            "terminating": status.terminating,
            "succeeded": status.succeeded,
            "failed": status.failed,
            "completedIndexes": status.completed_indexes,
            "failedIndexes": status.failed_indexes,
            "uncountedTerminatedPods": {
                "succeeded": status.uncounted_terminated_pods.as_ref().and_then(|u| u.succeeded.clone()),
                "failed": status.uncounted_terminated_pods.as_ref().and_then(|u| u.failed.clone()),
            },
        }, "metadata": {"resourceVersion": job.resource_version()}});
        let api: Api<Job> = Api::namespaced(jc.ctx.client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(written) => {
                let mut mem = jc.memory.lock().unwrap_or_else(|p| p.into_inner());
                mem.entry(uid.clone()).or_default().written = Some(Arc::new(written));
            }
            Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }

    // Only now, with the uncounted pods recorded, may their finalizers go.
    let results = join_all(to_unfinalize.iter().map(|p| remove_finalizer(&pod_api, p))).await;
    for r in results {
        r?;
    }
    if let Some(e) = manage_err {
        return Err(e);
    }
    if is_finished_status(&status) {
        return Ok(Action::await_change());
    }
    if let Some(l) = deadline_left.filter(|l| *l > 0) {
        let d = Duration::from_secs(l as u64);
        requeue = Some(requeue.map_or(d, |r| r.min(d)));
    }
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600)).max(Duration::from_millis(100))))
}

fn is_finished_status(s: &JobStatus) -> bool {
    cond(s, "Complete").is_some() || cond(s, "Failed").is_some()
}

fn pod_index_in_range(pod: &Pod, indexed: bool, completions: i32) -> Option<i32> {
    if !indexed {
        return None;
    }
    indexed::pod_index(pod).filter(|i| *i < completions)
}

#[allow(clippy::too_many_arguments)]
async fn manage_indexed(
    jc: &JobCtx,
    job: &Arc<Job>,
    key: &str,
    pod_api: &Api<Pod>,
    active: &[&Arc<Pod>],
    terminating: &[&Arc<Pod>],
    replace_only_failed: bool,
    completed: &BTreeSet<i32>,
    failed_ix: &BTreeSet<i32>,
    parallelism: i32,
    completions: i32,
    backoff_left: Duration,
    all: &[Arc<Pod>],
) -> Result<(), ReconcileError> {
    // Active pods to delete: out of range, of a finished index, or a second pod of one index.
    let mut seen: BTreeMap<i32, &Arc<Pod>> = BTreeMap::new();
    let mut victims: Vec<&Arc<Pod>> = Vec::new();
    for p in active {
        match indexed::pod_index(p).filter(|i| *i < completions) {
            None => victims.push(p),
            Some(i) if completed.contains(&i) || failed_ix.contains(&i) => victims.push(p),
            Some(i) => {
                if seen.insert(i, p).is_some() {
                    victims.push(p);
                }
            }
        }
    }
    // Above parallelism: the highest indexes go.
    let keep = parallelism.max(0) as usize;
    while seen.len() > keep {
        let (_, p) = seen.pop_last().expect("non-empty");
        victims.push(p);
    }
    if !victims.is_empty() {
        delete_pods(jc, job, key, pod_api, &victims).await?;
        return Ok(());
    }
    if !backoff_left.is_zero() {
        return Ok(());
    }
    let mut busy: BTreeSet<i32> = seen.keys().copied().collect();
    if replace_only_failed {
        busy.extend(terminating.iter().filter_map(|p| indexed::pod_index(p)));
    }
    let room = keep.saturating_sub(busy.len()).min(MAX_CREATE_DELETE_PER_SYNC);
    let pending: Vec<i32> = (0..completions)
        .filter(|i| !completed.contains(i) && !failed_ix.contains(i) && !busy.contains(i))
        .take(room)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    // Per index: how many of its pods failed so far (backoffLimitPerIndex).
    let mut failures: HashMap<i32, i32> = HashMap::new();
    for p in all.iter().filter(|p| pod_failed(p)) {
        if let Some(i) = indexed::pod_index(p) {
            let n = indexed::pod_index_failure_count(p) + 1;
            let e = failures.entry(i).or_default();
            *e = (*e).max(n);
        }
    }
    create_pods(jc, job, key, pod_api, pending.len(), |k| {
        let i = pending[k];
        Some((i, failures.get(&i).copied().unwrap_or(0)))
    })
    .await
}

/// Creates `n` pods, slow-start batches (1, 2, 4, …) as upstream; `index(k)` gives the k-th pod's
/// completion index and its index failure count (Indexed Jobs).
async fn create_pods(
    jc: &JobCtx,
    job: &Arc<Job>,
    key: &str,
    pod_api: &Api<Pod>,
    n: usize,
    index: impl Fn(usize) -> Option<(i32, i32)>,
) -> Result<(), ReconcileError> {
    let mut done = 0usize;
    let mut batch = 1usize;
    let events = &jc.ctx.events;
    while done < n {
        let m = batch.min(n - done);
        let pp = PostParams::default();
        let pods: Vec<Pod> = (done..done + m).map(|k| pod_from_template(job, index(k))).collect();
        let results = join_all(pods.iter().map(|p| pod_api.create(&pp, p))).await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(p) => {
                    let pname = p.name_any();
                    jc.exp.expect_created(key, pname.clone());
                    events.normal_related(
                        CONTROLLER,
                        job.as_ref(),
                        "SuccessfulCreate",
                        format!("Created pod: {pname}"),
                        p.object_ref(&()),
                    );
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            events.warning(CONTROLLER, job.as_ref(), "FailedCreate", format!("Error creating: {e}"));
            return Err(e.into());
        }
        done += m;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pods(
    jc: &JobCtx,
    job: &Arc<Job>,
    key: &str,
    pod_api: &Api<Pod>,
    victims: &[&Arc<Pod>],
) -> Result<usize, ReconcileError> {
    let victims = &victims[..victims.len().min(MAX_CREATE_DELETE_PER_SYNC)];
    for p in victims {
        jc.exp.expect_deleted(key, p.name_any());
    }
    let results = join_all(victims.iter().map(|p| async move {
        let name = p.name_any();
        (name.clone(), p.object_ref(&()), pod_api.delete(&name, &DeleteParams::default()).await)
    }))
    .await;
    let mut failed = None;
    let mut n = 0;
    for (pname, related, r) in results {
        match r {
            Ok(_) => {
                n += 1;
                jc.ctx.events.normal_related(
                    CONTROLLER,
                    job.as_ref(),
                    "SuccessfulDelete",
                    format!("Deleted pod: {pname}"),
                    related,
                );
            }
            Err(e) if util::is_not_found(&e) => jc.exp.observe_gone(key, &pname),
            Err(e) => {
                jc.exp.observe_gone(key, &pname);
                jc.ctx.events.warning(CONTROLLER, job.as_ref(), "FailedDelete", format!("Error deleting: {e}"));
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(n),
    }
}

fn owner_ref(job: &Job) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.name_any(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod from the Job's template: its labels and annotations, the tracking finalizer, the
/// controller reference; for an Indexed Job the completion index (annotation, label, env var
/// `JOB_COMPLETION_INDEX` from the annotation, hostname `<job>-<index>`), named `<job>-<index>-…`.
pub fn pod_from_template(job: &Job, index: Option<(i32, i32)>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let tpl = spec.template;
    let tmeta = tpl.metadata.unwrap_or_default();
    let mut pspec = tpl.spec.unwrap_or_default();
    let name = job.name_any();
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let prefix: String = name.chars().take(57).collect();
    let mut generate_name = format!("{prefix}-");
    if let Some((i, failures)) = index {
        annotations.insert(indexed::INDEX_ANNOTATION.into(), i.to_string());
        labels.insert(indexed::INDEX_ANNOTATION.into(), i.to_string());
        if spec.backoff_limit_per_index.is_some() {
            annotations.insert(indexed::INDEX_FAILURE_COUNT_ANNOTATION.into(), failures.to_string());
        }
        generate_name = format!("{}-{i}-", name.chars().take(50).collect::<String>());
        if pspec.hostname.as_deref().is_none_or(str::is_empty) {
            pspec.hostname = Some(format!("{}-{i}", name.chars().take(50).collect::<String>()));
        }
        let env = EnvVar {
            name: indexed::INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: format!("metadata.annotations['{}']", indexed::INDEX_ANNOTATION),
                }),
                ..Default::default()
            }),
        };
        for c in pspec.containers.iter_mut().chain(pspec.init_containers.iter_mut().flatten()) {
            let envs = c.env.get_or_insert_with(Vec::new);
            if !envs.iter().any(|e| e.name == indexed::INDEX_ENV) {
                envs.push(env.clone());
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            finalizers: Some(finalizers),
            owner_references: Some(vec![owner_ref(job)]),
            ..Default::default()
        },
        spec: Some(pspec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(indexed: bool) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "ns", "uid": "u1"},
            "spec": {"completionMode": if indexed { "Indexed" } else { "NonIndexed" }, "completions": 3,
                "template": {"metadata": {"labels": {"job-name": "work", "app": "x"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn non_indexed_pod_carries_labels_finalizer_and_owner() {
        let p = pod_from_template(&job(false), None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("work-"));
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "x");
        assert_eq!(p.metadata.finalizers.as_deref(), Some(&[TRACKING_FINALIZER.to_string()][..]));
        let o = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.controller, o.block_owner_deletion), ("Job", Some(true), Some(true)));
        assert!(p.spec.unwrap().containers[0].env.is_none());
    }

    #[test]
    fn indexed_pod_gets_index_everywhere() {
        let p = pod_from_template(&job(true), Some((2, 0)));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("work-2-"));
        assert_eq!(p.metadata.annotations.as_ref().unwrap()[indexed::INDEX_ANNOTATION], "2");
        assert_eq!(p.metadata.labels.as_ref().unwrap()[indexed::INDEX_ANNOTATION], "2");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        let f = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(f.field_path, "metadata.annotations['batch.kubernetes.io/job-completion-index']");
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut s = JobStatus::default();
        let t0 = Timestamp::from_second(100).unwrap();
        let t1 = Timestamp::from_second(200).unwrap();
        set_condition(&mut s, "Suspended", "True", "JobSuspended", "Job suspended", t0);
        set_condition(&mut s, "Suspended", "True", "JobSuspended", "Job suspended", t1);
        assert_eq!(s.conditions.as_ref().unwrap()[0].last_transition_time, Some(Time(t0)));
        set_condition(&mut s, "Suspended", "False", "JobResumed", "Job resumed", t1);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.last_transition_time.clone()), ("False", Some(Time(t1))));
    }
}
