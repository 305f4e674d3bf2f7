//! The UDP side of one listener: one association per client address, each with its own socket
//! connected to the chosen endpoint, ended after an idle timeout (upstream's `--udp-timeout`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::balancer::Balancer;

const MAX_DATAGRAM: usize = 65_535;

struct Association {
    backend: Arc<UdpSocket>,
    last_seen: Arc<Mutex<Instant>>,
}

pub(crate) async fn serve(socket: UdpSocket, balancer: Arc<Balancer>, idle: Duration, name: Arc<str>) {
    let socket = Arc::new(socket);
    let assocs: Arc<Mutex<HashMap<SocketAddr, Association>>> = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // An ICMP error from an earlier send surfaces here on Linux; it is not fatal.
                tracing::debug!(service = %name, error = %e, "udp receive failed");
                continue;
            }
        };
        let existing = {
            let map = assocs.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&client).map(|a| {
                *a.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                a.backend.clone()
            })
        };
        let backend = match existing {
            Some(b) => b,
            None => {
                let Some(endpoint) = balancer.next(client.ip(), false) else { continue };
                match associate(endpoint).await {
                    Ok(b) => {
                        let b = Arc::new(b);
                        let last_seen = Arc::new(Mutex::new(Instant::now()));
                        assocs
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(client, Association { backend: b.clone(), last_seen: last_seen.clone() });
                        tokio::spawn(replies(
                            socket.clone(),
                            b.clone(),
                            client,
                            last_seen,
                            idle,
                            assocs.clone(),
                        ));
                        b
                    }
                    Err(e) => {
                        tracing::warn!(service = %name, %endpoint, error = %e, "udp association failed");
                        continue;
                    }
                }
            }
        };
        if let Err(e) = backend.send(&buf[..n]).await {
            tracing::debug!(service = %name, error = %e, "udp send to endpoint failed");
        }
    }
}

async fn associate(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    sock.connect(endpoint).await?;
    Ok(sock)
}

/// Copies the endpoint's replies back to the client until neither side spoke for `idle`.
async fn replies(
    listener: Arc<UdpSocket>,
    backend: Arc<UdpSocket>,
    client: SocketAddr,
    last_seen: Arc<Mutex<Instant>>,
    idle: Duration,
    assocs: Arc<Mutex<HashMap<SocketAddr, Association>>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = *last_seen.lock().unwrap_or_else(|e| e.into_inner()) + idle;
        match tokio::time::timeout_at(deadline.into(), backend.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                *last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                let _ = listener.send_to(&buf[..n], client).await;
            }
            Ok(Err(_)) => {} // ICMP port unreachable from the endpoint: keep waiting until idle.
            Err(_) => {
                let last = *last_seen.lock().unwrap_or_else(|e| e.into_inner());
                if last + idle <= Instant::now() {
                    break;
                }
            }
        }
    }
    assocs.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
}
