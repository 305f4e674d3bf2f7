//! Resource quantities (`resource.Quantity`: "500m", "1.5", "8Gi", "1e3") as integers, enough for
//! the scheduler's arithmetic. Values are rounded up, as upstream's `MilliValue`/`Value` do.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The quantity in thousandths (cpu in millicores). None when it does not parse.
pub fn milli(q: &str) -> Option<i64> {
    scaled(q, 1000.0)
}

/// The quantity in units (memory in bytes). None when it does not parse.
pub fn value(q: &str) -> Option<i64> {
    scaled(q, 1.0)
}

/// `milli` of a k8s-openapi quantity, 0 when unparsable.
pub fn milli_of(q: &Quantity) -> i64 {
    milli(&q.0).unwrap_or(0)
}

/// `value` of a k8s-openapi quantity, 0 when unparsable.
pub fn value_of(q: &Quantity) -> i64 {
    value(&q.0).unwrap_or(0)
}

fn scaled(q: &str, unit: f64) -> Option<i64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let v = (n * mult * unit).ceil();
    (v.is_finite() && v.abs() < 9.2e18).then_some(v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(value("8Gi"), Some(8 * 1024 * 1024 * 1024));
        assert_eq!(value("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("1M"), Some(1_000_000));
        assert_eq!(milli("1n"), Some(1), "rounded up");
        assert_eq!(value("abc"), None);
        assert_eq!(value("1Zi"), None);
    }
}
