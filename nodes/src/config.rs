//! Configuration of a node and of the scheduler.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// One simulated node (a kubelet).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The Node's name (`worker0`, …), also its `kubernetes.io/hostname` label.
    pub name: String,
    /// The node's InternalIP; the kubelet's HTTP server listens on it. Loopback only.
    pub node_ip: Ipv4Addr,
    /// The kubelet's HTTP port on `node_ip`; 0 picks a free one (published in
    /// `status.daemonEndpoints.kubeletEndpoint.port`).
    pub kubelet_port: u16,
    /// `capacity`/`allocatable` cpu, e.g. "4".
    pub cpu: String,
    /// `capacity`/`allocatable` memory, e.g. "8Gi".
    pub memory: String,
    /// `capacity`/`allocatable` pods (upstream's default is 110).
    pub max_pods: u32,
    /// `capacity`/`allocatable` ephemeral-storage.
    pub ephemeral_storage: String,
    /// Extra labels set at registration (on top of the kubelet's well-known ones).
    pub labels: BTreeMap<String, String>,
    /// Upper bound on a deleted pod's grace period (the pod's own is used when shorter), so that
    /// deletions finish fast on a simulated node.
    pub max_grace: Duration,
    /// How long a bound pod stays `ContainerCreating` before it runs.
    pub start_delay: Duration,
    /// How often the kubelet renews its Lease (upstream: 10 s).
    pub lease_renew_interval: Duration,
    /// The Lease's `leaseDurationSeconds` (upstream: 40).
    pub lease_duration_seconds: i32,
    /// How often the kubelet computes its node status and writes it if it changed (upstream
    /// `nodeStatusUpdateFrequency`: 10 s).
    pub status_update_frequency: Duration,
    /// How often the node status is written even when unchanged (upstream
    /// `nodeStatusReportFrequency`: 5 min).
    pub status_report_frequency: Duration,
    /// How many pod status writes may be in flight at once.
    pub status_concurrency: usize,
    /// The cluster's DNS domain (containers' resolv.conf search path).
    pub cluster_domain: String,
    /// The cluster DNS address for containers' resolv.conf (None: the `kube-system/kube-dns`
    /// Service's ClusterIP, looked up when a pod starts).
    pub cluster_dns: Option<Ipv4Addr>,
    /// The port the cluster DNS answers on (containers query it there).
    pub cluster_dns_port: u16,
    /// The addresses containers may connect to (service VIPs, pod IPs, node IPs); the node's own
    /// podCIDR is always added.
    pub cluster_networks: Vec<(Ipv4Addr, u8)>,
    /// The simulated resource usage model (`/metrics/resource`).
    pub usage: crate::kubelet::usage::UsageModel,
}

impl NodeConfig {
    /// A node with upstream's defaults and kplane's fast simulated timings.
    pub fn new(name: impl Into<String>, node_ip: Ipv4Addr) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            node_ip,
            kubelet_port: 0,
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            ephemeral_storage: "100Gi".into(),
            labels: BTreeMap::new(),
            max_grace: Duration::from_secs(2),
            start_delay: Duration::from_millis(100),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_update_frequency: Duration::from_secs(10),
            status_report_frequency: Duration::from_secs(300),
            status_concurrency: 32,
            cluster_domain: "cluster.local".into(),
            cluster_dns: None,
            cluster_dns_port: 53,
            cluster_networks: vec![
                (Ipv4Addr::new(127, 96, 0, 0), 12),
                (Ipv4Addr::new(127, 244, 0, 0), 16),
                (Ipv4Addr::new(127, 0, 0, 0), 16),
            ],
            usage: Default::default(),
        }
    }
}

/// The scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// The `spec.schedulerName` this scheduler serves (pods with an empty one are also served when
    /// this is `default-scheduler`).
    pub name: String,
    /// How many bindings may be in flight at once.
    pub bind_concurrency: usize,
    /// How often unschedulable pods are retried even when nothing they depend on changed (upstream
    /// waits up to 5 min; node, pod and spec changes retry them at once either way).
    pub retry_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            name: "default-scheduler".into(),
            bind_concurrency: 64,
            retry_interval: Duration::from_secs(30),
        }
    }
}

/// The node IP of `worker<index>`: `127.0.10.1` for worker0, `127.0.10.2` for worker1, …, counting on
/// through `127.0.11.x` and beyond for large indexes. All in 127.0.0.0/16, so never inside the service
/// range (127.96.0.0/12) nor the pod range (127.244.0.0/16); Linux routes all of 127/8 to `lo`, so no
/// setup is needed to bind these.
pub fn default_node_ip(index: usize) -> Ipv4Addr {
    // 127.0.10.1 + index, capped well inside 127.0.0.0/16 (54,000 nodes is far beyond any use).
    let offset = u32::try_from(index).unwrap_or(u32::MAX).min(54_000);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 10, 1)) + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_are_distinct_loopback_outside_service_and_pod_ranges() {
        assert_eq!(default_node_ip(0), Ipv4Addr::new(127, 0, 10, 1));
        assert_eq!(default_node_ip(1), Ipv4Addr::new(127, 0, 10, 2));
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let ip = default_node_ip(i);
            assert!(ip.is_loopback());
            let o = ip.octets();
            assert!(!(o[1] >= 96 && o[1] < 112), "{ip} in 127.96.0.0/12");
            assert!(o[1] != 244, "{ip} in 127.244.0.0/16");
            assert!(seen.insert(ip), "{ip} repeated");
        }
    }
}
