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

/// Where a path rule came from, for explaining a match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub namespace: String,
    pub ingress: String,
    /// The rule's host as written (`""` for a rule without one).
    pub host: String,
    /// The path as written (`/` when none was given).
    pub path: String,
    /// `Exact`, `Prefix` or `ImplementationSpecific`.
    pub path_type: String,
}

struct PathRule<T> {
    /// Normalised: a Prefix path without its trailing slash.
    path: String,
    exact: bool,
    origin: Origin,
    target: T,
}

/// How a request's host picked its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Exact,
    Wildcard,
    AnyHost,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Hit<'a, T> {
    /// A path rule matched.
    Rule { target: &'a T, origin: &'a Origin, host: HostMatch },
    /// No rule matched: the first `spec.defaultBackend`, from this Ingress.
    Default { target: &'a T, ingress: &'a Origin },
}

impl<T> Hit<'_, T> {
    pub fn target(&self) -> &T {
        match self {
            Hit::Rule { target, .. } | Hit::Default { target, .. } => target,
        }
    }

    /// Why this rule and not another, in upstream's precedence terms.
    pub fn reason(&self) -> String {
        match self {
            Hit::Rule { origin, host, .. } => {
                let host = match host {
                    HostMatch::Exact => format!("host {} matched exactly", origin.host),
                    HostMatch::Wildcard => format!("wildcard host {} matched (no exact host rule)", origin.host),
                    HostMatch::AnyHost => "no rule names this host, so the rules without a host apply".into(),
                };
                let path = if origin.path_type == "Exact" {
                    format!("path {} matched exactly", origin.path)
                } else {
                    format!("{} is the longest matching {} path", origin.path, origin.path_type)
                };
                format!("{host}; {path}")
            }
            Hit::Default { ingress, .. } => format!(
                "no rule matched this host and path: spec.defaultBackend of Ingress {}/{} (the oldest with one)",
                ingress.namespace, ingress.ingress
            ),
        }
    }
}

/// Every rule of a set of Ingresses, indexed by host, with upstream's precedence; `T` is what a
/// backend resolves to (the controller's ready endpoints, X-ray's explanation).
pub struct RuleTable<T> {
    exact: HashMap<String, Vec<PathRule<T>>>,
    /// "*.foo.com" stored as "foo.com".
    wildcard: HashMap<String, Vec<PathRule<T>>>,
    any_host: Vec<PathRule<T>>,
    default_backend: Option<(Origin, T)>,
}

impl<T> Default for RuleTable<T> {
    fn default() -> Self {
        RuleTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: Vec::new(),
            default_backend: None,
        }
    }
}

impl<T> RuleTable<T> {
    /// `ingresses` oldest first (the oldest wins a duplicate host/path/type and gives the default
    /// backend, as ingress-nginx); `resolve(namespace, backend)` gives a backend's target, and a
    /// rule whose backend does not resolve is left out.
    pub fn build<'a>(
        ingresses: impl IntoIterator<Item = &'a Ingress>,
        mut resolve: impl FnMut(&str, &IngressBackend) -> Option<T>,
    ) -> RuleTable<T> {
        let mut r = RuleTable::default();
        for ing in ingresses {
            let ns = ing.namespace().unwrap_or_default();
            let Some(spec) = &ing.spec else { continue };
            let origin = |host: &str, path: &str, path_type: &str| Origin {
                namespace: ns.clone(),
                ingress: ing.name_any(),
                host: host.to_string(),
                path: path.to_string(),
                path_type: path_type.to_string(),
            };
            if r.default_backend.is_none() {
                if let Some(b) = &spec.default_backend {
                    r.default_backend = resolve(&ns, b).map(|t| (origin("", "", ""), t));
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
                let list = if host.is_empty() {
                    &mut r.any_host
                } else if let Some(parent) = host.strip_prefix("*.") {
                    r.wildcard.entry(parent.to_string()).or_default()
                } else {
                    r.exact.entry(host.clone()).or_default()
                };
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let exact = p.path_type == "Exact";
                    let written = p.path.clone().unwrap_or_else(|| "/".into());
                    let mut path = written.clone();
                    if !exact && path.len() > 1 {
                        path = path.trim_end_matches('/').to_string();
                    }
                    if list.iter().any(|x| x.path == path && x.exact == exact) {
                        continue;
                    }
                    let Some(target) = resolve(&ns, &p.backend) else { continue };
                    list.push(PathRule { path, exact, origin: origin(&host, &written, &p.path_type), target });
                }
            }
        }
        let order = |v: &mut Vec<PathRule<T>>| {
            // Longest first; Exact before Prefix at equal length.
            v.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(b.exact.cmp(&a.exact)))
        };
        r.exact.values_mut().for_each(order);
        r.wildcard.values_mut().for_each(order);
        order(&mut r.any_host);
        r
    }

    /// The rule for a request, or `None` for the built-in default backend.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Hit<'_, T>> {
        // Hosts are stored lowercase; most requests already send them so.
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let rules = if let Some(v) = self.exact.get(host.as_ref()) {
            Some((v, HostMatch::Exact))
        } else if let Some(v) = host.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)) {
            Some((v, HostMatch::Wildcard))
        } else if !self.any_host.is_empty() {
            Some((&self.any_host, HostMatch::AnyHost))
        } else {
            None
        };
        let hit = rules.and_then(|(rules, how)| {
            rules.iter().find(|r| matches(r, path)).map(|r| Hit::Rule {
                target: &r.target,
                origin: &r.origin,
                host: how,
            })
        });
        hit.or_else(|| self.default_backend.as_ref().map(|(o, t)| Hit::Default { target: t, ingress: o }))
    }
}

/// The controller's snapshot: the rule table with each backend's ready endpoints, and the TLS
/// certificates by host.
#[derive(Default)]
pub(crate) struct Routes {
    table: RuleTable<Arc<Backend>>,
    /// TLS: exact host → cert, and wildcard parent domain → cert.
    pub certs: HashMap<String, Arc<CertifiedKey>>,
    pub wildcard_certs: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("exact_hosts", &self.table.exact.keys().collect::<Vec<_>>())
            .field("wildcard_hosts", &self.table.wildcard.keys().collect::<Vec<_>>())
            .field("any_host_paths", &self.table.any_host.len())
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
        let mut r = Routes {
            table: RuleTable::build(ingresses.iter().map(|i| i.as_ref()), |ns, b| {
                resolve(ns, b, services, eps)
            }),
            ..Routes::default()
        };
        for ing in ingresses {
            let ns = ing.namespace().unwrap_or_default();
            for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
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
        r
    }

    /// The backend for a request, or `None` for the built-in default backend.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        self.table.lookup(host, path).map(|hit| match hit {
            Hit::Rule { target, .. } | Hit::Default { target, .. } => target,
        })
    }

    pub fn cert_for(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        self.certs
            .get(&sni)
            .or_else(|| sni.split_once('.').and_then(|(_, p)| self.wildcard_certs.get(p)))
            .cloned()
    }
}

fn matches<T>(rule: &PathRule<T>, path: &str) -> bool {
    if rule.exact {
        return path == rule.path;
    }
    rule.path == "/"
        || path.strip_prefix(rule.path.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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

impl Routes {
    /// Routes for the fuzz entry (`networking::fuzzing::ingress`): `ingresses`' rules, each backend
    /// service's endpoints given by `endpoints(service name)`.
    pub(crate) fn for_fuzzing(ingresses: &[Ingress], endpoints: impl Fn(&str) -> Vec<SocketAddr>) -> Routes {
        let table = RuleTable::build(ingresses, |ns, b| {
            let name = &b.service.as_ref()?.name;
            let endpoints = endpoints(name);
            Some(Arc::new(Backend { service: format!("{ns}/{name}"), endpoints, next: AtomicUsize::new(0) }))
        });
        Routes { table, ..Routes::default() }
    }
}
