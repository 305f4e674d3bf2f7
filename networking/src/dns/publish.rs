//! The `kube-dns` Service's endpoints: this server's own address.
//!
//! Upstream, `kube-dns` selects the CoreDNS pods and the endpoint controllers list them. kplane's
//! DNS is a component, not a pod, so the Service has no selector and the DNS server publishes
//! itself, as the API server does for the `kubernetes` Service: Endpoints `kube-system/kube-dns`
//! (labelled `endpointslice.kubernetes.io/skip-mirror`) and an EndpointSlice of the same name,
//! each with the listen address and the `dns` (UDP) and `dns-tcp` (TCP) ports. While it serves,
//! the address is ready; on a clean stop it is withdrawn, so the Service then has no endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

const NAMESPACE: &str = "kube-system";
const SERVICE: &str = "kube-dns";
/// `endpointslice.kubernetes.io/managed-by` of the slice written here.
const MANAGED_BY: &str = "dns.kplane.dev";

/// The Endpoints and EndpointSlice for `listen`; with `ready` false, without any address.
fn objects(listen: SocketAddr, ready: bool) -> serde_json::Result<(Endpoints, EndpointSlice)> {
    let ip = listen.ip().to_string();
    let port = listen.port();
    let ports = json!([
        {"name": "dns", "port": port, "protocol": "UDP"},
        {"name": "dns-tcp", "port": port, "protocol": "TCP"},
    ]);
    let subsets = if ready { json!([{"addresses": [{"ip": ip}], "ports": ports}]) } else { json!([]) };
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    }))?;
    let slice_endpoints =
        if ready { json!([{"addresses": [ip], "conditions": {"ready": true}}]) } else { json!([]) };
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": SERVICE, "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": if listen.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": slice_endpoints,
        "ports": ports,
    }))?;
    Ok((endpoints, slice))
}

/// Creates or replaces one object (a PUT carrying the live resourceVersion, so a concurrent
/// writer makes it fail and the caller retries).
async fn put<K>(api: &Api<K>, mut obj: K) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(SERVICE).await? {
        Some(live) => {
            obj.meta_mut().resource_version = live.meta().resource_version.clone();
            api.replace(SERVICE, &PostParams::default(), &obj).await.map(|_| ())
        }
        None => api.create(&PostParams::default(), &obj).await.map(|_| ()),
    }
}

/// Writes both objects once.
pub(crate) async fn write(client: &kube::Client, listen: SocketAddr, ready: bool) -> Result<(), String> {
    let (endpoints, slice) = objects(listen, ready).map_err(|e| e.to_string())?;
    put(&Api::<Endpoints>::namespaced(client.clone(), NAMESPACE), endpoints)
        .await
        .map_err(|e| e.to_string())?;
    put(&Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE), slice).await.map_err(|e| e.to_string())
}

/// Publishes the ready address, retrying with backoff (up to 10 s apart) until it lands: the
/// namespace may not exist yet, or the API server may still be starting.
pub(crate) async fn publish(client: kube::Client, listen: SocketAddr) {
    let mut delay = Duration::from_millis(200);
    let mut warned = false;
    loop {
        match write(&client, listen, true).await {
            Ok(()) => {
                tracing::info!(%listen, "published the kube-dns endpoints");
                return;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot publish the kube-dns endpoints yet; retrying");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::objects;

    #[test]
    fn ready_and_withdrawn_objects() {
        let (ep, slice) = objects("127.96.0.10:5353".parse().unwrap(), true).unwrap();
        let subset = &ep.subsets.unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "127.96.0.10");
        let ports = subset.ports.as_ref().unwrap();
        assert_eq!(
            ports.iter().map(|p| (p.port, p.protocol.as_deref())).collect::<Vec<_>>(),
            [(5353, Some("UDP")), (5353, Some("TCP"))]
        );
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].conditions.as_ref().unwrap().ready, Some(true));

        let (ep, slice) = objects("127.96.0.10:53".parse().unwrap(), false).unwrap();
        assert!(ep.subsets.unwrap_or_default().is_empty());
        assert!(slice.endpoints.is_empty());
    }
}
