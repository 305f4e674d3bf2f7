//! The EndpointSlice controller (upstream's `endpointslice-controller.k8s.io`).
//!
//! Per Service with a selector: the service's pods (terminating ones included, with the
//! `terminating` condition) grouped by their resolved port list, at most `--max-endpoints-per-slice`
//! per slice. Reconciling keeps every endpoint in the slice that already holds it, fills free room
//! before creating a slice, deletes emptied slices, keeps one empty placeholder slice for a service
//! with no endpoints, and writes a slice only when its content changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::context::{drive, Ctx, ReconcileError};
use crate::endpoints::{self, PodEndpoint, PodServiceMapper, ResolvedPort};
use crate::informer::{wait_ready, Informer};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "endpointslice-controller";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";

struct SliceCtx {
    ctx: Arc<Ctx>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    tracker: Tracker,
}

/// Upstream's endpointSliceTracker idea: what each sync wrote (slice name → resourceVersion, or
/// `None` for deleted), so the next sync of that service waits until the slice cache has caught up
/// instead of creating duplicate slices from a stale view.
/// Slice name → the resourceVersion we wrote (`None`: we deleted it).
type Written = HashMap<String, Option<u64>>;

#[derive(Default)]
struct Tracker {
    written: Mutex<HashMap<String, (Instant, Written)>>,
}

impl Tracker {
    fn record(&self, svc: &str, slice: String, rv: Option<u64>) {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let e = w.entry(svc.to_string()).or_insert_with(|| (Instant::now(), HashMap::new()));
        e.1.insert(slice, rv);
    }

    fn caught_up(&self, svc: &str, ns: &str, slices: &Store<EndpointSlice>) -> bool {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some((since, m)) = w.get_mut(svc) else { return true };
        m.retain(|name, rv| {
            let cached = slices.get(&ObjectRef::new(name).within(ns));
            let cached_rv =
                cached.as_ref().and_then(|c| c.resource_version()).and_then(|v| v.parse::<u64>().ok());
            match rv {
                Some(rv) => cached_rv.is_none_or(|c| c < *rv),
                None => cached.is_some(),
            }
        });
        if m.is_empty() || since.elapsed() > Duration::from_secs(60) {
            w.remove(svc);
            return true;
        }
        false
    }
}

fn rv_of(s: &EndpointSlice) -> Option<u64> {
    s.resource_version().and_then(|v| v.parse().ok())
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let services = ctx.inf.services.store();
    let slices_inf = Informer::<EndpointSlice>::new(Api::all(ctx.client.clone()));
    let mapper = PodServiceMapper::new(services.clone());
    let controller = Controller::for_shared_stream(ctx.inf.services.subscribe(), services)
        .watches_shared_stream(ctx.inf.pods.subscribe(), move |p: Arc<Pod>| mapper.map(&p))
        .watches_shared_stream(slices_inf.subscribe(), |s: Arc<EndpointSlice>| {
            let svc = s.labels().get(SERVICE_NAME).cloned()?;
            (s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER))
                .then(|| ObjectRef::new(&svc).within(&s.namespace().unwrap_or_default()))
        });
    let concurrency = ctx.config.concurrent_service_endpoint_syncs;
    let ready = {
        let (ctx, slices, stop) = (ctx.clone(), slices_inf.store(), stop.clone());
        // Controllers start once the caches have listed (see `Ctx::informers_ready`).
        async move {
            tokio::select! {
                _ = stop.clone().wait() => false,
                ok = async { ctx.informers_ready(&stop).await && { wait_ready(&slices).await; true } } => ok,
            }
        }
    };
    let sctx = Arc::new(SliceCtx {
        pods: ctx.inf.pods.store(),
        slices: slices_inf.store(),
        tracker: Tracker::default(),
        ctx,
    });
    let stop2 = stop.clone();
    tokio::join!(
        async move {
            if ready.await {
                drive(CONTROLLER, controller, stop2, concurrency, reconcile, sctx).await;
            }
        },
        slices_inf.clone().run(stop)
    );
}

fn to_endpoint(e: &PodEndpoint) -> Endpoint {
    Endpoint {
        addresses: vec![e.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(e.ready),
            serving: Some(e.serving),
            terminating: Some(e.terminating),
        }),
        hostname: e.hostname.clone(),
        node_name: e.pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(endpoints::target_ref(&e.pod)),
        ..Default::default()
    }
}

fn to_ports(ports: &[ResolvedPort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

fn ep_key(e: &Endpoint) -> String {
    e.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_else(|| e.addresses.join(","))
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = endpoints::service_labels(svc);
    l.insert(SERVICE_NAME.into(), svc.name_any());
    l.insert(MANAGED_BY.into(), MANAGER.into());
    l
}

/// A slice's content in a canonical order, to compare without churn.
fn canonical(eps: &[Endpoint]) -> Vec<Endpoint> {
    let mut v = eps.to_vec();
    v.sort_by_key(ep_key);
    v
}

async fn reconcile(svc: Arc<Service>, sc: Arc<SliceCtx>) -> Result<Action, ReconcileError> {
    if endpoints::selector(&svc).is_none() || u::is_terminating(&svc.metadata) {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let Some(uid) = svc.uid() else { return Ok(Action::await_change()) };
    let max = sc.ctx.config.max_endpoints_per_slice.max(1);
    let api: Api<EndpointSlice> = Api::namespaced(sc.ctx.client.clone(), &ns);
    let labels = slice_labels(&svc);
    let key = format!("{ns}/{name}");
    if !sc.tracker.caught_up(&key, &ns, &sc.slices) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }

    // Desired: port list → endpoints by key.
    // (EndpointPort has no Ord, so a small Vec of groups stands in for a map.)
    let mut desired: Vec<(Vec<EndpointPort>, HashMap<String, Endpoint>)> = Vec::new();
    for e in endpoints::service_endpoints(&svc, &sc.pods, true) {
        let ep = to_endpoint(&e);
        let ports = to_ports(&e.ports);
        match desired.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, m)) => {
                m.insert(ep_key(&ep), ep);
            }
            None => desired.push((ports, HashMap::from([(ep_key(&ep), ep)]))),
        }
    }
    let mut existing: Vec<EndpointSlice> = sc
        .slices
        .state()
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(SERVICE_NAME) == Some(&name)
                && s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
                && !u::is_terminating(&s.metadata)
        })
        .map(|s| s.as_ref().clone())
        .collect();
    existing.sort_by_key(|s| s.name_any());

    // Plan: (existing slice or None, ports, endpoints).
    let mut plan: Vec<(Option<EndpointSlice>, Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    let mut to_delete = Vec::new();
    for s in existing {
        let ports = s.ports.clone().unwrap_or_default();
        match desired.iter_mut().find(|(p, _)| *p == ports).map(|(_, m)| m) {
            Some(want) => {
                let keep: Vec<Endpoint> = s.endpoints.iter().filter_map(|e| want.remove(&ep_key(e))).collect();
                plan.push((Some(s), ports, keep));
            }
            None => to_delete.push(s),
        }
    }
    for (ports, mut left) in desired {
        let mut left: Vec<Endpoint> = {
            let mut v: Vec<Endpoint> = left.drain().map(|(_, e)| e).collect();
            v.sort_by_key(ep_key);
            v
        };
        for (_, p, eps) in plan.iter_mut().filter(|(_, p, _)| *p == ports) {
            let _ = p;
            while eps.len() < max {
                match left.pop() {
                    Some(e) => eps.push(e),
                    None => break,
                }
            }
        }
        while !left.is_empty() {
            let take = left.len().min(max);
            let chunk: Vec<Endpoint> = left.drain(..take).collect();
            plan.push((None, ports.clone(), chunk));
        }
    }
    // Emptied slices go, except one placeholder when the service has no endpoints at all.
    let total: usize = plan.iter().map(|(_, _, e)| e.len()).sum();
    let mut placeholder_kept = false;
    let mut final_plan = Vec::new();
    for (s, ports, eps) in plan {
        if eps.is_empty() {
            if total == 0 && !placeholder_kept && s.is_some() {
                placeholder_kept = true;
                final_plan.push((s, Vec::new(), eps));
            } else if let Some(s) = s {
                to_delete.push(s);
            }
            continue;
        }
        final_plan.push((s, ports, eps));
    }
    if total == 0 && !placeholder_kept {
        // Reuse a to-be-deleted slice as the placeholder rather than delete + create.
        match to_delete.pop() {
            Some(s) => final_plan.push((Some(s), Vec::new(), Vec::new())),
            None => final_plan.push((None, Vec::new(), Vec::new())),
        }
    }

    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    for (s, ports, eps) in final_plan {
        let eps = canonical(&eps);
        let ports_opt = (!ports.is_empty()).then_some(ports);
        match s {
            Some(mut s) => {
                let same = canonical(&s.endpoints) == eps
                    && s.ports.clone().filter(|p| !p.is_empty()) == ports_opt
                    && s.metadata.labels.as_ref() == Some(&labels)
                    && s.address_type == "IPv4";
                if same {
                    continue;
                }
                s.endpoints = eps;
                s.ports = ports_opt;
                s.metadata.labels = Some(labels.clone());
                s.address_type = "IPv4".into();
                let written = api.replace(&s.name_any(), &PostParams::default(), &s).await?;
                sc.tracker.record(&key, written.name_any(), rv_of(&written));
            }
            None => {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: eps,
                    ports: ports_opt,
                };
                match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => sc.tracker.record(&key, created.name_any(), rv_of(&created)),
                    Err(e) => {
                        sc.ctx.events.warning(
                            CONTROLLER,
                            svc.as_ref(),
                            "FailedToUpdateEndpointSlices",
                            format!("Error updating Endpoint Slices for Service {ns}/{name}: {e}"),
                        );
                        return Err(e.into());
                    }
                }
            }
        }
    }
    for s in to_delete {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => sc.tracker.record(&key, s.name_any(), None),
            Err(e) if u::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
