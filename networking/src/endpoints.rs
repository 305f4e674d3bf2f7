//! The endpoints of every Service, as one snapshot: from its EndpointSlices (labelled
//! `kubernetes.io/service-name`), or from its Endpoints object when it has no slice at all (clusters or
//! tools that only write Endpoints).
//!
//! Readiness follows upstream: an endpoint whose `ready` condition is unset counts as ready; in
//! Endpoints, `addresses` are ready and `notReadyAddresses` are not.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of an endpoint: the slice/subset port's name (empty when unnamed), number and protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointPort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// One address behind a Service.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    pub ready: bool,
    /// The ports of the slice (or Endpoints subset) this address came from.
    pub ports: Arc<Vec<EndpointPort>>,
}

impl Endpoint {
    /// The port number of the named port (`""` for an unnamed one) with this protocol.
    pub fn port(&self, name: &str, protocol: &str) -> Option<u16> {
        self.ports.iter().find(|p| p.name == name && p.protocol == protocol).map(|p| p.port)
    }
}

/// (namespace, service name) → its endpoints.
pub(crate) type EndpointIndex = HashMap<(String, String), Vec<Endpoint>>;

/// Builds the index from the current slices and Endpoints objects.
pub(crate) fn index(slices: &Store<EndpointSlice>, endpoints: &Store<Endpoints>) -> EndpointIndex {
    let mut out: EndpointIndex = HashMap::new();
    for slice in slices.state() {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else { continue };
        let key = (slice.namespace().unwrap_or_default(), service.clone());
        let ports: Arc<Vec<EndpointPort>> = Arc::new(
            slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(EndpointPort {
                        name: p.name.clone().unwrap_or_default(),
                        port: u16::try_from(p.port?).ok()?,
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    })
                })
                .collect(),
        );
        let list = out.entry(key).or_default();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else { continue };
                // The same address may sit in two slices while a controller moves it; keep one.
                if list.iter().any(|e| e.ip == ip && e.ports == ports) {
                    continue;
                }
                list.push(Endpoint { ip, hostname: ep.hostname.clone(), ready, ports: ports.clone() });
            }
        }
    }
    for eps in endpoints.state() {
        let key = (eps.namespace().unwrap_or_default(), eps.name_any());
        if out.contains_key(&key) {
            continue; // slices win, as in kube-proxy.
        }
        let list = out.entry(key).or_default();
        for subset in eps.subsets.iter().flatten() {
            let ports: Arc<Vec<EndpointPort>> = Arc::new(
                subset
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some(EndpointPort {
                            name: p.name.clone().unwrap_or_default(),
                            port: u16::try_from(p.port).ok()?,
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        })
                    })
                    .collect(),
            );
            let both = [(&subset.addresses, true), (&subset.not_ready_addresses, false)];
            for (addrs, ready) in both {
                for a in addrs.iter().flatten() {
                    let Ok(ip) = a.ip.parse::<Ipv4Addr>() else { continue };
                    list.push(Endpoint { ip, hostname: a.hostname.clone(), ready, ports: ports.clone() });
                }
            }
        }
    }
    out
}
