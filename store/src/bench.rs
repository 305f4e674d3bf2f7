//! `kplane bench store`: the embedded store measured beside a real etcd in the same run.
//!
//! Two views, each with etcd as the anchor:
//! - **Store API**: the [`Store`] trait, as the API server uses it. The embedded store is called
//!   in-process; etcd through [`EtcdStore`] over gRPC. Writes are conditional creates on both.
//! - **etcd wire**: the same raw etcd-client calls (plain puts and gets) against etcd and against the
//!   embedded store's own etcd endpoint, so both pay for gRPC.
//!
//! Every write is durable on both sides: the embedded store fsyncs each group commit, etcd its WAL.
//! The anchor etcd is started from PATH in a temporary directory unless `--etcd-servers` names one.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::embedded::{EmbeddedConfig, EmbeddedStore};
use crate::etcd::{EtcdConfig, EtcdStore};
use crate::etcd_process::EtcdProcess;
use crate::{DynStore, Error, Result};

/// Flags of `kplane bench store`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measure against this etcd (a client URL) instead of starting one from PATH.
    #[arg(long)]
    pub etcd_servers: Option<String>,
    /// Puts per target.
    #[arg(long, default_value_t = 20_000)]
    pub puts: usize,
    /// Gets per target.
    #[arg(long, default_value_t = 50_000)]
    pub gets: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Watchers on one prefix for the fan-out test.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Writes each watcher must receive.
    #[arg(long, default_value_t = 1_000)]
    pub watch_events: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Directory for the embedded store (default: a temporary one, on the same disk as etcd's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// One measured figure.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub args: BenchArgs,
    pub etcd_version: String,
    /// (label, embedded, etcd)
    pub rows: Vec<(&'static str, Figure, Figure)>,
}

fn bench_err(e: impl fmt::Display) -> Error {
    Error::Internal(format!("bench: {e}"))
}

/// Runs the whole benchmark.
pub async fn run(args: BenchArgs) -> Result<Report> {
    let mut _etcd_guard = None;
    let etcd_url = match &args.etcd_servers {
        Some(url) => url.clone(),
        None => {
            let p = EtcdProcess::start().await.map_err(bench_err)?;
            let url = p.endpoint();
            _etcd_guard = Some(p);
            url
        }
    };
    let tmp = tempfile::Builder::new().prefix("kplane-bench-").tempdir().map_err(bench_err)?;
    let dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().join("embedded"));
    let mut cfg = EmbeddedConfig::new(&dir);
    cfg.compaction_interval = Duration::ZERO;
    let embedded = EmbeddedStore::open(cfg).await?;
    let etcd: DynStore = Arc::new(EtcdStore::connect(EtcdConfig::new(vec![etcd_url.clone()])).await?);
    let emb: DynStore = Arc::new(embedded.clone());

    // The embedded store's etcd endpoint, on a free loopback port, for the wire comparison.
    let listener = crate::server::bind("127.0.0.1:0".parse().map_err(bench_err)?).await?;
    let emb_url = format!("http://{}", listener.local_addr().map_err(bench_err)?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(embedded.clone(), listener, async {
        let _ = stop_rx.await;
    }));

    let etcd_version = etcd_version(&etcd_url).await;
    let mut rows = Vec::new();
    let value = vec![b'v'; args.value_size];

    let (e, d) =
        (store_puts(&emb, &args, &value, "emb").await?, store_puts(&etcd, &args, &value, "etcd").await?);
    rows.push(("Store API: create/s, concurrency C", e, d));
    let (e, d) = (store_gets(&emb, &args, "emb").await?, store_gets(&etcd, &args, "etcd").await?);
    rows.push(("Store API: get/s, concurrency C", e, d));
    let (e, d) = (watch_fanout(&emb, &args, "emb").await?, watch_fanout(&etcd, &args, "etcd").await?);
    rows.push(("Store API: watch events delivered/s (W watchers)", e, d));
    let (e, d) = (wire_puts(&emb_url, &args, &value).await?, wire_puts(&etcd_url, &args, &value).await?);
    rows.push(("etcd wire: put/s, raw etcd-client", e, d));
    let (e, d) = (wire_gets(&emb_url, &args).await?, wire_gets(&etcd_url, &args).await?);
    rows.push(("etcd wire: get/s, raw etcd-client", e, d));

    let _ = stop_tx.send(());
    let _ = server.await;
    embedded.shutdown().await;
    Ok(Report { args, etcd_version, rows })
}

async fn etcd_version(url: &str) -> String {
    match etcd_client::Client::connect([url], None).await {
        Ok(mut c) => match c.status().await {
            Ok(s) => s.version().to_string(),
            Err(e) => format!("unknown ({e})"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// Microseconds, up to a minute, 3 significant digits. Shared with `apiserver::bench`.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(bench_err)
}

pub fn figure(ops: usize, elapsed: Duration, hist: &Histogram<u64>) -> Figure {
    Figure {
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// Runs `total` operations from `concurrency` tasks, timing each; `op(i)` does operation i.
pub async fn drive<F, Fut>(total: usize, concurrency: usize, op: F) -> Result<Figure>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let (elapsed, hist) = drive_timed(0..total, concurrency, op).await?;
    Ok(figure(total, elapsed, &hist))
}

/// [`drive`] over the indexes `range`, returning the wall time and the latency histogram (in µs),
/// so that a benchmark run in interleaved rounds can add its rounds up.
pub async fn drive_timed<F, Fut>(
    range: std::ops::Range<usize>,
    concurrency: usize,
    op: F,
) -> Result<(Duration, Histogram<u64>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, Error>(hist);
                }
                let t = Instant::now();
                op(i).await?;
                let _ = hist.record(t.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut all = histogram()?;
    for t in tasks {
        let h = t.await.map_err(bench_err)??;
        let _ = all.add(h);
    }
    Ok((start.elapsed(), all))
}

fn key(ns: &str, i: usize) -> String {
    format!("/registry/bench/{ns}/pods/default/pod-{i:08}")
}

async fn store_puts(store: &DynStore, args: &BenchArgs, value: &[u8], ns: &'static str) -> Result<Figure> {
    let (store, value) = (store.clone(), value.to_vec());
    drive(args.puts, args.concurrency, move |i| {
        let (store, value) = (store.clone(), value.clone());
        async move { store.create(&key(ns, i), value, 0).await.map(|_| ()) }
    })
    .await
}

async fn store_gets(store: &DynStore, args: &BenchArgs, ns: &'static str) -> Result<Figure> {
    let (store, n) = (store.clone(), args.puts.max(1));
    drive(args.gets, args.concurrency, move |i| {
        let store = store.clone();
        // A fixed stride walks the keys in a scattered order.
        async move { store.get(&key(ns, (i * 7919) % n)).await.map(|_| ()) }
    })
    .await
}

/// W watchers on one prefix; E writes at concurrency C; each value carries its send time, so every
/// watcher measures each event's delivery latency. The rate is events delivered to all watchers.
async fn watch_fanout(store: &DynStore, args: &BenchArgs, ns: &'static str) -> Result<Figure> {
    let prefix = format!("/registry/bench/{ns}/watch/");
    let from = store.current_revision().await? + 1;
    let epoch = Instant::now();
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let mut w = store.watch(&prefix, from).await?;
        let want = args.watch_events;
        watchers.push(tokio::spawn(async move {
            let mut hist = histogram()?;
            for _ in 0..want {
                let ev = match tokio::time::timeout(Duration::from_secs(60), w.next()).await {
                    Ok(Some(Ok(ev))) => ev,
                    Ok(Some(Err(e))) => return Err(e),
                    Ok(None) | Err(_) => return Err(bench_err("a watcher stopped receiving")),
                };
                let sent: u64 = std::str::from_utf8(&ev.kv.value[..20.min(ev.kv.value.len())])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                let now = epoch.elapsed().as_micros() as u64;
                let _ = hist.record(now.saturating_sub(sent).max(1));
            }
            Ok(hist)
        }));
    }
    let start = Instant::now();
    let (store2, prefix2, size) = (store.clone(), prefix.clone(), args.value_size.max(20));
    drive(args.watch_events, args.concurrency, move |i| {
        let (store, key) = (store2.clone(), format!("{prefix2}{i:08}"));
        let mut value = format!("{:>20}", epoch.elapsed().as_micros()).into_bytes();
        value.resize(size, b'v');
        async move { store.create(&key, value, 0).await.map(|_| ()) }
    })
    .await?;
    let mut all = histogram()?;
    for w in watchers {
        let _ = all.add(w.await.map_err(bench_err)??);
    }
    Ok(figure(args.watch_events * args.watchers, start.elapsed(), &all))
}

async fn wire_puts(url: &str, args: &BenchArgs, value: &[u8]) -> Result<Figure> {
    let client = etcd_client::Client::connect([url], None).await.map_err(bench_err)?;
    let value = value.to_vec();
    drive(args.puts, args.concurrency, move |i| {
        let (mut kv, value) = (client.kv_client(), value.clone());
        async move { kv.put(key("wire", i), value, None).await.map(|_| ()).map_err(bench_err) }
    })
    .await
}

async fn wire_gets(url: &str, args: &BenchArgs) -> Result<Figure> {
    let client = etcd_client::Client::connect([url], None).await.map_err(bench_err)?;
    let n = args.puts.max(1);
    drive(args.gets, args.concurrency, move |i| {
        let mut kv = client.kv_client();
        async move { kv.get(key("wire", (i * 7919) % n), None).await.map(|_| ()).map_err(bench_err) }
    })
    .await
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        writeln!(
            f,
            "kplane bench store: {} puts, {} gets, C={}, W={} watchers x {} events, {} B values; anchor etcd {}",
            a.puts, a.gets, a.concurrency, a.watchers, a.watch_events, a.value_size, self.etcd_version
        )?;
        writeln!(
            f,
            "{:<50} {:>12} {:>12} {:>7}   {:>17} {:>17}",
            "", "embedded/s", "etcd/s", "ratio", "p50/p99 ms emb", "p50/p99 ms etcd"
        )?;
        for (label, e, d) in &self.rows {
            let ratio = if d.ops_per_sec > 0.0 { e.ops_per_sec / d.ops_per_sec } else { 0.0 };
            writeln!(
                f,
                "{label:<50} {:>12.0} {:>12.0} {:>6.2}x   {:>8.2}/{:<8.2} {:>8.2}/{:<8.2}",
                e.ops_per_sec, d.ops_per_sec, ratio, e.p50_ms, e.p99_ms, d.p50_ms, d.p99_ms
            )?;
        }
        Ok(())
    }
}
