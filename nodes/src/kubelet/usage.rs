//! Simulated resource usage, and the kubelet's `/metrics/resource` endpoint that reports it (the
//! Prometheus text upstream's kubelet serves there, which metrics-server scrapes).
//!
//! Nothing runs for real, so usage is a model that follows what a container asks for and does:
//! - CPU, cumulative core-seconds since the container started: a baseline of
//!   [`BASELINE_CPU_FRACTION`] of its CPU request (at least [`MIN_BASELINE_MILLICORES`]) for the
//!   time it has run, plus [`UsageModel::cpu_per_request_millicores`] millicore-seconds per request
//!   its simulated server answered (so 1 millicore per request/s by default), plus the time its
//!   shell process really spent computing (its task's polls: a busy loop burns CPU, `sleep` does not).
//! - Memory working set: [`WORKING_SET_BASE_BYTES`] plus [`MEMORY_REQUEST_SHARE`] of its memory
//!   request.
//! - The node: its pods' sums, plus what the pods that have gone used (so the node's counter never
//!   goes back), plus a system baseline ([`NODE_SYSTEM_MILLICORES`], [`NODE_SYSTEM_BYTES`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::Container;

/// A running container's baseline CPU: this fraction of its CPU request.
pub const BASELINE_CPU_FRACTION: f64 = 0.05;
/// ...and never less than this (containers that request nothing still tick).
pub const MIN_BASELINE_MILLICORES: f64 = 1.0;
/// A container's working set with no memory request.
pub const WORKING_SET_BASE_BYTES: u64 = 4 << 20;
/// The share of its memory request a container's working set adds to the base.
pub const MEMORY_REQUEST_SHARE: f64 = 0.2;
/// The node's own (system) CPU use.
pub const NODE_SYSTEM_MILLICORES: f64 = 20.0;
/// The node's own (system) working set.
pub const NODE_SYSTEM_BYTES: u64 = 128 << 20;

/// The model's tunable part (a `NodeConfig` field, `kplane up --sim-cpu-per-request`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsageModel {
    /// CPU time one answered request costs, in millicore-seconds: a server answering N requests/s
    /// uses N × this many millicores.
    pub cpu_per_request_millicores: f64,
}

impl Default for UsageModel {
    fn default() -> Self {
        UsageModel { cpu_per_request_millicores: 1.0 }
    }
}

/// One container instance's counters (a restarted container gets new ones, as upstream's
/// cumulative counters restart with the container).
#[derive(Debug)]
pub struct ContainerUsage {
    pub name: String,
    cpu_request_millis: i64,
    memory_request_bytes: i64,
    started: Instant,
    start_time: SystemTime,
    /// Requests its simulated server answered.
    served: AtomicU64,
    /// Nanoseconds its process spent being polled (computing).
    busy_nanos: AtomicU64,
    /// When it exited (its counters stop).
    ended: Mutex<Option<Instant>>,
    model: UsageModel,
}

impl ContainerUsage {
    fn new(c: &Container, model: UsageModel) -> ContainerUsage {
        let req =
            |k: &str| c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(k)).cloned();
        ContainerUsage {
            name: c.name.clone(),
            cpu_request_millis: req("cpu").map(|q| crate::quantity::milli_of(&q)).unwrap_or(0),
            memory_request_bytes: req("memory").map(|q| crate::quantity::value_of(&q)).unwrap_or(0),
            started: Instant::now(),
            start_time: SystemTime::now(),
            served: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            ended: Mutex::new(None),
            model,
        }
    }

    /// One request answered.
    pub fn served_one(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// The container's process has exited: its counters stop.
    pub fn end(&self) {
        let mut e = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert_with(Instant::now);
    }

    fn running(&self) -> bool {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    /// Cumulative core-seconds at `now`.
    pub fn cpu_seconds(&self, now: Instant) -> f64 {
        let end = self.ended.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(now);
        let ran = end.saturating_duration_since(self.started).as_secs_f64();
        let baseline =
            (self.cpu_request_millis as f64 * BASELINE_CPU_FRACTION).max(MIN_BASELINE_MILLICORES) / 1000.0;
        let served =
            self.served.load(Ordering::Relaxed) as f64 * self.model.cpu_per_request_millicores / 1000.0;
        baseline * ran + served + self.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Working set bytes.
    pub fn working_set(&self) -> u64 {
        WORKING_SET_BASE_BYTES + (self.memory_request_bytes.max(0) as f64 * MEMORY_REQUEST_SHARE) as u64
    }

    /// Wraps a container's process so that the time spent polling it counts as its CPU time.
    pub fn timed<F: Future>(self: &Arc<Self>, fut: F) -> Timed<F> {
        Timed { fut: Box::pin(fut), usage: self.clone() }
    }
}

/// A future whose poll time is added to a container's CPU.
pub struct Timed<F: Future> {
    fut: Pin<Box<F>>,
    usage: Arc<ContainerUsage>,
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let t = Instant::now();
        let r = self.fut.as_mut().poll(cx);
        let spent = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.usage.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        r
    }
}

#[derive(Debug, Default)]
struct PodUsage {
    namespace: String,
    name: String,
    containers: HashMap<String, Arc<ContainerUsage>>,
}

/// The node's pods' usage.
#[derive(Debug)]
pub struct Usage {
    model: UsageModel,
    started: Instant,
    pods: Mutex<HashMap<String, PodUsage>>,
    /// Core-seconds of the containers that are gone (the node's counter keeps them).
    retired_cpu: Mutex<f64>,
}

/// One scrape's numbers for a container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSample {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub cpu_seconds: f64,
    pub working_set: u64,
    pub start_time: SystemTime,
}

impl Usage {
    pub fn new(model: UsageModel) -> Usage {
        Usage { model, started: Instant::now(), pods: Mutex::default(), retired_cpu: Mutex::new(0.0) }
    }

    pub fn add_pod(&self, uid: &str, namespace: &str, name: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.insert(
            uid.to_string(),
            PodUsage { namespace: namespace.into(), name: name.into(), containers: HashMap::new() },
        );
    }

    /// A container (instance) starts: its counters from zero.
    pub fn start_container(&self, uid: &str, c: &Container) -> Arc<ContainerUsage> {
        let fresh = Arc::new(ContainerUsage::new(c, self.model));
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pods.get_mut(uid) {
            if let Some(old) = p.containers.insert(c.name.clone(), fresh.clone()) {
                *self.retired_cpu.lock().unwrap_or_else(|e| e.into_inner()) += old.cpu_seconds(Instant::now());
            }
        }
        fresh
    }

    pub fn remove_pod(&self, uid: &str) {
        let gone = self.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        if let Some(p) = gone {
            let now = Instant::now();
            let sum: f64 = p.containers.values().map(|c| c.cpu_seconds(now)).sum();
            *self.retired_cpu.lock().unwrap_or_else(|e| e.into_inner()) += sum;
        }
    }

    /// The running containers' numbers now.
    pub fn containers(&self, now: Instant) -> Vec<ContainerSample> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ContainerSample> = pods
            .values()
            .flat_map(|p| {
                p.containers.values().filter(|c| c.running()).map(|c| ContainerSample {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                    container: c.name.clone(),
                    cpu_seconds: c.cpu_seconds(now),
                    working_set: c.working_set(),
                    start_time: c.start_time,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container)));
        out
    }

    /// The node's cumulative core-seconds and working set now.
    pub fn node(&self, now: Instant) -> (f64, u64) {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let live_cpu: f64 = pods.values().flat_map(|p| p.containers.values()).map(|c| c.cpu_seconds(now)).sum();
        let ws: u64 = pods
            .values()
            .flat_map(|p| p.containers.values())
            .filter(|c| c.running())
            .map(|c| c.working_set())
            .sum();
        drop(pods);
        let retired = *self.retired_cpu.lock().unwrap_or_else(|e| e.into_inner());
        let system =
            NODE_SYSTEM_MILLICORES / 1000.0 * now.saturating_duration_since(self.started).as_secs_f64();
        (system + retired + live_cpu, NODE_SYSTEM_BYTES + ws)
    }

    /// `/metrics/resource`: upstream's kubelet resource metrics, in the Prometheus text format,
    /// each sample with its timestamp in milliseconds.
    pub fn render(&self) -> String {
        let now = Instant::now();
        let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let containers = self.containers(now);
        let (node_cpu, node_ws) = self.node(now);
        let mut pods: std::collections::BTreeMap<(String, String), (f64, u64)> = Default::default();
        for c in &containers {
            let e = pods.entry((c.namespace.clone(), c.pod.clone())).or_default();
            e.0 += c.cpu_seconds;
            e.1 += c.working_set;
        }
        let head =
            |name: &str, ty: &str, help: &str| format!("# HELP {name} [STABLE] {help}\n# TYPE {name} {ty}\n");
        let mut out = head(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
        );
        let label = |c: &ContainerSample| {
            format!("container=\"{}\",namespace=\"{}\",pod=\"{}\"", c.container, c.namespace, c.pod)
        };
        for c in &containers {
            out.push_str(&format!(
                "container_cpu_usage_seconds_total{{{}}} {} {ms}\n",
                label(c),
                c.cpu_seconds
            ));
        }
        out.push_str(&head(
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
        ));
        for c in &containers {
            out.push_str(&format!(
                "container_memory_working_set_bytes{{{}}} {} {ms}\n",
                label(c),
                c.working_set
            ));
        }
        out.push_str(&head(
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds",
        ));
        for c in &containers {
            let t = c.start_time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            out.push_str(&format!("container_start_time_seconds{{{}}} {t} {ms}\n", label(c)));
        }
        out.push_str(&head(
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
        ));
        out.push_str(&format!("node_cpu_usage_seconds_total {node_cpu} {ms}\n"));
        out.push_str(&head(
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
        ));
        out.push_str(&format!("node_memory_working_set_bytes {node_ws} {ms}\n"));
        out.push_str(&head(
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
        ));
        for ((ns, pod), (cpu, _)) in &pods {
            out.push_str(&format!(
                "pod_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{pod}\"}} {cpu} {ms}\n"
            ));
        }
        out.push_str(&head("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes"));
        for ((ns, pod), (_, ws)) in &pods {
            out.push_str(&format!(
                "pod_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{pod}\"}} {ws} {ms}\n"
            ));
        }
        out.push_str("# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn container(cpu: &str, mem: &str) -> Container {
        let mut c = Container { name: "c".into(), ..Default::default() };
        c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(mem.into()))]
                    .into(),
            ),
            ..Default::default()
        });
        c
    }

    #[test]
    fn cpu_follows_the_request_and_the_requests_served() {
        let u = Usage::new(UsageModel::default());
        u.add_pod("u1", "default", "p");
        let c = u.start_container("u1", &container("200m", "100Mi"));
        let t0 = Instant::now();
        // Baseline: 5% of 200m = 10m, i.e. 0.01 core-seconds per second.
        let base = c.cpu_seconds(t0 + std::time::Duration::from_secs(10));
        assert!((0.099..0.12).contains(&base), "{base}");
        for _ in 0..1000 {
            c.served_one();
        }
        // 1000 requests at 1 millicore-second each: one more core-second.
        let loaded = c.cpu_seconds(t0 + std::time::Duration::from_secs(10));
        assert!((loaded - base - 1.0).abs() < 0.01, "{base} {loaded}");
        assert_eq!(c.working_set(), WORKING_SET_BASE_BYTES + (100u64 << 20) / 5);
        let text = u.render();
        assert!(
            text.contains(
                "container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"p\"} "
            ),
            "{text}"
        );
        assert!(text.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"p\"} "), "{text}");
        // The node's counter keeps a removed pod's CPU.
        let (before, _) = u.node(Instant::now());
        u.remove_pod("u1");
        let (after, ws) = u.node(Instant::now());
        assert!(after >= before, "{before} {after}");
        assert_eq!(ws, NODE_SYSTEM_BYTES);
        assert!(!u.render().contains("pod=\"p\""));
    }

    #[tokio::test]
    async fn a_busy_process_burns_cpu_and_a_sleeping_one_does_not() {
        let u = Usage::new(UsageModel::default());
        u.add_pod("u1", "default", "p");
        let c = u.start_container("u1", &Container { name: "c".into(), ..Default::default() });
        c.timed(tokio::time::sleep(std::time::Duration::from_millis(300))).await;
        assert!(c.busy_nanos.load(Ordering::Relaxed) < 50_000_000);
        c.timed(async {
            let t = Instant::now();
            while t.elapsed() < std::time::Duration::from_millis(200) {
                std::hint::spin_loop();
            }
        })
        .await;
        assert!(c.busy_nanos.load(Ordering::Relaxed) >= 200_000_000);
        c.end();
        assert!(u.containers(Instant::now()).is_empty(), "an exited container is not reported");
    }
}
