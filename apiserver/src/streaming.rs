//! `pods/exec`, `pods/attach` and `pods/portforward`: the API server's half of `kubectl exec`,
//! `attach`, `cp`, `run -i` and `port-forward`, as upstream serves these connect subresources.
//! The request (GET or POST with `Connection: Upgrade`, WebSocket or SPDY/3.1) is checked as
//! upstream's `streamLocation` checks it — the pod exists, the container is valid (or the pod's
//! only one), the pod has a node, an exec names a command — then forwarded to the pod's kubelet
//! (`/exec/{ns}/{pod}/{container}`, `/attach/…`, `/portForward/{ns}/{pod}`, the client's query
//! unchanged) with the client's upgrade headers. The kubelet's 101 goes back to the client with its
//! protocol headers and the two upgraded connections are spliced byte for byte; any other answer
//! is passed back as it is, as upstream's proxy does. The kubelet is found as for `pods/log`
//! (`podlog::kubelet_of`) and dialled only on a loopback address.
//!
//! Authorization happened before (auth middleware): these subresources need `create`, for GET
//! upgrades too (`rbac::Attributes::of_request`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult};
use crate::handlers::read;
use crate::podlog::{container_of, encode, kubelet_of};
use crate::route::ResourcePath;
use crate::AppState;

/// The connect subresources served here.
pub fn is_streaming(rp: &ResourcePath) -> bool {
    rp.res.group.is_empty()
        && rp.res.plural == "pods"
        && rp.name.is_some()
        && matches!(rp.subresource.as_deref(), Some("exec" | "attach" | "portforward"))
}

/// Headers passed to the kubelet and, from its 101, back to the client.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "x-stream-protocol-version",
];

pub async fn serve(st: &AppState, rp: ResourcePath, req: Request) -> Response {
    match connect(st, rp, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn connect(st: &AppState, rp: ResourcePath, mut req: Request) -> ApiResult<Response> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let name = rp.name.clone().unwrap_or_default();
    let sub = rp.subresource.clone().unwrap_or_default();
    let ns = rp.namespace.clone().unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_string();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if sub == "exec" && !pairs.iter().any(|(n, _)| n == "command") {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let (pod, _) = read(st, &rp, &name).await?;
    let path = match sub.as_str() {
        "portforward" => format!("/portForward/{}/{}", encode(&ns), encode(&name)),
        _ => {
            let container = container_of(&pod, &name, get("container"))?;
            format!("/{sub}/{}/{}/{}", encode(&ns), encode(&name), encode(&container))
        }
    };
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
    else {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    };
    if upgrade_kind(req.headers()).is_none() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let (ip, port) = kubelet_of(st, node_name).await?;
    let url = format!("http://{ip}:{port}{path}{}{query}", if query.is_empty() { "" } else { "?" });
    let addr: std::net::SocketAddr = match ip.parse::<std::net::IpAddr>() {
        Ok(a) if a.is_loopback() => std::net::SocketAddr::new(a, u16::try_from(port).unwrap_or(0)),
        _ => {
            return Err(ApiError::new(
                500,
                "",
                format!("error dialing backend: not dialled: kplane reaches kubelets only on loopback addresses, and node {node_name} reports InternalIP {ip}"),
            ))
        }
    };

    // The kubelet's side: a fresh connection, one request, upgraded.
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ApiError::new(500, "", format!("error dialing backend: dial tcp {addr}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ApiError::new(500, "", format!("error dialing backend: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet stream connection");
        }
    });
    let mut out =
        http::Request::builder().method(req.method().clone()).uri(&url).header("host", format!("{ip}:{port}"));
    for h in UPGRADE_HEADERS {
        for v in req.headers().get_all(*h) {
            out = out.header(*h, v.clone());
        }
    }
    let out = out
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(format!("bad kubelet URL {url}: {e}")))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| ApiError::new(500, "", format!("error dialing backend: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // As upstream's upgrade-aware proxy: the kubelet's refusal goes to the client as it is
        // (kubectl shows it as `unable to upgrade connection: <body>`), at most 64 KiB of it.
        let status = resp.status();
        let content_type = resp.headers().get("content-type").cloned();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut back = Response::new(Body::from(body.slice(..body.len().min(64 << 10))));
        *back.status_mut() = status;
        if let Some(ct) = content_type {
            back.headers_mut().insert("content-type", ct);
        }
        return Ok(back);
    }
    let mut back = Response::new(Body::empty());
    *back.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in UPGRADE_HEADERS {
        for v in resp.headers().get_all(*h) {
            back.headers_mut().append(*h, v.clone());
        }
    }
    let kubelet_side = hyper::upgrade::on(&mut resp);
    let client_side = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (k, c) = match tokio::try_join!(kubelet_side, client_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "stream upgrade failed");
                return;
            }
        };
        let (mut k, mut c) = (TokioIo::new(k), TokioIo::new(c));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut k).await {
            tracing::debug!(error = %e, "stream ended");
        }
    });
    Ok(back)
}

fn upgrade_kind(h: &HeaderMap) -> Option<&str> {
    let connection_upgrade = h
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if !connection_upgrade {
        return None;
    }
    h.get("upgrade").and_then(|v| v.to_str().ok())
}
