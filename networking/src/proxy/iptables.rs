//! kube-proxy's iptables mode: the kernel rewrites connections to a Service's ClusterIP (and
//! NodePorts) to one of its ready endpoints; no byte passes through kplane.
//!
//! As upstream's `pkg/proxy/iptables/proxier.go`:
//! - nat `KUBE-SERVICES` matches `VIP:port` and jumps to `KUBE-SVC-<hash>`, which picks one
//!   `KUBE-SEP-<hash>` with `statistic --mode random --probability 1/(n-i)`; the SEP chain DNATs
//!   to the endpoint (and marks hairpin traffic, endpoint → its own Service, for masquerade via
//!   `KUBE-MARK-MASQ` / `KUBE-POSTROUTING`);
//! - `KUBE-NODEPORTS` (last rule of `KUBE-SERVICES`) matches `nodeIP:nodePort`;
//! - a port with no ready endpoint gets a REJECT in filter `KUBE-SERVICES` instead;
//! - every rule is commented `<ns>/<svc>:<port>`;
//! - each sync rewrites all of kplane's chains with one `iptables-restore --noflush` (the
//!   built-in chains and everyone else's are untouched), at most once per `min_sync` interval
//!   however many changes arrive, and at least every `resync`.
//!
//! Differences from upstream, all for safety on a shared machine: the jumps from the built-in
//! chains (nat `OUTPUT`, for locally-originated traffic to loopback VIPs, and `PREROUTING`,
//! `POSTROUTING`, filter `OUTPUT`) match only `127.0.0.0/8`; only ClusterIPs in kplane's service
//! range 127.96.0.0/12 are programmed, and only loopback endpoints; a marker chain
//! `KPLANE-PROXY` says the `KUBE-*` chains are kplane's (a host whose `KUBE-SERVICES` lacks it
//! belongs to a real kube-proxy: kplane refuses to start rather than touch it). The marker chain's
//! one rule is commented with the owner's pid (as the nftables mode's table comment): while that
//! kplane runs, another one in iptables mode refuses to start; once it is dead (`kill -9`), the
//! next one removes its chains. ClientIP session
//! affinity uses the `recent` match as upstream. Not done yet: `externalTrafficPolicy: Local`, SCTP.
//!
//! [`rules`] is the pure rule generation; [`run_iptables_proxy`] applies it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Protocol, Proxier, ProxyConfig, Sources};
use crate::endpoints::EndpointIndex;
use crate::Error;

/// The chain that marks the `KUBE-*` chains of this machine as kplane's; its one rule (never
/// jumped to) carries the owner's pid in its comment.
pub const MARKER_CHAIN: &str = "KPLANE-PROXY";
/// The comment that names the kplane owning a kernel mode's rules (the marker rule in iptables
/// mode, the table in nftables mode): this prefix, then the pid.
pub(crate) const OWNER: &str = "kplane service proxy, pid ";
/// kplane's service range (ClusterIPs); nothing else is ever DNATed.
const SERVICE_RANGE: (Ipv4Addr, u32) = (Ipv4Addr::new(127, 96, 0, 0), 12);
/// The packet mark of connections to masquerade (upstream's default `--iptables-masquerade-bit` 14).
const MASQ_MARK: &str = "0x4000";

/// The jumps from built-in chains: (table, chain, rule spec). Each matches loopback only.
const JUMPS: &[(&str, &str, &[&str])] = &[
    (
        "nat",
        "OUTPUT",
        &["-d", "127.0.0.0/8", "-m", "comment", "--comment", "kplane service portals", "-j", "KUBE-SERVICES"],
    ),
    (
        "nat",
        "PREROUTING",
        &["-d", "127.0.0.0/8", "-m", "comment", "--comment", "kplane service portals", "-j", "KUBE-SERVICES"],
    ),
    (
        "nat",
        "POSTROUTING",
        &[
            "-d",
            "127.0.0.0/8",
            "-m",
            "comment",
            "--comment",
            "kplane postrouting rules",
            "-j",
            "KUBE-POSTROUTING",
        ],
    ),
    // As upstream's, the filter jump is taken by a connection's first packet only: the REJECTs
    // it leads to are for new connections, and the packets of established ones (every request
    // and response on a kept-alive connection) skip the chain.
    (
        "filter",
        "OUTPUT",
        &[
            "-d",
            "127.0.0.0/8",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kplane service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
];

/// Jumps an older kplane added (the filter jump without `--ctstate NEW`), removed by
/// [`cleanup`] too so that its chains can go.
const OLD_JUMPS: &[(&str, &str, &[&str])] = &[(
    "filter",
    "OUTPUT",
    &["-d", "127.0.0.0/8", "-m", "comment", "--comment", "kplane service portals", "-j", "KUBE-SERVICES"],
)];

/// The fixed chains of each table (besides the per-service ones).
const NAT_CHAINS: &[&str] =
    &["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-POSTROUTING", MARKER_CHAIN];
const FILTER_CHAINS: &[&str] = &["KUBE-SERVICES"];

/// One `iptables-restore` input for both tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The `*nat … COMMIT` and `*filter … COMMIT` text.
    pub text: String,
    /// The per-service chains it declares (`KUBE-SVC-…`, `KUBE-SEP-…`), all in nat.
    pub service_chains: BTreeSet<String>,
}

/// The kernel modes (iptables, nftables) program only VIPs in 127.96.0.0/12: a service range
/// outside it would leave every Service unserved, so it is refused up front. `mode` is the
/// `--proxy-mode` value named in the error.
pub fn check_service_range(mode: &str, base: Ipv4Addr, bits: u8) -> Result<(), Error> {
    if u32::from(bits) >= SERVICE_RANGE.1 && in_service_range(base) {
        return Ok(());
    }
    Err(unavailable_in(
        mode,
        format!(
            "the service range {base}/{bits} is not inside {}/{}, the only range it programs",
            SERVICE_RANGE.0, SERVICE_RANGE.1
        ),
    ))
}

pub(crate) fn in_service_range(ip: Ipv4Addr) -> bool {
    let (base, bits) = SERVICE_RANGE;
    u32::from(ip) >> (32 - bits) == u32::from(base) >> (32 - bits)
}

/// The base32 (RFC 4648, Go's `base32.StdEncoding`) SHA-256 of `parts` joined as they are: the
/// hash in both kernel modes' chain names, as upstream's kube-proxy makes them.
pub(crate) fn sha256_base32(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
    }
    data_encoding::BASE32.encode(ctx.finish().as_ref())
}

/// One service port as a kernel mode programs it: only a ClusterIP inside kplane's service range
/// and not served in place, only loopback NodePort addresses and loopback endpoints.
pub(crate) struct KernelPort {
    /// `ns/svc:port` (upstream's `ServicePortName`), every rule's comment.
    pub name: String,
    pub key: super::PortKey,
    pub proto: Protocol,
    pub vip: std::net::SocketAddrV4,
    /// `nodeIP:nodePort` for each node address, for NodePort and LoadBalancer Services.
    pub node_addrs: Vec<SocketAddr>,
    /// The ready endpoints; empty: the port rejects.
    pub endpoints: Vec<SocketAddr>,
    /// ClientIP affinity timeout, seconds.
    pub affinity: Option<u64>,
}

/// The service ports a kernel mode programs, sorted by name (the same model for both modes).
pub(crate) fn kernel_ports(
    services: &[Arc<Service>],
    index: &EndpointIndex,
    node_ips: &[Ipv4Addr],
    exclude: &[SocketAddr],
) -> Vec<KernelPort> {
    let mut wanted: Vec<_> = services.iter().flat_map(|s| Proxier::wanted(s, index, node_ips)).collect();
    wanted.sort_by_key(|w| w.key.to_string());
    wanted
        .into_iter()
        .filter_map(|w| {
            let &(proto, SocketAddr::V4(vip)) = w.addrs.first()? else { return None };
            if !in_service_range(*vip.ip()) || exclude.contains(&SocketAddr::V4(vip)) {
                return None;
            }
            Some(KernelPort {
                name: w.key.to_string(),
                proto,
                vip,
                node_addrs: w.addrs[1..].iter().map(|(_, a)| *a).filter(|a| a.ip().is_loopback()).collect(),
                endpoints: w.endpoints.iter().copied().filter(|e| e.ip().is_loopback()).collect(),
                affinity: w.affinity.map(|t| t.as_secs()),
                key: w.key,
            })
        })
        .collect()
}

/// A chain-name suffix exactly as upstream's kube-proxy makes it (`portProtoHash`,
/// `servicePortEndpointChainName`): the first 16 characters of the base32 SHA-256 of the parts
/// joined as they are (`ns/svc:port` + protocol [+ `ip:port`]), so the chains read as upstream's.
fn chain_hash(parts: &[&str]) -> String {
    let mut encoded = sha256_base32(parts);
    encoded.truncate(16);
    encoded
}

pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The whole ruleset for `services` with their endpoints in `index`; NodePorts on `node_ips`;
/// addresses in `exclude` (served in place, the DNS server say) are left alone; `owner` is the pid
/// written in the marker rule.
pub(crate) fn rules(
    services: &[Arc<Service>],
    index: &EndpointIndex,
    node_ips: &[Ipv4Addr],
    exclude: &[SocketAddr],
    owner: u32,
) -> Ruleset {
    let mut nat_chains: Vec<String> = NAT_CHAINS.iter().map(|c| c.to_string()).collect();
    let mut nat = String::new();
    let mut filter = String::new();
    let mut service_chains = BTreeSet::new();
    let mut nodeports = String::new();
    nat.push_str(&owner_rule(owner));
    let _ = writeln!(nat, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    let _ = writeln!(nat, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN");
    let _ = writeln!(nat, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE"
    );
    for kp in kernel_ports(services, index, node_ips, exclude) {
        let KernelPort { name, proto, vip, node_addrs, endpoints: eps, affinity, .. } = kp;
        let p = proto_name(proto);
        if eps.is_empty() {
            // The ClusterIP, then each NodePort address.
            for a in std::iter::once(SocketAddr::V4(vip)).chain(node_addrs.iter().copied()) {
                let _ = writeln!(
                    filter,
                    "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"{name} has no endpoints\" -m {p} --dport {} -j REJECT --reject-with icmp-port-unreachable",
                    a.ip(),
                    a.port()
                );
            }
            continue;
        }
        let svc_chain = format!("KUBE-SVC-{}", chain_hash(&[&name, p]));
        nat_chains.push(svc_chain.clone());
        service_chains.insert(svc_chain.clone());
        let _ = writeln!(
            nat,
            "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"{name} cluster IP\" -m {p} --dport {} -j {svc_chain}",
            vip.ip(),
            vip.port()
        );
        for a in &node_addrs {
            let _ = writeln!(
                nodeports,
                "-A KUBE-NODEPORTS -d {}/32 -p {p} -m comment --comment \"{name}\" -m {p} --dport {} -j {svc_chain}",
                a.ip(),
                a.port()
            );
        }
        let n = eps.len();
        let sep_chains: Vec<String> =
            eps.iter().map(|ep| format!("KUBE-SEP-{}", chain_hash(&[&name, p, &ep.to_string()]))).collect();
        // ClientIP affinity: a client the `recent` list of an endpoint has seen within the timeout
        // goes back to it, before any balancing.
        if let Some(secs) = affinity {
            for (ep, sep_chain) in eps.iter().zip(&sep_chains) {
                let _ = writeln!(
                    nat,
                    "-A {svc_chain} -m comment --comment \"{name} -> {ep}\" -m recent --name {sep_chain} --mask 255.255.255.255 --rsource --rcheck --seconds {secs} --reap -j {sep_chain}"
                );
            }
        }
        let mut seps = String::new();
        for (i, (ep, sep_chain)) in eps.iter().zip(&sep_chains).enumerate() {
            let ep_s = ep.to_string();
            nat_chains.push(sep_chain.clone());
            service_chains.insert(sep_chain.clone());
            if i + 1 < n {
                let _ = writeln!(
                    nat,
                    "-A {svc_chain} -m comment --comment \"{name} -> {ep_s}\" -m statistic --mode random --probability {:.10} -j {sep_chain}",
                    1.0 / (n - i) as f64
                );
            } else {
                let _ =
                    writeln!(nat, "-A {svc_chain} -m comment --comment \"{name} -> {ep_s}\" -j {sep_chain}");
            }
            let _ = writeln!(
                seps,
                "-A {sep_chain} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ",
                ep.ip()
            );
            let recent = match affinity {
                Some(_) => format!(" -m recent --name {sep_chain} --mask 255.255.255.255 --rsource --set"),
                None => String::new(),
            };
            let _ = writeln!(
                seps,
                "-A {sep_chain} -p {p} -m comment --comment \"{name}\"{recent} -m {p} -j DNAT --to-destination {ep_s}"
            );
        }
        nat.push_str(&seps);
    }
    let _ = writeln!(
        nat,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -j KUBE-NODEPORTS"
    );
    nat.push_str(&nodeports);

    let mut text = String::from("*nat\n");
    for c in &nat_chains {
        let _ = writeln!(text, ":{c} - [0:0]");
    }
    text.push_str(&nat);
    text.push_str("COMMIT\n*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(text, ":{c} - [0:0]");
    }
    text.push_str(&filter);
    text.push_str("COMMIT\n");
    Ruleset { text, service_chains }
}

/// The marker chain's rule naming `owner` (a RETURN in a chain nothing jumps to: it matches no
/// packet).
fn owner_rule(owner: u32) -> String {
    format!("-A {MARKER_CHAIN} -m comment --comment \"{OWNER}{owner}\" -j RETURN\n")
}

/// Runs the proxy in iptables mode until `shutdown` completes, then removes all of its chains.
/// Fails at once, naming the userspace mode, without root or without the iptables tools, or while
/// another running kplane owns kplane's chains.
pub async fn run_iptables_proxy(
    client: kube::Client,
    cfg: ProxyConfig,
    min_sync: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    preflight().await?;
    // The owner is dead (preflight checked): a killed kplane's chains.
    cleanup().await?;
    // Claim the chains now, not at the first sync (after the informers list): a kplane starting
    // meanwhile is refused.
    let claim = format!("*nat\n:{MARKER_CHAIN} - [0:0]\n{}COMMIT\n", owner_rule(std::process::id()));
    restore(&claim).await.map_err(Error::Config)?;
    run_kernel_proxy(client, cfg, min_sync, shutdown, Iptables::default()).await
}

/// What a kernel mode does at each sync and at stop; [`run_kernel_proxy`] is the loop both
/// modes share.
pub(crate) trait KernelMode {
    /// The `--proxy-mode` value, for logs.
    const NAME: &'static str;
    /// Programs the rules for this snapshot in one atomic step; an error leaves the kernel as the
    /// last sync left it (retried at the next sync).
    async fn sync(
        &mut self,
        services: &[Arc<Service>],
        index: &EndpointIndex,
        node_ips: &[Ipv4Addr],
        exclude: &[SocketAddr],
    ) -> Result<(), Error>;
    /// Removes everything the mode programmed.
    async fn cleanup(&mut self) -> Result<(), Error>;
}

/// Upstream's sync semantics for a kernel mode: one full sync once the informers have listed,
/// then one per change batch (changes within `min_sync` of the last sync make one), at least
/// every `cfg.resync`; on `shutdown`, the mode's cleanup.
pub(crate) async fn run_kernel_proxy<M: KernelMode>(
    client: kube::Client,
    cfg: ProxyConfig,
    min_sync: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut mode: M,
) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    let sources = Sources::start(&client, &changed);
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return mode.cleanup().await,
        _ = sources.ready() => {}
    }
    tracing::info!(node_ips = ?cfg.node_ips, "service proxy started ({} mode)", M::NAME);
    let result = loop {
        let started = Instant::now();
        let (services, index, node_ips) = sources.snapshot(&cfg.node_ips);
        if let Err(e) = mode.sync(&services, &index, &node_ips, &cfg.exclude).await {
            tracing::warn!(error = %e, "{} sync failed", M::NAME);
        }
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = changed.notified() => {}
            _ = tokio::time::sleep(cfg.resync) => {}
        }
        // Batch: changes that arrive within the minimum interval make one sync.
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tokio::time::sleep_until(started + min_sync) => {}
        }
    };
    tracing::info!("service proxy stopping ({} mode): removing its rules", M::NAME);
    mode.cleanup().await?;
    result
}

/// The iptables mode's state between syncs: the service chains the last sync wrote.
#[derive(Default)]
struct Iptables {
    previous: BTreeSet<String>,
}

impl KernelMode for Iptables {
    const NAME: &'static str = "iptables";

    async fn sync(
        &mut self,
        services: &[Arc<Service>],
        index: &EndpointIndex,
        node_ips: &[Ipv4Addr],
        exclude: &[SocketAddr],
    ) -> Result<(), Error> {
        let set = rules(services, index, node_ips, exclude, std::process::id());
        // A failed restore changes nothing (it is atomic per table).
        apply(&set, &self.previous).await?;
        self.previous = set.service_chains;
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), Error> {
        cleanup().await
    }
}

fn unavailable(why: String) -> Error {
    unavailable_in("iptables", why)
}

/// A kernel mode that cannot work here: the error names the userspace mode (no silent fallback).
pub(crate) fn unavailable_in(mode: &str, why: String) -> Error {
    Error::Config(format!(
        "--proxy-mode {mode}: {why}; run as root with {mode} installed, or use --proxy-mode userspace"
    ))
}

/// Whether `pid` is a live kplane process (its command name; a reused pid of another program
/// does not count, nor a killed kplane its parent has not reaped yet).
pub(crate) fn kplane_runs(pid: u32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])));
    !zombie && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "kplane")
}

/// The pid after [`OWNER`] in `text` (a comment as iptables-save or nft prints it).
pub(crate) fn owner_in(text: &str) -> Option<u32> {
    let rest = &text[text.find(OWNER)? + OWNER.len()..];
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// A kernel mode's start check, one for both modes: `owner` (the pid recorded with the rules
/// named `what`) must be this process, dead, or not a kplane; otherwise the start fails naming it.
pub(crate) fn refuse_live_owner(mode: &str, what: &str, owner: Option<u32>) -> Result<(), Error> {
    match owner {
        Some(pid) if pid != std::process::id() && kplane_runs(pid) => {
            Err(unavailable_in(mode, format!("{what} belongs to a running kplane (pid {pid}); stop it first")))
        }
        _ => Ok(()),
    }
}

/// This process's effective user id, from `/proc/self/status`.
pub(crate) fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok())
}

/// Fails, naming the userspace mode, when this process cannot run the iptables mode: not root, no
/// iptables tools, a real kube-proxy's chains, or a running kplane (another process) owns kplane's.
pub async fn preflight() -> Result<(), Error> {
    if euid() != Some(0) {
        return Err(unavailable("it needs root (CAP_NET_ADMIN) to program the kernel's NAT table".into()));
    }
    for tool in ["iptables", "iptables-save", "iptables-restore"] {
        let ok = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().await;
        if !ok.is_ok_and(|s| s.success()) {
            return Err(unavailable(format!("`{tool}` is not installed or does not run")));
        }
    }
    let nat = save("nat").await.map_err(unavailable)?;
    if nat.lines().any(|l| l.starts_with(":KUBE-SERVICES ")) && !has_marker(&nat) {
        return Err(unavailable(
            "the nat table has KUBE-* chains that are not kplane's (another kube-proxy runs here)".into(),
        ));
    }
    refuse_live_owner("iptables", "kplane's iptables ruleset (KPLANE-PROXY, KUBE-*)", owner(&nat))
}

/// The pid in the marker rule of an `iptables-save -t nat` dump; `None` without one.
fn owner(nat: &str) -> Option<u32> {
    nat.lines().filter(|l| l.starts_with(&format!("-A {MARKER_CHAIN} "))).find_map(owner_in)
}

fn has_marker(saved: &str) -> bool {
    saved.lines().any(|l| l.starts_with(&format!(":{MARKER_CHAIN} ")))
}

pub(crate) async fn save(table: &str) -> Result<String, String> {
    let out = Command::new("iptables-save").args(["-t", table]).output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("iptables-save -t {table}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn restore(input: &str) -> Result<(), String> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

async fn iptables(table: &str, op: &str, chain: &str, spec: &[&str]) -> bool {
    Command::new("iptables")
        .args(["-w", "5", "-t", table, op, chain])
        .args(spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Writes `set`, deletes the service chains of the last sync that it no longer has, and makes
/// sure the jumps into kplane's chains exist.
async fn apply(set: &Ruleset, previous: &BTreeSet<String>) -> Result<(), Error> {
    let mut input = set.text.clone();
    let stale: Vec<&String> = previous.difference(&set.service_chains).collect();
    if !stale.is_empty() {
        // Their rules went with KUBE-SERVICES' flush above; flush and delete the chains themselves.
        let mut extra = String::from("*nat\n");
        for c in &stale {
            let _ = writeln!(extra, ":{c} - [0:0]");
        }
        for c in &stale {
            let _ = writeln!(extra, "-X {c}");
        }
        extra.push_str("COMMIT\n");
        input.push_str(&extra);
    }
    restore(&input).await.map_err(Error::Config)?;
    for (table, chain, spec) in JUMPS {
        if !iptables(table, "-C", chain, spec).await && !iptables(table, "-I", chain, spec).await {
            return Err(Error::Config(format!("cannot add the jump from {table} {chain} to kplane's chains")));
        }
    }
    Ok(())
}

/// Removes the jumps and every chain of kplane's (a killed kplane's too): the `KUBE-*` chains
/// only when the marker chain says they are ours.
pub async fn cleanup() -> Result<(), Error> {
    for (table, chain, spec) in JUMPS.iter().chain(OLD_JUMPS) {
        while iptables(table, "-D", chain, spec).await {}
    }
    let nat = save("nat").await.map_err(Error::Config)?;
    if !has_marker(&nat) {
        return Ok(());
    }
    let filter = save("filter").await.map_err(Error::Config)?;
    let mut input = String::new();
    for (table, saved) in [("nat", &nat), ("filter", &filter)] {
        let ours: Vec<&str> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| {
                if table == "nat" {
                    *c == MARKER_CHAIN || c.starts_with("KUBE-")
                } else {
                    FILTER_CHAINS.contains(c)
                }
            })
            .collect();
        if ours.is_empty() {
            continue;
        }
        let _ = writeln!(input, "*{table}");
        for c in &ours {
            let _ = writeln!(input, ":{c} - [0:0]");
        }
        for c in &ours {
            let _ = writeln!(input, "-X {c}");
        }
        input.push_str("COMMIT\n");
    }
    if input.is_empty() {
        return Ok(());
    }
    restore(&input).await.map_err(Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::fixtures::{index, svc};

    #[test]
    fn a_service_with_endpoints_gets_svc_and_sep_chains_with_random_balancing() {
        let idx = index("web", &["127.244.0.1", "127.244.0.2", "127.244.0.3"], true);
        let set = rules(&[svc("web", "127.96.0.20", 8080, None)], &idx, &[], &[], 7);
        let t = &set.text;
        let svc_chain = format!("KUBE-SVC-{}", chain_hash(&["default/web:http", "tcp"]));
        assert!(t.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"), "{t}");
        assert!(t.contains(&format!("-A KUBE-SERVICES -d 127.96.0.20/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 8080 -j {svc_chain}\n")), "{t}");
        let probs: Vec<&str> = t.lines().filter(|l| l.starts_with(&format!("-A {svc_chain} "))).collect();
        assert_eq!(probs.len(), 3, "{t}");
        assert!(probs[0].contains("--probability 0.3333333333 "), "{}", probs[0]);
        assert!(probs[1].contains("--probability 0.5000000000 "), "{}", probs[1]);
        assert!(!probs[2].contains("statistic"), "{}", probs[2]);
        assert!(probs[0].contains("--comment \"default/web:http -> 127.244.0.1:80\""), "{}", probs[0]);
        let sep = format!("KUBE-SEP-{}", chain_hash(&["default/web:http", "tcp", "127.244.0.2:80"]));
        assert!(t.contains(&format!(":{sep} - [0:0]\n")));
        assert!(
            t.contains(&format!(
                "-A {sep} -s 127.244.0.2/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ\n"
            )),
            "{t}"
        );
        assert!(t.contains(&format!("-A {sep} -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 127.244.0.2:80\n")), "{t}");
        assert_eq!(set.service_chains.len(), 4);
        // The marker chain's one rule names the owner, as iptables-save prints it back.
        let marker =
            format!("-A {MARKER_CHAIN} -m comment --comment \"kplane service proxy, pid 7\" -j RETURN\n");
        assert!(t.contains(&marker), "{t}");
        assert_eq!(owner(t), Some(7));
        // The filter table rejects nothing.
        let filter = t.split("*filter\n").nth(1).unwrap();
        assert_eq!(filter, ":KUBE-SERVICES - [0:0]\nCOMMIT\n");
        assert!(t.ends_with("COMMIT\n"));
    }

    #[test]
    fn no_ready_endpoint_rejects_in_the_filter_table() {
        let idx = index("web", &["127.244.0.1"], false);
        let set = rules(
            &[svc("web", "127.96.0.20", 8080, Some(30080))],
            &idx,
            &["127.0.10.1".parse().unwrap()],
            &[],
            7,
        );
        let filter = set.text.split("*filter\n").nth(1).unwrap();
        assert!(filter.contains("-A KUBE-SERVICES -d 127.96.0.20/32 -p tcp -m comment --comment \"default/web:http has no endpoints\" -m tcp --dport 8080 -j REJECT --reject-with icmp-port-unreachable\n"), "{filter}");
        assert!(filter.contains("-d 127.0.10.1/32 -p tcp -m comment --comment \"default/web:http has no endpoints\" -m tcp --dport 30080 -j REJECT"), "{filter}");
        assert!(!set.text.contains("KUBE-SVC-"), "{}", set.text);
        assert!(set.service_chains.is_empty());
    }

    #[test]
    fn the_filter_jump_takes_new_connections_only_as_upstreams() {
        let spec = |table: &str, chain: &str| {
            JUMPS.iter().find(|(t, c, _)| *t == table && *c == chain).map(|(_, _, s)| s.join(" ")).unwrap()
        };
        // Upstream: `-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes
        // service portals" -j KUBE-SERVICES` in filter; the nat jumps have no state match (nat
        // sees a connection's first packet only).
        assert_eq!(
            spec("filter", "OUTPUT"),
            "-d 127.0.0.0/8 -m conntrack --ctstate NEW -m comment --comment kplane service portals -j KUBE-SERVICES"
        );
        for chain in ["OUTPUT", "PREROUTING", "POSTROUTING"] {
            assert!(!spec("nat", chain).contains("ctstate"), "{chain}");
        }
        // The older filter jump (every packet) is still removed on cleanup.
        assert!(OLD_JUMPS
            .iter()
            .all(|(t, c, s)| *t == "filter" && *c == "OUTPUT" && !s.contains(&"conntrack")));
    }

    #[test]
    fn node_ports_jump_to_the_service_chain() {
        let idx = index("web", &["127.244.0.1"], true);
        let set = rules(
            &[svc("web", "127.96.0.20", 8080, Some(30080))],
            &idx,
            &["127.0.10.1".parse().unwrap()],
            &[],
            7,
        );
        let svc_chain = format!("KUBE-SVC-{}", chain_hash(&["default/web:http", "tcp"]));
        assert!(set.text.contains(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -j KUBE-NODEPORTS\n"
        ));
        assert!(set.text.contains(&format!("-A KUBE-NODEPORTS -d 127.0.10.1/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j {svc_chain}\n")), "{}", set.text);
        // One endpoint: no statistic match.
        assert!(!set.text.contains("statistic"));
    }

    #[test]
    fn only_loopback_service_range_and_endpoints_are_programmed() {
        let mut idx = index("web", &["10.0.0.5"], true);
        idx.extend(index("outside", &["127.244.0.1"], true));
        idx.extend(index("dns", &["127.244.0.1"], true));
        let set = rules(
            &[
                svc("web", "127.96.0.20", 80, None),
                svc("outside", "10.96.0.1", 80, None),
                svc("dns", "127.96.0.10", 53, None),
            ],
            &idx,
            &[],
            &["127.96.0.10:53".parse().unwrap()],
            7,
        );
        assert!(!set.text.contains("10.0.0.5"), "{}", set.text);
        assert!(!set.text.contains("10.96.0.1"), "{}", set.text);
        assert!(!set.text.contains("127.96.0.10"), "{}", set.text);
        // A service whose only endpoint is off loopback rejects rather than leaving the machine.
        assert!(set.text.contains("default/web:http has no endpoints"), "{}", set.text);
    }

    #[test]
    fn client_ip_affinity_checks_recent_before_balancing_and_sets_it_on_dnat() {
        let idx = index("web", &["127.244.0.1", "127.244.0.2"], true);
        let mut s = (*svc("web", "127.96.0.20", 8080, None)).clone();
        let spec = s.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config =
            serde_json::from_value(serde_json::json!({"clientIP": {"timeoutSeconds": 60}})).unwrap();
        let set = rules(&[Arc::new(s)], &idx, &[], &[], 7);
        let svc_chain = format!("KUBE-SVC-{}", chain_hash(&["default/web:http", "tcp"]));
        let sep = format!("KUBE-SEP-{}", chain_hash(&["default/web:http", "tcp", "127.244.0.1:80"]));
        let svc_rules: Vec<&str> =
            set.text.lines().filter(|l| l.starts_with(&format!("-A {svc_chain} "))).collect();
        assert_eq!(svc_rules.len(), 4, "{}", set.text);
        assert_eq!(svc_rules[0], format!("-A {svc_chain} -m comment --comment \"default/web:http -> 127.244.0.1:80\" -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds 60 --reap -j {sep}"));
        assert!(svc_rules[2].contains("statistic"), "{}", svc_rules[2]);
        assert!(set.text.contains(&format!("-A {sep} -p tcp -m comment --comment \"default/web:http\" -m recent --name {sep} --mask 255.255.255.255 --rsource --set -m tcp -j DNAT --to-destination 127.244.0.1:80\n")), "{}", set.text);
        // Without affinity, no recent match at all.
        let plain = rules(&[svc("web", "127.96.0.20", 8080, None)], &idx, &[], &[], 7);
        assert!(!plain.text.contains("recent"));
    }

    #[test]
    fn the_owner_is_read_from_the_marker_rule_and_only_a_live_kplane_refuses() {
        let nat = "*nat\n:KPLANE-PROXY - [0:0]\n:KUBE-SERVICES - [0:0]\n-A KPLANE-PROXY -m comment --comment \"kplane service proxy, pid 4242\" -j RETURN\nCOMMIT\n";
        assert_eq!(owner(nat), Some(4242));
        // A marker without its rule (or a rule elsewhere naming a pid): no owner.
        assert_eq!(owner("*nat\n:KPLANE-PROXY - [0:0]\nCOMMIT\n"), None);
        assert_eq!(
            owner("-A KUBE-SERVICES -m comment --comment \"kplane service proxy, pid 9\" -j RETURN"),
            None
        );
        assert_eq!(owner_in("comment \"kplane service proxy, pid 12\""), Some(12));
        assert_eq!(owner_in("comment \"kplane service proxy, pid x\""), None);
        // This process, or a pid that is no kplane (pid 1, the machine's init), or none: allowed.
        assert!(refuse_live_owner("iptables", "kplane's iptables chains", Some(std::process::id())).is_ok());
        assert!(refuse_live_owner("iptables", "kplane's iptables chains", Some(1)).is_ok());
        assert!(refuse_live_owner("iptables", "kplane's iptables chains", None).is_ok());
    }

    /// Computed outside kplane (Python's hashlib and base64), as Go's `base32.StdEncoding` does.
    const UPSTREAM_WEB_HTTP_TCP: &str = "CDGGSHYLG3RE2FKL";

    #[test]
    fn chain_names_are_stable_and_distinct() {
        assert_eq!(chain_hash(&["a", "tcp"]), chain_hash(&["a", "tcp"]));
        assert_ne!(chain_hash(&["a", "tcp"]), chain_hash(&["a", "udp"]));
        assert_eq!(chain_hash(&["x"]).len(), 16);
        // Upstream's name for the same service port: base32(sha256("default/web:httptcp"))[:16].
        assert_eq!(chain_hash(&["default/web:http", "tcp"]), UPSTREAM_WEB_HTTP_TCP);
        assert!(in_service_range("127.111.255.255".parse().unwrap()));
        assert!(!in_service_range("127.112.0.0".parse().unwrap()));
        assert!(!in_service_range("127.95.255.255".parse().unwrap()));
        assert!(check_service_range("iptables", "127.96.0.0".parse().unwrap(), 12).is_ok());
        assert!(check_service_range("iptables", "127.100.77.0".parse().unwrap(), 24).is_ok());
        assert!(check_service_range("iptables", "127.96.0.0".parse().unwrap(), 11).is_err());
        let e = check_service_range("iptables", "127.130.0.0".parse().unwrap(), 16).unwrap_err().to_string();
        assert!(e.contains("127.130.0.0/16") && e.contains("--proxy-mode userspace"), "{e}");
    }

    /// X-ray's kernel hop walks the rules this module writes: ClusterIP and NodePort to the service
    /// chain and each DNAT, affinity checks listed but not counted as choices, REJECT without
    /// endpoints, nothing for an address no rule takes.
    #[test]
    fn the_kernel_walk_reads_back_what_rules_wrote() {
        use super::super::kernel::{KernelEndpoint, Saved};
        let idx = index("web", &["127.244.0.1", "127.244.0.2"], true);
        let node: Ipv4Addr = "127.0.10.1".parse().unwrap();
        let set = rules(&[svc("web", "127.96.0.20", 8080, Some(30080))], &idx, &[node], &[], 7);
        let saved = Saved::parse(&set.text);
        assert!(saved.is_kplanes());
        let path = saved.walk("127.96.0.20".parse().unwrap(), 8080, "TCP").expect("a path");
        let svc_chain = path.service_chain.clone().unwrap();
        assert!(svc_chain.starts_with("KUBE-SVC-"), "{path:?}");
        assert!(path.rules[0].starts_with("-A KUBE-SERVICES -d 127.96.0.20/32"), "{path:?}");
        assert_eq!(path.endpoints.len(), 2, "{path:?}");
        assert_eq!(path.endpoints[0].probability.as_deref(), Some("0.5000000000"));
        assert_eq!(
            path.endpoints.iter().map(|e| e.destination.as_str()).collect::<Vec<_>>(),
            ["127.244.0.1:80", "127.244.0.2:80"]
        );
        assert!(path.reject.is_none());
        let np = saved.walk(node, 30080, "tcp").expect("the NodePort path");
        assert_eq!(np.service_chain.as_deref(), Some(svc_chain.as_str()));
        assert!(np.rules.iter().any(|r| r.starts_with("-A KUBE-NODEPORTS")), "{np:?}");
        assert!(saved.walk("127.96.0.20".parse().unwrap(), 8081, "tcp").is_none());
        assert!(saved.walk("127.96.0.20".parse().unwrap(), 8080, "udp").is_none());

        let empty = rules(&[svc("web", "127.96.0.20", 8080, None)], &index("web", &[], true), &[], &[], 7);
        let path = Saved::parse(&empty.text).walk("127.96.0.20".parse().unwrap(), 8080, "tcp").unwrap();
        assert!(path.service_chain.is_none() && path.endpoints.is_empty());
        assert!(path.reject.unwrap().contains("has no endpoints"));

        let mut web = (*svc("web", "127.96.0.20", 8080, None)).clone();
        web.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let set = rules(&[Arc::new(web)], &index("web", &["127.244.0.1"], true), &[], &[], 7);
        let path = Saved::parse(&set.text).walk("127.96.0.20".parse().unwrap(), 8080, "tcp").unwrap();
        let sep = path.endpoints[0].chain.clone();
        assert_eq!(
            path.endpoints,
            [KernelEndpoint { chain: sep, probability: None, destination: "127.244.0.1:80".into() }]
        );
        assert!(path.rules.iter().any(|r| r.contains("--rcheck")), "{path:?}");
        assert!(!Saved::parse("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n").is_kplanes());
    }
}
