//! Ranking the feasible nodes: upstream's NodeResourcesFit "LeastAllocated" (weight 1) plus spreading
//! the pods of one owner across nodes (weight 2, as upstream's PodTopologySpread by hostname).

use super::cache::{NodeInfo, Resources};

/// 0..=300: higher is better.
pub fn score(req: &Resources, spread_key: Option<&str>, info: &NodeInfo, max_same: i64) -> i64 {
    let least = |alloc: i64, used: i64, want: i64| {
        if alloc <= 0 {
            0
        } else {
            ((alloc - used - want) * 100 / alloc).clamp(0, 100)
        }
    };
    let cpu = least(info.allocatable.milli_cpu, info.nonzero_requested.milli_cpu, req.milli_cpu);
    let mem = least(info.allocatable.memory, info.nonzero_requested.memory, req.memory);
    let least_allocated = (cpu + mem) / 2;
    let same = spread_key.and_then(|k| info.spread.get(k)).copied().unwrap_or(0);
    let spread = if max_same > 0 { 100 * (max_same - same) / max_same } else { 100 };
    least_allocated + 2 * spread
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_same_owner_pods_wins_over_slightly_more_free_resources() {
        let alloc = Resources { milli_cpu: 4000, memory: 8 << 30, ephemeral_storage: 0 };
        let req = Resources { milli_cpu: 100, memory: 200 << 20, ephemeral_storage: 0 };
        let mut busy = NodeInfo { allocatable: alloc, ..Default::default() };
        busy.spread.insert("owner:x".into(), 2);
        let mut idle = NodeInfo { allocatable: alloc, ..Default::default() };
        idle.nonzero_requested = Resources { milli_cpu: 300, memory: 600 << 20, ephemeral_storage: 0 };
        assert!(score(&req, Some("owner:x"), &idle, 2) > score(&req, Some("owner:x"), &busy, 2));
        // Without a spread key, the emptier node wins.
        assert!(score(&req, None, &busy, 0) > score(&req, None, &idle, 0));
    }
}
