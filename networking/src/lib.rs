//! kplane's service networking: the hops a request takes from outside the cluster to a pod, as in
//! upstream Kubernetes — each a client of the API that learns everything from watches.
//!
//! - [`proxy`]: the service proxy, kube-proxy's userspace mode. It listens on every Service's
//!   `ClusterIP:port` (and NodePorts on the node addresses) and copies bytes to a ready endpoint.
//! - [`dns`]: cluster DNS, the kube-dns/CoreDNS `kubernetes` plugin's records for services and
//!   pods, from a watch-driven in-memory zone. Answers only the cluster domain; never recurses.
//! - [`ingress`]: an ingress controller for the `kplane` IngressClass that routes HTTP(S) by host
//!   and path straight to the backend Service's ready endpoints.
//! - [`bench`]: direct vs ClusterIP proxy vs ingress throughput and latency, in one run.
//!
//! Shared pieces: `informer` (a reflector store plus a change signal), `endpoints` (the ready
//! endpoints of each Service from EndpointSlices, or Endpoints when a Service has no slice), and
//! `events` (Warning Events on the objects a component could not serve), `pipe` (bytes both ways
//! with an idle timeout: proxied TCP connections and upgraded ingress connections), `workers`
//! (per-core data-plane threads the ingress and the proxy serve their connections on).
//!
//! Everything here reaches the cluster only through a `kube::Client`.

mod endpoints;
mod error;
mod events;
mod informer;
mod pipe;
mod workers;

pub mod bench;
pub mod dns;
pub mod fuzzing;
pub mod ingress;
pub mod proxy;

pub use error::Error;
