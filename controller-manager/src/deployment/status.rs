//! Deployment status and conditions (upstream's `calculateStatus` and `syncRolloutStatus`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::rollout::{condition, progressing_condition, Sync};
use super::util::{self as du, REVISION};
use crate::context::ReconcileError;
use crate::util as u;

#[derive(PartialEq, Eq, Debug, Clone, Copy)]
struct Counts {
    observed_generation: i64,
    replicas: i32,
    updated: i32,
    ready: i32,
    available: i32,
    unavailable: i32,
}

fn recorded(d: &Deployment) -> Counts {
    let s = d.status.clone().unwrap_or_default();
    Counts {
        observed_generation: s.observed_generation.unwrap_or(0),
        replicas: s.replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
        unavailable: s.unavailable_replicas.unwrap_or(0),
    }
}

/// Replaces the condition of the same type unless status and reason are unchanged; keeps the
/// transition time when only the reason changes (upstream's `SetDeploymentCondition`).
fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

impl Sync {
    /// Computes and writes status (only when changed) and the deployment's revision annotation.
    /// `rolling_out`: run the Progressing logic (not for pure scaling syncs of a paused deployment).
    pub async fn sync_status(&mut self, rolling_out: bool) -> Result<(), ReconcileError> {
        let d = self.d.clone();
        let n = du::replicas(&d);
        let new = self.new_idx();
        let (_, unavail) = du::fenceposts(&d);
        let spec_total: i32 = self.rsets.iter().map(du::rs_replicas).sum();
        let available: i32 = self.rsets.iter().map(|r| du::rs_status(r).2).sum();
        let counts = Counts {
            observed_generation: d.metadata.generation.unwrap_or(0),
            replicas: self.rsets.iter().map(|r| du::rs_status(r).0).sum(),
            updated: new.map(|i| du::rs_status(&self.rsets[i]).0).unwrap_or(0),
            ready: self.rsets.iter().map(|r| du::rs_status(r).1).sum(),
            available,
            unavailable: (spec_total - available).max(0),
        };
        let old_conds = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let mut conds = old_conds.clone();
        if available >= n - unavail {
            set_condition(
                &mut conds,
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut conds,
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        if let Some(c) = self.pending_condition.take() {
            set_condition(&mut conds, c);
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let cur_reason = progressing_condition(&d).and_then(|c| c.reason.clone());
        if paused && cur_reason.as_deref() != Some("DeploymentPaused") {
            set_condition(
                &mut conds,
                condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into()),
            );
        } else if !paused && cur_reason.as_deref() == Some("DeploymentPaused") {
            set_condition(
                &mut conds,
                condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed".into()),
            );
        }
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX);
        let rs_name = new.map(|i| self.rsets[i].name_any());
        if let (Some(deadline), false, true) = (deadline, paused, rolling_out) {
            let old = recorded(&d);
            let complete = counts.updated == n
                && counts.replicas == n
                && counts.available == n
                && counts.observed_generation >= d.metadata.generation.unwrap_or(0);
            let progressing = counts.updated > old.updated
                || (counts.replicas - counts.updated) < (old.replicas - old.updated)
                || counts.ready > old.ready
                || counts.available > old.available;
            let cur = conds.iter().find(|c| c.type_ == "Progressing").cloned();
            if complete && rs_name.is_some() {
                let msg = format!(
                    "ReplicaSet \"{}\" has successfully progressed.",
                    rs_name.clone().unwrap_or_default()
                );
                set_condition(&mut conds, condition("Progressing", "True", "NewReplicaSetAvailable", msg));
            } else if progressing {
                let msg = match &rs_name {
                    Some(r) => format!("ReplicaSet \"{r}\" is progressing."),
                    None => "Deployment is progressing.".into(),
                };
                let mut c = condition("Progressing", "True", "ReplicaSetUpdated", msg);
                if let Some(cur) = cur.as_ref().filter(|c| c.status == "True") {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                conds.retain(|x| x.type_ != "Progressing");
                conds.push(c);
            } else if let Some(cur) = cur.as_ref() {
                let reason = cur.reason.as_deref();
                if reason != Some("NewReplicaSetAvailable") && reason != Some("ProgressDeadlineExceeded") {
                    let from = cur.last_update_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::now());
                    let due = from.as_second() + i64::from(deadline);
                    let now = Timestamp::now().as_second();
                    if now > due {
                        let msg = match &rs_name {
                            Some(r) => format!("ReplicaSet \"{r}\" has timed out progressing."),
                            None => "Deployment has timed out progressing.".into(),
                        };
                        set_condition(
                            &mut conds,
                            condition("Progressing", "False", "ProgressDeadlineExceeded", msg),
                        );
                    } else {
                        self.requeue = Some(Duration::from_secs((due - now + 1) as u64));
                    }
                }
            }
        }
        let api: Api<Deployment> =
            Api::namespaced(self.dc.ctx.client.clone(), &d.namespace().unwrap_or_default());
        if counts != recorded(&d) || conds != old_conds {
            let p = json!({"status": {
                "observedGeneration": counts.observed_generation,
                "replicas": u::nz(counts.replicas),
                "updatedReplicas": u::nz(counts.updated),
                "readyReplicas": u::nz(counts.ready),
                "availableReplicas": u::nz(counts.available),
                "unavailableReplicas": u::nz(counts.unavailable),
                "conditions": conds,
            }});
            match api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
                Ok(_) => {}
                Err(e) if u::is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(rev) = new.and_then(|i| self.rsets[i].annotations().get(REVISION).cloned()) {
            if d.annotations().get(REVISION) != Some(&rev) && !u::is_terminating(&d.metadata) {
                let p = json!({"metadata": {"annotations": {REVISION: rev}}});
                match api.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
                    Ok(_) => {}
                    Err(e) if u::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if counts.available < n && self.requeue.is_none() {
            // minReadySeconds-driven availability changes arrive through RS status; poll lightly.
            self.requeue = Some(Duration::from_secs(30));
        }
        Ok(())
    }
}
