//! The cluster zone: an immutable snapshot of what every in-domain name resolves to, rebuilt from
//! the stores on each change, and the pure lookup over it (the CoreDNS `kubernetes` plugin's
//! records, schema 1.1 of the Kubernetes DNS spec).
//!
//! Names are handled as lowercase label lists relative to the cluster domain, read right to left:
//! - `<svc>.<ns>.svc`: ClusterIP (A), or the ready endpoint IPs of a headless service, or a CNAME
//!   for ExternalName.
//! - `<host>.<svc>.<ns>.svc`: a headless endpoint by hostname (or by its dashed IP when it has none).
//! - `_<port>._<proto>.<svc>.<ns>.svc`: SRV for a named port.
//! - `<a-b-c-d>.<ns>.pod`: A a.b.c.d (CoreDNS `pods insecure`: not checked against pods).
//!
//! A name that exists with no record of the asked type is NOERROR with no answer (NODATA), so a
//! resolver's AAAA lookup does not hide the A record; a name that does not exist is NXDOMAIN. Both
//! carry the zone's SOA in the authority section for negative caching.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::endpoints::EndpointIndex;

/// Record TTL, as kube-dns/CoreDNS's default.
pub(crate) const TTL: u32 = 5;

struct ServiceEntry {
    kind: ServiceKind,
    /// (name, protocol lowercased, service port) for named ports.
    ports: Vec<(String, String, u16)>,
}

enum ServiceKind {
    ClusterIp(Ipv4Addr),
    /// Headless: the ready endpoints (IP, label under the service, ports).
    Headless(Vec<HeadlessEndpoint>),
    ExternalName(String),
}

struct HeadlessEndpoint {
    ip: Ipv4Addr,
    label: String,
    /// (port name, protocol lowercased, endpoint port)
    ports: Vec<(String, String, u16)>,
}

pub(crate) struct Zone {
    domain: Name,
    domain_labels: usize,
    serial: u32,
    services: HashMap<(String, String), ServiceEntry>,
}

/// What to answer for one question.
pub(crate) struct Answer {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Zone {
    pub fn build(domain: &Name, serial: u32, services: &[Arc<Service>], eps: &EndpointIndex) -> Zone {
        let mut map = HashMap::new();
        for svc in services {
            let Some(spec) = &svc.spec else { continue };
            let key = (svc.namespace().unwrap_or_default(), svc.name_any());
            let named_ports = |p: &k8s_openapi::api::core::v1::ServicePort| {
                let name = p.name.clone().filter(|n| !n.is_empty())?;
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                Some((name, proto, u16::try_from(p.port).ok()?))
            };
            let ports: Vec<_> = spec.ports.iter().flatten().filter_map(named_ports).collect();
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                match &spec.external_name {
                    Some(n) => ServiceKind::ExternalName(n.clone()),
                    None => continue,
                }
            } else {
                match spec.cluster_ip.as_deref() {
                    Some("None") => {
                        let list = eps.get(&key).into_iter().flatten().filter(|e| e.ready);
                        let mut seen = Vec::new();
                        let mut out: Vec<HeadlessEndpoint> = Vec::new();
                        for e in list {
                            if seen.contains(&e.ip) {
                                continue;
                            }
                            seen.push(e.ip);
                            let label =
                                e.hostname.clone().unwrap_or_else(|| e.ip.to_string().replace('.', "-"));
                            let ports = e
                                .ports
                                .iter()
                                .filter(|p| !p.name.is_empty())
                                .map(|p| (p.name.clone(), p.protocol.to_ascii_lowercase(), p.port))
                                .collect();
                            out.push(HeadlessEndpoint { ip: e.ip, label: label.to_ascii_lowercase(), ports });
                        }
                        ServiceKind::Headless(out)
                    }
                    Some(ip) => match ip.parse() {
                        Ok(ip) => ServiceKind::ClusterIp(ip),
                        Err(_) => continue,
                    },
                    None => continue,
                }
            };
            map.insert(key, ServiceEntry { kind, ports });
        }
        Zone { domain: domain.clone(), domain_labels: domain.num_labels() as usize, serial, services: map }
    }

    pub fn in_zone(&self, name: &Name) -> bool {
        self.domain.zone_of(name)
    }

    fn soa(&self) -> Record {
        let mname = Name::from_ascii("ns.dns").and_then(|n| n.append_domain(&self.domain));
        let rname = Name::from_ascii("hostmaster").and_then(|n| n.append_domain(&self.domain));
        let soa = SOA::new(
            mname.unwrap_or_else(|_| self.domain.clone()),
            rname.unwrap_or_else(|_| self.domain.clone()),
            self.serial,
            7200,
            1800,
            86400,
            TTL,
        );
        Record::from_rdata(self.domain.clone(), TTL, RData::SOA(soa))
    }

    fn name(&self, relative: &str) -> Name {
        Name::from_ascii(relative)
            .and_then(|n| n.append_domain(&self.domain))
            .unwrap_or_else(|_| self.domain.clone())
    }

    /// Answers one in-zone question. The caller has checked [`Zone::in_zone`].
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let lower = qname.to_lowercase();
        // Labels relative to the domain, rightmost first: ["svc", ns, svc, ...].
        let all: Vec<String> = lower.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        let rel: Vec<&str> =
            all[..all.len().saturating_sub(self.domain_labels)].iter().rev().map(|s| s.as_str()).collect();
        let mut a = Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers: vec![],
            authority: vec![],
            additionals: vec![],
        };
        let exists = self.resolve(qname, &rel, qtype, &mut a);
        if !exists {
            a.code = ResponseCode::NXDomain;
        }
        if a.answers.is_empty() {
            a.authority.push(self.soa());
        }
        a
    }

    /// Fills answers; returns whether the name exists.
    fn resolve(&self, qname: &Name, rel: &[&str], qtype: RecordType, a: &mut Answer) -> bool {
        let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        match rel {
            // The apex and the fixed subtrees exist (their SOA/NS are not served: NODATA).
            [] | ["svc"] | ["pod"] => true,
            ["svc", ns] => self.services.keys().any(|(n, _)| n == ns),
            ["pod", _ns] => true,
            ["pod", _ns, ip] => match dashed_ip(ip) {
                Some(ip) => {
                    if want(RecordType::A) {
                        a.answers.push(Record::from_rdata(qname.clone(), TTL, RData::A(A(ip))));
                    }
                    true
                }
                None => false,
            },
            ["svc", ns, svc] => {
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else { return false };
                match &entry.kind {
                    ServiceKind::ClusterIp(ip) => {
                        if want(RecordType::A) {
                            a.answers.push(Record::from_rdata(qname.clone(), TTL, RData::A(A(*ip))));
                        }
                    }
                    ServiceKind::Headless(eps) => {
                        if want(RecordType::A) {
                            for e in eps {
                                a.answers.push(Record::from_rdata(qname.clone(), TTL, RData::A(A(e.ip))));
                            }
                        }
                    }
                    ServiceKind::ExternalName(target) => {
                        // A CNAME answers every type; the resolver chases the target itself.
                        if let Ok(t) = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))) {
                            a.answers.push(Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(t))));
                        }
                    }
                }
                if want(RecordType::SRV) {
                    for (port, proto, _) in &entry.ports {
                        self.srv(qname, ns, svc, entry, port, proto, a);
                    }
                }
                true
            }
            ["svc", ns, svc, host] if !host.starts_with('_') => {
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else { return false };
                let ServiceKind::Headless(eps) = &entry.kind else { return false };
                let mut found = false;
                for e in eps.iter().filter(|e| e.label == *host) {
                    found = true;
                    if want(RecordType::A) {
                        a.answers.push(Record::from_rdata(qname.clone(), TTL, RData::A(A(e.ip))));
                    }
                }
                found
            }
            ["svc", ns, svc, proto, port] if proto.starts_with('_') && port.starts_with('_') => {
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else { return false };
                let (port, proto) = (&port[1..], &proto[1..]);
                if !entry.ports.iter().any(|(n, p, _)| n == port && p == proto) {
                    return false;
                }
                if want(RecordType::SRV) {
                    self.srv(qname, ns, svc, entry, port, proto, a);
                }
                true
            }
            _ => false,
        }
    }

    /// SRV records for one named port, with the targets' A records as additionals.
    #[allow(clippy::too_many_arguments)]
    fn srv(
        &self,
        qname: &Name,
        ns: &str,
        svc: &str,
        entry: &ServiceEntry,
        port: &str,
        proto: &str,
        a: &mut Answer,
    ) {
        match &entry.kind {
            ServiceKind::ClusterIp(ip) => {
                let Some((_, _, num)) = entry.ports.iter().find(|(n, p, _)| n == port && p == proto) else {
                    return;
                };
                let target = self.name(&format!("{svc}.{ns}.svc"));
                a.answers.push(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, 100, *num, target.clone())),
                ));
                a.additionals.push(Record::from_rdata(target, TTL, RData::A(A(*ip))));
            }
            ServiceKind::Headless(eps) => {
                let weight = (100 / eps.len().max(1)) as u16;
                for e in eps {
                    let Some((_, _, num)) = e.ports.iter().find(|(n, p, _)| n == port && p == proto) else {
                        continue;
                    };
                    let target = self.name(&format!("{}.{svc}.{ns}.svc", e.label));
                    a.answers.push(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, weight, *num, target.clone())),
                    ));
                    a.additionals.push(Record::from_rdata(target, TTL, RData::A(A(e.ip))));
                }
            }
            ServiceKind::ExternalName(_) => {}
        }
    }
}

/// `10-244-0-1` → 10.244.0.1.
fn dashed_ip(label: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u8> = label.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    <[u8; 4]>::try_from(parts).ok().map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::dashed_ip;

    #[test]
    fn dashed_ip_parses_only_four_octets() {
        assert_eq!(dashed_ip("127-244-0-1"), Some(std::net::Ipv4Addr::new(127, 244, 0, 1)));
        for bad in ["127-244-0", "127-244-0-1-2", "127-244-0-256", "a-b-c-d", ""] {
            assert_eq!(dashed_ip(bad), None, "{bad}");
        }
    }
}
