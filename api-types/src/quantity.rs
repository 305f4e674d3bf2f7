//! Resource quantities (`resource.Quantity`: "500m", "1.5", "8Gi", "1e3", "1500000n") as integers,
//! for the quota, the scheduler, the kubelet's usage and the HPA: parsed exactly in units of
//! 10^-9, then rounded up as upstream's `MilliValue`/`Value` do. None when it does not parse (typed
//! decoding refuses those already) or does not fit.

/// The quantity in units of 10^-9 (fractions beyond nine digits dropped).
pub fn nanos(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let negative = int.starts_with('-');
    let int = int.strip_prefix(['+', '-']).unwrap_or(int);
    if (int.is_empty() && frac.is_empty()) || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: String = frac.chars().take(9).collect();
    let whole = if int.is_empty() { 0 } else { int.parse::<i128>().ok()? };
    let mut n: i128 = whole.checked_mul(1_000_000_000)?;
    if !frac.is_empty() {
        n += frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32);
    }
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            if exp >= 0 {
                (10i128.checked_pow(exp as u32)?, 1)
            } else {
                (1, 10i128.checked_pow(exp.unsigned_abs())?)
            }
        }
        _ => return None,
    };
    let value = n.checked_mul(mul)? / div;
    Some(if negative { -value } else { value })
}

/// Rounds `n / d` up (towards +∞).
fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 {
        q + 1
    } else {
        q
    }
}

/// The quantity in thousandths (cpu in millicores), rounded up: `1500000n` → 2.
pub fn milli_wide(q: &str) -> Option<i128> {
    nanos(q).map(|n| ceil_div(n, 1_000_000))
}

/// [`milli_wide`] when it fits an i64.
pub fn milli(q: &str) -> Option<i64> {
    milli_wide(q).and_then(|v| i64::try_from(v).ok())
}

/// The quantity in units (memory in bytes), rounded up: `1n` → 1.
pub fn value(q: &str) -> Option<i64> {
    nanos(q).and_then(|n| i64::try_from(ceil_div(n, 1_000_000_000)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_forms_rounding_up() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli(".5"), Some(500));
        assert_eq!(milli("250m"), Some(250));
        assert_eq!(milli("1500000n"), Some(2), "rounded up");
        assert_eq!(milli("1n"), Some(1), "rounded up");
        assert_eq!(milli("-500m"), Some(-500));
        assert_eq!(milli_wide("1Gi"), Some(1_073_741_824_000));
        assert_eq!(milli_wide("256Mi"), Some(268_435_456_000));
        assert_eq!(milli_wide("2k"), Some(2_000_000));
        assert_eq!(milli_wide("1e3"), Some(1_000_000));
        assert_eq!(milli_wide("1Ei"), Some(1_152_921_504_606_846_976_000));
        assert_eq!(milli("1Ei"), None, "does not fit an i64");
        assert_eq!(value("8Gi"), Some(8 * 1024 * 1024 * 1024));
        assert_eq!(value("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("1M"), Some(1_000_000));
        assert_eq!(value("1e-3"), Some(1), "rounded up");
        assert_eq!(value("1n"), Some(1), "rounded up");
        for bad in ["", "x", "abc", "1Zi", "1.2.3", "--1", "1e", "+"] {
            assert_eq!(nanos(bad), None, "{bad}");
        }
    }
}
