//! The TCP side of one listener: accept, pick an endpoint, dial with retries, copy bytes until
//! both sides close or nothing moves for the idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::balancer::Balancer;
use crate::pipe::{self, Ended};
use crate::workers::Workers;

/// Upstream userspace proxy's dial timeouts: one try per entry, each on the next endpoint.
const DIAL_TIMEOUTS: [Duration; 4] =
    [Duration::from_millis(250), Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)];

/// Accepts until the task is aborted (the listener is then dropped and the port closed). Each
/// connection runs in its own task on one of `workers` (dial, then both directions, all on that
/// worker's thread), so aborting the accept loop lets open connections drain.
pub(crate) async fn serve(
    listener: TcpListener,
    balancer: Arc<Balancer>,
    idle: Duration,
    name: Arc<str>,
    workers: Arc<Workers>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off briefly rather than spin.
                tracing::warn!(service = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !balancer.has_endpoints() {
            refuse(client);
            continue;
        }
        let balancer = balancer.clone();
        let name = name.clone();
        workers.serve(client, move |client| async move {
            proxy_connection(client, peer, &balancer, idle, &name).await
        });
    }
}

/// Closes with a reset, so a client (curl) fails at once with "connection reset" instead of
/// waiting: a service with no endpoints refuses connections.
fn refuse(client: TcpStream) {
    // SO_LINGER 0 makes close() send RST; it cannot block here because nothing was written.
    #[allow(deprecated)]
    let _ = client.set_linger(Some(Duration::ZERO));
    drop(client);
}

async fn proxy_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    balancer: &Balancer,
    idle: Duration,
    name: &str,
) {
    let Some(mut backend) = dial(balancer, peer, name).await else {
        refuse(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    match pipe::copy_with_idle(&mut client, &mut backend, idle).await {
        Ended::Closed => {}
        Ended::Idle => tracing::debug!(service = %name, client = %peer, ?idle, "idle connection closed"),
        Ended::Failed(e) => tracing::debug!(service = %name, error = %e, "connection ended with an error"),
    }
}

/// Tries up to four endpoints (round-robin moves on each time) with growing timeouts.
pub(crate) async fn dial(balancer: &Balancer, peer: SocketAddr, name: &str) -> Option<TcpStream> {
    let mut reset_affinity = false;
    for timeout in DIAL_TIMEOUTS {
        let endpoint = balancer.next(peer.ip(), reset_affinity)?;
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => {
                tracing::info!(service = %name, %endpoint, error = %e, "dial failed; trying the next endpoint")
            }
            Err(_) => {
                tracing::info!(service = %name, %endpoint, ?timeout, "dial timed out; trying the next endpoint")
            }
        }
        reset_affinity = true;
    }
    tracing::warn!(service = %name, client = %peer, "no endpoint accepted the connection");
    None
}
