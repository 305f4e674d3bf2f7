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

/// How upstream's `resource.Quantity` records a quantity's format: by its suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

impl Format {
    fn go_name(self) -> &'static str {
        match self {
            Format::DecimalSi => "DecimalSI",
            Format::BinarySi => "BinarySI",
            Format::DecimalExponent => "DecimalExponent",
        }
    }
}

/// Upstream's `parseQuantityString` plus the suffix lookup: (positive, numerator digits without
/// leading zeros, fraction digits, format, exponent), or None when it does not parse.
fn split(q: &str) -> Option<(bool, String, String, Format, i32)> {
    let b = q.as_bytes();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < b.len() && b[pos] == b'0' {
        pos += 1;
    }
    let start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = q[start..pos].to_string();
    if num.is_empty() {
        num = "0".into();
    }
    let mut denom = String::new();
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let s = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = q[s..pos].to_string();
    }
    let (format, exponent) = match &q[pos..] {
        "" => (Format::DecimalSi, 0),
        "n" => (Format::DecimalSi, -9),
        "u" => (Format::DecimalSi, -6),
        "m" => (Format::DecimalSi, -3),
        "k" => (Format::DecimalSi, 3),
        "M" => (Format::DecimalSi, 6),
        "G" => (Format::DecimalSi, 9),
        "T" => (Format::DecimalSi, 12),
        "P" => (Format::DecimalSi, 15),
        "E" => (Format::DecimalSi, 18),
        "Ki" => (Format::BinarySi, 10),
        "Mi" => (Format::BinarySi, 20),
        "Gi" => (Format::BinarySi, 30),
        "Ti" => (Format::BinarySi, 40),
        "Pi" => (Format::BinarySi, 50),
        "Ei" => (Format::BinarySi, 60),
        s if s.len() > 1 && s.starts_with(['e', 'E']) => (Format::DecimalExponent, s[1..].parse().ok()?),
        _ => return None,
    };
    Some((positive, num, denom, format, exponent))
}

/// The quantity as upstream's `Quantity.String()` prints it (its canonical form): `1500m`, `2`,
/// `10Gi`, `1536Mi`, `1G`, `1e3`. Fractions beyond nanos are dropped. None when it does not parse.
pub fn canonical(q: &str) -> Option<String> {
    let q = q.trim();
    let (_, _, _, mut format, _) = split(q)?;
    let n = nanos(q)?;
    if n == 0 {
        return Some("0".into());
    }
    const NANO: i128 = 1_000_000_000;
    if format == Format::BinarySi && (n.abs() < 1024 * NANO || n % NANO != 0) {
        format = Format::DecimalSi;
    }
    if format == Format::BinarySi {
        let mut v = n / NANO;
        let mut e = 0;
        while e < 6 && v % 1024 == 0 {
            v /= 1024;
            e += 1;
        }
        return Some(format!("{v}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][e]));
    }
    let (mut mantissa, mut exp) = (n, -9i32);
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exp += 1;
    }
    let r = exp.rem_euclid(3);
    mantissa *= 10i128.pow(r as u32);
    exp -= r;
    let suffix = match (format, exp) {
        (Format::DecimalExponent, 0) => String::new(),
        (Format::DecimalExponent, e) => format!("e{e}"),
        (_, -9) => "n".into(),
        (_, -6) => "u".into(),
        (_, -3) => "m".into(),
        (_, 0) => String::new(),
        (_, 3) => "k".into(),
        (_, 6) => "M".into(),
        (_, 9) => "G".into(),
        (_, 12) => "T".into(),
        (_, 15) => "P".into(),
        (_, 18) => "E".into(),
        (_, e) => format!("e{e}"),
    };
    Some(format!("{mantissa}{suffix}"))
}

/// The quantity as upstream's field errors print a `resource.Quantity` value (Go's `%#v`, the
/// struct `ParseQuantity` builds): `resource.Quantity{i:resource.int64Amount{value:10737418240,
/// scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:"10Gi", Format:"BinarySI"}`. Upstream
/// keeps the text in `s` only when it is already canonical. A quantity its fast path does not take
/// (`1.5Gi`, more than 18 digits) is an `inf.Dec` there, printed by its address, which differs on
/// every run; it is printed here with a zero address.
pub fn go_repr(q: &str) -> String {
    let q = q.trim();
    let dec = |format: Format| {
        format!(
            "resource.Quantity{{i:resource.int64Amount{{value:0, scale:0}}, d:resource.infDecAmount{{Dec:(*inf.Dec)(0xc000000000)}}, s:\"\", Format:\"{}\"}}",
            format.go_name()
        )
    };
    let int = |value: i64, scale: i32, s: &str, format: Format| {
        format!(
            "resource.Quantity{{i:resource.int64Amount{{value:{value}, scale:{scale}}}, d:resource.infDecAmount{{Dec:(*inf.Dec)(nil)}}, s:{s:?}, Format:\"{}\"}}",
            format.go_name()
        )
    };
    if q == "0" {
        return int(0, 0, "0", Format::DecimalSi);
    }
    let Some((positive, num, denom, format, exponent)) = split(q) else {
        return format!("{q:?}");
    };
    let (mut scale, precision, mantissa) = match format {
        Format::DecimalSi | Format::DecimalExponent => (exponent, 18 - (num.len() + denom.len()) as i32, 1i64),
        Format::BinarySi if denom.is_empty() => {
            (0, 15 - num.len() as i32 - (exponent as f32 * 3.0 / 10.0) as i32 - 1, 1i64 << exponent)
        }
        Format::BinarySi => (0, -1, 1),
    };
    if precision >= 0 {
        scale -= denom.len() as i32;
        if scale >= -9 {
            let shifted = format!("{num}{denom}");
            if let Ok(value) = shifted.parse::<i64>() {
                if let Some(mut result) = value.checked_mul(mantissa) {
                    if !positive {
                        result = -result;
                    }
                    let canonical = match format {
                        Format::BinarySi => exponent % 10 == 0 && value & 7 != 0,
                        _ => scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0'),
                    };
                    return int(result, scale, if canonical { q } else { "" }, format);
                }
            }
        }
    }
    dec(format)
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

    #[test]
    fn canonical_forms_and_go_values_as_upstream_prints_them() {
        for (q, want) in [
            ("1500m", "1500m"),
            ("2000m", "2"),
            ("1.5", "1500m"),
            ("10Gi", "10Gi"),
            ("1536Mi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("512Ki", "512Ki"),
            ("100", "100"),
            ("1000M", "1G"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("-500m", "-500m"),
        ] {
            assert_eq!(canonical(q).as_deref(), Some(want), "{q}");
        }
        assert_eq!(
            go_repr("10Gi"),
            "resource.Quantity{i:resource.int64Amount{value:10737418240, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"10Gi\", Format:\"BinarySI\"}"
        );
        assert_eq!(
            go_repr("8Gi"),
            "resource.Quantity{i:resource.int64Amount{value:8589934592, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"\", Format:\"BinarySI\"}"
        );
        assert_eq!(
            go_repr("500m"),
            "resource.Quantity{i:resource.int64Amount{value:500, scale:-3}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"500m\", Format:\"DecimalSI\"}"
        );
        assert_eq!(
            go_repr("0.5"),
            "resource.Quantity{i:resource.int64Amount{value:5, scale:-1}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"\", Format:\"DecimalSI\"}"
        );
        assert_eq!(
            go_repr("1000"),
            "resource.Quantity{i:resource.int64Amount{value:1000, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"\", Format:\"DecimalSI\"}"
        );
    }
}
