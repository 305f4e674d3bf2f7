//! Endpoint choice for one service port: round-robin over the ready endpoints, with optional
//! ClientIP session affinity (kube-proxy userspace's `LoadBalancerRR`).
//!
//! A std `Mutex` and not a tokio one: it is held only for a few map operations and never across an
//! await, so a blocking lock is cheaper and cannot deadlock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Balancer {
    endpoints: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
    /// `None`: no affinity. `Some(t)`: ClientIP affinity for `t` after the last use.
    affinity_timeout: RwLock<Option<Duration>>,
    affinity: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Balancer {
    pub fn set_endpoints(&self, mut eps: Vec<SocketAddr>) {
        eps.sort();
        eps.dedup();
        let mut cur = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        if **cur != eps {
            // Forget affinities to endpoints that are gone, as upstream does on an update.
            self.affinity.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (addr, _)| eps.contains(addr));
            *cur = Arc::new(eps);
        }
    }

    pub fn set_affinity(&self, timeout: Option<Duration>) {
        let mut cur = self.affinity_timeout.write().unwrap_or_else(|e| e.into_inner());
        if *cur != timeout {
            *cur = timeout;
            self.affinity.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// The endpoint for a new connection from `client`. `reset_affinity` after a failed dial, so the
    /// retry moves on instead of sticking to the dead endpoint.
    pub fn next(&self, client: IpAddr, reset_affinity: bool) -> Option<SocketAddr> {
        let eps = self.endpoints.read().unwrap_or_else(|e| e.into_inner()).clone();
        if eps.is_empty() {
            return None;
        }
        let timeout = *self.affinity_timeout.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(timeout) = timeout {
            let mut aff = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
            if !reset_affinity {
                if let Some((addr, last)) = aff.get_mut(&client) {
                    if now.duration_since(*last) < timeout && eps.contains(addr) {
                        *last = now;
                        return Some(*addr);
                    }
                }
            }
            let addr = eps[self.next.fetch_add(1, Ordering::Relaxed) % eps.len()];
            aff.insert(client, (addr, now));
            // Bound the map: drop expired entries now and then rather than running a sweeper task.
            if aff.len() > 4096 {
                aff.retain(|_, (_, last)| now.duration_since(*last) < timeout);
            }
            return Some(addr);
        }
        Some(eps[self.next.fetch_add(1, Ordering::Relaxed) % eps.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 244, 0, 1], p))
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let b = Balancer::default();
        b.set_endpoints(vec![addr(1), addr(2), addr(3)]);
        let client: IpAddr = [127, 0, 0, 1].into();
        let mut seen: Vec<_> = (0..3).map(|_| b.next(client, false).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, vec![addr(1), addr(2), addr(3)]);
    }

    #[test]
    fn affinity_sticks_until_reset_or_endpoint_removed() {
        let b = Balancer::default();
        b.set_endpoints(vec![addr(1), addr(2)]);
        b.set_affinity(Some(Duration::from_secs(60)));
        let client: IpAddr = [127, 0, 0, 1].into();
        let first = b.next(client, false).unwrap();
        for _ in 0..5 {
            assert_eq!(b.next(client, false), Some(first));
        }
        let other = b.next(client, true).unwrap();
        assert_ne!(other, first);
        b.set_endpoints(vec![first]);
        assert_eq!(b.next(client, false), Some(first));
    }

    #[test]
    fn affinity_expires() {
        let b = Balancer::default();
        b.set_endpoints(vec![addr(1), addr(2)]);
        b.set_affinity(Some(Duration::ZERO));
        let client: IpAddr = [127, 0, 0, 1].into();
        let a = b.next(client, false).unwrap();
        assert_ne!(b.next(client, false), Some(a));
    }

    #[test]
    fn no_endpoints_gives_none() {
        let b = Balancer::default();
        assert_eq!(b.next([127, 0, 0, 1].into(), false), None);
    }
}
