//! The HTTP data path: match the route, forward to one endpoint over a keep-alive upstream
//! connection, stream bodies both ways.
//!
//! Each downstream connection owns its upstream connections ([`Upstreams`]) and drives them in its
//! own task ([`serve_connection`]), so a request and its response never hop between tasks or
//! worker threads: with many small requests, those hand-offs (and a shared pool's lock) cost more
//! than the proxying itself. A downstream connection keeps at most [`MAX_IDLE`] idle upstream
//! connections, one per endpoint it has used recently; they close with it.
//!
//! Slow peers are bounded by [`Timeouts`]: hyper's header-read timer (a slowloris client), a
//! watchdog on the connection's last byte (keep-alive), a deadline on the upstream's response head
//! (504), a connect timeout (502). An `Upgrade` request (WebSocket) goes over a connection of its
//! own; on the upstream's 101 both connections are taken over from hyper and their bytes copied
//! both ways until both close or nothing moves for the proxy read timeout.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{raw, Shared, Timeouts};
use crate::pipe::{self, Clock, Ended, Stamped};

/// What the ingress answers: the upstream's streamed body, or its own short text.
type Body = Either<Incoming, Full<Bytes>>;

/// Idle upstream connections kept per downstream connection.
const MAX_IDLE: usize = 8;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

type Driven = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The upstream connections of one downstream connection.
pub(crate) struct Upstreams {
    idle: Mutex<Vec<(SocketAddr, SendRequest<Incoming>)>>,
    /// Hands a new connection's I/O future to the downstream connection's task. Unbounded but
    /// bounded by design: one entry per upstream connection dialed for a request in flight on
    /// this downstream connection, and that task drains it as it serves those requests.
    drive: mpsc::UnboundedSender<Driven>,
    connect_timeout: Duration,
}

/// An upstream connection checked out for one request.
struct Checkout {
    send: SendRequest<Incoming>,
    /// It had served an earlier request (it may have been closed by the backend meanwhile).
    reused: bool,
}

impl Upstreams {
    /// An idle connection to `addr` (unless `fresh`), or a new one.
    async fn checkout(&self, addr: SocketAddr, fresh: bool) -> Result<Checkout, std::io::Error> {
        let idle = if fresh {
            None
        } else {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|(_, s)| !s.is_closed());
            idle.iter().position(|(a, _)| *a == addr).map(|i| idle.swap_remove(i).1)
        };
        if let Some(mut send) = idle {
            if send.ready().await.is_ok() {
                return Ok(Checkout { send, reused: true });
            }
        }
        self.connect(addr).await.map(|send| Checkout { send, reused: false })
    }

    async fn dial(&self, addr: SocketAddr) -> Result<TcpStream, std::io::Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A connection for one `Upgrade` request: never pooled, and driven on its own task, because
    /// once upgraded it outlives the downstream connection's HTTP handling.
    async fn connect_for_upgrade(&self, addr: SocketAddr) -> Result<Checkout, std::io::Error> {
        let stream = self.dial(addr).await?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Checkout { send, reused: false })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Incoming>, std::io::Error> {
        let stream = self.dial(addr).await?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        self.drive
            .send(Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
                }
            }))
            .map_err(|_| std::io::Error::other("the downstream connection has ended"))?;
        Ok(send)
    }

    fn checkin(&self, addr: SocketAddr, send: SendRequest<Incoming>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((addr, send));
    }
}

/// One downstream connection: who is on the other end, and its upstream connections.
struct Downstream {
    /// The peer's IP as a header value (X-Real-IP, X-Forwarded-For), built once.
    peer_ip: HeaderValue,
    /// X-Forwarded-Proto.
    proto: HeaderValue,
    routes: Shared,
    upstreams: Upstreams,
    timeouts: Timeouts,
}

/// Serves one downstream HTTP/1.1 connection until it closes (or times out): on the fast path
/// ([`super::raw`]) while its requests are plain ones, then on hyper's.
pub(crate) async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    https: bool,
    routes: Shared,
    timeouts: Timeouts,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Clock::new();
    let io = Stamped::new(io, clock.clone());
    let served = async {
        match raw::serve(io, peer, https, &routes, &timeouts).await {
            raw::Ended::Done => Ok(()),
            raw::Ended::Handoff(io, read) => {
                serve_hyper(Rewind { read: read.freeze(), io }, peer, https, routes.clone(), timeouts).await
            }
        }
    };
    tokio::select! {
        result = served => result,
        // Dropping the connection closes it (and its upstream connections).
        () = clock.idle_for(timeouts.keepalive) => {
            tracing::debug!(%peer, "idle connection closed");
            Ok(())
        }
    }
}

/// A connection with bytes already read from it put back in front.
struct Rewind<I> {
    read: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves a downstream connection with hyper (upgrades, `Expect`, HTTP/1.0, and what the fast
/// path leaves to hyper), driving its upstream connections in the same task.
async fn serve_hyper<I>(
    io: I,
    peer: SocketAddr,
    https: bool,
    routes: Shared,
    timeouts: Timeouts,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (drive, mut driven) = mpsc::unbounded_channel::<Driven>();
    let conn = Arc::new(Downstream {
        peer_ip: HeaderValue::try_from(peer.ip().to_string()).expect("an IP is a valid header"),
        proto: HeaderValue::from_static(if https { "https" } else { "http" }),
        routes,
        upstreams: Upstreams { idle: Mutex::new(Vec::new()), drive, connect_timeout: timeouts.proxy_connect },
        timeouts,
    });
    let io = TokioIo::new(io);
    let svc = service_fn(move |req| handle(req, conn.clone()));
    let mut server = pin!(http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_header)
        .keep_alive(true)
        .serve_connection(io, svc)
        .with_upgrades());
    let mut conns = FuturesUnordered::new();
    loop {
        tokio::select! {
            result = &mut server => return result,
            Some(conn) = driven.recv() => conns.push(conn),
            Some(()) = conns.next(), if !conns.is_empty() => {}
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(mut req: Request<Incoming>, conn: Arc<Downstream>) -> Result<Response<Body>, Infallible> {
    let upstreams = &conn.upstreams;
    let host_header = match req.headers().get(HOST) {
        Some(h) => h.clone(),
        None => match req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            Some(a) => a,
            None => HeaderValue::from_static(""),
        },
    };
    let host = host_without_port(host_header.to_str().unwrap_or(""));
    let backend = {
        let routes = conn.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.route(host, req.uri().path()).cloned()
    };
    let Some(backend) = backend else {
        // The seed's default-http-backend.
        return Ok(text(StatusCode::NOT_FOUND, "default backend - 404".into()));
    };
    let Some(mut endpoint) = backend.pick() else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503 Service Unavailable: service {} has no ready endpoints\n", backend.service),
        ));
    };

    // Origin-form: the upstream connection is already to the endpoint, and Host is kept.
    if req.uri().scheme().is_some() {
        let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
    }
    let upgrade = upgrade_of(req.headers());
    let is_upgrade = upgrade.is_some();
    strip_hop_by_hop(req.headers_mut());
    let client_upgrade = upgrade.map(|protocol| {
        keep_upgrade(req.headers_mut(), protocol);
        hyper::upgrade::on(&mut req)
    });
    let headers = req.headers_mut();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            HeaderValue::try_from(format!("{prev}, {}", conn.peer_ip.to_str().unwrap_or_default())).ok()
        }
        None => Some(conn.peer_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_REAL_IP, conn.peer_ip.clone());
    if !host_header.is_empty() {
        headers.insert(X_FORWARDED_HOST, host_header);
    }
    headers.insert(X_FORWARDED_PROTO, conn.proto.clone());

    // A request without a body can be replayed: on a connect failure it moves to the next
    // endpoint (ingress-nginx's `proxy_next_upstream error`), up to 3 tries. A request with a body
    // is streamed once and gets the 502.
    let replayable = req.body().is_end_stream();
    let tries = if replayable { backend.endpoints.len().min(3) } else { 1 };
    let read_timeout = conn.timeouts.proxy_read;
    let mut attempt = 1;
    let mut fresh = false;
    loop {
        let checkout = if is_upgrade {
            upstreams.connect_for_upgrade(endpoint).await
        } else {
            upstreams.checkout(endpoint, fresh).await
        };
        let failure = match checkout {
            Ok(mut up) => match tokio::time::timeout(read_timeout, up.send.try_send_request(req)).await {
                Err(_) => {
                    tracing::info!(service = %backend.service, %endpoint, ?read_timeout, "upstream did not answer in time");
                    return Ok(text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "504 Gateway Timeout: endpoint {endpoint} of service {} did not answer within {read_timeout:?}\n",
                            backend.service
                        ),
                    ));
                }
                Ok(Ok(mut resp)) => {
                    let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
                        (client_upgrade, resp.status())
                    else {
                        if !is_upgrade {
                            upstreams.checkin(endpoint, up.send);
                        }
                        let (mut parts, body) = resp.into_parts();
                        strip_hop_by_hop(&mut parts.headers);
                        return Ok(Response::from_parts(parts, Either::Left(body)));
                    };
                    let protocol = upgrade_of(resp.headers());
                    let upstream_upgrade = hyper::upgrade::on(&mut resp);
                    tokio::spawn(tunnel(client_upgrade, upstream_upgrade, read_timeout, endpoint));
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    if let Some(protocol) = protocol {
                        keep_upgrade(&mut parts.headers, protocol);
                    }
                    return Ok(Response::from_parts(parts, Either::Left(body)));
                }
                // Not sent: a kept-alive connection the backend had closed. Again on a new one.
                Ok(Err(mut e)) if up.reused && e.message().is_some() => {
                    req = e.take_message().expect("checked above");
                    fresh = true;
                    continue;
                }
                Ok(Err(e)) => {
                    let error = e.into_error();
                    tracing::info!(service = %backend.service, %endpoint, %error, "upstream request failed");
                    return Ok(bad_gateway(endpoint, &backend.service, &error));
                }
            },
            Err(e) => e.to_string(),
        };
        if attempt >= tries {
            tracing::info!(service = %backend.service, %endpoint, error = %failure, "upstream connect failed");
            return Ok(bad_gateway(endpoint, &backend.service, &failure));
        }
        tracing::info!(service = %backend.service, %endpoint, error = %failure, "upstream connect failed; trying the next endpoint");
        attempt += 1;
        endpoint = backend.pick().unwrap_or(endpoint);
    }
}

/// Copies the bytes of an upgraded request both ways once both sides have handed over their
/// connections; ends when both close or nothing moves for `idle`.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
    endpoint: SocketAddr,
) {
    let (client, upstream) = match futures::future::try_join(client, upstream).await {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(%endpoint, error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match pipe::copy_with_idle(&mut client, &mut upstream, idle).await {
        Ended::Closed => {}
        Ended::Idle => tracing::debug!(%endpoint, ?idle, "idle upgraded connection closed"),
        Ended::Failed(e) => tracing::debug!(%endpoint, error = %e, "upgraded connection ended with an error"),
    }
}

/// The `Upgrade` header of a request or response whose `Connection` names `upgrade`.
fn upgrade_of(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(http::header::UPGRADE).cloned()).flatten()
}

/// Puts back the two hop-by-hop headers an upgrade needs on its next hop.
fn keep_upgrade(headers: &mut http::HeaderMap, protocol: HeaderValue) {
    headers.insert(http::header::UPGRADE, protocol);
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
}

fn bad_gateway(endpoint: SocketAddr, service: &str, error: &dyn std::fmt::Display) -> Response<Body> {
    text(
        StatusCode::BAD_GATEWAY,
        format!("502 Bad Gateway: endpoint {endpoint} of service {service} failed: {error}\n"),
    )
}

/// Drops the hop-by-hop headers, and those that `Connection` names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    if headers.contains_key(http::header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::try_from(n.trim()).ok())
            .collect();
        for h in named {
            headers.remove(h);
        }
    }
    for h in super::raw::HOP_BY_HOP {
        headers.remove(h);
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The fuzz entry (`networking::fuzzing::ingress`): `data` is the bytes a client sends on one
/// plain-HTTP connection (request lines, headers, bodies, pipelined requests), served by
/// [`serve_connection`] over an in-memory stream, the client's side closed after the last byte.
/// The routes send `web.example.com` and `*.apps.example` to a local upstream that answers 200 (or
/// 101 to an upgrade request; or, to a request with an `X-Fuzz-Raw` header, the bytes that follow
/// its head as they are, so the input also chooses the upstream's response for the response
/// parser and body forwarding), `/none` to a service without endpoints (503), `/refused` to a
/// closed port (502) and everything else to the default backend (404).
pub(crate) fn fuzz_connection(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct World {
        rt: tokio::runtime::Runtime,
        routes: Shared,
    }
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    let world = WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let upstream = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
            let addr = listener.local_addr().expect("its address");
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        let upgrade = lower.contains("\nupgrade:");
                        let raw = lower.contains("\nx-fuzz-raw:");
                        let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |i| i + 4);
                        let answer: &[u8] = if raw {
                            &head[end..]
                        } else if upgrade {
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: fuzz\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-drop\r\nX-Drop: 1\r\n\r\nok"
                        };
                        let _ = s.write_all(answer).await;
                        let _ = s.shutdown().await;
                    });
                }
            });
            addr
        });
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            l.local_addr().expect("its address")
        };
        let ingress: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "fuzz", "namespace": "default"},
            "spec": {"rules": [
                {"host": "web.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "/none", "pathType": "Prefix", "backend": {"service": {"name": "none", "port": {"number": 80}}}},
                    {"path": "/refused", "pathType": "Exact", "backend": {"service": {"name": "refused", "port": {"number": 80}}}}
                ]}},
                {"host": "*.apps.example", "http": {"paths": [
                    {"path": "/api/", "pathType": "ImplementationSpecific", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
                ]}}
            ]}
        }))
        .expect("a valid Ingress");
        let routes = super::routes::Routes::for_fuzzing(&[ingress], |svc| match svc {
            "web" => vec![upstream],
            "refused" => vec![closed],
            _ => Vec::new(),
        });
        World { rt, routes: Arc::new(std::sync::RwLock::new(Arc::new(routes))) }
    });
    let timeouts = super::Timeouts {
        client_header: Duration::from_secs(1),
        keepalive: Duration::from_secs(1),
        proxy_read: Duration::from_secs(1),
        proxy_connect: Duration::from_secs(1),
    };
    world.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([192, 0, 2, 7], 40000));
        let conn = tokio::spawn(serve_connection(server, peer, false, world.routes.clone(), timeouts));
        let exchange = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), exchange).await;
        drop(client);
        // A panic in the connection's task (the replay test has no panic hook that aborts).
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(3), conn).await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    /// A short deterministic fuzz pass (cargo-fuzz needs its own sanitizer build): every stored
    /// seed of the `ingress` target, and byte-level mutations of them (flips, cuts, splices, the
    /// framing tokens the parsers look for), through the fuzz entry; none may panic.
    #[test]
    fn mutated_corpus_inputs_never_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ingress");
        let mut seeds: Vec<Vec<u8>> =
            std::fs::read_dir(&dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
        seeds.sort();
        assert!(seeds.len() >= 9, "the seeds are in {}", dir.display());
        let tokens: [&[u8]; 8] = [
            b"\r\n",
            b"\r\n\r\n",
            b"0\r\n\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Content-Length: 9\r\n",
            b"Connection: close, x\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"ffffffffffffffff\r\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in &seeds {
            super::fuzz_connection(seed);
        }
        for _ in 0..150 {
            let mut data = seeds[(next() as usize) % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (data.len() + 1);
                match next() % 4 {
                    0 if at < data.len() => data[at] ^= 1 << (next() % 8),
                    1 => data.truncate(at),
                    2 => {
                        let t = tokens[(next() as usize) % tokens.len()];
                        data.splice(at..at, t.iter().copied());
                    }
                    _ => {
                        let other = &seeds[(next() as usize) % seeds.len()];
                        let from = (next() as usize) % (other.len() + 1);
                        data.splice(at..at, other[from..].iter().copied());
                    }
                }
            }
            super::fuzz_connection(&data);
        }
    }

    #[test]
    fn host_header_port_is_stripped() {
        assert_eq!(host_without_port("foobar.com:8080"), "foobar.com");
        assert_eq!(host_without_port("foobar.com"), "foobar.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }
}
