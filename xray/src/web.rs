//! The X-ray web page that `kplane up` serves: the live topology ingresses → services → endpoint
//! slices → pods → nodes, each object's stored JSON with its etcd key and revision, and a route
//! trace plus probe for an ingress rule or a service port.
//!
//! - A [`Hub`] runs one kube-runtime watcher per topology kind through the page's own kube client
//!   (identity `system:kplane:xray`, RBAC read-only on those kinds). It keeps a small summary of
//!   every object and, every [`FLUSH`], broadcasts the changed summaries as one batch.
//! - `GET /xray` is the page (HTML, CSS and JS from `assets/`, embedded), with the current
//!   snapshot inside it so it renders at once; `GET /xray/api/events` is a Server-Sent Events
//!   stream: a `snapshot` event, then `batch` events (`upsert`, `delete`).
//! - `GET /xray/api/object?kind=pods&namespace=default&name=x` reads the raw value from the store,
//!   for the topology kinds only ([`OBJECT_KINDS`]): never secrets or anything else.
//! - `GET /xray/api/route?host=foobar.com&path=/` or `?namespace=default&service=nginx-svc&port=8080`
//!   runs [`crate::route::trace`] and [`crate::probe::probe`].
//!
//! Plain HTTP on a loopback address only ([`bind`] refuses others). Every request must name a
//! loopback host (no DNS rebinding) and API requests from another site's page are refused
//! (`Sec-Fetch-Site`). Nothing here writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use store::DynStore;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// The user the page's kube client acts as (bound to the `system:kplane:xray` ClusterRole).
pub const USER: &str = "system:kplane:xray";

/// How often pending changes go out as one batch.
pub const FLUSH: Duration = Duration::from_millis(200);

/// The resources whose stored values the page may show: (API group, plural). Nothing else, so
/// never `/registry/secrets`.
pub const OBJECT_KINDS: &[(&str, &str)] = &[
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "ingressclasses"),
    ("", "services"),
    ("", "endpoints"),
    ("discovery.k8s.io", "endpointslices"),
    ("", "pods"),
    ("", "nodes"),
    ("", "namespaces"),
];

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
/// Where the page's HTML takes the snapshot.
const SNAPSHOT_SLOT: &str = "<!--SNAPSHOT-->";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--xray-address {0} is not a loopback address; the X-ray page serves loopback only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr} for the X-ray page: {why}")]
    Bind { addr: SocketAddr, why: std::io::Error },
    #[error("the X-ray page stopped: {0}")]
    Serve(std::io::Error),
}

/// Binds the page's listener; only loopback addresses.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    if !addr.ip().is_loopback() {
        return Err(Error::NotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr).await.map_err(|why| Error::Bind { addr, why })
}

/// Serves the page on `listener` until `shutdown`: `client` reads the cluster (give it the
/// [`USER`] identity), `store` the stored values.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: kube::Client,
    store: DynStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let web = Web::start(client, store, stop_rx);
    let app = router(web.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // Ends the event streams, so that the graceful shutdown does not wait for them.
        let _ = stop_tx.send(true);
    });
    let result = server.await.map_err(Error::Serve);
    web.hub.tasks.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
    result
}

/// The page's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    hub: Arc<Hub>,
    store: DynStore,
    client: kube::Client,
    stop: watch::Receiver<bool>,
}

impl Web {
    /// Starts the watchers and the batch flusher (stopped when `stop` turns true, or the
    /// returned `Web`'s last clone and its tasks are dropped).
    pub fn start(client: kube::Client, store: DynStore, stop: watch::Receiver<bool>) -> Web {
        let hub = Arc::new(Hub::new());
        {
            let mut tasks = hub.tasks.lock().unwrap_or_else(|e| e.into_inner());
            spawn_watch::<Ingress>(&mut tasks, &client, &hub, "ingresses", summarise_ingress);
            spawn_watch::<Service>(&mut tasks, &client, &hub, "services", summarise_service);
            spawn_watch::<EndpointSlice>(&mut tasks, &client, &hub, "endpointslices", summarise_slice);
            spawn_watch::<Pod>(&mut tasks, &client, &hub, "pods", summarise_pod);
            spawn_watch::<Node>(&mut tasks, &client, &hub, "nodes", summarise_node);
            let weak = Arc::downgrade(&hub);
            let mut flush_stop = stop.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(FLUSH);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = flush_stop.wait_for(|s| *s) => return,
                    }
                    let Some(hub) = weak.upgrade() else { return };
                    hub.flush();
                }
            });
        }
        Web { hub, store, client, stop }
    }

    /// The current topology as the page's snapshot JSON.
    pub fn snapshot(&self) -> String {
        self.hub.snapshot_text(&self.hub.lock())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()).abort_all();
    }
}

/// Object summaries by id (`kind/namespace/name`), kept current by the watchers.
struct Hub {
    state: Mutex<HubState>,
    batches: broadcast::Sender<Arc<str>>,
    tasks: Mutex<JoinSet<()>>,
}

#[derive(Default)]
struct HubState {
    objects: BTreeMap<String, Arc<Value>>,
    /// Changes since the last batch: the id's new summary, or None for a delete.
    pending: BTreeMap<String, Option<Arc<Value>>>,
    /// Kinds in a (re)list: the ids listed so far.
    relisting: HashMap<&'static str, HashSet<String>>,
    /// Kinds whose first list is complete.
    ready: HashSet<&'static str>,
    seq: u64,
}

impl Hub {
    fn new() -> Hub {
        Hub { state: Mutex::default(), batches: broadcast::channel(64).0, tasks: Mutex::new(JoinSet::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn upsert(&self, kind: &'static str, summary: Value) {
        let id = summary["id"].as_str().unwrap_or_default().to_string();
        let mut st = self.lock();
        if let Some(seen) = st.relisting.get_mut(kind) {
            seen.insert(id.clone());
        }
        if st.objects.get(&id).is_some_and(|old| **old == summary) {
            return;
        }
        let summary = Arc::new(summary);
        st.objects.insert(id.clone(), summary.clone());
        st.pending.insert(id, Some(summary));
    }

    fn remove(&self, id: &str) {
        let mut st = self.lock();
        if st.objects.remove(id).is_some() {
            st.pending.insert(id.to_string(), None);
        }
    }

    fn relist_start(&self, kind: &'static str) {
        self.lock().relisting.insert(kind, HashSet::new());
    }

    /// After a (re)list: what was not listed is gone.
    fn relist_done(&self, kind: &'static str) {
        let mut st = self.lock();
        let seen = st.relisting.remove(kind).unwrap_or_default();
        let prefix = format!("{kind}/");
        let gone: Vec<String> =
            st.objects.keys().filter(|id| id.starts_with(&prefix) && !seen.contains(*id)).cloned().collect();
        for id in gone {
            st.objects.remove(&id);
            st.pending.insert(id, None);
        }
        st.ready.insert(kind);
    }

    /// Sends the pending changes as one batch.
    fn flush(&self) {
        let mut st = self.lock();
        if st.pending.is_empty() {
            return;
        }
        st.seq += 1;
        let mut upsert = Vec::new();
        let mut delete = Vec::new();
        for (id, change) in std::mem::take(&mut st.pending) {
            match change {
                Some(v) => upsert.push(v),
                None => delete.push(id),
            }
        }
        let upsert: Vec<&Value> = upsert.iter().map(|v| &**v).collect();
        let batch = json!({"seq": st.seq, "upsert": upsert, "delete": delete});
        // No receivers is fine: nobody is looking.
        let _ = self.batches.send(Arc::from(batch.to_string()));
    }

    /// The snapshot JSON: `seq`, the kinds whose first list is done, and every summary.
    fn snapshot_text(&self, st: &HubState) -> String {
        #[derive(serde::Serialize)]
        struct Snapshot<'a> {
            seq: u64,
            ready: Vec<&'a str>,
            objects: Vec<&'a Value>,
        }
        let mut ready: Vec<&str> = st.ready.iter().copied().collect();
        ready.sort_unstable();
        let snapshot = Snapshot { seq: st.seq, ready, objects: st.objects.values().map(|v| &**v).collect() };
        serde_json::to_string(&snapshot).unwrap_or_default()
    }

    /// The snapshot and a receiver for every batch after it, taken together.
    fn subscribe(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let st = self.lock();
        let rx = self.batches.subscribe();
        (self.snapshot_text(&st), rx)
    }
}

fn spawn_watch<K>(
    tasks: &mut JoinSet<()>,
    client: &kube::Client,
    hub: &Arc<Hub>,
    kind: &'static str,
    summarise: fn(&K) -> Value,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let hub = Arc::downgrade(hub);
    tasks.spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let Some(hub) = hub.upgrade() else { return };
            match event {
                Ok(watcher::Event::Init) => hub.relist_start(kind),
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => hub.upsert(kind, summarise(&o)),
                Ok(watcher::Event::InitDone) => hub.relist_done(kind),
                Ok(watcher::Event::Delete(o)) => hub.remove(&object_id(kind, &o)),
                Err(e) => tracing::warn!(kind, error = %e, "X-ray watch failed; retrying"),
            }
        }
    });
}

fn object_id<K: Resource>(kind: &str, o: &K) -> String {
    let meta = o.meta();
    format!(
        "{kind}/{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn base<K: Resource>(kind: &str, o: &K) -> serde_json::Map<String, Value> {
    let meta = o.meta();
    let mut m = serde_json::Map::new();
    m.insert("id".into(), object_id(kind, o).into());
    m.insert("kind".into(), kind.into());
    m.insert("namespace".into(), meta.namespace.clone().unwrap_or_default().into());
    m.insert("name".into(), meta.name.clone().unwrap_or_default().into());
    if meta.deletion_timestamp.is_some() {
        m.insert("terminating".into(), true.into());
    }
    m
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn backend(b: &IngressBackend) -> Value {
    match &b.service {
        Some(s) => {
            let port = s.port.as_ref().and_then(|p| {
                p.number.map(|n| n.to_string()).or_else(|| p.name.clone()).filter(|p| !p.is_empty())
            });
            json!({"service": s.name, "port": port})
        }
        None => json!({"resource": b.resource.as_ref().map(|r| format!("{}/{}", r.kind, r.name))}),
    }
}

fn summarise_ingress(o: &Ingress) -> Value {
    let mut m = base("ingresses", o);
    let spec = o.spec.clone().unwrap_or_default();
    let class =
        spec.ingress_class_name.clone().or_else(|| o.annotations().get("kubernetes.io/ingress.class").cloned());
    m.insert("class".into(), class.into());
    m.insert("defaultBackend".into(), spec.default_backend.as_ref().map(backend).into());
    let rules: Vec<Value> = spec
        .rules
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let paths: Vec<Value> = r
                .http
                .as_ref()
                .map(|h| {
                    h.paths
                        .iter()
                        .map(|p| json!({"path": p.path.clone().unwrap_or_else(|| "/".into()), "pathType": p.path_type, "backend": backend(&p.backend)}))
                        .collect()
                })
                .unwrap_or_default();
            json!({"host": r.host.clone().unwrap_or_default(), "paths": paths})
        })
        .collect();
    m.insert("rules".into(), rules.into());
    let tls: Vec<String> =
        spec.tls.unwrap_or_default().into_iter().flat_map(|t| t.hosts.unwrap_or_default()).collect();
    m.insert("tlsHosts".into(), tls.into());
    let address: Vec<String> = o
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ings| ings.iter().filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone())).collect())
        .unwrap_or_default();
    m.insert("address".into(), address.into());
    Value::Object(m)
}

fn summarise_service(o: &Service) -> Value {
    let mut m = base("services", o);
    let spec = o.spec.clone().unwrap_or_default();
    m.insert("type".into(), spec.type_.unwrap_or_else(|| "ClusterIP".into()).into());
    m.insert("clusterIP".into(), spec.cluster_ip.into());
    m.insert("externalName".into(), spec.external_name.into());
    m.insert("selector".into(), serde_json::to_value(spec.selector).unwrap_or(Value::Null));
    let ports: Vec<Value> = spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!({"name": p.name, "port": p.port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                   "targetPort": p.target_port.as_ref().map(int_or_string), "nodePort": p.node_port})
        })
        .collect();
    m.insert("ports".into(), ports.into());
    Value::Object(m)
}

fn summarise_slice(o: &EndpointSlice) -> Value {
    let mut m = base("endpointslices", o);
    m.insert("service".into(), o.labels().get("kubernetes.io/service-name").cloned().into());
    m.insert("addressType".into(), o.address_type.clone().into());
    let ports: Vec<Value> = o
        .ports
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol}))
        .collect();
    m.insert("ports".into(), ports.into());
    let endpoints: Vec<Value> = o
        .endpoints
        .iter()
        .map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod =
                e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone());
            json!({"ip": e.addresses.first(), "ready": ready, "pod": pod, "node": e.node_name})
        })
        .collect();
    m.insert("endpoints".into(), endpoints.into());
    Value::Object(m)
}

fn summarise_pod(o: &Pod) -> Value {
    let mut m = base("pods", o);
    let status = o.status.clone().unwrap_or_default();
    m.insert("ip".into(), status.pod_ip.into());
    m.insert("node".into(), o.spec.as_ref().and_then(|s| s.node_name.clone()).into());
    m.insert("phase".into(), status.phase.unwrap_or_else(|| "Pending".into()).into());
    let ready = status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    m.insert("ready".into(), ready.into());
    let owner = o
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| format!("{}/{}", r.kind, r.name));
    m.insert("owner".into(), owner.into());
    Value::Object(m)
}

fn summarise_node(o: &Node) -> Value {
    let mut m = base("nodes", o);
    let status = o.status.clone().unwrap_or_default();
    let ip =
        status.addresses.unwrap_or_default().into_iter().find(|a| a.type_ == "InternalIP").map(|a| a.address);
    m.insert("ip".into(), ip.into());
    let ready = status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    m.insert("ready".into(), ready.into());
    let spec = o.spec.clone().unwrap_or_default();
    m.insert("podCIDR".into(), spec.pod_cidr.into());
    m.insert("unschedulable".into(), spec.unschedulable.unwrap_or(false).into());
    Value::Object(m)
}

/// The page's routes (also usable in-process with `tower::ServiceExt::oneshot`).
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/xray") }))
        .route("/xray", get(index))
        .route("/xray/", get(index))
        .route("/xray/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/xray/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/xray/api/topology", get(topology))
        .route("/xray/api/events", get(events))
        .route("/xray/api/object", get(object))
        .route("/xray/api/route", get(route))
        .fallback(|| async { bad(StatusCode::NOT_FOUND, "no such page; the X-ray page is at /xray") })
        .layer(axum::middleware::from_fn(guard))
        .with_state(web)
}

fn bad(code: StatusCode, message: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.into() + "\n").into_response()
}

/// Whether a Host header names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses requests for another host name (DNS rebinding) and API calls made by another site's
/// page; adds the security headers.
async fn guard(req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
    if !loopback_host(&host) {
        return bad(
            StatusCode::FORBIDDEN,
            format!("the X-ray page answers only for loopback host names, not {host:?}"),
        );
    }
    if req.uri().path().starts_with("/xray/api/") {
        let site = req.headers().get("sec-fetch-site").and_then(|h| h.to_str().ok()).unwrap_or("none");
        if !matches!(site, "same-origin" | "none") {
            return bad(StatusCode::FORBIDDEN, "the X-ray API answers only the X-ray page itself");
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index(State(web): State<Web>) -> Response {
    // JSON inside <script>: `<` only occurs in strings, where \u003c is the same character.
    let snapshot = web.snapshot().replace('<', "\\u003c");
    let tag = format!("<script id=\"snapshot\" type=\"application/json\">{snapshot}</script>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML.replacen(SNAPSHOT_SLOT, &tag, 1))
        .into_response()
}

async fn topology(State(web): State<Web>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], web.snapshot()).into_response()
}

/// `snapshot`, then a `batch` per flush; a fresh `snapshot` if this client fell behind.
async fn events(State(web): State<Web>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    struct Feed {
        hub: Arc<Hub>,
        first: Option<String>,
        rx: broadcast::Receiver<Arc<str>>,
        stop: watch::Receiver<bool>,
    }
    let (first, rx) = web.hub.subscribe();
    let feed = Feed { hub: web.hub.clone(), first: Some(first), rx, stop: web.stop.clone() };
    let stream = futures::stream::unfold(feed, |mut f| async move {
        if let Some(snapshot) = f.first.take() {
            return Some((Ok(SseEvent::default().event("snapshot").data(snapshot)), f));
        }
        if *f.stop.borrow() {
            return None;
        }
        let next = tokio::select! {
            _ = f.stop.wait_for(|s| *s) => return None,
            next = f.rx.recv() => next,
        };
        match next {
            Ok(batch) => Some((Ok(SseEvent::default().event("batch").data(&*batch)), f)),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let (snapshot, rx) = f.hub.subscribe();
                f.rx = rx;
                Some((Ok(SseEvent::default().event("snapshot").data(snapshot)), f))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A DNS label or subdomain, as object names and namespaces are.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s != "."
        && s != ".."
}

async fn object(State(web): State<Web>, Query(q): Query<HashMap<String, String>>) -> Response {
    let kind = q.get("kind").map(String::as_str).unwrap_or_default();
    let Some(&(group, plural)) = OBJECT_KINDS.iter().find(|(_, p)| *p == kind) else {
        let kinds: Vec<&str> = OBJECT_KINDS.iter().map(|(_, p)| *p).collect();
        return bad(
            StatusCode::BAD_REQUEST,
            format!("kind={kind:?} is not shown here; one of {}", kinds.join(", ")),
        );
    };
    let Some(def) = api_types::resources::RESOURCES.iter().find(|r| r.group == group && r.plural == plural)
    else {
        return bad(StatusCode::INTERNAL_SERVER_ERROR, format!("{plural} is not a known resource"));
    };
    let name = q.get("name").map(String::as_str).unwrap_or_default();
    if !valid_name(name) {
        return bad(StatusCode::BAD_REQUEST, format!("name={name:?} is not an object name"));
    }
    let namespace = q.get("namespace").map(String::as_str).unwrap_or_default();
    let namespace = if def.namespaced {
        if !valid_name(namespace) {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("{plural} are namespaced: namespace={namespace:?} is not a namespace name"),
            );
        }
        Some(namespace)
    } else {
        None
    };
    let key = def.key(namespace, name);
    match web.store.get(&key).await {
        Ok(kv) => {
            let value = serde_json::from_slice::<Value>(&kv.value)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&kv.value).into_owned()));
            let body = json!({"key": kv.key, "mod_revision": kv.mod_revision, "create_revision": kv.create_revision,
                              "version": kv.version, "size": kv.value.len(), "value": value});
            ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(store::Error::NotFound { .. }) => bad(StatusCode::NOT_FOUND, format!("nothing stored at {key}")),
        Err(e) => bad(StatusCode::SERVICE_UNAVAILABLE, format!("reading {key}: {e}")),
    }
}

async fn route(State(web): State<Web>, Query(q): Query<HashMap<String, String>>) -> Response {
    use crate::route::Target;
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let target = match (get("host"), get("service")) {
        (Some(host), None) => {
            let path = get("path").unwrap_or("/");
            if host.len() > 253 || host.contains(char::is_whitespace) || !path.starts_with('/') {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("host={host:?} path={path:?} is not a host and an absolute path"),
                );
            }
            Target::Host { host: host.to_string(), path: path.to_string() }
        }
        (None, Some(name)) => {
            let namespace = get("namespace").unwrap_or("default");
            if !valid_name(name) || !valid_name(namespace) {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("service={name:?} namespace={namespace:?} is not a service name"),
                );
            }
            Target::Service {
                namespace: namespace.into(),
                name: name.into(),
                port: get("port").map(str::to_string),
            }
        }
        _ => {
            return bad(
                StatusCode::BAD_REQUEST,
                "give host=… (and path=…), or service=… (and namespace=…, port=…)",
            )
        }
    };
    let traced =
        match tokio::time::timeout(Duration::from_secs(10), crate::route::trace(&web.client, &target)).await {
            Ok(Ok(route)) => route,
            Ok(Err(crate::route::Error::Invalid(m))) => return bad(StatusCode::BAD_REQUEST, m),
            Ok(Err(crate::route::Error::NotFound(m))) => return bad(StatusCode::NOT_FOUND, m),
            Ok(Err(e)) => return bad(StatusCode::BAD_GATEWAY, e.to_string()),
            Err(_) => return bad(StatusCode::GATEWAY_TIMEOUT, "tracing the route took longer than 10 s"),
        };
    let probe_text = match tokio::time::timeout(Duration::from_secs(15), crate::probe::probe(&traced)).await {
        Ok(report) => crate::render::probe_text(&report, false),
        Err(_) => "the probe took longer than 15 s".to_string(),
    };
    let body = json!({"route": traced, "text": crate::render::route_text(&traced, false), "probe": probe_text});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_batches_changes_and_a_relist_drops_what_it_no_longer_lists() {
        let hub = Hub::new();
        let mut rx = hub.batches.subscribe();
        let pod = |name: &str, ready: bool| json!({"id": format!("pods/default/{name}"), "kind": "pods", "ready": ready});
        hub.relist_start("pods");
        hub.upsert("pods", pod("a", false));
        hub.upsert("pods", pod("b", true));
        hub.relist_done("pods");
        hub.upsert("pods", pod("a", true));
        hub.upsert("pods", pod("b", true)); // unchanged: no news
        hub.flush();
        let batch: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(batch["seq"], 1);
        assert_eq!(batch["upsert"], json!([pod("a", true), pod("b", true)]));
        hub.flush();
        assert!(rx.try_recv().is_err(), "nothing pending, no batch");

        // A relist that no longer lists b (deleted while the watch was down) drops it.
        hub.relist_start("pods");
        hub.upsert("pods", pod("a", true));
        hub.relist_done("pods");
        hub.flush();
        let batch: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(batch["delete"], json!(["pods/default/b"]));
        assert_eq!(batch["upsert"], json!([]));
        let (snapshot, _) = hub.subscribe();
        let snapshot: Value = serde_json::from_str(&snapshot).unwrap();
        assert_eq!(snapshot["objects"], json!([pod("a", true)]));
        assert_eq!(snapshot["ready"], json!(["pods"]));
        hub.remove("pods/default/a");
        hub.remove("pods/default/nothing");
        hub.flush();
        let batch: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(batch["delete"], json!(["pods/default/a"]));
    }

    #[test]
    fn only_loopback_hosts() {
        for ok in ["127.0.0.1:6444", "127.0.0.1", "localhost:6444", "LOCALHOST", "[::1]:6444", "127.9.9.9:1"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for no in ["", "example.com", "example.com:6444", "10.0.0.1:6444", "[::2]:1", "127.0.0.1.nip.io"] {
            assert!(!loopback_host(no), "{no}");
        }
    }

    #[test]
    fn names_are_dns_names() {
        assert!(valid_name("nginx-svc") && valid_name("worker0") && valid_name("a.b"));
        for bad in ["", ".", "..", "a/b", "A", "x y", "../secrets", &"a".repeat(254)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn object_kinds_are_stored_resources_and_never_secrets() {
        for (group, plural) in OBJECT_KINDS {
            assert!(
                api_types::resources::RESOURCES
                    .iter()
                    .any(|r| r.group == *group && r.plural == *plural && r.stored),
                "{plural}"
            );
            assert_ne!(*plural, "secrets");
        }
    }
}
