//! The Endpoints controller (upstream's `endpoint-controller`), plus what it shares with the
//! EndpointSlice controller: which pods back a service, on which ports, in which state.
//!
//! Per Service with a selector: ready pods → `addresses`, not-ready pods with an IP →
//! `notReadyAddresses` (all in `addresses` with publishNotReadyAddresses), terminating and
//! terminal pods left out; named target ports resolved per pod; addresses grouped into subsets by
//! their port list. The Endpoints object is written only when subsets or labels change; it is
//! deleted when its Service goes. Services without a selector are left alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "endpoint-controller";
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Set to `truncated` on Endpoints holding only [`MAX_CAPACITY`] of their Service's addresses.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Upstream's `maxCapacity`: an Endpoints object holds at most this many addresses (the complete
/// set is in the EndpointSlices).
pub const MAX_CAPACITY: usize = 1000;
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One service port resolved for one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// One pod as an endpoint of one service.
pub struct PodEndpoint {
    pub pod: Arc<Pod>,
    pub ip: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub hostname: Option<String>,
    pub ports: Vec<ResolvedPort>,
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// The pods backing `svc` (terminating ones only when `with_terminating`), each with its ports.
pub fn service_endpoints(svc: &Service, pods: &Store<Pod>, with_terminating: bool) -> Vec<PodEndpoint> {
    let Some(sel) = selector(svc) else { return vec![] };
    let ns = svc.namespace();
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut out = Vec::new();
    for pod in pods.state() {
        if pod.namespace() != ns || !u::map_selector_matches(sel, pod.metadata.labels.as_ref()) {
            continue;
        }
        if matches!(u::pod_phase(&pod), "Succeeded" | "Failed") {
            continue;
        }
        let terminating = u::is_terminating(&pod.metadata);
        if terminating && !with_terminating {
            continue;
        }
        let Some(ip) = u::pod_ip(&pod).map(str::to_string) else { continue };
        let pod_ready = u::pod_is_ready(&pod);
        let mut ports = Vec::new();
        for sp in spec.ports.as_deref().unwrap_or_default() {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = match sp.target_port.as_ref() {
                None => Some(sp.port),
                Some(IntOrString::Int(p)) => Some(*p),
                Some(IntOrString::String(name)) => find_named_port(&pod, name, &protocol),
            };
            if let Some(port) = port {
                ports.push(ResolvedPort {
                    name: sp.name.clone(),
                    port,
                    protocol,
                    app_protocol: sp.app_protocol.clone(),
                });
            }
        }
        // Upstream's FindPort miss drops the endpoint for that port only; a pod left with no ports
        // of a service that has ports does not back the service.
        if ports.is_empty() && !spec.ports.as_deref().unwrap_or_default().is_empty() {
            continue;
        }
        ports.sort();
        let pspec = pod.spec.as_ref();
        let hostname = pspec.and_then(|s| s.hostname.clone()).filter(|h| {
            !h.is_empty() && pspec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref()
        });
        out.push(PodEndpoint {
            ip,
            ready: publish_not_ready || (pod_ready && !terminating),
            serving: pod_ready,
            terminating,
            hostname,
            ports,
            pod,
        });
    }
    out.sort_by(|a, b| a.ip.cmp(&b.ip).then_with(|| a.pod.name_any().cmp(&b.pod.name_any())));
    out
}

fn find_named_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.as_deref().unwrap_or_default()).find_map(|p| {
        (p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
            .then_some(p.container_port)
    })
}

pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Maps pod events to the services that select the pod now or selected it at its previous event
/// (so a relabelled pod also leaves the old service). Shared by both endpoint controllers.
/// (namespace, name) of a pod.
type PodKey = (String, String);

pub struct PodServiceMapper {
    services: Store<Service>,
    last: Mutex<HashMap<PodKey, Vec<ObjectRef<Service>>>>,
}

impl PodServiceMapper {
    pub fn new(services: Store<Service>) -> Self {
        PodServiceMapper { services, last: Mutex::new(HashMap::new()) }
    }

    pub fn map(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace().unwrap_or_default();
        let now: Vec<ObjectRef<Service>> = self
            .services
            .state()
            .iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str())
                    && selector(s).is_some_and(|sel| u::map_selector_matches(sel, pod.metadata.labels.as_ref()))
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        let key = (ns, pod.name_any());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = last.remove(&key).unwrap_or_default();
        for r in &now {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        if !now.is_empty() {
            last.insert(key, now);
        }
        out
    }
}

struct EpCtx {
    ctx: Arc<Ctx>,
    pods: Store<Pod>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let services = ctx.inf.services.store();
    let mapper = PodServiceMapper::new(services.clone());
    let ep_api: Api<Endpoints> = Api::all(ctx.client.clone());
    let controller = Controller::for_shared_stream(ctx.inf.services.subscribe(), services.clone())
        .watches_shared_stream(ctx.inf.pods.subscribe(), move |p: Arc<Pod>| mapper.map(&p))
        // Someone edited or deleted an Endpoints object: put it back.
        .watches(ep_api, watcher::Config::default(), |ep: Endpoints| {
            Some(ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        });
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let deletions = delete_endpoints_of_deleted_services(ctx.clone(), services, stop.clone());
    let concurrency = ctx.config.concurrent_endpoint_syncs;
    let ectx = Arc::new(EpCtx { pods: ctx.inf.pods.store(), ctx });
    tokio::join!(drive(CONTROLLER, controller, stop, concurrency, reconcile, ectx), deletions);
}

/// A deleted Service takes its Endpoints with it (Endpoints carry no ownerReference upstream).
async fn delete_endpoints_of_deleted_services(ctx: Arc<Ctx>, services: Store<Service>, stop: Stop) {
    let mut events = Box::pin(ctx.inf.services.subscribe());
    if !ctx.informers_ready(&stop).await {
        return;
    }
    // Upstream's checkLeftoverEndpoints: Endpoints we wrote (they carry our trigger-time
    // annotation) whose Service went away while no controller-manager was running.
    match Api::<Endpoints>::all(ctx.client.clone()).list(&ListParams::default()).await {
        Ok(list) => {
            for ep in list.items.iter().filter(|e| e.annotations().contains_key(TRIGGER_TIME)) {
                let ns = ep.namespace().unwrap_or_default();
                if services.get(&ObjectRef::new(&ep.name_any()).within(&ns)).is_none() {
                    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
                    if let Err(e) = api.delete(&ep.name_any(), &DeleteParams::default()).await {
                        tracing::debug!(endpoints = %ep.name_any(), error = %e, "deleting leftover endpoints failed");
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing endpoints for leftovers failed"),
    }
    loop {
        let svc = tokio::select! {
            _ = stop.clone().wait() => return,
            s = events.next() => s,
        };
        let Some(svc) = svc else { return };
        if services.get(&ObjectRef::from_obj(svc.as_ref())).is_some() {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
        match api.delete(&svc.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if u::is_not_found(&e) => {}
            Err(e) => tracing::warn!(service = %svc.name_any(), error = %e, "deleting endpoints failed"),
        }
    }
}

/// The subsets for `eps`: addresses grouped by identical port lists, ordered deterministically.
pub fn subsets(svc: &Service, eps: &[PodEndpoint]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    for e in eps {
        let addr = EndpointAddress {
            ip: e.ip.clone(),
            hostname: e.hostname.clone(),
            node_name: e.pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
            target_ref: Some(target_ref(&e.pod)),
        };
        let g = groups.entry(e.ports.clone()).or_default();
        if e.ready {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let _ = svc;
    groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: p.name,
                        port: p.port,
                        protocol: Some(p.protocol),
                        app_protocol: p.app_protocol,
                    })
                    .collect()
            }),
        })
        .collect()
}

/// Upstream's `truncateEndpoints`: over [`MAX_CAPACITY`] addresses, ready addresses are kept
/// before not-ready ones, each subset keeping its share (rounded up, the last one what is left).
/// True when something was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |s: &EndpointSubset| {
        (s.addresses.as_ref().map_or(0, Vec::len), s.not_ready_addresses.as_ref().map_or(0, Vec::len))
    };
    let (ready, not_ready) = subsets.iter().map(count).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready { (MAX_CAPACITY, ready) } else { (MAX_CAPACITY - ready, not_ready) };
    let mut left = max;
    for s in subsets.iter_mut() {
        let (r, nr) = count(s);
        let mine = if truncate_ready { r } else { nr };
        let keep = (mine * max).div_ceil(total).min(left);
        let list = if truncate_ready { &mut s.addresses } else { &mut s.not_ready_addresses };
        if let Some(list) = list {
            list.truncate(keep);
            left -= list.len();
        }
        if truncate_ready {
            s.not_ready_addresses = None;
        }
    }
    true
}

pub fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

async fn reconcile(svc: Arc<Service>, ec: Arc<EpCtx>) -> Result<Action, ReconcileError> {
    if selector(&svc).is_none() || u::is_terminating(&svc.metadata) {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let eps = service_endpoints(&svc, &ec.pods, false);
    let mut subsets = subsets(&svc, &eps);
    let truncated = truncate(&mut subsets);
    let labels = service_labels(&svc);
    let api: Api<Endpoints> = Api::namespaced(ec.ctx.client.clone(), &ns);
    let current = api.get_opt(&name).await?;
    let now = jiff::Timestamp::now().to_string();
    match current {
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from_iter(
                        std::iter::once((TRIGGER_TIME.to_string(), now))
                            .chain(truncated.then(|| (OVER_CAPACITY.to_string(), "truncated".to_string()))),
                    )),
                    ..Default::default()
                },
                subsets: (!subsets.is_empty()).then_some(subsets),
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => {}
                Err(e) if u::is_already_exists(&e) => return Err(e.into()),
                Err(e) => {
                    ec.ctx.events.warning(
                        CONTROLLER,
                        svc.as_ref(),
                        "FailedToCreateEndpoint",
                        format!("Failed to create endpoint for service {ns}/{name}: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Some(mut cur) => {
            let have = cur.subsets.clone().unwrap_or_default();
            let have_labels = cur.metadata.labels.clone().unwrap_or_default();
            let marked = cur.annotations().contains_key(OVER_CAPACITY);
            if have == subsets && have_labels == labels && marked == truncated {
                return Ok(Action::await_change());
            }
            cur.subsets = (!subsets.is_empty()).then_some(subsets);
            cur.metadata.labels = Some(labels);
            let annotations = cur.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(TRIGGER_TIME.into(), now);
            if truncated {
                annotations.insert(OVER_CAPACITY.into(), "truncated".into());
            } else {
                annotations.remove(OVER_CAPACITY);
            }
            if let Err(e) = api.replace(&name, &PostParams::default(), &cur).await {
                if !u::is_conflict(&e) {
                    ec.ctx.events.warning(
                        CONTROLLER,
                        svc.as_ref(),
                        "FailedToUpdateEndpoint",
                        format!("Failed to update endpoint {ns}/{name}: {e}"),
                    );
                }
                return Err(e.into());
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subset(ready: usize, not_ready: usize) -> EndpointSubset {
        let addrs = |n: usize, base: usize| {
            (n > 0).then(|| {
                (0..n)
                    .map(|i| EndpointAddress {
                        ip: format!("127.244.{}.{}", (base + i) / 250, (base + i) % 250 + 1),
                        ..Default::default()
                    })
                    .collect()
            })
        };
        EndpointSubset { addresses: addrs(ready, 0), not_ready_addresses: addrs(not_ready, 5000), ports: None }
    }

    fn counts(subsets: &[EndpointSubset]) -> Vec<(usize, usize)> {
        subsets
            .iter()
            .map(|s| {
                (s.addresses.as_ref().map_or(0, Vec::len), s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            })
            .collect()
    }

    #[test]
    fn at_most_a_thousand_addresses_as_upstream_truncates_them() {
        // At capacity: untouched.
        let mut s = vec![subset(600, 400)];
        assert!(!truncate(&mut s));
        assert_eq!(counts(&s), [(600, 400)]);
        // 10,000 ready in one subset: the first 1000 stay.
        let mut s = vec![subset(10_000, 0)];
        assert!(truncate(&mut s));
        assert_eq!(counts(&s), [(1000, 0)]);
        assert_eq!(s[0].addresses.as_ref().unwrap()[0].ip, "127.244.0.1");
        // Over capacity in ready ones: not-ready ones go, ready ones keep their share (rounded up).
        let mut s = vec![subset(900, 50), subset(300, 10)];
        assert!(truncate(&mut s));
        assert_eq!(counts(&s), [(750, 0), (250, 0)]);
        // Ready ones fit: every ready address stays, the not-ready ones share what is left.
        let mut s = vec![subset(800, 300), subset(100, 100)];
        assert!(truncate(&mut s));
        assert_eq!(counts(&s), [(800, 75), (100, 25)]);
    }
}
