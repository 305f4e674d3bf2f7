//! ControllerRevision history shared by the controllers that keep one (StatefulSet, DaemonSet):
//! upstream's `pkg/controller/history` plus the revision helpers of its callers.
//!
//! A revision snapshots what a workload's pods are made from as a patch (`data`), numbered
//! (`revision`), named `<parent>-<hash>` and labelled `controller-revision-hash=<hash>`. The hash
//! is upstream's `HashControllerRevision`: FNV-32 (not 32a) over the raw data, then the decimal
//! collision count when there is one, rendered through `rand.SafeEncodeString`. Two revisions are
//! equal when their data is (the JSON values, so key order does not matter).
//!
//! Pure helpers ([`new_revision`], [`hash`], [`equal`], [`sort`], [`next_number`],
//! [`to_truncate`]) and the API side ([`History`]: claim/adopt orphans, create with collision
//! handling, renumber, delete), all through the API.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
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

/// Upstream's `NewControllerRevision`: labels copied from `labels` plus the hash label, owned by
/// `owner` (controller), named after the parent and the hash of `data` and `collision_count`.
pub fn new_revision(
    owner: &OwnerReference,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    data: Value,
    number: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let h = hash(&data, collision_count);
    let mut labels = labels.cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&owner.name, &h)),
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

/// Upstream's `EqualRevision`: same data (hash labels, when both have one, must agree too).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    let la = a.labels().get(HASH_LABEL);
    let lb = b.labels().get(HASH_LABEL);
    if la.is_some() && lb.is_some() && la != lb {
        // Different collision counts give different hashes over equal data: still equal data.
        return data(a) == data(b);
    }
    data(a) == data(b)
}

/// The revisions in `revs` equal to `needle` (upstream's `FindEqualRevisions`).
pub fn find_equal<'a>(
    revs: &'a [ControllerRevision],
    needle: &ControllerRevision,
) -> Vec<&'a ControllerRevision> {
    revs.iter().filter(|r| equal(r, needle)).collect()
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

/// Upstream's `truncateHistory`: the names of the oldest revisions to delete so that at most
/// `limit` remain besides those in `live` (revisions some pod or the status still uses).
/// `revs` must be sorted oldest first.
pub fn to_truncate(revs: &[ControllerRevision], live: &HashSet<String>, limit: i32) -> Vec<String> {
    let history: Vec<&ControllerRevision> = revs.iter().filter(|r| !live.contains(&r.name_any())).collect();
    let extra = history.len().saturating_sub(limit.max(0) as usize);
    history.iter().take(extra).map(|r| r.name_any()).collect()
}

/// The ControllerRevisions of one namespace, through the API.
pub struct History {
    api: Api<ControllerRevision>,
}

/// What [`History::create`] made (or found).
pub struct Created {
    pub revision: ControllerRevision,
    /// The collision count after any collisions this create ran into.
    pub collision_count: i32,
}

impl History {
    pub fn new(client: Client, namespace: &str) -> History {
        History { api: Api::namespaced(client, namespace) }
    }

    /// Upstream's `ClaimControllerRevisions` over cached revisions of the owner's namespace: the
    /// ones the owner controls and still selects, plus orphans it selects (adopted by a patch that
    /// adds its controller reference). Owned ones that stopped matching are released.
    /// `owner_live` must be a fresh check that the owner exists and is not being deleted (upstream's
    /// RecheckDeletionTimestamp), asked only when there is something to adopt.
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
            let matches = util::selector_matches(Some(selector), r.metadata.labels.as_ref());
            match util::controller_ref(&r.metadata) {
                Some(c) if c.uid == owner.uid => {
                    if matches {
                        owned.push(r.as_ref().clone());
                    } else {
                        let refs: Vec<&OwnerReference> =
                            r.owner_references().iter().filter(|o| o.uid != owner.uid).collect();
                        let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": r.resource_version()}});
                        match self.api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
                            Ok(_) => {}
                            Err(e) if util::is_not_found(&e) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Some(_) => {}
                None if matches && !util::is_terminating(&r.metadata) => orphans.push(r),
                None => {}
            }
        }
        if !orphans.is_empty() && owner_live().await? {
            for r in orphans {
                let mut refs = r.owner_references().to_vec();
                refs.push(owner.clone());
                let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": r.resource_version()}});
                match self.api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await {
                    Ok(r) => owned.push(r),
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(owned)
    }

    /// Creates `rev` (built by [`new_revision`] with `collision_count`). When a revision of that
    /// name exists: the same data means it is ours already (returned); other data is a hash
    /// collision, so the count goes up and the name is recomputed (upstream's `CreateControllerRevision`).
    pub async fn create(&self, rev: ControllerRevision, collision_count: i32) -> Result<Created, kube::Error> {
        let mut count = collision_count;
        let mut rev = rev;
        loop {
            match self.api.create(&PostParams::default(), &rev).await {
                Ok(r) => return Ok(Created { revision: r, collision_count: count }),
                Err(e) if util::is_already_exists(&e) && count < collision_count + 16 => {
                    if let Some(have) = self.api.get_opt(&rev.name_any()).await? {
                        if equal(&have, &rev) {
                            return Ok(Created { revision: have, collision_count: count });
                        }
                    }
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
                Err(e) => return Err(e),
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
        new_revision(&owner(), "default", None, None, data, n, None)
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
        let all = vec![a.clone(), c.clone()];
        assert_eq!(find_equal(&all, &b).len(), 1);
        assert_eq!(next_number(&all), 4);
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
    }

    #[test]
    fn truncation_keeps_live_and_the_newest() {
        let mut revs: Vec<ControllerRevision> = (1..=5).map(|n| rev(json!({ "n": n }), n)).collect();
        sort(&mut revs);
        let live: HashSet<String> = [revs[0].name_any(), revs[4].name_any()].into_iter().collect();
        let gone = to_truncate(&revs, &live, 1);
        assert_eq!(gone, vec![revs[1].name_any(), revs[2].name_any()]);
        assert!(to_truncate(&revs, &live, 10).is_empty());
    }
}
