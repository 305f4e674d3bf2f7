//! Objects that expire: Events live for `--event-ttl` (upstream default 1 h), by a store lease attached
//! to each write, as upstream's etcd3 lease manager does it. One lease serves every event written
//! within a minute (upstream's reuse window), so a busy cluster grants about one lease per minute
//! rather than one per event; each lease's TTL covers the window so an event lives at least the TTL.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_types::ResourceDef;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// How long one granted lease keeps being handed out.
const REUSE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct LeaseManager {
    current: Mutex<Option<(i64, Instant)>>,
}

/// The lease a write of `res` must carry: 0 (none) unless the kind expires.
pub async fn lease_for(st: &AppState, res: &ResourceDef) -> ApiResult<i64> {
    if res.kind != "Event" || st.config.event_ttl.is_zero() {
        return Ok(0);
    }
    let mgr = &st.leases;
    if let Ok(cur) = mgr.current.lock() {
        if let Some((id, at)) = *cur {
            if at.elapsed() < REUSE_WINDOW {
                return Ok(id);
            }
        }
    }
    let ttl = (st.config.event_ttl + REUSE_WINDOW).as_secs() as i64;
    let id = st.store.grant_lease(ttl).await.map_err(|e| ApiError::from_store(res, "", e))?;
    if let Ok(mut cur) = mgr.current.lock() {
        *cur = Some((id, Instant::now()));
    }
    Ok(id)
}
