//! The StatefulSet controller (upstream's `pkg/controller/statefulset`).
//!
//! A sync (upstream's `updateStatefulSet`), from the caches:
//! 1. claim pods and ControllerRevisions (adopt selected orphans, release owned that stopped matching);
//! 2. revisions (`history`): the update revision is the set's current template — an equal existing
//!    revision is reused (renumbered if it is not the newest, as a rollback does), else created;
//!    the current revision is the one `status.currentRevision` names (else the update revision);
//! 3. once the expectations are met: pods `<set>-<ordinal>` for ordinals `[start, start+replicas)`,
//!    each after its claims (`<template>-<set>-<ordinal>`). Finished pods are replaced. OrderedReady
//!    creates one ordinal at a time and waits for each to be Running and Ready (and available after
//!    minReadySeconds) before the next; pods out of range are deleted from the highest ordinal, one
//!    at a time, only when all others are healthy. Parallel does all of it at once;
//! 4. RollingUpdate: outdated pods at ordinal index ≥ partition are deleted from the highest,
//!    at most `maxUnavailable` unavailable at a time, and recreated at the update revision; pods
//!    below the partition are (re)created at the current revision. OnDelete only recreates pods
//!    someone deleted, at the update revision;
//! 5. status (replicas, ready, available, current/updated counts and revisions, collisionCount,
//!    observedGeneration); the rollout completes (current := update) when every pod is updated and
//!    ready; history beyond revisionHistoryLimit (revisions no pod uses) is deleted.
//!
//! Claims follow `persistentVolumeClaimRetentionPolicy`: whenDeleted=Delete makes the set own them,
//! whenScaled=Delete makes a pod being scaled away own its claims before it is deleted, so the
//! garbage collector removes them.

pub mod pods;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::expectations::{Expectations, Seen};
use crate::history::{self, History, LiveCounts};
use crate::queue::Controller;
use crate::{util, Stop};
use pods as p;

pub const CONTROLLER: &str = "statefulset-controller";

pub struct SetCtx {
    ctx: Arc<Ctx>,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    exp: Expectations,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let sets = ctx.inf.statefulsets.store();
    let pods = ctx.inf.pods.store();
    let revisions = ctx.inf.controllerrevisions.store();
    let claims = ctx.inf.pvcs.store();
    let pod_mapper = {
        let sets = sets.clone();
        move |pod: Arc<Pod>| owners_of(&pod.metadata, &sets)
    };
    let rev_mapper = {
        let sets = sets.clone();
        move |r: Arc<ControllerRevision>| owners_of(&r.metadata, &sets)
    };
    let controller = Controller::for_shared_stream(ctx.inf.statefulsets.subscribe(), sets.clone())
        .watches_shared_stream(ctx.inf.pods.subscribe(), pod_mapper)
        .watches_shared_stream(ctx.inf.controllerrevisions.subscribe(), rev_mapper);
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let concurrency = ctx.config.concurrent_statefulset_syncs;
    let sc = Arc::new(SetCtx { ctx, sets, pods, revisions, claims, exp: Expectations::default() });
    drive(CONTROLLER, controller, stop, concurrency, reconcile, sc).await;
}

/// The set controlling an object, or every set of its namespace selecting an orphan.
fn owners_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    sets: &Store<StatefulSet>,
) -> Vec<ObjectRef<StatefulSet>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    if let Some(r) = util::controller_ref(meta) {
        return if r.kind == "StatefulSet" { vec![ObjectRef::new(&r.name).within(&ns)] } else { vec![] };
    }
    sets.state()
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && util::selector_matches(s.spec.as_ref().map(|s| &s.selector), meta.labels.as_ref())
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

pub fn owner_ref(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.name_any(),
        uid: set.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn pod_ref(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(true),
    }
}

async fn reconcile(set: Arc<StatefulSet>, sc: Arc<SetCtx>) -> Result<Action, ReconcileError> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let key = format!("{ns}/{name}");
    let set = sc.sets.get(&ObjectRef::new(&name).within(&ns)).unwrap_or(set);
    let Some(uid) = set.metadata.uid.clone() else { return Ok(Action::await_change()) };
    let Some(spec) = set.spec.as_ref() else { return Ok(Action::await_change()) };
    let selector = spec.selector.clone();
    if !util::selector_matches(Some(&selector), spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()))
    {
        // Validation refuses this; never act on a selector that does not select the template.
        sc.ctx.events.warning(
            CONTROLLER,
            set.as_ref(),
            "SelectingAll",
            "This statefulset's selector does not select its pod template.".into(),
        );
        return Ok(Action::await_change());
    }
    let deleting = util::is_terminating(&set.metadata);
    let client = sc.ctx.client.clone();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let oref = owner_ref(&set);
    let live = || {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let (name, uid) = (name.clone(), uid.clone());
        async move {
            let l = api.get_opt(&name).await?;
            Ok::<bool, kube::Error>(l.is_some_and(|l| {
                l.metadata.uid.as_deref() == Some(uid.as_str()) && !util::is_terminating(&l.metadata)
            }))
        }
    };

    // 1. Claim pods.
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    let mut orphans: Vec<Arc<Pod>> = Vec::new();
    for pod in sc.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = util::selector_matches(Some(&selector), pod.metadata.labels.as_ref());
        match util::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    owned.push(pod);
                } else {
                    let refs: Vec<&OwnerReference> =
                        pod.owner_references().iter().filter(|r| r.uid != uid).collect();
                    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
                    ignore_not_found(
                        pod_api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await,
                    )?;
                }
            }
            Some(_) => {}
            None if matches && !deleting && !util::is_terminating(&pod.metadata) => orphans.push(pod),
            None => {}
        }
    }
    if !orphans.is_empty() && live().await? {
        for pod in orphans {
            let mut refs = pod.owner_references().to_vec();
            refs.push(oref.clone());
            let patch =
                json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
            match pod_api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(p) => owned.push(Arc::new(p)),
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // 2. Revisions.
    let hist = History::new(client.clone(), &ns);
    let mut revisions = hist.claim(sc.revisions.state(), &oref, &selector, live).await?;
    history::sort(&mut revisions);
    let status = set.status.clone().unwrap_or_default();
    let mut collision_count = status.collision_count.unwrap_or(0);
    let data = p::revision_data(&set);
    let (equal, _) = history::split_current(revisions.clone(), &data);
    let probe = history::new_revision(
        &oref,
        &ns,
        p::labels_of(&set),
        set.metadata.annotations.as_ref(),
        &history::hash(&data, Some(collision_count)),
        data,
        history::next_number(&revisions),
    );
    let update_rev = match equal.last() {
        Some(e) if revisions.last().map(|r| r.name_any()) == Some(e.name_any()) => e.clone(),
        Some(e) => {
            // A rollback to an older template: that revision becomes the newest.
            let r = hist.renumber(e, probe.revision).await?;
            revisions.retain(|x| x.name_any() != r.name_any());
            revisions.push(r.clone());
            r
        }
        None if deleting => probe.clone(),
        None => {
            let created = hist.create(probe.clone(), collision_count).await?;
            collision_count = created.collision_count;
            if !revisions.iter().any(|r| r.name_any() == created.revision.name_any()) {
                revisions.push(created.revision.clone());
            }
            created.revision
        }
    };
    let current_rev = status
        .current_revision
        .as_ref()
        .and_then(|n| revisions.iter().find(|r| &r.name_any() == n).cloned())
        .unwrap_or_else(|| update_rev.clone());
    let update_name = update_rev.name_any();
    let current_name = current_rev.name_any();
    let update_tpl = spec.template.clone();
    let current_tpl = current_rev
        .data
        .as_ref()
        .and_then(|d| history::patch_template(&d.0))
        .unwrap_or_else(|| update_tpl.clone());

    // 3-4. Pods.
    let pods_store = sc.pods.clone();
    let ns2 = ns.clone();
    let satisfied = sc.exp.satisfied(&key, |n| match pods_store.get(&ObjectRef::new(n).within(&ns2)) {
        None => Seen::Absent,
        Some(p) if util::is_terminating(&p.metadata) => Seen::Terminating,
        Some(_) => Seen::Present,
    });
    let now = Timestamp::now();
    let mut requeue: Option<Duration> = None;
    if satisfied && !deleting {
        let plan = Revs { current: (&current_name, &current_tpl), update: (&update_name, &update_tpl) };
        requeue = manage(&sc, &set, &oref, &key, &owned, &plan, now).await?;
    }

    // 5. Status.
    let min_ready = p::min_ready_seconds(&set);
    let mut st = (0, 0, 0, 0, 0);
    for pod in &owned {
        if p::ordinal_of(&name, &pod.name_any()).is_none() {
            continue;
        }
        st.0 += 1;
        if p::running_and_ready(pod) {
            st.1 += 1;
            if p::running_and_available(pod, min_ready, now) {
                st.2 += 1;
            } else if let Some(s) = util::seconds_until_available(pod, min_ready, now) {
                let d = Duration::from_secs(s.max(1) as u64);
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
            }
        }
        if !util::is_terminating(&pod.metadata) {
            if p::pod_revision(pod) == Some(current_name.as_str()) {
                st.3 += 1;
            }
            if p::pod_revision(pod) == Some(update_name.as_str()) {
                st.4 += 1;
            }
        }
    }
    let (replicas, ready, available, mut current_replicas, updated) = st;
    let mut current_revision = current_name.clone();
    // Upstream's completeRollingUpdate.
    if !p::is_on_delete(&set) && updated == replicas && ready == replicas && replicas == p::replicas(&set) {
        current_revision = update_name.clone();
        current_replicas = updated;
    }
    let generation = set.metadata.generation.unwrap_or(0);
    let want = json!({
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current_replicas,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_name,
        "collisionCount": collision_count,
        "observedGeneration": generation,
    });
    let have = json!({
        "replicas": status.replicas,
        "readyReplicas": status.ready_replicas.unwrap_or(0),
        "availableReplicas": status.available_replicas.unwrap_or(0),
        "currentReplicas": status.current_replicas.unwrap_or(0),
        "updatedReplicas": status.updated_replicas.unwrap_or(0),
        "currentRevision": status.current_revision.clone().unwrap_or_default(),
        "updateRevision": status.update_revision.clone().unwrap_or_default(),
        "collisionCount": status.collision_count.unwrap_or(0),
        "observedGeneration": status.observed_generation.unwrap_or(0),
    });
    if want != have && !deleting {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({ "status": want }))).await
        {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }

    // History: keep revisions a pod, the current or the update revision uses.
    if !deleting {
        let mut live: HashSet<String> =
            owned.iter().filter_map(|p| p::pod_revision(p).map(str::to_string)).collect();
        live.insert(current_revision);
        live.insert(update_name);
        let limit = spec.revision_history_limit.unwrap_or(10);
        for r in history::to_truncate(&revisions, limit, |r| live.contains(&r.name_any()), LiveCounts::No) {
            hist.delete(&r).await?;
        }
    }
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600))))
}

struct Revs<'a> {
    current: (&'a str, &'a PodTemplateSpec),
    update: (&'a str, &'a PodTemplateSpec),
}

fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Steps 3 and 4; returns when to look again (a pod becoming available), if any.
async fn manage(
    sc: &SetCtx,
    set: &Arc<StatefulSet>,
    oref: &OwnerReference,
    key: &str,
    owned: &[Arc<Pod>],
    revs: &Revs<'_>,
    now: Timestamp,
) -> Result<Option<Duration>, ReconcileError> {
    let name = set.name_any();
    let ns = set.namespace().unwrap_or_default();
    let start = p::start_ordinal(set);
    let count = p::replicas(set);
    let ordered = p::is_ordered(set);
    let min_ready = p::min_ready_seconds(set);
    let (delete_on_set_delete, delete_on_scale) = p::retention(set);
    let pod_api: Api<Pod> = Api::namespaced(sc.ctx.client.clone(), &ns);

    let mut replicas: Vec<Option<Arc<Pod>>> = vec![None; count as usize];
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    for pod in owned {
        let Some(ord) = p::ordinal_of(&name, &pod.name_any()) else { continue };
        if ord >= start && ord < start + count {
            replicas[(ord - start) as usize] = Some(pod.clone());
        } else {
            condemned.push(pod.clone());
        }
    }
    condemned.sort_by_key(|p| std::cmp::Reverse(p::ordinal_of(&name, &p.name_any()).unwrap_or(0)));
    let partition = p::partition(set);
    let rolling = !p::is_on_delete(set);
    // Upstream's newVersionedStatefulSetPod: below the partition, the current revision.
    let template_for = |idx: i32| -> (&str, &PodTemplateSpec) {
        if rolling && idx < partition {
            revs.current
        } else {
            revs.update
        }
    };

    // The first unhealthy pod (ordered mode waits on it).
    let unhealthy = |p: &Pod| !p::healthy(p);
    let mut creates: Vec<(i32, Pod)> = Vec::new();
    let mut replaced: Vec<Arc<Pod>> = Vec::new();
    let mut wait = false;
    let mut requeue = None;
    for (idx, slot) in replicas.iter().enumerate() {
        let ord = start + idx as i32;
        match slot {
            Some(pod) if p::finished(pod) && !util::is_terminating(&pod.metadata) => {
                // Failed or Succeeded: delete and recreate (upstream).
                replaced.push(pod.clone());
                if ordered {
                    wait = true;
                    break;
                }
            }
            Some(pod) => {
                // Claims a pod lost (deleted by someone) are recreated; the retention refs kept.
                ensure_claims(sc, set, oref, ord, None, delete_on_set_delete, false).await?;
                if ordered && (util::is_terminating(&pod.metadata) || !p::running_and_ready(pod)) {
                    wait = true;
                    break;
                }
                if ordered && !p::running_and_available(pod, min_ready, now) {
                    if let Some(s) = util::seconds_until_available(pod, min_ready, now) {
                        requeue = Some(Duration::from_secs(s.max(1) as u64));
                    }
                    wait = true;
                    break;
                }
            }
            None => {
                let (rev, tpl) = template_for(idx as i32);
                creates.push((ord, p::new_pod(set, oref, tpl, ord, rev)));
                if ordered {
                    wait = true;
                    break;
                }
            }
        }
    }
    for pod in &replaced {
        delete_pod(sc, set, key, &pod_api, pod).await?;
    }
    if !creates.is_empty() {
        // Claims first, then the pods (all at once in Parallel mode).
        for (ord, _) in &creates {
            if !ensure_claims(sc, set, oref, *ord, None, delete_on_set_delete, true).await? {
                // A claim is being deleted: wait for it to go.
                return Ok(Some(Duration::from_secs(1)));
            }
        }
        for (_, pod) in &creates {
            sc.exp.expect_created(key, pod.name_any());
        }
        let pp = PostParams::default();
        let results = join_all(creates.iter().map(|(_, pod)| pod_api.create(&pp, pod))).await;
        let mut failed = None;
        for ((_, pod), r) in creates.iter().zip(results) {
            let pname = pod.name_any();
            match r {
                Ok(created) => sc.ctx.events.normal_related(
                    CONTROLLER,
                    set.as_ref(),
                    "SuccessfulCreate",
                    format!("create Pod {pname} in StatefulSet {name} successful"),
                    created.object_ref(&()),
                ),
                Err(e) if util::is_already_exists(&e) => sc.exp.observe_gone(key, &pname),
                Err(e) => {
                    sc.exp.observe_gone(key, &pname);
                    sc.ctx.events.warning(
                        CONTROLLER,
                        set.as_ref(),
                        "FailedCreate",
                        format!("create Pod {pname} in StatefulSet {name} failed error: {e}"),
                    );
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    if wait {
        return Ok(requeue);
    }

    // Scale down: highest ordinal first; ordered mode one at a time, only when the others are healthy.
    let first_unhealthy =
        replicas.iter().flatten().chain(condemned.iter()).find(|p| unhealthy(p)).map(|p| p.name_any());
    for pod in &condemned {
        if util::is_terminating(&pod.metadata) {
            if ordered {
                return Ok(None);
            }
            continue;
        }
        if ordered && first_unhealthy.as_deref().is_some_and(|n| n != pod.name_any()) {
            return Ok(None);
        }
        let ord = p::ordinal_of(&name, &pod.name_any()).unwrap_or(0);
        ensure_claims(sc, set, oref, ord, delete_on_scale.then_some(pod.as_ref()), delete_on_set_delete, false)
            .await?;
        delete_pod(sc, set, key, &pod_api, pod).await?;
        if ordered {
            return Ok(None);
        }
    }
    if !rolling {
        return Ok(requeue);
    }

    // RollingUpdate: outdated pods at index >= partition, highest first, within maxUnavailable.
    let max_unavailable = p::max_unavailable(set, count);
    let unavailable = replicas.iter().filter(|s| s.as_ref().is_none_or(|p| unhealthy(p))).count() as i32;
    if unavailable >= max_unavailable {
        return Ok(requeue);
    }
    let mut budget = max_unavailable - unavailable;
    for idx in (partition.max(0) as usize..replicas.len()).rev() {
        if budget == 0 {
            break;
        }
        let Some(pod) = &replicas[idx] else { continue };
        if p::pod_revision(pod) != Some(revs.update.0) && !util::is_terminating(&pod.metadata) {
            delete_pod(sc, set, key, &pod_api, pod).await?;
            budget -= 1;
        }
    }
    Ok(requeue)
}

async fn delete_pod(
    sc: &SetCtx,
    set: &StatefulSet,
    key: &str,
    api: &Api<Pod>,
    pod: &Pod,
) -> Result<(), ReconcileError> {
    let pname = pod.name_any();
    sc.exp.expect_deleted(key, pname.clone());
    let set_name = set.name_any();
    match api.delete(&pname, &DeleteParams::default()).await {
        Ok(_) => {
            sc.ctx.events.normal_related(
                CONTROLLER,
                set,
                "SuccessfulDelete",
                format!("delete Pod {pname} in StatefulSet {set_name} successful"),
                pod.object_ref(&()),
            );
            Ok(())
        }
        Err(e) if util::is_not_found(&e) => {
            sc.exp.observe_gone(key, &pname);
            Ok(())
        }
        Err(e) => {
            sc.exp.observe_gone(key, &pname);
            sc.ctx.events.warning(
                CONTROLLER,
                set,
                "FailedDelete",
                format!("delete Pod {pname} in StatefulSet {set_name} failed error: {e}"),
            );
            Err(e.into())
        }
    }
}

/// Makes sure every claim of `ord` exists (creating it when `create`) and carries the owner
/// references the retention policy asks for (`pod` is the pod being scaled away that should own
/// them). False when a claim is being deleted (the pod must wait for it).
async fn ensure_claims(
    sc: &SetCtx,
    set: &StatefulSet,
    oref: &OwnerReference,
    ord: i32,
    pod: Option<&Pod>,
    want_set: bool,
    create: bool,
) -> Result<bool, ReconcileError> {
    let templates = p::claim_templates(set);
    if templates.is_empty() {
        return Ok(true);
    }
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(sc.ctx.client.clone(), &ns);
    let set_name = set.name_any();
    let pref = pod.map(pod_ref);
    for t in templates {
        let cname = p::claim_name(&t.name_any(), &set_name, ord);
        let cached = sc.claims.get(&ObjectRef::new(&cname).within(&ns));
        let existing = match cached {
            Some(c) => Some(c.as_ref().clone()),
            None if create => api.get_opt(&cname).await?,
            None => None,
        };
        match existing {
            Some(c) if util::is_terminating(&c.metadata) => return Ok(false),
            Some(c) => {
                if let Some(refs) = p::claim_refs(&c, oref, want_set, pref.as_ref()) {
                    let patch =
                        json!({"metadata": {"ownerReferences": refs, "resourceVersion": c.resource_version()}});
                    ignore_not_found(api.patch(&cname, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
                }
            }
            None if create => {
                let mut claim = p::new_claim(set, t, ord);
                if want_set {
                    let mut r = oref.clone();
                    r.controller = Some(true);
                    claim.metadata.owner_references = Some(vec![r]);
                }
                let pod_name = p::pod_name(&set_name, ord);
                match api.create(&PostParams::default(), &claim).await {
                    Ok(created) => sc.ctx.events.normal_related(
                        CONTROLLER,
                        set,
                        "SuccessfulCreate",
                        format!("create Claim {cname} Pod {pod_name} in StatefulSet {set_name} success"),
                        created.object_ref(&()),
                    ),
                    Err(e) if util::is_already_exists(&e) => {}
                    Err(e) => {
                        sc.ctx.events.warning(
                            CONTROLLER,
                            set,
                            "FailedCreate",
                            format!("create Claim {cname} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                        );
                        return Err(e.into());
                    }
                }
            }
            None => {}
        }
    }
    Ok(true)
}
