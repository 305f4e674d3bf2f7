//! Service IP and node-port allocation, as upstream's service registry does it: ClusterIPs from
//! `--service-cluster-ip-range`, node ports from `--service-node-port-range`, both persisted in the
//! store (`/registry/ranges/serviceips`, `/registry/ranges/servicenodeports`) and changed only through
//! `guaranteed_update`, so concurrent creates never get the same value. A create that fails after
//! allocating releases what it took.

use std::net::Ipv4Addr;

use api_types::ResourceDef;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::AppState;

pub const SERVICE_IPS_KEY: &str = "/registry/ranges/serviceips";
pub const NODE_PORTS_KEY: &str = "/registry/ranges/servicenodeports";

/// An IPv4 range in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub bits: u8,
}

impl std::str::FromStr for Cidr {
    // A String: clap shows it as the flag's error.
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let bits: u8 = bits.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{s:?}: prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - bits);
        Ok(Cidr { base: Ipv4Addr::from(u32::from(ip) & mask), bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.bits)
    }
}

impl Cidr {
    /// Usable addresses: the network and broadcast addresses are never handed out.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.bits)) - 2
    }
    /// The n-th usable address, from 1.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(u32::from(self.base))?;
        (off >= 1 && off <= self.size()).then_some(off)
    }
}

/// What a create took, to give back if it fails.
#[derive(Debug, Default)]
pub struct Allocation {
    ips: Vec<String>,
    ports: Vec<i64>,
}

impl Allocation {
    pub async fn release(self, st: &AppState) {
        for ip in self.ips {
            if let Err(e) = release(st, SERVICE_IPS_KEY, &json!(ip)).await {
                tracing::warn!(ip, error = %e.message, "could not release a service IP");
            }
        }
        for p in self.ports {
            if let Err(e) = release(st, NODE_PORTS_KEY, &json!(p)).await {
                tracing::warn!(port = p, error = %e.message, "could not release a node port");
            }
        }
    }
}

fn range_doc(range: &str, allocated: &[Value]) -> Vec<u8> {
    let doc = json!({"kind": "RangeAllocation", "apiVersion": "v1", "range": range, "allocated": allocated});
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn allocated_of(kv: Option<&store::KeyValue>) -> Vec<Value> {
    kv.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .and_then(|v| v.get("allocated").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// Takes `want` (a specific value) or the first free one from `candidates`, atomically.
async fn take(
    st: &AppState,
    key: &str,
    range: &str,
    want: Option<Value>,
    candidates: &(dyn Fn(&[Value]) -> Option<Value> + Sync),
) -> ApiResult<Result<Value, &'static str>> {
    let mut chosen: Result<Value, &'static str> = Err("range is full");
    store::guaranteed_update(st.store.as_ref(), key, |cur| {
        let mut allocated = allocated_of(cur);
        let pick = match &want {
            Some(v) if allocated.contains(v) => {
                chosen = Err("provided value is already allocated");
                return Ok(None);
            }
            Some(v) => v.clone(),
            None => match candidates(&allocated) {
                Some(v) => v,
                None => {
                    chosen = Err("range is full");
                    return Ok(None);
                }
            },
        };
        allocated.push(pick.clone());
        chosen = Ok(pick);
        Ok(Some(range_doc(range, &allocated)))
    })
    .await
    .map(|_| ())
    // Nothing was written when nothing could be taken from a range that was never stored.
    .or_else(|e| if matches!(e, store::Error::NotFound { .. }) { Ok(()) } else { Err(e) })
    .map_err(ApiError::internal)?;
    Ok(chosen)
}

async fn release(st: &AppState, key: &str, value: &Value) -> ApiResult<()> {
    let range = if key == SERVICE_IPS_KEY {
        st.config.service_cidr.to_string()
    } else {
        st.config.node_port_range_text()
    };
    store::guaranteed_update(st.store.as_ref(), key, |cur| {
        let mut allocated = allocated_of(cur);
        let before = allocated.len();
        allocated.retain(|v| v != value);
        if allocated.len() == before {
            return Ok(None);
        }
        Ok(Some(range_doc(&range, &allocated)))
    })
    .await
    .map(|_| ())
    .or_else(|e| if matches!(e, store::Error::NotFound { .. }) { Ok(()) } else { Err(ApiError::internal(e)) })
}

/// Allocates a new Service's ClusterIP and node ports (on update, only what the old one lacked).
pub async fn allocate(
    st: &AppState,
    res: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Allocation> {
    let mut took = Allocation::default();
    if res.kind != "Service" {
        return Ok(took);
    }
    let name = crate::meta::name(obj).unwrap_or("").to_string();
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let cidr = st.config.service_cidr;
    if ty != "ExternalName" && old.is_none() {
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        match requested.as_deref() {
            Some("None") => {
                obj["spec"]["clusterIPs"] = json!(["None"]);
            }
            Some(ip) => {
                let parsed: Option<Ipv4Addr> = ip.parse().ok();
                if parsed.and_then(|p| cidr.offset_of(p)).is_none() {
                    return Err(ApiError::invalid(res, &name, vec![Cause::invalid(
                        "spec.clusterIPs[0]",
                        format!("\"{ip}\""),
                        &format!("failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {cidr}"),
                    )]));
                }
                match take(st, SERVICE_IPS_KEY, &cidr.to_string(), Some(json!(ip)), &|_| None).await? {
                    Ok(_) => took.ips.push(ip.to_string()),
                    Err(why) => {
                        return Err(ApiError::invalid(
                            res,
                            &name,
                            vec![Cause::invalid(
                                "spec.clusterIPs",
                                format!("[]string{{\"{ip}\"}}"),
                                &format!("failed to allocate IP {ip}: {why}"),
                            )],
                        ))
                    }
                }
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            None => {
                // Dynamic addresses start above a small static band (.1–.15), as upstream reserves the
                // low part of the range for addresses asked for by value (kube-dns gets .10).
                let first = 16u32.min(cidr.size());
                let pick = |allocated: &[Value]| {
                    (first..=cidr.size())
                        .map(|n| json!(cidr.nth(n).to_string()))
                        .find(|ip| !allocated.contains(ip))
                };
                match take(st, SERVICE_IPS_KEY, &cidr.to_string(), None, &pick).await? {
                    Ok(ip) => {
                        let ip = ip.as_str().unwrap_or_default().to_string();
                        obj["spec"]["clusterIP"] = json!(ip);
                        obj["spec"]["clusterIPs"] = json!([ip]);
                        took.ips.push(ip);
                    }
                    Err(why) => {
                        return Err(ApiError::internal(format!("failed to allocate a serviceIP: {why}")));
                    }
                }
            }
        }
        if obj.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None") || requested.is_some() {
            obj["spec"]["ipFamilies"] = json!(["IPv4"]);
            obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let (lo, hi) = st.config.node_port_range;
        let n = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
        for i in 0..n {
            let existing = obj["spec"]["ports"][i].get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0);
            let kept = old
                .and_then(|o| o.pointer("/spec/ports").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .any(|p| p.get("nodePort").and_then(Value::as_i64) == existing && existing.is_some());
            if kept {
                continue;
            }
            if let Some(p) = existing {
                if !(lo..=hi).contains(&p) {
                    took.release(st).await;
                    return Err(ApiError::invalid(res, &name, vec![Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        p,
                        &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    )]));
                }
            }
            let range = st.config.node_port_range_text();
            let pick = |allocated: &[Value]| (lo..=hi).map(|p| json!(p)).find(|p| !allocated.contains(p));
            match take(st, NODE_PORTS_KEY, &range, existing.map(|p| json!(p)), &pick).await? {
                Ok(p) => {
                    let p = p.as_i64().unwrap_or_default();
                    obj["spec"]["ports"][i]["nodePort"] = json!(p);
                    took.ports.push(p);
                }
                Err(why) => {
                    took.release(st).await;
                    return Err(ApiError::invalid(
                        res,
                        &name,
                        vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            existing.unwrap_or_default(),
                            &format!("failed to allocate a nodePort: {why}"),
                        )],
                    ));
                }
            }
        }
    }
    Ok(took)
}

/// Releases a deleted Service's IP and node ports.
pub async fn after_delete(st: &AppState, res: &ResourceDef, old: &Value) {
    if res.kind != "Service" {
        return;
    }
    let mut took = Allocation::default();
    if let Some(ip) =
        old.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty() && *s != "None")
    {
        took.ips.push(ip.to_string());
    }
    for p in old.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
            took.ports.push(n);
        }
    }
    took.release(st).await;
}
