//! `kplane kubeconfig`: mints a client-certificate kubeconfig from the cluster CA in
//! `<data-dir>/tls`, for a component run as its own process — above all a split-process node,
//! which must be `system:node:<name>` in `system:nodes` to get the node role.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

/// `kplane kubeconfig --data-dir D --user U [--group G]... --out F`.
#[derive(Args, Debug)]
pub struct KubeconfigCmd {
    /// The data directory of the cluster whose CA signs the certificate.
    #[arg(long, default_value = "./kplane-data")]
    pub data_dir: PathBuf,
    /// The user (the certificate's CN), e.g. system:node:worker7.
    #[arg(long)]
    pub user: String,
    /// A group (an O of the certificate), e.g. system:nodes; repeat for more.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Where to write the kubeconfig (mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// The API server's URL; by default the one in `<data-dir>/kubeconfig`.
    #[arg(long)]
    pub server: Option<String>,
}

pub fn run(cmd: KubeconfigCmd) -> Result<()> {
    if cmd.user.trim().is_empty() {
        bail!("--user must name someone");
    }
    let tls = cmd.data_dir.join("tls");
    let pki = apiserver::pki::Pki::load(&tls).with_context(|| {
        format!("no cluster CA in {} (start kplane with this --data-dir first)", tls.display())
    })?;
    let server = match cmd.server {
        Some(s) => s,
        None => {
            let admin = cmd.data_dir.join("kubeconfig");
            let kubeconfig = kube::config::Kubeconfig::read_from(&admin).with_context(|| {
                format!("reading {} for the server's URL (or pass --server)", admin.display())
            })?;
            kubeconfig
                .clusters
                .iter()
                .find_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()))
                .with_context(|| format!("{} names no server", admin.display()))?
        }
    };
    // One certificate per identity, kept beside the others and reused while its subject matches.
    let file: String =
        cmd.user.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let groups: Vec<&str> = cmd.groups.iter().map(String::as_str).collect();
    let pair =
        pki.client(&format!("user-{file}"), &cmd.user, &groups).context("issuing the client certificate")?;
    apiserver::write_kubeconfig(&cmd.out, &server, Some((pki.ca.cert_pem.as_str(), &pair)), &file)
        .with_context(|| format!("writing {}", cmd.out.display()))?;
    println!("kplane: wrote {} for user {:?} in groups {:?}", cmd.out.display(), cmd.user, cmd.groups);
    Ok(())
}
