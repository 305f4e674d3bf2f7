//! `kplane bench api`: the API server over HTTPS, measured beside raw etcd in the same run.
//!
//! It starts a real etcd (or uses `--etcd-servers`) and runs `kplane apiserver` on it as a separate
//! process (so its memory can be read), in its default configuration: HTTPS, a client certificate
//! for a user that is not in `system:masters`, so every request goes through RBAC (the user is bound
//! to a ClusterRole of its own). Its creates are judged against etcd's own create transaction (a
//! Txn comparing create_revision == 0, then a put, with one watcher on the prefix as the API
//! server's watch cache has), same concurrency, same value sizes (the bytes an API create stores),
//! in interleaved rounds so that load from elsewhere on the machine falls on both alike. Beside the
//! headline: the same creates on a second server with `--insecure-http` (no TLS, authentication or
//! RBAC) on the same etcd, and on a third on the embedded store (judged against raw etcd puts).
//! Then, on the headline server: GETs beside raw etcd gets, updates (merge patches) beside
//! server-side applies of the same objects, the LIST of N pods, watch event delivery to W
//! watchers, creates of a CRD's custom resources beside the ConfigMap creates, and the server's
//! idle RSS.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use store::bench::{drive, drive_timed, figure, histogram, Figure};

/// Flags of `kplane bench api`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchApiArgs {
    /// Measure against this etcd instead of starting one from PATH.
    #[arg(long)]
    pub etcd_servers: Option<String>,
    /// Creates through the API in each configuration (and as many etcd create txns and puts).
    #[arg(long, default_value_t = 5_000, value_parser = at_least_one())]
    pub creates: usize,
    /// The creates are measured in this many interleaved rounds (etcd put, etcd create txn, API).
    #[arg(long, default_value_t = 3, value_parser = at_least_one())]
    pub rounds: usize,
    /// Single GETs through the API (and raw etcd gets).
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one())]
    pub gets: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = at_least_one())]
    pub concurrency: usize,
    /// Pods in the measured LIST.
    #[arg(long, default_value_t = 10_000)]
    pub list_pods: usize,
    /// Watchers for the fan-out test.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Writes each watcher must receive.
    #[arg(long, default_value_t = 100)]
    pub watch_events: usize,
    /// Pace of those writes per second (steady load, as scalability SLOs measure latency); 0 writes
    /// them as fast as the concurrency allows (a burst, so latency then includes the backlog).
    #[arg(long, default_value_t = 100)]
    pub watch_rate: u64,
}

fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

impl BenchApiArgs {
    /// Flag combinations clap cannot check on its own.
    pub fn check(&self) -> Result<(), String> {
        if self.creates < self.rounds {
            return Err(format!(
                "--creates {} is fewer than --rounds {}: each round needs at least one create",
                self.creates, self.rounds
            ));
        }
        Ok(())
    }
}

/// One client for both schemes: plain HTTP for `--insecure-http`, HTTPS with the bench user's
/// client certificate otherwise (HTTP/1.1 keep-alive connections, one per request in flight).
type HttpClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

/// A client presenting `identity` (a certificate and key, PEM), trusting only `ca_pem`; with no
/// identity, a plain-HTTP client.
fn http_client(tls: Option<(&str, &crate::pki::CertPair)>) -> store::Result<HttpClient> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?;
    let config = match tls {
        Some((ca_pem, identity)) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(ca.map_err(err)?).map_err(err)?;
            }
            let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(err)?;
            builder.with_root_certificates(roots).with_client_auth_cert(certs, key).map_err(err)?
        }
        None => builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth(),
    };
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    conn.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(conn);
    Ok(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(2048).build(https))
}

fn err(e: impl fmt::Display) -> store::Error {
    store::Error::Internal(e.to_string())
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a measured API server runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The default: HTTPS, client certificates, RBAC.
    Secure,
    /// `--insecure-http`: plain HTTP, no authentication, no authorization.
    Insecure,
}

/// `kplane apiserver` on `etcd` (the embedded store in `dir` when None), once it printed
/// `kplane: ready`, with a client for it: for a secure server, the bench user's, bound by RBAC.
async fn start_server(
    exe: &PathBuf,
    etcd: Option<&str>,
    mode: Mode,
    dir: &std::path::Path,
) -> store::Result<(Server, HttpClient)> {
    let mut cmd = Command::new(exe);
    cmd.args(["apiserver", "--no-etcd-listen", "--secure-port", "0", "--data-dir"]).arg(dir);
    if let Some(etcd) = etcd {
        cmd.args(["--etcd-servers", etcd]);
    }
    if mode == Mode::Insecure {
        cmd.arg("--insecure-http");
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| err(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
    let mut base = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(url) = line.strip_prefix("kplane: API server at ") {
            base = Some(url.to_string());
        }
        if line == "kplane: ready" {
            break;
        }
    }
    let base = base.ok_or_else(|| err("the API server did not start (its error is above)"))?;
    let server = Server { child, base };
    let client = match mode {
        Mode::Insecure => http_client(None)?,
        Mode::Secure => {
            let pki = crate::pki::Pki::load(&dir.join("tls")).map_err(err)?;
            let admin = pki.client("bench-admin", "kplane-bench-admin", &["system:masters"]).map_err(err)?;
            let user = pki.client("bench-user", BENCH_USER, &[]).map_err(err)?;
            let admin = http_client(Some((&pki.ca.cert_pem, &admin)))?;
            bind_bench_user(&admin, &server.base).await?;
            http_client(Some((&pki.ca.cert_pem, &user)))?
        }
    };
    // Wait until the bench user is authorized (RBAC reads bindings from its watch cache).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = request(
            &client,
            "GET",
            &format!("{}/api/v1/namespaces/default/configmaps?limit=1", server.base),
            None,
        )
        .await?;
        if code == 200 {
            break;
        }
        if Instant::now() > deadline {
            return Err(err(format!(
                "the bench user cannot list ConfigMaps: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, client))
}

/// The user the secure rows run as: not in `system:masters`, so RBAC evaluates every request.
const BENCH_USER: &str = "kplane-bench";

/// A ClusterRole with what the bench does, bound to [`BENCH_USER`], created as an administrator.
async fn bind_bench_user(admin: &HttpClient, base: &str) -> store::Result<()> {
    let rbac = format!("{base}/apis/rbac.authorization.k8s.io/v1");
    let role = json!({"metadata": {"name": "kplane-bench"}, "rules": [{"apiGroups": [""],
        "resources": ["configmaps", "pods", "namespaces"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["create", "get"]},
        {"apiGroups": ["bench.kplane.io"], "resources": ["benchitems"], "verbs": ["get", "list", "create"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]});
    let binding = json!({"metadata": {"name": "kplane-bench"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kplane-bench"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": BENCH_USER}]});
    for (what, body) in [("clusterroles", role), ("clusterrolebindings", binding)] {
        let (code, resp) = request(admin, "POST", &format!("{rbac}/{what}"), Some(body)).await?;
        expect(code, 201, what, &resp)?;
    }
    Ok(())
}

/// Resident memory of process `pid` in MiB (0 if it cannot be read). Shared with `kplane bench cluster`.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// The best of 3 LISTs at `url`, timed until the whole body is in, its item count and
/// resourceVersion.
async fn best_list(http: &HttpClient, url: &str) -> store::Result<(f64, usize, String)> {
    let mut best = f64::MAX;
    let (mut items, mut rv) = (0, String::new());
    for _ in 0..3 {
        let t = Instant::now();
        let (code, body) = request(http, "GET", url, None).await?;
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        expect(code, 200, "list", &body)?;
        let v: Value = serde_json::from_slice(&body).map_err(err)?;
        items = v["items"].as_array().map_or(0, Vec::len);
        rv = v["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
    }
    Ok((best, items, rv))
}

/// `apiserver_cache_list_total` of pods, read from `/metrics` (None when it cannot be read).
async fn cache_lists(http: &HttpClient, base: &str) -> store::Result<Option<u64>> {
    let (code, body) = request_as(http, "GET", &format!("{base}/metrics"), "text/plain", None).await?;
    if code != 200 {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("apiserver_cache_list_total{") && l.contains(r#"resource_prefix="/pods""#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .or(Some(0)))
}

async fn request(c: &HttpClient, method: &str, url: &str, body: Option<Value>) -> store::Result<(u16, Bytes)> {
    request_as(c, method, url, "application/json", body).await
}

async fn request_as(
    c: &HttpClient,
    method: &str,
    url: &str,
    content_type: &str,
    body: Option<Value>,
) -> store::Result<(u16, Bytes)> {
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(bytes))
        .map_err(err)?;
    let resp = c.request(req).await.map_err(err)?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(err)?.to_bytes();
    Ok((code, body))
}

fn expect(code: u16, want: u16, what: &str, body: &Bytes) -> store::Result<()> {
    if code == want {
        Ok(())
    } else {
        Err(err(format!("{what}: HTTP {code}: {}", String::from_utf8_lossy(body))))
    }
}

/// Everything one run measured.
pub struct Report {
    pub args: BenchApiArgs,
    /// Bytes of the value an API create of the measured ConfigMaps stores (the anchors' value size).
    pub value_bytes: usize,
    pub raw_put: Figure,
    pub raw_get: Figure,
    /// etcd's create transaction (compare create_revision == 0, then put), one watcher on the prefix.
    pub raw_txn: Figure,
    /// Creates on the headline server: HTTPS, client certificate, RBAC, real etcd.
    pub api_create: Figure,
    /// Creates of a CRD's custom resources (same size, concurrency and count as the ConfigMaps).
    pub api_cr_create: Figure,
    /// The same creates on a `--insecure-http` server on the same etcd.
    pub api_create_insecure: Figure,
    /// The same creates on a secure server on the embedded store.
    pub api_create_embedded: Figure,
    /// CPU of the server and etcd during each configuration's creates, and etcd's during its
    /// create txns (the client's own side, this process, is not counted in either).
    pub api_create_cpu: CpuUse,
    pub api_create_insecure_cpu: CpuUse,
    pub api_create_embedded_cpu: CpuUse,
    pub raw_txn_cpu: CpuUse,
    pub api_get: Figure,
    pub api_get_insecure: Figure,
    /// Merge patches of each created ConfigMap (Update operations).
    pub api_update: Figure,
    /// Server-side applies of each created ConfigMap (whole configuration, `force`).
    pub api_apply: Figure,
    pub list_ms: f64,
    pub list_items: usize,
    /// The same LIST with `resourceVersion=0` (always from the watch cache) and with
    /// `resourceVersionMatch=Exact` at the default LIST's revision (always from the store), best of 3.
    pub list_cache_ms: f64,
    pub list_store_ms: f64,
    /// Whether the default (consistent) LIST was answered by the watch cache
    /// (`apiserver_cache_list_total` moved): only when the store reports watch progress exactly.
    /// None when `/metrics` could not be read.
    pub list_default_cached: Option<bool>,
    pub watch: Figure,
    pub idle_rss_mib: f64,
}

/// Wall time and latencies of one kind of operation, added up over rounds.
struct Tally {
    ops: usize,
    elapsed: Duration,
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> store::Result<Tally> {
        Ok(Tally { ops: 0, elapsed: Duration::ZERO, hist: histogram()? })
    }

    fn add(&mut self, ops: usize, (elapsed, hist): (Duration, Histogram<u64>)) {
        self.ops += ops;
        self.elapsed += elapsed;
        let _ = self.hist.add(hist);
    }

    fn figure(&self) -> Figure {
        figure(self.ops, self.elapsed, &self.hist)
    }
}

/// CPU time (user + system, every thread) of process `pid` in seconds, from `/proc/<pid>/stat`
/// (`utime` and `stime`, in the kernel ABI's USER_HZ of 100 ticks a second). None when unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th after it.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The processes whose CPU a measured phase is charged with: the API server and, when the bench
/// started it, etcd.
#[derive(Clone, Copy)]
struct Procs {
    server: Option<u32>,
    etcd: Option<u32>,
}

/// CPU seconds used by the API server and etcd over some operations (None: not readable).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub ops: usize,
    pub server: Option<f64>,
    pub etcd: Option<f64>,
}

impl CpuUse {
    /// Runs `phase` (`ops` operations) and adds the CPU the processes used meanwhile.
    async fn measure<T>(&mut self, procs: Procs, ops: usize, phase: impl std::future::Future<Output = T>) -> T {
        let read = |pid: Option<u32>| pid.and_then(cpu_seconds);
        let (s0, e0) = (read(procs.server), read(procs.etcd));
        let out = phase.await;
        let add = |acc: Option<f64>, before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => Some(acc.unwrap_or(0.0) + (a - b)),
            _ => acc,
        };
        self.server = add(self.server, s0, read(procs.server));
        self.etcd = add(self.etcd, e0, read(procs.etcd));
        self.ops += ops;
        out
    }

    /// Microseconds of CPU per operation, of the server and of etcd.
    pub fn per_op_us(&self) -> (Option<f64>, Option<f64>) {
        let per = |s: Option<f64>| s.filter(|_| self.ops > 0).map(|s| s * 1e6 / self.ops as f64);
        (per(self.server), per(self.etcd))
    }
}

/// The ConfigMap every measured create posts: `prefix-<i>` with a 200-byte value.
fn configmap(prefix: &str, i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{prefix}-{i:08}")}, "data": {"v": "x".repeat(200)}})
}

/// `args.creates` API creates of `prefix-<i>` ConfigMaps, in `args.rounds` rounds, each round
/// preceded by as many raw etcd puts and etcd create txns (added to `put` and `txn`), all at the
/// same concurrency with values of `value_bytes`. The CPU the server and etcd use during the API
/// creates is returned with their figure; etcd's during the create txns is added to `txn_cpu`.
#[allow(clippy::too_many_arguments)]
async fn creates_interleaved(
    args: &BenchApiArgs,
    etcd: &etcd_client::Client,
    value_bytes: usize,
    anchor_at: usize,
    http: &HttpClient,
    base: &str,
    prefix: &'static str,
    put: &mut Tally,
    txn: &mut Tally,
    procs: Procs,
    txn_cpu: &mut CpuUse,
) -> store::Result<(Figure, CpuUse)> {
    let (n, c) = (args.creates, args.concurrency);
    let value = vec![b'x'; value_bytes];
    let mut api = Tally::new()?;
    let mut api_cpu = CpuUse::default();
    for r in 0..args.rounds {
        let range = r * n / args.rounds..(r + 1) * n / args.rounds;
        let count = range.len();
        let anchor = range.start + anchor_at..range.end + anchor_at;
        let (ec, v) = (etcd.clone(), value.clone());
        put.add(
            count,
            drive_timed(anchor.clone(), c, move |i| {
                let (mut kv, v) = (ec.kv_client(), v.clone());
                async move { kv.put(raw_key("puts", i), v, None).await.map(|_| ()).map_err(err) }
            })
            .await?,
        );
        let (ec, v) = (etcd.clone(), value.clone());
        let etcd_only = Procs { server: None, ..procs };
        txn.add(
            count,
            txn_cpu
                .measure(
                    etcd_only,
                    count,
                    drive_timed(anchor, c, move |i| {
                        let (mut kv, v) = (ec.kv_client(), v.clone());
                        async move {
                            let key = raw_key("txns", i);
                            let txn = etcd_client::Txn::new()
                                .when([etcd_client::Compare::create_revision(
                                    key.as_str(),
                                    etcd_client::CompareOp::Equal,
                                    0,
                                )])
                                .and_then([etcd_client::TxnOp::put(key.as_str(), v, None)]);
                            let resp = kv.txn(txn).await.map_err(err)?;
                            if resp.succeeded() {
                                Ok(())
                            } else {
                                Err(err(format!("{key} exists: the create txn did not apply")))
                            }
                        }
                    }),
                )
                .await?,
        );
        let (h, b) = (http.clone(), base.to_string());
        api.add(
            count,
            api_cpu
                .measure(
                    procs,
                    count,
                    drive_timed(range, c, move |i| {
                        let (h, b) = (h.clone(), b.clone());
                        async move {
                            let url = format!("{b}/api/v1/namespaces/default/configmaps");
                            let (code, body) = request(&h, "POST", &url, Some(configmap(prefix, i))).await?;
                            expect(code, 201, "create", &body)
                        }
                    }),
                )
                .await?,
        );
    }
    Ok((api.figure(), api_cpu))
}

/// The anchors' keys (`kind`: puts or txns), as long as the API's
/// `/registry/configmaps/default/cm-<8 digits>`.
fn raw_key(kind: &str, i: usize) -> String {
    format!("/registry/bench-{kind}/default/cm-{i:08}")
}

/// API GETs of the `prefix-<i>` ConfigMaps, `args.creates` of which exist.
async fn gets(
    args: &BenchApiArgs,
    http: &HttpClient,
    base: &str,
    prefix: &'static str,
) -> store::Result<Figure> {
    let (h, b, n) = (http.clone(), base.to_string(), args.creates.max(1));
    drive(args.gets, args.concurrency, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let url = format!("{b}/api/v1/namespaces/default/configmaps/{prefix}-{:08}", (i * 7919) % n);
            let (code, body) = request(&h, "GET", &url, None).await?;
            expect(code, 200, "get", &body)
        }
    })
    .await
}

/// The bytes an API create of [`configmap`] stores in etcd (metadata, managedFields and all).
async fn stored_bytes(http: &HttpClient, base: &str, etcd: &etcd_client::Client) -> store::Result<usize> {
    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    let (code, body) = request(http, "POST", &url, Some(configmap("sz", 0))).await?;
    expect(code, 201, "probe create", &body)?;
    let resp = etcd.kv_client().get("/registry/configmaps/default/sz-00000000", None).await.map_err(err)?;
    resp.kvs().first().map(|kv| kv.value().len()).ok_or_else(|| err("the probe ConfigMap is not in etcd"))
}

pub async fn run(args: BenchApiArgs, exe: PathBuf) -> store::Result<Report> {
    args.check().map_err(err)?;
    let mut _etcd = None;
    let mut etcd_pid = None;
    let etcd = match &args.etcd_servers {
        Some(u) => u.clone(),
        None => {
            let p = store::etcd_process::EtcdProcess::start().await.map_err(err)?;
            let u = p.endpoint();
            etcd_pid = p.pid();
            _etcd = Some(p);
            u
        }
    };
    let etcd_client = etcd_client::Client::connect([etcd.as_str()], None).await.map_err(err)?;
    let dir = tempfile::tempdir().map_err(err)?;
    let c = args.concurrency;
    // The anchors' txns pass one watcher, as the API server's watch cache watches its creates.
    let mut watcher_client = etcd_client.clone();
    let mut stream = watcher_client
        .watch("/registry/bench-txns/", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .map_err(err)?;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    let (mut put, mut txn) = (Tally::new()?, Tally::new()?);
    let mut txn_cpu = CpuUse::default();

    // The headline: the default configuration on real etcd.
    let (server, http) = start_server(&exe, Some(&etcd), Mode::Secure, &dir.path().join("secure")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_mib = rss_mib(server.child.id());
    let base = server.base.clone();
    let value_bytes = stored_bytes(&http, &base, &etcd_client).await?;
    let procs = Procs { server: Some(server.child.id()), etcd: etcd_pid };
    let (api_create, api_create_cpu) = creates_interleaved(
        &args,
        &etcd_client,
        value_bytes,
        0,
        &http,
        &base,
        "cm",
        &mut put,
        &mut txn,
        procs,
        &mut txn_cpu,
    )
    .await?;
    let (ec, n) = (etcd_client.clone(), args.creates);
    let raw_get = drive(args.gets, c, move |i| {
        let mut kv = ec.kv_client();
        async move { kv.get(raw_key("puts", (i * 7919) % n), None).await.map(|_| ()).map_err(err) }
    })
    .await?;
    let api_get = gets(&args, &http, &base, "cm").await?;
    let api_cr_create = cr_creates(&http, &base, &args).await?;

    // Updates (merge patches) and server-side applies of the same ConfigMaps, each changing the
    // value; the applies take the field from the updater (force), as a controller's apply would.
    let (h, b, n) = (http.clone(), base.clone(), args.creates.max(1));
    let api_update = drive(args.creates, c, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let url =
                format!("{b}/api/v1/namespaces/default/configmaps/cm-{:08}?fieldManager=bench-update", i % n);
            let patch = json!({"data": {"v": format!("{i:08}{}", "u".repeat(192))}});
            let (code, body) =
                request_as(&h, "PATCH", &url, "application/merge-patch+json", Some(patch)).await?;
            expect(code, 200, "update", &body)
        }
    })
    .await?;
    let (h, b, n) = (http.clone(), base.clone(), args.creates.max(1));
    let api_apply = drive(args.creates, c, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let name = format!("cm-{:08}", i % n);
            let url = format!("{b}/api/v1/namespaces/default/configmaps/{name}?fieldManager=bench-apply&force=true");
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": format!("{i:08}{}", "a".repeat(192))}});
            let (code, body) = request_as(&h, "PATCH", &url, "application/apply-patch+yaml", Some(cm)).await?;
            expect(code, 200, "apply", &body)
        }
    })
    .await?;

    // LIST of N pods in their own namespace.
    let (code, body) = request(
        &http,
        "POST",
        &format!("{base}/api/v1/namespaces"),
        Some(json!({"metadata": {"name": "bench-list"}})),
    )
    .await?;
    expect(code, 201, "namespace", &body)?;
    let (h, b) = (http.clone(), base.clone());
    drive(args.list_pods, c, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{i:06}"), "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}});
            let (code, body) = request(&h, "POST", &format!("{b}/api/v1/namespaces/bench-list/pods"), Some(pod)).await?;
            expect(code, 201, "pod", &body)
        }
    })
    .await?;
    let pods = format!("{base}/api/v1/namespaces/bench-list/pods");
    let cached_before = cache_lists(&http, &base).await?;
    let (best, list_items, list_rv) = best_list(&http, &pods).await?;
    let list_default_cached = match (cached_before, cache_lists(&http, &base).await?) {
        (Some(before), Some(after)) => Some(after > before),
        _ => None,
    };
    let (list_cache_ms, _, _) = best_list(&http, &format!("{pods}?resourceVersion=0")).await?;
    let (list_store_ms, _, _) =
        best_list(&http, &format!("{pods}?resourceVersion={list_rv}&resourceVersionMatch=Exact")).await?;

    let watch = watch_fanout(&http, &base, &args).await?;
    drop(server);

    // Beside it: the same creates with no TLS, authentication or RBAC, on the same etcd...
    let (server, http) = start_server(&exe, Some(&etcd), Mode::Insecure, &dir.path().join("insecure")).await?;
    let procs = Procs { server: Some(server.child.id()), etcd: etcd_pid };
    let (api_create_insecure, api_create_insecure_cpu) = creates_interleaved(
        &args,
        &etcd_client,
        value_bytes,
        args.creates,
        &http,
        &server.base,
        "in",
        &mut put,
        &mut txn,
        procs,
        &mut txn_cpu,
    )
    .await?;
    let api_get_insecure = gets(&args, &http, &server.base, "in").await?;
    drop(server);
    // ...and in the default configuration on the embedded store.
    let (server, http) = start_server(&exe, None, Mode::Secure, &dir.path().join("embedded")).await?;
    let procs = Procs { server: Some(server.child.id()), etcd: etcd_pid };
    let (api_create_embedded, api_create_embedded_cpu) = creates_interleaved(
        &args,
        &etcd_client,
        value_bytes,
        2 * args.creates,
        &http,
        &server.base,
        "cm",
        &mut put,
        &mut txn,
        procs,
        &mut txn_cpu,
    )
    .await?;
    drop(server);
    drain.abort();
    Ok(Report {
        args,
        value_bytes,
        raw_put: put.figure(),
        raw_get,
        raw_txn: txn.figure(),
        api_create,
        api_cr_create,
        api_create_insecure,
        api_create_embedded,
        api_create_cpu,
        api_create_insecure_cpu,
        api_create_embedded_cpu,
        raw_txn_cpu: txn_cpu,
        api_get,
        api_get_insecure,
        api_update,
        api_apply,
        list_ms: best,
        list_items,
        list_cache_ms,
        list_store_ms,
        list_default_cached,
        watch,
        idle_rss_mib,
    })
}

/// A CRD created in the run, then as many of its custom resources as ConfigMaps, of the same size
/// and at the same concurrency (schema: `spec.v`, a string, so pruning, defaulting and schema
/// validation all run).
async fn cr_creates(http: &HttpClient, base: &str, args: &BenchApiArgs) -> store::Result<Figure> {
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "benchitems.bench.kplane.io"},
        "spec": {"group": "bench.kplane.io", "scope": "Namespaced",
            "names": {"plural": "benchitems", "singular": "benchitem", "kind": "BenchItem"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"v": {"type": "string", "maxLength": 1024}}}}}}}]}});
    let (code, body) = request(
        http,
        "POST",
        &format!("{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        Some(crd),
    )
    .await?;
    expect(code, 201, "CRD", &body)?;
    let list = format!("{base}/apis/bench.kplane.io/v1/namespaces/default/benchitems");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = request(http, "GET", &list, None).await?;
        if code == 200 {
            break;
        }
        if Instant::now() > deadline {
            return Err(err(format!(
                "the bench CRD is not served: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = http.clone();
    drive(args.creates, args.concurrency, move |i| {
        let (h, url) = (h.clone(), list.clone());
        async move {
            let cr = json!({"apiVersion": "bench.kplane.io/v1", "kind": "BenchItem", "metadata": {"name": format!("cr-{i:08}")}, "spec": {"v": "x".repeat(200)}});
            let (code, body) = request(&h, "POST", &url, Some(cr)).await?;
            expect(code, 201, "CR create", &body)
        }
    })
    .await
}

/// W HTTP watches on one namespace's ConfigMaps; E writes at concurrency C, each carrying its send
/// time; every watcher records each event's delivery latency.
async fn watch_fanout(http: &HttpClient, base: &str, args: &BenchApiArgs) -> store::Result<Figure> {
    let (code, body) = request(
        http,
        "POST",
        &format!("{base}/api/v1/namespaces"),
        Some(json!({"metadata": {"name": "bench-watch"}})),
    )
    .await?;
    expect(code, 201, "namespace", &body)?;
    let (code, body) =
        request(http, "GET", &format!("{base}/api/v1/namespaces/bench-watch/configmaps"), None).await?;
    expect(code, 200, "list", &body)?;
    let rv: Value = serde_json::from_slice(&body).map_err(err)?;
    let rv = rv["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let epoch = Instant::now();
    let ready = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let url = format!("{base}/api/v1/namespaces/bench-watch/configmaps?watch=true&resourceVersion={rv}");
        let (h, want, ready) = (http.clone(), args.watch_events, ready.clone());
        watchers.push(tokio::spawn(async move {
            // A thousand TLS handshakes at once can outlast the server's handshake timeout on a
            // loaded machine: a watch that could not connect tries again, as a reflector would.
            let mut attempt = 0;
            let resp = loop {
                let req = http::Request::builder().uri(&url).body(Full::new(Bytes::new())).map_err(err)?;
                match h.request(req).await {
                    Ok(resp) if resp.status() == http::StatusCode::OK => break resp,
                    Ok(resp) => return Err(err(format!("watch: HTTP {}", resp.status()))),
                    Err(e) if attempt >= 5 => return Err(err(format!("watch: {e}"))),
                    Err(_) => attempt += 1,
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            };
            ready.fetch_add(1, Ordering::Relaxed);
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            let mut hist = histogram()?;
            let mut seen = 0;
            while seen < want {
                let frame = match tokio::time::timeout(Duration::from_secs(120), body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => return Err(err("a watch ended early")),
                };
                let Ok(data) = frame.into_data() else { continue };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    // A substring search, not a JSON parse: the client should take as little of
                    // the machine's two cores from the server as it can.
                    if let Some(sent) = sent_of(&line) {
                        let now = epoch.elapsed().as_micros() as u64;
                        let _ = hist.record(now.saturating_sub(sent).max(1));
                        seen += 1;
                    }
                }
            }
            Ok::<_, store::Error>(hist)
        }));
    }
    // Every watcher connected, or the first that could not ends the run with its error.
    while ready.load(Ordering::Relaxed) < args.watchers {
        if let Some(i) = watchers.iter().position(|w| w.is_finished()) {
            watchers.swap_remove(i).await.map_err(err)??;
            return Err(err("a watcher ended before the writes began"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let (h, b) = (http.clone(), base.to_string());
    let write = move |i: usize| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let sent = epoch.elapsed().as_micros().to_string();
            let cm = json!({"metadata": {"name": format!("w-{i:06}")}, "data": {"sent": sent}});
            let (code, body) =
                request(&h, "POST", &format!("{b}/api/v1/namespaces/bench-watch/configmaps"), Some(cm)).await?;
            expect(code, 201, "watch write", &body)
        }
    };
    if args.watch_rate > 0 {
        let period = 1_000_000u64.checked_div(args.watch_rate).unwrap_or(1);
        let mut tick = tokio::time::interval(Duration::from_micros(period));
        for i in 0..args.watch_events {
            tick.tick().await;
            write(i).await?;
        }
    } else {
        drive(args.watch_events, args.concurrency, write).await?;
    }
    let mut all = histogram()?;
    for w in watchers {
        let _ = all.add(w.await.map_err(err)??);
    }
    Ok(Figure {
        ops_per_sec: (args.watch_events * args.watchers) as f64 / start.elapsed().as_secs_f64(),
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// The `"sent":"<micros>"` value of a watch event line.
fn sent_of(line: &[u8]) -> Option<u64> {
    const TAG: &[u8] = b"\"sent\":\"";
    let at = line.windows(TAG.len()).position(|w| w == TAG)? + TAG.len();
    let digits: Vec<u8> = line.get(at..)?.iter().take_while(|b| b.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { 0.0 };
        writeln!(
            f,
            "kplane bench api: C={}, {} creates per configuration in {} interleaved rounds, {} gets, LIST of {} pods, {} watchers x {} events at {}",
            a.concurrency,
            a.creates,
            a.rounds,
            a.gets,
            a.list_pods,
            a.watchers,
            a.watch_events,
            if a.watch_rate > 0 { format!("{} writes/s", a.watch_rate) } else { "full speed".to_string() }
        )?;
        writeln!(
            f,
            "default configuration: HTTPS (HTTP/1.1 keep-alive), a client certificate, RBAC (user {BENCH_USER:?}, not in system:masters); anchor values of {} bytes (what an API create stores)",
            self.value_bytes
        )?;
        writeln!(f, "{:<48} {:>10} {:>16} {:>7}   goal", "", "kplane API", "anchor", "ratio")?;
        let row = |f: &mut fmt::Formatter<'_>, label: &str, ours: f64, what: &str, anchor: f64, goal: &str| {
            writeln!(
                f,
                "{label:<48} {ours:>10.0} {what:>5} {anchor:>10.0} {:>6.2}x   {goal}",
                ratio(ours, anchor)
            )
        };
        row(
            f,
            "creates/s, default, real etcd",
            self.api_create.ops_per_sec,
            "txn",
            self.raw_txn.ops_per_sec,
            ">= 0.90x of etcd create txns",
        )?;
        row(
            f,
            "creates/s, --insecure-http, same etcd",
            self.api_create_insecure.ops_per_sec,
            "txn",
            self.raw_txn.ops_per_sec,
            "(no TLS, authentication or RBAC)",
        )?;
        row(
            f,
            "creates/s, default, embedded store",
            self.api_create_embedded.ops_per_sec,
            "put",
            self.raw_put.ops_per_sec,
            ">= 1.50x of raw etcd puts",
        )?;
        row(
            f,
            "etcd create txns/s (vs raw etcd puts)",
            self.raw_txn.ops_per_sec,
            "put",
            self.raw_put.ops_per_sec,
            "(a create's cost to etcd: compare + put, watched)",
        )?;
        row(f, "GETs/s, default (vs etcd get)", self.api_get.ops_per_sec, "get", self.raw_get.ops_per_sec, "")?;
        row(
            f,
            "CR creates/s, default (vs ConfigMap creates)",
            self.api_cr_create.ops_per_sec,
            "cm",
            self.api_create.ops_per_sec,
            ">= 0.80x of ConfigMap creates",
        )?;
        row(
            f,
            "GETs/s, --insecure-http (vs etcd get)",
            self.api_get_insecure.ops_per_sec,
            "get",
            self.raw_get.ops_per_sec,
            "",
        )?;
        writeln!(f, "{:<48} {:>10.0}", "updates/s, default (API merge PATCH)", self.api_update.ops_per_sec)?;
        writeln!(
            f,
            "{:<48} {:>10.0} {:>5} {:>10.0} {:>6.2}x   >= 0.50x",
            "server-side applies/s, default (vs updates/s)",
            self.api_apply.ops_per_sec,
            "upd",
            self.api_update.ops_per_sec,
            ratio(self.api_apply.ops_per_sec, self.api_update.ops_per_sec),
        )?;
        let ms = |f: &mut fmt::Formatter<'_>, label: &str, ours: &Figure, anchor: &Figure, what: &str| {
            writeln!(
                f,
                "{label:<48} {:>10} {what:>5} {:>10}",
                format!("{:.2}/{:.2}", ours.p50_ms, ours.p99_ms),
                format!("{:.2}/{:.2}", anchor.p50_ms, anchor.p99_ms)
            )
        };
        ms(f, "create p50/p99 ms, default, real etcd", &self.api_create, &self.raw_txn, "txn")?;
        ms(f, "create p50/p99 ms, --insecure-http", &self.api_create_insecure, &self.raw_txn, "txn")?;
        ms(f, "create p50/p99 ms, default, embedded store", &self.api_create_embedded, &self.raw_put, "put")?;
        ms(f, "GET p50/p99 ms, default", &self.api_get, &self.raw_get, "get")?;
        let us = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.0}"));
        let (_, txn_etcd) = self.raw_txn_cpu.per_op_us();
        for (label, cpu) in [
            ("CPU us per create, default, real etcd", &self.api_create_cpu),
            ("CPU us per create, --insecure-http", &self.api_create_insecure_cpu),
            ("CPU us per create, default, embedded store", &self.api_create_embedded_cpu),
        ] {
            let (server, etcd) = cpu.per_op_us();
            writeln!(
                f,
                "{label:<48} {:>10} server + {} etcd   (etcd per create txn: {})",
                us(server),
                us(etcd),
                us(txn_etcd)
            )?;
        }
        writeln!(
            f,
            "{:<48} {:>10.1} ms ({} items)   goal < 100 ms (from the watch cache: {})",
            "LIST of pods, default, best of 3",
            self.list_ms,
            self.list_items,
            match self.list_default_cached {
                Some(true) => "yes",
                Some(false) => "no, this etcd reports no exact watch progress",
                None => "unknown, /metrics unreadable",
            }
        )?;
        writeln!(
            f,
            "{:<48} {:>10.1} ms   vs {:.1} ms from the store (Exact): {:.2}x",
            "LIST of pods, resourceVersion=0 (watch cache)",
            self.list_cache_ms,
            self.list_store_ms,
            self.list_store_ms / self.list_cache_ms.max(0.001)
        )?;
        writeln!(
            f,
            "{:<48} {:>10.2} ms p99 (p50 {:.2}, {:.0} events/s)   goal < 100 ms",
            "watch delivery, default", self.watch.p99_ms, self.watch.p50_ms, self.watch.ops_per_sec
        )?;
        writeln!(
            f,
            "{:<48} {:>10.1} MiB   goal < 50 MB",
            "idle RSS of kplane apiserver, default", self.idle_rss_mib
        )
    }
}
