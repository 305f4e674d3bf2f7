//! The node IPAM controller (upstream's range allocator): each Node without `spec.podCIDR` gets a
//! free `/--node-cidr-mask-size` block of `--cluster-cidr` (`spec.podCIDR` and `spec.podCIDRs`).
//!
//! The used set is recomputed on every sync from the node cache (so a restart rebuilds it from the
//! existing nodes) plus the blocks this process has handed out that the cache does not show yet.
//! Syncs run one at a time, so two nodes can never be given the same block.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::{util as u, Stop};

pub const CONTROLLER: &str = "node-ipam-controller";

#[derive(Clone, Debug)]
pub struct ClusterCidr {
    pub base: u32,
    pub prefix: u8,
    pub mask: u8,
}

impl ClusterCidr {
    pub fn blocks(&self) -> u64 {
        1u64 << (self.mask - self.prefix)
    }

    pub fn block(&self, i: u64) -> String {
        let shift = 32 - u32::from(self.mask);
        let offset = if shift >= 32 { 0 } else { (i as u32) << shift };
        let ip = self.base.wrapping_add(offset);
        format!("{}/{}", Ipv4Addr::from(ip), self.mask)
    }
}

pub fn parse_cidr(s: &str, mask: u8) -> Result<ClusterCidr, String> {
    let (ip, len) = s.split_once('/').ok_or_else(|| format!("--cluster-cidr {s:?}: not a CIDR"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("--cluster-cidr {s:?}: not an IPv4 CIDR"))?;
    let prefix: u8 = len.parse().map_err(|_| format!("--cluster-cidr {s:?}: bad prefix length"))?;
    if prefix > 32 || !(1..=32).contains(&mask) || mask < prefix || mask - prefix > 30 {
        return Err(format!(
            "--node-cidr-mask-size {mask} must be between the cluster prefix /{prefix} and 32"
        ));
    }
    let base = u32::from(ip) & if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    Ok(ClusterCidr { base, prefix, mask })
}

struct IpamCtx {
    ctx: Arc<Ctx>,
    /// Blocks handed out by this process, by node name, until the cache shows them.
    pending: Mutex<HashMap<String, String>>,
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    let controller = Controller::for_shared_stream(ctx.inf.nodes.subscribe(), ctx.inf.nodes.store());
    // Controllers start once the shared caches have listed (see `Ctx::informers_ready`).
    if !ctx.informers_ready(&stop).await {
        return;
    }
    let ictx = Arc::new(IpamCtx { ctx, pending: Mutex::new(HashMap::new()) });
    // Concurrency 1: allocation must see every previous allocation.
    drive(CONTROLLER, controller, stop, 1, reconcile, ictx).await;
}

async fn reconcile(node: Arc<Node>, ic: Arc<IpamCtx>) -> Result<Action, ReconcileError> {
    if node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_some_and(|c| !c.is_empty()) {
        return Ok(Action::await_change());
    }
    let nodes = ic.ctx.inf.nodes.store().state();
    let cidr = &ic.ctx.cidr;
    let name = node.name_any();
    let block = {
        let mut pending = ic.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Forget pending blocks the cache now shows, or whose node is gone.
        pending.retain(|n, _| {
            nodes.iter().any(|x| {
                x.name_any() == *n
                    && x.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_none_or(str::is_empty)
            })
        });
        if let Some(b) = pending.get(&name) {
            Some(b.clone())
        } else {
            let mut used: HashSet<String> = nodes
                .iter()
                .flat_map(|n| {
                    let s = n.spec.clone().unwrap_or_default();
                    s.pod_cidrs.unwrap_or_default().into_iter().chain(s.pod_cidr)
                })
                .collect();
            used.extend(pending.values().cloned());
            let free = (0..cidr.blocks()).map(|i| cidr.block(i)).find(|b| !used.contains(b));
            if let Some(b) = &free {
                pending.insert(name.clone(), b.clone());
            }
            free
        }
    };
    let Some(block) = block else {
        ic.ctx.events.warning(
            CONTROLLER,
            node.as_ref(),
            "CIDRNotAvailable",
            format!("Node {name} status is now: CIDRNotAvailable"),
        );
        return Ok(Action::requeue(std::time::Duration::from_secs(30)));
    };
    let api: Api<Node> = Api::all(ic.ctx.client.clone());
    let p = json!({"spec": {"podCIDR": block, "podCIDRs": [block]}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await {
        Ok(_) => {
            ic.ctx.events.normal(
                CONTROLLER,
                node.as_ref(),
                "CIDRAssigned",
                format!("Assigned {block} to node {name}"),
            );
            Ok(Action::await_change())
        }
        Err(e) => {
            ic.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            if u::is_not_found(&e) {
                return Ok(Action::await_change());
            }
            ic.ctx.events.warning(
                CONTROLLER,
                node.as_ref(),
                "CIDRAssignmentFailed",
                format!("Failed to assign {block} to node {name}: {e}"),
            );
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_the_default_cluster_cidr() {
        let c = parse_cidr("127.244.0.0/16", 24).unwrap();
        assert_eq!(c.blocks(), 256);
        assert_eq!(c.block(0), "127.244.0.0/24");
        assert_eq!(c.block(255), "127.244.255.0/24");
        assert!(parse_cidr("127.244.0.0/16", 8).is_err());
        assert!(parse_cidr("nope", 24).is_err());
    }
}
