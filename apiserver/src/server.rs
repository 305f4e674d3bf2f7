//! The router, health and metrics endpoints, the objects every cluster starts with, the kubeconfig,
//! and serving with a clean shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};
use store::DynStore;

use crate::error::ApiError;
use crate::handlers::json_response;
use crate::params::Params;
use crate::route::{self, Target};
use crate::services::Cidr;

/// The API server's settings (flags of `kplane up` / `kplane apiserver`).
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    pub service_cidr: Cidr,
    pub node_port_range: (i64, i64),
    /// Largest request body accepted (upstream: 3 MiB).
    pub max_body: usize,
    /// Events the watch cache keeps per resource (`--default-watch-cache-size`); 0 turns it off.
    pub watch_cache_size: usize,
    /// How long Events are kept (`--event-ttl`); zero keeps them forever.
    pub event_ttl: std::time::Duration,
    /// Seconds pods tolerate a not-ready node's NoExecute taint unless they say otherwise.
    pub default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node's NoExecute taint unless they say otherwise.
    pub default_unreachable_toleration_seconds: i64,
    /// How requests are authenticated. The default (for in-process use and tests) authenticates no
    /// one and lets everyone act as an administrator; the binary turns it on unless --insecure-http.
    pub auth: crate::auth::AuthConfig,
    /// Serve HTTPS with these certificates; None serves plain HTTP.
    pub tls: Option<crate::tls::TlsServing>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 6443)),
            service_cidr: Cidr { base: std::net::Ipv4Addr::new(127, 96, 0, 0), bits: 12 },
            node_port_range: (30000, 32767),
            max_body: 3 * 1024 * 1024,
            watch_cache_size: crate::cacher::DEFAULT_WINDOW,
            event_ttl: std::time::Duration::from_secs(3600),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            auth: crate::auth::AuthConfig { insecure: true, ..Default::default() },
            tls: None,
        }
    }
}

impl Config {
    pub fn node_port_range_text(&self) -> String {
        format!("{}-{}", self.node_port_range.0, self.node_port_range.1)
    }
}

/// Request counts for `/metrics`, keyed by (verb, resource, code).
#[derive(Debug, Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub config: Arc<Config>,
    pub(crate) cacher: Arc<crate::cacher::Cacher>,
    metrics: Arc<Metrics>,
    pub(crate) leases: Arc<crate::ttl::LeaseManager>,
}

impl AppState {
    pub fn new(store: DynStore, config: Config) -> AppState {
        let cacher = Arc::new(crate::cacher::Cacher::new(config.watch_cache_size));
        AppState { store, cacher, config: Arc::new(config), metrics: Arc::default(), leases: Arc::default() }
    }
}

/// The whole API as one axum router (also usable in-process with `tower::ServiceExt::oneshot`).
pub fn router(st: AppState) -> Router {
    Router::new()
        .route("/version", get(|| async { json_response(StatusCode::OK, &crate::discovery::version()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi/v3",
            get(|| async { json_response(StatusCode::OK, &api_types::openapi::v3_index("")) }),
        )
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api", get(api_root))
        .route("/apis", get(apis_root))
        .route("/api/{*rest}", any(core))
        .route("/apis/{*rest}", any(named))
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::middleware::from_fn_with_state(st.clone(), crate::auth::middleware))
        .with_state(st)
}

async fn api_root(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    aggregated_discovery(&headers, true).unwrap_or_else(|| {
        json_response(StatusCode::OK, &crate::discovery::api_versions(&st.config.bind.to_string()))
    })
}

async fn apis_root(headers: axum::http::HeaderMap) -> Response {
    aggregated_discovery(&headers, false)
        .unwrap_or_else(|| json_response(StatusCode::OK, &crate::discovery::api_group_list()))
}

/// The aggregated discovery document when `Accept` asks for one (`legacy`: `/api`), with
/// upstream's Content-Type and `Vary: Accept` (the same URL serves two documents).
fn aggregated_discovery(headers: &axum::http::HeaderMap, legacy: bool) -> Option<Response> {
    let accept = headers.get(axum::http::header::ACCEPT)?.to_str().ok()?;
    let form = crate::discovery::Aggregated::negotiate(accept)?;
    let mut resp = json_response(StatusCode::OK, &form.document(legacy));
    let h = resp.headers_mut();
    if let Ok(v) = axum::http::HeaderValue::from_str(&form.content_type()) {
        h.insert(axum::http::header::CONTENT_TYPE, v);
    }
    h.insert(axum::http::header::VARY, axum::http::HeaderValue::from_static("Accept"));
    Some(resp)
}

/// One group-version's OpenAPI v3 document (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`).
async fn openapi_document(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let gv = match segs.as_slice() {
        ["api", v] => Some(("", *v)),
        ["apis", g, v] => Some((*g, *v)),
        _ => None,
    };
    let Some((g, v)) = gv else { return ApiError::no_route().into_response() };
    match (api_types::openapi::v3_document_bytes(g, v), api_types::openapi::v3_hash(g, v)) {
        (Some(bytes), Some(hash)) => (
            [
                (axum::http::header::CONTENT_TYPE, "application/json".to_string()),
                (axum::http::header::ETAG, format!("\"{hash}\"")),
                (axum::http::header::CACHE_CONTROL, "public, immutable".to_string()),
            ],
            bytes,
        )
            .into_response(),
        _ => ApiError::no_route().into_response(),
    }
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("[-]etcd failed: {e}\nreadyz check failed\n"))
            .into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut out = String::from(
        "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n",
    );
    if let Ok(m) = st.metrics.requests.lock() {
        for ((verb, resource, code), n) in m.iter() {
            out.push_str(&format!(
                "apiserver_request_total{{code=\"{code}\",resource=\"{resource}\",verb=\"{verb}\"}} {n}\n"
            ));
        }
    }
    if let Ok(rev) = st.store.current_revision().await {
        out.push_str(
            "# HELP kplane_store_revision The store's current revision.\n# TYPE kplane_store_revision gauge\n",
        );
        out.push_str(&format!("kplane_store_revision {rev}\n"));
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn core(State(st): State<AppState>, req: Request) -> Response {
    handle(st, true, req).await
}

async fn named(State(st): State<AppState>, req: Request) -> Response {
    handle(st, false, req).await
}

async fn handle(st: AppState, core: bool, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let rest = path.strip_prefix(if core { "/api/" } else { "/apis/" }).unwrap_or("").to_string();
    let method = parts.method.clone();
    let result = async {
        let params = Params::parse(parts.uri.query())?;
        let body = axum::body::to_bytes(body, st.config.max_body)
            .await
            .map_err(|_| ApiError::too_large(st.config.max_body))?;
        if !core {
            let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            if segs.len() == 1 {
                return crate::discovery::api_group(segs[0])
                    .map(|g| json_response(StatusCode::OK, &g))
                    .ok_or_else(ApiError::no_route);
            }
        }
        match route::parse(core, &rest)? {
            Target::GroupVersion { group, version } if method == Method::GET => {
                Ok(json_response(StatusCode::OK, &crate::discovery::api_resource_list(&group, &version)))
            }
            Target::GroupVersion { .. } => Err(ApiError::method_not_allowed()),
            Target::Resource(rp) => {
                let resource = rp.res.plural;
                let verb = verb_of(&method, &rp, &params);
                let user = parts.extensions.get::<crate::auth::UserInfo>();
                let r = crate::handlers::dispatch(&st, &method, rp, params, &parts.headers, body, user).await;
                let code = match &r {
                    Ok(resp) => resp.status().as_u16(),
                    Err(e) => e.code,
                };
                if let Ok(mut m) = st.metrics.requests.lock() {
                    *m.entry((verb, resource, code)).or_default() += 1;
                }
                r
            }
        }
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, path, code = e.code, reason = e.reason, message = %e.message, "request failed");
            e.into_response()
        }
    }
}

fn verb_of(method: &Method, rp: &route::ResourcePath, params: &Params) -> &'static str {
    match (method.as_str(), rp.name.is_some()) {
        ("GET", false) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => "WATCH",
        ("GET", false) => "LIST",
        ("GET", true) => "GET",
        ("POST", _) => "POST",
        ("PUT", _) => "PUT",
        ("PATCH", _) => "PATCH",
        ("DELETE", false) => "DELETECOLLECTION",
        ("DELETE", true) => "DELETE",
        _ => "OTHER",
    }
}

/// Sends one request through the router in-process (bootstrap, tests).
async fn call(st: &AppState, method: Method, uri: &str, body: Value) -> Result<(u16, Value), String> {
    use tower::ServiceExt;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("user-agent", concat!("kube-apiserver/v", env!("CARGO_PKG_VERSION")))
        .body(Body::from(body.to_string()))
        .map_err(|e| e.to_string())?;
    // The API server's own writes, as upstream's loopback client makes them.
    req.extensions_mut().insert(crate::auth::Authenticated(crate::auth::UserInfo::new(
        "system:apiserver",
        &["system:masters"],
    )));
    let resp = router(st.clone()).oneshot(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.map_err(|e| e.to_string())?;
    Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Adds a bootstrap ClusterRole's missing rules to the stored one, as upstream's RBAC reconciliation
/// does on start, unless the role is annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`.
/// Rules an administrator added are kept.
async fn reconcile_role(st: &AppState, collection: &str, want: &Value) -> Result<(), String> {
    let name = want.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let uri = format!("{collection}/{name}");
    let (code, mut have) = call(st, Method::GET, &uri, Value::Null).await?;
    if code != 200 {
        return Err(format!("reading ClusterRole {name}: {code} {have}"));
    }
    let autoupdate = have
        .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
        .and_then(Value::as_str);
    if autoupdate == Some("false") {
        return Ok(());
    }
    let mut rules = have.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    let before = rules.len();
    for rule in want.get("rules").and_then(Value::as_array).into_iter().flatten() {
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    if rules.len() == before {
        return Ok(());
    }
    have["rules"] = Value::Array(rules);
    let (code, body) = call(st, Method::PUT, &uri, have).await?;
    if code != 200 {
        return Err(format!("updating ClusterRole {name}: {code} {body}"));
    }
    Ok(())
}

/// Creates what every cluster starts with, if missing: the four namespaces, the `kubernetes` service
/// (first service IP) with Endpoints at the API server, and the `kube-dns` service (tenth IP, no
/// selector: the DNS component publishes its endpoints).
pub async fn bootstrap(st: &AppState, advertise: SocketAddr) -> Result<(), String> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, body) =
            call(st, Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": ns}})).await?;
        if code != 201 && code != 409 {
            return Err(format!("creating namespace {ns}: {code} {body}"));
        }
    }
    for (plural, obj) in crate::auth::rbac::bootstrap_policy() {
        let uri = format!("/apis/rbac.authorization.k8s.io/v1/{plural}");
        let (code, body) = call(st, Method::POST, &uri, obj.clone()).await?;
        if code == 409 && plural == "clusterroles" {
            reconcile_role(st, &uri, &obj).await?;
        } else if code != 201 && code != 409 {
            return Err(format!("creating bootstrap RBAC policy in {plural}: {code} {body}"));
        }
    }
    let cidr = st.config.service_cidr;
    let kubernetes = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": cidr.nth(1).to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": advertise.port()}], "sessionAffinity": "None", "type": "ClusterIP"},
    });
    let kube_dns = json!({
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": cidr.nth(10).to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        ]},
    });
    for (ns, svc) in [("default", kubernetes), ("kube-system", kube_dns)] {
        let (code, body) = call(st, Method::POST, &format!("/api/v1/namespaces/{ns}/services"), svc).await?;
        if code != 201 && code != 409 {
            return Err(format!("creating a bootstrap service in {ns}: {code} {body}"));
        }
    }
    // Earlier kplane versions gave kube-dns CoreDNS's selector, which no pod matches (the DNS server
    // publishes its own endpoints): drop it from a Service that still has exactly that selector.
    let uri = "/api/v1/namespaces/kube-system/services/kube-dns";
    let (code, mut svc) = call(st, Method::GET, uri, Value::Null).await?;
    if code == 200 && svc.pointer("/spec/selector") == Some(&json!({"k8s-app": "kube-dns"})) {
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("selector");
        }
        let (code, body) = call(st, Method::PUT, uri, svc).await?;
        if code != 200 {
            return Err(format!("updating the kube-dns service: {code} {body}"));
        }
    }
    // The `kubernetes` Endpoints point at this API server, kept current on every start.
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.ip().to_string()}], "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}]}],
    });
    let (code, body) =
        call(st, Method::PUT, "/api/v1/namespaces/default/endpoints/kubernetes", endpoints).await?;
    if code != 200 && code != 201 {
        return Err(format!("writing the kubernetes endpoints: {code} {body}"));
    }
    Ok(())
}

/// Writes a kubeconfig for `server` at `path`, mode 0600: with `tls`, the CA to trust and the
/// client certificate to present, embedded; without, plain HTTP with no credentials.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    tls: Option<(&str, &crate::pki::CertPair)>,
    user: &str,
) -> Result<(), crate::pki::PkiError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let (cluster_extra, user_body) = match tls {
        Some((ca_pem, client)) => (
            format!("\n    certificate-authority-data: {}", b64(ca_pem)),
            format!(
                "\n    client-certificate-data: {}\n    client-key-data: {}",
                b64(&client.cert_pem),
                b64(&client.key_pem)
            ),
        ),
        None => (String::new(), " {}".to_string()),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kplane\n  cluster:\n    server: {server}{cluster_extra}\ncontexts:\n- name: kplane\n  context:\n    cluster: kplane\n    user: {user}\n    namespace: default\ncurrent-context: kplane\nusers:\n- name: {user}\n  user:{user_body}\n"
    );
    crate::pki::write_private(path, text.as_bytes())
}

/// Binds, bootstraps and serves until `shutdown` resolves. Calls `ready` with the bound address once
/// it is serving.
pub async fn serve(
    st: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(st.config.bind)
        .await
        .map_err(|e| format!("cannot listen on {} for the API server: {e}", st.config.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    bootstrap(&st, addr).await?;
    let tls = st.config.tls.as_ref().map(crate::tls::server_config).transpose()?;
    let app = router(st);
    match tls {
        Some(config) => {
            ready(addr);
            crate::tls::serve(listener, config, app, shutdown).await;
            Ok(())
        }
        None => {
            let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
            ready(addr);
            server.await.map_err(|e| format!("API server stopped: {e}"))
        }
    }
}
