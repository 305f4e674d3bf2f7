//! The kubelet's streaming endpoints (`/exec`, `/attach`, `/portForward`) over WebSocket (v5, v4,
//! the SPDY tunnel) and SPDY/3.1, driven with a test Runtime whose programs are tiny and known:
//! `echo` prints its arguments, `cat` copies stdin, `exit N` ends with N, `warn` writes to stderr,
//! `size` prints the first terminal size it is sent; anything else is 127. The port-forward target
//! is a TCP echo server on loopback.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use nodes::kubelet::logs::LogStore;
use nodes::kubelet::streams::{Runtime, Stdio, StreamError};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

struct TestRuntime;

impl Runtime for TestRuntime {
    fn exec(
        &self,
        _ns: &str,
        _pod: &str,
        container: &str,
        argv: Vec<String>,
        mut io: Stdio,
    ) -> BoxFuture<'static, Result<i32, StreamError>> {
        let container = container.to_string();
        Box::pin(async move {
            match container.as_str() {
                "app" => {}
                "stopped" => return Err(StreamError::NotRunning(container)),
                "late" => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Err(StreamError::NotRunning(container));
                }
                _ => return Err(StreamError::ContainerNotFound { pod: "web".into(), container }),
            }
            let mut out = io.stdout.take();
            let mut err = io.stderr.take();
            let program = argv.first().cloned().unwrap_or_default();
            let code = match program.as_str() {
                "echo" => {
                    if let Some(o) = out.as_mut() {
                        o.write_all(format!("{}\n", argv[1..].join(" ")).as_bytes()).await.ok();
                    }
                    0
                }
                "cat" => {
                    if let (Some(i), Some(o)) = (io.stdin.as_mut(), out.as_mut()) {
                        tokio::io::copy(i, o).await.ok();
                    }
                    0
                }
                "exit" => argv.get(1).and_then(|c| c.parse().ok()).unwrap_or(1),
                "warn" => {
                    if let Some(e) = err.as_mut() {
                        e.write_all(b"careful\n").await.ok();
                    }
                    0
                }
                "size" => {
                    let size = match io.resize.as_mut() {
                        Some(r) => r.recv().await,
                        None => None,
                    };
                    if let (Some(s), Some(o)) = (size, out.as_mut()) {
                        o.write_all(format!("{}x{}\n", s.width, s.height).as_bytes()).await.ok();
                    }
                    0
                }
                other => {
                    if let Some(e) = err.as_mut().or(out.as_mut()) {
                        e.write_all(format!("sh: {other}: not found\n").as_bytes()).await.ok();
                    }
                    127
                }
            };
            Ok(code)
        })
    }

    fn attach(
        &self,
        _ns: &str,
        _pod: &str,
        container: &str,
        mut io: Stdio,
    ) -> BoxFuture<'static, Result<i32, StreamError>> {
        let container = container.to_string();
        Box::pin(async move {
            if container != "app" {
                return Err(StreamError::NotRunning(container));
            }
            if let Some(o) = io.stdout.as_mut() {
                o.write_all(b"attached\n").await.ok();
                if let Some(i) = io.stdin.as_mut() {
                    tokio::io::copy(i, o).await.ok();
                }
            }
            Ok(0)
        })
    }

    fn pod_ip(&self, ns: &str, pod: &str) -> Result<IpAddr, StreamError> {
        match (ns, pod) {
            ("default", "web") => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ("default", "far") => Ok(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            _ => Err(StreamError::PodNotFound(format!("{ns}/{pod}"))),
        }
    }
}

/// The kubelet's router with the test runtime, on an ephemeral loopback port.
async fn kubelet() -> SocketAddr {
    let app = nodes::kubelet::server::router(
        Arc::new(LogStore::default()),
        Arc::new(TestRuntime),
        Arc::new(nodes::kubelet::usage::Usage::new(Default::default())),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

/// A TCP echo server (the "pod" behind port-forward); returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await.ok();
            });
        }
    });
    port
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(addr: SocketAddr, path: &str, protocols: &str) -> (Ws, String) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let proto = resp.headers().get("sec-websocket-protocol").unwrap().to_str().unwrap().to_string();
    (ws, proto)
}

/// Reads channel messages until the server closes: bytes per channel.
async fn drain(ws: &mut Ws) -> HashMap<u8, Vec<u8>> {
    let mut by: HashMap<u8, Vec<u8>> = HashMap::new();
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if let Some((&ch, rest)) = b.split_first() {
                    by.entry(ch).or_default().extend_from_slice(rest);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the server ends the stream");
    by
}

fn status(by: &HashMap<u8, Vec<u8>>) -> Value {
    serde_json::from_slice(by.get(&3).expect("a status on the error channel")).unwrap()
}

#[tokio::test]
async fn websocket_v5_exec_prints_and_reports_success() {
    let addr = kubelet().await;
    let (mut ws, proto) = ws_connect(
        addr,
        "/exec/default/web/app?command=echo&command=hello&command=world&stdout=true&stderr=true",
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await;
    assert_eq!(proto, "v5.channel.k8s.io");
    let by = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&by[&1]), "hello world\n");
    assert_eq!(status(&by)["status"], "Success");
}

#[tokio::test]
async fn websocket_v5_stdin_flows_and_the_close_signal_ends_it() {
    let addr = kubelet().await;
    let (mut ws, _) =
        ws_connect(addr, "/exec/default/web/app?command=cat&stdin=true&stdout=true", "v5.channel.k8s.io").await;
    ws.send(Message::Binary(Bytes::from_static(b"\0line one\n"))).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\0line two\n"))).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0]))).await.unwrap();
    let by = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&by[&1]), "line one\nline two\n");
    assert_eq!(status(&by)["status"], "Success");
}

#[tokio::test]
async fn websocket_v4_carries_the_exit_code_and_stderr() {
    let addr = kubelet().await;
    let (mut ws, proto) = ws_connect(
        addr,
        "/exec/default/web/app?command=exit&command=3&stdout=true&stderr=true",
        "v4.channel.k8s.io",
    )
    .await;
    assert_eq!(proto, "v4.channel.k8s.io");
    let s = status(&drain(&mut ws).await);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "3");

    let (mut ws, _) =
        ws_connect(addr, "/exec/default/web/app?command=warn&stdout=true&stderr=true", "v4.channel.k8s.io")
            .await;
    let by = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&by[&2]), "careful\n");
    assert!(!by.contains_key(&1));
}

#[tokio::test]
async fn websocket_tty_resize_reaches_the_process() {
    let addr = kubelet().await;
    let (mut ws, _) = ws_connect(
        addr,
        "/exec/default/web/app?command=size&stdin=true&stdout=true&tty=true",
        "v5.channel.k8s.io",
    )
    .await;
    ws.send(Message::Binary(Bytes::from_static(b"\x04{\"Width\":132,\"Height\":43}"))).await.unwrap();
    let by = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&by[&1]), "132x43\n");
}

#[tokio::test]
async fn websocket_attach_connects_to_the_main_process() {
    let addr = kubelet().await;
    let (mut ws, _) =
        ws_connect(addr, "/attach/default/web/app?stdin=true&stdout=true", "v5.channel.k8s.io").await;
    ws.send(Message::Binary(Bytes::from_static(b"\0typed\n"))).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0]))).await.unwrap();
    let by = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&by[&1]), "attached\ntyped\n");
}

#[tokio::test]
async fn refusals_after_the_start_arrive_as_a_status_on_the_error_channel() {
    let addr = kubelet().await;
    // `late` refuses only after the upgrade (the runtime found out while running).
    let (mut ws, _) =
        ws_connect(addr, "/exec/default/web/late?command=ls&stdout=true", "v5.channel.k8s.io").await;
    let s = status(&drain(&mut ws).await);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["message"], "container late is not running");
    // Before v4 the error channel is plain text.
    let (mut ws, proto) =
        ws_connect(addr, "/exec/default/web/late?command=ls&stdout=true", "channel.k8s.io").await;
    assert_eq!(proto, "channel.k8s.io");
    let by = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&by[&3]), "container late is not running");
}

#[tokio::test]
async fn immediate_refusals_are_upstreams_http_errors_before_the_upgrade() {
    let addr = kubelet().await;
    let up = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n";
    for container in ["stopped", "nope"] {
        let (code, text) = plain(
            addr,
            &format!("GET /exec/default/web/{container}?command=ls&stdout=1 HTTP/1.1\r\nHost: k\r\n{up}\r\n"),
        )
        .await;
        assert_eq!(code, 500, "{text}");
        assert!(text.contains(&format!("container not found (\"{container}\")")), "{text}");
    }
    let (code, text) = plain(
        addr,
        "POST /attach/default/web/stopped?stdout=1 HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
    )
    .await;
    assert_eq!(code, 500, "{text}");
}

async fn plain(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    // Until the server closes, or has said all it will (an error answer may keep the connection).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ if out.is_empty() => match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            },
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_upgrade() {
    let addr = kubelet().await;
    let up = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n";
    let (code, text) = plain(
        addr,
        &format!("GET /exec/default/web/app?stdout=true HTTP/1.1\r\nHost: k\r\n{up}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("you must specify at least 1 command"), "{text}");
    let (code, text) =
        plain(addr, &format!("GET /exec/default/web/app?command=ls HTTP/1.1\r\nHost: k\r\n{up}\r\n")).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("you must specify at least 1 of stdin, stdout, stderr"), "{text}");
    let (code, text) = plain(
        addr,
        "GET /exec/default/web/app?command=ls&stdout=1 HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("Upgrade request required"), "{text}");
    let (code, text) =
        plain(addr, &format!("GET /portForward/default/gone?ports=80 HTTP/1.1\r\nHost: k\r\n{up}\r\n")).await;
    assert_eq!(code, 404, "{text}");
    let (code, text) =
        plain(addr, &format!("GET /portForward/default/far?ports=80 HTTP/1.1\r\nHost: k\r\n{up}\r\n")).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("only to loopback"), "{text}");
    let (code, text) = plain(
        addr,
        "POST /exec/default/web/app?command=ls&stdout=1 HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n\r\n",
    )
    .await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("unable to negotiate protocol"), "{text}");
}

#[tokio::test]
async fn websocket_port_forward_carries_bytes_both_ways() {
    let addr = kubelet().await;
    let port = echo_server().await;
    let (mut ws, proto) =
        ws_connect(addr, &format!("/portForward/default/web?ports={port}"), "v4.channel.k8s.io").await;
    assert_eq!(proto, "v4.channel.k8s.io");
    // Each channel opens with the port, little-endian.
    let mut opened = Vec::new();
    for _ in 0..2 {
        let Some(Ok(Message::Binary(b))) = ws.next().await else { panic!("channel opening") };
        opened.push(b.to_vec());
    }
    let p = port.to_le_bytes();
    assert_eq!(opened, vec![vec![0, p[0], p[1]], vec![1, p[0], p[1]]]);
    let mut got = Vec::new();
    for i in 0..20 {
        let msg = format!("ping {i}\n");
        let mut m = vec![0u8];
        m.extend_from_slice(msg.as_bytes());
        ws.send(Message::Binary(m.into())).await.unwrap();
        while got.len() < msg.len() {
            let Some(Ok(Message::Binary(b))) = ws.next().await else { panic!("echo") };
            assert_eq!(b[0], 0);
            got.extend_from_slice(&b[1..]);
        }
        assert_eq!(String::from_utf8_lossy(&got), msg);
        got.clear();
    }
}

// ---- A small SPDY/3.1 client, as client-go's (spdystream) speaks it. ----

struct Spdy<S> {
    io: S,
    deflate: Compress,
    inflate: Decompress,
    next_id: u32,
}

fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        b.extend((k.len() as u32).to_be_bytes());
        b.extend(k.as_bytes());
        b.extend((v.len() as u32).to_be_bytes());
        b.extend(v.as_bytes());
    }
    b
}

#[derive(Debug)]
enum Frame {
    Control,
    Data { id: u32, fin: bool, data: Vec<u8> },
}

impl<S: AsyncRead + AsyncWrite + Unpin> Spdy<S> {
    fn new(io: S) -> Spdy<S> {
        let dict = nodes::kubelet::spdy::dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&dict).unwrap();
        Spdy { io, deflate, inflate: Decompress::new(true), next_id: 1 }
    }

    async fn syn_stream(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let block = header_block(headers);
        let mut z = Vec::with_capacity(block.len() + 64);
        self.deflate.compress_vec(&block, &mut z, FlushCompress::Sync).unwrap();
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend([0, 0, 0, 0, 0, 0]);
        payload.extend(z);
        self.control(1, 0, &payload).await;
        id
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) {
        let mut f = vec![0x80, 3];
        f.extend(kind.to_be_bytes());
        f.push(flags);
        f.extend(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend(payload);
        self.io.write_all(&f).await.unwrap();
    }

    async fn data(&mut self, id: u32, fin: bool, data: &[u8]) {
        let mut f = id.to_be_bytes().to_vec();
        f.push(u8::from(fin));
        f.extend(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend(data);
        self.io.write_all(&f).await.unwrap();
    }

    async fn frame(&mut self) -> Option<Frame> {
        let mut h = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(10), self.io.read_exact(&mut h)).await.ok()?.ok()?;
        let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await.ok()?;
        if h[0] & 0x80 != 0 {
            let kind = u16::from_be_bytes([h[2], h[3]]);
            if kind == 2 {
                // SYN_REPLY: inflate the block to keep the context in step (and check it decodes).
                let mut out = Vec::with_capacity(4096);
                let before = self.inflate.total_in();
                match self.inflate.decompress_vec(&payload[4..], &mut out, FlushDecompress::Sync) {
                    Err(e) if e.needs_dictionary().is_some() => {
                        // The zlib header (and dictionary id) were read; go on from there.
                        let used = (self.inflate.total_in() - before) as usize;
                        self.inflate.set_dictionary(&nodes::kubelet::spdy::dictionary()).unwrap();
                        self.inflate
                            .decompress_vec(&payload[4 + used..], &mut out, FlushDecompress::Sync)
                            .unwrap();
                    }
                    r => {
                        r.unwrap();
                    }
                }
                assert_eq!(out, [0, 0, 0, 0], "an empty reply header block");
            }
            let _ = kind;
            Some(Frame::Control)
        } else {
            let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            Some(Frame::Data { id, fin: h[4] & 1 != 0, data: payload })
        }
    }

    /// Reads frames until every stream in `ids` has ended; returns each one's bytes.
    async fn read_until_fin(&mut self, ids: &[u32]) -> HashMap<u32, Vec<u8>> {
        let mut open: Vec<u32> = ids.to_vec();
        let mut by: HashMap<u32, Vec<u8>> = HashMap::new();
        while !open.is_empty() {
            match self.frame().await.expect("a frame") {
                Frame::Data { id, fin, data } => {
                    by.entry(id).or_default().extend(data);
                    if fin {
                        open.retain(|i| *i != id);
                    }
                }
                Frame::Control => {}
            }
        }
        by
    }
}

async fn spdy_upgrade(addr: SocketAddr, path: &str, protocol: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains(&format!("x-stream-protocol-version: {protocol}")), "{head}");
    s
}

#[tokio::test]
async fn spdy_v4_exec_with_stdin_and_an_exit_code() {
    let addr = kubelet().await;
    let conn = spdy_upgrade(
        addr,
        "/exec/default/web/app?command=cat&stdin=true&stdout=true&stderr=true",
        "v4.channel.k8s.io",
    )
    .await;
    let mut c = Spdy::new(conn);
    let error = c.syn_stream(&[("streamtype", "error")]).await;
    let stdin = c.syn_stream(&[("streamtype", "stdin")]).await;
    let stdout = c.syn_stream(&[("streamtype", "stdout")]).await;
    let stderr = c.syn_stream(&[("streamtype", "stderr")]).await;
    c.data(stdin, false, b"through spdy\n").await;
    c.data(stdin, true, b"").await;
    let by = c.read_until_fin(&[error, stdout, stderr]).await;
    assert_eq!(String::from_utf8_lossy(&by[&stdout]), "through spdy\n");
    let s: Value = serde_json::from_slice(&by[&error]).unwrap();
    assert_eq!(s["status"], "Success");

    let conn =
        spdy_upgrade(addr, "/exec/default/web/app?command=exit&command=7&stdout=true", "v4.channel.k8s.io")
            .await;
    let mut c = Spdy::new(conn);
    let error = c.syn_stream(&[("streamtype", "error")]).await;
    let stdout = c.syn_stream(&[("streamtype", "stdout")]).await;
    let by = c.read_until_fin(&[error, stdout]).await;
    let s: Value = serde_json::from_slice(&by[&error]).unwrap();
    assert_eq!(s["details"]["causes"][0]["message"], "7", "{s}");
}

async fn spdy_forward_rounds<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Spdy<S>, port: u16) {
    for request in 0..3 {
        let rid = request.to_string();
        let p = port.to_string();
        let error = c.syn_stream(&[("streamtype", "error"), ("port", &p), ("requestid", &rid)]).await;
        let data = c.syn_stream(&[("streamtype", "data"), ("port", &p), ("requestid", &rid)]).await;
        let msg = format!("hello over request {request}");
        c.data(data, false, msg.as_bytes()).await;
        // The client's half-close ends the pod connection's input; the echo server then closes
        // and the data and error streams end.
        c.data(data, true, b"").await;
        let by = c.read_until_fin(&[data, error]).await;
        assert_eq!(String::from_utf8_lossy(&by[&data]), msg);
        assert!(by.get(&error).is_none_or(|e| e.is_empty()));
    }
    // A port nobody listens on: the error stream says so.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let p = dead.to_string();
    let error = c.syn_stream(&[("streamtype", "error"), ("port", &p), ("requestid", "9")]).await;
    let _data = c.syn_stream(&[("streamtype", "data"), ("port", &p), ("requestid", "9")]).await;
    let by = c.read_until_fin(&[error]).await;
    let e = String::from_utf8_lossy(&by[&error]).to_string();
    assert!(e.contains(&format!("error forwarding port {dead} to pod default/web")), "{e}");
}

#[tokio::test]
async fn spdy_port_forward_pairs_streams_by_request_id() {
    let addr = kubelet().await;
    let port = echo_server().await;
    let conn = spdy_upgrade(addr, "/portForward/default/web", "portforward.k8s.io").await;
    let mut c = Spdy::new(conn);
    spdy_forward_rounds(&mut c, port).await;
}

/// kubectl ≥ 1.31: SPDY inside WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`).
#[tokio::test]
async fn spdy_tunnelled_in_websocket_port_forwards() {
    let addr = kubelet().await;
    let port = echo_server().await;
    let (ws, proto) = ws_connect(addr, "/portForward/default/web", "SPDY/3.1+portforward.k8s.io").await;
    assert_eq!(proto, "SPDY/3.1+portforward.k8s.io");
    // Bridge the WebSocket to a byte stream for the SPDY client.
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(Message::Binary(b))) = source.next().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut c = Spdy::new(ours);
    spdy_forward_rounds(&mut c, port).await;
}

// ---- The real kubectl through the API server to this kubelet (test runtime). ----

/// An API server on plain HTTP (loopback) with a Node whose kubelet is the test one, and the pod
/// `default/web` bound to it; returns the API server's URL.
async fn api_with_kubelet(tc: &apiserver::testing::TestCluster) -> String {
    let kubelet = kubelet().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let app = apiserver::router(tc.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "streams-node"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port()}},
        },
    }))
    .unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(tc.client.clone());
    let created = nodes.create(&Default::default(), &node).await.unwrap();
    // The status half is written through the status subresource.
    let mut with_status = created.clone();
    with_status.status = node.status.clone();
    nodes.replace_status("streams-node", &Default::default(), &with_status).await.unwrap();
    let pod = super::helpers::pod("web", serde_json::json!({"nodeName": "streams-node"}));
    super::helpers::create_pod(&tc.client, "default", pod).await;
    api
}

fn kubectl_at(program: &str, api: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .env_remove("KUBECONFIG")
        .args(["--kubeconfig", "/dev/null", "--server", api])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}); this test must not be skipped"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_through_the_api_server_carries_stdin_output_and_exit_codes() {
    let tc = apiserver::testing::TestCluster::start().await;
    let api = api_with_kubelet(&tc).await;
    // kubectl.1.27 is kept in the Cloud SDK's folder on this machine; elsewhere, on PATH.
    let sdk = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
    let old = if std::path::Path::new(sdk).exists() { sdk } else { "kubectl.1.27" };
    // kubectl 1.32 (WebSocket v5) and 1.27 (SPDY v4).
    for program in ["kubectl", old] {
        let api2 = api.clone();
        let out = tokio::task::spawn_blocking(move || {
            kubectl_at(
                program,
                &api2,
                &["exec", "-i", "web", "-c", "app", "--", "cat"],
                b"via the api server\n",
            )
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "via the api server\n", "{program}");

        let api2 = api.clone();
        let out = tokio::task::spawn_blocking(move || {
            kubectl_at(program, &api2, &["exec", "web", "--", "exit", "3"], b"")
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(3), "{program}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 3"),
            "{program}"
        );

        let api2 = api.clone();
        let out = tokio::task::spawn_blocking(move || {
            kubectl_at(program, &api2, &["exec", "web", "-c", "stopped", "--", "ls"], b"")
        })
        .await
        .unwrap();
        // The pod has no container `stopped`: the API server refuses before the kubelet is asked.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("container stopped is not valid for pod web"),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tc.shutdown().await;
}
