//! The router, health and metrics endpoints, the objects every cluster starts with, the kubeconfig,
//! and serving with a clean shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

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
    /// The audit log (`--audit-policy-file`, `--audit-log-path`); None records nothing.
    pub audit: Option<Arc<crate::audit::Auditor>>,
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
            audit: None,
        }
    }
}

impl Config {
    pub fn node_port_range_text(&self) -> String {
        format!("{}-{}", self.node_port_range.0, self.node_port_range.1)
    }
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub config: Arc<Config>,
    pub(crate) cacher: Arc<crate::cacher::Cacher>,
    /// This server's metrics and the registry `/metrics` serves (components register into it).
    pub metrics: Arc<crate::metrics::Metrics>,
    pub(crate) leases: Arc<crate::ttl::LeaseManager>,
    /// Set once [`bootstrap`] has written the system namespaces, RBAC policy and Services: the
    /// post-start hooks the health checks report.
    bootstrapped: Arc<std::sync::atomic::AtomicBool>,
    /// The resources this server serves: the built-ins plus its CRDs' (kept by `crd::start`).
    pub registry: Arc<api_types::Registry>,
    /// The built-in metrics-server's kubelet samples (`metrics.k8s.io`).
    pub(crate) metrics_api: Arc<crate::metrics_api::Samples>,
}

impl AppState {
    pub fn new(store: DynStore, config: Config) -> AppState {
        let cacher = Arc::new(crate::cacher::Cacher::new(config.watch_cache_size));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        AppState {
            store: crate::metrics::MeteredStore::wrap(store, metrics.clone()),
            cacher,
            config: Arc::new(config),
            metrics,
            leases: Arc::default(),
            bootstrapped: Arc::default(),
            registry: Arc::default(),
            metrics_api: Arc::default(),
        }
    }

    /// The state held weakly, for background loops that must end with the server.
    pub(crate) fn downgrade(&self) -> WeakState {
        WeakState {
            store: Arc::downgrade(&self.store),
            config: Arc::downgrade(&self.config),
            cacher: Arc::downgrade(&self.cacher),
            metrics: Arc::downgrade(&self.metrics),
            leases: Arc::downgrade(&self.leases),
            bootstrapped: Arc::downgrade(&self.bootstrapped),
            registry: Arc::downgrade(&self.registry),
            metrics_api: Arc::downgrade(&self.metrics_api),
        }
    }
}

/// [`AppState`] held weakly (see [`AppState::downgrade`]).
pub(crate) struct WeakState {
    store: std::sync::Weak<dyn store::Store>,
    config: std::sync::Weak<Config>,
    cacher: std::sync::Weak<crate::cacher::Cacher>,
    metrics: std::sync::Weak<crate::metrics::Metrics>,
    leases: std::sync::Weak<crate::ttl::LeaseManager>,
    bootstrapped: std::sync::Weak<std::sync::atomic::AtomicBool>,
    registry: std::sync::Weak<api_types::Registry>,
    metrics_api: std::sync::Weak<crate::metrics_api::Samples>,
}

impl WeakState {
    /// The state, while the server still holds it.
    pub(crate) fn upgrade(&self) -> Option<AppState> {
        // The registry is the server's own; the store may be shared, so it does not count.
        let registry = self.registry.upgrade()?;
        Some(AppState {
            store: self.store.upgrade()?,
            config: self.config.upgrade()?,
            cacher: self.cacher.upgrade()?,
            metrics: self.metrics.upgrade()?,
            leases: self.leases.upgrade()?,
            bootstrapped: self.bootstrapped.upgrade()?,
            metrics_api: self.metrics_api.upgrade()?,
            registry,
        })
    }
}

/// The whole API as one axum router (also usable in-process with `tower::ServiceExt::oneshot`, as
/// the components' in-process transport does).
pub fn router(st: AppState) -> Router {
    let routes = Router::new()
        .route("/version", get(|| async { json_response(StatusCode::OK, &crate::discovery::version()) }))
        .route("/healthz", get(|st, q| health(st, q, Probe::Healthz)))
        .route("/healthz/{check}", get(|st, q, c| health_one(st, q, c, Probe::Healthz)))
        .route("/livez", get(|st, q| health(st, q, Probe::Livez)))
        .route("/livez/{check}", get(|st, q, c| health_one(st, q, c, Probe::Livez)))
        .route("/readyz", get(|st, q| health(st, q, Probe::Readyz)))
        .route("/readyz/{check}", get(|st, q, c| health_one(st, q, c, Probe::Readyz)))
        .route("/metrics", get(crate::metrics::serve))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/openapi/v2", get(openapi_v2))
        .route("/api", get(api_root))
        .route("/apis", get(apis_root))
        .route("/api/{*rest}", any(core))
        .route("/apis/{*rest}", any(named))
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::middleware::from_fn_with_state(st.clone(), crate::metrics::middleware))
        .layer(axum::middleware::from_fn_with_state(st.clone(), crate::auth::middleware))
        .with_state(st);
    with_panic_recovery(routes)
}

/// The outermost layer: a handler (or middleware) that panics gets a 500 `Status` and a log line
/// instead of taking its connection's task — or, in-process, the calling component's task — with
/// it. Upstream's `WithPanicRecovery` answers the same message.
fn with_panic_recovery(routes: Router) -> Router {
    routes.layer(axum::middleware::from_fn(recover_panic))
}

async fn recover_panic(req: Request, next: axum::middleware::Next) -> Response {
    use futures::FutureExt;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, path, panic = what, "a request handler panicked");
            ApiError::internal("This request caused apiserver to panic. Look in the logs for details.")
                .into_response()
        }
    }
}

/// The three health endpoints. Each is a list of named checks, as upstream's healthz package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Healthz,
    Livez,
    Readyz,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Healthz => "healthz",
            Probe::Livez => "livez",
            Probe::Readyz => "readyz",
        }
    }

    /// Upstream's names, in upstream's order; the post-start hooks are the two whose work
    /// [`bootstrap`] does (RBAC bootstrap policy; system namespaces and the `kubernetes` Service).
    fn checks(self) -> &'static [&'static str] {
        match self {
            Probe::Healthz | Probe::Livez => {
                &["ping", "log", "etcd", POST_START_RBAC, POST_START_BOOTSTRAP_CONTROLLER]
            }
            Probe::Readyz => &[
                "ping",
                "log",
                "etcd",
                "etcd-readiness",
                "informer-sync",
                POST_START_RBAC,
                POST_START_BOOTSTRAP_CONTROLLER,
                "shutdown",
            ],
        }
    }
}

/// How long the store may take to answer a health check (upstream's `--etcd-healthcheck-timeout`).
const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

const POST_START_RBAC: &str = "poststarthook/rbac/bootstrap-roles";
const POST_START_BOOTSTRAP_CONTROLLER: &str = "poststarthook/bootstrap-controller";

/// Runs one named check: `ping`, `log` and `shutdown` pass while the server serves; `etcd` and
/// `etcd-readiness` read the store's current revision within [`STORE_CHECK_TIMEOUT`];
/// `informer-sync` passes when every started watch cache has its initial list; the post-start
/// hooks pass once [`bootstrap`] is done.
async fn run_check(st: &AppState, check: &str) -> Result<(), String> {
    match check {
        "informer-sync" => match st.cacher.unsynced() {
            None => Ok(()),
            Some(which) => Err(format!("the watch cache of {which} has not synced")),
        },
        POST_START_RBAC | POST_START_BOOTSTRAP_CONTROLLER => {
            if st.bootstrapped.load(std::sync::atomic::Ordering::Acquire) {
                Ok(())
            } else {
                Err("not finished".into())
            }
        }
        "etcd" | "etcd-readiness" => {
            match tokio::time::timeout(STORE_CHECK_TIMEOUT, st.store.current_revision()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("the store did not answer within {STORE_CHECK_TIMEOUT:?}")),
            }
        }
        _ => Ok(()),
    }
}

fn plain(code: StatusCode, text: String) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// `/healthz`, `/livez`, `/readyz`: every check (less `?exclude=`), `ok` when all pass, the list
/// with `?verbose`; on a failure 500 and the list, reasons withheld (they are logged).
async fn health(
    State(st): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    probe: Probe,
) -> Response {
    let params = Params::parse(query.as_deref()).unwrap_or_default();
    let excluded = params.all("exclude");
    let mut out = String::new();
    let mut failed = false;
    for check in probe.checks() {
        if excluded.iter().any(|e| e == check) {
            out.push_str(&format!("[+]{check} excluded: ok\n"));
            continue;
        }
        match run_check(&st, check).await {
            Ok(()) => out.push_str(&format!("[+]{check} ok\n")),
            Err(reason) => {
                tracing::warn!(probe = probe.name(), check, reason, "health check failed");
                out.push_str(&format!("[-]{check} failed: reason withheld\n"));
                failed = true;
            }
        }
    }
    let name = probe.name();
    if failed {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{out}{name} check failed\n"));
    }
    if params.get("verbose").is_some() {
        return plain(StatusCode::OK, format!("{out}{name} check passed\n"));
    }
    plain(StatusCode::OK, "ok".into())
}

/// `/<probe>/<check>`: one check, `ok` or 500 with the reason.
async fn health_one(
    State(st): State<AppState>,
    _: axum::extract::RawQuery,
    axum::extract::Path(check): axum::extract::Path<String>,
    probe: Probe,
) -> Response {
    if !probe.checks().contains(&check.as_str()) {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n".into());
    }
    match run_check(&st, &check).await {
        Ok(()) => plain(StatusCode::OK, "ok".into()),
        Err(reason) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("internal server error: {reason}\n")),
    }
}

async fn api_root(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    aggregated_discovery(&st, &headers, true).unwrap_or_else(|| {
        json_response(StatusCode::OK, &crate::discovery::api_versions(&st.config.bind.to_string()))
    })
}

async fn apis_root(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    aggregated_discovery(&st, &headers, false)
        .unwrap_or_else(|| json_response(StatusCode::OK, &crate::discovery::api_group_list(&st.registry)))
}

/// The aggregated discovery document when `Accept` asks for one (`legacy`: `/api`), with
/// upstream's Content-Type and `Vary: Accept` (the same URL serves two documents).
fn aggregated_discovery(st: &AppState, headers: &axum::http::HeaderMap, legacy: bool) -> Option<Response> {
    let accept = headers.get(axum::http::header::ACCEPT)?.to_str().ok()?;
    let form = crate::discovery::Aggregated::negotiate(accept)?;
    let mut resp = json_response(StatusCode::OK, &form.document(&st.registry, legacy));
    let h = resp.headers_mut();
    if let Ok(v) = axum::http::HeaderValue::from_str(&form.content_type()) {
        h.insert(axum::http::header::CONTENT_TYPE, v);
    }
    h.insert(axum::http::header::VARY, axum::http::HeaderValue::from_static("Accept"));
    Some(resp)
}

/// The `/openapi/v3` index: the built-in group-versions and the CRDs' served ones.
async fn openapi_index(State(st): State<AppState>) -> Response {
    let mut index = api_types::openapi::v3_index("");
    for (g, v) in crd_group_versions(&st) {
        let doc = crd_openapi(&st, g, v);
        let hash = api_types::crd::openapi::hash(&doc);
        let key = api_types::openapi::gv_path(g, v);
        index["paths"][&key] = json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")});
    }
    json_response(StatusCode::OK, &index)
}

/// Group-versions served only by CRDs.
fn crd_group_versions(st: &AppState) -> Vec<(&'static str, &'static str)> {
    let builtin = api_types::resources::group_versions();
    st.registry.group_versions().into_iter().filter(|gv| !builtin.contains(gv)).collect()
}

/// The OpenAPI v3 document of a CRD group-version.
fn crd_openapi(st: &AppState, g: &str, v: &str) -> Value {
    let crs: Vec<&'static api_types::crd::CustomResource> = st
        .registry
        .dynamic()
        .into_iter()
        .filter(|r| r.group == g && r.version == v)
        .filter_map(api_types::crd::custom)
        .collect();
    api_types::crd::openapi::v3_document(g, v, &crs)
}

/// One group-version's OpenAPI v3 document (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`).
async fn openapi_document(
    State(st): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let gv = match segs.as_slice() {
        ["api", v] => Some(("", *v)),
        ["apis", g, v] => Some((*g, *v)),
        _ => None,
    };
    let Some((g, v)) = gv else { return ApiError::no_route().into_response() };
    if crd_group_versions(&st).contains(&(g, v)) {
        let doc = crd_openapi(&st, g, v);
        let hash = api_types::crd::openapi::hash(&doc);
        return (
            [
                (axum::http::header::CONTENT_TYPE, "application/json".to_string()),
                (axum::http::header::ETAG, format!("\"{hash}\"")),
            ],
            doc.to_string(),
        )
            .into_response();
    }
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

/// A typed body (discovery's lists), serialized in its struct's field order.
fn ordered_json_response(code: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// `/openapi/v2` in the two encodings, with upstream's ETag (the SHA-512 of the JSON form, in upper
/// hex, for both) and each body also gzipped.
struct OpenApiV2 {
    etag: String,
    json: Vec<u8>,
    protobuf: Vec<u8>,
    json_gz: Vec<u8>,
    protobuf_gz: Vec<u8>,
}

impl OpenApiV2 {
    fn new(json: Vec<u8>, protobuf: Vec<u8>) -> OpenApiV2 {
        let digest = ring::digest::digest(&ring::digest::SHA512, &json);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        OpenApiV2 {
            etag: format!("\"{hex}\""),
            json_gz: gzip(&json),
            protobuf_gz: gzip(&protobuf),
            json,
            protobuf,
        }
    }
}

/// The document this server serves: the built-in one (built once per process) while it serves no
/// CRD, else one built from the built-in and the CRDs' v3 documents. The last CRD set's document is
/// kept (keyed by the interned definitions, so the same set is the same document) and rebuilt when
/// the registry's CRDs change, so a CRD appears in `/openapi/v2` with its discovery.
fn openapi_v2_for(st: &AppState) -> Arc<OpenApiV2> {
    static BUILTIN: std::sync::OnceLock<Arc<OpenApiV2>> = std::sync::OnceLock::new();
    type Last = Option<(Vec<usize>, Arc<OpenApiV2>)>;
    static LAST: std::sync::Mutex<Last> = std::sync::Mutex::new(None);
    let crds = crd_group_versions(st);
    if crds.is_empty() {
        return BUILTIN
            .get_or_init(|| {
                let served = api_types::openapi_v2::served();
                Arc::new(OpenApiV2::new(served.json.clone(), served.protobuf.clone()))
            })
            .clone();
    }
    let key: Vec<usize> = st.registry.dynamic().into_iter().map(|r| r as *const _ as usize).collect();
    if let Ok(last) = LAST.lock() {
        if let Some((_, doc)) = last.as_ref().filter(|(k, _)| *k == key) {
            return doc.clone();
        }
    }
    let mut v3: Vec<Value> = api_types::resources::group_versions()
        .into_iter()
        .filter_map(|(g, v)| api_types::openapi::v3_document(g, v))
        .collect();
    v3.extend(crds.into_iter().map(|(g, v)| crd_openapi(st, g, v)));
    let doc = api_types::openapi_v2::document_from_v3(&v3, api_types::patchmeta::PATCH_META);
    // Serializing a Value cannot fail (its keys are strings).
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    let built = Arc::new(OpenApiV2::new(json, api_types::openapi_v2::to_protobuf(&doc)));
    if let Ok(mut last) = LAST.lock() {
        *last = Some((key, built.clone()));
    }
    built
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// `/openapi/v2` as kube-openapi's handler serves it: JSON or gnostic protobuf by `Accept` (the
/// first listed media range either matches, `*/*` and no header meaning JSON; none: 406), an
/// ETag with `If-None-Match` answered 304, and gzip when `Accept-Encoding` lists it.
async fn openapi_v2(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use api_types::openapi_v2::{PROTOBUF_MEDIA_TYPE, PROTOBUF_MEDIA_TYPE_OLD};
    use axum::http::{header, HeaderValue};
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").trim();
    let protobuf = if accept.is_empty() {
        Some(false)
    } else {
        accept.split(',').find_map(|range| match range.split(';').next().unwrap_or("").trim() {
            "application/json" | "application/*" | "*/*" => Some(false),
            PROTOBUF_MEDIA_TYPE | PROTOBUF_MEDIA_TYPE_OLD => Some(true),
            _ => None,
        })
    };
    let Some(protobuf) = protobuf else {
        return ApiError::not_acceptable(format!("only application/json and {PROTOBUF_MEDIA_TYPE} are served"))
            .into_response();
    };
    let cache = openapi_v2_for(&st);
    // `@` is not allowed in a media type (Go's mime.ParseMediaType, which client-go runs on every
    // Content-Type, rejects it), so the answer names the protobuf form in its dotted spelling,
    // whichever spelling was asked for, as upstream does.
    let content_type = if protobuf { PROTOBUF_MEDIA_TYPE_OLD } else { "application/json" };
    let mut resp = if if_none_match(&headers, &cache.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzip = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|e| e.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("gzip"));
        let body = match (protobuf, gzip) {
            (false, false) => cache.json.clone(),
            (true, false) => cache.protobuf.clone(),
            (false, true) => cache.json_gz.clone(),
            (true, true) => cache.protobuf_gz.clone(),
        };
        let mut resp = body.into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if gzip {
            resp.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cache.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    resp
}

/// Whether `If-None-Match` names `etag` (weakly compared, as Go's `http.ServeContent` does) or is `*`.
fn if_none_match(headers: &axum::http::HeaderMap, etag: &str) -> bool {
    headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

async fn core(State(st): State<AppState>, req: Request) -> Response {
    handle(st, true, req).await
}

async fn named(State(st): State<AppState>, req: Request) -> Response {
    handle(st, false, req).await
}

async fn handle(st: AppState, core: bool, req: Request) -> Response {
    // Connect subresources (exec, attach, portforward) take the whole request: they upgrade it.
    if core {
        let rest = req.uri().path().strip_prefix("/api/").unwrap_or("");
        if let Ok(Target::Resource(rp)) = route::parse(&st.registry, true, rest) {
            if crate::streaming::is_streaming(&rp) {
                return crate::streaming::serve(&st, rp, req).await;
            }
        }
    }
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
            // The built-in metrics-server's group (outside the resource table: nothing is stored).
            if let Some(mp) = crate::metrics_api::parse(&rest) {
                return Ok(crate::metrics_api::serve(&st, &method, mp?, &params, &parts.headers).await);
            }
            let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            if segs.len() == 1 {
                return crate::discovery::api_group(&st.registry, segs[0])
                    .map(|g| json_response(StatusCode::OK, &g))
                    .ok_or_else(ApiError::no_route);
            }
        }
        match route::parse(&st.registry, core, &rest)? {
            Target::GroupVersion { group, version } if method == Method::GET => Ok(ordered_json_response(
                StatusCode::OK,
                &crate::discovery::api_resource_list(&st.registry, &group, &version),
            )),
            Target::GroupVersion { .. } => Err(ApiError::method_not_allowed()),
            Target::Resource(rp) => {
                let user = parts.extensions.get::<crate::auth::UserInfo>();
                let crd_write = crate::crd::is_crd(rp.res) && method != Method::GET;
                let r = crate::handlers::dispatch(&st, &method, rp, params, &parts.headers, body, user).await;
                if crd_write && r.is_ok() {
                    // A CRD written here is served at once (the controller also follows the store).
                    if let Err(e) = crate::crd::refresh(&st).await {
                        tracing::warn!(error = %e, "refreshing the CRD registry");
                    }
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

/// Sends one request through the router in-process (bootstrap, tests).
pub(crate) async fn call(
    st: &AppState,
    method: Method,
    uri: &str,
    body: Value,
) -> Result<(u16, Value), String> {
    call_with(st, method, uri, body, "application/json").await
}

/// [`call`] with a Content-Type (patches).
pub(crate) async fn call_with(
    st: &AppState,
    method: Method,
    uri: &str,
    body: Value,
    content_type: &str,
) -> Result<(u16, Value), String> {
    use tower::ServiceExt;
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("user-agent", concat!("kube-apiserver/v", env!("CARGO_PKG_VERSION")))
        .body(Body::from(body))
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
    use futures::future::try_join_all;
    crate::crd::start(st).await;
    // The namespaces and the RBAC policy are independent cluster-scoped objects: written all at
    // once, so that the store's group commit makes them a few durable commits instead of one each
    // (one after another they were most of `kplane up`'s startup).
    let namespaces =
        try_join_all(["default", "kube-system", "kube-public", "kube-node-lease"].map(|ns| async move {
            let (code, body) =
                call(st, Method::POST, "/api/v1/namespaces", json!({"metadata": {"name": ns}})).await?;
            if code != 201 && code != 409 {
                return Err(format!("creating namespace {ns}: {code} {body}"));
            }
            Ok(())
        }));
    let policy =
        try_join_all(crate::auth::rbac::bootstrap_policy().into_iter().map(|(plural, obj)| async move {
            let uri = format!("/apis/rbac.authorization.k8s.io/v1/{plural}");
            let (code, body) = call(st, Method::POST, &uri, obj.clone()).await?;
            if code == 409 && plural == "clusterroles" {
                reconcile_role(st, &uri, &obj).await?;
            } else if code != 201 && code != 409 {
                return Err(format!("creating bootstrap RBAC policy in {plural}: {code} {body}"));
            }
            Ok(())
        }));
    futures::future::try_join(namespaces, policy).await?;
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
    try_join_all([("default", kubernetes), ("kube-system", kube_dns)].map(|(ns, svc)| async move {
        let (code, body) = call(st, Method::POST, &format!("/api/v1/namespaces/{ns}/services"), svc).await?;
        if code != 201 && code != 409 {
            return Err(format!("creating a bootstrap service in {ns}: {code} {body}"));
        }
        Ok(())
    }))
    .await?;
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
    st.bootstrapped.store(true, std::sync::atomic::Ordering::Release);
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
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
            ready(addr);
            server.await.map_err(|e| format!("API server stopped: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    async fn get(app: &Router, uri: &str) -> (u16, Value) {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        // `oneshot` on the router is exactly what the components' in-process transport does.
        let resp = app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_500_status_and_the_caller_lives_on() {
        let app = with_panic_recovery(
            Router::new().route("/boom", get_route(boom)).route("/fine", get_route(|| async { "fine" })),
        );
        for _ in 0..2 {
            let (code, status) = get(&app, "/boom").await;
            assert_eq!(code, 500);
            assert_eq!(
                (status["kind"].as_str(), status["reason"].as_str()),
                (Some("Status"), Some("InternalError"))
            );
            assert_eq!(
                status["message"],
                "Internal error occurred: This request caused apiserver to panic. Look in the logs for details."
            );
        }
        let req = Request::builder().uri("/fine").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
    }

    async fn boom() -> &'static str {
        panic!("boom")
    }

    use axum::routing::get as get_route;

    async fn openapi_v2_with(headers: &[(&str, &str)]) -> (u16, axum::http::HeaderMap, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = store::embedded::EmbeddedStore::open(store::embedded::EmbeddedConfig::new(dir.path()))
            .await
            .unwrap();
        let st = AppState::new(Arc::new(store), Config::default());
        let app = Router::new().route("/openapi/v2", get_route(openapi_v2)).with_state(st);
        let mut req = Request::builder().uri("/openapi/v2");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (code, headers) = (resp.status().as_u16(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (code, headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn openapi_v2_negotiates_json_protobuf_gzip_and_etag() {
        use api_types::openapi_v2::PROTOBUF_MEDIA_TYPE;
        use std::io::Read;
        let served = api_types::openapi_v2::served();
        let (code, h, body) = openapi_v2_with(&[]).await;
        assert_eq!((code, h["content-type"].to_str().unwrap()), (200, "application/json"));
        assert_eq!(body, served.json);
        let etag = h["etag"].to_str().unwrap().to_string();
        assert_eq!(etag.len(), 130, "a quoted SHA-512 in hex: {etag}");

        let accept = format!("{PROTOBUF_MEDIA_TYPE}, application/json");
        let (code, h, body) = openapi_v2_with(&[("accept", &accept)]).await;
        let dotted = api_types::openapi_v2::PROTOBUF_MEDIA_TYPE_OLD;
        assert_eq!((code, h["content-type"].to_str().unwrap()), (200, dotted));
        assert_eq!(body, served.protobuf);
        assert_eq!(h["etag"].to_str().unwrap(), etag);

        let (code, h, body) =
            openapi_v2_with(&[("accept", &accept), ("accept-encoding", "gzip, deflate")]).await;
        assert_eq!((code, h["content-encoding"].to_str().unwrap()), (200, "gzip"));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, served.protobuf);

        let (code, h, body) = openapi_v2_with(&[("if-none-match", &etag)]).await;
        assert_eq!((code, body.len(), h["etag"].to_str().unwrap()), (304, 0, etag.as_str()));
        let (code, _, _) = openapi_v2_with(&[("if-none-match", "\"other\"")]).await;
        assert_eq!(code, 200);

        let (code, _, body) = openapi_v2_with(&[("accept", "application/vnd.kubernetes.protobuf")]).await;
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, status["reason"].as_str()), (406, Some("NotAcceptable")));
    }
}
