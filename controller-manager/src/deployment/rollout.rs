//! One deployment sync's steps over its (claimed, creation-ordered) ReplicaSets: find or create the
//! new RS, rolling update, recreate, proportional scaling, history cleanup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use super::util::{self as du, HASH_LABEL, REVISION, REVISION_HISTORY};
use super::{owner_ref, DeployCtx, CONTROLLER};
use crate::context::ReconcileError;
use crate::util as u;

pub struct Sync {
    pub(super) dc: Arc<DeployCtx>,
    pub(super) d: Arc<Deployment>,
    pub(super) api: Api<ReplicaSet>,
    /// The deployment's ReplicaSets, oldest first; updated in place as we scale them.
    pub(super) rsets: Vec<ReplicaSet>,
    /// A Progressing condition decided while finding the new RS (created / found).
    pub(super) pending_condition: Option<DeploymentCondition>,
    pub requeue: Option<Duration>,
}

/// Annotations a deployment does not pass on to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    du::DESIRED_REPLICAS,
    du::MAX_REPLICAS,
];

impl Sync {
    pub fn new(dc: Arc<DeployCtx>, d: Arc<Deployment>, rsets: Vec<ReplicaSet>) -> Sync {
        let api = Api::namespaced(dc.ctx.client.clone(), &d.namespace().unwrap_or_default());
        Sync { dc, d, api, rsets, pending_condition: None, requeue: None }
    }

    fn replicas(&self) -> i32 {
        du::replicas(&self.d)
    }

    /// Index of the RS whose template equals the deployment's (the oldest such), if any.
    pub fn new_idx(&self) -> Option<usize> {
        let tpl = &self.d.spec.as_ref()?.template;
        self.rsets.iter().position(|rs| {
            rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| du::equal_ignore_hash(t, tpl))
        })
    }

    fn old_idxs(&self) -> Vec<usize> {
        let new = self.new_idx();
        (0..self.rsets.len()).filter(|i| Some(*i) != new).collect()
    }

    fn total_replicas(&self) -> i32 {
        self.rsets.iter().map(du::rs_replicas).sum()
    }

    /// Upstream's `isScalingEvent`: an active RS records a different desired-replicas than spec.
    pub fn is_scaling_event(&self) -> bool {
        if self.new_idx().is_none() {
            return false;
        }
        let want = self.replicas().to_string();
        self.rsets
            .iter()
            .filter(|rs| du::rs_replicas(rs) > 0)
            .any(|rs| rs.annotations().get(du::DESIRED_REPLICAS).is_some_and(|v| *v != want))
    }

    fn copied_annotations(&self) -> BTreeMap<String, String> {
        self.d
            .annotations()
            .iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Upstream's `getNewReplicaSet`: bring an existing new RS's revision and annotations up to date,
    /// or create it (if `create`). Returns its index.
    pub async fn ensure_new_rs(&mut self, create: bool) -> Result<Option<usize>, ReconcileError> {
        let max_old = self.old_idxs().iter().map(|i| du::revision(&self.rsets[*i])).max().unwrap_or(0);
        let (surge, _) = du::fenceposts(&self.d);
        if let Some(i) = self.new_idx() {
            let rs = &self.rsets[i];
            let mut ann = self.copied_annotations();
            ann.extend(du::replica_annotations(&self.d, surge));
            let current_rev = du::revision(rs);
            if current_rev < max_old + 1 {
                ann.insert(REVISION.into(), (max_old + 1).to_string());
                if current_rev > 0 {
                    let mut hist: Vec<String> = rs
                        .annotations()
                        .get(REVISION_HISTORY)
                        .map(|h| h.split(',').map(str::to_string).collect())
                        .unwrap_or_default();
                    hist.push(current_rev.to_string());
                    ann.insert(REVISION_HISTORY.into(), hist.join(","));
                }
            }
            let changed = ann.iter().any(|(k, v)| rs.annotations().get(k) != Some(v));
            if changed {
                let p = json!({"metadata": {"annotations": ann, "resourceVersion": rs.resource_version()}});
                let updated =
                    self.api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await?;
                self.rsets[i] = updated;
            }
            if progressing_condition(&self.d).is_none() {
                self.pending_condition = Some(condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", self.rsets[i].name_any()),
                ));
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        let spec = self.d.spec.clone().unwrap_or_default();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = du::pod_template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let new_replicas = if du::is_recreate(&self.d) { self.replicas() } else { self.new_rs_replicas(0) };
        let mut ann = self.copied_annotations();
        ann.extend(du::replica_annotations(&self.d, surge));
        ann.insert(REVISION.into(), (max_old + 1).to_string());
        let name = format!("{}-{}", self.d.name_any(), hash);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(ann),
                owner_references: Some(vec![owner_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(new_replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if new_replicas > 0 {
                    self.dc.ctx.events.normal(
                        CONTROLLER,
                        self.d.as_ref(),
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {new_replicas}"),
                    );
                }
                self.pending_condition = Some(condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                ));
                self.rsets.push(created);
                Ok(Some(self.rsets.len() - 1))
            }
            Err(e) if u::is_already_exists(&e) => {
                // Same name: ours with an equal template is fine (a lagging cache); anything else is a
                // hash collision, resolved by bumping collisionCount (upstream).
                let existing = self.api.get(&name).await?;
                let ours = u::controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| du::equal_ignore_hash(t, &spec.template));
                if ours && same {
                    self.rsets.push(existing);
                    return Ok(Some(self.rsets.len() - 1));
                }
                let dapi: Api<Deployment> =
                    Api::namespaced(self.dc.ctx.client.clone(), &self.d.namespace().unwrap_or_default());
                let p = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
                dapi.patch_status(&self.d.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await?;
                Err(ReconcileError::Other(format!("hash collision for replica set {name}")))
            }
            Err(e) => {
                self.dc.ctx.events.warning(
                    CONTROLLER,
                    self.d.as_ref(),
                    "FailedCreate",
                    format!("Failed to create new replica set \"{name}\": {e}"),
                );
                Err(e.into())
            }
        }
    }

    /// Upstream's `NewRSNewReplicas` for rolling updates: grow the new RS up to replicas + maxSurge total.
    fn new_rs_replicas(&self, current_new: i32) -> i32 {
        let (surge, _) = du::fenceposts(&self.d);
        let n = i64::from(self.replicas());
        let current_total = i64::from(self.total_replicas());
        let max_total = n + i64::from(surge);
        if current_total >= max_total {
            return current_new;
        }
        let up = (max_total - current_total).min(n - i64::from(current_new)).max(0);
        (i64::from(current_new) + up) as i32
    }

    /// Sets an RS's spec.replicas (and its desired/max annotations), with upstream's event.
    async fn scale(&mut self, i: usize, to: i32) -> Result<bool, ReconcileError> {
        let from = du::rs_replicas(&self.rsets[i]);
        let (surge, _) = du::fenceposts(&self.d);
        let ann = du::replica_annotations(&self.d, surge);
        let ann_same = ann.iter().all(|(k, v)| self.rsets[i].annotations().get(k) == Some(v));
        if from == to && ann_same {
            return Ok(false);
        }
        let name = self.rsets[i].name_any();
        // The cached resourceVersion guards against acting on a stale cache (409 → resync).
        let rv = self.rsets[i].resource_version();
        let p = json!({"metadata": {"annotations": ann, "resourceVersion": rv}, "spec": {"replicas": to}});
        let updated = self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await?;
        self.rsets[i] = updated;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            self.dc.ctx.events.normal(
                CONTROLLER,
                self.d.as_ref(),
                "ScalingReplicaSet",
                format!("Scaled {dir} replica set {name} from {from} to {to}"),
            );
        }
        Ok(from != to)
    }

    pub async fn rollout_rolling(&mut self) -> Result<(), ReconcileError> {
        let Some(new) = self.ensure_new_rs(true).await? else { return self.sync_status(true).await };
        // Scale up the new RS.
        let n = self.replicas();
        let cur = du::rs_replicas(&self.rsets[new]);
        let target = if cur > n { n } else { self.new_rs_replicas(cur) };
        if self.scale(new, target).await? && target != cur {
            return self.sync_status(true).await;
        }
        // Scale down old RSes as far as availability allows.
        if self.reconcile_old(new).await? {
            return self.sync_status(true).await;
        }
        if self.complete_now(new) {
            self.cleanup(Some(new)).await?;
        }
        self.sync_status(true).await
    }

    /// Upstream's `reconcileOldReplicaSets`: first unhealthy old replicas, then available ones,
    /// never below replicas - maxUnavailable available.
    async fn reconcile_old(&mut self, new: usize) -> Result<bool, ReconcileError> {
        let olds = self.old_idxs();
        let old_count: i32 = olds.iter().map(|i| du::rs_replicas(&self.rsets[*i])).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let (_, unavail) = du::fenceposts(&self.d);
        let min_available = self.replicas() - unavail;
        let all = self.total_replicas();
        let new_rs = &self.rsets[new];
        let new_unavailable = (du::rs_replicas(new_rs) - du::rs_status(new_rs).2).max(0);
        let mut max_down = all - min_available - new_unavailable;
        if max_down <= 0 {
            return Ok(false);
        }
        let mut scaled = false;
        // Unhealthy replicas first (oldest RS first).
        for &i in &olds {
            if max_down <= 0 {
                break;
            }
            let r = du::rs_replicas(&self.rsets[i]);
            let unhealthy = (r - du::rs_status(&self.rsets[i]).2).max(0);
            let down = unhealthy.min(max_down);
            if r == 0 || down == 0 {
                continue;
            }
            scaled |= self.scale(i, r - down).await?;
            max_down -= down;
        }
        // Then available ones, keeping minAvailable.
        let available: i32 = self.rsets.iter().map(|rs| du::rs_status(rs).2).sum();
        if available > min_available {
            let mut total_down = available - min_available;
            for &i in &olds {
                if total_down <= 0 {
                    break;
                }
                let r = du::rs_replicas(&self.rsets[i]);
                if r == 0 {
                    continue;
                }
                let down = r.min(total_down);
                scaled |= self.scale(i, r - down).await?;
                total_down -= down;
            }
        }
        Ok(scaled)
    }

    pub async fn rollout_recreate(&mut self) -> Result<(), ReconcileError> {
        let new = self.ensure_new_rs(false).await?;
        let mut scaled_down = false;
        for i in self.old_idxs() {
            if du::rs_replicas(&self.rsets[i]) > 0 {
                scaled_down |= self.scale(i, 0).await?;
            }
        }
        if scaled_down || self.old_pods_running() {
            return self.sync_status(true).await;
        }
        let new = match new {
            Some(i) => i,
            None => match self.ensure_new_rs(true).await? {
                Some(i) => i,
                None => return self.sync_status(true).await,
            },
        };
        let n = self.replicas();
        self.scale(new, n).await?;
        if self.complete_now(new) {
            self.cleanup(Some(new)).await?;
        }
        self.sync_status(true).await
    }

    fn pods_of(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let ns = rs.namespace();
        self.dc
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace() == ns && u::controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect()
    }

    /// Upstream's `oldPodsRunning`: any old pod not Succeeded/Failed (terminating ones included).
    fn old_pods_running(&self) -> bool {
        self.old_idxs().iter().any(|&i| {
            let rs = &self.rsets[i];
            du::rs_status(rs).0 > 0
                || self.pods_of(rs).iter().any(|p| !matches!(u::pod_phase(p), "Succeeded" | "Failed"))
        })
    }

    /// Paused or scaling: proportional scaling, no rollout (upstream's `sync` + `scale`).
    pub async fn sync(&mut self) -> Result<(), ReconcileError> {
        let new = self.ensure_new_rs(false).await?;
        let n = self.replicas();
        let active: Vec<usize> =
            (0..self.rsets.len()).filter(|i| du::rs_replicas(&self.rsets[*i]) > 0).collect();
        let only = match active.len() {
            1 => Some(active[0]),
            0 => new.or(self.rsets.len().checked_sub(1)),
            _ => None,
        };
        if let Some(i) = only {
            self.scale(i, n).await?;
        } else if let Some(i) = new.filter(|&i| {
            let rs = &self.rsets[i];
            du::rs_replicas(rs) == n && du::rs_status(rs).2 == n
        }) {
            for j in self.old_idxs() {
                if j != i {
                    self.scale(j, 0).await?;
                }
            }
        } else if !du::is_recreate(&self.d) {
            let (surge, _) = du::fenceposts(&self.d);
            let allowed = i64::from(n) + i64::from(surge);
            let total: i64 = active.iter().map(|&i| i64::from(du::rs_replicas(&self.rsets[i]))).sum();
            let to_add = allowed - total;
            if to_add != 0 && total > 0 {
                // Proportional to each active RS's size; the remainder goes to the largest.
                let mut order = active.clone();
                order.sort_by_key(|&i| std::cmp::Reverse(du::rs_replicas(&self.rsets[i])));
                let mut added = 0i64;
                let mut targets = Vec::new();
                for &i in &order {
                    let r = i64::from(du::rs_replicas(&self.rsets[i]));
                    let share = r * to_add / total;
                    added += share;
                    targets.push((i, r + share));
                }
                if let Some(first) = targets.first_mut() {
                    first.1 += to_add - added;
                }
                for (i, t) in targets {
                    self.scale(i, t.clamp(0, i64::from(i32::MAX)) as i32).await?;
                }
            }
        }
        if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(new).await?;
        }
        self.sync_status(false).await
    }

    fn complete_now(&self, new: usize) -> bool {
        let n = self.replicas();
        let rs = &self.rsets[new];
        let all_actual: i32 = self.rsets.iter().map(|r| du::rs_status(r).0).sum();
        du::rs_status(rs).0 == n && all_actual == n && du::rs_status(rs).2 == n
    }

    /// Deletes the oldest scaled-down RSes beyond revisionHistoryLimit.
    async fn cleanup(&mut self, new: Option<usize>) -> Result<(), ReconcileError> {
        let limit = self.d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        let mut cleanable: Vec<usize> = (0..self.rsets.len())
            .filter(|&i| Some(i) != new)
            .filter(|&i| {
                let rs = &self.rsets[i];
                du::rs_replicas(rs) == 0
                    && du::rs_status(rs).0 == 0
                    && !u::is_terminating(&rs.metadata)
                    && rs.metadata.generation.unwrap_or(0)
                        <= rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0)
            })
            .collect();
        if cleanable.len() <= limit {
            return Ok(());
        }
        cleanable.sort_by_key(|&i| du::revision(&self.rsets[i]));
        let excess = cleanable.len() - limit;
        for &i in cleanable.iter().take(excess) {
            let name = self.rsets[i].name_any();
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if u::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut gone: Vec<usize> = cleanable.into_iter().take(excess).collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for i in gone {
            self.rsets.remove(i);
        }
        Ok(())
    }
}

pub fn progressing_condition(d: &Deployment) -> Option<&DeploymentCondition> {
    d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Progressing")
}

pub fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}
