//! Upstream's human-readable durations (`k8s.io/apimachinery/pkg/util/duration`), as kubectl shows them
//! in AGE, LAST SEEN and RESTARTS cells. Kept bit-for-bit compatible with the Go functions, including
//! their tolerance of small negative durations (clock skew) and Go's `time.Duration` range.

use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;

/// `HumanDuration`: ~2-3 significant figures (`45s`, `3m2s`, `10m`, `5h3m`, `3d5h`, `400d`, `2y30d`).
pub fn human_duration(d: Duration) -> String {
    human_duration_nanos(std_to_nanos(d))
}

/// `ShortHumanDuration`: one unit only (`45s`, `3m`, `5h`, `3d`, `2y`).
pub fn short_human_duration(d: Duration) -> String {
    short_human_duration_nanos(std_to_nanos(d))
}

/// Go's `time.Duration` is an i64 of nanoseconds; longer spans saturate there, so we do the same to
/// print what upstream prints for absurdly old timestamps.
fn std_to_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The signed form: the API server computes `now - timestamp`, which is negative for timestamps in
/// the future (another machine's clock).
pub(crate) fn human_duration_nanos(d: i64) -> String {
    // Integer division truncates toward zero, exactly like Go's `int(d.Seconds())`.
    let seconds = d / NANOS_PER_SECOND;
    // Up to two seconds in the future is clock skew and reads as "now"; beyond is nonsense.
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / NANOS_PER_MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / NANOS_PER_HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

pub(crate) fn short_human_duration_nanos(d: i64) -> String {
    let seconds = d / NANOS_PER_SECOND;
    if seconds < -1 {
        "<invalid>".to_string()
    } else if seconds < 0 {
        "0s".to_string()
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if d / NANOS_PER_MINUTE < 60 {
        format!("{}m", d / NANOS_PER_MINUTE)
    } else if d / NANOS_PER_HOUR < 24 {
        format!("{}h", d / NANOS_PER_HOUR)
    } else if d / NANOS_PER_HOUR < 24 * 365 {
        format!("{}d", d / NANOS_PER_HOUR / 24)
    } else {
        format!("{}y", d / NANOS_PER_HOUR / 24 / 365)
    }
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when it is unset.
pub(crate) fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        None => "<unknown>".to_string(),
        Some(ts) => {
            // Go's Time.Sub saturates at the i64 range rather than overflowing; mirror it.
            let nanos = now.as_nanosecond() - ts.as_nanosecond();
            let nanos = i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX });
            human_duration_nanos(nanos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> String {
        human_duration(Duration::from_secs(s))
    }

    #[test]
    fn human_duration_boundaries() {
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(5), "5s");
        assert_eq!(secs(119), "119s");
        assert_eq!(secs(120), "2m");
        assert_eq!(secs(182), "3m2s");
        assert_eq!(secs(599), "9m59s");
        assert_eq!(secs(600), "10m");
        assert_eq!(secs(3 * 3600 - 1), "179m");
        assert_eq!(secs(3 * 3600), "3h");
        assert_eq!(secs(5 * 3600 + 7 * 60 + 30), "5h7m");
        assert_eq!(secs(8 * 3600 - 1), "7h59m");
        assert_eq!(secs(8 * 3600), "8h");
        assert_eq!(secs(47 * 3600 + 59 * 60), "47h");
        assert_eq!(secs(48 * 3600), "2d");
        assert_eq!(secs((3 * 24 + 5) * 3600), "3d5h");
        assert_eq!(secs((8 * 24 - 1) * 3600), "7d23h");
        assert_eq!(secs(8 * 24 * 3600), "8d");
        assert_eq!(secs((2 * 365 - 1) * 24 * 3600), "729d");
        assert_eq!(secs(2 * 365 * 24 * 3600), "2y");
        assert_eq!(secs((2 * 365 + 30) * 24 * 3600), "2y30d");
        assert_eq!(secs((8 * 365 - 1) * 24 * 3600), "7y364d");
        assert_eq!(secs(8 * 365 * 24 * 3600), "8y");
        assert_eq!(secs(20 * 365 * 24 * 3600 + 100), "20y");
        // Sub-second precision truncates, as Go's int(d.Seconds()) does.
        assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
        // Beyond Go's time.Duration range saturates to ~292 years.
        assert_eq!(human_duration(Duration::from_secs(u64::MAX)), "292y");
    }

    #[test]
    fn negative_durations_tolerate_skew() {
        assert_eq!(human_duration_nanos(-1), "0s");
        assert_eq!(human_duration_nanos(-1_999_999_999), "0s");
        assert_eq!(human_duration_nanos(-2 * NANOS_PER_SECOND), "<invalid>");
        assert_eq!(human_duration_nanos(i64::MIN), "<invalid>");
        assert_eq!(short_human_duration_nanos(-1_500_000_000), "0s");
        assert_eq!(short_human_duration_nanos(-3 * NANOS_PER_SECOND), "<invalid>");
    }

    #[test]
    fn short_human_duration_boundaries() {
        let s = |n: u64| short_human_duration(Duration::from_secs(n));
        assert_eq!(s(59), "59s");
        assert_eq!(s(60), "1m");
        assert_eq!(s(3599), "59m");
        assert_eq!(s(3600), "1h");
        assert_eq!(s(24 * 3600 - 1), "23h");
        assert_eq!(s(24 * 3600), "1d");
        assert_eq!(s(365 * 24 * 3600 - 1), "364d");
        assert_eq!(s(365 * 24 * 3600), "1y");
        assert_eq!(s(3 * 365 * 24 * 3600 + 5), "3y");
    }

    #[test]
    fn since_handles_unknown_future_and_past() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        assert_eq!(since(None, now), "<unknown>");
        assert_eq!(since(Some("2024-05-01T11:55:00Z".parse().unwrap()), now), "5m");
        assert_eq!(since(Some("2024-05-01T12:00:01Z".parse().unwrap()), now), "0s");
        assert_eq!(since(Some("2024-05-01T12:00:10Z".parse().unwrap()), now), "<invalid>");
        // Year 1 to 2024 overflows Go's Duration; it saturates rather than wrapping.
        assert_eq!(since(Some("0001-01-02T00:00:00Z".parse().unwrap()), now), "292y");
    }
}
