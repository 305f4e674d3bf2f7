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

/// Hop-by-hop headers (RFC 9110 7.6.1) that a proxy must not forward, lower case (both paths).
pub(super) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];
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

/// One request's plan, from its head (the upstream request head is written into the
/// connection's reused head buffer).
struct Plan {
    backend: Arc<Backend>,
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
    let mut bufs =
        Buffers { head: Vec::with_capacity(1024), out: Vec::with_capacity(1024), scratch: Vec::new() };
    let mut header_timer = Deadline::new();
    let mut read_timer = Deadline::new();
    loop {
        // hyper's header-read timeout: the whole wait for a head, closed without an answer. The
        // clock starts only when a read has to wait.
        let mut waiting = false;
        let (routed, head_len) = loop {
            if !buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        match plan(&req, &peer_ip, proto, routes, &mut bufs.head) {
                            Ok(routed) => break (routed, n),
                            Err(NotFast) => return Ended::Handoff(io, buf),
                        }
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_REQUEST_HEAD => {}
                    _ => return Ended::Handoff(io, buf),
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            if !waiting {
                waiting = true;
                header_timer.set(tokio::time::Instant::now() + timeouts.client_header);
            }
            match header_timer.bound(io.read_buf(&mut buf)).await {
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
        match exchange(&plan, &mut io, &mut buf, &mut pool, timeouts, &mut bufs, &mut read_timer).await {
            Ok(keep) if keep && !plan.close => {}
            _ => {
                let _ = io.shutdown().await;
                return Ended::Done;
            }
        }
    }
}

/// A connection's buffers, reused by each of its requests.
struct Buffers {
    /// The upstream request head.
    head: Vec<u8>,
    /// The response head for the client.
    out: Vec<u8>,
    /// A head and the body bytes at hand, joined for one write.
    scratch: Vec<u8>,
}

/// A deadline that is cheap to move: one tokio timer per connection, armed at the deadline it had
/// when it was last armed and re-armed only when it fires before the current one. Moving the
/// deadline on every request then costs a clock read, not a timer wheel insertion and removal
/// (the same lazy timer as the keep-alive watchdog's, [`crate::pipe::Clock::idle_for`]).
pub(crate) struct Deadline {
    at: tokio::time::Instant,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// A [`Deadline`] passed.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl Deadline {
    /// A deadline far away (set it before use).
    pub fn new() -> Deadline {
        let at = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        Deadline { at, sleep: Box::pin(tokio::time::sleep_until(at)) }
    }

    /// Moves the deadline to `at`.
    pub fn set(&mut self, at: tokio::time::Instant) {
        self.at = at;
        // A timer armed later than the new deadline would fire late: re-arm it now (rare: the
        // deadlines of one connection move forward).
        if self.sleep.deadline() > at {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Runs `f` until it completes or the deadline passes.
    pub async fn bound<F: std::future::Future>(&mut self, f: F) -> Result<F::Output, Elapsed> {
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                out = &mut f => return Ok(out),
                () = &mut self.sleep => {
                    if tokio::time::Instant::now() >= self.at {
                        return Err(Elapsed);
                    }
                    self.sleep.as_mut().reset(self.at);
                }
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
fn plan(
    req: &httparse::Request<'_, '_>,
    peer_ip: &str,
    proto: &str,
    routes: &Shared,
    head: &mut Vec<u8>,
) -> Result<Routed, NotFast> {
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(NotFast);
    };
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
    head.clear();
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if is_hop_by_hop(h.name)
            || is_named(&named, h.name)
            || SET_BY_US.iter().any(|s| h.name.eq_ignore_ascii_case(s))
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
    Ok(Routed::To(Plan { backend, body, close, head_method }))
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
    bufs: &mut Buffers,
    read_timer: &mut Deadline,
) -> Result<bool, ()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Head { mut up, framing, keep_upstream, close_after } =
        match send(plan, io, buf, pool, timeouts, bufs, read_timer).await {
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
    let result = h1::forward(framing, &mut up.stream, &mut up.buf, io, &bufs.out, &mut bufs.scratch).await;
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
    bufs: &mut Buffers,
    read_timer: &mut Deadline,
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
    let mut timer_set = false;
    let Buffers { head, out, scratch } = bufs;
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
        let sent = h1::forward(plan.body, io, buf, &mut up.stream, head, scratch).await;
        if !timer_set {
            timer_set = true;
            read_timer.set(tokio::time::Instant::now() + read_timeout);
        }
        let failure = match sent {
            Ok(()) => match read_timer.bound(read_some(&mut up)).await {
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
            Ok(httparse::Status::Complete(n)) if n > MAX_RESPONSE_HEAD => {
                return Err(bad_gateway(up.addr, &"response head too large"));
            }
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if up.buf.len() > MAX_RESPONSE_HEAD => {
                return Err(bad_gateway(up.addr, &"response head too large"));
            }
            Ok(httparse::Status::Partial) => match read_timer.bound(read_some(&mut up)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return Err(bad_gateway(up.addr, &e)),
                Err(_) => return Err(timed_out(up.addr)),
            },
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    #[test]
    fn host_header_port_is_stripped() {
        assert_eq!(host_without_port("foobar.com:8080"), "foobar.com");
        assert_eq!(host_without_port("foobar.com"), "foobar.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_bounds_a_wait_and_moves_either_way() {
        use tokio::time::{sleep, Instant};
        let never = std::future::pending::<()>;
        let start = Instant::now();
        let mut d = Deadline::new();
        d.set(start + Duration::from_secs(10));
        assert!(d.bound(never()).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(10), "ends at the deadline");
        // What completes first is returned.
        d.set(Instant::now() + Duration::from_secs(10));
        assert_eq!(
            d.bound(async {
                sleep(Duration::from_secs(3)).await;
                7
            })
            .await
            .unwrap(),
            7
        );
        // Moved later while armed earlier: the timer fires at the old time, and the wait goes on
        // to the new deadline.
        let t = Instant::now();
        d.set(t + Duration::from_secs(60));
        assert!(d.bound(never()).await.is_err());
        assert_eq!(t.elapsed(), Duration::from_secs(60));
        // Moved earlier than the armed timer: it ends at the earlier time.
        d.set(Instant::now() + Duration::from_secs(1000));
        let t = Instant::now();
        d.set(t + Duration::from_secs(2));
        assert!(d.bound(never()).await.is_err());
        assert_eq!(t.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn own_answers_frame_their_body() {
        let a = String::from_utf8(text(404, "Not Found", "default backend - 404", false, false)).unwrap();
        assert!(
            a.starts_with("HTTP/1.1 404 Not Found\r\n") && a.ends_with("\r\n\r\ndefault backend - 404"),
            "{a}"
        );
        assert!(a.contains("content-length: 21\r\n"));
        let h = String::from_utf8(text(404, "Not Found", "default backend - 404", true, true)).unwrap();
        assert!(h.ends_with("connection: close\r\n\r\n"), "a HEAD answer has no body: {h}");
    }

    /// A scripted pod on loopback: on each connection, every time the bytes received since its
    /// last answer contain `until`, it writes `answer` (then closes, with `close`). It keeps what
    /// it received and counts its connections.
    struct Pod {
        addr: SocketAddr,
        conns: Arc<AtomicUsize>,
        received: Arc<Mutex<Vec<u8>>>,
    }

    async fn pod(answer: &'static [u8], until: &'static [u8], close: bool) -> Pod {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (conns.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut b = [0u8; 65536];
                    loop {
                        let n = match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        r.lock().unwrap().extend_from_slice(&b[..n]);
                        pending.extend_from_slice(&b[..n]);
                        while let Some(at) = pending.windows(until.len()).position(|w| w == until) {
                            pending.drain(..at + until.len());
                            if s.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Pod { addr, conns, received }
    }

    fn routes_to(web: SocketAddr) -> Shared {
        let ingress: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t", "namespace": "default"},
            "spec": {"rules": [{"host": "t.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                {"path": "/none", "pathType": "Prefix", "backend": {"service": {"name": "none", "port": {"number": 80}}}}
            ]}}]}
        }))
        .unwrap();
        let routes = super::super::routes::Routes::for_fuzzing(&[ingress], |svc| match svc {
            "web" => vec![web],
            _ => Vec::new(),
        });
        Arc::new(std::sync::RwLock::new(Arc::new(routes)))
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            client_header: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
            proxy_read: Duration::from_millis(500),
            proxy_connect: Duration::from_secs(1),
        }
    }

    /// Sends `data` on one connection (then ends its side) and returns all the ingress answered
    /// before it closed the connection.
    async fn client(routes: &Shared, data: &[u8]) -> String {
        exchange_on(routes, data, true).await
    }

    /// [`client`], for what hyper serves: hyper drops a connection whose client ends its side
    /// (no half-close), so the client leaves it open and waits for the ingress to close it.
    async fn hyper_client(routes: &Shared, data: &[u8]) -> String {
        exchange_on(routes, data, false).await
    }

    async fn exchange_on(routes: &Shared, data: &[u8], half_close: bool) -> String {
        let (mut c, server) = tokio::io::duplex(1 << 20);
        let peer = SocketAddr::from(([192, 0, 2, 7], 40000));
        let conn =
            tokio::spawn(super::super::http::serve_connection(server, peer, false, routes.clone(), timeouts()));
        c.write_all(data).await.unwrap();
        if half_close {
            c.shutdown().await.unwrap();
        }
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap().unwrap();
        let _ = conn.await;
        // Long answers shortened, for readable failures.
        let mut text = String::from_utf8_lossy(&got).into_owned();
        if text.len() > 2000 {
            let cut = (1000..).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            text.replace_range(cut..text.len() - 200, "...");
        }
        text
    }

    const GET: &[u8] = b"GET /a?q=1 HTTP/1.1\r\nHost: t.test\r\n\r\n";

    #[tokio::test]
    async fn chunked_responses_pass_through_on_one_kept_alive_upstream_connection() {
        let p = pod(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"\r\n\r\n",
            false,
        )
        .await;
        let routes = routes_to(p.addr);
        let got = client(&routes, &[GET, GET, GET].concat()).await;
        assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{got}");
        assert_eq!(
            got.matches("Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n").count(),
            3,
            "{got}"
        );
        assert_eq!(p.conns.load(Ordering::SeqCst), 1, "one upstream connection for the three requests");
        // A second client connection to the same pod gets a connection of its own.
        client(&routes, GET).await;
        assert_eq!(p.conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn headers_are_rewritten_both_ways() {
        let p = pod(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nok",
            b"\r\n\r\n",
            false,
        )
        .await;
        let routes = routes_to(p.addr);
        let req = b"GET /p HTTP/1.1\r\nHost: t.test:8080\r\nConnection: x-drop\r\nX-Drop: 1\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\nX-Other: kept\r\n\r\n";
        let got = client(&routes, req).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("\r\n\r\nok"), "{got}");
        assert!(
            got.contains("X-Kept: yes") && !got.contains("X-Secret") && !got.contains("Keep-Alive"),
            "{got}"
        );
        assert!(!got.to_ascii_lowercase().contains("connection:"), "{got}");
        let sent = String::from_utf8(p.received.lock().unwrap().clone()).unwrap();
        assert!(sent.starts_with("GET /p HTTP/1.1\r\nHost: t.test:8080\r\n"), "{sent}");
        assert!(sent.contains("X-Other: kept\r\n"), "{sent}");
        for gone in ["X-Drop", "TE:", "Connection", "6.6.6.6"] {
            assert!(!sent.contains(gone), "{gone}: {sent}");
        }
        assert!(sent.contains("x-forwarded-for: 1.2.3.4, 192.0.2.7\r\n"), "{sent}");
        assert!(sent.contains("x-real-ip: 192.0.2.7\r\n"), "{sent}");
        assert!(sent.contains("x-forwarded-host: t.test:8080\r\n"), "{sent}");
        assert!(sent.contains("x-forwarded-proto: http\r\n"), "{sent}");
    }

    #[tokio::test]
    async fn request_bodies_are_forwarded_as_they_came() {
        let p = pod(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", b"0\r\n\r\n", false).await;
        let routes = routes_to(p.addr);
        let req =
            b"POST /up HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let got = client(&routes, req).await;
        assert!(got.starts_with("HTTP/1.1 201 Created\r\n"), "{got}");
        let sent = String::from_utf8(p.received.lock().unwrap().clone()).unwrap();
        assert!(
            sent.contains("Transfer-Encoding: chunked\r\n") && sent.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            "{sent}"
        );

        let p = pod(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"body!", false).await;
        let routes = routes_to(p.addr);
        let got = client(&routes, b"PUT /x HTTP/1.1\r\nHost: t.test\r\nContent-Length: 5\r\n\r\nbody!").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(String::from_utf8_lossy(&p.received.lock().unwrap()).ends_with("\r\n\r\nbody!"));
    }

    #[tokio::test]
    async fn an_upstream_closing_inside_a_body_closes_the_client_connection() {
        let p = pod(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", b"\r\n\r\n", true).await;
        let routes = routes_to(p.addr);
        // The second request is never answered: the client sees the truncation as a close.
        let got = client(&routes, &[GET, GET].concat()).await;
        assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
    }

    #[tokio::test]
    async fn bad_upstream_responses_are_502() {
        for (answer, why) in [
            (&b""[..], "connection closed before responding"),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed inside the response head"),
            (b"HTTP/1.1 abc\r\n\r\n", "malformed response head"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
                "both Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                "duplicate Content-Length",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", "invalid Content-Length"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 Switching Protocols"),
        ] {
            let p = pod(answer, b"\r\n\r\n", true).await;
            let routes = routes_to(p.addr);
            let got = client(&routes, &[GET, GET].concat()).await;
            assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{why}: {got}");
            assert!(got.contains(why) && got.contains("default/web"), "{why}: {got}");
            assert_eq!(got.matches("HTTP/1.1 502").count(), 2, "the client connection is kept: {got}");
        }
        // A head larger than the limit.
        let big: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_RESPONSE_HEAD))
                .into_bytes()
                .into_boxed_slice(),
        );
        let p = pod(big, b"\r\n\r\n", false).await;
        let got = client(&routes_to(p.addr), GET).await;
        assert!(got.starts_with("HTTP/1.1 502") && got.contains("response head too large"), "{got}");
        // Silence: 504 after the proxy read timeout.
        let p = pod(b"", b"never", false).await;
        let got = client(&routes_to(p.addr), GET).await;
        assert!(
            got.starts_with("HTTP/1.1 504 Gateway Timeout") && got.contains("did not answer within"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn own_answers_and_what_goes_to_hyper() {
        let p = pod(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"\r\n\r\n", false).await;
        let routes = routes_to(p.addr);
        let got = client(
            &routes,
            b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\nHEAD / HTTP/1.1\r\nHost: other.test\r\n\r\n",
        )
        .await;
        assert_eq!(got.matches("HTTP/1.1 404 Not Found").count(), 2, "{got}");
        assert_eq!(got.matches("default backend - 404").count(), 1, "HEAD gets no body: {got}");
        let got = client(&routes, b"GET /none HTTP/1.1\r\nHost: t.test\r\n\r\n").await;
        assert!(
            got.starts_with("HTTP/1.1 503") && got.contains("default/none has no ready endpoints"),
            "{got}"
        );
        // HTTP/1.0 and a head over the fast path's limit go through hyper, still proxied.
        let got = hyper_client(&routes, b"GET / HTTP/1.0\r\nHost: t.test\r\n\r\n").await;
        assert!(got.contains(" 200 OK\r\n") && got.ends_with("ok"), "{got}");
        let long = format!(
            "GET / HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\nX-Long: {}\r\n\r\n",
            "b".repeat(MAX_REQUEST_HEAD)
        );
        let got = hyper_client(&routes, &[GET, long.as_bytes()].concat()).await;
        assert_eq!(got.matches(" 200 OK\r\n").count(), 2, "{got}");
        // A head larger than hyper's buffer: hyper's 431.
        let huge = format!("GET / HTTP/1.1\r\nHost: t.test\r\nX-Huge: {}\r\n\r\n", "c".repeat(600 * 1024));
        let got = hyper_client(&routes, huge.as_bytes()).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        // Garbage: hyper's 400.
        let got = hyper_client(&routes, b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    }
}
