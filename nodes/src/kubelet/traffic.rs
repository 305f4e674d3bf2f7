//! A running pod's listeners: for each container port, `podIP:containerPort` — HTTP/1.1 on TCP ports
//! (any method and path answer 200 with a body and headers naming the pod), an echo on UDP ports.
//! One image behaves as its real self because the seed relies on it: the ingress default backend
//! (`defaultbackend` images) answers `default backend - 404` with 404, and 200 on `/healthz`.
//! Every request is logged to the container's log. Dropping [`Listeners`] closes every socket and
//! every open connection (they are tasks of one `JoinSet`).

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
}

/// The pod's open sockets; dropped, they close.
#[derive(Default)]
pub struct Listeners {
    tasks: JoinSet<()>,
}

impl Listeners {
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
                    let behaviour = Behaviour::of(&p.image);
                    l.tasks.spawn(serve_tcp(s, id.clone(), p.container.clone(), behaviour, p.log.clone()));
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

async fn serve_tcp(
    listener: TcpListener,
    id: PodIdentity,
    container: String,
    behaviour: Behaviour,
    log: Arc<ContainerLog>,
) {
    let mut conns = JoinSet::new();
    let id = Arc::new(id);
    let container: Arc<str> = container.into();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or the like: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let (id, container, log) = (id.clone(), container.clone(), log.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let resp = answer(&id, &container, behaviour, &log, peer, &req);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn answer<B>(
    id: &PodIdentity,
    container: &str,
    behaviour: Behaviour,
    log: &ContainerLog,
    peer: SocketAddr,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
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
    use super::Behaviour;

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
