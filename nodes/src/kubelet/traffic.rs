//! A running pod's listeners: for each container port, `podIP:containerPort` — HTTP/1.1 on TCP ports
//! (any method and path answer 200 with a body and headers naming the pod), an echo on UDP ports.
//! One image behaves as its real self because the seed relies on it: the ingress default backend
//! (`defaultbackend` images) answers `default backend - 404` with 404, and 200 on `/healthz`.
//! Every request is logged to the container's log. Dropping [`Listeners`] closes every listening
//! socket at once and shuts open HTTP connections down gracefully, as a server on SIGTERM does: a
//! request in flight is answered, then its connection closes (within [`DRAIN`]).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

use super::logs::ContainerLog;

/// Who a pod is, for the answers.
#[derive(Clone, Debug)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub node: String,
}

/// One port to open.
pub struct PortSpec {
    pub container: String,
    /// The container's image, which picks how it answers (see the module).
    pub image: String,
    pub port: u16,
    pub udp: bool,
    pub log: Arc<ContainerLog>,
    /// The container's usage counters: each answered request costs CPU.
    pub usage: Option<Arc<super::usage::ContainerUsage>>,
}

/// How long open connections may take to finish once their pod stops.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a connection accepted before its pod stopped may take to send its first request.
const FIRST_REQUEST: std::time::Duration = std::time::Duration::from_secs(1);

/// The pod's open sockets; dropped, they close.
pub struct Listeners {
    /// The UDP sockets' tasks: aborted on drop.
    tasks: JoinSet<()>,
    /// The TCP accept loops: on drop they are told to stop (`stopping`) and left to end on their
    /// own, each first taking the connections the kernel has already completed (a proxy's dial
    /// succeeded) but the loop has not yet accepted, so that closing the listener does not reset
    /// them. One descriptor per listening port (a second handle for that drain doubled a pod's
    /// descriptors, and 10,000 pods ran out of them).
    accepting: JoinSet<()>,
    /// Set to true on drop: accept loops drain and close; open connections finish their request
    /// and close.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Whatever must live exactly as long as the listeners (the container's exec registration).
    guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            tasks: JoinSet::new(),
            accepting: JoinSet::new(),
            stopping: tokio::sync::watch::channel(false).0,
            guard: None,
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.stopping.send(true);
        // The accept loops end themselves once they have seen `stopping` (or the sender's drop).
        self.accepting.detach_all();
    }
}

/// What one TCP port of a pod answers as.
struct Port {
    id: PodIdentity,
    container: String,
    behaviour: Behaviour,
    log: Arc<ContainerLog>,
    usage: Option<Arc<super::usage::ContainerUsage>>,
}

impl Listeners {
    /// Keeps `guard` until these listeners are dropped.
    pub fn hold(&mut self, guard: impl std::any::Any + Send + Sync) {
        self.guard = Some(Box::new(guard));
    }

    /// Binds every port. Ports that cannot be bound are returned as messages (the pod runs without
    /// them; the caller reports them), never a panic.
    pub async fn start(id: &PodIdentity, ports: Vec<PortSpec>) -> (Listeners, Vec<String>) {
        let mut l = Listeners::default();
        let mut failures = Vec::new();
        for p in ports {
            let addr = SocketAddr::from((id.ip, p.port));
            let proto = if p.udp { "UDP" } else { "TCP" };
            let bound = if p.udp {
                UdpSocket::bind(addr).await.map(|s| {
                    l.tasks.spawn(serve_udp(s, p.log.clone()));
                })
            } else {
                TcpListener::bind(addr).await.map(|s| {
                    let port = Arc::new(Port {
                        id: id.clone(),
                        container: p.container.clone(),
                        behaviour: Behaviour::of(&p.image),
                        log: p.log.clone(),
                        usage: p.usage.clone(),
                    });
                    l.accepting.spawn(serve_tcp(s, port, l.stopping.subscribe()));
                })
            };
            match bound {
                Ok(()) => p.log.push(format!("kplane-sim: listening on {addr}/{proto}")),
                Err(e) => {
                    let msg = format!("container {} cannot listen on {addr}/{proto}: {e}", p.container);
                    p.log.push(format!("kplane-sim: {msg}"));
                    failures.push(msg);
                }
            }
        }
        (l, failures)
    }
}

/// How a container's HTTP port answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// 200 naming the pod, for any request.
    Echo,
    /// The seed's `default-http-backend`: 404 `default backend - 404`, but 200 on `/healthz`.
    DefaultBackend,
}

impl Behaviour {
    fn of(image: &str) -> Behaviour {
        let name = image.rsplit('/').next().unwrap_or(image);
        let name = name.split([':', '@']).next().unwrap_or(name);
        if name == "defaultbackend" || name.starts_with("defaultbackend-") {
            Behaviour::DefaultBackend
        } else {
            Behaviour::Echo
        }
    }
}

async fn serve_tcp(listener: TcpListener, port: Arc<Port>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    while !*stopping.borrow() {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or the like: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                // Connections outlive the accept loop so that they can drain.
                tokio::spawn(serve_connection(stream, peer, port.clone(), stopping.clone()));
            }
            // Stopping, or the pod's listeners are gone: drain what the kernel holds, then close.
            changed = stopping.changed() => if changed.is_err() { break },
        }
    }
    // Off the reactor, still non-blocking: accept until the backlog is empty (WouldBlock).
    let Ok(backlog) = listener.into_std() else { return };
    while let Ok((stream, peer)) = backlog.accept() {
        // An accepted socket does not inherit O_NONBLOCK; tokio needs it.
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
            tokio::spawn(serve_connection(stream, peer, port.clone(), stopping.clone()));
        }
    }
    // `backlog` closes here: new connections are refused from now on.
}

/// One HTTP/1.1 connection. When the pod stops, a request in flight is answered and the connection
/// then closes; as Go's `http.Server.Shutdown` does, a connection that has not sent its first
/// request yet (one a proxy has just dialed) first gets [`FIRST_REQUEST`] to send it.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    port: Arc<Port>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let started = Arc::new(tokio::sync::Notify::new());
    let svc = service_fn({
        let started = started.clone();
        move |req| {
            started.notify_one();
            let resp = answer(&port, peer, &req);
            async move { Ok::<_, Infallible>(resp) }
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|s| *s) => {}
    }
    // A permit is stored if a request already started, so this returns at once then.
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = started.notified() => {}
        _ = tokio::time::sleep(FIRST_REQUEST) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

fn answer<B>(port: &Port, peer: SocketAddr, req: &Request<B>) -> Response<Full<Bytes>> {
    let Port { id, container, behaviour, log, usage } = port;
    if let Some(u) = usage {
        u.served_one();
    }
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let line = format!("{} {} {:?}", req.method(), target, req.version());
    let (status, body) = match behaviour {
        Behaviour::DefaultBackend if req.uri().path() == "/healthz" => (200, "ok".to_string()),
        Behaviour::DefaultBackend => (404, "default backend - 404".to_string()),
        Behaviour::Echo => (
            200,
            format!(
                "pod: {}/{}\npod-ip: {}\nnode: {}\ncontainer: {}\nrequest: {}\n",
                id.namespace, id.name, id.ip, id.node, container, line
            ),
        ),
    };
    log.push(format!("{peer} \"{line}\" {status} {}", body.len()));
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("X-Pod-Name", id.name.as_str())
        .header("X-Pod-Namespace", id.namespace.as_str())
        .header("X-Pod-IP", id.ip.to_string())
        .header("X-Node-Name", id.node.as_str())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

async fn serve_udp(socket: UdpSocket, log: Arc<ContainerLog>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let _ = socket.send_to(&buf[..n], peer).await;
        log.push(format!("{peer} udp echo {n} bytes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stopping_pod_answers_the_request_in_flight_then_closes() {
        let (id, spec, addr) = pod("drain", Ipv4Addr::new(127, 244, 254, 1), 18080);
        let (listeners, failed) = Listeners::start(&id, vec![spec]).await;
        assert!(failed.is_empty(), "{failed:?}");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Half a request is in flight when the pod stops.
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(listeners);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // New connections are refused at once...
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener should be closed");
        // ...but the request in flight is answered, and its connection then closes.
        conn.write_all(b"\r\n").await.unwrap();
        let answer = answer_of(conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("x-pod-name: drain"), "{answer}");
    }

    fn pod(name: &str, ip: Ipv4Addr, port: u16) -> (PodIdentity, PortSpec, SocketAddr) {
        let id = PodIdentity { namespace: "default".into(), name: name.into(), ip, node: "n".into() };
        let log = Arc::new(ContainerLog::new());
        let spec =
            PortSpec { container: "c".into(), image: "nginx".into(), port, udp: false, log, usage: None };
        (id, spec, SocketAddr::from((ip, port)))
    }

    /// Reads one whole answer (the pod closes the connection after it, as it is stopping).
    async fn answer_of(mut conn: tokio::net::TcpStream) -> String {
        let mut answer = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_string(&mut answer))
            .await
            .expect("the connection closes after answering")
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn a_connection_the_kernel_completed_before_the_stop_is_answered_not_reset() {
        let (id, spec, addr) = pod("backlog", Ipv4Addr::new(127, 244, 254, 2), 18080);
        let (listeners, failed) = Listeners::start(&id, vec![spec]).await;
        assert!(failed.is_empty(), "{failed:?}");
        // A blocking connect and write never yield to the accept loop (this test's runtime has one
        // thread): the connection sits in the listen backlog when the pod stops.
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut raw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        drop(listeners);
        raw.set_nonblocking(true).unwrap();
        let answer = answer_of(tokio::net::TcpStream::from_std(raw).unwrap()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener should be closed");
    }

    /// A pod's listening port costs one file descriptor (10,000 pods ran out of them when a
    /// second handle on each listener was kept for the drain).
    #[tokio::test]
    async fn a_listening_port_holds_one_descriptor() {
        let (id, spec, addr) = pod("fds", Ipv4Addr::new(127, 244, 254, 4), 18080);
        let (listeners, failed) = Listeners::start(&id, vec![spec]).await;
        assert!(failed.is_empty(), "{failed:?}");
        // The listening socket's inode, from the kernel's table: the local address is the IPv4
        // address as a native-endian u32 in hex, then the port; state 0A is LISTEN.
        let SocketAddr::V4(v4) = addr else { unreachable!("an IPv4 test address") };
        let local = format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port());
        let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
        let inode = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
            .map(|f| f[9].to_string())
            .unwrap_or_else(|| panic!("{local} not listening:\n{table}"));
        let socket = format!("socket:[{inode}]");
        let held = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_str() == Some(socket.as_str()))
            .count();
        assert_eq!(held, 1, "descriptors on the listening socket {socket}");
        drop(listeners);
    }

    #[tokio::test]
    async fn a_connection_accepted_before_the_stop_may_still_send_its_first_request() {
        let (id, spec, addr) = pod("first", Ipv4Addr::new(127, 244, 254, 3), 18080);
        let (listeners, _) = Listeners::start(&id, vec![spec]).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await; // accepted, nothing sent
        drop(listeners);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = answer_of(conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.contains("x-pod-name: first"), "{answer}");
    }

    #[test]
    fn the_default_backend_image_is_recognised() {
        for image in [
            "gcr.io/google_containers/defaultbackend:1.0",
            "registry.k8s.io/defaultbackend-amd64:1.5",
            "defaultbackend",
        ] {
            assert_eq!(Behaviour::of(image), Behaviour::DefaultBackend, "{image}");
        }
        for image in ["nginx", "nginx:1.27", "example.com/defaultbackendish:1", ""] {
            assert_eq!(Behaviour::of(image), Behaviour::Echo, "{image}");
        }
    }
}
