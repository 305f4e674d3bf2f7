//! The `persistentvolume-binder` controller with kplane's built-in provisioner (`kplane.io/hostpath`).
//!
//! At start it creates the default StorageClass `standard` (annotated
//! `storageclass.kubernetes.io/is-default-class: "true"`, reclaimPolicy Delete) if absent; a class
//! of that name someone else made is left alone.
//!
//! Claims: a Pending PVC whose class (its `storageClassName`, or the default class when it names
//! none) has our provisioner gets a PersistentVolume `pvc-<claim uid>` made for it: the requested
//! capacity, the claim's access modes and volume mode, `claimRef` to the claim, the class's
//! reclaim policy, and a hostPath-like source `<volume_dir>/<pv name>` (a name only: controllers
//! never touch the host's files). Then both are marked Bound: the PV's `status.phase`, and the
//! claim's `spec.volumeName`, `pv.kubernetes.io/bind-completed`, `status.phase`, capacity and
//! access modes. Claims of other provisioners, or with `storageClassName: ""`, are not ours.
//!
//! Volumes: a PV whose claim is gone (no claim of that name, or one with another uid) is released:
//! with reclaimPolicy Delete it is deleted, else its phase becomes Released (upstream's reclaim).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util, Stop};

pub const CONTROLLER: &str = "persistentvolume-binder-controller";
/// Our provisioner's name (a StorageClass's `provisioner`).
pub const PROVISIONER: &str = "kplane.io/hostpath";
/// The default StorageClass created at start.
pub const DEFAULT_CLASS: &str = "standard";
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

pub struct VolCtx {
    ctx: Arc<Ctx>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let claims = ctx.inf.pvcs.store();
    let volumes = ctx.inf.pvs.store();
    let classes = ctx.inf.storageclasses.store();
    // A volume event concerns the claim it names; a claim event the volume bound to it.
    let claim_of = |pv: Arc<PersistentVolume>| {
        pv.spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| Some(ObjectRef::new(r.name.as_deref()?).within(r.namespace.as_deref()?)))
    };
    let volume_of = |c: Arc<PersistentVolumeClaim>| {
        c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).map(ObjectRef::new)
    };
    let classes_for_claims = {
        let claims = claims.clone();
        move |_: Arc<StorageClass>| {
            claims.state().iter().map(|c| ObjectRef::from_obj(c.as_ref())).collect::<Vec<_>>()
        }
    };
    let claim_ctl = Controller::for_shared_stream(ctx.inf.pvcs.subscribe(), claims.clone())
        .watches_shared_stream(ctx.inf.pvs.subscribe(), claim_of)
        .watches_shared_stream(ctx.inf.storageclasses.subscribe(), classes_for_claims);
    let volume_ctl = Controller::for_shared_stream(ctx.inf.pvs.subscribe(), volumes.clone())
        .watches_shared_stream(ctx.inf.pvcs.subscribe(), volume_of);
    if !ctx.informers_ready(&stop).await {
        return;
    }
    if let Err(e) = ensure_default_class(&ctx.client).await {
        tracing::warn!(error = %e, "cannot create the default StorageClass");
    }
    let vc = Arc::new(VolCtx { ctx, claims, volumes, classes });
    tokio::join!(
        drive(CONTROLLER, claim_ctl, stop.clone(), 5, bind_claim, vc.clone()),
        drive("persistentvolume-reclaim", volume_ctl, stop, 5, reclaim_volume, vc),
    );
}

/// Creates the default StorageClass if no class of that name exists.
pub async fn ensure_default_class(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(DEFAULT_CLASS).await?.is_some() {
        return Ok(());
    }
    let sc: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &sc).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_already_exists(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The class a claim asks for: its own, or (none named) the newest default class.
fn class_of(claim: &PersistentVolumeClaim, classes: &Store<StorageClass>) -> Option<Arc<StorageClass>> {
    match claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()) {
        Some("") => None,
        Some(name) => classes.get(&ObjectRef::new(name)),
        None => classes
            .state()
            .into_iter()
            .filter(|c| c.annotations().get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true"))
            .max_by_key(|c| {
                (c.metadata.creation_timestamp.as_ref().map(|t| t.0), std::cmp::Reverse(c.name_any()))
            }),
    }
}

/// The hostPath-like path of a volume: `<volume_dir>/<pv>`.
pub fn volume_path(dir: &str, pv: &str) -> String {
    format!("{}/{pv}", dir.trim_end_matches('/'))
}

/// The PV provisioned for `claim` of `class` (pure).
pub fn provisioned_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    dir: &str,
) -> Option<PersistentVolume> {
    let uid = claim.metadata.uid.as_deref()?;
    let spec = claim.spec.as_ref()?;
    let storage = spec.resources.as_ref()?.requests.as_ref()?.get("storage")?;
    let name = format!("pvc-{uid}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.name_any(),
            "hostPath": {"path": volume_path(dir, &name), "type": "DirectoryOrCreate"},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": claim.namespace(),
                         "name": claim.name_any(), "uid": uid, "resourceVersion": claim.resource_version()},
        },
    }))
    .ok()
}

async fn bind_claim(claim: Arc<PersistentVolumeClaim>, vc: Arc<VolCtx>) -> Result<Action, ReconcileError> {
    let ns = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let Some(claim) = vc.claims.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(Action::await_change());
    };
    if util::is_terminating(&claim.metadata) {
        return Ok(Action::await_change());
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let bound_to = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
    if phase == "Bound" && bound_to.is_some() {
        return Ok(Action::await_change());
    }
    let client = vc.ctx.client.clone();
    let pv_api: Api<PersistentVolume> = Api::all(client.clone());
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pv = match &bound_to {
        // Bound by name already (ours half-done, or a user's pre-bound claim): finish with that PV.
        Some(v) => match vc.volumes.get(&ObjectRef::new(v)) {
            Some(pv) => pv.as_ref().clone(),
            None => match pv_api.get_opt(v).await? {
                Some(pv) => pv,
                None => return Ok(Action::await_change()),
            },
        },
        None => {
            let Some(class) = class_of(&claim, &vc.classes) else { return Ok(Action::await_change()) };
            if class.provisioner != PROVISIONER {
                return Ok(Action::await_change());
            }
            let Some(want) = provisioned_volume(&claim, &class, &vc.ctx.config.volume_dir) else {
                vc.ctx.events.warning(
                    CONTROLLER,
                    claim.as_ref(),
                    "ProvisioningFailed",
                    "the claim requests no storage".into(),
                );
                return Ok(Action::await_change());
            };
            match pv_api.create(&PostParams::default(), &want).await {
                Ok(pv) => {
                    vc.ctx.events.normal(
                        CONTROLLER,
                        claim.as_ref(),
                        "ProvisioningSucceeded",
                        format!("Successfully provisioned volume {} using {PROVISIONER}", pv.name_any()),
                    );
                    pv
                }
                Err(e) if util::is_already_exists(&e) => match pv_api.get_opt(&want.name_any()).await? {
                    Some(pv) => pv,
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    let pv_name = pv.name_any();
    let claim_uid = claim.metadata.uid.clone().unwrap_or_default();
    let pv_claim_uid = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.clone());
    if pv_claim_uid.as_deref().is_some_and(|u| u != claim_uid) {
        // That volume belongs to another claim.
        return Ok(Action::await_change());
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        let p = json!({"status": {"phase": "Bound"}});
        pv_api.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&p)).await?;
    }
    if bound_to.is_none() {
        let p = json!({"metadata": {"resourceVersion": claim.resource_version(), "annotations": {
                BIND_COMPLETED: "yes", BOUND_BY_CONTROLLER: "yes",
                "volume.kubernetes.io/storage-provisioner": PROVISIONER,
                "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER}},
            "spec": {"volumeName": pv_name}});
        match pvc_api.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let p = json!({"status": {"phase": "Bound", "capacity": spec.capacity, "accessModes": spec.access_modes}});
    match pvc_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&p)).await {
        Ok(_) => {}
        Err(e) if util::is_not_found(&e) => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

async fn reclaim_volume(pv: Arc<PersistentVolume>, vc: Arc<VolCtx>) -> Result<Action, ReconcileError> {
    let Some(pv) = vc.volumes.get(&ObjectRef::new(&pv.name_any())) else { return Ok(Action::await_change()) };
    if util::is_terminating(&pv.metadata) {
        return Ok(Action::await_change());
    }
    let Some(cref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Ok(Action::await_change());
    };
    let (Some(cns), Some(cname)) = (cref.namespace.as_deref(), cref.name.as_deref()) else {
        return Ok(Action::await_change());
    };
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase != "Bound" && phase != "Released" {
        // Not bound yet: the claim side binds it.
        return Ok(Action::await_change());
    }
    let cached = vc.claims.get(&ObjectRef::new(cname).within(cns));
    let claim_there = match cached {
        Some(c) => c.metadata.uid == cref.uid || cref.uid.is_none(),
        // The cache may lag behind a create: ask the API before reclaiming anything.
        None => Api::<PersistentVolumeClaim>::namespaced(vc.ctx.client.clone(), cns)
            .get_opt(cname)
            .await?
            .is_some_and(|c| c.metadata.uid == cref.uid || cref.uid.is_none()),
    };
    if claim_there {
        return Ok(Action::await_change());
    }
    let api: Api<PersistentVolume> = Api::all(vc.ctx.client.clone());
    let policy =
        pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
    if policy == "Delete" {
        match api.delete(&pv.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    } else if phase != "Released" {
        let p: Value = json!({"status": {"phase": "Released"}});
        api.patch_status(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&p)).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioned_volume_matches_its_claim() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "www-web-0", "namespace": "ns", "uid": "abc", "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap();
        let class: StorageClass =
            serde_json::from_value(json!({"metadata": {"name": "standard"}, "provisioner": PROVISIONER}))
                .unwrap();
        let pv = provisioned_volume(&claim, &class, "/data/volumes/").unwrap();
        assert_eq!(pv.name_any(), "pvc-abc");
        let spec = pv.spec.unwrap();
        assert_eq!(spec.host_path.unwrap().path, "/data/volumes/pvc-abc");
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        let r = spec.claim_ref.unwrap();
        assert_eq!(
            (r.name.as_deref(), r.namespace.as_deref(), r.uid.as_deref()),
            (Some("www-web-0"), Some("ns"), Some("abc"))
        );
        let mut no_request = claim.clone();
        no_request.spec.as_mut().unwrap().resources = None;
        assert!(provisioned_volume(&no_request, &class, "/d").is_none());
    }
}
