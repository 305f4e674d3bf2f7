//! How the kernel carries a connection in iptables or nftables mode, read back from the live
//! ruleset. iptables: the rules of an `iptables-save` dump that a connection to
//! `ip:port/protocol` walks, from nat `KUBE-SERVICES` (or `KUBE-NODEPORTS`) to `KUBE-SVC-…` and
//! each `KUBE-SEP-…` DNAT, or the filter REJECT of a port with no ready endpoint. nftables
//! ([`NftTable`], from `nft -j list table ip kplane-proxy`): the `service-ips` (or
//! `service-nodeports`) element that sends it to `service-…`, that chain's `numgen` choices and
//! each `endpoint-…` DNAT, or the `no-endpoint-*` element that rejects it. X-ray shows it as the
//! listener hop; it lives here, beside the code that writes the rules, so the two cannot drift.
//!
//! Also the unprivileged half of the question "which proxy takes this address": a userspace proxy
//! listens on the ClusterIP, which `/proc/net/tcp` shows to anyone.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::Value;

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

/// kplane's nftables table as `nft -j list table` prints it: the verdict maps' elements, the
/// sets' elements and each chain's rules.
#[derive(Debug, Default)]
pub struct NftTable {
    maps: HashMap<String, Vec<NftElement>>,
    sets: HashMap<String, Vec<String>>,
    chains: HashMap<String, Vec<NftRule>>,
}

/// A verdict map's element: (key parts, comment, the chain it goes to).
type NftElement = (Vec<String>, Option<String>, String);

#[derive(Debug, Clone)]
struct NftRule {
    chain: String,
    expr: Vec<Value>,
    comment: Option<String>,
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A map or set element's key parts and comment (`{"elem": {"val": …, "comment": …}}`, or the
/// bare value or `concat`).
fn element_key(v: &Value) -> (Vec<String>, Option<String>) {
    let (val, comment) = match v.get("elem") {
        Some(e) => (e.get("val").unwrap_or(&Value::Null), e.get("comment").and_then(Value::as_str)),
        None => (v, None),
    };
    let parts = match val.get("concat").and_then(Value::as_array) {
        Some(parts) => parts.iter().map(scalar).collect(),
        None => vec![scalar(val)],
    };
    (parts, comment.map(str::to_string))
}

fn verdict_target(v: &Value) -> Option<String> {
    v.get("goto").or_else(|| v.get("jump"))?.get("target")?.as_str().map(str::to_string)
}

/// An nft expression as `nft list` would print it (the forms kplane writes; others as JSON).
fn render(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_string();
    }
    if v.is_number() {
        return v.to_string();
    }
    let Some((k, body)) = v.as_object().and_then(|o| o.iter().next()) else { return v.to_string() };
    match k.as_str() {
        "payload" => format!("{} {}", scalar(&body["protocol"]), scalar(&body["field"])),
        "meta" => format!("meta {}", scalar(&body["key"])),
        "concat" => {
            body.as_array().map(|a| a.iter().map(render).collect::<Vec<_>>().join(" . ")).unwrap_or_default()
        }
        "numgen" => format!("numgen {} mod {}", scalar(&body["mode"]), scalar(&body["mod"])),
        "match" => {
            let op = body["op"].as_str().unwrap_or("==");
            let op = if op == "==" { String::new() } else { format!("{op} ") };
            format!("{} {op}{}", render(&body["left"]), render(&body["right"]))
        }
        "vmap" => format!("{} vmap {}", render(&body["key"]), render(&body["data"])),
        "set" if body.is_array() => {
            let items: Vec<String> = body
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| match e.as_array() {
                    Some(pair) if pair.len() == 2 => format!("{} : {}", render(&pair[0]), render(&pair[1])),
                    _ => render(e),
                })
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        "set" => format!("{} {} {{ {} }}", scalar(&body["op"]), scalar(&body["set"]), render(&body["elem"])),
        "goto" | "jump" => format!("{k} {}", scalar(&body["target"])),
        "dnat" | "snat" => match body.get("port") {
            Some(p) => format!("{k} to {}:{}", scalar(&body["addr"]), scalar(p)),
            None => format!("{k} to {}", scalar(&body["addr"])),
        },
        "reject" | "masquerade" | "return" | "accept" | "drop" => k.clone(),
        _ => v.to_string(),
    }
}

impl NftRule {
    fn text(&self) -> String {
        let body: Vec<String> = self.expr.iter().map(render).collect();
        let comment = self.comment.as_deref().map(|c| format!(" comment \"{c}\"")).unwrap_or_default();
        format!("chain {}: {}{comment}", self.chain, body.join(" "))
    }

    /// The `vmap @<map>` this rule looks up, if any.
    fn looks_up(&self, map: &str) -> bool {
        let want = format!("@{map}");
        self.expr.iter().any(|e| e.get("vmap").is_some_and(|v| v["data"].as_str() == Some(want.as_str())))
    }
}

impl NftTable {
    /// Reads `nft -j list table` output.
    pub fn parse(json: &str) -> Result<NftTable, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j output: {e}"))?;
        let mut t = NftTable::default();
        for obj in doc["nftables"].as_array().into_iter().flatten() {
            if let Some(m) = obj.get("map").or_else(|| obj.get("set")) {
                let name = scalar(&m["name"]);
                for e in m["elem"].as_array().into_iter().flatten() {
                    match e.as_array() {
                        // A map element: [key, verdict].
                        Some(pair) if pair.len() == 2 => {
                            let (key, comment) = element_key(&pair[0]);
                            if let Some(target) = verdict_target(&pair[1]) {
                                t.maps.entry(name.clone()).or_default().push((key, comment, target));
                            }
                        }
                        _ => t.sets.entry(name.clone()).or_default().extend(element_key(e).0),
                    }
                }
            } else if let Some(r) = obj.get("rule") {
                let chain = scalar(&r["chain"]);
                let rule = NftRule {
                    chain: chain.clone(),
                    expr: r["expr"].as_array().cloned().unwrap_or_default(),
                    comment: r.get("comment").and_then(Value::as_str).map(str::to_string),
                };
                t.chains.entry(chain).or_default().push(rule);
            }
        }
        Ok(t)
    }

    fn chain(&self, name: &str) -> &[NftRule] {
        self.chains.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The element of `map` with exactly `key`, as (text, target).
    fn element(&self, map: &str, key: &[String]) -> Option<(String, String)> {
        let (k, comment, target) = self.maps.get(map)?.iter().find(|(k, _, _)| k == key)?;
        let comment = comment.as_deref().map(|c| format!(" comment \"{c}\"")).unwrap_or_default();
        Some((format!("map {map}: {}{comment} : goto {target}", k.join(" . ")), target.clone()))
    }

    /// The lookup rule of `chain` into `map`, then the element of `map` for `key`.
    fn lookup(&self, chain: &str, map: &str, key: &[String], rules: &mut Vec<String>) -> Option<String> {
        let (element, target) = self.element(map, key)?;
        if let Some(r) = self.chain(chain).iter().find(|r| r.looks_up(map)) {
            rules.push(r.text());
        }
        rules.push(element);
        Some(target)
    }

    /// The path of a connection to `ip:port` over `protocol` (`tcp`, `udp`), if kplane's table
    /// takes it at all.
    pub fn walk(&self, ip: Ipv4Addr, port: u16, protocol: &str) -> Option<KernelPath> {
        let proto = protocol.to_ascii_lowercase();
        let (ip, port_s) = (ip.to_string(), port.to_string());
        let by_addr = [ip.clone(), proto.clone(), port_s.clone()];
        let by_port = [proto, port_s];
        let node = self.sets.get("nodeport-ips").is_some_and(|s| s.contains(&ip));
        let mut path =
            KernelPath { rules: Vec::new(), service_chain: None, endpoints: Vec::new(), reject: None };
        let svc = self.lookup("services", "service-ips", &by_addr, &mut path.rules).or_else(|| {
            node.then(|| self.lookup("services", "service-nodeports", &by_port, &mut path.rules)).flatten()
        });
        let Some(svc) = svc else {
            let mut rules = Vec::new();
            let reject = self
                .lookup("service-endpoints-check", "no-endpoint-services", &by_addr, &mut rules)
                .or_else(|| {
                node.then(|| {
                    self.lookup("service-endpoints-check", "no-endpoint-nodeports", &by_port, &mut rules)
                })
                .flatten()
            })?;
            path.reject =
                Some(format!("{} -> chain {reject}: reject", rules.last().cloned().unwrap_or_default()));
            path.rules = rules;
            return Some(path);
        };
        for r in self.chain(&svc) {
            path.rules.push(r.text());
            // The balancing rule: `numgen random mod N vmap { i : goto endpoint-… }`.
            let Some(vmap) = r.expr.iter().find_map(|e| e.get("vmap")) else { continue };
            let Some(n) = vmap["key"].get("numgen").and_then(|g| g["mod"].as_u64()) else { continue };
            for choice in vmap["data"]["set"].as_array().into_iter().flatten() {
                let Some(chain) = choice.get(1).and_then(verdict_target) else { continue };
                let dnat = self.chain(&chain).iter().find_map(|r| {
                    let d = r.expr.iter().find_map(|e| e.get("dnat"))?;
                    Some((r.text(), d))
                });
                let destination = match &dnat {
                    Some((text, d)) => {
                        path.rules.push(text.clone());
                        match d.get("port") {
                            Some(p) => format!("{}:{}", scalar(&d["addr"]), scalar(p)),
                            None => scalar(&d["addr"]),
                        }
                    }
                    None => String::new(),
                };
                path.endpoints.push(KernelEndpoint {
                    chain,
                    probability: Some(format!("{:.10}", 1.0 / n.max(1) as f64)),
                    destination,
                });
            }
        }
        path.service_chain = Some(svc);
        Some(path)
    }
}

/// kplane's live nftables table: `Ok(None)` when it does not exist; `Err` says why it cannot be
/// read (not root, no `nft`).
pub async fn read_live_nft() -> Result<Option<NftTable>, String> {
    if super::iptables::euid() != Some(0) {
        return Err("reading the kernel's nftables ruleset needs root".into());
    }
    match super::nftables::list_json().await? {
        Some(json) => NftTable::parse(&json).map(Some),
        None => Ok(None),
    }
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

    /// `nft -j list table` output of tables that `nftables::rules` wrote (applied with nft 1.0.6
    /// under another table name, VIPs in 127.111.250.0/24, the endpoints' DNAT moved to servers
    /// the capture ran): two endpoints; one endpoint with a NodePort and ClientIP affinity; no
    /// endpoints.
    const NFT_TWO: &str = include_str!("testdata/nft-two-endpoints.json");
    const NFT_NODEPORT: &str = include_str!("testdata/nft-nodeport-affinity.json");
    const NFT_NONE: &str = include_str!("testdata/nft-no-endpoints.json");

    #[test]
    fn the_nftables_walk_reads_the_live_json() {
        let vip: Ipv4Addr = "127.111.250.20".parse().unwrap();
        let t = NftTable::parse(NFT_TWO).unwrap();
        let path = t.walk(vip, 8080, "TCP").expect("a path");
        let svc = path.service_chain.clone().unwrap();
        assert_eq!(svc, "service-SUSTUHLJ-default/web/tcp/http");
        assert_eq!(path.rules[0], "chain services: ip daddr . meta l4proto . th dport vmap @service-ips");
        assert_eq!(
            path.rules[1],
            format!("map service-ips: 127.111.250.20 . tcp . 8080 comment \"default/web:http\" : goto {svc}")
        );
        assert!(
            path.rules[2].starts_with(&format!("chain {svc}: numgen random mod 2 vmap {{ 0 : goto endpoint-")),
            "{path:?}"
        );
        assert_eq!(
            path.endpoints.iter().map(|e| e.destination.as_str()).collect::<Vec<_>>(),
            ["127.244.99.1:8099", "127.244.99.2:8099"]
        );
        assert_eq!(path.endpoints[0].probability.as_deref(), Some("0.5000000000"));
        assert!(
            path.endpoints[1].chain.starts_with("endpoint-")
                && path.endpoints[1].chain.ends_with("__127.244.0.2/80")
        );
        assert!(path.rules.iter().any(|r| r.ends_with("meta l4proto tcp dnat to 127.244.99.2:8099 comment \"default/web:http\"")), "{path:?}");
        assert!(path.reject.is_none());
        assert!(t.walk(vip, 8081, "tcp").is_none());
        assert!(t.walk(vip, 8080, "udp").is_none());
        assert!(t.walk("127.0.10.1".parse().unwrap(), 30080, "tcp").is_none(), "no NodePort in this table");

        let t = NftTable::parse(NFT_NODEPORT).unwrap();
        let np = t.walk("127.0.10.1".parse().unwrap(), 30080, "tcp").expect("the NodePort path");
        assert_eq!(np.service_chain.as_deref(), Some("service-SUSTUHLJ-default/web/tcp/http"));
        assert!(
            np.rules[0].contains("ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"),
            "{np:?}"
        );
        assert!(np.rules[1].starts_with("map service-nodeports: tcp . 30080"), "{np:?}");
        // The affinity check is listed, not counted as a choice.
        assert!(np.rules.iter().any(|r| r.contains("ip saddr @affinity-")), "{np:?}");
        assert_eq!(np.endpoints.len(), 1, "{np:?}");
        assert_eq!(np.endpoints[0].destination, "127.244.99.1:8099");
        assert!(t.walk("127.0.10.2".parse().unwrap(), 30080, "tcp").is_none(), "not a node address");

        let t = NftTable::parse(NFT_NONE).unwrap();
        let path = t.walk(vip, 8080, "tcp").expect("the reject path");
        assert!(path.service_chain.is_none() && path.endpoints.is_empty(), "{path:?}");
        let reject = path.reject.unwrap();
        assert!(
            reject.contains("map no-endpoint-services: 127.111.250.20 . tcp . 8080")
                && reject.ends_with("goto reject-chain -> chain reject-chain: reject"),
            "{reject}"
        );
        let np = t.walk("127.0.10.1".parse().unwrap(), 30080, "tcp").expect("the NodePort reject");
        assert!(np.reject.unwrap().contains("no-endpoint-nodeports: tcp . 30080"));
        assert!(NftTable::parse("not json").is_err());
    }
}
