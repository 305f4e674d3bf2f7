use std::sync::Arc;

use crate::context::Ctx;
use crate::Stop;

#[derive(Clone, Debug)]
pub struct ClusterCidr {
    pub base: u32,
    pub prefix: u8,
    pub mask: u8,
}

pub fn parse_cidr(s: &str, mask: u8) -> Result<ClusterCidr, String> {
    let (ip, len) = s.split_once('/').ok_or_else(|| format!("--cluster-cidr {s:?}: not a CIDR"))?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| format!("--cluster-cidr {s:?}: not an IPv4 CIDR"))?;
    let prefix: u8 = len.parse().map_err(|_| format!("--cluster-cidr {s:?}: bad prefix length"))?;
    if prefix > 32 || mask > 32 || mask < prefix {
        return Err(format!(
            "--node-cidr-mask-size {mask} must be between the cluster prefix /{prefix} and 32"
        ));
    }
    let base = u32::from(ip) & if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    Ok(ClusterCidr { base, prefix, mask })
}

pub async fn run(_ctx: Arc<Ctx>, stop: Stop) {
    stop.wait().await
}
