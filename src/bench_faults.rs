//! `kplane bench faults`: runs faults against real processes and prints, per fault, the writes
//! acknowledged and lost, the watch events gapped or duplicated, and the longest time without an
//! acknowledged write (goal: 0 lost, 0 gapped, 0 duplicated, unavailability within etcd's
//! leader-election window).
//!
//! - `etcd member in use` and `etcd leader`: a 3-member etcd 3.4 cluster on loopback (etcd from
//!   PATH), `kplane apiserver --etcd-servers` on it, an open-loop load of ConfigMap creates and a
//!   resuming watcher through the API (kube-rs); the member kplane sends its requests to, then the
//!   raft leader, is killed with SIGKILL and restarted.
//! - `embedded kill -9`: `kplane apiserver` on the embedded store, etcd-client puts on its etcd
//!   endpoint, SIGKILL at a random moment, restart; N rounds. Unavailability is the restart time.
//! - `embedded full disk`: `kplane apiserver` with its data dir on a small tmpfs (mounted here:
//!   needs root; unmounted however the row ends), the rest of the tmpfs filled, then 300 kB
//!   ConfigMap creates through the API (kube-rs) until one fails. Reported: the error the client saw
//!   (HTTP code, reason, message), whether reads (list, get) still answer with every acknowledged
//!   write, and, once space is freed, the seconds until a create succeeds again (the unavailability);
//!   lost is counted after a kill -9 and restart.
//! - `controller-manager takeover`: two `kplane up` on one real etcd (etcd from PATH), kill -9 of the
//!   one holding the `kube-controller-manager` Lease; then a Deployment is created through the
//!   other. Reported: seconds until the other holds the Lease, and until the Deployment has its
//!   ReplicaSet (the unavailability), with the lease flags used (`--takeover-lease-duration` etc.).
//!
//! The kplane children log at `error`; `KPLANE_BENCH_FAULTS_LOG` sets their `RUST_LOG` instead.
//!
//! Lost: an acknowledged create that is not stored afterwards with the revision it was
//! acknowledged at. Gapped: an acknowledged create the watcher never saw. Duplicated: an event whose
//! revision is not above the one before it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use store::etcd::{EtcdConfig, EtcdStore};
use store::etcd_process::EtcdCluster;
use store::{ListOptions, Store};

/// An etcd v3 client (kplane's own, on etcd-client) for the embedded store's endpoint.
async fn connect(endpoint: &str) -> Result<EtcdStore> {
    Ok(EtcdStore::connect(EtcdConfig::new(vec![endpoint.to_string()])).await?)
}

/// Flags of `kplane bench faults`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchFaultsArgs {
    /// Rounds of kill -9 of the embedded store.
    #[arg(long, default_value_t = 20)]
    pub crash_rounds: usize,
    /// Creates per second of the open-loop load through the API.
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
    /// Seconds the killed etcd member stays down.
    #[arg(long, default_value_t = 3)]
    pub down: u64,
    /// The fuzz corpus (`fuzz/corpus` of a checkout): every stored input is replayed through its
    /// target's entry point, then mutated copies for `--fuzz-seconds` per target.
    #[arg(long, default_value = "fuzz/corpus")]
    pub fuzz_corpus: PathBuf,
    /// Seconds of random mutations per fuzz target (0: replay the corpus only).
    #[arg(long, default_value_t = 5)]
    pub fuzz_seconds: u64,
    /// Size of the tmpfs the full-disk row runs on (`mount -o size=`).
    #[arg(long, default_value = "40m")]
    pub full_disk_size: String,
    /// `--leader-elect-lease-duration` of the two kplanes of the takeover row (upstream's default).
    #[arg(long, default_value = "15s")]
    pub takeover_lease_duration: String,
    /// `--leader-elect-renew-deadline` of the takeover row.
    #[arg(long, default_value = "10s")]
    pub takeover_renew_deadline: String,
    /// `--leader-elect-retry-period` of the takeover row.
    #[arg(long, default_value = "2s")]
    pub takeover_retry_period: String,
}

/// One fuzz target's figures: stored inputs replayed, mutated inputs run, and the inputs that
/// panicked (0 is the goal).
pub struct FuzzRow {
    target: &'static str,
    replayed: usize,
    mutated: usize,
    panics: usize,
}

/// One fault's figures.
pub struct FaultRow {
    name: String,
    acked: usize,
    failed: usize,
    lost: usize,
    gapped: usize,
    duplicated: usize,
    unavailable: Duration,
    note: String,
}

pub struct Report {
    rows: Vec<FaultRow>,
    fuzz: Vec<FuzzRow>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<28} {:>8} {:>7} {:>5} {:>7} {:>10} {:>12}  note",
            "fault", "acked", "failed", "lost", "gapped", "duplicated", "unavailable"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<28} {:>8} {:>7} {:>5} {:>7} {:>10} {:>11.2}s  {}",
                r.name,
                r.acked,
                r.failed,
                r.lost,
                r.gapped,
                r.duplicated,
                r.unavailable.as_secs_f64(),
                r.note
            )?;
        }
        let lost: usize = self.rows.iter().map(|r| r.lost).sum();
        let gapped: usize = self.rows.iter().map(|r| r.gapped + r.duplicated).sum();
        writeln!(f, "total: {lost} acknowledged writes lost, {gapped} watch events gapped or duplicated")?;
        writeln!(
            f,
            "\n{:<22} {:>8} {:>9} {:>7}  (the network-facing decoders; cargo-fuzz runs: fuzz/README.md)",
            "fuzz target", "corpus", "mutated", "panics"
        )?;
        for r in &self.fuzz {
            writeln!(f, "{:<22} {:>8} {:>9} {:>7}", r.target, r.replayed, r.mutated, r.panics)?;
        }
        let panics: usize = self.fuzz.iter().map(|r| r.panics).sum();
        let runs: usize = self.fuzz.iter().map(|r| r.replayed + r.mutated).sum();
        write!(f, "total: {runs} fuzz inputs run, {panics} panicked")
    }
}

/// A `kplane` child process, killed on drop.
struct Kplane {
    child: Child,
    kubeconfig: Option<PathBuf>,
}

impl Drop for Kplane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kplane {
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kplane apiserver` with `args` and waits for its ready line.
fn start_kplane(exe: &Path, data_dir: &Path, args: &[&str]) -> Result<Kplane> {
    start_kplane_cmd(exe, "apiserver", data_dir, args)
}

/// Starts `kplane <cmd>` (`apiserver` or `up`) with `args` and waits for its ready line.
fn start_kplane_cmd(exe: &Path, cmd: &str, data_dir: &Path, args: &[&str]) -> Result<Kplane> {
    let mut child = Command::new(exe)
        .args([cmd, "--secure-port", "0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", std::env::var("KPLANE_BENCH_FAULTS_LOG").unwrap_or_else(|_| "error".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut kubeconfig = None;
    let mut ready = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
            kubeconfig = Some(PathBuf::from(path));
        }
        if line == "kplane: ready" {
            ready = true;
            break;
        }
    }
    if !ready {
        let _ = child.kill();
        bail!("kplane {cmd} did not become ready");
    }
    Ok(Kplane { child, kubeconfig })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn rv(c: &ConfigMap) -> i64 {
    c.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[derive(Default)]
struct Load {
    acked: Vec<(String, i64)>,
    failed: usize,
    successes: Vec<Instant>,
}

#[derive(Default)]
struct Watched {
    events: Vec<(String, i64)>,
    /// Why the watch had to be re-established, each time.
    resumes: Vec<String>,
}

/// What [`load_and_watch`] started: the load's and the watcher's records, and their tasks (the
/// watcher's last).
type Running = (Arc<Mutex<Load>>, Arc<Mutex<Watched>>, Vec<tokio::task::JoinHandle<()>>);

/// An open-loop create load until `stop` and a resuming watcher until `stop_watch`, through the API.
fn load_and_watch(
    client: kube::Client,
    rate: u32,
    label: &str,
    from_rv: String,
    stop: Arc<AtomicBool>,
    stop_watch: Arc<AtomicBool>,
) -> Running {
    let load: Arc<Mutex<Load>> = Arc::default();
    let watched: Arc<Mutex<Watched>> = Arc::default();
    let api = Api::<ConfigMap>::namespaced(client, "default");
    let mut tasks = Vec::new();
    {
        let (api, load, stop, label) = (api.clone(), load.clone(), stop.clone(), label.to_string());
        tasks.push(tokio::spawn(async move {
            let mut inflight = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let name = format!("{label}-{i:06}");
                i += 1;
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(name.clone());
                cm.metadata.labels = Some([("bench-faults".to_string(), label.clone())].into());
                let (api, load) = (api.clone(), load.clone());
                inflight.spawn(async move {
                    let res =
                        tokio::time::timeout(Duration::from_secs(30), api.create(&PostParams::default(), &cm))
                            .await;
                    let mut l = load.lock().unwrap_or_else(|e| e.into_inner());
                    match res {
                        Ok(Ok(created)) => {
                            l.acked.push((name, rv(&created)));
                            l.successes.push(Instant::now());
                        }
                        _ => l.failed += 1,
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        }));
    }
    {
        let (watched, stop, selector) = (watched.clone(), stop_watch, format!("bench-faults={label}"));
        tasks.push(tokio::spawn(async move {
            let mut last = from_rv;
            while !stop.load(Ordering::Relaxed) {
                let wp = WatchParams::default().labels(&selector).timeout(60);
                let mut stream = match api.watch(&wp, &last).await {
                    Ok(s) => s.boxed(),
                    Err(e) => {
                        watched.lock().unwrap_or_else(|e| e.into_inner()).resumes.push(format!("watch: {e}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                loop {
                    let next = tokio::select! {
                        n = stream.next() => n,
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {
                            if stop.load(Ordering::Relaxed) { return } else { continue }
                        }
                    };
                    match next {
                        Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o))) => {
                            let r = rv(&o);
                            last = r.to_string();
                            let name = o.metadata.name.unwrap_or_default();
                            watched.lock().unwrap_or_else(|e| e.into_inner()).events.push((name, r));
                        }
                        Some(Ok(WatchEvent::Bookmark(b))) => last = b.metadata.resource_version,
                        other => {
                            let why = match other {
                                None => "ended".to_string(),
                                Some(Ok(WatchEvent::Error(e))) => format!("{} {}", e.code, e.message),
                                Some(Err(e)) => e.to_string(),
                                Some(Ok(_)) => "unexpected".to_string(),
                            };
                            watched.lock().unwrap_or_else(|e| e.into_inner()).resumes.push(why);
                            break;
                        }
                    }
                }
            }
        }));
    }
    (load, watched, tasks)
}

/// The longest stretch in [from, to] without an acknowledged write.
fn longest_outage(successes: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = successes.iter().copied().filter(|t| *t >= from && *t <= to).collect();
    times.sort();
    let mut last = from;
    let mut worst = Duration::ZERO;
    for t in times {
        worst = worst.max(t - last);
        last = t;
    }
    worst.max(to - last)
}

/// One etcd member fault: load and watch through `client`, kill `victim` (or the leader when None),
/// keep it down `down`, restart it, settle, then check.
async fn etcd_fault(
    name: &str,
    etcd: &mut EtcdCluster,
    client: &kube::Client,
    victim: Option<usize>,
    args: &BenchFaultsArgs,
) -> Result<FaultRow> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let label = name.replace(' ', "-");
    let from_rv =
        api.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let (load, watched, mut tasks) =
        load_and_watch(client.clone(), args.rate, &label, from_rv, stop.clone(), stop_watch.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = match victim {
        Some(v) => v,
        None => {
            let mut leader = None;
            for _ in 0..50 {
                leader = etcd.leader().await;
                if leader.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            leader.context("the etcd cluster has no leader")?
        }
    };
    let killed = Instant::now();
    etcd.kill9(victim)?;
    tokio::time::sleep(Duration::from_secs(args.down)).await;
    etcd.restart(victim).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let watcher = tasks.pop();
    for t in tasks {
        let _ = t.await;
    }
    // The watcher may trail the load: give it until it has every acknowledged revision (at most
    // 30 s), and report how long that took after the last answer.
    let max_acked =
        load.lock().unwrap_or_else(|e| e.into_inner()).acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let load_done = Instant::now();
    while Instant::now() < load_done + Duration::from_secs(30) {
        let seen =
            watched.lock().unwrap_or_else(|e| e.into_inner()).events.iter().map(|(_, r)| *r).max().unwrap_or(0);
        if seen >= max_acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trail = load_done.elapsed();
    stop_watch.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let load = std::mem::take(&mut *load.lock().unwrap_or_else(|e| e.into_inner()));
    let watched = std::mem::take(&mut *watched.lock().unwrap_or_else(|e| e.into_inner()));
    let listed = api.list(&ListParams::default().labels(&format!("bench-faults={label}"))).await?;
    let stored: BTreeMap<String, i64> =
        listed.items.iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), rv(c))).collect();
    let lost = load.acked.iter().filter(|(n, r)| stored.get(n) != Some(r)).count();
    let seen: BTreeSet<(&str, i64)> = watched.events.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    let gapped = load.acked.iter().filter(|(n, r)| !seen.contains(&(n.as_str(), *r))).count();
    let duplicated = watched.events.windows(2).filter(|w| w[1].1 <= w[0].1).count();
    let first_gap = load.acked.iter().find(|(n, r)| !seen.contains(&(n.as_str(), *r)));
    if let Some((n, r)) = first_gap {
        let at: Vec<i64> = watched.events.iter().filter(|(m, _)| m == n).map(|(_, r)| *r).collect();
        let max_seen = watched.events.iter().map(|(_, r)| *r).max().unwrap_or(0);
        let max_acked = load.acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
        eprintln!(
            "bench faults: {name}: first gap {n} at {r} (seen at {at:?}); watch saw up to {max_seen}, \
             acked up to {max_acked}; resumes: {:?}",
            watched.resumes
        );
    }
    Ok(FaultRow {
        name: name.into(),
        acked: load.acked.len(),
        failed: load.failed,
        lost,
        gapped,
        duplicated,
        unavailable: longest_outage(&load.successes, killed, end),
        note: format!(
            "member m{victim} down {} s; watch caught up {:.2} s after the load",
            args.down,
            trail.as_secs_f64()
        ),
    })
}

/// kill -9 of `kplane apiserver` on the embedded store during etcd-client puts, `rounds` times.
async fn embedded_crashes(exe: &Path, rounds: usize) -> Result<FaultRow> {
    let dir = tempfile::Builder::new().prefix("kplane-bench-faults-").tempdir()?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let endpoint = format!("http://{listen}");
    let mut acked_all: Vec<(String, i64)> = Vec::new();
    let mut failed = 0;
    let mut back = 0;
    let mut worst_restart = Duration::ZERO;
    let mut last_rev = 0;
    let mut kp = start_kplane(exe, dir.path(), &["--etcd-listen", &listen])?;
    for round in 0..rounds {
        let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..4 {
            let (endpoint, acked) = (endpoint.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                let Ok(c) = EtcdStore::connect(EtcdConfig::new(vec![endpoint])).await else { return 0 };
                for i in 0.. {
                    let key = format!("/registry/bench-faults/{round:03}/{w}/{i:06}");
                    match c.create(&key, vec![b'v'; 200], 0).await {
                        Ok(kv) => acked.lock().unwrap_or_else(|e| e.into_inner()).push((key, kv.mod_revision)),
                        Err(_) => return 1,
                    }
                }
                0
            }));
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        tokio::time::sleep(Duration::from_millis(50 + u64::from(nanos % 750))).await;
        kp.kill9();
        let killed = Instant::now();
        for w in writers {
            failed += w.await.unwrap_or(0);
        }
        kp = start_kplane(exe, dir.path(), &["--etcd-listen", &listen])?;
        worst_restart = worst_restart.max(killed.elapsed());
        let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
        last_rev = last_rev.max(acked.iter().map(|(_, r)| *r).max().unwrap_or(0));
        acked_all.extend(acked);
        let now = connect(&endpoint).await?.current_revision().await?;
        if now < last_rev {
            back += 1;
        }
    }
    let listed = connect(&endpoint)
        .await?
        .list(ListOptions { prefix: "/registry/bench-faults/".into(), ..Default::default() })
        .await?;
    let stored: BTreeMap<String, i64> = listed.items.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect();
    let lost = acked_all.iter().filter(|(k, r)| stored.get(k) != Some(r)).count();
    drop(kp);
    Ok(FaultRow {
        name: "embedded kill -9".into(),
        acked: acked_all.len(),
        failed,
        lost,
        gapped: 0,
        duplicated: 0,
        unavailable: worst_restart,
        note: format!(
            "{rounds} rounds; failed = writes in flight at the kill; revision went back {back} times; unavailable = worst kill-to-ready"
        ),
    })
}

/// A tmpfs of `size` on a fresh temp dir; unmounted (lazily if still busy) and removed on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("kplane-bench-fulldisk-").tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!("mounting a {size} tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.0.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

/// Free bytes of the file system holding `dir` (`df`).
fn free_bytes(dir: &Path) -> Result<u64> {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).context("df printed no free bytes")
}

/// Fills the file system holding `dir` with one file, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) -> Result<PathBuf> {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut left = free_bytes(dir)?.saturating_sub(leave);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&filler)?);
    let chunk = vec![0xa5u8; 64 * 1024];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if w.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = w.flush();
    Ok(filler)
}

/// A ConfigMap `name` of about `size` bytes, labelled for the row.
fn big_configmap(name: &str, size: usize) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some([("bench-faults".to_string(), "full-disk".to_string())].into());
    cm.data = Some([("v".to_string(), "x".repeat(size))].into());
    cm
}

/// How a failed request reached the client: the Status's code, reason and message.
fn described(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        e => e.to_string(),
    }
}

/// A full disk under the embedded store (see the module doc).
async fn embedded_full_disk(exe: &Path, size: &str) -> Result<FaultRow> {
    // Declared first, dropped last: the kplane process goes before the unmount.
    let fs = Tmpfs::mount(size)?;
    let data = fs.0.path().join("data");
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut kp = start_kplane(exe, &data, &["--etcd-listen", &listen])?;
    let kubeconfig = kp.kubeconfig.clone().context("no kubeconfig line")?;
    let client = crate::components::client_from_kubeconfig(&kubeconfig, "kplane-bench-faults").await?;
    let api = Api::<ConfigMap>::namespaced(client, "default");
    let filler = fill(fs.0.path(), 2 << 20)?;

    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut failed = 0;
    let mut refusal = None;
    for i in 0..200 {
        match api.create(&PostParams::default(), &big_configmap(&format!("big-{i:03}"), 300_000)).await {
            Ok(c) => acked.push((c.metadata.name.clone().unwrap_or_default(), rv(&c))),
            Err(e) => {
                failed += 1;
                refusal = Some(described(&e));
                break;
            }
        }
    }
    let refusal = refusal.context("200 creates of 300 kB all succeeded: the disk never filled")?;
    let alive = kp.child.try_wait()?.is_none();
    // Still full: a list and a get answer, with every acknowledged create.
    let listed = api.list(&ListParams::default().labels("bench-faults=full-disk")).await;
    let reads_ok = match (&listed, acked.first()) {
        (Ok(l), first) => {
            let names: BTreeSet<String> = l.items.iter().filter_map(|c| c.metadata.name.clone()).collect();
            let got = match first {
                Some((n, _)) => api.get(n).await.is_ok(),
                None => true,
            };
            got && acked.iter().all(|(n, _)| names.contains(n))
        }
        (Err(_), _) => false,
    };
    // Space freed: creates succeed again.
    std::fs::remove_file(&filler)?;
    let freed = Instant::now();
    let mut resumed = None;
    for i in 0..600 {
        match api.create(&PostParams::default(), &big_configmap(&format!("after-{i:03}"), 1000)).await {
            Ok(c) => {
                acked.push((c.metadata.name.clone().unwrap_or_default(), rv(&c)));
                resumed = Some(freed.elapsed());
                break;
            }
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Every acknowledged write survives a kill -9 and restart.
    kp.kill9();
    let kp = start_kplane(exe, &data, &["--etcd-listen", &listen])?;
    let kubeconfig = kp.kubeconfig.clone().context("no kubeconfig line")?;
    let client = crate::components::client_from_kubeconfig(&kubeconfig, "kplane-bench-faults").await?;
    let api = Api::<ConfigMap>::namespaced(client, "default");
    let listed = api.list(&ListParams::default().labels("bench-faults=full-disk")).await?;
    let stored: BTreeMap<String, i64> =
        listed.items.iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), rv(c))).collect();
    let lost = acked.iter().filter(|(n, r)| stored.get(n) != Some(r)).count();
    drop(kp);
    drop(fs);
    Ok(FaultRow {
        name: "embedded full disk".into(),
        acked: acked.len(),
        failed,
        lost,
        gapped: 0,
        duplicated: 0,
        unavailable: resumed.unwrap_or(Duration::from_secs(60)),
        note: format!(
            "{size} tmpfs; writes refused with \"{refusal}\"; {}; reads while full {}; writes {} after space was freed (unavailable = free to first write)",
            if alive { "process up" } else { "PROCESS EXITED" },
            if reads_ok { "ok" } else { "FAILED" },
            if resumed.is_some() { "resumed" } else { "DID NOT RESUME" },
        ),
    })
}

/// The holder of the `kube-controller-manager` Lease, if any.
async fn lease_holder(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let lease =
        Api::<Lease>::namespaced(client.clone(), "kube-system").get_opt("kube-controller-manager").await;
    lease.ok().flatten()?.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits (up to `secs`) for `f` to give a value.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Controller-manager takeover between two kplanes on one etcd (see the module doc).
async fn controller_manager_takeover(exe: &Path, args: &BenchFaultsArgs) -> Result<FaultRow> {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    let etcd = store::etcd_process::EtcdProcess::start().await.context("starting etcd (etcd from PATH)")?;
    // One data dir for both: API servers of one cluster share its CA and service-account key.
    let dir = tempfile::Builder::new().prefix("kplane-bench-faults-").tempdir()?;
    let endpoint = etcd.endpoint();
    let flags = [
        "--etcd-servers",
        &endpoint,
        "--no-etcd-listen",
        "--nodes",
        "0",
        "--no-networking",
        "--no-xray",
        "--service-cluster-ip-range",
        "127.118.0.0/16",
        "--cluster-cidr",
        "127.198.0.0/16",
        "--leader-elect-lease-duration",
        &args.takeover_lease_duration,
        "--leader-elect-renew-deadline",
        &args.takeover_renew_deadline,
        "--leader-elect-retry-period",
        &args.takeover_retry_period,
    ];
    let mut a = start_kplane_cmd(exe, "up", dir.path(), &flags)?;
    // Each writes the data dir's kubeconfig with its own address: read each as it starts.
    let a_client = crate::components::client_from_kubeconfig(
        &a.kubeconfig.clone().context("no kubeconfig line")?,
        "kplane-bench-faults",
    )
    .await?;
    // `a` leads before `b` starts, so the process to kill is known.
    let holder = wait_for(60, || lease_holder(&a_client)).await.context("no controller-manager leader")?;
    let b = start_kplane_cmd(exe, "up", dir.path(), &flags)?;
    let client = crate::components::client_from_kubeconfig(
        &b.kubeconfig.clone().context("no kubeconfig line")?,
        "kplane-bench-faults",
    )
    .await?;
    // Let `b` campaign (and lose) once, as a standby does.
    tokio::time::sleep(Duration::from_secs(1)).await;

    a.kill9();
    let killed = Instant::now();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "after-takeover"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "after-takeover"}},
            "template": {
                "metadata": {"labels": {"app": "after-takeover"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}
            }
        }
    }))?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
    let created = deployments.create(&PostParams::default(), &deployment).await.map(|_| 1).unwrap_or(0);
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "default");
    let limit = 120;
    let (lease, rs) = tokio::join!(
        async {
            wait_for(limit, || async {
                lease_holder(&client).await.filter(|h| *h != holder).map(|_| killed.elapsed())
            })
            .await
        },
        async {
            wait_for(limit, || async {
                let l = rss.list(&ListParams::default().labels("app=after-takeover")).await.ok()?;
                (!l.items.is_empty()).then(|| killed.elapsed())
            })
            .await
        },
    );
    // The Deployment acknowledged before is still there.
    let kept = created == 1 && deployments.get_opt("after-takeover").await.ok().flatten().is_some();
    drop(b);
    drop(etcd);
    let secs = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    Ok(FaultRow {
        name: "controller-manager takeover".into(),
        acked: created,
        failed: 1 - created,
        lost: usize::from(created == 1 && !kept),
        gapped: 0,
        duplicated: 0,
        unavailable: rs.or(lease).unwrap_or(Duration::from_secs(limit)),
        note: format!(
            "kill -9 of the leader; the other held the lease after {}, the new Deployment's ReplicaSet after {} (lease {}, renew {}, retry {})",
            secs(lease),
            secs(rs),
            args.takeover_lease_duration,
            args.takeover_renew_deadline,
            args.takeover_retry_period
        ),
    })
}

pub async fn run(args: BenchFaultsArgs, exe: PathBuf) -> Result<Report> {
    let mut rows = Vec::new();
    {
        let mut etcd = EtcdCluster::start(3).await.context("starting a 3-member etcd (etcd from PATH)")?;
        let dir = tempfile::Builder::new().prefix("kplane-bench-faults-").tempdir()?;
        let servers = etcd.endpoints().join(",");
        let kp = start_kplane(&exe, dir.path(), &["--etcd-servers", &servers, "--no-etcd-listen"])?;
        let kubeconfig = kp.kubeconfig.clone().context("no kubeconfig line")?;
        let client = crate::components::client_from_kubeconfig(&kubeconfig, "kplane-bench-faults").await?;
        // kplane sends its requests to the first listed member until it fails.
        rows.push(etcd_fault("etcd member in use", &mut etcd, &client, Some(0), &args).await?);
        rows.push(etcd_fault("etcd leader", &mut etcd, &client, None, &args).await?);
        drop(kp);
    }
    rows.push(embedded_crashes(&exe, args.crash_rounds).await?);
    rows.push(embedded_full_disk(&exe, &args.full_disk_size).await?);
    rows.push(controller_manager_takeover(&exe, &args).await?);
    let (corpus, seconds) = (args.fuzz_corpus.clone(), Duration::from_secs(args.fuzz_seconds));
    let fuzz = tokio::task::spawn_blocking(move || fuzz_pass(&corpus, seconds)).await??;
    Ok(Report { rows, fuzz })
}

/// Every fuzz entry point of the library crates, by target name (= its corpus directory).
fn fuzz_targets() -> Vec<(&'static str, store::fuzzing::Entry)> {
    [
        api_types::fuzzing::TARGETS,
        apiserver::fuzzing::TARGETS,
        store::fuzzing::TARGETS,
        networking::fuzzing::TARGETS,
    ]
    .concat()
}

/// Replays each target's corpus, then runs randomly mutated copies of it (byte flips, inserts,
/// deletions, duplicated runs) for `seconds`, counting the inputs that panic. Not coverage-guided
/// (that is cargo-fuzz's job); a quick check that the stored inputs and their neighbours are safe.
fn fuzz_pass(corpus: &Path, seconds: Duration) -> Result<Vec<FuzzRow>> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut rows = Vec::new();
    // The panics are counted, not printed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = (|| {
        for (target, entry) in fuzz_targets() {
            let dir = corpus.join(target);
            let mut inputs = Vec::new();
            for f in
                std::fs::read_dir(&dir).with_context(|| format!("reading the fuzz corpus {}", dir.display()))?
            {
                inputs.push(std::fs::read(f?.path())?);
            }
            anyhow::ensure!(!inputs.is_empty(), "{} holds no input", dir.display());
            let run = |data: &[u8]| std::panic::catch_unwind(|| entry(data)).is_err();
            let mut row = FuzzRow { target, replayed: 0, mutated: 0, panics: 0 };
            for data in &inputs {
                row.replayed += 1;
                row.panics += usize::from(run(data));
            }
            let until = Instant::now() + seconds;
            while Instant::now() < until {
                let mut data = inputs[rng.random_range(0..inputs.len())].clone();
                for _ in 0..rng.random_range(1..=4) {
                    let at = if data.is_empty() { 0 } else { rng.random_range(0..data.len()) };
                    match rng.random_range(0..4) {
                        0 if !data.is_empty() => data[at] ^= 1 << rng.random_range(0..8),
                        1 => data.insert(at, rng.random()),
                        2 if !data.is_empty() => drop(data.remove(at)),
                        _ => {
                            let end = (at + rng.random_range(1..=16)).min(data.len());
                            let run: Vec<u8> = data[at..end].to_vec();
                            data.splice(at..at, run);
                        }
                    }
                }
                row.mutated += 1;
                row.panics += usize::from(run(&data));
            }
            rows.push(row);
        }
        Ok(rows)
    })();
    std::panic::set_hook(hook);
    result
}
