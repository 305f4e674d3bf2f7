//! Terminal rendering of routes and probes: a tree, hop by hop, each object with its `/registry`
//! key, revision and last writer; ANSI colour when asked (on a TTY).

use std::fmt::Write;

use crate::probe::ProbeReport;
use crate::route::Route;
use crate::Stored;

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn good(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn bad(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn kind(&self, s: &str) -> String {
        self.wrap("1;36", s)
    }
}

/// One object's heading: kind, namespace/name, then where it lives and who wrote it last.
fn object(p: &Paint, o: &Stored) -> (String, String) {
    let name = match &o.namespace {
        Some(ns) => format!("{ns}/{}", o.name),
        None => o.name.clone(),
    };
    let writer = match &o.writer {
        Some(w) => {
            let sub = w.subresource.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
            let when = w.time.as_deref().map(|t| format!(" at {t}")).unwrap_or_default();
            let who = if w.manager.is_empty() { "an unnamed client" } else { &w.manager };
            format!(", last written by {who}{sub}{when}")
        }
        None => String::new(),
    };
    (
        format!("{} {}", p.kind(&o.kind), p.bold(&name)),
        p.dim(&format!("{}  rev {}{writer}", o.key, o.mod_revision)),
    )
}

/// The route as a tree; ANSI colour when `color`.
pub fn route_text(route: &Route, color: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", p.bold("request:"), route.request);
    let mut hops: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(e) = &route.entry {
        let addr = e.address.clone().unwrap_or_else(|| p.bad("(no address)"));
        let mut lines = vec![format!("takes it at {addr}")];
        if let Some(mode) = &e.proxy_mode {
            lines.push(format!("proxy mode: {mode}"));
        }
        if let Some(k) = &e.kernel {
            lines.extend(k.rules.iter().map(|r| format!("rule: {r}")));
            for ep in &k.endpoints {
                let p = ep.probability.as_deref().map(|p| format!(" with probability {p}")).unwrap_or_default();
                lines.push(format!("{}{p} -> DNAT to {}", ep.chain, ep.destination));
            }
            if let Some(r) = &k.reject {
                lines.push(format!("{} {r}", p.bad("refused:")));
            }
        }
        hops.push((format!("{} {}", p.kind("listener"), p.bold(&e.listener)), lines));
    }
    if let Some(ing) = &route.ingress {
        let (head, mut lines) = match &ing.object {
            Some(o) => {
                let (h, l) = object(&p, o);
                (h, vec![l])
            }
            None => (format!("{} {}", p.kind("default backend"), p.bold("built-in (404)")), Vec::new()),
        };
        if let Some(rule) = &ing.rule {
            lines.push(format!("rule: {rule} -> {}", ing.backend.as_deref().unwrap_or("?")));
        } else if let Some(b) = &ing.backend {
            lines.push(format!("spec.defaultBackend -> {b}"));
        }
        lines.push(format!("why: {}", ing.reason));
        hops.push((head, lines));
    }
    if let Some(svc) = &route.service {
        let (head, key) = object(&p, &svc.object);
        let mut lines = vec![key];
        let ip = svc.cluster_ip.clone().unwrap_or_else(|| "-".into());
        let mut kind = format!("type {}, clusterIP {ip}", svc.type_);
        if let Some(en) = &svc.external_name {
            let _ = write!(kind, ", externalName {en}");
        }
        lines.push(kind);
        lines.push(format!("selector: {}", svc.selector.as_deref().unwrap_or("(none)")));
        for port in &svc.ports {
            let name = port.name.as_deref().map(|n| format!("{n} ")).unwrap_or_default();
            let mut l =
                format!("port {name}{}/{} -> targetPort {}", port.port, port.protocol, port.target_port);
            if let Some(np) = port.node_port {
                let _ = write!(l, ", nodePort {np} on {}", port.node_listeners.join(" "));
            }
            lines.push(l);
        }
        let answer = match (&svc.cluster_ip, &svc.external_name) {
            (_, Some(cname)) => format!("CNAME {cname}"),
            (Some(ip), _) if ip != "None" => format!("A {ip}"),
            _ => "A: the ready pod IPs".into(),
        };
        lines.push(format!("DNS: {} ({answer})", svc.dns.join(", ")));
        hops.push((head, lines));
        if svc.slices.is_empty() {
            hops.push((format!("{} {}", p.kind("EndpointSlice"), p.bad("(none)")), Vec::new()));
        }
        for slice in &svc.slices {
            let (head, key) = object(&p, &slice.object);
            let mut lines = vec![key, format!("ports: {}", slice.ports.join(" "))];
            if slice.addresses.is_empty() {
                lines.push(p.bad("no addresses"));
            }
            for a in &slice.addresses {
                let state = if a.ready { p.good("ready") } else { p.bad("not ready") };
                let pod = a.pod.as_deref().map(|n| format!(" -> pod {n}")).unwrap_or_default();
                let node = a.node.as_deref().map(|n| format!(" on {n}")).unwrap_or_default();
                lines.push(format!("{} {state}{pod}{node}", a.ip));
            }
            hops.push((head, lines));
        }
        if let Some(ep) = &svc.endpoints {
            let (head, key) = object(&p, &ep.object);
            let ready = if ep.ready.is_empty() { p.bad("(none)") } else { p.good(&ep.ready.join(" ")) };
            let mut lines = vec![key, format!("ready: {ready}")];
            if !ep.not_ready.is_empty() {
                lines.push(format!("not ready: {}", p.bad(&ep.not_ready.join(" "))));
            }
            hops.push((head, lines));
        }
        for pod in &svc.pods {
            let (head, key) = object(&p, &pod.object);
            let addr = match (&pod.ip, pod.port) {
                (Some(ip), Some(port)) => format!("{ip}:{port}"),
                (Some(ip), None) => format!("{ip}:{}", p.bad("(port does not resolve)")),
                _ => p.bad("(no IP yet)"),
            };
            let state = if pod.ready { p.good("ready") } else { p.bad("not ready") };
            let node = pod.node.as_deref().unwrap_or("(not scheduled)");
            hops.push((head, vec![key, format!("{addr} {} {state} on {node}", pod.phase)]));
        }
    }
    let n = hops.len();
    for (i, (head, lines)) in hops.into_iter().enumerate() {
        let last = i + 1 == n;
        let _ = writeln!(out, "{}{head}", if last { "└─ " } else { "├─ " });
        for l in lines {
            let _ = writeln!(out, "{}{l}", if last { "     " } else { "│    " });
        }
    }
    let builtin_404 = route.ingress.as_ref().is_some_and(|i| i.object.is_none() && i.backend.is_none());
    if route.problems.is_empty() && builtin_404 {
        let _ = writeln!(out, "the request ends at the ingress controller's built-in default backend: 404");
    } else if route.problems.is_empty() {
        let _ = writeln!(out, "{}", p.good("the path is whole: traffic can flow"));
    } else {
        let _ = writeln!(out, "{}", p.bad("traffic would fail:"));
        for problem in &route.problems {
            let _ = writeln!(out, "  {} {problem}", p.bad("✗"));
        }
    }
    out
}

/// A probe's hops, one line each.
pub fn probe_text(report: &ProbeReport, color: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::new();
    let _ = writeln!(out, "{}", p.bold("probe:"));
    for h in &report.hops {
        let outcome = match (&h.status, &h.error) {
            (Some(code), _) if *code < 400 => p.good(&format!("HTTP {code}")),
            (Some(code), _) => p.bad(&format!("HTTP {code}")),
            (None, Some(e)) => p.bad(e),
            (None, None) => p.bad("no answer"),
        };
        let pod = h.pod.as_deref().map(|n| format!(", answered by pod {n}")).unwrap_or_default();
        let _ = writeln!(out, "  {:<28} {:<22} {outcome} in {:.2} ms{pod}", h.hop, h.address, h.latency_ms);
    }
    if let Some(pod) = &report.answered_by {
        let _ = writeln!(out, "answered by pod {}", p.bold(pod));
    }
    out
}
