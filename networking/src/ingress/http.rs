//! The HTTP data path: match the route, forward to one endpoint over a pooled keep-alive client,
//! stream bodies both ways.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Shared;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;
pub(crate) type UpstreamClient = Client<HttpConnector, Body>;

/// Hop-by-hop headers (RFC 9110 7.6.1) that a proxy must not forward.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

pub(crate) fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) async fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    routes: Shared,
    client: UpstreamClient,
) -> Result<Response<Body>, Infallible> {
    let host_header = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = host_without_port(&host_header);
    let routes = routes.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(backend) = routes.route(host, req.uri().path()).cloned() else {
        // The seed's default-http-backend.
        return Ok(text(StatusCode::NOT_FOUND, "default backend - 404".into()));
    };
    let Some(endpoint) = backend.pick() else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503 Service Unavailable: service {} has no ready endpoints\n", backend.service),
        ));
    };

    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let headers = req.headers_mut();
    // Also drop the headers named in Connection.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().copied().map(HeaderName::from_static).chain(named) {
        headers.remove(h);
    }
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-real-ip", HeaderValue::try_from(peer.ip().to_string()).expect("an IP is a valid header"));
    if let Ok(v) = HeaderValue::try_from(host_header.as_str()) {
        headers.insert("x-forwarded-host", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(if https { "https" } else { "http" }));

    // A request without a body can be replayed: on a connect failure it moves to the next
    // endpoint (ingress-nginx's `proxy_next_upstream error`), up to 3 tries. A request with a body
    // is streamed once and gets the 502.
    let replayable = req.body().is_end_stream();
    let tries = if replayable { backend.endpoints.len().min(3) } else { 1 };
    let (parts, body) = req.into_parts();
    let mut body = Some(body.boxed());
    let mut endpoint = endpoint;
    let mut attempt = 1;
    loop {
        let uri = match Uri::builder()
            .scheme("http")
            .authority(endpoint.to_string())
            .path_and_query(path.as_str())
            .build()
        {
            Ok(uri) => uri,
            Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("400 Bad Request: {e}\n"))),
        };
        let mut upstream = Request::new(body.take().unwrap_or_else(empty));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = parts.version;
        *upstream.headers_mut() = parts.headers.clone();
        match client.request(upstream).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                return Ok(Response::from_parts(parts, body.boxed()));
            }
            Err(e) if e.is_connect() && attempt < tries => {
                tracing::info!(service = %backend.service, %endpoint, error = %e, "upstream connect failed; trying the next endpoint");
                attempt += 1;
                endpoint = backend.pick().unwrap_or(endpoint);
            }
            Err(e) => {
                tracing::info!(service = %backend.service, %endpoint, error = %e, "upstream request failed");
                return Ok(text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "502 Bad Gateway: endpoint {endpoint} of service {} failed: {e}\n",
                        backend.service
                    ),
                ));
            }
        }
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never: Infallible| match never {}).boxed()
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn host_header_port_is_stripped() {
        assert_eq!(host_without_port("foobar.com:8080"), "foobar.com");
        assert_eq!(host_without_port("foobar.com"), "foobar.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }
}
