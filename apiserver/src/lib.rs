//! kplane's Kubernetes API server.
//!
//! One table-driven registry (`api_types::resources`) plus generic handlers plus small per-resource
//! strategies: adding a resource is a table entry, never new handler code.
//!
//! - `route.rs`: path → (resource, namespace, name, subresource).
//! - `handlers/`: get, list, create, update, patch, delete, deletecollection for every resource.
//! - `watch.rs`: chunked watch streams; `cacher.rs`: the watch cache they are served from.
//! - `strategy.rs`, `validation.rs`: per-resource create/update preparation, defaults, validation.
//! - `subresources.rs`: scale and pods/binding; `eviction.rs`: pods/eviction honouring PodDisruptionBudgets; `podlog.rs`: pods/log, proxied to the pod's kubelet;
//!   `synthetic.rs`: componentstatuses; `reviews.rs`: the access, rules and token reviews; `tokenrequest.rs`:
//!   `serviceaccounts/token` (ServiceAccount JWTs, signed in `auth/serviceaccount.rs`).
//! - `services.rs`: ClusterIP and node-port allocation. `admission.rs`: default-on mutating admission.
//! - `ttl.rs`: store leases for objects that expire (Events, `--event-ttl`).
//! - `pki.rs`, `tls.rs`: certificates and HTTPS serving; `auth/`: authentication and RBAC.
//! - `objects.rs`, `meta.rs`: objects in and out of the store; metadata accessors.
//! - `render.rs`: JSON or Table responses. `discovery.rs`: discovery and /version.
//! - `error.rs`: `ApiError`, rendered as a `metav1.Status`.
//! - `server.rs`: the router, health, bootstrap objects, kubeconfig and serving.
//! - `audit.rs`: the audit log (upstream's `audit.k8s.io/v1` Policy and Events, rotated files).
//! - `metrics.rs`: `/metrics` (upstream's names, one registry per server) and the timed `Store`.
//!
//! Invariant: only this crate knows HTTP wire details. It reaches storage only through `store::Store`.

mod admission;
mod apply;
pub mod audit;
pub mod auth;
pub mod bench;
mod cacher;
mod classes;
mod crd;
mod discovery;
mod error;
mod eviction;
pub mod fuzzing;
mod handlers;
mod limitrange;
mod managed;
mod meta;
pub mod metrics;
mod metrics_api;
mod objects;
mod params;
mod patching;
pub mod pki;
mod podlog;
mod render;
mod reviews;
mod route;
mod server;
mod services;
mod strategy;
mod streaming;
mod subresources;
mod synthetic;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
mod tokenrequest;
mod ttl;
mod validation;
mod watch;

pub use error::{ApiError, Cause};
pub use server::{bootstrap, router, serve, write_kubeconfig, AppState, Config};
pub use services::Cidr;
