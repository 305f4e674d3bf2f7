//! Resources computed on read rather than stored: `componentstatuses` (deprecated upstream, still
//! served, and what the seed's first command shows). Each entry reports what kplane can observe.

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::AppState;

fn component(name: &str, healthy: bool, message: &str, error: &str) -> Value {
    let mut cond =
        json!({"type": "Healthy", "status": if healthy { "True" } else { "False" }, "message": message});
    if !error.is_empty() {
        cond["error"] = json!(error);
    }
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name}, "conditions": [cond]})
}

/// Lease a component's leader renews (its leader-election lock), so its health can be read from the
/// store whichever process runs it.
const COMPONENT_LEASES: [(&str, &str); 2] =
    [("controller-manager", "kube-controller-manager"), ("scheduler", "kube-scheduler")];

/// Healthy while some instance holds the component's Lease within its duration, as a leader would.
fn lease_health(lease: Option<&Value>, now: jiff::Timestamp) -> Result<String, String> {
    let Some(lease) = lease else { return Err("no instance has taken its leader lease".into()) };
    let holder = lease.pointer("/spec/holderIdentity").and_then(Value::as_str).unwrap_or("");
    if holder.is_empty() {
        return Err("its leader lease has been released".into());
    }
    let duration = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(15);
    let renewed = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .ok_or_else(|| format!("leader {holder} never renewed its lease"))?;
    let age = now.duration_since(renewed).as_secs();
    if age > duration {
        return Err(format!("leader {holder} last renewed its lease {age}s ago (duration {duration}s)"));
    }
    Ok(format!("ok (leader {holder})"))
}

async fn components(st: &AppState) -> Vec<Value> {
    let etcd = match st.store.current_revision().await {
        Ok(_) => component("etcd-0", true, "{\"health\":\"true\"}", ""),
        Err(e) => component("etcd-0", false, "", &e.to_string()),
    };
    let mut out = vec![etcd];
    let leases = api_types::resources::lookup("coordination.k8s.io", "v1", "leases");
    for (name, lease_name) in COMPONENT_LEASES {
        let lease = match leases {
            Some(res) => match st.store.get(&res.key(Some("kube-system"), lease_name)).await {
                Ok(kv) => crate::objects::decode(res, &kv).ok(),
                Err(_) => None,
            },
            None => None,
        };
        out.push(match lease_health(lease.as_ref(), jiff::Timestamp::now()) {
            Ok(msg) => component(name, true, &msg, ""),
            Err(err) => component(name, false, "", &err),
        });
    }
    out
}

pub async fn serve(
    st: &AppState,
    method: &Method,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &bytes::Bytes,
    user: Option<&crate::auth::UserInfo>,
) -> ApiResult<Response> {
    if rp.res.is_create_only() {
        return crate::reviews::serve(st, method, rp, params, headers, body, user).await;
    }
    if method != Method::GET || rp.subresource.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let all = components(st).await;
    let rev = st.store.current_revision().await.unwrap_or(0);
    match &rp.name {
        None => crate::render::list(rp.res, all, json!({}), headers, params),
        Some(name) => all
            .into_iter()
            .find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
            .map(|c| crate::render::object(rp.res, c, rev, headers))
            .ok_or_else(|| ApiError::not_found(rp.res, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_health_follows_renewals() {
        let now: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        let lease = |holder: &str, renewed: &str| json!({"spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed}});
        assert!(lease_health(None, now).is_err());
        assert!(lease_health(Some(&lease("a", "2026-01-01T00:00:20.000000Z")), now).is_ok());
        let stale = lease_health(Some(&lease("a", "2026-01-01T00:00:10.000000Z")), now).unwrap_err();
        assert!(stale.contains("20s ago"), "{stale}");
        assert!(lease_health(Some(&lease("", "2026-01-01T00:00:29Z")), now).is_err());
    }
}
