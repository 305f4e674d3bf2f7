//! Sends a real HTTP request along a traced route: first to the listener that takes it (the
//! ingress controller, a ClusterIP or a NodePort), then straight to each ready pod, and times each
//! one. The difference between the two is what the hop in between costs. kplane's simulated pods
//! name themselves in an `X-Pod-Name` header, which tells which pod answered.
//!
//! Only loopback addresses are probed: kplane's addresses are all loopback by default, and a probe
//! must never send traffic anywhere else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::route::Route;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How much of a response is read (the status line and headers are what matter).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    pub hops: Vec<HopResult>,
    /// The pod that answered through the route's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HopResult {
    /// What was asked: `ingress controller`, `service proxy (ClusterIP)`, `pod <name>`.
    pub hop: String,
    pub address: String,
    /// The HTTP status, when a response came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request to full response, in milliseconds.
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Probes `route`: its entry, then each ready pod directly.
pub async fn probe(route: &Route) -> ProbeReport {
    let mut hops = Vec::new();
    let host = route.host.clone();
    if let Some(entry) = &route.entry {
        match &entry.address {
            Some(addr) => hops.push(get(&entry.listener, addr, host.as_deref(), &route.path).await),
            None => hops.push(HopResult {
                hop: entry.listener.clone(),
                address: "-".into(),
                status: None,
                latency_ms: 0.0,
                pod: None,
                error: Some("no address to send to".into()),
            }),
        }
    }
    let answered_by = hops.first().and_then(|h| h.pod.clone());
    if let Some(svc) = &route.service {
        let tcp = svc.ports.first().is_none_or(|p| p.protocol == "TCP");
        for pod in svc.pods.iter().filter(|p| p.ready) {
            let (Some(ip), Some(port)) = (&pod.ip, pod.port) else { continue };
            let label = format!("pod {}", pod.object.name);
            let addr = format!("{ip}:{port}");
            if !tcp {
                hops.push(HopResult {
                    hop: label,
                    address: addr,
                    status: None,
                    latency_ms: 0.0,
                    pod: None,
                    error: Some("not probed: only TCP ports are probed over HTTP".into()),
                });
                continue;
            }
            hops.push(get(&label, &addr, host.as_deref(), &route.path).await);
        }
    }
    ProbeReport { hops, answered_by }
}

async fn get(hop: &str, address: &str, host: Option<&str>, path: &str) -> HopResult {
    let start = Instant::now();
    let result = match address.parse::<SocketAddr>() {
        Err(_) => Err(format!("{address} is not an ip:port")),
        Ok(sa) if !sa.ip().is_loopback() => {
            Err(format!("not probed: {} is not a loopback address, and X-ray probes only loopback", sa.ip()))
        }
        Ok(sa) => {
            let host = host.unwrap_or(address);
            tokio::time::timeout(TIMEOUT, request(sa, host, path))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
        }
    };
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (status, pod, error) = match result {
        Ok((status, pod)) => (Some(status), pod, None),
        Err(e) => (None, None, Some(e)),
    };
    HopResult { hop: hop.to_string(), address: address.to_string(), status, latency_ms, pod, error }
}

/// One `GET` over a fresh connection; the status code and the `X-Pod-Name` header.
async fn request(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, Option<String>), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kplane-xray/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("receive: {e}"))?;
        if n == 0 || buf.len() >= MAX_RESPONSE {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<(u16, Option<String>), String> {
    let text = String::from_utf8_lossy(buf);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let status_line = lines.next().filter(|l| !l.is_empty()).ok_or("the connection closed with no response")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    let pod = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("x-pod-name").then(|| v.trim().to_string())
    });
    Ok((status, pod))
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn responses_give_status_and_pod() {
        let r = b"HTTP/1.1 200 OK\r\nx-pod-name: web-1\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_response(r).unwrap(), (200, Some("web-1".into())));
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap(), (404, None));
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(&[0xff, 0xfe, 0x00]).is_err());
    }
}
