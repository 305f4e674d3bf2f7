//! The routing table: an immutable snapshot built from every Ingress of our class, their
//! backends' ready endpoints, and their TLS certificates; and the host/path match over it.
//!
//! Precedence follows the Ingress spec and ingress-nginx: an exact host beats a `*.` wildcard
//! (which covers exactly one label), which beats rules without a host; within a host the longest
//! matching path wins, and at equal length Exact beats Prefix. Prefix matching is element-wise
//! (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`); ImplementationSpecific is Prefix. A
//! request no rule matches goes to the first `spec.defaultBackend` (oldest Ingress first), else to
//! the built-in 404 backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use rustls::sign::CertifiedKey;

use crate::endpoints::EndpointIndex;

/// A backend service port with its ready endpoints at build time.
pub(crate) struct Backend {
    pub service: String,
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        Some(self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()])
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PathKind {
    Exact,
    Prefix,
}

struct PathRule {
    path: String,
    kind: PathKind,
    backend: Arc<Backend>,
}

#[derive(Default)]
pub(crate) struct Routes {
    exact: HashMap<String, Vec<PathRule>>,
    /// "*.foo.com" stored as "foo.com".
    wildcard: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
    /// TLS: exact host → cert, and wildcard parent domain → cert.
    pub certs: HashMap<String, Arc<CertifiedKey>>,
    pub wildcard_certs: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("exact_hosts", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard_hosts", &self.wildcard.keys().collect::<Vec<_>>())
            .field("any_host_paths", &self.any_host.len())
            .field("tls_hosts", &self.certs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Routes {
    /// `ingresses` are ours, oldest first; `certs(ns, secret)` loads a TLS secret.
    pub fn build(
        ingresses: &[Arc<Ingress>],
        services: &Store<Service>,
        eps: &EndpointIndex,
        mut cert: impl FnMut(&str, &str) -> Option<Arc<CertifiedKey>>,
    ) -> Routes {
        let mut r = Routes::default();
        for ing in ingresses {
            let ns = ing.namespace().unwrap_or_default();
            let Some(spec) = &ing.spec else { continue };
            if r.default_backend.is_none() {
                if let Some(b) = &spec.default_backend {
                    r.default_backend = resolve(&ns, b, services, eps);
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
                let list = if host.is_empty() {
                    &mut r.any_host
                } else if let Some(parent) = host.strip_prefix("*.") {
                    r.wildcard.entry(parent.to_string()).or_default()
                } else {
                    r.exact.entry(host).or_default()
                };
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let kind = if p.path_type == "Exact" { PathKind::Exact } else { PathKind::Prefix };
                    let mut path = p.path.clone().unwrap_or_else(|| "/".into());
                    if kind == PathKind::Prefix && path.len() > 1 {
                        path = path.trim_end_matches('/').to_string();
                    }
                    // The oldest Ingress wins a duplicate (host, path, type), as ingress-nginx.
                    if list.iter().any(|x| x.path == path && x.kind == kind) {
                        continue;
                    }
                    let Some(backend) = resolve(&ns, &p.backend, services, eps) else { continue };
                    list.push(PathRule { path, kind, backend });
                }
            }
            for tls in spec.tls.iter().flatten() {
                let Some(secret) = &tls.secret_name else { continue };
                let Some(key) = cert(&ns, secret) else { continue };
                for h in tls.hosts.iter().flatten() {
                    let h = h.to_ascii_lowercase();
                    match h.strip_prefix("*.") {
                        Some(parent) => r.wildcard_certs.entry(parent.into()).or_insert_with(|| key.clone()),
                        None => r.certs.entry(h).or_insert_with(|| key.clone()),
                    };
                }
            }
        }
        let order = |v: &mut Vec<PathRule>| {
            // Longest first; Exact before Prefix at equal length.
            v.sort_by(|a, b| {
                b.path
                    .len()
                    .cmp(&a.path.len())
                    .then((a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
            })
        };
        r.exact.values_mut().for_each(order);
        r.wildcard.values_mut().for_each(order);
        order(&mut r.any_host);
        r
    }

    /// The backend for a request, or `None` for the built-in default backend.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = host.to_ascii_lowercase();
        let rules = if let Some(v) = self.exact.get(&host) {
            Some(v)
        } else if let Some(v) = host.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)) {
            Some(v)
        } else if !self.any_host.is_empty() {
            Some(&self.any_host)
        } else {
            None
        };
        rules
            .and_then(|rules| rules.iter().find(|r| matches(r, path)))
            .map(|r| &r.backend)
            .or(self.default_backend.as_ref())
    }

    pub fn cert_for(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        self.certs
            .get(&sni)
            .or_else(|| sni.split_once('.').and_then(|(_, p)| self.wildcard_certs.get(p)))
            .cloned()
    }
}

fn matches(rule: &PathRule, path: &str) -> bool {
    match rule.kind {
        PathKind::Exact => path == rule.path,
        PathKind::Prefix => {
            rule.path == "/"
                || path
                    .strip_prefix(rule.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    }
}

/// The ready endpoints of `backend`'s service port: the service port (by number or name) gives the
/// port name, which picks the endpoint port in the slices.
fn resolve(
    ns: &str,
    backend: &IngressBackend,
    services: &Store<Service>,
    eps: &EndpointIndex,
) -> Option<Arc<Backend>> {
    let sb = backend.service.as_ref()?; // resource backends are not supported
    let mut endpoints = Vec::new();
    let svc = services.get(&ObjectRef::new(&sb.name).within(ns));
    let port = svc.as_ref().and_then(|s| {
        s.spec
            .as_ref()?
            .ports
            .iter()
            .flatten()
            .find(|p| {
                let want = sb.port.as_ref();
                match (want.and_then(|w| w.number), want.and_then(|w| w.name.as_deref())) {
                    (Some(n), _) => p.port == n,
                    (None, Some(name)) => p.name.as_deref() == Some(name),
                    (None, None) => true,
                }
            })
            .cloned()
    });
    if let Some(port) = port {
        let name = port.name.clone().unwrap_or_default();
        let proto = port.protocol.as_deref().unwrap_or("TCP");
        for e in eps.get(&(ns.to_string(), sb.name.clone())).into_iter().flatten().filter(|e| e.ready) {
            if let Some(p) = e.port(&name, proto) {
                endpoints.push(SocketAddr::from((e.ip, p)));
            }
        }
    }
    endpoints.sort();
    endpoints.dedup();
    Some(Arc::new(Backend { service: format!("{ns}/{}", sb.name), endpoints, next: AtomicUsize::new(0) }))
}
