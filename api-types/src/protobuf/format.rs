//! The JSON text forms Go gives values that protobuf carries as numbers or bytes: base64 for
//! `[]byte`, RFC 3339 for `metav1.Time`/`MicroTime`, and `time.Duration`'s `String()`.

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A UTC instant as RFC 3339: `2024-01-02T03:04:05Z`, or with `micros` six fractional digits as
/// `metav1.MicroTime` marshals. `None` when the year is outside 0..=9999, which Go's
/// `Time.MarshalJSON` refuses too.
pub(crate) fn rfc3339(seconds: i64, nanos: i32, micros: bool) -> Option<String> {
    // time.Unix normalizes nanos outside [0, 1e9), so the sum is taken before splitting.
    let total = i128::from(seconds) * NANOS_PER_SECOND + i128::from(nanos);
    let secs = total.div_euclid(NANOS_PER_SECOND);
    let frac = total.rem_euclid(NANOS_PER_SECOND);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).ok()?);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let date = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    Some(if micros { format!("{date}.{:06}Z", frac / 1000) } else { format!("{date}Z") })
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by Howard Hinnant's
/// `civil_from_days`, which is exact for the whole range used here.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`: `1h0m0s`, `1.5s`, `300ms`, `0s`.
pub(crate) fn go_duration(nanos: i64) -> String {
    let negative = nanos < 0;
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Under a second Go picks the largest unit that keeps the integer part non-zero.
        let (unit, scale) = match u {
            0 => return "0s".to_string(),
            1..=999 => ("ns", 1),
            1_000..=999_999 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        out.push_str(&fraction(u, scale));
        out.push_str(unit);
    } else {
        let secs = fraction(u % 60_000_000_000, 1_000_000_000);
        u /= 60_000_000_000;
        let (hours, minutes) = (u / 60, u % 60);
        if hours > 0 {
            out.push_str(&format!("{hours}h{minutes}m"));
        } else if minutes > 0 {
            out.push_str(&format!("{minutes}m"));
        }
        out.push_str(&secs);
        out.push('s');
    }
    if negative {
        out.insert(0, '-');
    }
    out
}

/// `value / scale` with the remainder as trailing-zero-free decimals, as Go prints durations.
fn fraction(value: u64, scale: u64) -> String {
    let (whole, rem) = (value / scale, value % scale);
    if rem == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let frac = format!("{rem:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn rfc3339_matches_go() {
        assert_eq!(rfc3339(0, 0, false).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_164_645, 999, false).unwrap(), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(1_704_164_645, 123_456_789, true).unwrap(), "2024-01-02T03:04:05.123456Z");
        assert_eq!(rfc3339(951_782_400, 0, false).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1, 0, false).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(0, -1000, true).unwrap(), "1969-12-31T23:59:59.999999Z");
        // Go's zero time, 0001-01-01, is still in range; year 10000 is not.
        assert_eq!(rfc3339(-62_135_596_800, 0, false).unwrap(), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_800, 0, false), None);
        assert_eq!(rfc3339(i64::MIN, i32::MIN, false), None);
    }

    #[test]
    fn durations_match_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(7), "7ns");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }
}
