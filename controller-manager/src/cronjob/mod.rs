//! The CronJob controller (upstream's `cronjob_controllerv2`).
//!
//! A sync (upstream's `syncCronJob`) of one CronJob:
//! 1. its Jobs are those whose controller reference is this CronJob. A finished Job still in
//!    `status.active` leaves it (SawCompletedJob); an unfinished one not in it is reported
//!    (UnexpectedJob — e.g. `kubectl create job --from=cronjob/x`, which is never adopted into
//!    `active`, as upstream); the newest completion sets `lastSuccessfulTime`; an active reference
//!    whose Job is gone (confirmed by a live GET) is dropped (MissingJob);
//! 2. unless suspended or being deleted: the most recent unmet schedule time (only the most
//!    recent, upstream's `mostRecentScheduleTime`; more than 100 missed → TooManyMissedTimes;
//!    `startingDeadlineSeconds` bounds how far back it looks) gets a Job named
//!    `<cronjob>-<minutes since the epoch>`, annotated with its scheduled time, owned by the
//!    CronJob — unless concurrencyPolicy Forbid finds one active (JobAlreadyActive) or Replace
//!    deletes the active ones first;
//! 3. finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted,
//!    oldest start first;
//! 4. status (active, lastScheduleTime, lastSuccessfulTime) is written when it changed, and the
//!    CronJob is requeued exactly at its next schedule time (no polling).
//!
//! The CronJob is read live at the start of each sync (its status is what this controller last
//! wrote; a lagging cache would re-create a Job it has just created), the Jobs from the cache.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util, Stop};
use schedule::{Missed, Times};

pub const CONTROLLER: &str = "cronjob-controller";
/// `batch.kubernetes.io/cronjob-scheduled-timestamp`: the Job's scheduled time, RFC 3339 in the
/// CronJob's zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct CronCtx {
    ctx: Arc<Ctx>,
    jobs: Store<Job>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let cronjobs = ctx.inf.cronjobs.store();
    let jobs = ctx.inf.jobs.store();
    let controller = Controller::for_shared_stream(ctx.inf.cronjobs.subscribe(), cronjobs)
        .watches_shared_stream(ctx.inf.jobs.subscribe(), |job: Arc<Job>| {
            let ns = job.namespace().unwrap_or_default();
            util::controller_ref(&job.metadata)
                .filter(|r| r.kind == "CronJob")
                .map(|r| ObjectRef::new(&r.name).within(&ns))
        });
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_cron_job_syncs;
    let cctx = Arc::new(CronCtx { ctx, jobs });
    drive(CONTROLLER, controller, stop, concurrency, reconcile, cctx).await;
}

/// `Complete` or `Failed`, when the Job has that condition True.
pub fn finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    for c in conds {
        if c.status == "True" {
            if c.type_ == "Complete" {
                return Some("Complete");
            }
            if c.type_ == "Failed" {
                return Some("Failed");
            }
        }
    }
    None
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Go's `time.RFC3339` of `t` in `tz`: `Z` for a zero offset, else `±hh:mm`.
pub fn rfc3339_in(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The mutable part of one sync: the status being rebuilt and whether it changed.
struct Sync {
    status: CronJobStatus,
    changed: bool,
}

impl Sync {
    fn active(&mut self) -> &mut Vec<ObjectReference> {
        self.status.active.get_or_insert_with(Vec::new)
    }
    fn is_active(&self, uid: &str) -> bool {
        self.status.active.iter().flatten().any(|r| r.uid.as_deref() == Some(uid))
    }
    fn remove_active(&mut self, uid: &str) {
        self.active().retain(|r| r.uid.as_deref() != Some(uid));
        self.changed = true;
    }
}

async fn reconcile(trigger: Arc<CronJob>, c: Arc<CronCtx>) -> Result<Action, ReconcileError> {
    let ns = trigger.namespace().unwrap_or_default();
    let name = trigger.name_any();
    let api: Api<CronJob> = Api::namespaced(c.ctx.client.clone(), &ns);
    let Some(cj) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let Some(uid) = cj.metadata.uid.clone() else { return Ok(Action::await_change()) };
    let jobs: Vec<Arc<Job>> = c
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| util::controller_ref(&j.metadata).is_some_and(|r| r.kind == "CronJob" && r.uid == uid))
        .collect();
    let job_api: Api<Job> = Api::namespaced(c.ctx.client.clone(), &ns);
    let events = &c.ctx.events;
    let mut s = Sync { status: cj.status.clone().unwrap_or_default(), changed: false };

    // 1. The Jobs it has.
    for j in &jobs {
        let juid = j.metadata.uid.clone().unwrap_or_default();
        let found = s.is_active(&juid);
        let done = finished(j);
        if !found && done.is_none() {
            events.warning(
                CONTROLLER,
                &cj,
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {}", j.name_any()),
            );
        } else if let (true, Some(cond)) = (found, done) {
            s.remove_active(&juid);
            events.normal(
                CONTROLLER,
                &cj,
                "SawCompletedJob",
                format!("Saw completed job: {}, condition: {cond}", j.name_any()),
            );
        }
        if done == Some("Complete") {
            let completed = j.status.as_ref().and_then(|st| st.completion_time.clone());
            let newer = match (&s.status.last_successful_time, &completed) {
                (None, _) => true,
                (Some(last), Some(t)) => t.0 > last.0,
                (Some(_), None) => false,
            };
            if newer && completed != s.status.last_successful_time {
                s.status.last_successful_time = completed;
                s.changed = true;
            }
        }
    }
    for r in s.status.active.clone().unwrap_or_default() {
        let ruid = r.uid.clone().unwrap_or_default();
        if jobs.iter().any(|j| j.metadata.uid.as_deref() == Some(ruid.as_str())) {
            continue;
        }
        // The cache may not have it yet: ask the API before calling it missing.
        let rname = r.name.clone().unwrap_or_default();
        let live = job_api.get_opt(&rname).await?;
        if live.is_none_or(|l| l.metadata.uid.as_deref() != Some(ruid.as_str())) {
            events.normal(CONTROLLER, &cj, "MissingJob", format!("Active job went missing: {rname}"));
            s.remove_active(&ruid);
        }
    }

    let deleting = util::is_terminating(&cj.metadata);
    let mut requeue = None;
    let mut sync_err = None;
    if !deleting {
        match schedule_jobs(&cj, &uid, &mut s, &job_api, &c).await {
            Ok(r) => requeue = r,
            Err(e) => sync_err = Some(e),
        }
        cleanup_finished(&cj, &jobs, &mut s, &job_api, &c).await;
    }

    if s.changed {
        let st = &s.status;
        let active = st.active.as_ref().filter(|a| !a.is_empty());
        let patch = json!({"status": {
            "active": active,
            "lastScheduleTime": st.last_schedule_time,
            "lastSuccessfulTime": st.last_successful_time,
        }});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(d) = requeue {
        return Ok(Action::requeue(d));
    }
    match sync_err {
        Some(e) => Err(e),
        None => Ok(Action::await_change()),
    }
}

/// Step 2: maybe start the Job of the most recent unmet schedule time. Returns when to look again.
async fn schedule_jobs(
    cj: &CronJob,
    uid: &str,
    s: &mut Sync,
    job_api: &Api<Job>,
    c: &CronCtx,
) -> Result<Option<Duration>, ReconcileError> {
    let events = &c.ctx.events;
    let Some(spec) = cj.spec.as_ref() else { return Ok(None) };
    let name = cj.name_any();
    if let Some(tz) = spec.time_zone.as_deref() {
        if let Err(e) = schedule::zone(tz) {
            events.warning(CONTROLLER, cj, "UnknownTimeZone", format!("invalid timeZone: {tz:?}: {e}"));
            return Ok(None);
        }
    }
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let (sched, parsed) = match schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            events.warning(
                CONTROLLER,
                cj,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            );
            return Ok(None);
        }
    };
    if parsed.schedule_has_tz {
        events.warning(
            CONTROLLER,
            cj,
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        );
    }
    let now = Timestamp::now();
    let times = Times {
        created: cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now),
        last_schedule: s.status.last_schedule_time.as_ref().map(|t| t.0),
        starting_deadline_seconds: spec.starting_deadline_seconds,
    };
    let scheduled = match schedule::most_recent(&sched, times, now, true) {
        Ok((_, t, missed)) => {
            if t.is_some() && missed == Missed::Many {
                events.warning(
                    CONTROLLER,
                    cj,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                        .into(),
                );
            }
            t
        }
        Err(e) => {
            events.warning(
                CONTROLLER,
                cj,
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            );
            return Ok(None);
        }
    };
    let requeue = schedule::next_requeue(&sched, times, now);
    let Some(scheduled) = scheduled else { return Ok(requeue) };
    if let Some(d) = spec.starting_deadline_seconds {
        if scheduled + jiff::SignedDuration::from_secs(d) < now {
            let when =
                scheduled.to_zoned(jiff::tz::TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
            events.warning(
                CONTROLLER,
                cj,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {when}"),
            );
            return Ok(requeue);
        }
    }
    let job_name = schedule::job_name(&name, scheduled);
    let already = s.status.active.iter().flatten().any(|r| r.name.as_deref() == Some(job_name.as_str()))
        || s.status.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled);
    if already {
        return Ok(requeue);
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    let has_active = s.status.active.as_ref().is_some_and(|a| !a.is_empty());
    if policy == "Forbid" && has_active {
        events.normal(
            CONTROLLER,
            cj,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
        );
        return Ok(requeue);
    }
    if policy == "Replace" {
        for r in s.status.active.clone().unwrap_or_default() {
            let rname = r.name.clone().unwrap_or_default();
            match job_api.get_opt(&rname).await {
                Ok(Some(job)) => {
                    if !delete_job(cj, &job, s, job_api, c).await {
                        return Err(ReconcileError::Other(format!("could not replace job {rname}")));
                    }
                }
                Ok(None) => s.remove_active(r.uid.as_deref().unwrap_or_default()),
                Err(e) => {
                    events.warning(CONTROLLER, cj, "FailedGet", format!("Get job: {e}"));
                    return Err(e.into());
                }
            }
        }
    }

    let tz = match spec.time_zone.as_deref() {
        Some(z) => schedule::zone(z).unwrap_or(jiff::tz::TimeZone::UTC),
        None => jiff::tz::TimeZone::UTC,
    };
    let job = job_from_template(cj, uid, &job_name, scheduled, &tz);
    match job_api.create(&PostParams::default(), &job).await {
        Ok(created) => {
            events.normal(CONTROLLER, cj, "SuccessfulCreate", format!("Created job {job_name}"));
            s.active().push(job_ref(&created));
        }
        Err(e) if util::is_already_exists(&e) => {
            // Ours from an earlier sync whose status write was lost: record it, as if just made.
            let existing = job_api.get_opt(&job_name).await?;
            let ours =
                existing.as_ref().and_then(|j| util::controller_ref(&j.metadata)).is_some_and(|r| r.uid == uid);
            let Some(existing) = existing.filter(|_| ours) else { return Err(e.into()) };
            let euid = existing.metadata.uid.clone().unwrap_or_default();
            if finished(&existing).is_none() && !s.is_active(&euid) {
                s.active().push(job_ref(&existing));
            }
        }
        Err(e) => {
            events.warning(CONTROLLER, cj, "FailedCreate", format!("Error creating job: {e}"));
            return Err(e.into());
        }
    }
    s.status.last_schedule_time = Some(Time(scheduled));
    s.changed = true;
    Ok(requeue)
}

/// Upstream's `getJobFromTemplate2`.
fn job_from_template(
    cj: &CronJob,
    uid: &str,
    name: &str,
    scheduled: Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Job {
    let tmpl = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let tmeta = tmpl.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: CronJob::api_version(&()).to_string(),
                kind: CronJob::kind(&()).to_string(),
                name: cj.name_any(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: tmpl.spec,
        status: None,
    }
}

/// Upstream's `deleteJob`: background propagation, then out of `active`.
async fn delete_job(cj: &CronJob, job: &Job, s: &mut Sync, job_api: &Api<Job>, c: &CronCtx) -> bool {
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    let jname = job.name_any();
    match job_api.delete(&jname, &dp).await {
        Ok(_) => {}
        Err(e) if util::is_not_found(&e) => {}
        Err(e) => {
            c.ctx.events.warning(CONTROLLER, cj, "FailedDelete", format!("Deleted job: {e}"));
            return false;
        }
    }
    if let Some(u) = job.metadata.uid.as_deref() {
        s.remove_active(u);
    }
    c.ctx.events.normal(CONTROLLER, cj, "SuccessfulDelete", format!("Deleted job {jname}"));
    true
}

/// Step 3: upstream's `cleanupFinishedJobs` / `removeOldestJobs`.
async fn cleanup_finished(cj: &CronJob, jobs: &[Arc<Job>], s: &mut Sync, job_api: &Api<Job>, c: &CronCtx) {
    let Some(spec) = cj.spec.as_ref() else { return };
    for (cond, limit) in
        [("Complete", spec.successful_jobs_history_limit), ("Failed", spec.failed_jobs_history_limit)]
    {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(cond)).collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        if excess == 0 {
            continue;
        }
        done.sort_by(|a, b| oldest_first(a, b));
        for j in done.into_iter().take(excess) {
            delete_job(cj, j, s, job_api, c).await;
        }
    }
}

/// Upstream's `byJobStartTime`: earlier start first, Jobs without a start last, then by name.
fn oldest_first(a: &Job, b: &Job) -> std::cmp::Ordering {
    let start = |j: &Job| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    match (start(a), start(b)) {
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (x, y) if x == y => a.name_any().cmp(&b.name_any()),
        (x, y) => x.cmp(&y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, start: Option<&str>) -> Job {
        let mut j: Job = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        if let Some(s) = start {
            j.status = Some(serde_json::from_value(json!({"startTime": s})).unwrap());
        }
        j
    }

    #[test]
    fn history_is_trimmed_oldest_start_first() {
        let mut v = [
            job("c", None),
            job("b", Some("2026-01-01T00:02:00Z")),
            job("a", Some("2026-01-01T00:03:00Z")),
            job("d", Some("2026-01-01T00:02:00Z")),
        ];
        v.sort_by(oldest_first);
        let names: Vec<String> = v.iter().map(|j| j.name_any()).collect();
        assert_eq!(names, ["b", "d", "a", "c"]);
    }

    #[test]
    fn scheduled_timestamps_are_go_rfc3339() {
        let t: Timestamp = "2026-12-07T13:05:00Z".parse().unwrap();
        assert_eq!(rfc3339_in(t, &jiff::tz::TimeZone::UTC), "2026-12-07T13:05:00Z");
        let tokyo = schedule::zone("Asia/Tokyo").unwrap();
        assert_eq!(rfc3339_in(t, &tokyo), "2026-12-07T22:05:00+09:00");
    }

    #[test]
    fn finished_reads_true_conditions_only() {
        let mut j = job("j", None);
        j.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Failed", "status": "False"},
                {"type": "Complete", "status": "True"}]}))
            .unwrap(),
        );
        assert_eq!(finished(&j), Some("Complete"));
        assert_eq!(finished(&job("k", None)), None);
    }
}
