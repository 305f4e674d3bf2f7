//! Pod IPs from the node's `spec.podCIDR`, as a host-local IPAM would hand them out: the network and
//! broadcast addresses and the first host address (the "gateway") are never given, the lowest free
//! address is given first, and an address is free again as soon as its pod is gone. Nothing is
//! persisted: after a restart the kubelet re-reserves the addresses its running pods report.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// An IPv4 CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses "a.b.c.d/n" (the base is masked to the prefix).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(Cidr { base: Ipv4Addr::from(u32::from(ip) & mask), prefix })
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let off = u64::from(u32::from(ip).wrapping_sub(u32::from(self.base)));
        u32::from(ip) >= u32::from(self.base) && off < self.size()
    }

    /// Whether the address may be given to a pod.
    fn assignable(&self, ip: Ipv4Addr) -> bool {
        let off = u64::from(u32::from(ip).wrapping_sub(u32::from(self.base)));
        self.contains(ip) && off >= 2 && off + 1 < self.size()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Which pod (uid) holds which address.
#[derive(Debug, Default)]
pub struct Ipam {
    cidr: Option<Cidr>,
    by_ip: HashMap<Ipv4Addr, String>,
    by_uid: HashMap<String, Ipv4Addr>,
    /// Addresses running pods reported before the range was known, reserved when it is set.
    stash: Vec<(String, Ipv4Addr)>,
}

impl Ipam {
    pub fn cidr(&self) -> Option<Cidr> {
        self.cidr
    }

    /// Sets the range. A node's podCIDR does not change once set; if it does, addresses already
    /// given stay with their pods.
    pub fn set_cidr(&mut self, cidr: Cidr) {
        self.cidr = Some(cidr);
        for (uid, ip) in std::mem::take(&mut self.stash) {
            self.reserve(&uid, ip);
        }
    }

    /// Reserves an address a pod already reports (kubelet restart), now or once the range is set,
    /// so that no fresh allocation can hand it to another pod first.
    pub fn pre_reserve(&mut self, uid: &str, ip: Ipv4Addr) {
        if self.cidr.is_some() {
            self.reserve(uid, ip);
        } else {
            self.stash.push((uid.to_string(), ip));
        }
    }

    /// The pod's address: the one it holds, else the lowest free one. None when the range is unset
    /// or exhausted.
    pub fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Some(*ip);
        }
        let cidr = self.cidr?;
        let base = u32::from(cidr.base);
        let ip = (2..cidr.size().saturating_sub(1))
            .map(|off| Ipv4Addr::from(base + off as u32))
            .find(|ip| !self.by_ip.contains_key(ip))?;
        self.by_ip.insert(ip, uid.to_string());
        self.by_uid.insert(uid.to_string(), ip);
        Some(ip)
    }

    /// Gives `ip` to the pod if it is in range and free (or already the pod's).
    pub fn reserve(&mut self, uid: &str, ip: Ipv4Addr) -> bool {
        let Some(cidr) = self.cidr else { return false };
        if !cidr.assignable(ip) {
            return false;
        }
        match self.by_ip.get(&ip) {
            Some(owner) => owner == uid,
            None => {
                if let Some(old) = self.by_uid.remove(uid) {
                    self.by_ip.remove(&old);
                }
                self.by_ip.insert(ip, uid.to_string());
                self.by_uid.insert(uid.to_string(), ip);
                true
            }
        }
    }

    pub fn release(&mut self, uid: &str) {
        if let Some(ip) = self.by_uid.remove(uid) {
            self.by_ip.remove(&ip);
        }
    }

    pub fn in_use(&self) -> usize {
        self.by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_reuse_after_release_and_exhaustion() {
        let mut ipam = Ipam::default();
        assert_eq!(ipam.allocate("a"), None, "no range yet");
        ipam.set_cidr(Cidr::parse("127.244.1.0/29").unwrap());
        let got: Vec<_> = ["a", "b", "c", "d", "e"].iter().map(|u| ipam.allocate(u)).collect();
        let ip = |d| Some(Ipv4Addr::new(127, 244, 1, d));
        assert_eq!(got, vec![ip(2), ip(3), ip(4), ip(5), ip(6)]);
        assert_eq!(ipam.allocate("f"), None, ".7 is the broadcast address");
        assert_eq!(ipam.allocate("c"), ip(4), "stable per pod");
        ipam.release("b");
        assert_eq!(ipam.allocate("f"), ip(3));
        assert!(!ipam.reserve("g", Ipv4Addr::new(127, 244, 1, 3)), "taken");
        assert!(!ipam.reserve("g", Ipv4Addr::new(127, 244, 2, 3)), "out of range");
        assert!(!ipam.reserve("g", Ipv4Addr::new(127, 244, 1, 1)), "gateway");
    }

    #[test]
    fn addresses_reported_before_the_range_is_known_are_not_handed_out() {
        let mut ipam = Ipam::default();
        ipam.pre_reserve("old", Ipv4Addr::new(127, 244, 1, 2));
        ipam.set_cidr(Cidr::parse("127.244.1.0/24").unwrap());
        assert_eq!(ipam.allocate("new"), Some(Ipv4Addr::new(127, 244, 1, 3)));
        assert_eq!(ipam.allocate("old"), Some(Ipv4Addr::new(127, 244, 1, 2)));
    }
}
