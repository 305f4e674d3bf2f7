//! `kplane xray ...`: the flags of each X-ray command and their wiring to the `xray` crate.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Subcommand, Debug)]
pub enum XrayCommand {
    /// The path a request takes: listener, Ingress rule, Service, EndpointSlices, Endpoints, Pods,
    /// each with its /registry key, revision and last writer, and why traffic would fail.
    Route(RouteArgs),
    /// The /registry tree (folders with key counts, sizes and newest revisions), or with --watch
    /// every write live: key, revision, verb, who.
    Etcd(EtcdArgs),
}

/// `kplane xray etcd [PREFIX]`, with etcdctl's connection flags.
#[derive(Args, Debug)]
pub struct EtcdArgs {
    /// Folder (or key) to show, inside /registry.
    #[arg(default_value = "/registry")]
    pub prefix: String,
    /// etcd endpoints (comma-separated); the default is `kplane up`'s embedded store.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// CA bundle to verify etcd's certificate.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Folder levels to open below PREFIX (default: all).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Keys listed per folder before the rest fold into one count line (0: all).
    #[arg(long, default_value_t = 20)]
    pub max_keys: usize,
    /// Stream every write under PREFIX instead: key, revision, verb (create/update/delete), who.
    #[arg(long)]
    pub watch: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["host", "service", "url"])))]
pub struct RouteArgs {
    /// An HTTP request to the ingress controller for this host.
    #[arg(long)]
    pub host: Option<String>,
    /// The request path (with --host).
    #[arg(long, default_value = "/", requires = "host")]
    pub path: String,
    /// A connection to this Service's ClusterIP.
    #[arg(long)]
    pub service: Option<String>,
    /// The Service's namespace (with --service).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// One port of the Service, by number or name (with --service); all of them if not given.
    #[arg(long, requires = "service")]
    pub port: Option<String>,
    /// A URL: http://<clusterIP>:<port>/..., http://<nodeIP>:<nodePort>/..., a Service's DNS name, or
    /// an Ingress host.
    #[arg(long)]
    pub url: Option<String>,
    /// Really send a request along the path and time each hop.
    #[arg(long)]
    pub probe: bool,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
    /// Colour: on a terminal (auto), always, or never.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
    /// The kubeconfig to use; otherwise $KUBECONFIG or ~/.kube/config, as kubectl does.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster DNS's domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The IngressClass the ingress controller serves.
    #[arg(long, default_value = "kplane")]
    pub ingress_class: String,
}

pub async fn run(cmd: XrayCommand) -> Result<()> {
    match cmd {
        XrayCommand::Route(args) => route(args).await,
        XrayCommand::Etcd(args) => etcd(args).await,
    }
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    const AGENT: &str = "kplane-xray";
    match kubeconfig {
        Some(path) => crate::components::client_from_kubeconfig(path, AGENT).await,
        None => {
            let config = kube::Config::infer()
                .await
                .context("finding a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config)")?;
            crate::components::client_for(config, AGENT)
        }
    }
}

async fn route(args: RouteArgs) -> Result<()> {
    let target = match (&args.host, &args.service, &args.url) {
        (Some(host), _, _) => xray::route::Target::Host { host: host.clone(), path: args.path.clone() },
        (_, Some(name), _) => xray::route::Target::Service {
            namespace: args.namespace.clone(),
            name: name.clone(),
            port: args.port.clone(),
        },
        (_, _, Some(url)) => xray::route::Target::Url(url.clone()),
        _ => anyhow::bail!("say what to follow: --host, --service or --url"),
    };
    let client = client(args.kubeconfig.as_deref()).await?;
    let opts = xray::route::Options { cluster_domain: args.cluster_domain, ingress_class: args.ingress_class };
    let route = xray::route::trace_with(&client, &target, &opts).await?;
    let probe = if args.probe { Some(xray::probe::probe(&route).await) } else { None };
    match args.output {
        Output::Json => {
            let doc = serde_json::json!({"route": route, "probe": probe});
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            let color = match args.color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            print!("{}", xray::render::route_text(&route, color));
            if let Some(probe) = &probe {
                print!("{}", xray::render::probe_text(probe, color));
            }
        }
    }
    Ok(())
}

/// `kplane xray etcd`: the tree, or the live stream of writes.
async fn etcd(args: EtcdArgs) -> Result<()> {
    use futures::StreamExt;
    // Refuse a bad prefix before connecting anywhere.
    let folder = xray::etcd::folder_prefix(&args.prefix)?;
    let mut connect = xray::etcd::Connect::new(args.endpoints);
    connect.ca_file = args.cacert;
    connect.cert_file = args.cert;
    connect.key_file = args.key;
    let store = xray::etcd::connect(&connect).await?;
    let json = args.output == Output::Json;
    if args.watch {
        let (after, writes) = xray::etcd::watch(&store, &args.prefix).await?;
        eprintln!("kplane: watching {folder} after revision {after}: key revision verb who (Ctrl-C stops)");
        let mut writes = std::pin::pin!(writes);
        while let Some(write) = writes.next().await {
            let write = write?;
            if json {
                println!("{}", serde_json::to_string(&write)?);
            } else {
                println!("{write}");
            }
        }
        bail!("the watch on {folder} ended");
    }
    let tree = xray::etcd::read_tree(&store, &args.prefix).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tree)?);
    } else {
        let view = xray::etcd::TreeView { depth: args.depth, max_keys: args.max_keys };
        print!("{}", xray::etcd::render_tree(&tree, view));
    }
    Ok(())
}
