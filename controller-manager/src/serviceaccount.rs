//! The ServiceAccount controller: a `default` ServiceAccount in every active namespace,
//! recreated if deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "serviceaccount-controller";
const DEFAULT: &str = "default";

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let sa_api: Api<ServiceAccount> = Api::all(ctx.client.clone());
    let controller = Controller::for_shared_stream(ctx.inf.namespaces.subscribe(), ctx.inf.namespaces.store())
        .watches(sa_api, watcher::Config::default().fields("metadata.name=default"), |sa: ServiceAccount| {
            sa.namespace().map(|ns| ObjectRef::new(&ns))
        });
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    drive(CONTROLLER, controller, stop, 5, reconcile, ctx).await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if u::is_terminating(&ns.metadata) || terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if api.get_opt(DEFAULT).await?.is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(DEFAULT.into()), namespace: Some(name), ..Default::default() },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if u::is_already_exists(&e) => Ok(Action::await_change()),
        // The namespace started terminating meanwhile: nothing to do.
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
