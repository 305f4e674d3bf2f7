//! The ingress controller for the `kplane` IngressClass (`spec.controller:
//! kplane.dev/ingress-controller`).
//!
//! - `mod.rs`: startup (the IngressClass, the listeners), which Ingresses are ours, the sync loop
//!   that rebuilds the routing snapshot on every Ingress/IngressClass/Service/EndpointSlice/
//!   Endpoints/Secret change, and `status.loadBalancer`.
//! - `routes.rs`: the snapshot and host/path matching.
//! - `raw.rs`: the fast HTTP/1.1 data path over `httparse` (`h1.rs`: body framing and forwarding);
//!   `http.rs`: each connection's entry, and the hyper path for what `raw.rs` leaves to it;
//!   `tls.rs`: SNI certificate choice.
//!
//! Like the seed's nginx controller, traffic goes straight to the backend Service's ready
//! endpoints (never to its ClusterIP), so a dead pod leaves the rotation as soon as its endpoint
//! does.

mod h1;
pub(crate) mod http;
mod raw;
pub mod routes;
mod tls;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::endpoints;
use crate::events::Events;
use crate::informer::Informer;
use crate::workers::Workers;
use crate::Error;
use routes::Routes;

/// The `spec.controller` of IngressClasses this controller serves.
pub const CONTROLLER: &str = "kplane.dev/ingress-controller";
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Plain HTTP listener.
    pub http: SocketAddr,
    /// TLS listener (certificates from the Ingresses' `spec.tls` Secrets).
    pub https: SocketAddr,
    /// The IngressClass name (created at start if absent).
    pub class: String,
    /// Timeouts of the data path (ingress-nginx's defaults).
    pub timeouts: Timeouts,
}

/// The ingress's bounds on slow peers, named and defaulted as ingress-nginx's.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A request head must be complete within this long after the connection starts waiting for
    /// it (`client-header-timeout`, 60s). The wait for the next request on a kept-alive connection
    /// counts too (hyper times the whole wait for a head), so an idle connection closes after at
    /// most this long.
    pub client_header: Duration,
    /// A connection on which no byte moved either way for this long is closed: an idle
    /// keep-alive connection, a stalled request body, a response the client does not read
    /// (`keep-alive`, 75s).
    pub keepalive: Duration,
    /// The upstream's response head must arrive within this long after the request was sent, and
    /// an upgraded (WebSocket) tunnel closes after this long without traffic
    /// (`proxy-read-timeout`, 60s); past it the client gets 504.
    pub proxy_read: Duration,
    /// Connecting to an endpoint must succeed within this long (`proxy-connect-timeout`, 5s);
    /// past it, or on a refused connection, the next endpoint is tried, then 502.
    pub proxy_connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header: Duration::from_secs(60),
            keepalive: Duration::from_secs(75),
            proxy_read: Duration::from_secs(60),
            proxy_connect: Duration::from_secs(5),
        }
    }
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            https: SocketAddr::from(([127, 0, 0, 1], 8443)),
            class: "kplane".into(),
            timeouts: Timeouts::default(),
        }
    }
}

pub(crate) type Shared = Arc<RwLock<Arc<Routes>>>;

/// Runs the controller until `shutdown` completes. Fails if a listener cannot be bound or the
/// IngressClass cannot be created.
pub async fn run_ingress(
    client: kube::Client,
    cfg: IngressConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let http_listener =
        TcpListener::bind(cfg.http).await.map_err(|source| Error::Bind { addr: cfg.http, source })?;
    let https_listener =
        TcpListener::bind(cfg.https).await.map_err(|source| Error::Bind { addr: cfg.https, source })?;
    ensure_class(&client, &cfg.class).await?;

    let routes: Shared = Arc::default();
    let tls = tls::server_config(routes.clone()).map_err(|e| Error::Config(format!("TLS: {e}")))?;
    // The connections are served on per-core worker threads (nginx's worker processes); the
    // accept loops hold them, and they end once the loops and the connections have ended.
    let workers = Arc::new(
        Workers::start("ingress", crate::workers::cores())
            .map_err(|e| Error::Config(format!("ingress worker threads: {e}")))?,
    );
    let _http_task =
        AbortOnDrop(tokio::spawn(serve(http_listener, None, routes.clone(), cfg.timeouts, workers.clone())));
    let _https_task =
        AbortOnDrop(tokio::spawn(serve(https_listener, Some(tls), routes.clone(), cfg.timeouts, workers)));

    let changed = Arc::new(Notify::new());
    let ingresses = Informer::start(Api::<Ingress>::all(client.clone()), changed.clone());
    let classes = Informer::start(Api::<IngressClass>::all(client.clone()), changed.clone());
    let services = Informer::start(Api::<Service>::all(client.clone()), changed.clone());
    let slices = Informer::start(Api::<EndpointSlice>::all(client.clone()), changed.clone());
    let eps = Informer::start(Api::<Endpoints>::all(client.clone()), changed.clone());
    let secrets = Informer::start(Api::<Secret>::all(client.clone()), changed.clone());
    tracing::info!(http = %cfg.http, https = %cfg.https, class = %cfg.class, "ingress controller started");

    let address = status_ip(cfg.http.ip());
    // HTTP's port first, then HTTPS's when it shares the address.
    let mut ports = vec![cfg.http.port()];
    if status_ip(cfg.https.ip()) == address {
        ports.push(cfg.https.port());
    }
    let events = Events::new(client.clone(), "kplane-ingress");
    // (ingress uid, secret, problem) already reported: an Event and a log line once, not per rebuild.
    let mut reported: HashSet<(String, String, String)> = HashSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Routes are built only from complete lists: before a kind's first list, a TLS Secret that
    // exists would look missing (and be reported so) and a Service would have no endpoints.
    let all_listed = async {
        ingresses.ready().await;
        classes.ready().await;
        services.ready().await;
        slices.ready().await;
        eps.ready().await;
        secrets.ready().await;
    };
    tokio::select! {
        _ = &mut shutdown => {
            tracing::info!("ingress controller stopped");
            return Ok(());
        }
        _ = all_listed => {}
    }
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
        }
        let class_list = classes.store.state();
        let mut ours: Vec<Arc<Ingress>> =
            ingresses.store.state().into_iter().filter(|i| is_ours(i, &class_list, &cfg.class)).collect();
        ours.sort_by(|a, b| {
            (a.creation_timestamp().map(|t| t.0), a.namespace(), a.name_any()).cmp(&(
                b.creation_timestamp().map(|t| t.0),
                b.namespace(),
                b.name_any(),
            ))
        });
        let index = endpoints::index(&slices.store, &eps.store);
        let mut bad_secrets: HashMap<(String, String), String> = HashMap::new();
        let next = Routes::build(&ours, &services.store, &index, |ns, name| {
            let Some(secret) = secrets.store.get(&ObjectRef::new(name).within(ns)) else {
                bad_secrets.insert((ns.into(), name.into()), "secret not found".into());
                return None;
            };
            match tls::certified_key(&secret) {
                Ok(k) => Some(k),
                Err(e) => {
                    bad_secrets.insert((ns.into(), name.into()), e);
                    None
                }
            }
        });
        report_bad_secrets(&ours, &bad_secrets, &events, &mut reported);
        *routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        for ing in &ours {
            update_status(&client, ing, address, &ports).await;
        }
    }
    tracing::info!("ingress controller stopped");
    Ok(())
}

/// A Warning Event `InvalidTLSSecret` on each Ingress whose `spec.tls` names a missing or unusable
/// Secret (its hosts then get no certificate), once per (Ingress, Secret, problem).
fn report_bad_secrets(
    ours: &[Arc<Ingress>],
    bad: &HashMap<(String, String), String>,
    events: &Events,
    reported: &mut HashSet<(String, String, String)>,
) {
    if bad.is_empty() {
        return;
    }
    for ing in ours {
        let ns = ing.namespace().unwrap_or_default();
        let uid = ing.uid().unwrap_or_default();
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret) = &tls.secret_name else { continue };
            let Some(problem) = bad.get(&(ns.clone(), secret.clone())) else { continue };
            if !reported.insert((uid.clone(), secret.clone(), problem.clone())) {
                continue;
            }
            let msg = format!("TLS secret {ns}/{secret} is unusable: {problem}");
            tracing::warn!(ingress = %format!("{ns}/{}", ing.name_any()), "{msg}");
            let reference = ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("Ingress".into()),
                name: Some(ing.name_any()),
                namespace: Some(ns.clone()),
                uid: ing.uid(),
                ..Default::default()
            };
            events.warn(reference, "InvalidTLSSecret", "LoadCertificate", msg);
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The address written into `status.loadBalancer.ingress`: the HTTP listener's IP (loopback for
/// a wildcard bind).
fn status_ip(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        ip
    }
}

/// Creates our IngressClass, marked the cluster's default, if absent. One created by an older
/// kplane (no `is-default-class` annotation at all) is marked default now, as upstream reconciles
/// its bootstrap objects on start; an annotation set to anything (`"false"` included) is the
/// administrator's choice and is kept, as is a class of that name whose controller is not ours.
async fn ensure_class(client: &kube::Client, class: &str) -> Result<(), Error> {
    let api: Api<IngressClass> = Api::all(client.clone());
    if let Some(have) = api.get_opt(class).await? {
        let ours = have.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
        if ours && !have.annotations().contains_key(DEFAULT_CLASS_ANNOTATION) {
            // Guarded by the resourceVersion read: a concurrent change of the class wins.
            let patch = json!({"metadata": {
                "resourceVersion": have.resource_version(),
                "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
            }});
            match api.patch(class, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::info!(class, "marked the IngressClass as the default"),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                // Serving matters more than the mark: say so and go on.
                Err(e) => tracing::warn!(class, error = %e, "cannot mark the IngressClass as the default"),
            }
        }
        return Ok(());
    }
    let body: IngressClass = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": class, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": CONTROLLER}
    }))
    .map_err(|e| Error::Config(e.to_string()))?;
    match api.create(&PostParams::default(), &body).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()), // created concurrently
        Err(e) => Err(e.into()),
    }
}

/// Whether this controller serves `ing`: its `kubernetes.io/ingress.class` annotation or
/// `spec.ingressClassName` names our class (or any class whose controller is ours), or it names
/// none and a default IngressClass of ours exists (an Ingress created before the class was the
/// default: the DefaultIngressClass admission names the class in those created since). Ingresses
/// of any other class are not ours.
pub fn is_ours(ing: &Ingress, classes: &[Arc<IngressClass>], class: &str) -> bool {
    let mine = |c: &IngressClass| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
    let ours = |name: &str| name == class || classes.iter().any(|c| c.name_any() == name && mine(c));
    if let Some(a) = ing.annotations().get(CLASS_ANNOTATION) {
        return ours(a);
    }
    if let Some(name) = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
        return ours(name);
    }
    classes
        .iter()
        .any(|c| c.annotations().get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true") && mine(c))
}

/// Writes our address into `status.loadBalancer.ingress`: the IP, and the listeners' ports
/// (HTTP first, then HTTPS) so that tools such as `kplane xray` know where to send a request.
async fn update_status(client: &kube::Client, ing: &Ingress, ip: IpAddr, ports: &[u16]) {
    let entry = json!({
        "ip": ip.to_string(),
        "ports": ports.iter().map(|p| json!({"port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
    });
    let current = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|v| serde_json::to_value(v).unwrap_or_default());
    if current == Some(json!([entry.clone()])) {
        return;
    }
    let api: Api<Ingress> = Api::namespaced(client.clone(), &ing.namespace().unwrap_or_default());
    let patch = json!({"status": {"loadBalancer": {"ingress": [entry]}}});
    if let Err(e) = api.patch_status(&ing.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::warn!(ingress = %ing.name_any(), error = %e, "cannot update ingress status");
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: Shared,
    timeouts: Timeouts,
    workers: Arc<Workers>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ingress accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (routes, acceptor) = (routes.clone(), acceptor.clone());
        workers.serve(stream, move |stream| async move {
            let result = match acceptor {
                None => http::serve_connection(stream, peer, false, routes, timeouts).await,
                // The handshake is bounded like a request head.
                Some(acceptor) => {
                    match tokio::time::timeout(timeouts.client_header, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => http::serve_connection(tls, peer, true, routes, timeouts).await,
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "ingress connection ended with an error");
            }
        });
    }
}
