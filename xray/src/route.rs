//! Follows a request through the objects that decide its path: the listener that takes it, the
//! Ingress rule (with the precedence reason) or default backend, the Service and its port
//! resolution, the EndpointSlices and Endpoints, and the Pods. Where a hop is missing it says why
//! traffic would fail.
//!
//! The Ingress match is the ingress controller's own rule table
//! ([`networking::ingress::routes::RuleTable`]), so X-ray and the controller cannot disagree.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use networking::ingress::routes::{Hit, RuleTable};
use networking::proxy::kernel::{self, KernelPath};
use serde::Serialize;

use crate::Stored;

/// What to follow.
#[derive(Debug, Clone)]
pub enum Target {
    /// An HTTP request to the ingress controller for `host` and `path`.
    Host { host: String, path: String },
    /// A connection to a Service's ClusterIP (one port, or each of them).
    Service { namespace: String, name: String, port: Option<String> },
    /// A URL: `http://<clusterIP or node IP>:<port>/...`, the ingress controller's address, or a
    /// host name (a Service's DNS name, or an Ingress host).
    Url(String),
}

/// Settings that are cluster flags rather than objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--cluster-domain` of the cluster DNS.
    pub cluster_domain: String,
    /// The IngressClass the ingress controller serves.
    pub ingress_class: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { cluster_domain: "cluster.local".into(), ingress_class: "kplane".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("asking the API server: {0}")]
    Api(#[from] kube::Error),
}

/// The path a request takes, hop by hop, and what would make it fail.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The request, in words.
    pub request: String,
    /// The host and path an HTTP request carries (for the probe).
    pub host: Option<String>,
    pub path: String,
    /// Who takes the request first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressHop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceHop>,
    /// Why traffic would fail, in plain words; empty when the path is whole.
    pub problems: Vec<String>,
}

/// The listener that takes the request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `ingress controller`, `service proxy (ClusterIP)` or `service proxy (NodePort)`.
    pub listener: String,
    /// `ip:port` (for NodePorts, the first node's; the rest are in the Service hop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// For a ClusterIP or NodePort, the proxy mode that takes the address, as this machine shows
    /// it: `iptables` or `nftables` (kplane's rules in the kernel's ruleset take it) or
    /// `userspace` (a socket listens on it); none when none shows (the ruleset needs root to read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_mode: Option<String>,
    /// In a kernel mode, the rules the connection walks and their DNAT targets, read from the live
    /// ruleset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelPath>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressHop {
    /// The Ingress whose rule or default backend matched; none for the built-in default backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Stored>,
    /// `host path (pathType)` of the matching rule; none when a default backend answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why this rule won, or why a default backend answers.
    pub reason: String,
    /// `service:port` the rule sends to; none for the built-in default backend (404).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHop {
    pub object: Stored,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// `k=v,...`; none when the Service has no selector (its endpoints are written by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The names the cluster DNS answers for this Service.
    pub dns: Vec<String>,
    /// The ports this request may use (one when the request names it).
    pub ports: Vec<PortHop>,
    pub slices: Vec<SliceHop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointsHop>,
    pub pods: Vec<PodHop>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortHop {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    /// As written: a number or a container port name.
    pub target_port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
    /// `nodeIP:nodePort` on every node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_listeners: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceHop {
    pub object: Stored,
    /// `name:port/protocol` of the slice.
    pub ports: Vec<String>,
    pub addresses: Vec<AddressHop>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressHop {
    pub ip: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsHop {
    pub object: Stored,
    /// `ip:port` ready to serve.
    pub ready: Vec<String>,
    pub not_ready: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodHop {
    pub object: Stored,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The container port the Service's targetPort resolves to, on this pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    pub phase: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Follows `target` through the cluster that `client` reaches, with the default cluster domain and
/// ingress class.
pub async fn trace(client: &kube::Client, target: &Target) -> Result<Route, Error> {
    trace_with(client, target, &Options::default()).await
}

/// [`trace`] with the cluster's own settings.
pub async fn trace_with(client: &kube::Client, target: &Target, opts: &Options) -> Result<Route, Error> {
    match target {
        Target::Host { host, path } => {
            let path = normalise_path(path)?;
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(Error::Invalid(format!("{host:?} is not a host name")));
            }
            via_ingress(client, host, &path, opts).await
        }
        Target::Service { namespace, name, port } => {
            let svc = get_service(client, namespace, name).await?;
            let mut route = blank(format!("a connection to Service {namespace}/{name}"), None, "/".into());
            let ports = select_ports(&svc, port.as_deref())?;
            service_route(client, &svc, ports, opts, &mut route, Listener::ClusterIp).await?;
            Ok(route)
        }
        Target::Url(url) => via_url(client, url, opts).await,
    }
}

/// Which listener a Service hop is entered through.
#[derive(Clone, Copy, PartialEq)]
enum Listener {
    ClusterIp,
    NodePort,
    /// Behind the ingress controller, which goes straight to the endpoints.
    Ingress,
}

fn blank(request: String, host: Option<String>, path: String) -> Route {
    Route { request, host, path, entry: None, ingress: None, service: None, problems: Vec::new() }
}

fn normalise_path(path: &str) -> Result<String, Error> {
    if path.is_empty() {
        return Ok("/".into());
    }
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!("{path:?} is not a URL path (it must start with /)")));
    }
    Ok(path.to_string())
}

async fn get_service(client: &kube::Client, ns: &str, name: &str) -> Result<Service, Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await?.ok_or_else(|| Error::NotFound(format!("Service {ns}/{name} does not exist")))
}

/// The Service ports a request may use: the one named (by number or name), or all.
fn select_ports(svc: &Service, want: Option<&str>) -> Result<Vec<ServicePort>, Error> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    let Some(want) = want else { return Ok(ports) };
    let found: Vec<ServicePort> = ports
        .iter()
        .filter(|p| {
            want.parse::<i32>().map(|n| n == p.port).unwrap_or(false) || p.name.as_deref() == Some(want)
        })
        .cloned()
        .collect();
    if found.is_empty() {
        let have: Vec<String> = ports.iter().map(port_label).collect();
        return Err(Error::NotFound(format!(
            "Service {}/{} has no port {want} (it has {})",
            svc.namespace().unwrap_or_default(),
            svc.name_any(),
            if have.is_empty() { "none".into() } else { have.join(", ") }
        )));
    }
    Ok(found)
}

fn port_label(p: &ServicePort) -> String {
    match &p.name {
        Some(n) if !n.is_empty() => format!("{n}:{}", p.port),
        _ => p.port.to_string(),
    }
}

async fn via_ingress(client: &kube::Client, host: &str, path: &str, opts: &Options) -> Result<Route, Error> {
    let mut route = blank(
        format!("GET http://{host}{path} through the ingress controller"),
        Some(host.into()),
        path.into(),
    );
    let ingresses = Api::<Ingress>::all(client.clone()).list(&ListParams::default()).await?.items;
    let classes: Vec<std::sync::Arc<IngressClass>> = Api::<IngressClass>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    let mut ours: Vec<&Ingress> =
        ingresses.iter().filter(|i| networking::ingress::is_ours(i, &classes, &opts.ingress_class)).collect();
    // Oldest first, as the controller orders them.
    ours.sort_by_key(|i| (i.creation_timestamp().map(|t| t.0), i.namespace(), i.name_any()));
    route.entry = Some(Entry {
        listener: "ingress controller".into(),
        address: ours.iter().find_map(|i| ingress_address(i)),
        proxy_mode: None,
        kernel: None,
    });
    if route.entry.as_ref().is_some_and(|e| e.address.is_none()) {
        route.problems.push(format!(
            "no Ingress of class {} has an address in its status: is the ingress controller running?",
            opts.ingress_class
        ));
    }
    if ours.is_empty() {
        route.problems.push(format!(
            "no Ingress is served by the {} ingress controller, so every request gets its built-in 404",
            opts.ingress_class
        ));
    }
    let table = RuleTable::build(ours.iter().copied(), |ns, b| Some((ns.to_string(), b.clone())));
    let Some(hit) = table.lookup(host, path) else {
        route.ingress = Some(IngressHop {
            object: None,
            rule: None,
            reason: "no rule matched this host and path and no Ingress has a spec.defaultBackend: the \
                     controller's built-in default backend answers 404"
                .into(),
            backend: None,
        });
        return Ok(route);
    };
    let (ns, backend) = hit.target().clone();
    let (origin, rule) = match &hit {
        Hit::Rule { origin, .. } => {
            let host = if origin.host.is_empty() { "*" } else { &origin.host };
            (*origin, Some(format!("{host} {} ({})", origin.path, origin.path_type)))
        }
        Hit::Default { ingress, .. } => (*ingress, None),
    };
    let reason = hit.reason();
    let object = ours
        .iter()
        .find(|i| i.namespace().as_deref() == Some(&origin.namespace) && i.name_any() == origin.ingress)
        .and_then(|i| Stored::of("networking.k8s.io", "ingresses", &i.metadata));
    route.ingress = Some(IngressHop { object, rule, reason, backend: Some(backend_label(&backend)) });
    let Some(sb) = &backend.service else {
        route.problems.push(
            "the backend is a resource backend, which the kplane ingress controller does not serve".into(),
        );
        return Ok(route);
    };
    let svc = match get_service(client, &ns, &sb.name).await {
        Ok(svc) => svc,
        Err(Error::NotFound(_)) => {
            route.problems.push(format!(
                "the rule's backend Service {ns}/{} does not exist: the ingress controller answers 503",
                sb.name
            ));
            return Ok(route);
        }
        Err(e) => return Err(e),
    };
    let want = sb.port.as_ref().and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()));
    let ports = match select_ports(&svc, want.as_deref()) {
        Ok(p) => p,
        Err(Error::NotFound(msg)) => {
            route.problems.push(format!("{msg}: the ingress controller answers 503"));
            return Ok(route);
        }
        Err(e) => return Err(e),
    };
    service_route(client, &svc, ports, opts, &mut route, Listener::Ingress).await?;
    Ok(route)
}

fn backend_label(b: &IngressBackend) -> String {
    match &b.service {
        Some(s) => {
            let port = s.port.as_ref().and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()));
            format!("{}:{}", s.name, port.unwrap_or_else(|| "?".into()))
        }
        None => b.resource.as_ref().map(|r| format!("{}/{}", r.kind, r.name)).unwrap_or_else(|| "?".into()),
    }
}

/// The controller's address from an Ingress's status: `ip:port` (the first port is HTTP).
fn ingress_address(ing: &Ingress) -> Option<String> {
    let lb = ing.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?;
    let ip = lb.ip.clone().or_else(|| lb.hostname.clone())?;
    let port = lb.ports.as_ref().and_then(|p| p.first()).map(|p| p.port).unwrap_or(80);
    Some(format!("{ip}:{port}"))
}

async fn via_url(client: &kube::Client, url: &str, opts: &Options) -> Result<Route, Error> {
    let parsed = parse_url(url)?;
    let path = parsed.path.clone();
    if let Ok(ip) = parsed.host.parse::<IpAddr>() {
        let port = parsed.port;
        // A ClusterIP?
        let services = Api::<Service>::all(client.clone()).list(&ListParams::default()).await?.items;
        let ip_s = ip.to_string();
        for svc in &services {
            let spec = svc.spec.as_ref();
            let ips: Vec<&String> = spec.and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten().collect();
            if ips.iter().any(|c| **c == ip_s) || spec.and_then(|s| s.cluster_ip.as_ref()) == Some(&ip_s) {
                let mut route = blank(format!("GET {url} (a ClusterIP)"), Some(parsed.host.clone()), path);
                let ports = select_ports(svc, Some(&port.to_string()))?;
                service_route(client, svc, ports, opts, &mut route, Listener::ClusterIp).await?;
                return Ok(route);
            }
        }
        // A node's address and a NodePort?
        let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
        if let Some(node) = nodes.iter().find(|n| node_ips(n).contains(&ip_s)) {
            let svc = services.iter().find(|s| {
                s.spec
                    .iter()
                    .flat_map(|sp| sp.ports.iter().flatten())
                    .any(|p| p.node_port == Some(i32::from(port)))
            });
            let Some(svc) = svc else {
                return Err(Error::NotFound(format!(
                    "{ip} is node {}, but no Service has nodePort {port}",
                    node.name_any()
                )));
            };
            let mut route = blank(
                format!("GET {url} (NodePort {port} on node {})", node.name_any()),
                Some(parsed.host.clone()),
                path,
            );
            let ports: Vec<ServicePort> = svc
                .spec
                .iter()
                .flat_map(|sp| sp.ports.iter().flatten())
                .filter(|p| p.node_port == Some(i32::from(port)))
                .cloned()
                .collect();
            service_route(client, svc, ports, opts, &mut route, Listener::NodePort).await?;
            if let Some(e) = &mut route.entry {
                e.address = Some(format!("{ip}:{port}"));
            }
            return Ok(route);
        }
        // The ingress controller's own address: the request carries the IP as its host.
        let ingresses = Api::<Ingress>::all(client.clone()).list(&ListParams::default()).await?.items;
        if ingresses.iter().any(|i| ingress_address(i).as_deref() == Some(&format!("{ip}:{port}"))) {
            return via_ingress(client, &parsed.host, &parsed.path, opts).await;
        }
        return Err(Error::NotFound(format!(
            "{ip}:{port} is not a Service's ClusterIP port, a node's NodePort, or the ingress controller"
        )));
    }
    // A name: a Service's DNS name, or else an Ingress host.
    let suffix = format!(".svc.{}", opts.cluster_domain.trim_end_matches('.'));
    let host = parsed.host.trim_end_matches('.');
    if let Some(rest) = host.strip_suffix(&suffix).or_else(|| host.strip_suffix(".svc")) {
        if let Some((name, ns)) = rest.split_once('.') {
            let svc = get_service(client, ns, name).await?;
            let mut route = blank(format!("GET {url} (a Service's DNS name)"), Some(parsed.host.clone()), path);
            let ports = select_ports(&svc, Some(&parsed.port.to_string()))?;
            service_route(client, &svc, ports, opts, &mut route, Listener::ClusterIp).await?;
            return Ok(route);
        }
    }
    via_ingress(client, &parsed.host, &parsed.path, opts).await
}

struct Url {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, Error> {
    let bad = |why: &str| Error::Invalid(format!("{url:?} is not a URL like http://<host>[:port]/path: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("no host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad("the port is not a number from 1 to 65535"))?)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no host"));
    }
    let path = path.split(['?', '#']).next().filter(|p| !p.is_empty()).unwrap_or("/");
    Ok(Url { host: host.to_ascii_lowercase(), port, path: normalise_path(path)? })
}

fn node_ips(n: &Node) -> Vec<String> {
    n.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .map(|a| a.address.clone())
        .collect()
}

/// Which proxy takes `address` (`ip:port`) on this machine: kplane's iptables rules or its
/// nftables table, read from the live ruleset (root only), or a userspace listener
/// (`/proc/net/tcp`, readable by anyone).
async fn proxy_mode(address: &str, protocol: &str, route: &mut Route) -> (Option<String>, Option<KernelPath>) {
    let Ok(addr) = address.parse::<std::net::SocketAddrV4>() else { return (None, None) };
    let (ip, port) = (*addr.ip(), addr.port());
    let live = kernel::read_live().await.ok().filter(|s| s.is_kplanes());
    if let Some(path) = live.as_ref().and_then(|s| s.walk(ip, port, protocol)) {
        return (Some("iptables".into()), Some(path));
    }
    let nft = kernel::read_live_nft().await.ok().flatten();
    if let Some(path) = nft.as_ref().and_then(|t| t.walk(ip, port, protocol)) {
        return (Some("nftables".into()), Some(path));
    }
    // Another cluster on this machine may run in a kernel mode while this one runs userspace.
    if protocol.eq_ignore_ascii_case("TCP") && kernel::tcp_listener(ip, port) {
        return (Some("userspace".into()), None);
    }
    let mode = match (&live, &nft) {
        (Some(_), _) => "iptables",
        (None, Some(_)) => "nftables",
        (None, None) => return (None, None),
    };
    route.problems.push(format!(
        "no {mode} rule and no userspace listener takes {address}/{protocol}: the service proxy has not \
         synced this Service yet"
    ));
    (Some(mode.into()), None)
}

/// Fills the Service hop (and the entry, unless the ingress took the request) for `ports`.
async fn service_route(
    client: &kube::Client,
    svc: &Service,
    ports: Vec<ServicePort>,
    opts: &Options,
    route: &mut Route,
    listener: Listener,
) -> Result<(), Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let domain = opts.cluster_domain.trim_end_matches('.');
    let fqdn = format!("{name}.{ns}.svc.{domain}");
    let mut dns = vec![fqdn.clone()];
    for p in &ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            dns.push(format!("_{n}._{proto}.{fqdn} (SRV)"));
        }
    }
    let nodes = if ports.iter().any(|p| p.node_port.is_some()) {
        Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items
    } else {
        Vec::new()
    };
    let port_hops: Vec<PortHop> = ports
        .iter()
        .map(|p| PortHop {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            target_port: match &p.target_port {
                Some(IntOrString::Int(n)) => n.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
                None => p.port.to_string(),
            },
            node_port: p.node_port,
            node_listeners: match p.node_port {
                Some(np) => nodes.iter().flat_map(node_ips).map(|ip| format!("{ip}:{np}")).collect(),
                None => Vec::new(),
            },
        })
        .collect();
    if route.entry.is_none() {
        let first = port_hops.first();
        let (kind, address) = match listener {
            Listener::NodePort => ("NodePort", first.and_then(|p| p.node_listeners.first().cloned())),
            _ => (
                "ClusterIP",
                spec.cluster_ip
                    .as_ref()
                    .filter(|ip| !ip.is_empty() && *ip != "None")
                    .and_then(|ip| first.map(|p| format!("{ip}:{}", p.port))),
            ),
        };
        let protocol = first.map(|p| p.protocol.clone()).unwrap_or_else(|| "TCP".into());
        let (proxy_mode, kernel) = match &address {
            Some(a) => proxy_mode(a, &protocol, route).await,
            None => (None, None),
        };
        let listener = match proxy_mode.as_deref() {
            Some(mode @ ("iptables" | "nftables")) => format!("kernel NAT, {mode} mode ({kind})"),
            _ => format!("service proxy ({kind})"),
        };
        route.entry = Some(Entry { listener, address, proxy_mode, kernel });
    }
    if type_ == "ExternalName" {
        route.problems.push(format!(
            "Service {ns}/{name} is ExternalName: DNS answers {fqdn} with a CNAME to {}, and no proxy carries \
             its traffic",
            spec.external_name.clone().unwrap_or_default()
        ));
    } else if headless && listener != Listener::Ingress {
        route.problems.push(format!(
            "Service {ns}/{name} is headless (clusterIP: None): there is no VIP to connect to; DNS answers \
             {fqdn} with the ready pod IPs"
        ));
    }
    if port_hops.is_empty() {
        route.problems.push(format!("Service {ns}/{name} has no ports"));
    }

    // EndpointSlices and Endpoints, as the controllers wrote them.
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?
        .items;
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), &ns).get_opt(&name).await?;
    // `k=v,...`, as a label selector query and as the hop shows it.
    let selector = spec
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|s| s.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
    let pods = match &selector {
        Some(sel) => {
            Api::<Pod>::namespaced(client.clone(), &ns).list(&ListParams::default().labels(sel)).await?.items
        }
        None => Vec::new(),
    };

    let slice_hops: Vec<SliceHop> = slices
        .iter()
        .filter_map(|s| {
            Some(SliceHop {
                object: Stored::of("discovery.k8s.io", "endpointslices", &s.metadata)?,
                ports: s
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| {
                        format!(
                            "{}:{}/{}",
                            p.name.clone().unwrap_or_default(),
                            p.port.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                            p.protocol.clone().unwrap_or_else(|| "TCP".into())
                        )
                    })
                    .collect(),
                addresses: s
                    .endpoints
                    .iter()
                    .flat_map(|e| {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        let pod = e.target_ref.as_ref().and_then(|r| r.name.clone());
                        let node = e.node_name.clone();
                        e.addresses.iter().map(move |ip| AddressHop {
                            ip: ip.clone(),
                            ready,
                            pod: pod.clone(),
                            node: node.clone(),
                        })
                    })
                    .collect(),
            })
        })
        .collect();
    let endpoints_hop = endpoints.as_ref().and_then(|ep| {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for subset in ep.subsets.iter().flatten() {
            let ports: Vec<i32> = subset.ports.iter().flatten().map(|p| p.port).collect();
            for (list, addrs) in
                [(&mut ready, &subset.addresses), (&mut not_ready, &subset.not_ready_addresses)]
            {
                for a in addrs.iter().flatten() {
                    for p in &ports {
                        list.push(format!("{}:{p}", a.ip));
                    }
                }
            }
        }
        Some(EndpointsHop { object: Stored::of("", "endpoints", &ep.metadata)?, ready, not_ready })
    });

    let pod_hops: Vec<PodHop> = pods
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let port = port_hops.first().and_then(|ph| resolve_target_port(p, &ph.target_port));
            Some(PodHop {
                object: Stored::of("", "pods", &p.metadata)?,
                ip: status.and_then(|s| s.pod_ip.clone()),
                port,
                phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into()),
                ready: ready && p.metadata.deletion_timestamp.is_none(),
                node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            })
        })
        .collect();

    // Why traffic would fail.
    if type_ != "ExternalName" {
        match &selector {
            None => {
                if slice_hops.iter().all(|s| s.addresses.is_empty())
                    && endpoints_hop.as_ref().is_none_or(|e| e.ready.is_empty())
                {
                    route.problems.push(format!(
                        "Service {ns}/{name} has no selector and no one wrote endpoints for it: there is \
                         nowhere to send traffic"
                    ));
                }
            }
            Some(sel) if pods.is_empty() => {
                route.problems.push(format!("the selector {sel} of Service {ns}/{name} matches no pods"));
            }
            Some(_) => {
                if !pod_hops.iter().any(|p| p.ready) {
                    route.problems.push(format!(
                        "none of the {} pods Service {ns}/{name} selects is ready",
                        pod_hops.len()
                    ));
                }
                for ph in &port_hops {
                    if ph.target_port.parse::<i32>().is_err() {
                        for p in pods.iter().filter(|p| resolve_target_port(p, &ph.target_port).is_none()) {
                            route.problems.push(format!(
                                "port {} targets the container port named {:?}, which pod {} does not declare",
                                ph.port,
                                ph.target_port,
                                p.name_any()
                            ));
                        }
                    }
                }
            }
        }
        let ready_slices = slice_hops.iter().flat_map(|s| &s.addresses).filter(|a| a.ready).count();
        let ready_eps = endpoints_hop.as_ref().map_or(0, |e| e.ready.len());
        if ready_slices == 0 && ready_eps == 0 && !port_hops.is_empty() {
            let consequence = match listener {
                Listener::Ingress => "the ingress controller answers 503",
                _ => "the service proxy refuses connections",
            };
            route.problems.push(format!("Service {ns}/{name} has no ready endpoints: {consequence}"));
        }
    }

    route.service = Some(ServiceHop {
        object: Stored::of("", "services", &svc.metadata)
            .ok_or_else(|| Error::NotFound("services are not stored".into()))?,
        type_,
        cluster_ip: spec.cluster_ip.clone().filter(|ip| !ip.is_empty()),
        external_name: spec.external_name.clone(),
        selector,
        dns,
        ports: port_hops,
        slices: slice_hops,
        endpoints: endpoints_hop,
        pods: pod_hops,
    });
    Ok(())
}

/// A targetPort on one pod: a number as it is, a name through the pod's container ports.
fn resolve_target_port(pod: &Pod, target: &str) -> Option<i32> {
    if let Ok(n) = target.parse::<i32>() {
        return Some(n);
    }
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(target))
        .map(|p| p.container_port)
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_parse_or_say_why_not() {
        let u = parse_url("http://127.96.0.12:8080/a/b?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.96.0.12", 8080, "/a/b"));
        let u = parse_url("https://FooBar.com").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("foobar.com", 443, "/"));
        let u = parse_url("http://[::1]:81/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        for bad in [
            "",
            "foo",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://h:x/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
