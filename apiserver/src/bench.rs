//! `kplane bench api`: the API server over HTTP, measured beside raw etcd in the same run.
//!
//! It starts a real etcd (or uses `--etcd-servers`), starts `kplane apiserver` on it as a separate
//! process (so its memory can be read), then measures with a plain HTTP/1.1 client:
//! creates and GETs at concurrency C against raw etcd-client puts and gets (the anchor), creates
//! of a CRD's custom resources beside the ConfigMap creates, updates
//! (merge patches) beside server-side applies of the same objects, the LIST
//! of N pods, watch event delivery to W watchers, and the server's idle RSS.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use store::bench::{drive, histogram, Figure};

/// Flags of `kplane bench api`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchApiArgs {
    /// Measure against this etcd instead of starting one from PATH.
    #[arg(long)]
    pub etcd_servers: Option<String>,
    /// Creates through the API (and raw etcd puts).
    #[arg(long, default_value_t = 5_000)]
    pub creates: usize,
    /// Single GETs through the API (and raw etcd gets).
    #[arg(long, default_value_t = 10_000)]
    pub gets: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
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

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

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

fn start_server(exe: &PathBuf, etcd: &str, dir: &std::path::Path) -> store::Result<Server> {
    let mut child = Command::new(exe)
        .args([
            "apiserver",
            "--insecure-http",
            "--no-etcd-listen",
            "--secure-port",
            "0",
            "--etcd-servers",
            etcd,
            "--data-dir",
        ])
        .arg(dir)
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
    let base = base.ok_or_else(|| err("the API server did not start"))?;
    Ok(Server { child, base })
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
    pub raw_put: Figure,
    pub raw_get: Figure,
    pub raw_txn_watched: Figure,
    pub api_create: Figure,
    /// Creates of a CRD's custom resources (same size, concurrency and count as the ConfigMaps).
    pub api_cr_create: Figure,
    pub api_get: Figure,
    /// Merge patches of each created ConfigMap (Update operations).
    pub api_update: Figure,
    /// Server-side applies of each created ConfigMap (whole configuration, `force`).
    pub api_apply: Figure,
    pub list_ms: f64,
    pub list_items: usize,
    pub watch: Figure,
    pub idle_rss_mib: f64,
}

pub async fn run(args: BenchApiArgs, exe: PathBuf) -> store::Result<Report> {
    let mut _etcd = None;
    let etcd = match &args.etcd_servers {
        Some(u) => u.clone(),
        None => {
            let p = store::etcd_process::EtcdProcess::start().await.map_err(err)?;
            let u = p.endpoint();
            _etcd = Some(p);
            u
        }
    };
    let dir = tempfile::tempdir().map_err(err)?;
    let server = start_server(&exe, &etcd, dir.path())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_mib = rss_mib(server.child.id());

    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    let http: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(2048).build(conn);
    let base = server.base.clone();
    let c = args.concurrency;

    // Raw etcd, the anchor: the same number of puts and gets, same concurrency, same value size.
    let etcd_client = etcd_client::Client::connect([etcd.as_str()], None).await.map_err(err)?;
    let value = vec![b'x'; 300];
    let (ec, v) = (etcd_client.clone(), value.clone());
    let raw_put = drive(args.creates, c, move |i| {
        let (mut kv, v) = (ec.kv_client(), v.clone());
        async move { kv.put(format!("/bench/raw/{i:08}"), v, None).await.map(|_| ()).map_err(err) }
    })
    .await?;
    // What an API create costs etcd: a create-if-absent txn, with one watcher on the prefix (the
    // API server's watch cache). Not the goal's anchor, but it is the ceiling of any create that
    // keeps upstream's semantics: etcd 3.4 applies every write txn over a copy of its read buffer
    // (etcd-io/etcd#12896 removed that in 3.5), so a txn costs about two puts, with or without a
    // compare or a watcher.
    let mut watcher_client = etcd_client.clone();
    let mut stream = watcher_client
        .watch("/bench/txn/", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .map_err(err)?;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    let (ec, v) = (etcd_client.clone(), value.clone());
    let raw_txn = drive(args.creates, c, move |i| {
        let (mut kv, v) = (ec.kv_client(), v.clone());
        async move {
            let key = format!("/bench/txn/{i:08}");
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::mod_revision(key.as_str(), etcd_client::CompareOp::Equal, 0)])
                .and_then([etcd_client::TxnOp::put(key.as_str(), v, None)]);
            kv.txn(txn).await.map(|_| ()).map_err(err)
        }
    })
    .await?;
    drain.abort();
    let (ec, n) = (etcd_client.clone(), args.creates.max(1));
    let raw_get = drive(args.gets, c, move |i| {
        let mut kv = ec.kv_client();
        async move { kv.get(format!("/bench/raw/{:08}", (i * 7919) % n), None).await.map(|_| ()).map_err(err) }
    })
    .await?;

    // API creates and GETs: ConfigMaps of about the same size as the raw values.
    let (h, b) = (http.clone(), base.clone());
    let api_create = drive(args.creates, c, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i:08}")}, "data": {"v": "x".repeat(200)}});
            let (code, body) = request(&h, "POST", &format!("{b}/api/v1/namespaces/default/configmaps"), Some(cm)).await?;
            expect(code, 201, "create", &body)
        }
    })
    .await?;
    let api_cr_create = cr_creates(&http, &base, &args).await?;
    let (h, b, n) = (http.clone(), base.clone(), args.creates.max(1));
    let api_get = drive(args.gets, c, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let url = format!("{b}/api/v1/namespaces/default/configmaps/cm-{:08}", (i * 7919) % n);
            let (code, body) = request(&h, "GET", &url, None).await?;
            expect(code, 200, "get", &body)
        }
    })
    .await?;

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
    let mut best = f64::MAX;
    let mut list_items = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let (code, body) =
            request(&http, "GET", &format!("{base}/api/v1/namespaces/bench-list/pods"), None).await?;
        expect(code, 200, "list", &body)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let v: Value = serde_json::from_slice(&body).map_err(err)?;
        list_items = v["items"].as_array().map_or(0, Vec::len);
        best = best.min(ms);
    }

    let watch = watch_fanout(&http, &base, &args).await?;
    drop(server);
    Ok(Report {
        args,
        raw_put,
        raw_get,
        raw_txn_watched: raw_txn,
        api_create,
        api_cr_create,
        api_get,
        api_update,
        api_apply,
        list_ms: best,
        list_items,
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
            let req = http::Request::builder().uri(url).body(Full::new(Bytes::new())).map_err(err)?;
            let resp = h.request(req).await.map_err(err)?;
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
    while ready.load(Ordering::Relaxed) < args.watchers {
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
            "kplane bench api: C={}, {} creates, {} gets, LIST of {} pods, {} watchers x {} events at {}",
            a.concurrency,
            a.creates,
            a.gets,
            a.list_pods,
            a.watchers,
            a.watch_events,
            if a.watch_rate > 0 { format!("{} writes/s", a.watch_rate) } else { "full speed".to_string() }
        )?;
        writeln!(f, "{:<44} {:>12} {:>12} {:>8}   {:<22}", "", "kplane API", "raw etcd", "ratio", "goal")?;
        writeln!(
            f,
            "{:<44} {:>12.0} {:>12.0} {:>7.2}x   {:<22}",
            "creates/s (API POST vs etcd put)",
            self.api_create.ops_per_sec,
            self.raw_put.ops_per_sec,
            ratio(self.api_create.ops_per_sec, self.raw_put.ops_per_sec),
            ">= 0.60x"
        )?;
        writeln!(
            f,
            "{:<44} {:>12.0} {:>12.0} {:>7.2}x   {:<22}",
            "  same, vs etcd create txn with a watcher",
            self.api_create.ops_per_sec,
            self.raw_txn_watched.ops_per_sec,
            ratio(self.api_create.ops_per_sec, self.raw_txn_watched.ops_per_sec),
            "(what a create costs etcd)"
        )?;
        writeln!(
            f,
            "{:<44} {:>12} {:>12.0} {:>7.2}x   {:<22}",
            "  ceiling: etcd create txn vs etcd put",
            "",
            self.raw_put.ops_per_sec,
            ratio(self.raw_txn_watched.ops_per_sec, self.raw_put.ops_per_sec),
            "(no create can beat it)"
        )?;
        writeln!(
            f,
            "{:<44} {:>12.0} {:>12} {:>7.2}x   {:<22}",
            "CR creates/s (vs ConfigMap creates/s)",
            self.api_cr_create.ops_per_sec,
            "",
            ratio(self.api_cr_create.ops_per_sec, self.api_create.ops_per_sec),
            ">= 0.80x"
        )?;
        writeln!(
            f,
            "{:<44} {:>12.0} {:>12.0} {:>7.2}x",
            "GETs/s (API GET vs etcd get)",
            self.api_get.ops_per_sec,
            self.raw_get.ops_per_sec,
            ratio(self.api_get.ops_per_sec, self.raw_get.ops_per_sec)
        )?;
        writeln!(f, "{:<44} {:>12.0}", "updates/s (API merge PATCH)", self.api_update.ops_per_sec)?;
        writeln!(
            f,
            "{:<44} {:>12.0} {:>12} {:>7.2}x   {:<22}",
            "server-side applies/s (vs updates/s)",
            self.api_apply.ops_per_sec,
            "",
            ratio(self.api_apply.ops_per_sec, self.api_update.ops_per_sec),
            ">= 0.50x"
        )?;
        writeln!(
            f,
            "{:<44} {:>8.2}/{:<8.2} {:>6.2}/{:<6.2}",
            "create p50/p99 ms (API / etcd)",
            self.api_create.p50_ms,
            self.api_create.p99_ms,
            self.raw_put.p50_ms,
            self.raw_put.p99_ms
        )?;
        writeln!(
            f,
            "{:<44} {:>8.2}/{:<8.2} {:>6.2}/{:<6.2}",
            "GET p50/p99 ms (API / etcd)",
            self.api_get.p50_ms,
            self.api_get.p99_ms,
            self.raw_get.p50_ms,
            self.raw_get.p99_ms
        )?;
        writeln!(
            f,
            "{:<44} {:>12.1} ms ({} items)   goal < 300 ms",
            "LIST of pods, best of 3", self.list_ms, self.list_items
        )?;
        writeln!(
            f,
            "{:<44} {:>12.2} ms p99 (p50 {:.2}, {:.0} events/s)   goal < 100 ms",
            "watch delivery", self.watch.p99_ms, self.watch.p50_ms, self.watch.ops_per_sec
        )?;
        writeln!(f, "{:<44} {:>12.1} MiB   goal < 50 MB", "idle RSS of kplane apiserver", self.idle_rss_mib)
    }
}
