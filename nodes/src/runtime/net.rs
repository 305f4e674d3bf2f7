//! The container's network: DNS through the cluster DNS server named in the container's
//! `/etc/resolv.conf` (search path, `ndots`), and plain-HTTP clients (`curl`, `wget`) whose sockets
//! are bound to the pod's IP and may only reach cluster addresses ([`NetPolicy`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::shell::{Io, Shell};

/// What a container may connect to.
#[derive(Debug, Clone)]
pub struct NetPolicy {
    /// The pod's address: the source of every connection, and what `localhost` means.
    pub pod_ip: Ipv4Addr,
    /// The cluster's ranges (service VIPs, pod IPs, node IPs, the DNS address).
    pub allowed: Vec<(Ipv4Addr, u8)>,
    /// The port the cluster DNS answers on (the address is the resolv.conf nameserver).
    pub dns_port: u16,
}

impl NetPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else { return false };
        ip == self.pod_ip
            || self.allowed.iter().any(|(net, len)| {
                let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from((*len).min(32))) };
                u32::from(ip) & mask == u32::from(*net) & mask
            })
    }

    /// `localhost` and 127.0.0.1 are the pod's own address (its network namespace's loopback).
    fn map_local(&self, ip: Ipv4Addr) -> Ipv4Addr {
        if ip == Ipv4Addr::LOCALHOST {
            self.pod_ip
        } else {
            ip
        }
    }
}

/// The resolver settings of `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvConf {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub ndots: usize,
}

pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut rc = ResolvConf { ndots: 1, ..Default::default() };
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => rc.nameservers.extend(w.next().and_then(|a| a.parse::<Ipv4Addr>().ok())),
            Some("search") => rc.search = w.map(str::to_string).collect(),
            Some("options") => {
                for o in w {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        rc.ndots = n;
                    }
                }
            }
            _ => {}
        }
    }
    rc
}

#[derive(Debug, PartialEq, Eq)]
pub enum DnsError {
    /// No such name (after the whole search path).
    NotFound,
    /// No server answered.
    Timeout,
    /// The nameserver is not a cluster address, or none is configured.
    NoServer,
}

/// One A query; Ok(empty) is NXDOMAIN or no A record.
async fn query(policy: &NetPolicy, server: Ipv4Addr, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
    if !policy.allows(IpAddr::V4(server)) {
        return Err(DnsError::NoServer);
    }
    let id: u16 = rand::random();
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Ok(Vec::new());
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = UdpSocket::bind(SocketAddr::from((policy.pod_ip, 0))).await.map_err(|_| DnsError::NoServer)?;
    sock.connect(SocketAddr::from((server, policy.dns_port))).await.map_err(|_| DnsError::NoServer)?;
    let mut buf = vec![0u8; 1500];
    for _ in 0..2 {
        if sock.send(&q).await.is_err() {
            return Err(DnsError::Timeout);
        }
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = sock.recv(&mut buf) => {
                    let Ok(n) = r else { break };
                    if let Some(ips) = parse_answer(&buf[..n], id) {
                        return Ok(ips);
                    }
                }
            }
        }
    }
    Err(DnsError::Timeout)
}

/// The A records of a response to query `id` (None: not that response or malformed).
fn parse_answer(m: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    if m.len() < 12 || u16::from_be_bytes([m[0], m[1]]) != id || m[2] & 0x80 == 0 {
        return None;
    }
    let rcode = m[3] & 0x0f;
    if rcode == 3 {
        return Some(Vec::new());
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *m.get(i)? as usize;
            if l == 0 {
                return Some(i + 1);
            }
            if l & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + l;
        }
    };
    for _ in 0..qd {
        i = skip_name(i)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        i = skip_name(i)?;
        let h = m.get(i..i + 10)?;
        let (ty, len) = (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[8], h[9]]) as usize);
        i += 10;
        let data = m.get(i..i + len)?;
        if ty == 1 && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += len;
    }
    Some(ips)
}

/// Resolves a host as the C library would with the container's resolv.conf. Returns the
/// addresses and the name that answered.
pub async fn resolve(sh: &Shell, host: &str) -> Result<(Vec<Ipv4Addr>, String), DnsError> {
    let policy = &sh.sb.net;
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok((vec![policy.map_local(ip)], host.to_string()));
    }
    if host == "localhost" {
        return Ok((vec![policy.pod_ip], host.to_string()));
    }
    if host.eq_ignore_ascii_case(&sh.sb.hostname) {
        return Ok((vec![policy.pod_ip], host.to_string()));
    }
    let rc = sh
        .sb
        .fs
        .read("/etc/resolv.conf")
        .map(|d| parse_resolv_conf(&String::from_utf8_lossy(&d)))
        .unwrap_or_default();
    let server = *rc.nameservers.first().ok_or(DnsError::NoServer)?;
    let mut names = Vec::new();
    if host.ends_with('.') {
        names.push(host.trim_end_matches('.').to_string());
    } else {
        let searched = rc.search.iter().map(|s| format!("{host}.{s}"));
        if host.matches('.').count() >= rc.ndots {
            names.push(host.to_string());
            names.extend(searched);
        } else {
            names.extend(searched);
            names.push(host.to_string());
        }
    }
    for n in names {
        let ips = query(policy, server, &n).await?;
        if !ips.is_empty() {
            return Ok((ips, n));
        }
    }
    Err(DnsError::NotFound)
}

pub async fn nslookup(sh: &mut Shell, args: &[String], io: &Io) -> i32 {
    let Some(host) = args.iter().find(|a| !a.starts_with('-')) else {
        io.err("Usage: nslookup HOST [DNS_SERVER]\n").await;
        return 1;
    };
    let rc = sh
        .sb
        .fs
        .read("/etc/resolv.conf")
        .map(|d| parse_resolv_conf(&String::from_utf8_lossy(&d)))
        .unwrap_or_default();
    let server = rc.nameservers.first().map(|s| s.to_string()).unwrap_or_default();
    io.out(&format!("Server:\t\t{server}\nAddress:\t{server}:53\n\n")).await;
    match resolve(sh, host).await {
        Ok((ips, name)) => {
            let mut s = String::new();
            for ip in ips {
                s.push_str(&format!("Name:\t{name}\nAddress: {ip}\n"));
            }
            s.push('\n');
            io.out(&s).await;
            0
        }
        Err(DnsError::NotFound) => {
            io.out(&format!("** server can't find {host}: NXDOMAIN\n\n")).await;
            1
        }
        Err(_) => {
            io.out(";; connection timed out; no servers could be reached\n\n").await;
            1
        }
    }
}

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, PartialEq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(u: &str) -> Result<Url, String> {
    let rest = match u.split_once("://") {
        Some(("http", r)) | Some(("HTTP", r)) => r,
        Some((scheme, _)) => return Err(format!("Protocol \"{scheme}\" not supported")),
        None => u,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            (h, p.parse::<u16>().map_err(|_| format!("Port number was not a decimal number: {p}"))?)
        }
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("No host part in the URL".into());
    }
    Ok(Url { host: host.to_string(), port, path })
}

/// Why an HTTP request failed, with curl's exit codes.
#[derive(Debug)]
pub enum HttpError {
    Resolve(String),
    /// The address is outside the cluster.
    Refused {
        ip: Ipv4Addr,
        port: u16,
        why: String,
    },
    Timeout,
    Protocol(String),
}

impl HttpError {
    fn curl_code(&self) -> i32 {
        match self {
            HttpError::Resolve(_) => 6,
            HttpError::Refused { .. } => 7,
            HttpError::Timeout => 28,
            HttpError::Protocol(_) => 56,
        }
    }
}

pub struct Response {
    pub status_line: String,
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub ip: Ipv4Addr,
}

/// One HTTP/1.1 request from the pod's IP to a cluster address.
pub async fn http(
    sh: &Shell,
    method: &str,
    url: &Url,
    extra: &[(String, String)],
    body: Option<&[u8]>,
    timeout: Duration,
    verbose: Option<&Io>,
) -> Result<Response, HttpError> {
    let run = async {
        let (ips, _) = resolve(sh, &url.host).await.map_err(|_| HttpError::Resolve(url.host.clone()))?;
        let ip = sh.sb.net.map_local(*ips.first().ok_or_else(|| HttpError::Resolve(url.host.clone()))?);
        if let Some(v) = verbose {
            v.err(&format!("*   Trying {ip}:{}...\n", url.port)).await;
        }
        if !sh.sb.net.allows(IpAddr::V4(ip)) {
            return Err(HttpError::Refused { ip, port: url.port, why: ": address not in the cluster".into() });
        }
        let started = Instant::now();
        let mut stream = connect(sh.sb.net.pod_ip, SocketAddr::from((ip, url.port))).await.map_err(|e| {
            HttpError::Refused {
                ip,
                port: url.port,
                why: format!(" after {} ms: {}", started.elapsed().as_millis(), reason(&e)),
            }
        })?;
        if let Some(v) = verbose {
            v.err(&format!("* Connected to {} ({ip}) port {}\n", url.host, url.port)).await;
        }
        let host_header = if url.port == 80 { url.host.clone() } else { format!("{}:{}", url.host, url.port) };
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n",
            url.path
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        if let Some(v) = verbose {
            let shown: String = req.lines().map(|l| format!("> {l}\n")).collect();
            v.err(&format!("{shown}>\n")).await;
        }
        req.push_str("Connection: close\r\n\r\n");
        let proto = |e: std::io::Error| HttpError::Protocol(e.to_string());
        stream.write_all(req.as_bytes()).await.map_err(proto)?;
        if let Some(b) = body {
            stream.write_all(b).await.map_err(proto)?;
        }
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 16384];
        loop {
            let n = stream.read(&mut buf).await.map_err(proto)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > super::io::MAX_INPUT {
                return Err(HttpError::Protocol("response too large".into()));
            }
            if method == "HEAD" && raw.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| HttpError::Protocol("Empty reply from server".into()))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
        if chunked {
            body = dechunk(&body);
        }
        if let Some(v) = verbose {
            let mut s = format!("< {status_line}\n");
            for (k, val) in &headers {
                s.push_str(&format!("< {k}: {val}\n"));
            }
            v.err(&format!("{s}<\n")).await;
        }
        Ok(Response { status_line, code, headers, body, ip })
    };
    tokio::time::timeout(timeout, run).await.unwrap_or(Err(HttpError::Timeout))
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(end) = b[i..].windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[i..i + end]).split(';').next().unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        i += end + 2;
        if size == 0 || i + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[i..i + size]);
        i += size + 2;
        if i >= b.len() {
            break;
        }
    }
    out
}

async fn connect(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((src, 0)))?;
    sock.connect(dst).await
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Couldn't connect to server".into(),
        _ => e.to_string(),
    }
}

fn secs(a: Option<&String>) -> Option<Duration> {
    a.and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e6)))
}

pub async fn curl(sh: &mut Shell, args: &[String], io: &Io) -> i32 {
    let (mut head, mut silent, mut show_err, mut verbose, mut fail) = (false, false, false, false, false);
    let (mut method, mut out_file, mut data, mut url) =
        (None::<String>, None::<String>, None::<String>, None::<String>);
    let mut headers = Vec::new();
    let mut timeout = Duration::from_secs(120);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-I" | "--head" => head = true,
            "-s" | "--silent" => silent = true,
            "-S" | "--show-error" => show_err = true,
            "-v" | "--verbose" => verbose = true,
            "-f" | "--fail" => fail = true,
            "-L" | "-k" | "--insecure" | "--location" | "-4" => {}
            "-X" | "--request" => method = it.next().cloned(),
            "-o" | "--output" => out_file = it.next().cloned(),
            "-d" | "--data" | "--data-raw" => data = it.next().cloned(),
            "-H" | "--header" => {
                if let Some((k, v)) = it.next().and_then(|h| h.split_once(':')) {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            "-m" | "--max-time" | "--connect-timeout" => timeout = secs(it.next()).unwrap_or(timeout),
            s if s.starts_with('-')
                && s.len() > 1
                && !s.starts_with("--")
                && s[1..].chars().all(|c| "IsSvfLk".contains(c)) =>
            {
                head |= s.contains('I');
                silent |= s.contains('s');
                show_err |= s.contains('S');
                verbose |= s.contains('v');
                fail |= s.contains('f');
            }
            s if s.starts_with('-') => {
                io.err(&format!(
                    "curl: option {s}: is unknown\ncurl: try 'curl --help' for more information\n"
                ))
                .await;
                return 2;
            }
            s => url = Some(s.to_string()),
        }
    }
    let Some(raw) = url else {
        io.err("curl: no URL specified!\ncurl: try 'curl --help' for more information\n").await;
        return 2;
    };
    let u = match parse_url(&raw) {
        Ok(u) => u,
        Err(e) => {
            io.err(&format!("curl: (1) {e}\n")).await;
            return 1;
        }
    };
    let method = method.unwrap_or_else(|| {
        if head {
            "HEAD".into()
        } else if data.is_some() {
            "POST".into()
        } else {
            "GET".into()
        }
    });
    if data.is_some() {
        headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
    }
    let verbose_io = verbose.then_some(io);
    match http(sh, &method, &u, &headers, data.as_ref().map(|d| d.as_bytes()), timeout, verbose_io).await {
        Ok(r) => {
            if fail && r.code >= 400 {
                if !silent || show_err {
                    io.err(&format!("curl: (22) The requested URL returned error: {}\n", r.code)).await;
                }
                return 22;
            }
            let payload = if head {
                let mut s = format!("{}\r\n", r.status_line);
                for (k, v) in &r.headers {
                    s.push_str(&format!("{k}: {v}\r\n"));
                }
                s.push_str("\r\n");
                s.into_bytes()
            } else {
                r.body
            };
            match out_file {
                Some(f) if f != "-" => {
                    if let Err(e) = sh.sb.fs.write(&sh.abs(&f), &payload, false) {
                        io.err(&format!("curl: (23) Failure writing output to destination: {e}\n")).await;
                        return 23;
                    }
                    0
                }
                _ => i32::from(io.stdout.write(&payload).await.is_err()) * 23,
            }
        }
        Err(e) => {
            if !silent || show_err {
                let msg = match &e {
                    HttpError::Resolve(h) => format!("Could not resolve host: {h}"),
                    HttpError::Refused { ip, port, why } => {
                        let host = if u.host == ip.to_string() {
                            u.host.clone()
                        } else {
                            format!("{} ({ip})", u.host)
                        };
                        format!("Failed to connect to {host} port {port}{why}")
                    }
                    HttpError::Timeout => {
                        format!("Operation timed out after {} milliseconds", timeout.as_millis())
                    }
                    HttpError::Protocol(p) => format!("Failure when receiving data from the peer: {p}"),
                };
                io.err(&format!("curl: ({}) {msg}\n", e.curl_code())).await;
            }
            e.curl_code()
        }
    }
}

pub async fn wget(sh: &mut Shell, args: &[String], io: &Io) -> i32 {
    let (mut quiet, mut spider, mut show_headers) = (false, false, false);
    let (mut out_file, mut url) = (None::<String>, None::<String>);
    let mut timeout = Duration::from_secs(900);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-q" | "--quiet" => quiet = true,
            "-S" | "--server-response" => show_headers = true,
            "--spider" => spider = true,
            "-O" => out_file = it.next().cloned(),
            "-qO-" | "-qO" => {
                quiet = true;
                out_file = if a == "-qO-" { Some("-".into()) } else { it.next().cloned() };
            }
            "-T" | "--timeout" => timeout = secs(it.next()).unwrap_or(timeout),
            s if s.starts_with("-O") => out_file = Some(s[2..].to_string()),
            s if s.starts_with("--timeout=") => timeout = secs(Some(&s[10..].to_string())).unwrap_or(timeout),
            s if s.starts_with('-') => {}
            s => url = Some(s.to_string()),
        }
    }
    let Some(raw) = url else {
        io.err("wget: missing URL\n").await;
        return 1;
    };
    let u = match parse_url(&raw) {
        Ok(u) => u,
        Err(e) => {
            io.err(&format!("wget: {e}\n")).await;
            return 1;
        }
    };
    let method = if spider { "HEAD" } else { "GET" };
    match http(sh, method, &u, &[], None, timeout, None).await {
        Ok(r) => {
            if !quiet {
                io.err(&format!("Connecting to {}:{} ({}:{})\n", u.host, u.port, r.ip, u.port)).await;
            }
            if show_headers {
                let mut s = format!("  {}\n", r.status_line);
                for (k, v) in &r.headers {
                    s.push_str(&format!("  {k}: {v}\n"));
                }
                io.err(&s).await;
            }
            if r.code >= 400 {
                io.err(&format!("wget: server returned error: {}\n", r.status_line)).await;
                return 1;
            }
            if spider {
                if !quiet {
                    io.err("remote file exists\n").await;
                }
                return 0;
            }
            let file = out_file.unwrap_or_else(|| {
                let b = u.path.split('?').next().unwrap_or("/").rsplit('/').next().unwrap_or_default();
                if b.is_empty() {
                    "index.html".into()
                } else {
                    b.to_string()
                }
            });
            if file == "-" {
                return i32::from(io.stdout.write(&r.body).await.is_err());
            }
            if !quiet {
                io.err(&format!("saving to '{file}'\n")).await;
            }
            if let Err(e) = sh.sb.fs.write(&sh.abs(&file), &r.body, false) {
                io.err(&format!("wget: can't open '{file}': {e}\n")).await;
                return 1;
            }
            if !quiet {
                io.err(&format!("'{file}' saved\n")).await;
            }
            0
        }
        Err(HttpError::Resolve(h)) => {
            io.err(&format!("wget: bad address '{h}'\n")).await;
            1
        }
        Err(HttpError::Refused { ip, why, .. }) => {
            let why = if why.contains("not in the cluster") {
                "address not in the cluster".to_string()
            } else {
                "Connection refused".into()
            };
            io.err(&format!("wget: can't connect to remote host ({ip}): {why}\n")).await;
            1
        }
        Err(HttpError::Timeout) => {
            io.err("wget: download timed out\n").await;
            1
        }
        Err(HttpError::Protocol(p)) => {
            io.err(&format!("wget: {p}\n")).await;
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_admits_only_cluster_ranges() {
        let p = NetPolicy {
            pod_ip: Ipv4Addr::new(127, 244, 0, 5),
            allowed: vec![(Ipv4Addr::new(127, 96, 0, 0), 12), (Ipv4Addr::new(127, 244, 0, 0), 16)],
            dns_port: 53,
        };
        assert!(p.allows("127.96.0.10".parse().unwrap()));
        assert!(p.allows("127.111.255.255".parse().unwrap()));
        assert!(!p.allows("127.112.0.1".parse().unwrap()));
        assert!(!p.allows("8.8.8.8".parse().unwrap()));
        assert!(!p.allows("10.0.0.1".parse().unwrap()));
        assert!(!p.allows("192.168.1.1".parse().unwrap()));
        assert!(!p.allows("::1".parse().unwrap()));
        assert_eq!(p.map_local(Ipv4Addr::LOCALHOST), p.pod_ip);
    }

    #[test]
    fn urls_and_resolv_conf() {
        assert_eq!(
            parse_url("nginx-svc:8080").unwrap(),
            Url { host: "nginx-svc".into(), port: 8080, path: "/".into() }
        );
        assert_eq!(
            parse_url("http://a.b/x?y").unwrap(),
            Url { host: "a.b".into(), port: 80, path: "/x?y".into() }
        );
        assert!(parse_url("https://x").unwrap_err().contains("https"));
        assert!(parse_url("x:99999").is_err());
        let rc = parse_resolv_conf("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.96.0.10\noptions ndots:5\n");
        assert_eq!(rc.nameservers, vec![Ipv4Addr::new(127, 96, 0, 10)]);
        assert_eq!(rc.search.len(), 3);
        assert_eq!(rc.ndots, 5);
    }

    #[test]
    fn dns_answers_are_parsed_defensively() {
        assert_eq!(parse_answer(&[0; 5], 1), None);
        // A response: id 7, QR, one question `a.`, one A answer (compressed name).
        let mut m = vec![0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 96, 0, 9]);
        assert_eq!(parse_answer(&m, 7), Some(vec![Ipv4Addr::new(127, 96, 0, 9)]));
        assert_eq!(parse_answer(&m, 8), None);
        assert_eq!(parse_answer(&m[..m.len() - 2], 7), None, "truncated");
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
