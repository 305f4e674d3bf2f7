//! Flags (upstream names where upstream has them) and the wiring of each subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::etcd::{EtcdConfig, EtcdStore};
use store::DynStore;

#[derive(Parser, Debug)]
#[command(name = "kplane", version, about = "A single-binary mini Kubernetes control plane")]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole cluster: the store (embedded unless --etcd-servers) and its etcd endpoint, the
    /// API server, the controller-manager, the scheduler and simulated nodes.
    Up(Box<UpArgs>),
    /// Run the API server alone (with its store), without the other components.
    Apiserver(Box<ServerArgs>),
    /// Run the controller-manager alone against a cluster.
    ControllerManager(crate::components::ControllerManagerCmd),
    /// Run the scheduler alone against a cluster.
    Scheduler(crate::components::SchedulerCmd),
    /// Run one simulated node (a kubelet) against a cluster.
    Node(crate::components::NodeCmd),
    /// Run the service proxy alone against a cluster.
    Proxy(crate::components::ProxyCmd),
    /// Run the cluster DNS alone against a cluster.
    Dns(crate::components::DnsCmd),
    /// Run the ingress controller alone against a cluster.
    Ingress(crate::components::IngressCmd),
    /// See where a request goes through the cluster, and where every object lives in the store.
    Xray {
        #[command(subcommand)]
        what: crate::xray_cmd::XrayCommand,
    },
    /// Write a client-certificate kubeconfig signed by the cluster CA (e.g. for a split node:
    /// --user system:node:NAME --group system:nodes).
    Kubeconfig(crate::kubeconfig::KubeconfigCmd),
    /// Restore or inspect a backup of the embedded store taken with `etcdctl snapshot save`.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotCommand,
    },
    /// Benchmarks, each measured beside its anchor in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Store puts, gets and watch fan-out: the embedded store beside a real etcd.
    Store(store::bench::BenchArgs),
    /// The API over HTTP on a real etcd: creates, GETs, a big LIST, watch fan-out, idle memory.
    Api(apiserver::bench::BenchApiArgs),
    /// A big Deployment on simulated nodes: time to available pods and Endpoints, memory per pod.
    Cluster(crate::bench::BenchClusterArgs),
    /// HTTP to a simulated pod: direct, through the ClusterIP proxy, through the ingress.
    Net(crate::bench::BenchNetArgs),
    /// Faults: etcd members killed under load, kill -9 of the embedded store; writes lost, watch
    /// events gapped or duplicated, seconds of unavailability per fault.
    Faults(crate::bench_faults::BenchFaultsArgs),
}

/// `kplane snapshot`, the counterpart of etcdutl's for the embedded store's snapshots.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Restore a snapshot into a data directory that holds no store yet (then start kplane on it).
    Restore {
        /// The file `etcdctl snapshot save` wrote.
        file: PathBuf,
        /// The data directory to restore into (created if absent; must not hold a store).
        #[arg(long, default_value = "./kplane-data")]
        data_dir: PathBuf,
    },
    /// Check a snapshot whole and print its hash, revision, keys and size.
    Status {
        file: PathBuf,
        /// Output format: simple or json.
        #[arg(short = 'w', long = "write-out", default_value = "simple", value_parser = ["simple", "json"])]
        write_out: String,
    },
}

/// Where the cluster's state lives.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory for the embedded store (and, later, certificates and kubeconfig).
    #[arg(long, default_value = "./kplane-data")]
    pub data_dir: PathBuf,
    /// Use these real etcd servers instead of the embedded store (comma-separated URLs).
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// CA bundle to verify the etcd servers.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for the etcd servers.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for the etcd servers.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// How often history is compacted, to the revision seen one interval before, as upstream
    /// kube-apiserver does (Go duration; 0 turns compaction off). For the embedded store as well as
    /// for --etcd-servers, where several API servers compact once per interval between them.
    #[arg(long, default_value = "5m0s", value_parser = parse_go_duration)]
    pub etcd_compaction_interval: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub components: crate::components::UpComponents,
}

/// The store and the API server.
#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of the embedded store's etcd v3 endpoint (loopback only).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub etcd_listen: SocketAddr,
    /// Do not serve the embedded store's etcd endpoint.
    #[arg(long)]
    pub no_etcd_listen: bool,
    /// Serve the embedded store's etcd endpoint over TLS with this certificate (PEM).
    #[arg(long, requires = "etcd_listen_keyfile")]
    pub etcd_listen_certfile: Option<PathBuf>,
    /// The key of --etcd-listen-certfile (PEM).
    #[arg(long, requires = "etcd_listen_certfile")]
    pub etcd_listen_keyfile: Option<PathBuf>,
    /// Require etcd clients to present a certificate signed by this CA (PEM), as etcd's
    /// --trusted-ca-file with --client-cert-auth.
    #[arg(long, requires = "etcd_listen_certfile")]
    pub etcd_listen_cafile: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The API server's flags, with upstream kube-apiserver's names.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address the API server listens on (loopback unless you mean otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: std::net::IpAddr,
    /// The API server's port (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Range for Service ClusterIPs: loopback by default, so the proxies can bind them with no setup.
    #[arg(long, default_value = "127.96.0.0/12")]
    pub service_cluster_ip_range: apiserver::Cidr,
    /// Range for NodePorts.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: (i64, i64),
    /// Events the watch cache keeps per resource; 0 serves every watch from the store.
    #[arg(long, default_value_t = 8192)]
    pub default_watch_cache_size: usize,
    /// How long Events are kept, as a Go duration (1h0m0s, 90s, ...); 0 keeps them forever.
    #[arg(long, default_value = "1h0m0s", value_parser = parse_go_duration)]
    pub event_ttl: std::time::Duration,
    /// Seconds a pod tolerates a not-ready node before eviction, unless it says otherwise.
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// Seconds a pod tolerates an unreachable node before eviction, unless it says otherwise.
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
    /// Serve plain HTTP with no authentication: anyone who can connect is an administrator. Only
    /// on a loopback --bind-address.
    #[arg(long)]
    pub insecure_http: bool,
    /// Static bearer tokens, in upstream's CSV format: token,user,uid,"group1,group2".
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// An audit.k8s.io/v1 Policy: which requests the audit log records, at which level.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Where the audit log is written, one JSON Event per line; `-` is stdout. Nothing is audited
    /// without both this and --audit-policy-file.
    #[arg(long)]
    pub audit_log_path: Option<String>,
    /// Days to keep rotated audit log files (0: whatever their age).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,
    /// Rotated audit log files to keep (0: all).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Megabytes an audit log file may reach before it is rotated (0: never).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxsize: u64,
}

/// A Go-style duration as upstream flags take them: `1h0m0s`, `15s`, `500ms`, or `0`.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration like 1h0m0s or 90s");
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

fn parse_port_range(s: &str) -> Result<(i64, i64), String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("{s:?} is not a range like 30000-32767"))?;
    let lo: i64 = lo.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let hi: i64 = hi.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(1..=65535).contains(&lo) || !(lo..=65535).contains(&hi) {
        return Err(format!("{s:?} is not a valid port range"));
    }
    Ok((lo, hi))
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(args) => {
            let args = *args;
            up(args.server, Some(args.components)).await
        }
        Command::Apiserver(args) => up(*args, None).await,
        Command::ControllerManager(cmd) => {
            crate::components::controller_manager_cmd(cmd, shutdown_signal()).await
        }
        Command::Scheduler(cmd) => crate::components::scheduler_cmd(cmd, shutdown_signal()).await,
        Command::Node(cmd) => crate::components::node_cmd(cmd, shutdown_signal()).await,
        Command::Proxy(cmd) => crate::components::proxy_cmd(cmd, shutdown_signal()).await,
        Command::Dns(cmd) => crate::components::dns_cmd(cmd, shutdown_signal()).await,
        Command::Ingress(cmd) => crate::components::ingress_cmd(cmd, shutdown_signal()).await,
        Command::Xray { what } => crate::xray_cmd::run(what).await,
        Command::Kubeconfig(cmd) => crate::kubeconfig::run(cmd),
        Command::Snapshot { what } => snapshot_cmd(what),
        Command::Bench { what: BenchCommand::Api(args) } => {
            let exe = std::env::current_exe().context("finding the kplane binary")?;
            let report = apiserver::bench::run(args, exe).await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench { what: BenchCommand::Cluster(args) } => {
            let exe = std::env::current_exe().context("finding the kplane binary")?;
            match args.workload {
                crate::bench::Workload::Job => println!("{}", crate::bench_job::run(args, exe).await?),
                crate::bench::Workload::Statefulset => {
                    println!("{}", crate::bench_statefulset::run(args, exe).await?)
                }
                crate::bench::Workload::Deployment => println!("{}", crate::bench::run(args, exe).await?),
            }
            Ok(())
        }
        Command::Bench { what: BenchCommand::Faults(args) } => {
            let exe = std::env::current_exe().context("finding the kplane binary")?;
            println!("{}", crate::bench_faults::run(args, exe).await?);
            Ok(())
        }
        Command::Bench { what: BenchCommand::Net(args) } => {
            println!("{}", crate::bench::run_net(args, std::env::current_exe()?).await?);
            Ok(())
        }
        Command::Bench { what: BenchCommand::Store(args) } => {
            let report = store::bench::run(args).await?;
            println!("{report}");
            Ok(())
        }
    }
}

fn snapshot_cmd(what: SnapshotCommand) -> Result<()> {
    match what {
        SnapshotCommand::Restore { file, data_dir } => {
            let s = store::embedded::restore(&file, &data_dir)
                .with_context(|| format!("restoring {} into {}", file.display(), data_dir.display()))?;
            println!(
                "kplane: restored {} into {}: revision {}, {} keys, compacted at {}",
                file.display(),
                data_dir.join(store::embedded::DB_FILE).display(),
                s.revision,
                s.keys,
                s.compact_revision
            );
        }
        SnapshotCommand::Status { file, write_out } => {
            let s = store::embedded::snapshot_status(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            if write_out == "json" {
                let v = serde_json::json!({
                    "hash": s.hash,
                    "revision": s.revision,
                    "compactRevision": s.compact_revision,
                    "totalKey": s.keys,
                    "totalSize": s.size,
                    "logEntries": s.log_entries,
                    "leases": s.leases,
                });
                println!("{v}");
            } else {
                println!("{:x}, {}, {}, {} B", s.hash, s.revision, s.keys, s.size);
            }
        }
    }
    Ok(())
}

/// The two backends `up` can run on.
enum Opened {
    Embedded(EmbeddedStore),
    /// A real etcd, and its compactor unless compaction is off.
    Etcd(DynStore, Option<tokio::task::JoinHandle<()>>),
}

impl Opened {
    fn dyn_store(&self) -> DynStore {
        match self {
            Opened::Embedded(s) => Arc::new(s.clone()),
            Opened::Etcd(s, _) => s.clone(),
        }
    }
}

async fn open_store(args: &StoreArgs) -> Result<Opened> {
    if args.etcd_servers.is_empty() {
        let mut cfg = EmbeddedConfig::new(&args.data_dir);
        cfg.compaction_interval = args.etcd_compaction_interval;
        let store = EmbeddedStore::open(cfg)
            .await
            .with_context(|| format!("opening the embedded store in {}", args.data_dir.display()))?;
        return Ok(Opened::Embedded(store));
    }
    let mut cfg = EtcdConfig::new(args.etcd_servers.clone());
    cfg.ca_file = args.etcd_cafile.clone();
    cfg.cert_file = args.etcd_certfile.clone();
    cfg.key_file = args.etcd_keyfile.clone();
    let store = EtcdStore::connect(cfg)
        .await
        .with_context(|| format!("connecting to etcd at {}", args.etcd_servers.join(",")))?;
    let interval = args.etcd_compaction_interval;
    let compactor = (!interval.is_zero()).then(|| store.run_compactor(interval));
    Ok(Opened::Etcd(Arc::new(store), compactor))
}

/// The embedded endpoint's TLS files (`--etcd-listen-certfile` and friends), if given.
fn endpoint_tls(args: &ServerArgs) -> Result<Option<store::server::EndpointTls>> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (Some(cert), Some(key)) = (&args.etcd_listen_certfile, &args.etcd_listen_keyfile) else {
        return Ok(None);
    };
    let client_ca_pem = args.etcd_listen_cafile.as_ref().map(read).transpose()?;
    let tls = store::server::EndpointTls { cert_pem: read(cert)?, key_pem: read(key)?, client_ca_pem };
    tls.check()?;
    Ok(Some(tls))
}

async fn up(args: ServerArgs, mut components: Option<crate::components::UpComponents>) -> Result<()> {
    // SIGTERM is caught from the first moment: the stores and endpoints below serve before
    // `ready`, and a client that stops us then still gets a clean shutdown.
    let shutdown = shutdown_signal();
    if let Some(c) = components.as_mut() {
        c.controller.volume_dir.get_or_insert_with(|| args.store.data_dir.join("volumes"));
        if !args.api.insecure_http {
            // The controller-manager signs client certificates with the cluster CA.
            let tls = args.store.data_dir.join("tls");
            c.controller.cluster_signing_cert_file.get_or_insert_with(|| tls.join("ca.crt"));
            c.controller.cluster_signing_key_file.get_or_insert_with(|| tls.join("ca.key"));
        }
    }
    // A bad audit policy stops kplane before anything starts.
    let audit = apiserver::audit::Auditor::from_args(&apiserver::audit::AuditArgs {
        policy_file: args.api.audit_policy_file.clone(),
        log_path: args.api.audit_log_path.clone(),
        max_age_days: args.api.audit_log_maxage,
        max_backups: args.api.audit_log_maxbackup,
        max_size_mb: args.api.audit_log_maxsize,
    })
    .map_err(anyhow::Error::msg)?;
    if let Some(components) = &components {
        components.xray.check()?;
        components.controller.leader.check()?;
        if !components.net.no_networking {
            // The flags first: a range the kernel mode would not program is refused whatever
            // the machine's state (root, tools, another kplane owning the rules) is.
            if let Some(mode) = components.proxy.kernel_mode() {
                let range = args.api.service_cluster_ip_range;
                networking::proxy::iptables::check_service_range(mode, range.base, range.bits)?;
            }
            components.proxy.check().await?;
        }
    }
    let opened = open_store(&args.store).await?;
    let mut endpoint = None;
    match &opened {
        Opened::Embedded(store) if !args.no_etcd_listen => {
            if !args.etcd_listen.ip().is_loopback() {
                bail!("--etcd-listen {} is not a loopback address; the embedded etcd endpoint only serves loopback", args.etcd_listen);
            }
            let tls = endpoint_tls(&args)?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let listener = store::server::bind(args.etcd_listen).await?;
            let addr = listener.local_addr()?;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let served = tokio::spawn(store::server::serve_with_tls(store.clone(), listener, tls, async {
                let _ = stop_rx.await;
            }));
            println!(
                "kplane: embedded store in {}, etcd endpoint {scheme}://{addr}",
                args.store.data_dir.display()
            );
            endpoint = Some((stop_tx, served));
        }
        Opened::Embedded(_) => println!("kplane: embedded store in {}", args.store.data_dir.display()),
        Opened::Etcd(store, _) => {
            let revision = store.current_revision().await.context("reading etcd's revision")?;
            println!("kplane: using etcd at {} (revision {revision})", args.store.etcd_servers.join(","));
        }
    }
    let pki = if args.api.insecure_http {
        if !args.api.bind_address.is_loopback() {
            bail!("--insecure-http serves without authentication, so only on a loopback --bind-address");
        }
        eprintln!("kplane: WARNING: --insecure-http: plain HTTP with NO authentication; anyone who can connect to {} is a cluster administrator", args.api.bind_address);
        None
    } else {
        Some(
            apiserver::pki::Pki::load_or_create(&args.store.data_dir.join("tls"))
                .context("preparing certificates")?,
        )
    };
    let tls = match &pki {
        Some(pki) => {
            let cidr = args.api.service_cluster_ip_range;
            let mut names: Vec<String> = vec!["127.0.0.1".into(), "localhost".into(), cidr.nth(1).to_string()];
            names.extend(
                [
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ]
                .map(String::from),
            );
            if !args.api.bind_address.is_unspecified() {
                names.push(args.api.bind_address.to_string());
            }
            names.dedup();
            let serving = pki.serving("apiserver", &names).context("the API server's certificate")?;
            Some(apiserver::tls::TlsServing {
                cert_pem: serving.cert_pem,
                key_pem: serving.key_pem,
                client_ca_pem: pki.ca.cert_pem.clone(),
            })
        }
        None => None,
    };
    let tokens = match &args.api.token_auth_file {
        Some(path) => apiserver::auth::read_token_file(path)?,
        None => Default::default(),
    };
    // ServiceAccount tokens are signed by a key beside the certificates (none with --insecure-http).
    let service_accounts = match &pki {
        Some(pki) => Some(Arc::new(
            apiserver::auth::serviceaccount::TokenKeys::load_or_create(
                pki.dir(),
                apiserver::auth::serviceaccount::DEFAULT_ISSUER,
                Vec::new(),
            )
            .context("the service account signing key")?,
        )),
        None => None,
    };
    let api_cfg = apiserver::Config {
        auth: apiserver::auth::AuthConfig { insecure: pki.is_none(), tokens, service_accounts },
        tls,
        bind: SocketAddr::new(args.api.bind_address, args.api.secure_port),
        service_cidr: args.api.service_cluster_ip_range,
        node_port_range: args.api.service_node_port_range,
        watch_cache_size: args.api.default_watch_cache_size,
        event_ttl: args.api.event_ttl,
        default_not_ready_toleration_seconds: args.api.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: args.api.default_unreachable_toleration_seconds,
        audit,
        ..apiserver::Config::default()
    };
    let state = apiserver::AppState::new(opened.dyn_store(), api_cfg);
    // The embedded store's etcd metrics join the API server's `/metrics`, as the same process serves both.
    if let Opened::Embedded(store) = &opened {
        state.metrics.register(|r| store.metrics().register(r));
    }
    let (stop_api, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    // The API server's listener and its connections run on a runtime of their own, apart from the
    // in-process components (whose requests run on their own tasks through the router): a client's
    // request then waits for a CPU like any other thread, not behind every queued controller and
    // pod worker task (a single GET during a 1,000-pod rollout waited up to ~300 ms in that queue).
    let api_runtime = SideRuntime::new("kplane-api")?;
    let api = api_runtime.handle().spawn(apiserver::serve(
        state.clone(),
        async {
            let _ = stop_api_rx.await;
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
    ));
    let addr = match ready_rx.await {
        Ok(addr) => addr,
        Err(_) => match api.await {
            Ok(Err(e)) => bail!("{e}"),
            other => bail!("the API server did not start: {other:?}"),
        },
    };
    let scheme = if pki.is_some() { "https" } else { "http" };
    let server = format!("{scheme}://{addr}");
    // The admin's kubeconfig, and one per component for running it as a separate process. Each is a
    // certificate, its key and the kubeconfig, every file synced to disk: written side by side, and
    // while the in-process components start (they need none of the files).
    let kubeconfig = args.store.data_dir.join("kubeconfig");
    let pki = pki.map(Arc::new);
    let mut kubeconfigs = tokio::task::JoinSet::new();
    for (file, user, cn, groups) in [
        ("kubeconfig", "admin", "kubernetes-admin", &["system:masters"][..]),
        ("controller-manager.kubeconfig", "controller-manager", "system:kube-controller-manager", &[][..]),
        ("scheduler.kubeconfig", "scheduler", "system:kube-scheduler", &[][..]),
        ("proxy.kubeconfig", "proxy", "system:kube-proxy", &[][..]),
        ("dns.kubeconfig", "dns", "system:kube-dns", &[][..]),
        ("ingress.kubeconfig", "ingress", "system:kplane:ingress-controller", &[][..]),
    ] {
        let (path, server, pki) = (args.store.data_dir.join(file), server.clone(), pki.clone());
        kubeconfigs.spawn_blocking(move || -> Result<()> {
            let creds = match &pki {
                Some(pki) => {
                    Some(pki.client(user, cn, groups).with_context(|| format!("the {user} certificate"))?)
                }
                None => None,
            };
            let tls = pki.as_deref().zip(creds.as_ref()).map(|(pki, c)| (pki.ca.cert_pem.as_str(), c));
            apiserver::write_kubeconfig(&path, &server, tls, user)
                .with_context(|| format!("writing {}", path.display()))
        });
    }
    // The in-process components reach the API through its router, with no socket.
    let (stop_components, stopping) = crate::components::Shutdown::new();
    let mut running = tokio::task::JoinSet::new();
    // The simulated nodes (a task per pod) run on a runtime of their own, so that the controllers'
    // and scheduler's tasks — their Lease renewals among them — never queue behind thousands of pod
    // workers (at 10,000 pods the renewals missed their 10 s deadline and leadership was lost).
    let nodes_runtime = SideRuntime::new("kplane-nodes")?;
    if let Some(components) = &components {
        crate::components::spawn_up(
            &mut running,
            &state,
            components,
            nodes_runtime.handle(),
            args.api.service_cluster_ip_range,
            &stopping,
        );
    }
    while let Some(written) = kubeconfigs.join_next().await {
        written.context("writing the kubeconfigs")??;
    }
    let kubeconfig = std::fs::canonicalize(&kubeconfig).unwrap_or(kubeconfig);
    println!("kplane: API server at {server}");
    if let Some(components) = &components {
        if let Some(addr) =
            crate::components::start_xray(&mut running, &state, &components.xray, &stopping).await?
        {
            println!("kplane: X-ray at http://{addr}/xray");
        }
        if components.nodes > 0 && !components.no_controllers {
            let wait = std::time::Duration::from_secs(30);
            let ready = crate::components::wait_nodes_ready(&state, components.nodes, wait).await;
            if ready < components.nodes {
                tracing::warn!(ready, wanted = components.nodes, "not every node became Ready within {wait:?}");
            }
        }
    }
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!("kplane: ready");
    let mut failed = None;
    tokio::select! {
        _ = shutdown => {}
        Some(done) = running.join_next() => {
            // A component stopped by itself: report it and bring the rest down.
            failed = Some(match done {
                Ok(Ok(())) => anyhow::anyhow!("a component stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a component task failed: {e}"),
            });
        }
    }
    tracing::info!("shutting down");
    let _ = stop_components.send(true);
    let drained = async {
        while let Some(done) = running.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "a component stopped with an error");
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drained).await.is_err() {
        tracing::warn!("components did not stop within 10 s");
    }
    drop(nodes_runtime);
    let _ = stop_api.send(());
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "API server stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "API server task failed"),
    }
    // Nothing the API's runtime still runs (a connection past the drain) outlives the store.
    drop(api_runtime);
    if let Some((stop, served)) = endpoint {
        let _ = stop.send(());
        served.await??;
    }
    match opened {
        Opened::Embedded(store) => store.shutdown().await,
        Opened::Etcd(_, Some(compactor)) => compactor.abort(),
        Opened::Etcd(_, None) => {}
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A runtime of its own for one part of `up` (the API's listener, the simulated nodes), shut down
/// without blocking when dropped (a runtime cannot be dropped inside another's async context).
pub(crate) struct SideRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl SideRuntime {
    pub(crate) fn new(name: &str) -> Result<SideRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("cannot start the {name} runtime"))?;
        let handle = runtime.handle().clone();
        Ok(SideRuntime { runtime: Some(runtime), handle })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). Both are caught from the moment this is called (not
/// first polled), so the process never dies of a signal sent while it is still starting.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| {
        let registered = signal(kind).map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"));
        async move {
            match registered {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(()) => std::future::pending::<()>().await,
            }
        }
    };
    let (term, int) = (listen(SignalKind::terminate(), "SIGTERM"), listen(SignalKind::interrupt(), "SIGINT"));
    async move {
        tokio::select! {
            _ = term => {},
            _ = int => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "h", "10", "1x", "-1s", "1h-"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
