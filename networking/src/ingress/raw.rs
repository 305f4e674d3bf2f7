//! The fast path of the HTTP data plane: a plain HTTP/1.1 reverse proxy over `httparse` on both
//! sides, with no per-request task, channel, header map or re-encoding.
//!
//! For each request on a downstream connection: parse its head; route it; write the upstream
//! request head (hop-by-hop headers and those `Connection` names dropped, `X-Forwarded-*` and
//! `X-Real-IP` set) over a kept-alive connection to the endpoint, with the request body as it came
//! (`Content-Length` or chunked); parse the upstream's response head; write it back (hop-by-hop
//! headers dropped) with the body as it comes. Upstream connections are this downstream
//! connection's own (as in [`super::http`]), at most [`MAX_IDLE`] kept.
//!
//! Anything else is handed, with the bytes already read, to the hyper path
//! ([`super::http::serve_hyper`]) for the rest of the connection: HTTP/1.0, an `Upgrade` or
//! `Expect` request, an absolute-form or `*` target, a head that `httparse` refuses or that is
//! longer than [`MAX_REQUEST_HEAD`] (hyper answers 400 or 431 as before), duplicate `Host` or
//! framing headers, a `Transfer-Encoding` other than `chunked`, no `Host`, HTTP/2's preface.
//!
//! Upstream faults: a refused or timed-out connect tries the next endpoint for a request without
//! a body (up to 3 tries), then 502; no response head within the proxy read timeout is 504; a
//! response head that is malformed, too large (over [`MAX_RESPONSE_HEAD`]), with both or
//! conflicting framing headers, or an unasked `101`, is 502; a connection closed before the head
//! is 502 (or, on a kept-alive connection the endpoint had closed while idle, the request is sent
//! again on a new one when it has no body). An upstream that closes inside a body whose head was
//! already forwarded makes the ingress close the client's connection, so the client sees the
//! truncation (as nginx does).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::h1::{self, Framing, Side, READ_CHUNK};
use super::routes::Backend;
use super::{Shared, Timeouts};

/// Idle upstream connections kept per downstream connection.
const MAX_IDLE: usize = 8;
/// A request head longer than this goes to the hyper path.
pub(crate) const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// An upstream response head longer than this is a 502.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Header fields per head: more go to the hyper path (requests) or are a 502 (responses).
const MAX_HEADERS: usize = 100;

/// Hop-by-hop headers (RFC 9110 7.6.1) that a proxy must not forward, lower case.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"];
/// Request headers the ingress sets itself.
const SET_BY_US: [&str; 4] = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"];

/// How serving a connection on the fast path ended.
pub(crate) enum Ended<I> {
    /// The connection is closed (or must be).
    Done,
    /// A request the fast path does not serve: the connection and the bytes read from it, for the
    /// hyper path.
    Handoff(I, BytesMut),
}

/// A kept-alive connection to an endpoint, with what was read from it and not used yet.
struct Upstream {
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
}

/// One request's plan, from its head.
struct Plan {
    backend: Arc<Backend>,
    /// The request head for the upstream.
    head: Vec<u8>,
    body: Framing,
    /// The client asked to close after this request.
    close: bool,
    /// A HEAD request (its response has no body whatever its headers say).
    head_method: bool,
}

/// The request is not one for the fast path.
struct NotFast;

/// Where the request goes, or the ingress's own answer.
enum Routed {
    To(Plan),
    Answer { status: u16, reason: &'static str, body: String, has_body: bool, head_method: bool, close: bool },
}

/// Serves `io` on the fast path until it closes, or until a request it does not serve.
pub(crate) async fn serve<I>(
    mut io: I,
    peer: SocketAddr,
    https: bool,
    routes: &Shared,
    timeouts: &Timeouts,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let peer_ip = peer.ip().to_string();
    let proto = if https { "https" } else { "http" };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut pool: Vec<Upstream> = Vec::new();
    let mut out = Vec::with_capacity(1024);
    let mut scratch = Vec::new();
    loop {
        // hyper's header-read timeout: the whole wait for a head, closed without an answer. The
        // timer starts only when a read has to wait.
        let mut deadline = None;
        let (routed, head_len) = loop {
            if !buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => match plan(&req, &peer_ip, proto, routes) {
                        Ok(routed) => break (routed, n),
                        Err(NotFast) => return Ended::Handoff(io, buf),
                    },
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_REQUEST_HEAD => {}
                    _ => return Ended::Handoff(io, buf),
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            let deadline =
                *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeouts.client_header);
            match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
                Err(_) | Ok(Err(_)) => return Ended::Done,
                Ok(Ok(0)) if buf.is_empty() => return Ended::Done,
                // A partial head, then the end: hyper says what it says to that.
                Ok(Ok(0)) => return Ended::Handoff(io, buf),
                Ok(Ok(_)) => {}
            }
        };
        buf.advance(head_len);
        let plan = match routed {
            Routed::To(plan) => plan,
            Routed::Answer { status, reason, body, has_body, head_method, close } => {
                // A request body not read is not skipped: the connection closes after the answer.
                let close = close || has_body;
                let answer = text(status, reason, &body, head_method, close);
                if io.write_all(&answer).await.is_err() || io.flush().await.is_err() || close {
                    let _ = io.shutdown().await;
                    return Ended::Done;
                }
                continue;
            }
        };
        match exchange(&plan, &mut io, &mut buf, &mut pool, timeouts, &mut out, &mut scratch).await {
            Ok(keep) if keep && !plan.close => {}
            _ => {
                let _ = io.shutdown().await;
                return Ended::Done;
            }
        }
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The names a `Connection` header lists (besides `close` and `keep-alive`), to be dropped.
fn named_by_connection<'h>(headers: &[httparse::Header<'h>]) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_named(named: &[&[u8]], name: &str) -> bool {
    named.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Decides what to do with a parsed request head.
fn plan(req: &httparse::Request<'_, '_>, peer_ip: &str, proto: &str, routes: &Shared) -> Result<Routed, NotFast> {
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else { return Err(NotFast) };
    if !target.starts_with('/') {
        return Err(NotFast);
    }
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut xff: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.replace(h.value).is_some() {
                return Err(NotFast);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if length.replace(h1::content_length(h.value).ok_or(NotFast)?).is_some() {
                return Err(NotFast);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(NotFast);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if h1::has_token(h.value, "upgrade") {
                return Err(NotFast);
            }
            close |= h1::has_token(h.value, "close");
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return Err(NotFast);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff.push(h.value);
        }
    }
    if chunked && length.is_some() {
        return Err(NotFast);
    }
    let host_value = std::str::from_utf8(host.ok_or(NotFast)?).map_err(|_| NotFast)?.trim();
    let body = if chunked {
        Framing::Chunked
    } else {
        match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    let head_method = method == "HEAD";
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let backend = {
        let routes = routes.read().unwrap_or_else(|e| e.into_inner());
        routes.route(host_without_port(host_value), path).cloned()
    };
    let has_body = body != Framing::Empty;
    let Some(backend) = backend else {
        // The seed's default-http-backend.
        return Ok(Routed::Answer {
            status: 404,
            reason: "Not Found",
            body: "default backend - 404".into(),
            has_body,
            head_method,
            close,
        });
    };
    if backend.endpoints.is_empty() {
        return Ok(Routed::Answer {
            status: 503,
            reason: "Service Unavailable",
            body: format!("503 Service Unavailable: service {} has no ready endpoints\n", backend.service),
            has_body,
            head_method,
            close,
        });
    }

    let named = named_by_connection(req.headers);
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if is_hop_by_hop(h.name) || is_named(&named, h.name) || SET_BY_US.iter().any(|s| h.name.eq_ignore_ascii_case(s))
        {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"x-forwarded-for: ");
    for prev in &xff {
        head.extend_from_slice(prev);
        head.extend_from_slice(b", ");
    }
    head.extend_from_slice(peer_ip.as_bytes());
    head.extend_from_slice(b"\r\nx-real-ip: ");
    head.extend_from_slice(peer_ip.as_bytes());
    if !host_value.is_empty() {
        head.extend_from_slice(b"\r\nx-forwarded-host: ");
        head.extend_from_slice(host_value.as_bytes());
    }
    head.extend_from_slice(b"\r\nx-forwarded-proto: ");
    head.extend_from_slice(proto.as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    Ok(Routed::To(Plan { backend, head, body, close, head_method }))
}

/// The ingress's own short answer.
fn text(status: u16, reason: &str, body: &str, head_method: bool, close: bool) -> Vec<u8> {
    let mut out = String::with_capacity(160 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    if !head_method {
        out.push_str(body);
    }
    out.into_bytes()
}

/// An idle connection to `addr`. With `probe`, one the endpoint has not closed meanwhile (a
/// request that cannot be sent again checks; one that can is sent again when it finds out).
fn take_idle(pool: &mut Vec<Upstream>, addr: SocketAddr, probe: bool) -> Option<Upstream> {
    while let Some(i) = pool.iter().rposition(|u| u.addr == addr) {
        let up = pool.swap_remove(i);
        if !probe {
            return Some(up);
        }
        let mut byte = [0u8; 1];
        // Nothing to read: still open. A close (0) or stray bytes: not usable.
        if matches!(up.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return Some(up);
        }
    }
    None
}

async fn dial(addr: SocketAddr, timeout: Duration) -> io::Result<Upstream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(Upstream { addr, stream, buf: BytesMut::with_capacity(READ_CHUNK) })
}

/// Why an exchange failed before the response head reached the client.
enum Failed {
    /// Answer this to the client (and whether the request body was left unread).
    Answer(Vec<u8>),
    /// The client's side failed: close.
    Client,
}

/// One request: sends it upstream, forwards the response. `Ok(true)`: the client connection
/// can serve another request.
async fn exchange<I>(
    plan: &Plan,
    io: &mut I,
    buf: &mut BytesMut,
    pool: &mut Vec<Upstream>,
    timeouts: &Timeouts,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<bool, ()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Head { mut up, framing, keep_upstream, close_after } = match send(plan, io, buf, pool, timeouts, out, scratch).await {
        Ok(got) => got,
        Err(Failed::Client) => return Err(()),
        Err(Failed::Answer(answer)) => {
            if io.write_all(&answer).await.is_err() || io.flush().await.is_err() {
                return Err(());
            }
            // The request body may be partly unread: only a request without one keeps the
            // connection.
            return Ok(plan.body == Framing::Empty);
        }
    };
    // `out` holds the response head; `up.buf` starts with the body.
    let result = h1::forward(framing, &mut up.stream, &mut up.buf, io, out, scratch).await;
    match result {
        Ok(()) => {
            if keep_upstream && up.buf.is_empty() {
                if pool.len() >= MAX_IDLE {
                    pool.remove(0);
                }
                pool.push(up);
            }
            Ok(!close_after)
        }
        Err(Side::Src(e)) => {
            tracing::info!(service = %plan.backend.service, endpoint = %up.addr, error = %e, "upstream failed inside a response body");
            Err(())
        }
        Err(Side::Dst(_)) => Err(()),
    }
}

/// A response head read, rewritten into `out` for the client.
struct Head {
    up: Upstream,
    framing: Framing,
    /// The upstream connection can serve another request once the body is read.
    keep_upstream: bool,
    /// The client's connection closes after this response.
    close_after: bool,
}

/// Sends the request (trying again as the module doc says) and reads the response head, which it
/// leaves in `out` for the client (1xx heads are forwarded as they come).
async fn send<I>(
    plan: &Plan,
    io: &mut I,
    buf: &mut BytesMut,
    pool: &mut Vec<Upstream>,
    timeouts: &Timeouts,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<Head, Failed>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let backend = &plan.backend;
    let service = &backend.service;
    let replayable = plan.body == Framing::Empty;
    let tries = if replayable { backend.endpoints.len().min(3) } else { 1 };
    let mut endpoint = backend.pick().ok_or(Failed::Client)?;
    let mut attempt = 1;
    let mut fresh = false;
    let read_timeout = timeouts.proxy_read;
    // The response head must be complete within the proxy read timeout after the request.
    let mut head_deadline = None;
    let mut deadline = || *head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + read_timeout);
    let bad_gateway = |endpoint: SocketAddr, error: &dyn std::fmt::Display| {
        let body = format!("502 Bad Gateway: endpoint {endpoint} of service {service} failed: {error}\n");
        Failed::Answer(text(502, "Bad Gateway", &body, plan.head_method, !replayable))
    };
    let timed_out = |endpoint: SocketAddr| {
        tracing::info!(%service, %endpoint, ?read_timeout, "upstream did not answer in time");
        let body = format!(
            "504 Gateway Timeout: endpoint {endpoint} of service {service} did not answer within {read_timeout:?}\n"
        );
        Failed::Answer(text(504, "Gateway Timeout", &body, plan.head_method, !replayable))
    };
    let mut up = loop {
        let idle = if fresh { None } else { take_idle(pool, endpoint, !replayable) };
        let reused = idle.is_some();
        let mut up = match idle {
            Some(up) => up,
            None => match dial(endpoint, timeouts.proxy_connect).await {
                Ok(up) => up,
                Err(e) if attempt >= tries => {
                    tracing::info!(%service, %endpoint, error = %e, "upstream connect failed");
                    return Err(bad_gateway(endpoint, &e));
                }
                Err(e) => {
                    tracing::info!(%service, %endpoint, error = %e, "upstream connect failed; trying the next endpoint");
                    attempt += 1;
                    endpoint = backend.pick().unwrap_or(endpoint);
                    continue;
                }
            },
        };
        let sent = h1::forward(plan.body, io, buf, &mut up.stream, &plan.head, scratch).await;
        let failure = match sent {
            Ok(()) => match tokio::time::timeout_at(deadline(), read_some(&mut up)).await {
                Err(_) => return Err(timed_out(endpoint)),
                Ok(Ok(())) => break up,
                Ok(Err(e)) => e,
            },
            Err(Side::Src(_)) => return Err(Failed::Client),
            Err(Side::Dst(e)) => e,
        };
        // A kept-alive connection the endpoint had closed: again on a new one, if nothing of the
        // request is lost.
        if reused && replayable && up.buf.is_empty() && failure.kind() != io::ErrorKind::InvalidData {
            fresh = true;
            continue;
        }
        tracing::info!(%service, %endpoint, error = %failure, "upstream request failed");
        return Err(bad_gateway(endpoint, &failure));
    };
    // The head, once complete in `up.buf`, is rewritten into `out`.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&up.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if up.buf.len() > MAX_RESPONSE_HEAD => {
                return Err(bad_gateway(up.addr, &"response head too large"));
            }
            Ok(httparse::Status::Partial) => {
                match tokio::time::timeout_at(deadline(), read_some(&mut up)).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => return Err(bad_gateway(up.addr, &e)),
                    Err(_) => return Err(timed_out(up.addr)),
                }
            }
            Err(e) => return Err(bad_gateway(up.addr, &format!("malformed response head: {e}"))),
        };
        let code = resp.code.unwrap_or(0);
        let informational = (100..200).contains(&code);
        if code == 101 {
            return Err(bad_gateway(up.addr, &"101 Switching Protocols to a request without Upgrade"));
        }
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut upstream_close = resp.version != Some(1);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = h1::content_length(h.value)
                    .ok_or_else(|| bad_gateway(up.addr, &"invalid Content-Length in the response"))?;
                if length.replace(n).is_some() {
                    return Err(bad_gateway(up.addr, &"duplicate Content-Length in the response"));
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if chunked.is_some() {
                    return Err(bad_gateway(up.addr, &"duplicate Transfer-Encoding in the response"));
                }
                chunked = Some(h1::ends_chunked(h.value));
            } else if h.name.eq_ignore_ascii_case("connection") {
                upstream_close |= h1::has_token(h.value, "close");
            }
        }
        if length.is_some() && chunked.is_some() {
            return Err(bad_gateway(up.addr, &"both Content-Length and Transfer-Encoding in the response"));
        }
        let framing = if informational || plan.head_method || code == 204 || code == 304 {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => Framing::Close,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::Close,
            }
        };
        let close_after = plan.close || framing == Framing::Close;
        let named = named_by_connection(resp.headers);
        out.clear();
        let _ = write!(Fmt(out), "HTTP/1.1 {code} {}\r\n", resp.reason.unwrap_or(""));
        for h in resp.headers.iter() {
            if is_hop_by_hop(h.name) || is_named(&named, h.name) {
                continue;
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        if close_after && !informational {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        up.buf.advance(n);
        if informational {
            // 102 Processing or 103 Early Hints: to the client, then the final head.
            if io.write_all(out).await.is_err() || io.flush().await.is_err() {
                return Err(Failed::Client);
            }
            continue;
        }
        let keep_upstream = !upstream_close && framing != Framing::Close;
        return Ok(Head { up, framing, keep_upstream, close_after });
    }
}

/// `fmt::Write` into a byte vector.
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Reads what the upstream sends next into `up.buf` (at least one byte).
async fn read_some(up: &mut Upstream) -> io::Result<()> {
    if up.buf.capacity() - up.buf.len() < 1024 {
        up.buf.reserve(READ_CHUNK);
    }
    if up.stream.read_buf(&mut up.buf).await? == 0 {
        let what = if up.buf.is_empty() { "before responding" } else { "inside the response head" };
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed {what}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_port_is_stripped() {
        assert_eq!(host_without_port("foobar.com:8080"), "foobar.com");
        assert_eq!(host_without_port("foobar.com"), "foobar.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }

    #[test]
    fn own_answers_frame_their_body() {
        let a = String::from_utf8(text(404, "Not Found", "default backend - 404", false, false)).unwrap();
        assert!(a.starts_with("HTTP/1.1 404 Not Found\r\n") && a.ends_with("\r\n\r\ndefault backend - 404"), "{a}");
        assert!(a.contains("content-length: 21\r\n"));
        let h = String::from_utf8(text(404, "Not Found", "default backend - 404", true, true)).unwrap();
        assert!(h.ends_with("connection: close\r\n\r\n"), "a HEAD answer has no body: {h}");
    }
}
