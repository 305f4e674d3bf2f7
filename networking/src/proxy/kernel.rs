//! How the kernel carries a connection in iptables mode, read back from the live ruleset: the rules
//! of an `iptables-save` dump that a connection to `ip:port/protocol` walks, from nat
//! `KUBE-SERVICES` (or `KUBE-NODEPORTS`) to `KUBE-SVC-…` and each `KUBE-SEP-…` DNAT, or the filter
//! REJECT of a port with no ready endpoint. X-ray shows it as the listener hop; it lives here, beside
//! the code that writes the rules, so the two cannot drift.
//!
//! Also the unprivileged half of the question "which proxy takes this address": a userspace proxy
//! listens on the ClusterIP, which `/proc/net/tcp` shows to anyone.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::iptables::MARKER_CHAIN;

/// One `-A` line of a dump, with the parts a walk reads.
#[derive(Debug, Clone, Default)]
struct Rule {
    text: String,
    dest: Option<String>,
    proto: Option<String>,
    dport: Option<u16>,
    jump: Option<String>,
    probability: Option<String>,
    to_destination: Option<String>,
    /// An affinity check (`-m recent --rcheck`): taken only by a client seen before.
    affinity: bool,
}

/// The kernel's path for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelPath {
    /// Every rule the connection matches on its way, in order (`-A CHAIN …` as iptables-save prints it).
    pub rules: Vec<String>,
    /// The service chain it lands in (`KUBE-SVC-…`), if a DNAT path exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_chain: Option<String>,
    /// The endpoint choices of that chain.
    pub endpoints: Vec<KernelEndpoint>,
    /// The filter rule that refuses the connection (a port with no ready endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<String>,
}

/// One `KUBE-SEP-…` choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelEndpoint {
    pub chain: String,
    /// `statistic --mode random --probability`; none for the last choice, which takes the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<String>,
    /// The DNAT target, `ip:port`.
    pub destination: String,
}

/// Splits a rule as the shell would (iptables-save quotes comments with `"` and escapes `\"`).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_rule(line: &str) -> Option<(String, Rule)> {
    let t = tokens(line);
    if t.first().map(String::as_str) != Some("-A") {
        return None;
    }
    let chain = t.get(1)?.clone();
    let mut r = Rule { text: line.to_string(), ..Rule::default() };
    let mut i = 2;
    while i < t.len() {
        let next = t.get(i + 1).cloned();
        match t[i].as_str() {
            "-d" => r.dest = next,
            "-p" => r.proto = next,
            "--dport" => r.dport = next.and_then(|p| p.parse().ok()),
            "-j" => r.jump = next,
            "--probability" => r.probability = next,
            "--to-destination" => r.to_destination = next,
            "--rcheck" => r.affinity = true,
            _ => {}
        }
        i += 1;
    }
    Some((chain, r))
}

/// A dump's rules by (table, chain), in order.
#[derive(Debug, Default)]
pub struct Saved {
    chains: HashMap<(String, String), Vec<Rule>>,
    marker: bool,
}

impl Saved {
    /// Reads `iptables-save` output (any tables, `*table` headers included).
    pub fn parse(dump: &str) -> Saved {
        let mut saved = Saved::default();
        let mut table = String::new();
        for line in dump.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if line.starts_with(&format!(":{MARKER_CHAIN} ")) {
                saved.marker = true;
            } else if let Some((chain, rule)) = parse_rule(line) {
                saved.chains.entry((table.clone(), chain)).or_default().push(rule);
            }
        }
        saved
    }

    /// Whether kplane's iptables proxy has programmed this ruleset (its marker chain exists).
    pub fn is_kplanes(&self) -> bool {
        self.marker
    }

    fn chain(&self, table: &str, chain: &str) -> &[Rule] {
        self.chains.get(&(table.to_string(), chain.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The path of a connection to `ip:port` over `protocol` (`tcp`, `udp`, `sctp`), if kplane's
    /// rules take it at all.
    pub fn walk(&self, ip: Ipv4Addr, port: u16, protocol: &str) -> Option<KernelPath> {
        let proto = protocol.to_ascii_lowercase();
        let dest = format!("{ip}/32");
        let matches = |r: &Rule| {
            r.dest.as_deref().is_none_or(|d| d == dest)
                && r.proto.as_deref().is_none_or(|p| p == proto)
                && r.dport.is_none_or(|p| p == port)
        };
        let mut path =
            KernelPath { rules: Vec::new(), service_chain: None, endpoints: Vec::new(), reject: None };
        // nat KUBE-SERVICES, then (through its last rule) KUBE-NODEPORTS.
        let mut chain = "KUBE-SERVICES";
        let mut seen = 0;
        let svc_chain = 'outer: loop {
            seen += 1;
            if seen > 4 {
                break None;
            }
            for r in self.chain("nat", chain).iter().filter(|r| matches(r)) {
                match r.jump.as_deref() {
                    Some(j) if j.starts_with("KUBE-SVC-") || j.starts_with("KUBE-EXT-") => {
                        path.rules.push(r.text.clone());
                        break 'outer Some(j.to_string());
                    }
                    Some("KUBE-NODEPORTS") if chain == "KUBE-SERVICES" => {
                        path.rules.push(r.text.clone());
                        chain = "KUBE-NODEPORTS";
                        continue 'outer;
                    }
                    Some("KUBE-MARK-MASQ") => path.rules.push(r.text.clone()),
                    _ => {}
                }
            }
            break None;
        };
        match svc_chain {
            Some(svc) => {
                for r in self.chain("nat", &svc) {
                    path.rules.push(r.text.clone());
                    let Some(sep) = r.jump.as_deref().filter(|j| j.starts_with("KUBE-SEP-")) else { continue };
                    if r.affinity {
                        continue;
                    }
                    let dnat = self.chain("nat", sep).iter().find(|s| s.jump.as_deref() == Some("DNAT"));
                    if let Some(d) = dnat {
                        path.rules.push(d.text.clone());
                    }
                    path.endpoints.push(KernelEndpoint {
                        chain: sep.to_string(),
                        probability: r.probability.clone(),
                        destination: dnat.and_then(|d| d.to_destination.clone()).unwrap_or_default(),
                    });
                }
                path.service_chain = Some(svc);
                Some(path)
            }
            None => {
                let reject = self
                    .chain("filter", "KUBE-SERVICES")
                    .iter()
                    .find(|r| matches(r) && r.dest.is_some() && r.jump.as_deref() == Some("REJECT"))?;
                path.reject = Some(reject.text.clone());
                Some(path)
            }
        }
    }
}

/// The live nat and filter rules, when this process may read them (root) and the tools exist;
/// `Err` says why not.
pub async fn read_live() -> Result<Saved, String> {
    if super::iptables::euid() != Some(0) {
        return Err("reading the kernel's iptables rules needs root".into());
    }
    let mut dump = String::new();
    for table in ["nat", "filter"] {
        dump.push_str(&super::iptables::save(table).await?);
    }
    Ok(Saved::parse(&dump))
}

/// Whether a TCP socket listens on `ip:port`, from `/proc/net/tcp` (readable by anyone): how a
/// userspace proxy (or anything else) holding a ClusterIP shows.
pub fn tcp_listener(ip: Ipv4Addr, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    listens_in(&table, ip, port)
}

fn listens_in(table: &str, ip: Ipv4Addr, port: u16) -> bool {
    // `local_address` is the IPv4 address as a little-endian hex word, then the port in hex.
    let want = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1).is_some_and(|a| a.eq_ignore_ascii_case(&want)) && f.get(3) == Some(&"0A")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_quotes() {
        assert_eq!(
            tokens(r#"-A X -m comment --comment "default/web:http cluster IP" -j Y"#),
            vec!["-A", "X", "-m", "comment", "--comment", "default/web:http cluster IP", "-j", "Y"]
        );
        assert_eq!(tokens(r#"a "x \"y\"" """#), vec!["a", "x \"y\"", ""]);
    }

    #[test]
    fn proc_net_tcp_listeners() {
        let table = "  sl  local_address rem_address   st\n   0: 0A60647F:1F90 00000000:0000 0A 0\n   1: 0B60647F:0050 0100007F:1234 01 0\n";
        assert!(listens_in(table, "127.100.96.10".parse().unwrap(), 8080));
        assert!(!listens_in(table, "127.100.96.11".parse().unwrap(), 80), "established, not listening");
        assert!(!listens_in(table, "127.100.96.10".parse().unwrap(), 8081));
    }
}
