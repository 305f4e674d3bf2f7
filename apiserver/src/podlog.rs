//! `pods/log`: the API server's half of `kubectl logs`, as upstream does it — pick and check the
//! container, find the pod's node, read its InternalIP and `status.daemonEndpoints.kubeletEndpoint`,
//! and stream the kubelet's `/containerLogs/{ns}/{pod}/{container}` response back as text/plain.
//! The kubelet speaks plain HTTP on loopback (kplane's simulated nodes), so there is no TLS here,
//! and only loopback addresses are dialled: a Node naming any other address gets the error upstream
//! gives for a kubelet it cannot reach, and no traffic leaves the machine.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::handlers::read;
use crate::params::Params;
use crate::route::ResourcePath;
use crate::AppState;

/// The query parameters passed on to the kubelet (upstream's `PodLogOptions`).
const PASSED: &[&str] =
    &["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"];

fn client() -> &'static Client<HttpConnector, Empty<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Empty<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

pub async fn serve(st: &AppState, rp: &ResourcePath, name: &str, params: &Params) -> ApiResult<Response> {
    let (pod, _) = read(st, rp, name).await?;
    let container = container_of(&pod, name, params.get("container"))?;
    for k in ["tailLines", "sinceSeconds", "limitBytes"] {
        params.int(k)?;
    }
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
    else {
        // Not scheduled yet: upstream answers with an empty log.
        return Ok(text(StatusCode::OK, Body::empty()));
    };
    let (ip, port) = kubelet_of(st, node_name).await?;
    let ns = rp.namespace.as_deref().unwrap_or_default();
    let loopback = ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
    let mut query: Vec<String> =
        PASSED.iter().filter_map(|k| params.get(k).map(|v| format!("{k}={}", encode(v)))).collect();
    query.sort();
    let url = format!(
        "http://{ip}:{port}/containerLogs/{}/{}/{}{}{}",
        encode(ns),
        encode(name),
        encode(&container),
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    if !loopback {
        return Err(ApiError::new(
            500,
            "",
            format!("Get \"{url}\": dial tcp {ip}:{port}: not dialled: kplane reaches kubelets only on loopback addresses, and node {node_name} reports InternalIP {ip}"),
        ));
    }
    let uri: axum::http::Uri =
        url.parse().map_err(|e| ApiError::internal(format!("bad kubelet URL {url}: {e}")))?;
    let resp = client().get(uri).await.map_err(|e| {
        // Upstream's message for an unreachable kubelet, e.g. `Get "https://…": dial tcp …: connect:
        // connection refused`, with no reason.
        let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
        ApiError::new(500, "", format!("Get \"{url}\": {cause}"))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(text(StatusCode::OK, Body::new(resp.into_body())));
    }
    // Upstream's response checker: the kubelet's own words (first 1 KiB), with its status.
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let msg = String::from_utf8_lossy(&body[..body.len().min(1024)]).trim().to_string();
    Err(match status.as_u16() {
        400 => ApiError::bad_request(msg),
        404 => ApiError::new(404, "NotFound", msg),
        code => ApiError::new(code, "InternalError", msg),
    })
}

/// A GET of a kubelet URL (plain HTTP on loopback; the caller checked the address), its body as
/// text; an error for a failed dial, a non-2xx answer or `timeout` passing.
pub(crate) async fn get_text(url: &str, timeout: std::time::Duration) -> Result<String, String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("bad kubelet URL {url}: {e}"))?;
    let fetch = async {
        let resp = client().get(uri).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("Get \"{url}\": {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, fetch).await.map_err(|_| format!("Get \"{url}\": timed out"))?
}

/// A node's kubelet endpoint, as upstream's node connection info resolves it: the Node's InternalIP
/// and `status.daemonEndpoints.kubeletEndpoint.Port`. The caller decides whether it may dial it.
pub(crate) async fn kubelet_of(st: &AppState, node_name: &str) -> ApiResult<(String, u64)> {
    let nodes = api_types::resources::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not served"))?;
    let node_rp =
        ResourcePath { res: nodes, namespace: None, name: Some(node_name.to_string()), subresource: None };
    let (node, _) = read(st, &node_rp, node_name).await?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| {
            ApiError::internal(format!("no preferred addresses found; known addresses: [] (node {node_name})"))
        })?;
    let port =
        node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(0);
    if port == 0 {
        return Err(ApiError::internal(format!("node {node_name} reports no kubelet port")));
    }
    Ok((ip.to_string(), port))
}

/// The container the log is of: the named one (which must exist), else the only one.
pub(crate) fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let (init, regular, ephemeral) =
        (names("initContainers"), names("containers"), names("ephemeralContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if init.iter().chain(&regular).chain(&ephemeral).any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")))
            }
        }
        None if regular.len() == 1 => Ok(regular[0].clone()),
        None if regular.is_empty() => {
            Err(ApiError::bad_request(format!("a container name must be specified for pod {name}")))
        }
        None => {
            let all: Vec<String> = init.into_iter().chain(regular).chain(ephemeral).collect();
            Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            )))
        }
    }
}

fn text(code: StatusCode, body: Body) -> Response {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Percent-encodes everything but unreserved characters (names are DNS labels; values are numbers,
/// booleans and RFC 3339 times).
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
