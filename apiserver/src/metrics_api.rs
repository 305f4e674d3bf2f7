//! `metrics.k8s.io/v1beta1`: kplane's built-in metrics-server. Upstream serves this group from
//! metrics-server through API aggregation (an APIService); kplane serves it here, outside the
//! resource table (nothing is stored), with the same paths, kinds and discovery:
//! `nodes` (NodeMetrics) and `pods` (PodMetrics, per namespace or across them), get and list, list
//! with label selectors, RBAC on `metrics.k8s.io` resources (upstream's
//! `system:aggregated-metrics-reader`, aggregated into view/edit/admin).
//!
//! The numbers come from each node's kubelet `/metrics/resource` (the Node's InternalIP and
//! `daemonEndpoints.kubeletEndpoint.Port`, loopback only, as `pods/log` dials it). Scrapes happen
//! on demand, at most one per [`MIN_SCRAPE_INTERVAL`] per node, and are kept for a while; a CPU rate
//! is the difference of two cumulative samples of one container instance over the time between
//! them (the `window`, aiming at [`WINDOW`], as metrics-server's `--metric-resolution`). When a
//! node has only one recent sample, it is scraped again after [`FIRST_WINDOW`], so the first
//! request answers with numbers. Memory is the newest working set.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::AppState;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The window a CPU rate aims at.
pub const WINDOW: Duration = Duration::from_secs(15);
/// A node's kubelet is scraped at most this often.
pub const MIN_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The gap between the two scrapes of a node with no earlier sample.
pub const FIRST_WINDOW: Duration = Duration::from_millis(1000);
/// Samples older than this are dropped.
const KEEP: Duration = Duration::from_secs(60);

/// One container's cumulative numbers in one scrape.
#[derive(Clone, Debug, PartialEq)]
struct Point {
    cpu: f64,
    memory: f64,
    start: f64,
}

#[derive(Clone, Debug, Default)]
struct Scrape {
    /// When it was taken (here), and the kubelet's timestamp (ms).
    at: Option<Instant>,
    ts_ms: i64,
    node: Option<(f64, f64)>,
    containers: HashMap<(String, String, String), Point>,
}

/// Each node's recent scrapes, newest last.
#[derive(Default)]
pub struct Samples {
    nodes: tokio::sync::Mutex<HashMap<String, VecDeque<Scrape>>>,
}

/// Where a request under `/apis/metrics.k8s.io/` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsPath {
    Group,
    Version,
    /// `nodes` or `pods`, with namespace and name.
    Resource {
        resource: &'static str,
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Parses the path after `/apis/`; `None` when it is not this group's.
pub fn parse(rest: &str) -> Option<ApiResult<MetricsPath>> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first() != Some(&GROUP) {
        return None;
    }
    let r = |resource: &'static str, namespace: Option<&str>, name: Option<&str>| MetricsPath::Resource {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    };
    Some(match segs[1..] {
        [] => Ok(MetricsPath::Group),
        [VERSION] => Ok(MetricsPath::Version),
        [VERSION, "nodes"] => Ok(r("nodes", None, None)),
        [VERSION, "nodes", name] => Ok(r("nodes", None, Some(name))),
        [VERSION, "pods"] => Ok(r("pods", None, None)),
        [VERSION, "namespaces", ns, "pods"] => Ok(r("pods", Some(ns), None)),
        [VERSION, "namespaces", ns, "pods", name] => Ok(r("pods", Some(ns), Some(name))),
        _ => Err(ApiError::no_route()),
    })
}

/// The kind of a resource of this group.
fn kind(resource: &str) -> &'static str {
    if resource == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    }
}

/// `/apis/metrics.k8s.io` as `/apis` lists it.
pub fn group_entry() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// The group in aggregated discovery (`apidiscovery.k8s.io`).
pub fn aggregated_entry() -> Value {
    let res = |plural: &str, scope: &str| {
        json!({"resource": plural,
               "responseKind": {"group": GROUP, "version": VERSION, "kind": kind(plural)},
               "scope": scope, "singularResource": "", "verbs": ["get", "list"]})
    };
    json!({"metadata": {"name": GROUP, "creationTimestamp": null},
           "versions": [{"version": VERSION, "resources": [res("nodes", "Cluster"), res("pods", "Namespaced")],
                         "freshness": "Current"}]})
}

fn resource_list() -> Value {
    let res = |plural: &str, namespaced: bool| json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind(plural), "verbs": ["get", "list"]});
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
           "resources": [res("nodes", false), res("pods", true)]})
}

/// Serves a request under `/apis/metrics.k8s.io/`.
pub async fn serve(
    st: &AppState,
    method: &Method,
    path: MetricsPath,
    params: &Params,
    _h: &HeaderMap,
) -> Response {
    match serve_inner(st, method, path, params).await {
        Ok(v) => crate::handlers::json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(st: &AppState, method: &Method, path: MetricsPath, params: &Params) -> ApiResult<Value> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let (resource, namespace, name) = match path {
        MetricsPath::Group => {
            let mut g = group_entry();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            return Ok(g);
        }
        MetricsPath::Version => return Ok(resource_list()),
        MetricsPath::Resource { resource, namespace, name } => (resource, namespace, name),
    };
    if params.bool("watch")? {
        return Err(ApiError::method_not_allowed());
    }
    let items = if resource == "nodes" {
        node_metrics(st, name.as_deref(), params).await?
    } else {
        pod_metrics(st, namespace.as_deref(), name.as_deref(), params).await?
    };
    match name {
        Some(n) => items.into_iter().next().ok_or_else(|| {
            let singular = if resource == "nodes" { "nodemetrics" } else { "podmetrics" };
            ApiError {
                details: Some(json!({"name": n, "group": GROUP, "kind": resource})),
                ..ApiError::new(404, "NotFound", format!("{singular}.{GROUP} \"{n}\" not found"))
            }
        }),
        None => {
            Ok(json!({"kind": format!("{}List", kind(resource)), "apiVersion": format!("{GROUP}/{VERSION}"),
                          "metadata": {}, "items": items}))
        }
    }
}

/// Lists a core resource with the request's selectors (and optionally one name).
async fn list_core(
    st: &AppState,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    params: &Params,
) -> ApiResult<Vec<Value>> {
    let res = api_types::resources::lookup("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let mut q: Vec<String> = Vec::new();
    if let Some(sel) = params.get("labelSelector").filter(|s| !s.is_empty()) {
        q.push(format!("labelSelector={}", crate::podlog::encode(sel)));
    }
    let mut fields: Vec<String> =
        params.get("fieldSelector").filter(|s| !s.is_empty()).map(str::to_string).into_iter().collect();
    if let Some(n) = name {
        fields.push(format!("metadata.name={n}"));
    }
    if !fields.is_empty() {
        q.push(format!("fieldSelector={}", crate::podlog::encode(&fields.join(","))));
    }
    let query = q.join("&");
    let list_params = Params::parse(Some(query.as_str()).filter(|s| !s.is_empty()))?;
    let rp = ResourcePath { res, namespace: namespace.map(str::to_string), name: None, subresource: None };
    let (items, _, _) = crate::handlers::list_items(st, &rp, &list_params).await?;
    Ok(items)
}

/// Formats core-seconds per second as nanocores and bytes as KiB, as metrics-server does.
fn usage(cpu_cores: f64, memory_bytes: f64) -> Value {
    json!({"cpu": format!("{}n", (cpu_cores.max(0.0) * 1e9).round() as u64),
           "memory": format!("{}Ki", (memory_bytes.max(0.0) / 1024.0).round() as u64)})
}

fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn now() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()
}

fn window(d_ms: i64) -> String {
    format!("{}s", d_ms as f64 / 1000.0)
}

/// The two scrapes a rate is taken over: the newest, and the newest at least [`WINDOW`] older
/// (else the oldest kept).
fn pair(scrapes: &VecDeque<Scrape>) -> Option<(&Scrape, &Scrape)> {
    let last = scrapes.back()?;
    let last_at = last.at?;
    let prev = scrapes
        .iter()
        .rev()
        .skip(1)
        .find(|s| s.at.is_some_and(|a| last_at.duration_since(a) >= WINDOW))
        .or_else(|| scrapes.iter().find(|s| s.ts_ms < last.ts_ms))?;
    Some((prev, last))
}

async fn node_metrics(st: &AppState, name: Option<&str>, params: &Params) -> ApiResult<Vec<Value>> {
    let nodes = list_core(st, "nodes", None, name, params).await?;
    let names: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let samples = scrape(st, &names).await;
    let mut out = Vec::new();
    for n in &nodes {
        let Some(node_name) = n.pointer("/metadata/name").and_then(Value::as_str) else { continue };
        let Some((prev, last)) = samples.get(node_name).and_then(pair) else { continue };
        let (Some((c0, _)), Some((c1, mem))) = (prev.node, last.node) else { continue };
        let dt = last.ts_ms - prev.ts_ms;
        if dt <= 0 || c1 < c0 {
            continue;
        }
        out.push(json!({
            "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"name": node_name, "creationTimestamp": now(),
                         "labels": n.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
            "timestamp": rfc3339_ms(last.ts_ms), "window": window(dt),
            "usage": usage((c1 - c0) / (dt as f64 / 1000.0), mem),
        }));
    }
    Ok(out)
}

async fn pod_metrics(
    st: &AppState,
    namespace: Option<&str>,
    name: Option<&str>,
    params: &Params,
) -> ApiResult<Vec<Value>> {
    let pods = list_core(st, "pods", namespace, name, params).await?;
    let mut node_names: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            p.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string)
        })
        .collect();
    node_names.sort();
    node_names.dedup();
    let samples = scrape(st, &node_names).await;
    let mut out = Vec::new();
    for p in &pods {
        let s = |ptr: &str| p.pointer(ptr).and_then(Value::as_str).unwrap_or_default().to_string();
        let (ns, pod, node) = (s("/metadata/namespace"), s("/metadata/name"), s("/spec/nodeName"));
        if s("/status/phase") != "Running" {
            continue;
        }
        let Some((prev, last)) = samples.get(&node).and_then(pair) else { continue };
        let dt = last.ts_ms - prev.ts_ms;
        if dt <= 0 {
            continue;
        }
        let mut containers = Vec::new();
        for c in p.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
            let Some(cname) = c["name"].as_str() else { continue };
            let key = (ns.clone(), pod.clone(), cname.to_string());
            // One container instance in both scrapes (a restart resets the counter).
            let (Some(a), Some(b)) = (prev.containers.get(&key), last.containers.get(&key)) else { continue };
            if a.start != b.start || b.cpu < a.cpu {
                continue;
            }
            containers
                .push(json!({"name": cname, "usage": usage((b.cpu - a.cpu) / (dt as f64 / 1000.0), b.memory)}));
        }
        if containers.is_empty() {
            continue;
        }
        out.push(json!({
            "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"name": pod, "namespace": ns, "creationTimestamp": now(),
                         "labels": p.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
            "timestamp": rfc3339_ms(last.ts_ms), "window": window(dt), "containers": containers,
        }));
    }
    Ok(out)
}

/// Brings each node's samples up to date (see the module) and returns a copy of them.
async fn scrape(st: &AppState, nodes: &[String]) -> HashMap<String, VecDeque<Scrape>> {
    let mut all = st.metrics_api.nodes.lock().await;
    for round in 0..2 {
        let now = Instant::now();
        let due: Vec<&String> = nodes
            .iter()
            .filter(|n| {
                let kept = all.get(*n);
                let fresh = kept
                    .and_then(|k| k.back())
                    .and_then(|s| s.at)
                    .is_some_and(|a| now.duration_since(a) < MIN_SCRAPE_INTERVAL);
                // The second round only for nodes that still have a single sample.
                if round == 1 {
                    kept.is_some_and(|k| k.len() == 1)
                } else {
                    !fresh
                }
            })
            .collect();
        if due.is_empty() {
            break;
        }
        if round == 1 {
            tokio::time::sleep(FIRST_WINDOW).await;
        }
        let got = futures::future::join_all(due.iter().map(|n| scrape_node(st, n))).await;
        for (n, s) in due.into_iter().zip(got) {
            match s {
                Ok(s) => {
                    let q = all.entry(n.clone()).or_default();
                    q.push_back(s);
                    let now = Instant::now();
                    while q.front().and_then(|s| s.at).is_some_and(|a| now.duration_since(a) > KEEP) {
                        q.pop_front();
                    }
                }
                Err(e) => tracing::debug!(node = %n, error = %e, "scraping the kubelet's resource metrics"),
            }
        }
    }
    // Nodes that are gone.
    all.retain(|_, q| q.back().and_then(|s| s.at).is_some_and(|a| a.elapsed() < KEEP));
    nodes.iter().filter_map(|n| all.get(n).map(|q| (n.clone(), q.clone()))).collect()
}

async fn scrape_node(st: &AppState, node: &str) -> Result<Scrape, String> {
    let (ip, port) = crate::podlog::kubelet_of(st, node).await.map_err(|e| e.message)?;
    if !ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback()) {
        return Err(format!("node {node} reports InternalIP {ip}: kplane reaches kubelets only on loopback"));
    }
    let url = format!("http://{ip}:{port}/metrics/resource");
    let text = crate::podlog::get_text(&url, Duration::from_secs(5)).await?;
    let mut s = parse_resource_metrics(&text);
    s.at = Some(Instant::now());
    Ok(s)
}

/// Parses the kubelet's `/metrics/resource` text (the families metrics-server reads).
fn parse_resource_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    let mut node_cpu = None;
    let mut node_mem = None;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let Some(j) = line[i..].find('}') else { continue };
                (&line[..i], &line[i + 1..i + j], &line[i + j + 1..])
            }
            None => match line.split_once(' ') {
                Some((n, r)) => (n, "", r),
                None => continue,
            },
        };
        let mut fields = rest.split_whitespace();
        let Some(value) = fields.next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        if let Some(ts) = fields.next().and_then(|t| t.parse::<i64>().ok()) {
            s.ts_ms = s.ts_ms.max(ts);
        }
        let label = |k: &str| -> String {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| key.trim() == k)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let key = || (label("namespace"), label("pod"), label("container"));
        let point = |s: &mut Scrape| {
            s.containers.entry(key()).or_insert(Point { cpu: 0.0, memory: 0.0, start: 0.0 }).clone()
        };
        match name {
            "container_cpu_usage_seconds_total" => {
                let mut p = point(&mut s);
                p.cpu = value;
                s.containers.insert(key(), p);
            }
            "container_memory_working_set_bytes" => {
                let mut p = point(&mut s);
                p.memory = value;
                s.containers.insert(key(), p);
            }
            "container_start_time_seconds" => {
                let mut p = point(&mut s);
                p.start = value;
                s.containers.insert(key(), p);
            }
            "node_cpu_usage_seconds_total" => node_cpu = Some(value),
            "node_memory_working_set_bytes" => node_mem = Some(value),
            _ => {}
        }
    }
    if let (Some(c), Some(m)) = (node_cpu, node_mem) {
        s.node = Some((c, m));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_group() {
        assert_eq!(parse("apps/v1"), None);
        assert_eq!(parse("metrics.k8s.io").unwrap().unwrap(), MetricsPath::Group);
        assert_eq!(parse("metrics.k8s.io/v1beta1/").unwrap().unwrap(), MetricsPath::Version);
        assert_eq!(
            parse("metrics.k8s.io/v1beta1/namespaces/ns/pods/p").unwrap().unwrap(),
            MetricsPath::Resource { resource: "pods", namespace: Some("ns".into()), name: Some("p".into()) }
        );
        assert_eq!(
            parse("metrics.k8s.io/v1beta1/nodes").unwrap().unwrap(),
            MetricsPath::Resource { resource: "nodes", namespace: None, name: None }
        );
        assert_eq!(parse("metrics.k8s.io/v1beta1/deployments").unwrap().unwrap_err().code, 404);
    }

    #[test]
    fn parses_the_kubelets_resource_metrics() {
        let text = "# HELP x\ncontainer_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"p\"} 1.5 1700000000000\n\
                    container_memory_working_set_bytes{container=\"c\",namespace=\"default\",pod=\"p\"} 4194304 1700000000000\n\
                    container_start_time_seconds{container=\"c\",namespace=\"default\",pod=\"p\"} 1699999999.5 1700000000000\n\
                    node_cpu_usage_seconds_total 12.25 1700000000001\nnode_memory_working_set_bytes 1e9 1700000000001\nscrape_error 0\n";
        let s = parse_resource_metrics(text);
        assert_eq!(s.ts_ms, 1700000000001);
        assert_eq!(s.node, Some((12.25, 1e9)));
        let p = &s.containers[&("default".into(), "p".into(), "c".into())];
        assert_eq!(*p, Point { cpu: 1.5, memory: 4194304.0, start: 1699999999.5 });
        assert_eq!(usage(0.25, 4194304.0), json!({"cpu": "250000000n", "memory": "4096Ki"}));
    }
}
