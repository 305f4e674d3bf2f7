//! kube-proxy's nftables mode (upstream's newest, `pkg/proxy/nftables/proxier.go`): the kernel
//! rewrites connections to a Service's ClusterIP (and NodePorts) to one of its ready endpoints,
//! from rules in one nftables table of kplane's own, `ip kplane-proxy` (upstream's is
//! `ip kube-proxy`; the name says whose it is, and a real kube-proxy's table is never touched).
//!
//! As upstream:
//! - base chains `nat-output` (locally-originated traffic: loopback VIPs need DNAT in OUTPUT) and
//!   `nat-prerouting` jump to `services`, which looks `ip daddr . meta l4proto . th dport` up in
//!   the verdict map `service-ips` (ClusterIPs), and `meta l4proto . th dport` in
//!   `service-nodeports` for addresses in the set `nodeport-ips`;
//! - each service port's chain `service-<HASH>-<ns>/<svc>/<proto>/<port>` picks an endpoint with
//!   `numgen random mod N vmap { 0 : goto endpoint-…, … }`; each endpoint's chain
//!   `endpoint-<HASH>-<ns>/<svc>/<proto>/<port>__<ip>/<port>` marks hairpin traffic for
//!   masquerade (`mark-for-masquerade`, then `masquerading` in `nat-postrouting`) and DNATs;
//!   `<HASH>` is the first 8 characters of the base32 SHA-256 of the rest of the name;
//! - ClientIP affinity: a dynamic set `affinity-<HASH>-…` per endpoint, checked before the
//!   balancing and updated by the endpoint chain;
//! - a port with no ready endpoint is an element of `no-endpoint-services` (or
//!   `no-endpoint-nodeports`) whose verdict is `goto reject-chain`, looked up by the filter base
//!   chains (priority dstnat-10, so before DNAT) for new connections;
//! - every map element and service rule is commented `<ns>/<svc>:<port>`;
//! - each sync is one `nft -f -` transaction: the table's rules and maps are flushed and rebuilt,
//!   and the service chains and affinity sets of the last sync that are gone are deleted; at
//!   most once per `min_sync`, at least every `resync` (the loop is iptables mode's,
//!   [`super::iptables::run_kernel_proxy`]).
//!
//! Differences from upstream, for safety on a shared machine, as in iptables mode: the jumps
//! from the base chains match only `127.0.0.0/8`; only ClusterIPs in 127.96.0.0/12 and loopback
//! endpoints are programmed (the same model, [`super::iptables::kernel_ports`]); the masquerade
//! mark is a bit of its own (0x2000, upstream 0x4000) so an iptables-mode kplane beside it never
//! sees it. The table's comment names the kplane process that owns it: a table whose owner is
//! dead (a killed kplane) is removed at start; one whose owner runs makes the start fail.
//!
//! [`rules`] is the pure rule generation; [`run_nftables_proxy`] applies it.

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

use super::iptables::{
    euid, kernel_ports, proto_name, refuse_live_owner, sha256_base32, unavailable_in, KernelMode, KernelPort,
    OWNER,
};
use super::ProxyConfig;
use crate::endpoints::EndpointIndex;
use crate::Error;

/// kplane's table (family `ip`).
pub const TABLE: &str = "kplane-proxy";
/// The packet mark of connections to masquerade: a bit of its own (upstream uses 0x4000, which
/// kplane's iptables mode uses).
const MASQ_MARK: &str = "0x2000";
/// The chain a port without endpoints goes to.
pub const REJECT_CHAIN: &str = "reject-chain";
/// Upstream's `chainNameBaseLengthMax` (nftables names are at most 256 bytes; 16 for a prefix).
const NAME_BASE_MAX: usize = 240;

/// One sync's transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The `nft -f` input (without the deletions of stale objects, see [`Ruleset::script`]).
    pub text: String,
    /// The per-service objects it declares: `chain <name>` and `set <name>`.
    pub objects: BTreeSet<String>,
}

impl Ruleset {
    /// The whole transaction: `text`, then the deletion of each object of `previous` (the last
    /// sync's) that this one no longer has.
    pub fn script(&self, previous: &BTreeSet<String>) -> String {
        let mut s = self.text.clone();
        for gone in previous.difference(&self.objects) {
            let _ = writeln!(s, "delete {} ip {TABLE} {}", kind_of(gone), name_of(gone));
        }
        s
    }
}

fn kind_of(object: &str) -> &str {
    object.split_once(' ').map(|(k, _)| k).unwrap_or("chain")
}

fn name_of(object: &str) -> &str {
    object.split_once(' ').map(|(_, n)| n).unwrap_or(object)
}

/// Upstream's `hashAndTruncate`: 8 characters of the name's base32 SHA-256, `-`, the name.
fn hash_and_truncate(name: &str) -> String {
    let mut out = format!("{}-{name}", &sha256_base32(&[name])[..8]);
    if out.len() > NAME_BASE_MAX {
        let mut cut = NAME_BASE_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// `ns/svc/proto/port`, upstream's `servicePortChainNameBase` before hashing.
fn port_base(kp: &KernelPort) -> String {
    format!("{}/{}/{}/{}", kp.key.namespace, kp.key.name, proto_name(kp.proto), kp.key.port)
}

pub(crate) fn service_chain(kp: &KernelPort) -> String {
    format!("service-{}", hash_and_truncate(&port_base(kp)))
}

fn endpoint_base(kp: &KernelPort, ep: SocketAddr) -> String {
    hash_and_truncate(&format!("{}__{}/{}", port_base(kp), ep.ip(), ep.port()))
}

/// A comment as nft reads it: quoted, without the characters that would end it.
fn comment(s: &str) -> String {
    format!("comment \"{}\"", s.replace(['"', '\\', '\n'], ""))
}

/// The whole transaction for `services` with their endpoints in `index`; NodePorts on the
/// loopback `node_ips`; addresses in `exclude` (served in place, the DNS server say) left alone.
/// `owner` is the pid written in the table's comment.
pub(crate) fn rules(
    services: &[Arc<Service>],
    index: &EndpointIndex,
    node_ips: &[Ipv4Addr],
    exclude: &[SocketAddr],
    owner: u32,
) -> Ruleset {
    let t = format!("ip {TABLE}");
    let mut s = String::new();
    let mut objects = BTreeSet::new();
    let _ = writeln!(s, "add table {t} {{ comment \"{OWNER}{owner}\" ; }}");
    // Every rule of every chain goes; chains, sets and maps stay (and are flushed below).
    let _ = writeln!(s, "flush table {t}");
    for (name, kind, hook, prio) in [
        ("filter-input", "filter", "input", -110),
        ("filter-forward", "filter", "forward", -110),
        ("filter-output", "filter", "output", -110),
        ("nat-prerouting", "nat", "prerouting", -100),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
    ] {
        let _ =
            writeln!(s, "add chain {t} {name} {{ type {kind} hook {hook} priority {prio} ; policy accept ; }}");
    }
    for chain in ["services", "masquerading", "mark-for-masquerade", "service-endpoints-check", REJECT_CHAIN] {
        let _ = writeln!(s, "add chain {t} {chain}");
    }
    let lo = "ip daddr 127.0.0.0/8";
    for base in ["filter-input", "filter-forward", "filter-output"] {
        let _ = writeln!(s, "add rule {t} {base} ct state new {lo} jump service-endpoints-check");
    }
    let _ = writeln!(s, "add rule {t} nat-prerouting {lo} jump services");
    let _ = writeln!(s, "add rule {t} nat-output {lo} jump services");
    let _ = writeln!(s, "add rule {t} nat-postrouting {lo} jump masquerading");
    let _ = writeln!(s, "add rule {t} mark-for-masquerade meta mark set meta mark or {MASQ_MARK}");
    let _ = writeln!(s, "add rule {t} masquerading meta mark & {MASQ_MARK} == 0 return");
    let _ = writeln!(s, "add rule {t} masquerading meta mark set meta mark xor {MASQ_MARK}");
    let _ = writeln!(s, "add rule {t} masquerading masquerade fully-random");
    let _ = writeln!(s, "add rule {t} {REJECT_CHAIN} reject");
    let addr_key = "ipv4_addr . inet_proto . inet_service : verdict";
    let port_key = "inet_proto . inet_service : verdict";
    let _ = writeln!(
        s,
        "add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    );
    for (map, key, what) in [
        ("no-endpoint-services", addr_key, "vmap to reject packets to services with no endpoints"),
        ("no-endpoint-nodeports", port_key, "vmap to reject packets to service nodeports with no endpoints"),
        ("service-ips", addr_key, "ClusterIP traffic"),
        ("service-nodeports", port_key, "NodePort traffic"),
    ] {
        let _ = writeln!(s, "add map {t} {map} {{ type {key} ; comment \"{what}\" ; }}");
    }
    for set in
        ["nodeport-ips", "no-endpoint-services", "no-endpoint-nodeports", "service-ips", "service-nodeports"]
    {
        let kind = if set == "nodeport-ips" { "set" } else { "map" };
        let _ = writeln!(s, "flush {kind} {t} {set}");
    }
    let tuple = "ip daddr . meta l4proto . th dport";
    let _ = writeln!(s, "add rule {t} service-endpoints-check {tuple} vmap @no-endpoint-services");
    let _ = writeln!(
        s,
        "add rule {t} service-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"
    );
    let _ = writeln!(s, "add rule {t} services {tuple} vmap @service-ips");
    let _ = writeln!(
        s,
        "add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
    );

    let ports = kernel_ports(services, index, node_ips, exclude);
    let mut node_addrs: Vec<Ipv4Addr> = ports
        .iter()
        .flat_map(|kp| kp.node_addrs.iter())
        .filter_map(|a| match a {
            SocketAddr::V4(a) => Some(*a.ip()),
            SocketAddr::V6(_) => None,
        })
        .collect();
    node_addrs.sort();
    node_addrs.dedup();
    if !node_addrs.is_empty() {
        let list: Vec<String> = node_addrs.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(s, "add element {t} nodeport-ips {{ {} }}", list.join(", "));
    }
    let mut elements = String::new();
    for kp in &ports {
        let p = proto_name(kp.proto);
        let c = comment(&kp.name);
        let node_port = kp.node_addrs.first().map(SocketAddr::port);
        let target = if kp.endpoints.is_empty() {
            let _ = writeln!(
                elements,
                "add element {t} no-endpoint-services {{ {} . {p} . {} {c} : goto {REJECT_CHAIN} }}",
                kp.vip.ip(),
                kp.vip.port()
            );
            if let Some(np) = node_port {
                let _ = writeln!(
                    elements,
                    "add element {t} no-endpoint-nodeports {{ {p} . {np} {c} : goto {REJECT_CHAIN} }}"
                );
            }
            continue;
        } else {
            service_chain(kp)
        };
        let _ = writeln!(
            elements,
            "add element {t} service-ips {{ {} . {p} . {} {c} : goto {target} }}",
            kp.vip.ip(),
            kp.vip.port()
        );
        if let Some(np) = node_port {
            let _ =
                writeln!(elements, "add element {t} service-nodeports {{ {p} . {np} {c} : goto {target} }}");
        }
        objects.insert(format!("chain {target}"));
        let _ = writeln!(s, "add chain {t} {target}");
        let mut endpoint_rules = String::new();
        let mut choices = Vec::new();
        for (i, ep) in kp.endpoints.iter().enumerate() {
            let base = endpoint_base(kp, *ep);
            let chain = format!("endpoint-{base}");
            objects.insert(format!("chain {chain}"));
            let _ = writeln!(s, "add chain {t} {chain}");
            let _ = writeln!(
                endpoint_rules,
                "add rule {t} {chain} ip saddr {} jump mark-for-masquerade {c}",
                ep.ip()
            );
            if let Some(secs) = kp.affinity {
                let set = format!("affinity-{base}");
                objects.insert(format!("set {set}"));
                let _ = writeln!(
                    s,
                    "add set {t} {set} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {secs}s ; }}"
                );
                // A client seen within the timeout goes back to the same endpoint.
                let _ = writeln!(s, "add rule {t} {target} ip saddr @{set} goto {chain} {c}");
                let _ = writeln!(endpoint_rules, "add rule {t} {chain} update @{set} {{ ip saddr }} {c}");
            }
            let _ = writeln!(endpoint_rules, "add rule {t} {chain} meta l4proto {p} dnat to {ep} {c}");
            choices.push(format!("{i} : goto {chain}"));
        }
        let _ = writeln!(
            s,
            "add rule {t} {target} numgen random mod {} vmap {{ {} }} {c}",
            choices.len(),
            choices.join(", ")
        );
        s.push_str(&endpoint_rules);
    }
    s.push_str(&elements);
    Ruleset { text: s, objects }
}

/// Runs the proxy in nftables mode until `shutdown` completes, then deletes its table. Fails at
/// once, naming the userspace mode, without root or without `nft`, or while another running
/// kplane owns the table.
pub async fn run_nftables_proxy(
    client: kube::Client,
    cfg: ProxyConfig,
    min_sync: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    preflight().await?;
    // The owner is dead (preflight checked): a killed kplane's table.
    cleanup().await?;
    super::iptables::run_kernel_proxy(client, cfg, min_sync, shutdown, Nftables::default()).await
}

/// The nftables mode's state between syncs: the per-service objects the last sync wrote.
#[derive(Default)]
struct Nftables {
    previous: BTreeSet<String>,
}

impl KernelMode for Nftables {
    const NAME: &'static str = "nftables";

    async fn sync(
        &mut self,
        services: &[Arc<Service>],
        index: &EndpointIndex,
        node_ips: &[Ipv4Addr],
        exclude: &[SocketAddr],
    ) -> Result<(), Error> {
        let set = rules(services, index, node_ips, exclude, std::process::id());
        // One transaction: a failure changes nothing.
        nft_stdin(&set.script(&self.previous)).await.map_err(Error::Config)?;
        self.previous = set.objects;
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), Error> {
        cleanup().await
    }
}

fn unavailable(why: String) -> Error {
    unavailable_in("nftables", why)
}

/// Fails, naming the userspace mode, when this process cannot run the nftables mode: not root,
/// no `nft`, or a running kplane (another process) owns the table.
pub async fn preflight() -> Result<(), Error> {
    if euid() != Some(0) {
        return Err(unavailable("it needs root (CAP_NET_ADMIN) to program the kernel's nftables".into()));
    }
    let ok = Command::new("nft").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().await;
    if !ok.is_ok_and(|s| s.success()) {
        return Err(unavailable("`nft` is not installed or does not run".into()));
    }
    let owner = owner().await.map_err(unavailable)?;
    refuse_live_owner("nftables", &format!("the table ip {TABLE}"), owner)
}

/// The pid in the table's comment: `None` when the table does not exist (or has no owner).
pub async fn owner() -> Result<Option<u32>, String> {
    let out =
        Command::new("nft").args(["list", "table", "ip", TABLE]).output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(format!("nft list table ip {TABLE}: {}", err.trim()));
    }
    Ok(owner_in(&String::from_utf8_lossy(&out.stdout)))
}

fn owner_in(listing: &str) -> Option<u32> {
    let line = listing.lines().find_map(|l| l.trim().strip_prefix("comment \""))?;
    line.strip_prefix(OWNER)?.trim_end_matches('"').parse().ok()
}

/// The live table as `nft -j` prints it; `Ok(None)` when it does not exist.
pub(crate) async fn list_json() -> Result<Option<String>, String> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "ip", TABLE])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(format!("nft -j list table ip {TABLE}: {}", err.trim()));
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

async fn nft_stdin(input: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("nft -f: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Deletes kplane's table (nothing else): `add` then `delete` in one transaction, so a missing
/// table is not an error (upstream's idiom).
pub async fn cleanup() -> Result<(), Error> {
    nft_stdin(&format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")).await.map_err(Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::fixtures::{index, svc};

    fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn names_are_upstreams_hash_then_the_readable_name() {
        let h = hash_and_truncate("default/web/tcp/http");
        assert_eq!(h.len(), 8 + 1 + "default/web/tcp/http".len());
        assert!(h.ends_with("-default/web/tcp/http"), "{h}");
        // base32(sha256("default/web/tcp/http"))[:8], computed outside kplane (Python).
        assert_eq!(&h[..8], UPSTREAM_WEB_HASH);
        let long = "x".repeat(300);
        let t = hash_and_truncate(&long);
        assert_eq!(t.len(), NAME_BASE_MAX);
        assert!(t.ends_with("..."));
        assert_eq!(
            owner_in("table ip kplane-proxy {\n\tcomment \"kplane service proxy, pid 4242\"\n"),
            Some(4242)
        );
        assert_eq!(owner_in("table ip kplane-proxy {\n\tchain x {\n"), None);
    }

    const UPSTREAM_WEB_HASH: &str = "SUSTUHLJ";

    #[test]
    fn a_service_with_endpoints_is_a_map_element_a_service_chain_and_endpoint_chains() {
        let idx = index("web", &["127.244.0.1", "127.244.0.2"], true);
        let set = rules(&[svc("web", "127.96.0.20", 8080, None)], &idx, &[], &[], 7);
        let t = &set.text;
        assert!(t.starts_with("add table ip kplane-proxy { comment \"kplane service proxy, pid 7\" ; }\nflush table ip kplane-proxy\n"), "{t}");
        let chain = format!("service-{UPSTREAM_WEB_HASH}-default/web/tcp/http");
        assert!(t.contains(&format!("add element ip kplane-proxy service-ips {{ 127.96.0.20 . tcp . 8080 comment \"default/web:http\" : goto {chain} }}\n")), "{t}");
        let numgen = lines_with(t, "numgen");
        assert_eq!(numgen.len(), 1, "{t}");
        let ep1 = format!("endpoint-{}", hash_and_truncate("default/web/tcp/http__127.244.0.1/80"));
        let ep2 = format!("endpoint-{}", hash_and_truncate("default/web/tcp/http__127.244.0.2/80"));
        assert_eq!(
            numgen[0],
            format!("add rule ip kplane-proxy {chain} numgen random mod 2 vmap {{ 0 : goto {ep1}, 1 : goto {ep2} }} comment \"default/web:http\"")
        );
        assert!(t.contains(&format!("add rule ip kplane-proxy {ep2} ip saddr 127.244.0.2 jump mark-for-masquerade comment \"default/web:http\"\n")), "{t}");
        assert!(t.contains(&format!("add rule ip kplane-proxy {ep2} meta l4proto tcp dnat to 127.244.0.2:80 comment \"default/web:http\"\n")), "{t}");
        // Chains are declared before any rule or element names them.
        let declared = t.find(&format!("add chain ip kplane-proxy {ep1}\n")).unwrap();
        assert!(declared < t.find("numgen").unwrap());
        assert_eq!(
            set.objects,
            [format!("chain {chain}"), format!("chain {ep1}"), format!("chain {ep2}")].into()
        );
        assert!(lines_with(t, "add element ip kplane-proxy no-endpoint-services").is_empty(), "{t}");
        // Both base NAT hooks jump to `services` for loopback destinations only.
        assert!(t.contains("add rule ip kplane-proxy nat-output ip daddr 127.0.0.0/8 jump services\n"));
        assert!(t.contains("add rule ip kplane-proxy nat-prerouting ip daddr 127.0.0.0/8 jump services\n"));
        assert!(t.contains(
            "add chain ip kplane-proxy nat-output { type nat hook output priority -100 ; policy accept ; }\n"
        ));
    }

    #[test]
    fn no_ready_endpoint_is_an_element_of_the_no_endpoint_maps_going_to_reject() {
        let idx = index("web", &["127.244.0.1"], false);
        let node: Ipv4Addr = "127.0.10.1".parse().unwrap();
        let set = rules(&[svc("web", "127.96.0.20", 8080, Some(30080))], &idx, &[node], &[], 7);
        let t = &set.text;
        assert!(t.contains("add element ip kplane-proxy no-endpoint-services { 127.96.0.20 . tcp . 8080 comment \"default/web:http\" : goto reject-chain }\n"), "{t}");
        assert!(t.contains("add element ip kplane-proxy no-endpoint-nodeports { tcp . 30080 comment \"default/web:http\" : goto reject-chain }\n"), "{t}");
        assert!(t.contains("add rule ip kplane-proxy reject-chain reject\n"));
        assert!(t.contains("add rule ip kplane-proxy filter-output ct state new ip daddr 127.0.0.0/8 jump service-endpoints-check\n"));
        assert!(!t.contains("add element ip kplane-proxy service-ips"), "{t}");
        assert!(set.objects.is_empty());
    }

    #[test]
    fn node_ports_and_affinity() {
        let idx = index("web", &["127.244.0.1"], true);
        let node: Ipv4Addr = "127.0.10.1".parse().unwrap();
        let mut web = (*svc("web", "127.96.0.20", 8080, Some(30080))).clone();
        web.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let set = rules(&[Arc::new(web)], &idx, &[node], &[], 7);
        let t = &set.text;
        let chain = format!("service-{UPSTREAM_WEB_HASH}-default/web/tcp/http");
        assert!(t.contains("add element ip kplane-proxy nodeport-ips { 127.0.10.1 }\n"), "{t}");
        assert!(t.contains(&format!("add element ip kplane-proxy service-nodeports {{ tcp . 30080 comment \"default/web:http\" : goto {chain} }}\n")), "{t}");
        let base = hash_and_truncate("default/web/tcp/http__127.244.0.1/80");
        assert!(t.contains(&format!("add set ip kplane-proxy affinity-{base} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}\n")), "{t}");
        let check = t
            .find(&format!("add rule ip kplane-proxy {chain} ip saddr @affinity-{base} goto endpoint-{base}"))
            .unwrap();
        assert!(check < t.find("numgen").unwrap(), "affinity is checked before balancing: {t}");
        assert!(
            t.contains(&format!(
                "add rule ip kplane-proxy endpoint-{base} update @affinity-{base} {{ ip saddr }}"
            )),
            "{t}"
        );
        assert!(set.objects.contains(&format!("set affinity-{base}")));
    }

    #[test]
    fn stale_objects_are_deleted_after_the_rebuild_and_only_the_loopback_range_is_programmed() {
        let idx = index("web", &["127.244.0.1"], true);
        let before = rules(&[svc("web", "127.96.0.20", 8080, None)], &idx, &[], &[], 7);
        let after = rules(&[], &idx, &[], &[], 7);
        let script = after.script(&before.objects);
        let deletes: Vec<&str> = script.lines().filter(|l| l.starts_with("delete ")).collect();
        assert_eq!(deletes.len(), 2, "{script}");
        assert!(
            script.ends_with(&format!(
                "delete chain ip kplane-proxy service-{UPSTREAM_WEB_HASH}-default/web/tcp/http\n"
            )) || deletes.iter().any(|d| d.contains("service-")),
            "{script}"
        );
        assert!(script.find("flush table").unwrap() < script.find("delete chain").unwrap());
        assert_eq!(before.script(&before.objects), before.text);

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
        assert!(!set.text.contains("10.0.0.5") && !set.text.contains("10.96.0.1"), "{}", set.text);
        assert!(!set.text.contains("127.96.0.10 "), "{}", set.text);
        assert!(set.text.contains("no-endpoint-services { 127.96.0.20 . tcp . 80"), "{}", set.text);
    }
}
