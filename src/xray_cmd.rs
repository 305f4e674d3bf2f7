//! `kplane xray ...`: the flags of each X-ray command and their wiring to the `xray` crate.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Subcommand, Debug)]
pub enum XrayCommand {
    /// The path a request takes: listener, Ingress rule, Service, EndpointSlices, Endpoints, Pods,
    /// each with its /registry key, revision and last writer, and why traffic would fail.
    Route(RouteArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
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
    }
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    const AGENT: &str = "kplane-xray";
    match kubeconfig {
        Some(path) => crate::components::client_from_kubeconfig(path, AGENT).await,
        None => {
            let mut config = kube::Config::infer()
                .await
                .context("finding a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config)")?;
            config.headers.push((http::header::USER_AGENT, crate::components::user_agent(AGENT)));
            kube::Client::try_from(config).context("building a client")
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
