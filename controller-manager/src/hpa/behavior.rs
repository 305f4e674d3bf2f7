//! Upstream's `behavior` handling (`normalizeDesiredReplicasWithBehaviors`): stabilization windows
//! over past recommendations, then the scale-up/scale-down policies' rate limits over past scale
//! events, then min/max. Pure over an explicit clock and history, so it is unit-tested.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// One scaling direction's rules with upstream's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub window: Duration,
    /// "Max", "Min" or "Disabled".
    pub select: String,
    /// (type "Pods"/"Percent", value, period).
    pub policies: Vec<(String, i32, Duration)>,
}

/// Upstream's defaults: scale up by max(4 pods, 100%) per 15 s, no window; scale down by 100% per
/// 15 s after a 300 s window.
pub fn rules(b: Option<&HorizontalPodAutoscalerBehavior>) -> (Rules, Rules) {
    let fill = |r: Option<&HPAScalingRules>, window: i32, defaults: Vec<(&str, i32, i32)>| {
        let policies: Vec<(String, i32, Duration)> =
            match r.and_then(|r| r.policies.as_ref()).filter(|p| !p.is_empty()) {
                Some(p) => p.iter().map(|p| (p.type_.clone(), p.value, secs(p.period_seconds))).collect(),
                None => defaults.into_iter().map(|(t, v, p)| (t.to_string(), v, secs(p))).collect(),
            };
        Rules {
            window: secs(r.and_then(|r| r.stabilization_window_seconds).unwrap_or(window)),
            select: r.and_then(|r| r.select_policy.clone()).unwrap_or_else(|| "Max".into()),
            policies,
        }
    };
    let up = fill(b.and_then(|b| b.scale_up.as_ref()), 0, vec![("Pods", 4, 15), ("Percent", 100, 15)]);
    let down = fill(b.and_then(|b| b.scale_down.as_ref()), 300, vec![("Percent", 100, 15)]);
    (up, down)
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// One HPA's memory: its recommendations and scale events (upstream keeps them in the controller).
#[derive(Clone, Debug, Default)]
pub struct History {
    pub recommendations: Vec<(i32, Instant)>,
    /// (replicas added or removed, when).
    pub ups: Vec<(i32, Instant)>,
    pub downs: Vec<(i32, Instant)>,
}

/// The outcome: replicas, and the reason/message of AbleToScale (stabilization) and
/// ScalingLimited (rate and bounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    pub stabilized: Option<(&'static str, &'static str)>,
    pub limited: bool,
    pub limit_reason: &'static str,
    pub limit_message: &'static str,
}

#[allow(clippy::too_many_arguments)]
pub fn normalize(
    h: &mut History,
    up: &Rules,
    down: &Rules,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Instant,
) -> Normalized {
    // Upstream starts a new HPA's scale-down window with the current size.
    if h.recommendations.is_empty() && !down.window.is_zero() {
        h.recommendations.push((current, now));
    }
    // Stabilization.
    let cutoff = |w: Duration| now.checked_sub(w).unwrap_or(now);
    let (up_cut, down_cut) = (cutoff(up.window), cutoff(down.window));
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, (r, at)) in h.recommendations.iter().enumerate() {
        if *at > up_cut {
            up_rec = up_rec.min(*r);
        }
        if *at > down_cut {
            down_rec = down_rec.max(*r);
        }
        if *at < up_cut && *at < down_cut {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => h.recommendations[i] = (desired, now),
        None => h.recommendations.push((desired, now)),
    }
    let stab_reason = if stabilized == desired {
        None
    } else if desired >= current {
        Some((
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        ))
    } else {
        Some((
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        ))
    };
    // Rate limits and bounds.
    let (replicas, reason, message) = if stabilized > current {
        let limit = up_limit(current, h, up, now).max(current);
        let (allowed, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if stabilized > allowed {
            (allowed, reason, message)
        } else {
            (stabilized, "DesiredWithinRange", "the desired count is within the acceptable range")
        }
    } else if stabilized < current {
        let limit = down_limit(current, h, down, now).min(current);
        let (allowed, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if stabilized < allowed {
            (allowed, reason, message)
        } else {
            (stabilized, "DesiredWithinRange", "the desired count is within the acceptable range")
        }
    } else {
        (stabilized, "DesiredWithinRange", "the desired count is within the acceptable range")
    };
    Normalized {
        replicas,
        stabilized: stab_reason,
        limited: replicas != stabilized,
        limit_reason: reason,
        limit_message: message,
    }
}

fn changed_within(events: &[(i32, Instant)], period: Duration, now: Instant) -> i32 {
    let cut = now.checked_sub(period).unwrap_or(now);
    events.iter().filter(|(_, at)| *at > cut).map(|(n, _)| n).sum()
}

fn up_limit(current: i32, h: &History, r: &Rules, now: Instant) -> i32 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i32::MAX } else { i32::MIN };
    for (ty, value, period) in &r.policies {
        let start = current - changed_within(&h.ups, *period, now) + changed_within(&h.downs, *period, now);
        let proposed = if ty == "Pods" {
            start.saturating_add(*value)
        } else {
            (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as i32
        };
        result = if min { result.min(proposed) } else { result.max(proposed) };
    }
    result
}

fn down_limit(current: i32, h: &History, r: &Rules, now: Instant) -> i32 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i32::MIN } else { i32::MAX };
    for (ty, value, period) in &r.policies {
        let start = current - changed_within(&h.ups, *period, now) + changed_within(&h.downs, *period, now);
        let proposed = if ty == "Pods" {
            start - *value
        } else {
            (f64::from(start) * (1.0 - f64::from(*value) / 100.0)) as i32
        };
        result = if min { result.max(proposed) } else { result.min(proposed) };
    }
    result
}

/// Records a rescale for the rate limits, dropping events older than the longest policy period.
pub fn record(h: &mut History, up: &Rules, down: &Rules, from: i32, to: i32, now: Instant) {
    let longest = |r: &Rules| r.policies.iter().map(|p| p.2).max().unwrap_or_default();
    let (lu, ld) = (longest(up), longest(down));
    h.ups.retain(|(_, at)| now.duration_since(*at) <= lu);
    h.downs.retain(|(_, at)| now.duration_since(*at) <= ld);
    if to > from {
        h.ups.push((to - from, now));
    } else if to < from {
        h.downs.push((from - to, now));
    }
    let longest_window = up.window.max(down.window);
    h.recommendations.retain(|(_, at)| now.duration_since(*at) <= longest_window);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_up_is_rate_limited_by_the_default_policies() {
        let (up, down) = rules(None);
        let mut h = History::default();
        let now = Instant::now();
        // From 1, at most max(1 + 4, 2 × 1) = 5 in 15 s.
        let n = normalize(&mut h, &up, &down, 1, 20, 1, 10, now);
        assert_eq!((n.replicas, n.limited, n.limit_reason), (5, true, "ScaleUpLimit"));
        record(&mut h, &up, &down, 1, 5, now);
        // Within the same 15 s the period started at 1, so 5 is still the limit.
        let n = normalize(&mut h, &up, &down, 5, 20, 1, 10, now + Duration::from_secs(5));
        assert_eq!(n.replicas, 5);
        // Max bounds it.
        let n = normalize(&mut h, &up, &down, 5, 20, 1, 10, now + Duration::from_secs(20));
        assert_eq!((n.replicas, n.limit_reason), (10, "TooManyReplicas"));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let (up, mut down) = rules(None);
        down.window = Duration::from_secs(10);
        let mut h = History::default();
        let t0 = Instant::now();
        let n = normalize(&mut h, &up, &down, 4, 1, 1, 10, t0);
        assert_eq!(n.replicas, 4, "the window holds the highest recent recommendation (the current size)");
        assert_eq!(n.stabilized.map(|s| s.0), Some("ScaleDownStabilized"));
        let n = normalize(&mut h, &up, &down, 4, 1, 1, 10, t0 + Duration::from_secs(11));
        assert_eq!(n.replicas, 1);
        assert_eq!(n.stabilized, None);
        // minReplicas bounds it.
        let mut h = History::default();
        let n = normalize(&mut h, &up, &rules(None).1.clone(), 4, 0, 2, 10, t0);
        assert_eq!(n.replicas, 4);
        let d0 = Rules { window: Duration::ZERO, ..rules(None).1 };
        let n = normalize(&mut History::default(), &up, &d0, 4, 0, 2, 10, t0);
        assert_eq!((n.replicas, n.limit_reason), (2, "TooFewReplicas"));
    }
}
