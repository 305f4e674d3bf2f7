//! kplane's nodes: simulated kubelets and the scheduler, talking to the cluster only through the API
//! (kube-rs), never to the store.
//!
//! Layout:
//! - `config.rs`: [`NodeConfig`], [`SchedulerConfig`], [`default_node_ip`].
//! - `quantity.rs`: resource quantities ("500m", "8Gi") as integers.
//! - `scheduler/`: the `default-scheduler` — `cache.rs` (nodes and their assigned pods, kept from
//!   watches), `filter.rs` (the feasibility checks and upstream's failure reasons), `score.rs`
//!   (upstream's default score plugins and weights, random tie-breaking), `spread.rs`
//!   (PodTopologySpread), `interpod.rs` (InterPodAffinity), `selector.rs` (label selectors),
//!   `mod.rs` (the loop: queue, decide, assume, bind concurrently, retry).
//! - `kubelet/`: one simulated kubelet per node — `node.rs` (registration, status, lease heartbeat),
//!   `ipam.rs` (pod IPs from `spec.podCIDR`), `worker.rs` (one task per pod: start, run, stop,
//!   complete, delete), `status.rs` (the pod statuses a kubelet writes), `traffic.rs` (the pod's
//!   listeners: HTTP on TCP ports, echo on UDP ports), `logs.rs` (per-container ring buffers),
//!   `server.rs` (the kubelet's HTTP endpoint: `/healthz`, `/containerLogs/...`), `mod.rs` (the
//!   pod watch and the wiring).
//!
//! Nothing here runs a container: pods are simulated (see ARCHITECTURE.md).

mod config;
mod error;
pub mod kubelet;
pub mod quantity;
pub mod runtime;
pub mod scheduler;

pub use config::{default_node_ip, NodeConfig, SchedulerConfig};
pub use error::Error;
pub use kubelet::{run_node, run_node_shared, PodInformer};
pub use scheduler::run_scheduler;
