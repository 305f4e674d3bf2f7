//! ControllerRevision history shared by the controllers that keep one (StatefulSet, DaemonSet):
//! upstream's `pkg/controller/history` plus the revision helpers of its callers.
//!
//! A revision snapshots what a workload's pods are made from as a patch (`data`, upstream's
//! `getPatch`: the pod template replacing the owner's wholesale), numbered (`revision`), named
//! `<parent>-<hash>` and labelled `controller-revision-hash=<hash>`. The StatefulSet's hash is
//! upstream's `HashControllerRevision` ([`hash`]); the DaemonSet names its revisions with the
//! template hash instead (upstream's `snapshot` uses `controller.ComputeHash`), so the hash is the
//! caller's. Two revisions are equal when their data is (the JSON values, so key order does not
//! matter).
//!
//! Pure helpers ([`template_patch`], [`patch_template`], [`hash`], [`new_revision`], [`equal`],
//! [`split_current`], [`sort`], [`next_number`], [`to_truncate`]) and the API side ([`History`]:
//! claim/adopt/release, create with collision handling, renumber, delete), all through the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::util;

/// Upstream's `ControllerRevisionHashLabelKey` (also the pod label naming a pod's revision).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// `rand.SafeEncodeString`'s alphabet: no vowels, no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Upstream's `HashControllerRevision`: FNV-32 over the data bytes (as stored, compact JSON), then
/// the decimal collision count, as SafeEncodeString of the decimal hash.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(*b);
        }
    };
    feed(&serde_json::to_vec(data).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    h.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// Upstream's `ControllerRevisionName`: the parent's name cut to 223 characters, `-`, the hash.
pub fn revision_name(parent: &str, hash: &str) -> String {
    let p: String = parent.chars().take(223).collect();
    format!("{p}-{hash}")
}

/// The strategic merge patch a StatefulSet or DaemonSet revision stores (upstream's `getPatch`):
/// `{"spec": {"template": <template with "$patch": "replace">}}`. Applying it restores the
/// template exactly; `kubectl rollout undo` does just that, and skips the rollback when the
/// owner's own encoding equals these bytes, so the template's metadata carries
/// `creationTimestamp: null` as Go encodes an ObjectMeta.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
    json!({"spec": {"template": t}})
}

/// The template a [`template_patch`] holds.
pub fn patch_template(data: &Value) -> Option<PodTemplateSpec> {
    let mut t = data.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("creationTimestamp");
        }
    }
    serde_json::from_value(t).ok()
}

/// Upstream's `NewControllerRevision`: labels copied from `labels` plus the hash label, the
/// owner's annotations, owned by `owner` (controller), named after the parent and `hash`.
pub fn new_revision(
    owner: &OwnerReference,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    hash: &str,
    data: Value,
    number: i64,
) -> ControllerRevision {
    let mut labels = labels.cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&owner.name, hash)),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: annotations.filter(|a| !a.is_empty()).cloned(),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

fn data(r: &ControllerRevision) -> Option<&Value> {
    r.data.as_ref().map(|d| &d.0)
}

/// Upstream's `EqualRevision`: the same data. (Upstream also compares the hash labels when both
/// parse as decimal numbers; SafeEncodeString's never do.)
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    data(a) == data(b)
}

/// Splits revisions into those storing `data` (upstream's `FindEqualRevisions`, the current
/// ones) and the others (old), both oldest first as [`sort`] orders them.
pub fn split_current(
    mut revs: Vec<ControllerRevision>,
    data: &Value,
) -> (Vec<ControllerRevision>, Vec<ControllerRevision>) {
    sort(&mut revs);
    revs.into_iter().partition(|r| self::data(r) == Some(data))
}

/// Oldest first: by revision number, then creation time, then name (upstream's `SortControllerRevisions`).
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        (a.revision, a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any()).cmp(&(
            b.revision,
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.name_any(),
        ))
    });
}

/// One more than the highest revision number (1 for none).
pub fn next_number(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Whether revisions still in use count toward the history limit; upstream's two controllers
/// differ here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LiveCounts {
    /// StatefulSet's `truncateHistory`: at most `limit` revisions besides the live ones.
    No,
    /// DaemonSet's `cleanupHistory`: at most `limit` (old) revisions in all, live ones kept even
    /// so.
    Yes,
}

/// The names of the revisions to delete so that at most `limit` remain: the oldest first, never
/// one `live` says is still in use (by a pod, or as the current/update revision). `revs` must be
/// sorted oldest first.
pub fn to_truncate(
    revs: &[ControllerRevision],
    limit: i32,
    live: impl Fn(&ControllerRevision) -> bool,
    counts: LiveCounts,
) -> Vec<String> {
    let history: Vec<&ControllerRevision> = revs.iter().filter(|r| !live(r)).collect();
    let counted = if counts == LiveCounts::Yes { revs.len() } else { history.len() };
    let extra = counted.saturating_sub(limit.max(0) as usize);
    history.iter().take(extra).map(|r| r.name_any()).collect()
}

/// The ControllerRevisions of one namespace, through the API.
pub struct History {
    api: Api<ControllerRevision>,
    namespace: String,
}

/// What [`History::create`] made (or found).
pub struct Created {
    pub revision: ControllerRevision,
    /// The collision count after any collisions this create ran into.
    pub collision_count: i32,
}

impl History {
    pub fn new(client: Client, namespace: &str) -> History {
        History { api: Api::namespaced(client, namespace), namespace: namespace.into() }
    }

    /// Upstream's `ClaimControllerRevisions` over cached revisions (those of other namespaces are
    /// skipped): the ones the owner controls and still selects, plus orphans it selects (adopted
    /// by a patch that adds its controller reference). Owned ones that stopped matching are
    /// released. `owner_live` must be a fresh check that the owner exists and is not being
    /// deleted (upstream's RecheckDeletionTimestamp), asked only when there is something to adopt.
    pub async fn claim<F, Fut>(
        &self,
        cached: impl IntoIterator<Item = Arc<ControllerRevision>>,
        owner: &OwnerReference,
        selector: &LabelSelector,
        owner_live: F,
    ) -> Result<Vec<ControllerRevision>, kube::Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<bool, kube::Error>>,
    {
        let mut owned = Vec::new();
        let mut orphans = Vec::new();
        for r in cached {
            if r.metadata.namespace.as_deref() != Some(self.namespace.as_str()) {
                continue;
            }
            let matches = util::selector_matches(Some(selector), r.metadata.labels.as_ref());
            match util::controller_ref(&r.metadata) {
                Some(c) if c.uid == owner.uid => {
                    if matches {
                        owned.push(r.as_ref().clone());
                    } else {
                        self.set_owners(&r, r.owner_references().iter().filter(|o| o.uid != owner.uid)).await?;
                    }
                }
                Some(_) => {}
                None if matches && !util::is_terminating(&r.metadata) => orphans.push(r),
                None => {}
            }
        }
        if !orphans.is_empty() && owner_live().await? {
            for r in orphans {
                let refs = r.owner_references().iter().chain(std::iter::once(owner));
                if let Some(r) = self.set_owners(&r, refs).await? {
                    owned.push(r);
                }
            }
        }
        Ok(owned)
    }

    /// Replaces a revision's ownerReferences, guarded by its resourceVersion; `None` when it is gone.
    async fn set_owners<'a>(
        &self,
        r: &ControllerRevision,
        refs: impl Iterator<Item = &'a OwnerReference>,
    ) -> Result<Option<ControllerRevision>, kube::Error> {
        let refs: Vec<&OwnerReference> = refs.collect();
        let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": r.resource_version()}});
        match self.api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if util::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `rev`; when a revision of that name exists already and stores the same data it is
    /// returned instead. `None`: the name is taken by other data (a hash collision).
    pub async fn try_create(
        &self,
        rev: &ControllerRevision,
    ) -> Result<Option<ControllerRevision>, kube::Error> {
        match self.api.create(&PostParams::default(), rev).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if util::is_already_exists(&e) => {
                Ok(self.api.get_opt(&rev.name_any()).await?.filter(|have| equal(have, rev)))
            }
            Err(e) => Err(e),
        }
    }

    /// Upstream's `CreateControllerRevision`: [`try_create`](Self::try_create) `rev` (built with
    /// [`hash`] of its data and `collision_count`); on a collision the count goes up and the name
    /// is recomputed.
    pub async fn create(&self, rev: ControllerRevision, collision_count: i32) -> Result<Created, kube::Error> {
        let mut count = collision_count;
        let mut rev = rev;
        loop {
            match self.try_create(&rev).await? {
                Some(r) => return Ok(Created { revision: r, collision_count: count }),
                None if count < collision_count + 16 => {
                    count += 1;
                    let d = data(&rev).cloned().unwrap_or(Value::Null);
                    let h = hash(&d, Some(count));
                    let parent = rev
                        .owner_references()
                        .first()
                        .map(|o| o.name.clone())
                        .unwrap_or_else(|| rev.name_any());
                    rev.metadata.name = Some(revision_name(&parent, &h));
                    rev.metadata.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), h);
                }
                None => {
                    return Err(kube::Error::Service(
                        format!("revision {}: too many hash collisions", rev.name_any()).into(),
                    ))
                }
            }
        }
    }

    /// Gives an existing revision a new number (upstream's `UpdateControllerRevision`).
    pub async fn renumber(
        &self,
        rev: &ControllerRevision,
        number: i64,
    ) -> Result<ControllerRevision, kube::Error> {
        let p = json!({"revision": number});
        self.api.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await
    }

    /// Deletes a revision; one already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<(), kube::Error> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn rev(data: Value, n: i64) -> ControllerRevision {
        let h = hash(&data, None);
        new_revision(&owner(), "default", None, None, &h, data, n)
    }

    #[test]
    fn hash_is_fnv32_of_the_data_and_collision_count() {
        // FNV-1 (multiply, then xor), as Go's fnv.New32.
        let mut h: u32 = 0x811c_9dc5;
        for b in b"{}" {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(*b);
        }
        let want: String = h.to_string().bytes().map(|b| ALPHANUMS[b as usize % 27] as char).collect();
        assert_eq!(hash(&json!({}), None), want);
        assert_ne!(hash(&json!({}), None), hash(&json!({}), Some(0)));
        assert_ne!(hash(&json!({}), Some(0)), hash(&json!({}), Some(1)));
        assert!(hash(&json!({"a": 1}), None).chars().all(|c| ALPHANUMS.contains(&(c as u8))));
    }

    #[test]
    fn revision_names_labels_and_equality() {
        let a = rev(json!({"spec": {"template": {"x": 1}}}), 1);
        let h = a.labels()[HASH_LABEL].clone();
        assert_eq!(a.name_any(), format!("web-{h}"));
        assert_eq!(a.owner_references()[0].uid, "u1");
        let b = rev(json!({"spec": {"template": {"x": 1}}}), 2);
        let c = rev(json!({"spec": {"template": {"x": 2}}}), 3);
        assert!(equal(&a, &b));
        assert!(!equal(&a, &c));
        let (cur, old) =
            split_current(vec![c.clone(), b.clone(), a.clone()], &json!({"spec": {"template": {"x": 1}}}));
        assert_eq!(cur.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(old.iter().map(|r| r.revision).collect::<Vec<_>>(), [3]);
        assert_eq!(next_number(&[a, c]), 4);
        assert_eq!(next_number(&[]), 1);
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
    }

    #[test]
    fn patch_replaces_the_template_as_go_encodes_it() {
        let t: PodTemplateSpec = serde_json::from_value(
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap();
        let p = template_patch(&t);
        assert_eq!(p["spec"]["template"]["$patch"], "replace");
        assert_eq!(p["spec"]["template"]["metadata"]["creationTimestamp"], Value::Null);
        assert!(p["spec"]["template"]["metadata"].as_object().unwrap().contains_key("creationTimestamp"));
        // kubectl compares bytes: Go sorts map keys and writes no spaces.
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"a"}},"spec":{"containers":[{"image":"x","name":"c"}]}}}}"#
        );
        assert_eq!(patch_template(&p).unwrap(), t);
        let empty = template_patch(&PodTemplateSpec::default());
        assert_eq!(empty["spec"]["template"]["metadata"]["creationTimestamp"], Value::Null);
    }

    #[test]
    fn truncation_keeps_live_and_the_newest() {
        let mut revs: Vec<ControllerRevision> = (1..=5).map(|n| rev(json!({ "n": n }), n)).collect();
        sort(&mut revs);
        let live = [revs[0].name_any(), revs[4].name_any()];
        let is_live = |r: &ControllerRevision| live.contains(&r.name_any());
        // StatefulSet: one besides the live ones.
        let gone = to_truncate(&revs, 1, is_live, LiveCounts::No);
        assert_eq!(gone, vec![revs[1].name_any(), revs[2].name_any()]);
        assert!(to_truncate(&revs, 10, is_live, LiveCounts::No).is_empty());
        // DaemonSet: three in all, live ones kept even so.
        let gone = to_truncate(&revs, 3, is_live, LiveCounts::Yes);
        assert_eq!(gone, vec![revs[1].name_any(), revs[2].name_any()]);
        let gone = to_truncate(&revs, 1, is_live, LiveCounts::Yes);
        assert_eq!(gone, vec![revs[1].name_any(), revs[2].name_any(), revs[3].name_any()]);
        assert!(to_truncate(&revs, 5, is_live, LiveCounts::Yes).is_empty());
    }
}
