//! `/metrics`: kube-apiserver's own metric names, labels and buckets, in the OpenMetrics text format
//! (`prometheus-client`). One [`Metrics`] per API server instance (no process-global state): its
//! registry also carries what the components of the same process register into it
//! ([`Metrics::register`]), so `kplane up` serves one `/metrics` for everything.
//!
//! - the request metrics (`apiserver_request_total`, `apiserver_request_duration_seconds`,
//!   `apiserver_response_sizes`, `apiserver_current_inflight_requests`,
//!   `apiserver_longrunning_requests`, `apiserver_registered_watchers`,
//!   `apiserver_watch_events_total`) are recorded by [`middleware`], inside authentication and
//!   authorization as upstream's route instrumentation is (a refused request is not counted);
//! - `etcd_request_duration_seconds{operation,type}` by [`MeteredStore`], the decorator the API
//!   server's `Store` is wrapped in;
//! - `apiserver_storage_objects{resource}` is counted from the store when `/metrics` is read;
//! - `apiserver_cache_list_total{resource_prefix,index}`: LISTs answered by the watch cache
//!   (`handlers/list.rs`), upstream's cacher counter.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use store::{DynStore, Store};

use crate::route::{ResourcePath, Target};
use crate::AppState;

/// `apiserver_request_duration_seconds`' buckets, as upstream's (also `etcd_request_duration_seconds`').
pub const REQUEST_DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0,
];

/// `apiserver_response_sizes`' buckets: upstream's `ExponentialBuckets(1000, 10, 8)`.
pub const RESPONSE_SIZE_BUCKETS: [f64; 8] = [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of the request histograms and the long-running gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub dry_run: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: String,
    pub component: String,
}

/// `apiserver_request_total`'s labels: the request's, plus the response code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    #[prometheus(flatten)]
    pub request: RequestLabels,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub request_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GvkLabels {
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheListLabels {
    pub resource_prefix: String,
    pub index: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EtcdLabels {
    pub operation: String,
    pub r#type: String,
}

/// `rest_client_requests_total`'s labels, plus `component`: every in-process client of `kplane up`
/// reports into the one registry, so the client's name (its User-Agent's first part) tells them
/// apart where upstream's components each serve their own `/metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestLabels {
    pub code: String,
    pub method: String,
    pub host: String,
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestDurationLabels {
    pub verb: String,
    pub host: String,
    pub component: String,
}

/// client-go's `rest_client_request_duration_seconds` buckets.
pub const REST_CLIENT_BUCKETS: [f64; 12] = [0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0];

fn rest_client_histogram() -> Histogram {
    Histogram::new(REST_CLIENT_BUCKETS)
}

/// A histogram family whose histograms all have the same fixed buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_duration_histogram() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

fn response_size_histogram() -> Histogram {
    Histogram::new(RESPONSE_SIZE_BUCKETS)
}

/// One API server's metrics and the registry they (and the process's components) are served from.
pub struct Metrics {
    registry: RwLock<Registry>,
    requests: Family<CodeLabels, Counter>,
    durations: HistogramFamily<RequestLabels>,
    sizes: HistogramFamily<RequestLabels>,
    inflight: Family<KindLabels, Gauge>,
    longrunning: Family<RequestLabels, Gauge>,
    watchers: Family<GvkLabels, Gauge>,
    watch_events: Family<GvkLabels, Counter>,
    storage_objects: Family<ResourceLabels, Gauge>,
    cache_lists: Family<CacheListLabels, Counter>,
    etcd: HistogramFamily<EtcdLabels>,
    rest_requests: Family<RestLabels, Counter>,
    rest_durations: HistogramFamily<RestDurationLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: RwLock::new(Registry::default()),
            requests: Family::default(),
            durations: Family::new_with_constructor(request_duration_histogram as fn() -> Histogram),
            sizes: Family::new_with_constructor(response_size_histogram as fn() -> Histogram),
            inflight: Family::default(),
            longrunning: Family::default(),
            watchers: Family::default(),
            watch_events: Family::default(),
            storage_objects: Family::default(),
            cache_lists: Family::default(),
            etcd: Family::new_with_constructor(request_duration_histogram as fn() -> Histogram),
            rest_requests: Family::default(),
            rest_durations: Family::new_with_constructor(rest_client_histogram as fn() -> Histogram),
        };
        // Both kinds are always present, as upstream's.
        for kind in ["readOnly", "mutating"] {
            m.inflight.get_or_create(&KindLabels { request_kind: kind.into() }).set(0);
        }
        m.register(|r| {
            // Help texts without their final period: prometheus-client appends one.
            // prometheus-client appends `_total` to counter names.
            r.register(
                "apiserver_request",
                "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
                m.requests.clone(),
            );
            r.register(
                "apiserver_request_duration_seconds",
                "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component",
                m.durations.clone(),
            );
            r.register(
                "apiserver_response_sizes",
                "Response size distribution in bytes for each group, version, verb, resource, subresource, scope and component",
                m.sizes.clone(),
            );
            r.register(
                "apiserver_current_inflight_requests",
                "Maximal number of currently used inflight request limit of this apiserver per request kind in last second",
                m.inflight.clone(),
            );
            r.register(
                "apiserver_longrunning_requests",
                "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component. Not all requests are tracked this way",
                m.longrunning.clone(),
            );
            r.register(
                "apiserver_registered_watchers",
                "Number of currently registered watchers for a given resources",
                m.watchers.clone(),
            );
            r.register("apiserver_watch_events", "Number of events sent in watch clients", m.watch_events.clone());
            r.register(
                "apiserver_storage_objects",
                "Number of stored objects at the time of last check split by kind",
                m.storage_objects.clone(),
            );
            r.register(
                "apiserver_cache_list",
                "Number of LIST requests served from watch cache",
                m.cache_lists.clone(),
            );
            r.register(
                "etcd_request_duration_seconds",
                "Etcd request latency in seconds for each operation and object type",
                m.etcd.clone(),
            );
            r.register(
                "rest_client_requests",
                "Number of HTTP requests, partitioned by status code, method, and host",
                m.rest_requests.clone(),
            );
            r.register(
                "rest_client_request_duration_seconds",
                "Request latency in seconds. Broken down by verb, and host",
                m.rest_durations.clone(),
            );
        });
        m
    }
}

impl Metrics {
    /// Adds metrics to the registry `/metrics` serves (the components of the same process).
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut r = self.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut r);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let r = self.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// One request of an in-process client (`component`), answered with `code` after `elapsed`.
    pub fn observe_rest_client(
        &self,
        component: &str,
        method: &str,
        host: &str,
        code: &str,
        elapsed: Duration,
    ) {
        let labels = RestLabels {
            code: code.into(),
            method: method.into(),
            host: host.into(),
            component: component.into(),
        };
        self.rest_requests.get_or_create(&labels).inc();
        let labels = RestDurationLabels { verb: method.into(), host: host.into(), component: component.into() };
        self.rest_durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    fn observe_etcd(&self, operation: &str, key: &str, started: Instant) {
        let labels = EtcdLabels { operation: operation.into(), r#type: object_type(key) };
        self.etcd.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }

    fn record(&self, labels: &RequestLabels, code: u16, elapsed: Duration, size: Option<u64>) {
        let with_code = CodeLabels { request: labels.clone(), code: code.to_string() };
        self.requests.get_or_create(&with_code).inc();
        self.durations.get_or_create(labels).observe(elapsed.as_secs_f64());
        // Upstream observes response sizes of reads only.
        if let Some(size) = size.filter(|_| labels.verb == "GET" || labels.verb == "LIST") {
            self.sizes.get_or_create(labels).observe(size as f64);
        }
    }

    /// One LIST answered by the watch cache of the resource stored under `resource_prefix`
    /// (upstream's label: the resource's storage prefix, `/pods` for `/registry/pods`).
    pub fn cache_list(&self, resource_prefix: &str) {
        let resource_prefix = resource_prefix.strip_prefix("/registry").unwrap_or(resource_prefix).to_string();
        self.cache_lists.get_or_create(&CacheListLabels { resource_prefix, index: String::new() }).inc();
    }

    /// Counts the stored objects of every stored resource (`apiserver_storage_objects`).
    async fn count_objects(&self, store: &DynStore) {
        let mut seen = std::collections::HashSet::new();
        for res in api_types::resources::RESOURCES.iter().filter(|r| r.stored && !r.etcd_prefix.is_empty()) {
            if !seen.insert(res.etcd_prefix) {
                continue;
            }
            let opts =
                store::ListOptions { prefix: format!("{}/", res.etcd_prefix), limit: 1, ..Default::default() };
            if let Ok(list) = store.list(opts).await {
                let n = list.items.len() as i64 + list.remaining;
                self.storage_objects.get_or_create(&ResourceLabels { resource: group_resource(res) }).set(n);
            }
        }
    }
}

/// `plural` for the core group, `plural.group` otherwise (upstream's GroupResource string).
fn group_resource(res: &api_types::ResourceDef) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

/// The resource a storage key belongs to, as `etcd_request_duration_seconds`' `type` label.
fn object_type(key: &str) -> String {
    let best = api_types::resources::RESOURCES
        .iter()
        .filter(|r| {
            !r.etcd_prefix.is_empty()
                && key.strip_prefix(r.etcd_prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|r| r.etcd_prefix.len());
    match best {
        Some(res) => group_resource(res),
        None => key.trim_start_matches("/registry/").split('/').next().unwrap_or("").to_string(),
    }
}

/// `/metrics`.
pub(crate) async fn serve(State(st): State<AppState>) -> Response {
    st.metrics.count_objects(&st.store).await;
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], st.metrics.encode()).into_response()
}

/// What the request metrics need to know of a request: upstream's RequestInfo, as labels.
struct RequestInfo {
    labels: RequestLabels,
    /// Watches, logs: tracked by `apiserver_longrunning_requests`, not the in-flight gauge.
    long_running: bool,
    watch: Option<GvkLabels>,
    mutating: bool,
}

impl RequestInfo {
    fn of(registry: &api_types::Registry, method: &Method, uri: &Uri, headers: &HeaderMap) -> RequestInfo {
        let path = uri.path();
        let params = crate::params::Params::parse(uri.query()).unwrap_or_default();
        let mut dry_run: Vec<String> = params.all("dryRun").to_vec();
        dry_run.sort();
        let dry_run = dry_run.join(",");
        let target = if let Some(rest) = path.strip_prefix("/api/") {
            crate::route::parse(registry, true, rest).ok()
        } else if let Some(rest) = path.strip_prefix("/apis/") {
            crate::route::parse(registry, false, rest).ok()
        } else {
            None
        };
        let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let component = "apiserver".to_string();
        let Some(Target::Resource(rp)) = target else {
            return RequestInfo {
                labels: RequestLabels {
                    verb: method.as_str().to_string(),
                    dry_run,
                    group: String::new(),
                    version: String::new(),
                    resource: String::new(),
                    subresource: path.to_string(),
                    scope: String::new(),
                    component,
                },
                long_running: false,
                watch: None,
                mutating,
            };
        };
        let watch = matches!(*method, Method::GET) && params.bool("watch").unwrap_or(false);
        let verb = verb(method, &rp, watch, headers);
        let sub = rp.subresource.clone().unwrap_or_default();
        let long_running = watch || matches!(sub.as_str(), "log" | "exec" | "attach" | "portforward" | "proxy");
        let scope = if rp.namespace.is_some() {
            "namespace"
        } else if rp.name.is_some() {
            "resource"
        } else {
            "cluster"
        };
        RequestInfo {
            labels: RequestLabels {
                verb: verb.into(),
                dry_run,
                group: rp.res.group.into(),
                version: rp.res.version.into(),
                resource: rp.res.plural.into(),
                subresource: sub,
                scope: scope.into(),
                component,
            },
            long_running,
            watch: watch.then(|| GvkLabels {
                group: rp.res.group.into(),
                version: rp.res.version.into(),
                kind: rp.res.kind.into(),
            }),
            mutating,
        }
    }
}

/// Upstream's reported verb: LIST and WATCH for collection reads, APPLY for server-side apply.
fn verb(method: &Method, rp: &ResourcePath, watch: bool, headers: &HeaderMap) -> &'static str {
    let apply = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    match (method.as_str(), rp.name.is_some()) {
        ("GET" | "HEAD", _) if watch => "WATCH",
        ("GET" | "HEAD", false) => "LIST",
        ("GET" | "HEAD", true) => "GET",
        ("POST", _) => "POST",
        ("PUT", _) => "PUT",
        ("PATCH", _) if apply => "APPLY",
        ("PATCH", _) => "PATCH",
        ("DELETE", false) => "DELETECOLLECTION",
        ("DELETE", true) => "DELETE",
        _ => "CONNECT",
    }
}

/// Decrements a gauge when dropped (a request whose client went away is no longer in flight).
struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A long-running request, open until its response body is dropped: then it is counted, timed and
/// taken off the long-running and watcher gauges.
struct LongRunning {
    metrics: Arc<Metrics>,
    labels: RequestLabels,
    code: u16,
    started: Instant,
    events: Option<Counter>,
    _gauges: Vec<GaugeGuard>,
}

impl LongRunning {
    fn sent(&self, chunk: &Result<bytes::Bytes, axum::Error>) {
        if let (Some(events), Ok(c)) = (&self.events, chunk) {
            if !c.is_empty() {
                events.inc();
            }
        }
    }
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.metrics.record(&self.labels, self.code, self.started.elapsed(), None);
    }
}

/// Records every authorized request (see the module's note). Non-resource requests that found no
/// route (404) are not recorded, so unknown paths cannot grow the label sets.
pub(crate) async fn middleware(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let m = st.metrics.clone();
    let info = RequestInfo::of(&st.registry, req.method(), req.uri(), req.headers());
    let started = Instant::now();
    if info.long_running {
        let mut gauges = Vec::new();
        let g = m.longrunning.get_or_create_owned(&info.labels);
        g.inc();
        gauges.push(GaugeGuard(g));
        if let Some(gvk) = &info.watch {
            let g = m.watchers.get_or_create_owned(gvk);
            g.inc();
            gauges.push(GaugeGuard(g));
        }
        let resp = next.run(req).await;
        let code = resp.status().as_u16();
        let events =
            info.watch.as_ref().filter(|_| code == 200).map(|gvk| m.watch_events.get_or_create_owned(gvk));
        let open =
            LongRunning { metrics: m.clone(), labels: info.labels, code, started, events, _gauges: gauges };
        let (parts, body) = resp.into_parts();
        let body = body.into_data_stream().map(move |chunk| {
            open.sent(&chunk);
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(body));
    }
    let kind = if info.mutating { "mutating" } else { "readOnly" };
    let g = m.inflight.get_or_create_owned(&KindLabels { request_kind: kind.into() });
    g.inc();
    let guard = GaugeGuard(g);
    let resp = next.run(req).await;
    drop(guard);
    let code = resp.status().as_u16();
    if !(code == 404 && info.labels.resource.is_empty()) {
        m.record(&info.labels, code, started.elapsed(), resp.body().size_hint().exact());
    }
    resp
}

/// The API server's `Store`, timed: `etcd_request_duration_seconds{operation,type}`, `type` being
/// the resource the key belongs to (upstream's group-resource). Watches are not timed (upstream's
/// are not either); lease and compaction calls pass through.
pub struct MeteredStore {
    inner: DynStore,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn wrap(inner: DynStore, metrics: Arc<Metrics>) -> DynStore {
        Arc::new(MeteredStore { inner, metrics })
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    async fn get(&self, key: &str) -> store::Result<store::KeyValue> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.observe_etcd("get", key, t);
        r
    }

    async fn list(&self, opts: store::ListOptions) -> store::Result<store::ListResult> {
        let (t, prefix) = (Instant::now(), opts.prefix.clone());
        let r = self.inner.list(opts).await;
        self.metrics.observe_etcd("listWithCount", &prefix, t);
        r
    }

    async fn list_without_count(&self, opts: store::ListOptions) -> store::Result<store::ListResult> {
        let (t, prefix) = (Instant::now(), opts.prefix.clone());
        let r = self.inner.list_without_count(opts).await;
        self.metrics.observe_etcd("list", &prefix, t);
        r
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> store::Result<store::KeyValue> {
        let t = Instant::now();
        let r = self.inner.create(key, value, lease).await;
        self.metrics.observe_etcd("create", key, t);
        r
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
        lease: i64,
    ) -> store::Result<store::KeyValue> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected_mod_revision, lease).await;
        self.metrics.observe_etcd("update", key, t);
        r
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> store::Result<store::Deleted> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected_mod_revision).await;
        self.metrics.observe_etcd("delete", key, t);
        r
    }

    async fn watch_revisions(
        &self,
        prefix: &str,
        from_revision: i64,
        prev_kv: bool,
    ) -> store::Result<store::RevisionStream> {
        self.inner.watch_revisions(prefix, from_revision, prev_kv).await
    }

    async fn watch_progress(
        &self,
        prefix: &str,
        from_revision: i64,
        ask: std::sync::Arc<tokio::sync::Notify>,
    ) -> store::Result<Option<store::ProgressStream>> {
        self.inner.watch_progress(prefix, from_revision, ask).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> store::Result<store::WatchStream> {
        self.inner.watch(prefix, from_revision).await
    }

    async fn watch_latest(&self, prefix: &str, from_revision: i64) -> store::Result<store::WatchStream> {
        self.inner.watch_latest(prefix, from_revision).await
    }

    async fn current_revision(&self) -> store::Result<i64> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: i64) -> store::Result<()> {
        self.inner.compact(revision).await
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> store::Result<i64> {
        self.inner.grant_lease(ttl_seconds).await
    }

    async fn revoke_lease(&self, id: i64) -> store::Result<()> {
        self.inner.revoke_lease(id).await
    }

    async fn keep_alive(&self, id: i64) -> store::Result<i64> {
        self.inner.keep_alive(id).await
    }
}

/// The figures a test reads back: the value of one sample line (`name{labels} value`).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let have = rest.trim_end_matches('}');
        let all = labels.iter().all(|(k, v)| {
            let mut want = String::new();
            let _ = write!(want, "{k}=\"{v}\"");
            have.split(',').any(|p| p == want)
        });
        all.then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_types_are_group_resources() {
        assert_eq!(object_type("/registry/pods/default/a"), "pods");
        assert_eq!(object_type("/registry/deployments/default/a"), "deployments.apps");
        assert_eq!(object_type("/registry/services/specs/default/a"), "services");
        assert_eq!(object_type("/registry/pods/"), "pods");
    }

    #[test]
    fn counters_get_upstream_names_and_buckets() {
        let m = Metrics::default();
        let labels = RequestLabels {
            verb: "GET".into(),
            dry_run: String::new(),
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            subresource: String::new(),
            scope: "namespace".into(),
            component: "apiserver".into(),
        };
        m.record(&labels, 200, Duration::from_millis(30), Some(1500));
        let text = m.encode();
        assert_eq!(sample(&text, "apiserver_request_total", &[("verb", "GET"), ("code", "200")]), Some(1.0));
        assert_eq!(
            sample(
                &text,
                "apiserver_request_duration_seconds_bucket",
                &[("resource", "pods"), ("le", "0.025")]
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "apiserver_request_duration_seconds_bucket", &[("resource", "pods"), ("le", "0.05")]),
            Some(1.0)
        );
        assert_eq!(sample(&text, "apiserver_response_sizes_bucket", &[("le", "10000.0")]), Some(1.0));
        assert_eq!(
            sample(&text, "apiserver_current_inflight_requests", &[("request_kind", "mutating")]),
            Some(0.0)
        );
    }
}
