//! `/metrics` of a component run alone (`kplane controller-manager --metrics-bind-address ADDR`):
//! its workqueue metrics and its client's `rest_client_*` metrics, under the same names, labels and
//! buckets as `kplane up`'s one `/metrics` (where the API server's registry carries them).
//!
//! kube-controller-manager serves `/metrics` over HTTPS on `--bind-address`:`--secure-port` (10257),
//! with delegated authentication. kplane's standalone component serves it over plain HTTP, so only
//! on a loopback address, under the flag name kube-proxy and controller-runtime use for a plain
//! metrics listener; it is off unless given.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use apiserver::metrics::{RestDurationLabels, RestLabels, REST_CLIENT_BUCKETS};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

fn rest_client_histogram() -> Histogram {
    Histogram::new(REST_CLIENT_BUCKETS)
}

/// client-go's `rest_client_requests_total` and `rest_client_request_duration_seconds` for one
/// component's client (labels as in `kplane up`'s registry, `component` included).
#[derive(Clone, Debug)]
pub struct RestClientMetrics {
    requests: Family<RestLabels, Counter>,
    durations: Family<RestDurationLabels, Histogram, fn() -> Histogram>,
    component: String,
    host: String,
}

impl RestClientMetrics {
    /// The metrics of `component`'s requests to the API server at `host` (`host:port`).
    pub fn new(component: &str, host: &str) -> RestClientMetrics {
        RestClientMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(rest_client_histogram as fn() -> Histogram),
            component: component.to_string(),
            host: host.to_string(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host",
            self.requests.clone(),
        );
        r.register(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host",
            self.durations.clone(),
        );
    }

    fn observe(&self, method: &str, code: &str, started: Instant) {
        let labels = RestLabels {
            code: code.into(),
            method: method.into(),
            host: self.host.clone(),
            component: self.component.clone(),
        };
        self.requests.get_or_create(&labels).inc();
        let labels = RestDurationLabels {
            verb: method.into(),
            host: self.host.clone(),
            component: self.component.clone(),
        };
        self.durations.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }
}

/// A tower layer for kube's client stack that counts and times each request, to its response's
/// head (a watch is timed to its first byte, as client-go's round-tripper does).
#[derive(Clone, Debug)]
pub struct RestClientLayer(pub RestClientMetrics);

impl<S> tower::Layer<S> for RestClientLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed { inner, metrics: self.0.clone() }
    }
}

pub struct Timed<S> {
    inner: S,
    metrics: RestClientMetrics,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for Timed<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let (method, started, metrics) = (req.method().to_string(), Instant::now(), self.metrics.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await;
            let code = match &resp {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            metrics.observe(&method, &code, started);
            resp
        })
    }
}

/// Binds `addr` (loopback only: the listener has no authentication) for [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        bail!("--metrics-bind-address {addr} is not a loopback address; /metrics is served over plain HTTP, so only on loopback");
    }
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for /metrics"))
}

/// Serves `GET /metrics` (the registry, OpenMetrics text) and `GET /healthz` on `listener` until
/// `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut out = String::new();
                    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
                        tracing::warn!(error = %e, "encoding the metrics failed");
                    }
                    ([(http::header::CONTENT_TYPE, apiserver::metrics::CONTENT_TYPE)], out)
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, app).with_graceful_shutdown(stop).await.context("serving /metrics")
}
