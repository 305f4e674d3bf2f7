//! Indexed completion mode: completion indexes on pods, and upstream's interval strings
//! (`status.completedIndexes`, `status.failedIndexes`, `successPolicy.rules[].succeededIndexes`):
//! sorted, comma-separated, consecutive runs written `a-b`, e.g. `"1,3-5"`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

/// The annotation (and label) carrying a pod's completion index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// How many earlier pods of the same index failed (backoffLimitPerIndex).
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
/// The env var every container of an Indexed Job's pod gets.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// A pod's completion index, from its annotation (upstream's `getCompletionIndex`); `None` when
/// absent or malformed.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    let v = pod.metadata.annotations.as_ref()?.get(INDEX_ANNOTATION)?;
    v.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// How many earlier pods of this pod's index failed (0 when unset).
pub fn pod_index_failure_count(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Parses an interval string, keeping the indexes below `completions` (upstream ignores the rest).
/// Malformed parts are skipped.
pub fn parse(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<i32>(), b.trim().parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(a), Ok(b)) = (a, b) else { continue };
        if a < 0 || b < a {
            continue;
        }
        for i in a..=b.min(completions - 1) {
            out.insert(i);
        }
    }
    out
}

/// Formats indexes as an interval string; empty for none.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip() {
        let s: BTreeSet<i32> = [1, 3, 4, 5, 7, 9, 10].into_iter().collect();
        assert_eq!(format(&s), "1,3-5,7,9-10");
        assert_eq!(parse("1,3-5,7,9-10", 100), s);
        assert_eq!(format(&BTreeSet::new()), "");
        assert!(parse("", 5).is_empty());
    }

    #[test]
    fn parse_drops_out_of_range_and_garbage() {
        let s = parse("0,2-9,x,5-3,-1", 4);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![0, 2, 3]);
    }
}
