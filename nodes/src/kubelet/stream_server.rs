//! The kubelet's streaming endpoints, as upstream's kubelet serves them (its CRI streaming server):
//! `/exec/{ns}/{pod}/{container}?command=..&stdin=..&stdout=..&stderr=..&tty=..`,
//! `/attach/{ns}/{pod}/{container}?...` and `/portForward/{ns}/{pod}`. The API server's `pods/exec`,
//! `pods/attach` and `pods/portforward` forward the client's upgrade request here and splice bytes.
//!
//! Wire protocols, chosen by the upgrade the client asks for:
//! - WebSocket (`Upgrade: websocket`), remote command subprotocols `v5.channel.k8s.io` (stdin close
//!   signal on channel 255), `v4.channel.k8s.io` (error channel 3 carries a metav1.Status with the
//!   exit code), `v3`/`v2`/`channel.k8s.io` (plain-text errors); channels 0 stdin, 1 stdout, 2
//!   stderr, 3 error, 4 resize (`{"Width":..,"Height":..}`). Port-forward over WebSocket:
//!   `v4.channel.k8s.io`/`portforward.k8s.io` with `?ports=`, a data and an error channel per port
//!   (2i, 2i+1), each opened by the port as two little-endian bytes; and `SPDY/3.1+portforward.k8s.io`,
//!   the SPDY session carried in binary messages (kubectl ≥ 1.31's default for port-forward).
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version`): remote command
//!   `v4.channel.k8s.io`..`channel.k8s.io` (streams by their `streamType` header: error, stdin, stdout,
//!   stderr, resize), kubectl before 1.30; port-forward `portforward.k8s.io` (error + data stream
//!   per connection, paired by `requestID`).
//!
//! Port-forward dials the pod's IP (`Runtime::pod_ip`) and only when it is a loopback address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::spdy;
use super::streams::{Runtime, Stdio, StreamError, TermSize};

/// Remote command subprotocols, newest first.
const RC_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// SPDY remote command versions (v5 is WebSocket-only upstream).
const RC_SPDY_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
const PF_PROTOCOL: &str = "portforward.k8s.io";
const PF_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const PF_WS_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "portforward.k8s.io"];
/// How long a SPDY client has to open the streams it announced.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
const PIPE: usize = 64 << 10;

/// The streaming routes, to be merged into the kubelet's router.
pub fn router(rt: Arc<dyn Runtime>) -> Router {
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", any(exec))
        .route("/attach/{namespace}/{pod}/{container}", any(attach))
        .route("/portForward/{namespace}/{pod}", any(port_forward))
        .with_state(rt)
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into()).into_response()
}

/// What a remote command asks for, from the query (upstream's `remotecommand.NewOptions`).
#[derive(Debug, Clone)]
struct Options {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Options {
    fn parse(query: Option<&str>) -> Result<Options, String> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
        let flag = |k: &str| pairs.iter().any(|(n, v)| n == k && matches!(v.as_str(), "1" | "true" | "True"));
        let command = pairs.iter().filter(|(n, _)| n == "command").map(|(_, v)| v.clone()).collect();
        let tty = flag("tty");
        let mut o = Options {
            command,
            stdin: flag("input") || flag("stdin"),
            stdout: flag("output") || flag("stdout"),
            stderr: flag("error") || flag("stderr"),
            tty,
        };
        if o.tty {
            // As upstream: a TTY merges stderr into stdout.
            o.stderr = false;
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Exec,
    Attach,
}

async fn exec(
    State(rt): State<Arc<dyn Runtime>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    remote_command(rt, Action::Exec, ns, pod, container, req).await
}

async fn attach(
    State(rt): State<Arc<dyn Runtime>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    remote_command(rt, Action::Attach, ns, pod, container, req).await
}

/// The upgrade the client asked for.
enum Upgrade {
    WebSocket { key: String, offered: Vec<String> },
    Spdy { offered: Vec<String> },
}

fn upgrade_of(headers: &HeaderMap) -> Option<Upgrade> {
    let up = headers.get(header::UPGRADE)?.to_str().ok()?.to_ascii_lowercase();
    let list = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if up == "websocket" {
        let key = headers.get("sec-websocket-key")?.to_str().ok()?.to_string();
        Some(Upgrade::WebSocket { key, offered: list("sec-websocket-protocol") })
    } else if up.starts_with("spdy/3.1") {
        Some(Upgrade::Spdy { offered: list("x-stream-protocol-version") })
    } else {
        None
    }
}

/// The first protocol the client offers that we speak (upstream's negotiation).
fn pick(offered: &[String], ours: &[&str]) -> Option<String> {
    offered.iter().find(|o| ours.contains(&o.as_str())).cloned()
}

fn switching(headers: &[(&'static str, String)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().append(*k, v);
        }
    }
    r
}

fn ws_switching(key: &str, protocol: &str) -> Response {
    switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-accept", derive_accept_key(key.as_bytes())),
        ("sec-websocket-protocol", protocol.into()),
    ])
}

fn spdy_switching(protocol: &str) -> Response {
    switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "SPDY/3.1".into()),
        ("x-stream-protocol-version", protocol.into()),
    ])
}

type Io = TokioIo<hyper::upgrade::Upgraded>;

/// Runs `f` on the upgraded connection once the 101 has been sent.
fn on_upgrade<F, Fut>(req: &mut Request, f: F)
where
    F: FnOnce(Io) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => f(TokioIo::new(up)).await,
            Err(e) => tracing::debug!(error = %e, "stream upgrade failed"),
        }
    });
}

async fn remote_command(
    rt: Arc<dyn Runtime>,
    action: Action,
    ns: String,
    pod: String,
    container: String,
    mut req: Request,
) -> Response {
    let opts = match Options::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    if action == Action::Exec && opts.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command");
    }
    enum Wire {
        WebSocket(String),
        Spdy(String),
    }
    let (wire, resp) = match upgrade_of(req.headers()) {
        Some(Upgrade::WebSocket { key, offered }) => {
            // A client naming no subprotocol gets the oldest (upstream's default).
            let protocol = if offered.is_empty() {
                Some("channel.k8s.io".to_string())
            } else {
                pick(&offered, RC_PROTOCOLS)
            };
            let Some(protocol) = protocol else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("subprotocol negotiation failed: none of {offered:?} is supported (want one of {RC_PROTOCOLS:?})"),
                );
            };
            let resp = ws_switching(&key, &protocol);
            (Wire::WebSocket(protocol), resp)
        }
        Some(Upgrade::Spdy { offered }) => {
            let Some(protocol) = pick(&offered, RC_SPDY_PROTOCOLS) else {
                return text(
                    StatusCode::FORBIDDEN,
                    format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {RC_SPDY_PROTOCOLS:?}"),
                );
            };
            let resp = spdy_switching(&protocol);
            (Wire::Spdy(protocol), resp)
        }
        None => return text(StatusCode::BAD_REQUEST, "Upgrade request required"),
    };
    // Start the call before switching protocols: a runtime that refuses at once (no such pod or
    // container, not running) gets upstream's plain HTTP error instead of a 101, as the real
    // kubelet answers before it upgrades. The process's output waits in the pipes meanwhile.
    let (stdio, ends) = pipes(&opts);
    let mut fut = match action {
        Action::Exec => rt.exec(&ns, &pod, &container, opts.command.clone(), stdio),
        Action::Attach => rt.attach(&ns, &pod, &container, stdio),
    };
    let result: BoxFuture<'static, Result<i32, StreamError>> = match futures::poll!(&mut fut) {
        Poll::Ready(Err(e)) => return refusal(&e),
        Poll::Ready(Ok(code)) => Box::pin(async move { Ok(code) }),
        Poll::Pending => fut,
    };
    let started = Started { ends, result, opts };
    match wire {
        Wire::WebSocket(protocol) => on_upgrade(&mut req, move |io| async move {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            ws_remote_command(ws, &protocol, started).await;
        }),
        Wire::Spdy(protocol) => on_upgrade(&mut req, move |io| async move {
            spdy_remote_command(spdy::serve(io), &protocol, started).await;
        }),
    }
    resp
}

/// Upstream's kubelet answers for a call it cannot start: an unknown pod is 404 "pod does not
/// exist"; a container that is not among the running ones is 500 `container not found ("c")`.
fn refusal(e: &StreamError) -> Response {
    match e {
        StreamError::PodNotFound(_) => text(StatusCode::NOT_FOUND, "pod does not exist"),
        StreamError::ContainerNotFound { container: c, .. } | StreamError::NotRunning(c) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("container not found (\"{c}\")"))
        }
        StreamError::Invalid(m) => text(StatusCode::BAD_REQUEST, m.clone()),
    }
}

/// An exec or attach whose process has started: our ends of its pipes and its outcome.
struct Started {
    ends: Ends,
    result: BoxFuture<'static, Result<i32, StreamError>>,
    opts: Options,
}

/// Our ends of the pipes given to the runtime.
struct Ends {
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
}

fn pipes(o: &Options) -> (Stdio, Ends) {
    let pair = |on: bool| if on { Some(tokio::io::duplex(PIPE)) } else { None };
    let (sin, sout, serr) = (pair(o.stdin), pair(o.stdout), pair(o.stderr));
    let (rtx, rrx) = if o.tty {
        let (t, r) = mpsc::channel(8);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let mut stdio = Stdio { stdin: None, stdout: None, stderr: None, tty: o.tty, resize: rrx };
    let mut ends = Ends { stdin: None, stdout: None, stderr: None, resize: rtx };
    if let Some((ours, theirs)) = sin {
        stdio.stdin = Some(Box::new(theirs));
        ends.stdin = Some(ours);
    }
    if let Some((ours, theirs)) = sout {
        stdio.stdout = Some(Box::new(theirs));
        ends.stdout = Some(ours);
    }
    if let Some((ours, theirs)) = serr {
        stdio.stderr = Some(Box::new(theirs));
        ends.stderr = Some(ours);
    }
    (stdio, ends)
}

/// The error channel's message for v4 and later: a metav1.Status (upstream's kubelet words).
fn status_json(result: &Result<i32, StreamError>, command: &[String]) -> Vec<u8> {
    let v = match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": e.to_string(),
            "reason": "InternalError",
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The error channel's message for v1–v3: only a failure's text (an exit code cannot be carried).
fn status_text(result: &Result<i32, StreamError>) -> Option<Vec<u8>> {
    match result {
        Ok(0) => None,
        Ok(code) => Some(format!("command terminated with non-zero exit code: exit code {code}").into_bytes()),
        Err(e) => Some(e.to_string().into_bytes()),
    }
}

/// Copies `from` into channel `ch` messages until EOF.
async fn pump_to_ws(mut from: DuplexStream, ch: u8, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match from.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf[0] = ch;
                if out.send(Message::Binary(Bytes::copy_from_slice(&buf[..=n]))).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn ws_remote_command(ws: WebSocketStream<Io>, protocol: &str, started: Started) {
    let v4 = matches!(protocol, "v4.channel.k8s.io" | "v5.channel.k8s.io");
    let v5 = protocol == "v5.channel.k8s.io";
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let Started { ends, result, opts } = started;
    let Ends { stdin, stdout, stderr, resize } = ends;
    let mut pumps = Vec::new();
    if let Some(s) = stdout {
        pumps.push(tokio::spawn(pump_to_ws(s, 1, out_tx.clone())));
    }
    if let Some(s) = stderr {
        pumps.push(tokio::spawn(pump_to_ws(s, 2, out_tx.clone())));
    }
    // The client's messages: stdin, resize, and (v5) the stdin close signal.
    let reader = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(Ok(m)) = source.next().await {
            let data = match m {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else { continue };
            match ch {
                0 => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(rest).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                4 => {
                    if let (Some(tx), Some(size)) = (resize.as_ref(), parse_size(rest)) {
                        let _ = tx.try_send(size);
                    }
                }
                255 if v5 && rest.first() == Some(&0) => stdin = None,
                _ => {}
            }
        }
    });
    let result = result.await;
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let status = if v4 { Some(status_json(&result, &opts.command)) } else { status_text(&result) };
    if let Some(status) = status {
        let mut m = vec![3u8];
        m.extend(status);
        let _ = out_tx.send(Message::Binary(m.into())).await;
    }
    let _ = out_tx.send(Message::Close(Some(CloseFrame { code: 1000.into(), reason: "".into() }))).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    reader.abort();
}

fn parse_size(b: &[u8]) -> Option<TermSize> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    serde_json::from_slice::<Size>(b).ok().map(|s| TermSize { width: s.width, height: s.height })
}

async fn spdy_remote_command(mut streams: mpsc::Receiver<spdy::Stream>, protocol: &str, started: Started) {
    let Started { ends, result, opts } = started;
    let o = &opts;
    // The streams the client must open: error always, the rest as asked (resize with a TTY from v3).
    let resize_wanted = o.tty && matches!(protocol, "v3.channel.k8s.io" | "v4.channel.k8s.io");
    let want =
        1 + usize::from(o.stdin) + usize::from(o.stdout) + usize::from(o.stderr) + usize::from(resize_wanted);
    let mut by_type: HashMap<String, spdy::Stream> = HashMap::new();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while by_type.len() < want {
        tokio::select! {
            s = streams.recv() => match s {
                Some(s) => {
                    let t = s.header("streamtype").unwrap_or_default().to_string();
                    by_type.insert(t, s);
                }
                None => return,
            },
            _ = &mut deadline => {
                tracing::debug!("timed out waiting for the client's streams");
                break;
            }
        }
    }
    let Some(error) = by_type.remove("error") else { return };
    let Ends { stdin, stdout, stderr, resize } = ends;
    let mut tasks = Vec::new();
    if let (Some(mut pipe), Some(mut s)) = (stdin, by_type.remove("stdin")) {
        tasks.push(tokio::spawn(async move {
            while let Some(b) = s.recv().await {
                if pipe.write_all(&b).await.is_err() {
                    break;
                }
            }
            // Dropping the pipe is stdin's EOF.
        }));
    }
    let mut pumps = Vec::new();
    for (pipe, name) in [(stdout, "stdout"), (stderr, "stderr")] {
        if let (Some(mut pipe), Some(s)) = (pipe, by_type.remove(name)) {
            let w = s.writer();
            pumps.push(tokio::spawn(async move {
                let _keep = s;
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if !w.send(&buf[..n]).await {
                                break;
                            }
                        }
                    }
                }
                w.close().await;
            }));
        }
    }
    if let (Some(tx), Some(mut s)) = (resize, by_type.remove("resize")) {
        tasks.push(tokio::spawn(async move {
            // A stream of JSON objects, one after another.
            let mut buf = Vec::new();
            while let Some(b) = s.recv().await {
                buf.extend_from_slice(&b);
                let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
                let mut used = 0;
                while let Some(Ok(v)) = de.next() {
                    used = de.byte_offset();
                    if let Some(size) = parse_size(v.to_string().as_bytes()) {
                        let _ = tx.try_send(size);
                    }
                }
                buf.drain(..used);
            }
        }));
    }
    let result = result.await;
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let ew = error.writer();
    let status = if protocol == "v4.channel.k8s.io" {
        Some(status_json(&result, &o.command))
    } else {
        status_text(&result)
    };
    if let Some(status) = status {
        ew.send(&status).await;
    }
    ew.close().await;
    for t in tasks {
        t.abort();
    }
}

async fn port_forward(
    State(rt): State<Arc<dyn Runtime>>,
    Path((ns, pod)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    let ip = match rt.pod_ip(&ns, &pod) {
        Ok(ip) => ip,
        Err(e @ StreamError::PodNotFound(_)) => return text(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if !ip.is_loopback() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("pod {ns}/{pod} has IP {ip}: kplane forwards only to loopback pod addresses"),
        );
    }
    let target = Target { ip, pod: format!("{ns}/{pod}") };
    match upgrade_of(req.headers()) {
        Some(Upgrade::WebSocket { key, offered }) => {
            if offered.iter().any(|p| p == PF_TUNNEL) {
                let resp = ws_switching(&key, PF_TUNNEL);
                on_upgrade(&mut req, move |io| async move {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    spdy_port_forward(spdy::serve(tunnel(ws)), target).await;
                });
                return resp;
            }
            let protocol = if offered.is_empty() {
                Some(PF_PROTOCOL.to_string())
            } else {
                pick(&offered, PF_WS_PROTOCOLS)
            };
            let Some(protocol) = protocol else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("subprotocol negotiation failed: none of {offered:?} is supported"),
                );
            };
            let ports = match ports_of(req.uri().query()) {
                Ok(p) => p,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            let resp = ws_switching(&key, &protocol);
            on_upgrade(&mut req, move |io| async move {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                ws_port_forward(ws, ports, target).await;
            });
            resp
        }
        Some(Upgrade::Spdy { offered }) => {
            if !offered.iter().any(|p| p == PF_PROTOCOL) {
                return text(
                    StatusCode::FORBIDDEN,
                    format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PF_PROTOCOL}\"]"),
                );
            }
            let resp = spdy_switching(PF_PROTOCOL);
            on_upgrade(&mut req, move |io| async move {
                spdy_port_forward(spdy::serve(io), target).await;
            });
            resp
        }
        None => text(StatusCode::BAD_REQUEST, "Upgrade request required"),
    }
}

#[derive(Clone)]
struct Target {
    ip: IpAddr,
    pod: String,
}

impl Target {
    async fn dial(&self, port: u16) -> Result<TcpStream, String> {
        TcpStream::connect(SocketAddr::new(self.ip, port)).await.map_err(|e| {
            format!(
                "error forwarding port {port} to pod {}, uid : failed to connect to {}:{port}: {e}",
                self.pod, self.ip
            )
        })
    }
}

/// Upstream's `ports` query parameter: one or more, comma-separated or repeated, each 1–65535.
fn ports_of(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("unable to parse \"{p}\" as a port: must be between 1 and 65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// A WebSocket whose binary messages carry a byte stream (client-go's tunneling connection), as
/// one end of an in-memory pipe.
fn tunnel(ws: WebSocketStream<Io>) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000.into(), reason: "".into() }))).await;
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    theirs
}

/// Port-forward over SPDY: each forwarded connection is an error stream and a data stream with the
/// same `requestID`; the data stream is spliced to `pod_ip:port`.
async fn spdy_port_forward(mut streams: mpsc::Receiver<spdy::Stream>, target: Target) {
    let mut pending: HashMap<String, (Option<spdy::Stream>, Option<spdy::Stream>)> = HashMap::new();
    while let Some(s) = streams.recv().await {
        let id = s.header("requestid").unwrap_or_default().to_string();
        let kind = s.header("streamtype").unwrap_or_default().to_string();
        let entry = pending.entry(id.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(s),
            "data" => entry.1 = Some(s),
            other => {
                tracing::debug!(stream_type = other, "unexpected port-forward stream");
                continue;
            }
        }
        if matches!(pending.get(&id), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = pending.remove(&id) {
                tokio::spawn(forward_spdy_pair(error, data, target.clone()));
            }
        }
    }
}

async fn forward_spdy_pair(error: spdy::Stream, data: spdy::Stream, target: Target) {
    let ew = error.writer();
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
    let Some(port) = port else {
        let p = data.header("port").unwrap_or_default().to_string();
        ew.send(format!("unable to parse \"{p}\" as a port: must be between 1 and 65535").as_bytes()).await;
        ew.close().await;
        data.writer().close().await;
        return;
    };
    let conn = match target.dial(port).await {
        Ok(c) => c,
        Err(e) => {
            // As upstream: the error stream says why, and both streams end.
            ew.send(e.as_bytes()).await;
            ew.close().await;
            data.writer().close().await;
            return;
        }
    };
    let (mut from_client, dw) = data.into_parts();
    let (mut rd, mut wr) = conn.into_split();
    let up = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !dw.send(&buf[..n]).await {
                        return;
                    }
                }
            }
        }
        dw.close().await;
    };
    // The connection is done when the pod's side has ended (the client's half-close alone only
    // closes our write side towards the pod).
    let up = tokio::spawn(up);
    down.await;
    up.abort();
    ew.close().await;
    drop(error);
}

/// Port-forward over plain WebSocket: for the i-th port, channel 2i carries data and 2i+1 errors;
/// the first message on each starts with the port (two bytes, little-endian). One connection to the
/// pod per port, for the life of the WebSocket.
async fn ws_port_forward(ws: WebSocketStream<Io>, ports: Vec<u16>, target: Target) {
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            let mut m = vec![ch];
            m.extend_from_slice(&port.to_le_bytes());
            let _ = out_tx.send(Message::Binary(m.into())).await;
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(32);
        to_pod.push(Some(tx));
        let out = out_tx.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let conn = match target.dial(port).await {
                Ok(c) => c,
                Err(e) => {
                    let mut m = vec![err_ch];
                    m.extend_from_slice(e.as_bytes());
                    let _ = out.send(Message::Binary(m.into())).await;
                    return;
                }
            };
            let (mut rd, mut wr) = conn.into_split();
            let up = tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            });
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf[1..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf[0] = data_ch;
                        if out.send(Message::Binary(Bytes::copy_from_slice(&buf[..=n]))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            up.abort();
        }));
    }
    drop(out_tx);
    while let Some(Ok(m)) = source.next().await {
        let data = match m {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&ch, rest)) = data.split_first() else { continue };
        let i = usize::from(ch) / 2;
        if ch % 2 != 0 || i >= ports.len() {
            continue;
        }
        if rest.is_empty() {
            continue;
        }
        if let Some(tx) = to_pod[i].as_ref() {
            if tx.send(Bytes::copy_from_slice(rest)).await.is_err() {
                to_pod[i] = None;
            }
        }
    }
    drop(to_pod);
    for t in tasks {
        t.abort();
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_as_upstream_parses_them() {
        let o = Options::parse(Some(
            "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=1&tty=true&stderr=true",
        ))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty && !o.stderr, "{o:?}");
        assert_eq!(
            Options::parse(Some("command=ls")).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(ports_of(Some("ports=80,443&ports=8080")).unwrap(), [80, 443, 8080]);
        assert!(ports_of(Some("ports=0")).is_err());
        assert!(ports_of(Some("ports=99999")).is_err());
        assert!(ports_of(None).is_err());
    }

    #[test]
    fn exit_codes_travel_as_upstream_status() {
        let s: serde_json::Value = serde_json::from_slice(&status_json(&Ok(3), &["sh".into()])).unwrap();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        let s: serde_json::Value = serde_json::from_slice(&status_json(&Ok(0), &[])).unwrap();
        assert_eq!(s["status"], "Success");
    }
}
