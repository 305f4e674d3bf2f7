//! The UDP side of one listener: one association per client address, each with its own socket
//! connected to the chosen endpoint, ended after an idle timeout (upstream's `--udp-timeout`).
//!
//! Bounded: at most `max_sessions` associations per listener (a datagram from a new client beyond
//! that is dropped, as a full conntrack table drops new flows); each costs one socket and one
//! task, and no buffer while it waits: replies are read only once the socket is readable, into a
//! buffer on the stack, and forwarded without waiting (`try_send_to`; a datagram the kernel cannot
//! take at once is dropped, which UDP allows).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::balancer::Balancer;

const MAX_DATAGRAM: usize = 65_535;

/// The limits of one listener's associations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub idle: Duration,
    pub max_sessions: usize,
}

struct Association {
    backend: Arc<UdpSocket>,
    last_seen: Arc<Mutex<Instant>>,
}

type Associations = Arc<Mutex<HashMap<SocketAddr, Association>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn serve(socket: UdpSocket, balancer: Arc<Balancer>, limits: Limits, name: Arc<str>) {
    let socket = Arc::new(socket);
    let assocs: Associations = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Whether the cap was hit since the last association that could be made: warn once per streak.
    let mut at_cap = false;
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // An ICMP error from an earlier send surfaces here on Linux; it is not fatal.
                tracing::debug!(service = %name, error = %e, "udp receive failed");
                continue;
            }
        };
        let (existing, sessions) = {
            let map = lock(&assocs);
            let existing = map.get(&client).map(|a| {
                *lock(&a.last_seen) = Instant::now();
                a.backend.clone()
            });
            (existing, map.len())
        };
        let backend = match existing {
            Some(b) => b,
            None if sessions >= limits.max_sessions => {
                if !at_cap {
                    at_cap = true;
                    tracing::warn!(service = %name, %client, max = limits.max_sessions,
                        "udp association limit reached; dropping datagrams from new clients");
                }
                continue;
            }
            None => {
                let Some(endpoint) = balancer.next(client.ip(), false) else { continue };
                match associate(endpoint).await {
                    Ok(b) => {
                        at_cap = false;
                        let b = Arc::new(b);
                        let last_seen = Arc::new(Mutex::new(Instant::now()));
                        lock(&assocs)
                            .insert(client, Association { backend: b.clone(), last_seen: last_seen.clone() });
                        tokio::spawn(replies(
                            socket.clone(),
                            b.clone(),
                            client,
                            last_seen,
                            limits.idle,
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

/// Copies the endpoint's replies back to the client until neither side spoke for `idle`, then
/// frees the association.
async fn replies(
    listener: Arc<UdpSocket>,
    backend: Arc<UdpSocket>,
    client: SocketAddr,
    last_seen: Arc<Mutex<Instant>>,
    idle: Duration,
    assocs: Associations,
) {
    loop {
        let deadline = *lock(&last_seen) + idle;
        match tokio::time::timeout_at(deadline.into(), backend.readable()).await {
            Ok(Ok(())) => {
                if forward_reply(&listener, &backend, client) {
                    *lock(&last_seen) = Instant::now();
                }
            }
            Ok(Err(_)) => {}
            Err(_) => {
                if *lock(&last_seen) + idle <= Instant::now() {
                    break;
                }
            }
        }
    }
    lock(&assocs).remove(&client);
}

/// Reads one ready reply and sends it on to the client; false if nothing was read. The buffer
/// lives on the stack only for this call, so a waiting association holds none.
fn forward_reply(listener: &UdpSocket, backend: &UdpSocket, client: SocketAddr) -> bool {
    let mut buf = [0u8; MAX_DATAGRAM];
    match backend.try_recv(&mut buf) {
        Ok(n) => {
            let _ = listener.try_send_to(&buf[..n], client);
            true
        }
        // WouldBlock (a spurious wake-up), or an ICMP port unreachable from the endpoint: keep
        // waiting until idle.
        Err(_) => false,
    }
}
