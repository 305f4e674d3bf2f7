//! ControllerRevision history helpers (upstream's `pkg/controller/history` plus the parts of
//! `daemon/update.go` that are not DaemonSet-specific), written owner-agnostic so that they can be
//! folded into one module with the StatefulSet controller's: the revision hash of a template and a
//! collision count, the revision name, the template patch a revision stores (what `kubectl rollout
//! undo` applies), claiming revisions by owner, picking the current one and truncating the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::util as u;

/// The label a revision (and the pods made from it) carries its hash in.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Upstream's `controller.ComputeHash`: FNV-32a over the template and the collision count,
/// rendered in the safe alphabet (the same function the Deployment controller names its
/// ReplicaSets with).
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    crate::deployment::util::pod_template_hash(template, collision_count)
}

/// Upstream's `ControllerRevisionName`: `<owner>-<hash>`, the owner part cut to 223 characters.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// The strategic merge patch a DaemonSet or StatefulSet revision stores (upstream's `getPatch`):
/// `{"spec": {"template": <template>, "$patch": "replace" inside it}}`. Applying it restores the
/// template exactly; `kubectl rollout undo` does just that.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// Does the revision store exactly `data`? Compared as JSON values, not bytes, so key order and
/// whitespace of whoever wrote it do not matter.
pub fn data_equals(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// A new revision of an owner: `labels` are the template's labels plus the hash label; the
/// annotations are the owner's (upstream copies them); controlled by `owner`.
pub fn new_revision(
    owner: OwnerReference,
    namespace: &str,
    template_labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    hash: &str,
    data: Value,
    revision: i64,
) -> ControllerRevision {
    let mut labels = template_labels.cloned().unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&owner.name, hash)),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: annotations.filter(|a| !a.is_empty()).cloned(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// What claiming found: the owner's revisions, and orphans its selector matches (to adopt).
pub struct Claimed {
    pub owned: Vec<Arc<ControllerRevision>>,
    pub orphans: Vec<Arc<ControllerRevision>>,
    /// Owned revisions whose labels no longer match the selector (to release).
    pub strays: Vec<Arc<ControllerRevision>>,
}

/// Upstream's `ClaimControllerRevisions` decision over the cached revisions of one namespace.
pub fn claim(
    revisions: impl IntoIterator<Item = Arc<ControllerRevision>>,
    namespace: &str,
    owner_uid: &str,
    selector: Option<&LabelSelector>,
    owner_deleting: bool,
) -> Claimed {
    let mut c = Claimed { owned: vec![], orphans: vec![], strays: vec![] };
    for r in revisions {
        if r.namespace().as_deref() != Some(namespace) {
            continue;
        }
        let matches = u::selector_matches(selector, r.metadata.labels.as_ref());
        match u::controller_ref(&r.metadata) {
            Some(cr) if cr.uid == owner_uid => {
                if matches || owner_deleting {
                    c.owned.push(r);
                } else {
                    c.strays.push(r);
                }
            }
            Some(_) => {}
            None if matches && !owner_deleting && !u::is_terminating(&r.metadata) => c.orphans.push(r),
            None => {}
        }
    }
    c
}

/// Adopts (adds `owner` as controller) or releases (drops the owner's reference) one revision,
/// guarded by its resourceVersion. A revision already gone is not an error.
pub async fn set_controller(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    owner: Option<&OwnerReference>,
    owner_uid: &str,
) -> Result<Option<ControllerRevision>, kube::Error> {
    let mut refs: Vec<OwnerReference> =
        rev.owner_references().iter().filter(|r| r.uid != owner_uid).cloned().collect();
    if let Some(o) = owner {
        refs.push(o.clone());
    }
    let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rev.resource_version()}});
    match api.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if u::is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The highest revision number among `revs` (0 for none).
pub fn max_revision(revs: &[Arc<ControllerRevision>]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// Splits the owned revisions into those storing `data` (current; the highest revision first)
/// and the others (old, oldest first).
pub fn split_current(
    owned: Vec<Arc<ControllerRevision>>,
    data: &Value,
) -> (Vec<Arc<ControllerRevision>>, Vec<Arc<ControllerRevision>>) {
    let (mut cur, mut old): (Vec<_>, Vec<_>) = owned.into_iter().partition(|r| data_equals(r, data));
    cur.sort_by_key(|r| std::cmp::Reverse(r.revision));
    old_sort_stable(&mut old);
    (cur, old)
}

fn old_sort_stable(old: &mut [Arc<ControllerRevision>]) {
    old.sort_by_key(|a| (a.revision, a.name_any()));
}

/// Sets a revision's number (upstream bumps the current revision past every old one when a
/// template comes back, e.g. after `rollout undo`).
pub async fn set_revision(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, kube::Error> {
    let p = json!({"revision": revision, "metadata": {"resourceVersion": rev.resource_version()}});
    api.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await
}

/// The old revisions to delete so that at most `limit` remain (upstream's `cleanupHistory`):
/// oldest first, never one whose hash a live pod still carries (`live(hash)`).
pub fn to_truncate(
    old: &[Arc<ControllerRevision>],
    limit: usize,
    live: impl Fn(&str) -> bool,
) -> Vec<Arc<ControllerRevision>> {
    let mut excess = old.len().saturating_sub(limit);
    let mut sorted = old.to_vec();
    old_sort_stable(&mut sorted);
    let mut out = Vec::new();
    for r in sorted {
        if excess == 0 {
            break;
        }
        let hash = r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH_LABEL));
        if hash.is_some_and(|h| live(h)) {
            continue;
        }
        out.push(r);
        excess -= 1;
    }
    out
}

/// Deletes revisions; one already gone is fine.
pub async fn delete_all(
    api: &Api<ControllerRevision>,
    revs: &[Arc<ControllerRevision>],
) -> Result<(), kube::Error> {
    for r in revs {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if u::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, revision: i64, hash: &str, data: Value) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "a".to_string()),
                    (REVISION_HASH_LABEL.to_string(), hash.to_string()),
                ])),
                ..Default::default()
            },
            data: Some(RawExtension(data)),
            revision,
        })
    }

    #[test]
    fn patch_replaces_the_template_and_matches_by_value() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
                .unwrap();
        let p = template_patch(&t);
        assert_eq!(p["spec"]["template"]["$patch"], "replace");
        assert_eq!(p["spec"]["template"]["spec"]["containers"][0]["image"], "x");
        let r = rev("ds-1", 1, "h", serde_json::from_str(&p.to_string()).unwrap());
        assert!(data_equals(&r, &p));
        let mut t2 = t.clone();
        t2.spec.as_mut().unwrap().containers[0].image = Some("y".into());
        assert!(!data_equals(&r, &template_patch(&t2)));
        assert_ne!(compute_hash(&t, None), compute_hash(&t2, None));
        assert_ne!(compute_hash(&t, None), compute_hash(&t, Some(1)));
    }

    #[test]
    fn split_and_truncate_keep_live_and_newest() {
        let cur = json!({"c": 1});
        let revs = vec![
            rev("r1", 1, "h1", json!({"o": 1})),
            rev("r2", 2, "h2", json!({"o": 2})),
            rev("r4", 4, "h4", cur.clone()),
            rev("r3", 3, "h3", json!({"o": 3})),
        ];
        assert_eq!(max_revision(&revs), 4);
        let (c, old) = split_current(revs, &cur);
        assert_eq!(c.iter().map(|r| r.name_any()).collect::<Vec<_>>(), ["r4"]);
        assert_eq!(old.iter().map(|r| r.name_any()).collect::<Vec<_>>(), ["r1", "r2", "r3"]);
        // Limit 1: two go, oldest first, but a revision a pod still runs is kept.
        let gone = to_truncate(&old, 1, |h| h == "h1");
        assert_eq!(gone.iter().map(|r| r.name_any()).collect::<Vec<_>>(), ["r2", "r3"]);
        assert!(to_truncate(&old, 10, |_| false).is_empty());
    }

    #[test]
    fn claim_adopts_matching_orphans_and_releases_strays() {
        let sel: LabelSelector = serde_json::from_value(json!({"matchLabels": {"app": "a"}})).unwrap();
        let mut owned = (*rev("mine", 1, "h", json!({}))).clone();
        owned.metadata.owner_references =
            Some(vec![OwnerReference { uid: "u1".into(), controller: Some(true), ..Default::default() }]);
        let mut stray = owned.clone();
        stray.metadata.name = Some("stray".into());
        stray.metadata.labels = Some(BTreeMap::from([("app".to_string(), "b".to_string())]));
        let orphan = rev("orphan", 1, "h", json!({}));
        let c = claim(vec![Arc::new(owned), Arc::new(stray), orphan], "default", "u1", Some(&sel), false);
        assert_eq!(c.owned.len(), 1);
        assert_eq!(c.strays[0].name_any(), "stray");
        assert_eq!(c.orphans[0].name_any(), "orphan");
        assert_eq!(revision_name("ds", "abc"), "ds-abc");
    }
}
