//! Rows for Services, Endpoints, EndpointSlices, Ingresses and IngressClasses.

use super::duration::since;
use super::json::{
    arr_at, creation, format_labels, get, int_at, list_with_more, name, opt_int, opt_str, str_at,
};
use super::Row;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeSet;

pub(crate) fn service_row(svc: &Value, now: Timestamp) -> Row {
    // Defaulting turns an empty type into ClusterIP on every read, so upstream never sees "".
    let ty = match str_at(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    };
    // Upstream prints clusterIPs[0]; clusterIPs is filled from clusterIP for objects predating it.
    let cluster_ip = match arr_at(svc, &["spec", "clusterIPs"]).first() {
        Some(ip) => ip.as_str().unwrap_or(""),
        None => match str_at(svc, &["spec", "clusterIP"]) {
            "" => "<none>",
            ip => ip,
        },
    };
    let ports = port_string(arr_at(svc, &["spec", "ports"]));
    Row::new(vec![
        name(svc).into(),
        ty.into(),
        cluster_ip.into(),
        external_ip(svc, ty).into(),
        (if ports.is_empty() { "<none>".to_string() } else { ports }).into(),
        since(creation(svc), now).into(),
        format_labels(get(svc, &["spec", "selector"])).into(),
    ])
}

fn external_ip(svc: &Value, ty: &str) -> String {
    let external: Vec<&str> = arr_at(svc, &["spec", "externalIPs"]).iter().filter_map(Value::as_str).collect();
    match ty {
        "ClusterIP" | "NodePort" if !external.is_empty() => external.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let lb = load_balancer_ingress(get(svc, &["status", "loadBalancer"]));
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() { Vec::new() } else { lb.split(',').collect() };
                all.extend(external);
                return all.join(",");
            }
            if lb.is_empty() {
                // No address assigned yet by a cloud controller.
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `loadBalancerStatusStringer` in wide mode (the server always prints wide, so no 16-byte clipping):
/// the distinct IPs, or hostnames where no IP, sorted and comma-joined.
fn load_balancer_ingress(status: Option<&Value>) -> String {
    let Some(status) = status else { return String::new() };
    let addrs: BTreeSet<&str> = arr_at(status, &["ingress"])
        .iter()
        .filter_map(|i| match (str_at(i, &["ip"]), str_at(i, &["hostname"])) {
            ("", "") => None,
            ("", host) => Some(host),
            (ip, _) => Some(ip),
        })
        .collect();
    addrs.into_iter().collect::<Vec<_>>().join(",")
}

/// `80/TCP`, or `8080:30299/TCP` when a node port is allocated; comma-joined.
fn port_string(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            // Defaulting sets an empty protocol to TCP.
            let proto = match str_at(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            let port = int_at(p, &["port"]);
            match int_at(p, &["nodePort"]) {
                np if np > 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn endpoints_row(ep: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(ep).into(), format_endpoints(ep).into(), since(creation(ep), now).into()])
}

/// `formatEndpoints`: up to three `ip:port` entries (one per address and port), then `+ N more...`;
/// bare IPs for port-less (headless) subsets; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0usize;
    let mut more = false;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, &["ip"]), int_at(port, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(MAX));
    }
    ret
}

/// Go's `net.JoinHostPort`: IPv6 literals get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) fn endpoint_slice_row(es: &Value, now: Timestamp) -> Row {
    const MAX: usize = 3;
    let ports = arr_at(es, &["ports"]);
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| match (opt_int(p, &["port"]), opt_str(p, &["name"])) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<&str> = arr_at(es, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]).iter().map(|a| a.as_str().unwrap_or("")))
        .collect();
    let address_list: Vec<String> = addresses.iter().take(MAX).map(|a| a.to_string()).collect();
    Row::new(vec![
        name(es).into(),
        str_at(es, &["addressType"]).into(),
        list_with_more(&port_list, ports.len(), MAX).into(),
        list_with_more(&address_list, addresses.len(), MAX).into(),
        since(creation(es), now).into(),
    ])
}

pub(crate) fn ingress_row(ing: &Value, now: Timestamp) -> Row {
    let class = opt_str(ing, &["spec", "ingressClassName"]).unwrap_or("<none>");
    let ports = if arr_at(ing, &["spec", "tls"]).is_empty() { "80" } else { "80, 443" };
    Row::new(vec![
        name(ing).into(),
        class.into(),
        format_hosts(arr_at(ing, &["spec", "rules"])).into(),
        load_balancer_ingress(get(ing, &["status", "loadBalancer"])).into(),
        ports.into(),
        since(creation(ing), now).into(),
    ])
}

/// `formatHosts`: the first three non-empty hosts, `*` when none. Upstream's "more" count is
/// `len(rules) - 3` (it counts host-less rules too), reproduced as is.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", rules.len().saturating_sub(MAX));
    }
    ret
}

pub(crate) fn ingress_class_row(ic: &Value, now: Timestamp) -> Row {
    let parameters = match get(ic, &["spec", "parameters"]).filter(|p| p.is_object()) {
        None => "<none>".to_string(),
        Some(p) => {
            let mut s = str_at(p, &["kind"]).to_string();
            if let Some(group) = opt_str(p, &["apiGroup"]) {
                s.push('.');
                s.push_str(group);
            }
            format!("{s}/{}", str_at(p, &["name"]))
        }
    };
    Row::new(vec![
        name(ic).into(),
        str_at(ic, &["spec", "controller"]).into(),
        parameters.into(),
        since(creation(ic), now).into(),
    ])
}
