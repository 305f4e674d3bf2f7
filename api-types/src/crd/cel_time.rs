//! CEL `timestamp` and `duration` values for `x-kubernetes-validations` (the `cel` crate's own are
//! behind its `chrono` feature, which needs `chrono-tz`): `timestamp(string)` (RFC 3339),
//! `duration(string)` (Go's `time.ParseDuration` form: `1h30m`, `1.5s`, `300ms`), `string()` and
//! `int()` of them, `==`, `<`…, `+`/`-` (timestamp ± duration, timestamp − timestamp, duration ±
//! duration), and the accessors `getFullYear`, `getMonth`, `getDate`, `getDayOfMonth`,
//! `getDayOfWeek`, `getDayOfYear`, `getHours`, `getMinutes`, `getSeconds`, `getMilliseconds` (on
//! timestamps in UTC, or with a fixed `±hh:mm`/`UTC` zone argument; on durations as totals).
//! Schema strings with `format: date-time` or `format: duration` are handed to rules as these
//! values ([`from_schema_string`]), as upstream does. Values are exact in nanoseconds; durations
//! are bounded as Go's `time.Duration` (±292 years) and timestamps to the years 1–9999.

use std::any::Any;
use std::cmp::Ordering;

use cel::common::traits::{Adder, Comparer, Subtractor};
use cel::common::types::{CelInt, CelString, Kind, Type, INT_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

const NANOS: i128 = 1_000_000_000;
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z in nanoseconds from the Unix epoch.
const MIN_TS: i128 = -62_135_596_800 * NANOS;
const MAX_TS: i128 = 253_402_300_800 * NANOS - 1;

pub const TIMESTAMP_NAME: &str = "google.protobuf.Timestamp";
pub const DURATION_NAME: &str = "google.protobuf.Duration";
static TIMESTAMP_TYPE: Type = Type::simple_type(Kind::Opaque, TIMESTAMP_NAME);
static DURATION_TYPE: Type = Type::simple_type(Kind::Opaque, DURATION_NAME);

/// Nanoseconds since the Unix epoch, and the UTC offset (seconds) it was written with, which
/// only `string()` shows (as Go's `time.Time` keeps its location); equal and ordered by instant.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp(i128, i32);

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Nanoseconds, within Go's `time.Duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(i128);

fn overflow(op: &str) -> ExecutionError {
    ExecutionError::function_error(op, "timestamp or duration overflow")
}

fn ts(n: i128, offset: i32, op: &str) -> Result<Timestamp, ExecutionError> {
    if (MIN_TS..=MAX_TS).contains(&n) {
        Ok(Timestamp(n, offset))
    } else {
        Err(overflow(op))
    }
}

fn dur(n: i128, op: &str) -> Result<Duration, ExecutionError> {
    if (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&n) {
        Ok(Duration(n))
    } else {
        Err(overflow(op))
    }
}

fn unsupported(op: &str, a: &dyn Val, b: &dyn Val) -> ExecutionError {
    ExecutionError::no_such_overload(op, vec![a.get_type().name().to_string(), b.get_type().name().to_string()])
}

fn as_ts(v: &dyn Val) -> Option<Timestamp> {
    v.as_any().and_then(|a| a.downcast_ref::<Timestamp>()).copied()
}

fn as_dur(v: &dyn Val) -> Option<Duration> {
    v.as_any().and_then(|a| a.downcast_ref::<Duration>()).copied()
}

macro_rules! val {
    ($t:ident, $ty:ident) => {
        impl Val for $t {
            fn get_type(&self) -> &Type {
                &$ty
            }
            fn cel_type() -> &'static Type {
                &$ty
            }
            fn equals(&self, other: &dyn Val) -> bool {
                other.as_any().and_then(|a| a.downcast_ref::<$t>()) == Some(self)
            }
            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
                Box::new(*self)
            }
            fn as_any(&self) -> Option<&dyn Any> {
                Some(self)
            }
            fn as_comparer(&self) -> Option<&dyn Comparer> {
                Some(self)
            }
            fn as_adder<'b, 'v>(&'b self) -> Option<&'b (dyn Adder + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }
            fn as_subtractor<'b, 'v>(&'b self) -> Option<&'b (dyn Subtractor + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }
        }
        impl StaticVal for $t {}
        impl Comparer for $t {
            fn compare(&self, rhs: &dyn Val) -> Result<Ordering, ExecutionError> {
                match rhs.as_any().and_then(|a| a.downcast_ref::<$t>()) {
                    Some(o) => Ok(self.cmp(o)),
                    None => Err(unsupported("_<_", self, rhs)),
                }
            }
        }
    };
}
val!(Timestamp, TIMESTAMP_TYPE);
val!(Duration, DURATION_TYPE);

impl Adder for Timestamp {
    fn add<'b, 'v>(&'b self, rhs: &(dyn Val + 'v)) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let d = as_dur(rhs).ok_or_else(|| unsupported("_+_", self, rhs))?;
        Ok(CowVal::owned(ts(self.0 + d.0, self.1, "_+_")?))
    }
}

impl Subtractor for Timestamp {
    fn sub<'b, 'v>(&'b self, rhs: &(dyn Val + 'v)) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        if let Some(d) = as_dur(rhs) {
            return Ok(CowVal::owned(ts(self.0 - d.0, self.1, "_-_")?));
        }
        let t = as_ts(rhs).ok_or_else(|| unsupported("_-_", self, rhs))?;
        Ok(CowVal::owned(dur(self.0 - t.0, "_-_")?))
    }
}

impl Adder for Duration {
    fn add<'b, 'v>(&'b self, rhs: &(dyn Val + 'v)) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        if let Some(t) = as_ts(rhs) {
            return Ok(CowVal::owned(ts(self.0 + t.0, t.1, "_+_")?));
        }
        let d = as_dur(rhs).ok_or_else(|| unsupported("_+_", self, rhs))?;
        Ok(CowVal::owned(dur(self.0 + d.0, "_+_")?))
    }
}

impl Subtractor for Duration {
    fn sub<'b, 'v>(&'b self, rhs: &(dyn Val + 'v)) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let d = as_dur(rhs).ok_or_else(|| unsupported("_-_", self, rhs))?;
        Ok(CowVal::owned(dur(self.0 - d.0, "_-_")?))
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and printing.

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// RFC 3339 (`2006-01-02T15:04:05.999999999Z07:00`), as Go's `time.Parse(time.RFC3339, s)`
/// accepts it.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    let bad = || format!("parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {s:?}");
    let b = s.as_bytes();
    let num = |from: usize, n: usize| -> Result<i64, String> {
        let d = b.get(from..from + n).ok_or_else(bad)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(d.iter().fold(0, |a, c| a * 10 + i64::from(c - b'0')))
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (num(0, 4)?, num(5, 2)?, num(8, 2)?, num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut pos = 19;
    let mut frac: i128 = 0;
    if b.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start || end - start > 9 {
            return Err(bad());
        }
        let digits = &s[start..end];
        frac = digits.parse::<i128>().map_err(|_| bad())? * 10i128.pow(9 - digits.len() as u32);
        pos = end;
    }
    let offset = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let (oh, om) = (num(pos + 1, 2)?, num(pos + 4, 2)?);
            if oh > 23 || om > 59 {
                return Err(format!("parsing time {s:?}: time zone offset out of range"));
            }
            let o = oh * 3600 + om * 60;
            if *c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(bad()),
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let mdays = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) {
        return Err(format!("parsing time {s:?}: month out of range"));
    }
    if d < 1 || d > mdays[(mo - 1) as usize] {
        return Err(format!("parsing time {s:?}: day out of range"));
    }
    if h > 23 || mi > 59 || sec > 59 {
        let what = if h > 23 {
            "hour"
        } else if mi > 59 {
            "minute"
        } else {
            "second"
        };
        return Err(format!("parsing time {s:?}: {what} out of range"));
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let n = i128::from(secs) * NANOS + frac;
    if !(MIN_TS..=MAX_TS).contains(&n) {
        return Err(format!("parsing time {s:?}: year outside of range [1,9999]"));
    }
    Ok(Timestamp(n, offset as i32))
}

/// Go's `time.ParseDuration`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration(0));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let int = &rest[..int_end];
        rest = &rest[int_end..];
        let mut frac = "";
        if let Some(r) = rest.strip_prefix('.') {
            let e = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac = &r[..e];
            rest = &r[e..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_end = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: i128 = match unit {
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS,
            "m" => 60 * NANOS,
            "h" => 3600 * NANOS,
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| invalid())? };
        let mut v = whole.checked_mul(scale).ok_or_else(invalid)?;
        if !frac.is_empty() {
            let digits: String = frac.chars().take(18).collect();
            let f: i128 = digits.parse().map_err(|_| invalid())?;
            v += f * scale / 10i128.pow(digits.len() as u32);
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) + 1 {
            return Err(invalid());
        }
    }
    let n = if neg { -total } else { total };
    if n > i128::from(i64::MAX) {
        return Err(invalid());
    }
    Ok(Duration(n))
}

/// `Z` or `±hh:mm`.
fn zone(offset: i32) -> String {
    if offset == 0 {
        return "Z".into();
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

fn frac_digits(nanos: i128) -> String {
    if nanos == 0 {
        return String::new();
    }
    let s = format!(".{nanos:09}");
    s.trim_end_matches('0').to_string()
}

impl Timestamp {
    /// RFC 3339 with trimmed fractional seconds in the offset it was written with
    /// (`time.RFC3339Nano`: `Z` for a zero offset).
    pub fn rfc3339(&self) -> String {
        let local = self.0 + i128::from(self.1) * NANOS;
        let secs = local.div_euclid(NANOS) as i64;
        let nanos = local.rem_euclid(NANOS);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}{}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            frac_digits(nanos),
            zone(self.1)
        )
    }
}

impl Duration {
    /// cel-go's `string(duration)`: seconds with an `s`.
    pub fn seconds_string(&self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.abs();
        format!("{sign}{}{}s", a / NANOS, frac_digits(a % NANOS))
    }
}

/// A schema string of `format: date-time` or `duration` as the value upstream gives rules; None
/// for other formats or a string that does not parse.
pub fn from_schema_string(format: &str, s: &str) -> Option<Box<dyn Val + 'static>> {
    match format {
        "date-time" => parse_timestamp(s).ok().map(|t| Box::new(t) as Box<dyn Val>),
        "duration" => parse_duration(s).ok().map(|d| Box::new(d) as Box<dyn Val>),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Functions.

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let t = || Type::simple_type(Kind::Opaque, TIMESTAMP_NAME);
    let d = || Type::simple_type(Kind::Opaque, DURATION_NAME);
    env.add_overload("timestamp", "string_to_timestamp", vec![STRING_TYPE], to_timestamp)?;
    env.add_overload("timestamp", "timestamp_to_timestamp", vec![t()], identity)?;
    env.add_overload("timestamp", "int64_to_timestamp", vec![INT_TYPE], int_to_timestamp)?;
    env.add_overload("duration", "string_to_duration", vec![STRING_TYPE], to_duration)?;
    env.add_overload("duration", "duration_to_duration", vec![d()], identity)?;
    env.add_overload("string", "timestamp_to_string", vec![t()], to_string)?;
    env.add_overload("string", "duration_to_string", vec![d()], to_string)?;
    env.add_overload("int", "timestamp_to_int64", vec![t()], to_int)?;
    env.add_overload("int", "duration_to_int64", vec![d()], to_int)?;
    macro_rules! accessors {
        ($($name:literal => $f:ident),*) => {$(
            fn $f<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
                access($name, args)
            }
            env.add_member_overload($name, concat!("timestamp_", $name), t(), vec![], $f)?;
            env.add_member_overload($name, concat!("timestamp_", $name, "_with_tz"), t(), vec![STRING_TYPE], $f)?;
        )*};
    }
    accessors!("getFullYear" => get_full_year, "getMonth" => get_month, "getDate" => get_date,
        "getDayOfMonth" => get_day_of_month, "getDayOfWeek" => get_day_of_week, "getDayOfYear" => get_day_of_year,
        "getHours" => get_hours, "getMinutes" => get_minutes, "getSeconds" => get_seconds,
        "getMilliseconds" => get_milliseconds);
    env.add_member_overload("getHours", "duration_getHours", d(), vec![], get_hours)?;
    env.add_member_overload("getMinutes", "duration_getMinutes", d(), vec![], get_minutes)?;
    env.add_member_overload("getSeconds", "duration_getSeconds", d(), vec![], get_seconds)?;
    env.add_member_overload("getMilliseconds", "duration_getMilliseconds", d(), vec![], get_milliseconds)?;
    Ok(())
}

fn one<'b, 'v>(f: &str, args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let n = args.len();
    let [a]: [CowVal<'b, 'v>; 1] = args
        .try_into()
        .map_err(|_| ExecutionError::function_error(f, format!("expected 1 argument, got {n}")))?;
    Ok(a)
}

fn string_of<'a>(f: &str, v: &'a dyn Val) -> Result<&'a str, ExecutionError> {
    v.downcast_ref::<CelString<'_>>()
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::no_such_overload(f, vec![v.get_type().name().to_string()]))
}

fn identity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    one("timestamp", args)
}

fn to_timestamp<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let a = one("timestamp", args)?;
    parse_timestamp(string_of("timestamp", a.as_ref())?)
        .map(CowVal::owned)
        .map_err(|e| ExecutionError::function_error("timestamp", e))
}

fn int_to_timestamp<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let a = one("timestamp", args)?;
    let secs = a
        .downcast_ref::<CelInt>()
        .map(|i| *i.inner())
        .ok_or_else(|| ExecutionError::no_such_overload("timestamp", vec![a.get_type().name().to_string()]))?;
    Ok(CowVal::owned(ts(i128::from(secs) * NANOS, 0, "timestamp")?))
}

fn to_duration<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let a = one("duration", args)?;
    parse_duration(string_of("duration", a.as_ref())?)
        .map(CowVal::owned)
        .map_err(|e| ExecutionError::function_error("duration", e))
}

fn to_string<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let a = one("string", args)?;
    let s = match (as_ts(a.as_ref()), as_dur(a.as_ref())) {
        (Some(t), _) => t.rfc3339(),
        (_, Some(d)) => d.seconds_string(),
        _ => return Err(ExecutionError::no_such_overload("string", vec![a.get_type().name().to_string()])),
    };
    Ok(CowVal::owned(CelString::from(s)))
}

fn to_int<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let a = one("int", args)?;
    let n = match (as_ts(a.as_ref()), as_dur(a.as_ref())) {
        (Some(t), _) => t.0.div_euclid(NANOS),
        (_, Some(d)) => d.0,
        _ => return Err(ExecutionError::no_such_overload("int", vec![a.get_type().name().to_string()])),
    };
    Ok(CowVal::owned(CelInt::from(n as i64)))
}

/// A fixed zone: `UTC`, `Z`, or `±hh:mm` (IANA names are not supported).
fn zone_offset(z: &str) -> Result<i64, ExecutionError> {
    if z == "UTC" || z == "Z" {
        return Ok(0);
    }
    let b = z.as_bytes();
    let parse = |r: &str| r.parse::<i64>().ok();
    if b.len() == 6 && matches!(b[0], b'+' | b'-') && b[3] == b':' {
        if let (Some(h), Some(m)) = (parse(&z[1..3]), parse(&z[4..6])) {
            let o = h * 3600 + m * 60;
            return Ok(if b[0] == b'-' { -o } else { o });
        }
    }
    Err(ExecutionError::function_error("timezone", format!("unknown time zone {z}")))
}

/// `name` of a timestamp (in UTC or the given zone) or of a duration (its total).
fn access<'b, 'v>(name: &str, args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let mut it = args.into_iter();
    let Some(target) = it.next() else { return Err(ExecutionError::function_error(name, "no target")) };
    if let Some(d) = as_dur(target.as_ref()) {
        let n = match name {
            "getHours" => d.0 / (3600 * NANOS),
            "getMinutes" => d.0 / (60 * NANOS),
            "getSeconds" => d.0 / NANOS,
            _ => d.0 / 1_000_000,
        };
        return Ok(CowVal::owned(CelInt::from(n as i64)));
    }
    let t = as_ts(target.as_ref())
        .ok_or_else(|| ExecutionError::no_such_overload(name, vec![target.get_type().name().to_string()]))?;
    let offset = match it.next() {
        Some(z) => zone_offset(string_of(name, z.as_ref())?)?,
        None => 0,
    };
    let local = t.0 + i128::from(offset) * NANOS;
    let secs = local.div_euclid(NANOS) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let n = match name {
        "getFullYear" => y,
        "getMonth" => m - 1,
        "getDate" => d,
        "getDayOfMonth" => d - 1,
        // 1970-01-01 was a Thursday (4).
        "getDayOfWeek" => (days + 4).rem_euclid(7),
        "getDayOfYear" => days - days_from_civil(y, 1, 1),
        "getHours" => rem / 3600,
        "getMinutes" => rem % 3600 / 60,
        "getSeconds" => rem % 60,
        _ => (local.rem_euclid(NANOS) / 1_000_000) as i64,
    };
    Ok(CowVal::owned(CelInt::from(n)))
}
