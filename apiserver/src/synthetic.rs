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

async fn components(st: &AppState) -> Vec<Value> {
    let etcd = match st.store.current_revision().await {
        Ok(_) => component("etcd-0", true, "{\"health\":\"true\"}", ""),
        Err(e) => component("etcd-0", false, "", &e.to_string()),
    };
    let mut out = vec![etcd];
    for (name, health) in
        [("controller-manager", &st.health.controller_manager), ("scheduler", &st.health.scheduler)]
    {
        out.push(match health.get() {
            Some(true) => component(name, true, "ok", ""),
            Some(false) => component(name, false, "", "not healthy"),
            None => component(name, false, "", "not running in this kplane"),
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
) -> ApiResult<Response> {
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
