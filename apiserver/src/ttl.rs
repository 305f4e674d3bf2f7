//! Objects that expire: Events live for `--event-ttl` (upstream default 1 h), by a store lease attached
//! to each write, as upstream's etcd3 lease manager does it. One lease serves every event written
//! within the reuse window (upstream's: 5% of the TTL, at most a minute), so a busy cluster grants
//! about one lease per window rather than one per event; each lease's TTL covers the window so an
//! event lives at least the TTL. A lease that is gone before its time (revoked with etcdctl, say) is
//! forgotten on the write that finds it missing, and that write is retried with a fresh lease.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_types::ResourceDef;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The longest one granted lease keeps being handed out (upstream's `leaseReuseDurationSeconds`).
const MAX_REUSE_WINDOW: Duration = Duration::from_secs(60);

/// How long a lease for objects that live `ttl` keeps being handed out: upstream's 5% of the TTL,
/// capped at a minute.
fn reuse_window(ttl: Duration) -> Duration {
    (ttl / 20).min(MAX_REUSE_WINDOW)
}

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
    let window = reuse_window(st.config.event_ttl);
    if let Ok(cur) = mgr.current.lock() {
        if let Some((id, at)) = *cur {
            if at.elapsed() < window {
                return Ok(id);
            }
        }
    }
    let ttl = (st.config.event_ttl + window).as_secs() as i64;
    let id = st.store.grant_lease(ttl).await.map_err(|e| ApiError::from_store(res, "", e))?;
    if let Ok(mut cur) = mgr.current.lock() {
        *cur = Some((id, Instant::now()));
    }
    Ok(id)
}

/// Stops handing out `lease`: a write found it gone from the store.
pub fn forget(st: &AppState, lease: i64) {
    if let Ok(mut cur) = st.leases.current.lock() {
        if cur.is_some_and(|(id, _)| id == lease) {
            *cur = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reuse_window_is_upstreams_five_percent_capped_at_a_minute() {
        assert_eq!(reuse_window(Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(reuse_window(Duration::from_secs(100)), Duration::from_secs(5));
        assert_eq!(reuse_window(Duration::ZERO), Duration::ZERO);
    }
}
