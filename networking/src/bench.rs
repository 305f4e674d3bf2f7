//! `networking::bench::run`: one HTTP backend on a pod IP, measured in the same run directly, through
//! the service proxy's ClusterIP and through the ingress, with C keep-alive HTTP/1.1 connections
//! each sending requests back to back for a fixed time. Reports throughput and p50/p99 latency,
//! and each hop's throughput ratio and added p99 against direct.
//!
//! The load comes from `wrk` (a separate process, as the issue asks; [`Load::Wrk`]) or from a
//! built-in hyper client in this process ([`Load::Builtin`], for machines without wrk).
//!
//! The proxy and ingress are started in-process here (on the addresses in [`BenchOptions`]), so
//! the run needs only an API server; the bench objects (Service, EndpointSlice, Ingress) are
//! created in the `default` namespace and deleted at the end.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::ingress::{run_ingress, IngressConfig};
use crate::proxy::{run_proxy, ProxyConfig};
use crate::Error;

const NAME: &str = "kplane-net-bench";
const HOST: &str = "bench.kplane.invalid";

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where the simulated pod listens (a pod IP).
    pub backend: SocketAddr,
    /// The ingress listeners started for the run.
    pub ingress_http: SocketAddr,
    pub ingress_https: SocketAddr,
    /// Keep-alive connections in parallel.
    pub concurrency: usize,
    /// How long each of the three measurements runs.
    pub duration: Duration,
    /// Who generates the load.
    pub load: Load,
    /// Also measure nginx as a reference L7 proxy (the data plane of ingress-nginx, the seed's
    /// controller) in front of the same pod, when set.
    pub nginx: Option<NginxReference>,
}

/// nginx as a reference reverse proxy: `program`, listening on `listen`, with one worker and
/// keep-alive upstream connections, setting the same forwarded headers as our ingress.
#[derive(Clone, Debug)]
pub struct NginxReference {
    pub program: std::path::PathBuf,
    pub listen: SocketAddr,
}

/// The load generator.
#[derive(Clone, Debug)]
pub enum Load {
    /// Tokio/hyper clients inside this process (they share its CPU with the hops measured).
    Builtin,
    /// The `wrk` program at this path, with this many threads.
    Wrk { program: std::path::PathBuf, threads: usize },
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            backend: SocketAddr::from(([127, 244, 255, 1], 8000)),
            ingress_http: SocketAddr::from(([127, 0, 81, 1], 8080)),
            ingress_https: SocketAddr::from(([127, 0, 81, 1], 8443)),
            concurrency: 32,
            duration: Duration::from_secs(3),
            load: Load::Builtin,
            nginx: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub requests: u64,
    pub errors: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub concurrency: usize,
    /// `wrk` or `built-in`.
    pub load: &'static str,
    pub direct: Figure,
    pub proxy: Figure,
    pub ingress: Figure,
    /// nginx in front of the same pod, when asked for.
    pub nginx: Option<Figure>,
}

impl BenchReport {
    /// Throughput through `hop` as a fraction of direct.
    pub fn ratio(&self, hop: &Figure) -> f64 {
        hop.per_sec / self.direct.per_sec.max(f64::MIN_POSITIVE)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "networking benchmark: {} keep-alive HTTP/1.1 connections, load from {}",
            self.concurrency, self.load
        )?;
        writeln!(
            f,
            "{:<12} {:>12} {:>8} {:>10} {:>10} {:>9} {:>13}",
            "path", "req/s", "errors", "p50 ms", "p99 ms", "vs direct", "p99 added ms"
        )?;
        let rows = [("direct", &self.direct), ("clusterip", &self.proxy), ("ingress", &self.ingress)];
        let reference = self.nginx.as_ref().map(|fig| ("nginx (ref)", fig));
        for (name, fig) in rows.into_iter().chain(reference) {
            writeln!(
                f,
                "{name:<12} {:>12.0} {:>8} {:>10.3} {:>10.3} {:>8.0}% {:>13.3}",
                fig.per_sec,
                fig.errors,
                fig.p50_ms,
                fig.p99_ms,
                self.ratio(fig) * 100.0,
                fig.p99_ms - self.direct.p99_ms
            )?;
        }
        if self.nginx.is_some() {
            writeln!(f, "nginx (ref): nginx, one worker, keep-alive upstream, in front of the same pod")?;
        }
        write!(f, "goal: proxied >= 60% of direct, p99 added < 1 ms")
    }
}

fn bench_err(e: impl fmt::Display) -> Error {
    Error::Config(format!("benchmark: {e}"))
}

/// Runs the three measurements against the cluster behind `client`.
pub async fn run(client: kube::Client, opts: BenchOptions) -> Result<BenchReport, Error> {
    let backend =
        TcpListener::bind(opts.backend).await.map_err(|source| Error::Bind { addr: opts.backend, source })?;
    let backend_task = tokio::spawn(serve_backend(backend));

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    cleanup(&services, &slices, &ingresses).await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": NAME}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": opts.backend.port()}]}
    }))
    .map_err(bench_err)?;
    let svc = services.create(&PostParams::default(), &svc).await?;
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).ok_or_else(|| bench_err("no clusterIP allocated"))?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": NAME, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [opts.backend.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": opts.backend.port(), "protocol": "TCP"}]
    }))
    .map_err(bench_err)?;
    slices.create(&PostParams::default(), &slice).await?;
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "spec": {"ingressClassName": "kplane", "rules": [{"host": HOST, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": NAME, "port": {"name": "http"}}}}]}}]}
    }))
    .map_err(bench_err)?;
    ingresses.create(&PostParams::default(), &ing).await?;

    let (stop_proxy, proxy_rx) = oneshot::channel::<()>();
    let (stop_ingress, ingress_rx) = oneshot::channel::<()>();
    let proxy = tokio::spawn(run_proxy(client.clone(), ProxyConfig::default(), async move {
        let _ = proxy_rx.await;
    }));
    let ingress_cfg =
        IngressConfig { http: opts.ingress_http, https: opts.ingress_https, ..IngressConfig::default() };
    let ingress = tokio::spawn(run_ingress(client.clone(), ingress_cfg, async move {
        let _ = ingress_rx.await;
    }));

    let vip: SocketAddr = format!("{cluster_ip}:80").parse().map_err(bench_err)?;
    let result = async {
        for target in [opts.backend, vip, opts.ingress_http] {
            wait_ready(target).await?;
        }
        Ok::<_, Error>(BenchReport {
            concurrency: opts.concurrency,
            load: match opts.load {
                Load::Builtin => "built-in clients",
                Load::Wrk { .. } => "wrk",
            },
            direct: measure(opts.backend, &opts).await?,
            proxy: measure(vip, &opts).await?,
            ingress: measure(opts.ingress_http, &opts).await?,
            nginx: match &opts.nginx {
                Some(nginx) => Some(measure_nginx(nginx, &opts).await?),
                None => None,
            },
        })
    }
    .await;

    let _ = stop_proxy.send(());
    let _ = stop_ingress.send(());
    let _ = proxy.await;
    let _ = ingress.await;
    cleanup(&services, &slices, &ingresses).await;
    backend_task.abort();
    result
}

/// Runs nginx (see [`NginxReference`]) in a scratch directory for one measurement.
async fn measure_nginx(nginx: &NginxReference, opts: &BenchOptions) -> Result<Figure, Error> {
    let dir = std::env::temp_dir().join(format!("kplane-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(bench_err)?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream pod {{ server {backend}; keepalive 64; }}\n\
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://pod;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Host $host;\n\
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Real-IP $remote_addr;\n    }}\n  }}\n}}\n",
        backend = opts.backend,
        listen = nginx.listen,
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(bench_err)?;
    // The address must be free: otherwise the numbers would be some other server's.
    drop(TcpListener::bind(nginx.listen).await.map_err(|source| Error::Bind { addr: nginx.listen, source })?);
    let nginx_cmd = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(&nginx.program);
        cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path).args(extra);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd
    };
    let mut child = nginx_cmd(&["-g", "daemon off;"])
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| bench_err(format!("cannot run {}: {e}", nginx.program.display())))?;
    let result = async {
        wait_ready(nginx.listen).await?;
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(bench_err(format!("nginx exited ({status}): {log}")));
        }
        measure(nginx.listen, opts).await
    }
    .await;
    // `-s stop` signals the master (from its pid file), which stops its workers; killing the
    // master alone would leave them serving.
    let _ = nginx_cmd(&["-s", "stop"]).status().await;
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn cleanup(services: &Api<Service>, slices: &Api<EndpointSlice>, ingresses: &Api<Ingress>) {
    let dp = DeleteParams::default();
    let _ = ingresses.delete(NAME, &dp).await;
    let _ = slices.delete(NAME, &dp).await;
    let _ = services.delete(NAME, &dp).await;
}

/// The simulated pod: a small fixed answer, HTTP/1.1 keep-alive.
async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept().await else { continue };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"hello from the pod\n",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        });
    }
}

async fn one_request(addr: SocketAddr) -> Result<(), String> {
    let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/").header("host", HOST).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    Ok(())
}

async fn wait_ready(addr: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match one_request(addr).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(bench_err(format!("{addr} not ready: {e}"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn measure(addr: SocketAddr, opts: &BenchOptions) -> Result<Figure, Error> {
    match &opts.load {
        Load::Builtin => measure_builtin(addr, opts).await,
        Load::Wrk { program, threads } => measure_wrk(program, *threads, addr, opts).await,
    }
}

/// Runs `wrk --latency` against `addr` and reads its report.
async fn measure_wrk(
    program: &std::path::Path,
    threads: usize,
    addr: SocketAddr,
    opts: &BenchOptions,
) -> Result<Figure, Error> {
    let secs = opts.duration.as_secs().max(1);
    let out = tokio::process::Command::new(program)
        .arg(format!("-t{}", threads.clamp(1, opts.concurrency.max(1))))
        .arg(format!("-c{}", opts.concurrency.max(1)))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "-H", &format!("Host: {HOST}")])
        .arg(format!("http://{addr}/"))
        .output()
        .await
        .map_err(|e| {
            bench_err(format!("cannot run {}: {e} (install wrk, or use the built-in load)", program.display()))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(bench_err(format!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr))));
    }
    parse_wrk(&text).ok_or_else(|| bench_err(format!("cannot read wrk's report:\n{text}")))
}

/// Reads wrk's `--latency` report: requests, errors, Requests/sec, and the 50%/99% latencies.
fn parse_wrk(text: &str) -> Option<Figure> {
    let duration_ms = |v: &str| -> Option<f64> {
        let split = v.find(|c: char| c.is_ascii_alphabetic())?;
        let n: f64 = v[..split].parse().ok()?;
        Some(match &v[split..] {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let mut fig = Figure { requests: 0, errors: 0, per_sec: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => fig.p50_ms = duration_ms(v)?,
            ["99%", v] => fig.p99_ms = duration_ms(v)?,
            [n, "requests", "in", ..] => fig.requests = n.parse().ok()?,
            ["Requests/sec:", v] => fig.per_sec = v.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => fig.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                fig.errors +=
                    rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    (fig.per_sec > 0.0 && fig.p50_ms.is_finite() && fig.p99_ms.is_finite()).then_some(fig)
}

async fn measure_builtin(addr: SocketAddr, opts: &BenchOptions) -> Result<Figure, Error> {
    let start = Instant::now();
    let end = start + opts.duration;
    let mut tasks = Vec::new();
    for _ in 0..opts.concurrency {
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors = 0u64;
            let mut send = None;
            while Instant::now() < end {
                if send.is_none() {
                    let Ok(s) = TcpStream::connect(addr).await else {
                        errors += 1;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s)).await {
                        Ok((sr, conn)) => {
                            tokio::spawn(conn);
                            send = Some(sr);
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let Some(sr) = send.as_mut() else { continue };
                let req = Request::get("/").header("host", HOST).body(Empty::new()).expect("valid request");
                let t = Instant::now();
                let ok = match sr.send_request(req).await {
                    Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                } else {
                    errors += 1;
                    send = None;
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(bench_err)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(bench_err)?;
        hist.add(h).map_err(bench_err)?;
        errors += e;
    }
    let elapsed = start.elapsed();
    Ok(Figure {
        requests: hist.len(),
        errors,
        per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_wrk;

    #[test]
    fn reads_wrks_report() {
        let report = "Running 3s test @ http://127.0.0.1:8000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.33us  100.21us   4.00ms   90.00%
    Req/Sec    60.01k     1.20k   62.00k    70.00%
  Latency Distribution
     50%  498.00us
     75%  550.00us
     90%  600.00us
     99%    1.20ms
  180030 requests in 3.00s, 20.60MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  60010.00
Transfer/sec:      6.87MB
";
        let f = parse_wrk(report).unwrap();
        assert_eq!(f.requests, 180030);
        assert_eq!(f.errors, 7);
        assert!((f.per_sec - 60010.0).abs() < 1e-6);
        assert!((f.p50_ms - 0.498).abs() < 1e-9);
        assert!((f.p99_ms - 1.2).abs() < 1e-9);
        assert!(parse_wrk("").is_none());
        assert!(parse_wrk("Requests/sec: x").is_none());
    }
}
