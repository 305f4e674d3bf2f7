//! The TTL-after-finished controller (upstream's `pkg/controller/ttlafterfinished`): a finished
//! Job (Complete or Failed) with `spec.ttlSecondsAfterFinished` is deleted that many seconds after
//! it finished (the finishing condition's lastTransitionTime), with Foreground propagation so that
//! the garbage collector removes its pods first. Before deleting, it re-reads the Job from the API
//! (the TTL may have changed) and deletes with a resourceVersion precondition; a Job not yet
//! expired is requeued at its expiry.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util, Stop};

pub const CONTROLLER: &str = "ttl-after-finished-controller";

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let jobs = ctx.inf.jobs.store();
    let controller = Controller::for_shared_stream(ctx.inf.jobs.subscribe(), jobs);
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_ttl_after_finished_syncs;
    drive(CONTROLLER, controller, stop, concurrency, reconcile, ctx).await;
}

/// When the Job finished: the latest transition of its true Complete or Failed condition.
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .max()
}

/// Time left before the Job expires: `None` when it does not need cleaning up (no TTL, not
/// finished, or being deleted already); zero or negative when it is due.
pub fn time_left(job: &Job, now: Timestamp) -> Option<i64> {
    if util::is_terminating(&job.metadata) {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finish_time(job)?;
    Some(finished.as_millisecond() + i64::from(ttl) * 1000 - now.as_millisecond())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(left) = time_left(&job, Timestamp::now()) else { return Ok(Action::await_change()) };
    if left > 0 {
        return Ok(Action::requeue(Duration::from_millis(left as u64)));
    }
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache may be stale: the TTL may have been changed or the Job replaced.
    let Some(fresh) = api.get_opt(&job.name_any()).await? else { return Ok(Action::await_change()) };
    if fresh.metadata.uid != job.metadata.uid {
        return Ok(Action::await_change());
    }
    match time_left(&fresh, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(l) if l > 0 => return Ok(Action::requeue(Duration::from_millis(l as u64))),
        Some(_) => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            resource_version: fresh.metadata.resource_version.clone(),
            uid: None,
        }),
        ..Default::default()
    };
    tracing::info!(job = %format!("{ns}/{}", fresh.name_any()), "cleaning up a finished Job after its TTL");
    match api.delete(&fresh.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if util::is_not_found(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(ttl: Option<i32>, finished_at: Option<&str>, deleting: bool) -> Job {
        let mut j = json!({"metadata": {"name": "j", "namespace": "ns"}, "spec": {"template": {}}});
        if let Some(t) = ttl {
            j["spec"]["ttlSecondsAfterFinished"] = json!(t);
        }
        if let Some(at) = finished_at {
            j["status"] = json!({"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Complete", "status": "True", "lastTransitionTime": at}]});
        }
        if deleting {
            j["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn expiry_counts_from_the_finish_condition() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(time_left(&job(Some(100), Some("2026-01-01T00:00:30Z"), false), now), Some(70_000));
        assert_eq!(time_left(&job(Some(0), Some("2026-01-01T00:00:30Z"), false), now), Some(-30_000));
        assert_eq!(time_left(&job(None, Some("2026-01-01T00:00:30Z"), false), now), None);
        assert_eq!(time_left(&job(Some(5), None, false), now), None);
        assert_eq!(time_left(&job(Some(5), Some("2026-01-01T00:00:30Z"), true), now), None);
    }
}
