//! Typed decoding by schema: what upstream's codec does when it decodes a body into a kind's Go
//! type, done as one pass over the JSON against the kind's schema (so custom resources can use the
//! same pass over their structural schemas).
//!
//! The pass both checks and rewrites:
//! - a value of the wrong JSON type is an error with upstream's wording (`json: cannot unmarshal
//!   number into Go struct field ObjectMeta.metadata.annotations of type string`), and so are
//!   integers out of range or with a fraction, bad base64 in `[]byte` fields, malformed
//!   `metav1.Time` strings and malformed quantities;
//! - unknown fields are removed (and their paths returned, for `fieldValidation`);
//! - what Go would turn into a different value on the way back out is normalised: `null` fields
//!   are dropped, `null` map values and list items become their type's zero value, and so do
//!   absent fields Go always emits (the schema's `required`: no `omitempty`), numeric quantities
//!   become strings, times are re-emitted in UTC at second (MicroTime: microsecond) precision.
//!
//! The result is what k8s-openapi's types (and so every typed client) decode.
//!
//! Go reports type errors through two decoders, and their wording differs:
//! [`Dialect::Json`] is `sigs.k8s.io/json` (request bodies, JSON and merge patches),
//! [`Dialect::Unstructured`] is the unstructured converter strategic merge patches go through.

use base64::Engine;
use serde_json::{Map, Value};

use crate::schema::{self, REF_PREFIX};

/// Which of upstream's decoders the error messages follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `json.Unmarshal` into the Go type (bodies, JSON patch, merge patch).
    Json,
    /// `runtime.DefaultUnstructuredConverter.FromUnstructured` (strategic merge patch results).
    Unstructured,
}

/// A value the kind's Go type cannot hold; its text is upstream's error text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TypeError(pub String);

/// Checks and normalises `obj` as the `(group, version, kind)` it claims to be, returning the
/// paths (`spec.template.spec.containers[0].foo`) of the unknown fields it removed, in document
/// order. A kind without a schema is left alone.
pub fn check_kind(
    group: &str,
    version: &str,
    kind: &str,
    obj: &mut Value,
    dialect: Dialect,
) -> Result<Vec<String>, TypeError> {
    match schema::definition_name(group, version, kind) {
        // Through a `$ref`, so the top-level struct has its Go name in errors (`Pod.spec`).
        Some(def) => check(&serde_json::json!({ "$ref": format!("{REF_PREFIX}{def}") }), obj, dialect),
        None => Ok(Vec::new()),
    }
}

/// Checks and normalises `obj` against `schema` (see the module docs).
pub fn check(schema: &Value, obj: &mut Value, dialect: Dialect) -> Result<Vec<String>, TypeError> {
    let mut walker = Walker { dialect, fields: Vec::new(), strukt: None, unknown: Vec::new() };
    walker.walk(schema, obj, &mut String::new(), 0)?;
    Ok(walker.unknown)
}

/// What a schema says a value is, in Go's terms.
enum Shape<'a> {
    /// A struct: its Go name (`v1.PodSpec`) and fields.
    Struct(String, &'a Map<String, Value>),
    Map(&'a Value),
    Slice(&'a Value),
    String,
    Bytes,
    Int(&'static str),
    Float,
    Bool,
    IntOrString,
    Quantity,
    /// `metav1.Time`, or `metav1.MicroTime` (true).
    Time(bool),
    /// Kept raw by Go (RawExtension, FieldsV1, preserve-unknown-fields): anything goes.
    Any,
}

/// The definition a schema refers to: its `$ref`, or that of the single-element `allOf` OpenAPI
/// 3.0 wraps a `$ref` with siblings (a description) in.
fn ref_name(schema: &Value) -> Option<&str> {
    let target = match schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([only]) => only.get("$ref"),
        _ => schema.get("$ref"),
    };
    target.and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX))
}

fn shape(schema: &Value) -> Shape<'_> {
    let ref_name = ref_name(schema);
    match ref_name {
        Some("io.k8s.apimachinery.pkg.api.resource.Quantity") => return Shape::Quantity,
        Some("io.k8s.apimachinery.pkg.util.intstr.IntOrString") => return Shape::IntOrString,
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime") => return Shape::Time(true),
        _ => {}
    }
    let s = schema::resolve(schema);
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return Shape::IntOrString;
    }
    if schema::is_free_form(s) {
        return Shape::Any;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                Shape::Struct(go_name(ref_name.unwrap_or("")), props)
            } else if let Some(values) = schema::map_values(s) {
                Shape::Map(values)
            } else {
                Shape::Any
            }
        }
        Some("array") => match schema::items(s) {
            Some(items) => Shape::Slice(items),
            None => Shape::Any,
        },
        Some("string") => match s.get("format").and_then(Value::as_str) {
            Some("byte") => Shape::Bytes,
            Some("date-time") => Shape::Time(false),
            _ => Shape::String,
        },
        Some("integer") => match s.get("format").and_then(Value::as_str) {
            Some("int32") => Shape::Int("int32"),
            _ => Shape::Int("int64"),
        },
        Some("number") => Shape::Float,
        Some("boolean") => Shape::Bool,
        _ => Shape::Any,
    }
}

/// `io.k8s.api.core.v1.PodSpec` → `v1.PodSpec`, as Go's reflect names a type.
fn go_name(definition: &str) -> String {
    let mut parts = definition.rsplit('.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(package)) => format!("{package}.{name}"),
        (Some(name), None) => name.to_string(),
        _ => String::new(),
    }
}

/// The Go type of a schema, as reflect prints it (`[]v1.Container`, `map[string]string`).
fn go_type(schema: &Value) -> String {
    match shape(schema) {
        Shape::Struct(name, _) => name,
        Shape::Map(values) => format!("map[string]{}", go_type(values)),
        Shape::Slice(items) => format!("[]{}", go_type(items)),
        Shape::String => "string".into(),
        Shape::Bytes => "[]uint8".into(),
        Shape::Int(t) => t.into(),
        Shape::Float => "float64".into(),
        Shape::Bool => "bool".into(),
        Shape::IntOrString => "intstr.IntOrString".into(),
        Shape::Quantity => "resource.Quantity".into(),
        Shape::Time(false) => "v1.Time".into(),
        Shape::Time(true) => "v1.MicroTime".into(),
        Shape::Any => "interface {}".into(),
    }
}

/// How Go's JSON decoder names a JSON value's type in its errors.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How the unstructured converter names a value's Go type (what encoding/json made of it).
fn unstructured_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's decoder gives up on nesting deeper than this (sigs.k8s.io/json: 10000); serde_json stops
/// at 128 already, so this only guards values built in memory (patch results).
const MAX_DEPTH: usize = 10_000;

struct Walker {
    dialect: Dialect,
    /// Go's error context: the JSON names of the struct fields entered (no list indexes or map keys).
    fields: Vec<String>,
    /// The innermost struct whose field is being decoded.
    strukt: Option<String>,
    unknown: Vec<String>,
}

impl Walker {
    /// The error for a value of the wrong type where `schema` belongs.
    fn mismatch(&self, v: &Value, schema: &Value, number_text: bool) -> TypeError {
        match self.dialect {
            Dialect::Json => {
                let what =
                    if number_text { format!("number {}", number_repr(v)) } else { json_kind(v).to_string() };
                TypeError(self.go_type_error(&what, &go_type(schema)))
            }
            Dialect::Unstructured => {
                let from = unstructured_kind(v);
                TypeError(match shape(schema) {
                    Shape::Struct(..) => format!("cannot restore struct from: {}", go_kind(v)),
                    Shape::Slice(_) => format!("cannot restore slice from {}", go_kind(v)),
                    Shape::Map(_) => format!("cannot restore map from {}", go_kind(v)),
                    _ => format!("cannot convert {from} to {}", go_type(schema)),
                })
            }
        }
    }

    /// `json: cannot unmarshal <what> into Go struct field <S>.<path> of type <T>`.
    fn go_type_error(&self, what: &str, ty: &str) -> String {
        match &self.strukt {
            Some(s) if !self.fields.is_empty() => {
                format!(
                    "json: cannot unmarshal {what} into Go struct field {s}.{} of type {ty}",
                    self.fields.join(".")
                )
            }
            _ => format!("json: cannot unmarshal {what} into Go value of type {ty}"),
        }
    }

    fn walk(
        &mut self,
        schema: &Value,
        v: &mut Value,
        path: &mut String,
        depth: usize,
    ) -> Result<(), TypeError> {
        if depth > MAX_DEPTH {
            return Err(TypeError("exceeded max depth".into()));
        }
        if v.is_null() {
            // Go leaves the zero value; the callers drop null fields and zero null items.
            return Ok(());
        }
        match shape(schema) {
            Shape::Any => Ok(()),
            Shape::Struct(name, props) => {
                let Value::Object(map) = v else { return Err(self.mismatch(v, schema, false)) };
                // Go emits its fields without omitempty (the schema's `required`) even when they
                // were absent: as their zero value.
                let required = schema::resolve(schema).get("required").and_then(Value::as_array);
                for field in required.into_iter().flatten().filter_map(Value::as_str) {
                    if let (false, Some(prop)) = (map.contains_key(field), props.get(field)) {
                        let z = zero(prop);
                        if !z.is_null() {
                            map.insert(field.to_string(), z);
                        }
                    }
                }
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let Some(field) = props.get(&key) else {
                        map.remove(&key);
                        self.unknown.push(join(path, &key));
                        continue;
                    };
                    let Some(child) = map.get_mut(&key) else { continue };
                    if child.is_null() {
                        map.remove(&key);
                        continue;
                    }
                    // Go names the struct without its package here (`ObjectMeta.metadata.annotations`).
                    let bare = name.rsplit('.').next().unwrap_or("").to_string();
                    let saved = (self.strukt.replace(bare), path.len());
                    self.fields.push(key.clone());
                    push_key(path, &key);
                    self.walk(field, child, path, depth + 1)?;
                    path.truncate(saved.1);
                    self.fields.pop();
                    self.strukt = saved.0;
                }
                Ok(())
            }
            Shape::Map(values) => {
                let Value::Object(map) = v else { return Err(self.mismatch(v, schema, false)) };
                for (key, child) in map.iter_mut() {
                    if child.is_null() {
                        *child = zero(values);
                        continue;
                    }
                    let len = path.len();
                    push_key(path, key);
                    self.walk(values, child, path, depth + 1)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Shape::Slice(items) => {
                let Value::Array(list) = v else {
                    // Go decodes a base64 string into []byte; other slices need an array.
                    return Err(self.mismatch(v, schema, false));
                };
                for (i, child) in list.iter_mut().enumerate() {
                    if child.is_null() {
                        *child = zero(items);
                        continue;
                    }
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.walk(items, child, path, depth + 1)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Shape::String => match v {
                Value::String(_) => Ok(()),
                _ => Err(self.mismatch(v, schema, false)),
            },
            Shape::Bool => match v {
                Value::Bool(_) => Ok(()),
                _ => Err(self.mismatch(v, schema, false)),
            },
            Shape::Float => match v {
                Value::Number(_) => Ok(()),
                _ => Err(self.mismatch(v, schema, false)),
            },
            Shape::Int(ty) => match v {
                Value::Number(n) if int_fits(n, ty) => Ok(()),
                Value::Number(_) => Err(self.mismatch(v, schema, self.dialect == Dialect::Json)),
                _ => Err(self.mismatch(v, schema, false)),
            },
            Shape::Bytes => match v {
                Value::String(s) => match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let text = base64_error(&e);
                        Err(TypeError(match self.dialect {
                            Dialect::Json => text,
                            Dialect::Unstructured => format!("error decoding from json: {text}"),
                        }))
                    }
                },
                _ => Err(self.mismatch(v, schema, false)),
            },
            Shape::IntOrString => match v {
                Value::String(_) => Ok(()),
                Value::Number(n) if int_fits(n, "int32") => Ok(()),
                // intstr's own UnmarshalJSON decodes into an int32, with no field context.
                Value::Number(_) => Err(TypeError(format!(
                    "json: cannot unmarshal number {} into Go value of type int32",
                    number_repr(v)
                ))),
                _ => Err(TypeError(format!(
                    "json: cannot unmarshal {} into Go value of type int32",
                    json_kind(v)
                ))),
            },
            Shape::Quantity => {
                let text = match v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    // Quantity's UnmarshalJSON parses the raw JSON text, which never matches.
                    _ => return Err(TypeError(quantity_format_error())),
                };
                parse_quantity(&text).map_err(TypeError)?;
                *v = Value::String(text);
                Ok(())
            }
            Shape::Time(micro) => match v {
                Value::String(s) => {
                    *v = Value::String(normalize_time(s, micro).map_err(TypeError)?);
                    Ok(())
                }
                _ => Err(TypeError(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    json_kind(v)
                ))),
            },
        }
    }
}

/// The reflect.Kind name the converter prints (`string`, `int64`, `map`, `slice`).
fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// The zero value Go gives a `null` map value or list item, as it serialises.
fn zero(schema: &Value) -> Value {
    match shape(schema) {
        Shape::Struct(..) | Shape::Map(_) => Value::Object(Map::new()),
        Shape::Slice(_) => Value::Array(Vec::new()),
        Shape::String | Shape::Bytes => Value::String(String::new()),
        Shape::Int(_) | Shape::Float | Shape::IntOrString => Value::from(0),
        Shape::Bool => Value::Bool(false),
        Shape::Quantity => Value::String("0".into()),
        Shape::Time(_) | Shape::Any => Value::Null,
    }
}

fn int_fits(n: &serde_json::Number, ty: &str) -> bool {
    match (n.as_i64(), ty) {
        (Some(i), "int32") => i32::try_from(i).is_ok(),
        (Some(_), _) => true,
        (None, _) => false,
    }
}

/// A number as Go quotes it in a range error: its JSON text.
fn number_repr(v: &Value) -> String {
    v.to_string()
}

/// Go's base64 error text: `illegal base64 data at input byte N`.
fn base64_error(e: &base64::DecodeError) -> String {
    let at = match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => *at,
        base64::DecodeError::InvalidLength(len) => *len,
        base64::DecodeError::InvalidPadding => 0,
    };
    format!("illegal base64 data at input byte {at}")
}

fn quantity_format_error() -> String {
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".into()
}

/// Checks a quantity as upstream's `ParseQuantity` does, with its three errors.
pub fn parse_quantity(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                .into(),
        );
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_len = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_len);
    // The regular expression: a run of digits and dots, then suffix letters, then a signed number.
    let letters = suffix.find(|c: char| !"eEinumkKMGTP".contains(c)).unwrap_or(suffix.len());
    let rest = &suffix[letters..];
    let rest_digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if number.is_empty() || !rest_digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(quantity_format_error());
    }
    let dots = number.matches('.').count();
    if dots > 1 || number == "." {
        return Err("unable to parse numeric part of quantity".into());
    }
    let known = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    );
    let exponent = suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && digits.parse::<i32>().is_ok()
    });
    if !known && !exponent {
        return Err("unable to parse quantity's suffix".into());
    }
    Ok(())
}

const RFC3339: &str = "2006-01-02T15:04:05Z07:00";

/// Parses a `metav1.Time` as Go's `time.Parse(time.RFC3339, s)` does and re-emits it as
/// `Time.MarshalJSON` would: UTC, whole seconds. A `metav1.MicroTime` (`micro`) keeps six
/// fractional digits; its parse is as lenient as Time's (Go insists on exactly six digits, which
/// clients that drop zero microseconds would trip over).
pub fn normalize_time(s: &str, micro: bool) -> Result<String, String> {
    let fields = parse_rfc3339(s).map_err(|e| match e {
        TimeError::Element { rest, element } => {
            format!("parsing time {s:?} as {RFC3339:?}: cannot parse {rest:?} as {element:?}")
        }
        TimeError::Range(what) => format!("parsing time {s:?}: {what} out of range"),
        TimeError::Extra(rest) => format!("parsing time {s:?}: extra text: {rest:?}"),
    })?;
    let (y, mo, d, h, mi, sec, offset, micros) = fields;
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec) - offset;
    // Re-emitted as the protobuf decoder writes times, which is Time.MarshalJSON's form.
    crate::protobuf::format::rfc3339(secs, (micros * 1000) as i32, micro)
        .ok_or_else(|| "Time.MarshalJSON: year outside of range [0,9999]".to_string())
}

enum TimeError {
    Element { rest: String, element: &'static str },
    Range(&'static str),
    Extra(String),
}

/// Year, month, day, hour, minute, second, offset in seconds, microseconds.
type TimeFields = (i64, u32, u32, u32, u32, u32, i64, u32);

fn parse_rfc3339(s: &str) -> Result<TimeFields, TimeError> {
    let b = s.as_bytes();
    let mut pos = 0;
    let digits = |pos: &mut usize, n: usize, element: &'static str| -> Result<u32, TimeError> {
        let end = *pos + n;
        match b.get(*pos..end) {
            Some(d) if d.iter().all(u8::is_ascii_digit) => {
                *pos = end;
                Ok(d.iter().fold(0, |acc, c| acc * 10 + u32::from(c - b'0')))
            }
            _ => Err(TimeError::Element { rest: s[*pos..].to_string(), element }),
        }
    };
    let lit = |pos: &mut usize, c: u8, element: &'static str| -> Result<(), TimeError> {
        if b.get(*pos) == Some(&c) {
            *pos += 1;
            Ok(())
        } else {
            Err(TimeError::Element { rest: s.get(*pos..).unwrap_or("").to_string(), element })
        }
    };
    let year = digits(&mut pos, 4, "2006")?;
    lit(&mut pos, b'-', "-")?;
    let month = digits(&mut pos, 2, "01")?;
    lit(&mut pos, b'-', "-")?;
    let day = digits(&mut pos, 2, "02")?;
    lit(&mut pos, b'T', "T")?;
    let hour = digits(&mut pos, 2, "15")?;
    lit(&mut pos, b':', ":")?;
    let minute = digits(&mut pos, 2, "04")?;
    lit(&mut pos, b':', ":")?;
    let second = digits(&mut pos, 2, "05")?;
    // A fractional second may follow the seconds when parsing, even though the layout has none.
    let mut micros = 0;
    if b.get(pos) == Some(&b'.') && b.get(pos + 1).is_some_and(u8::is_ascii_digit) {
        pos += 1;
        let mut n = 0;
        while let Some(d) = b.get(pos).filter(|d| d.is_ascii_digit()) {
            if n < 6 {
                micros = micros * 10 + u32::from(d - b'0');
                n += 1;
            }
            pos += 1;
        }
        micros *= 10u32.pow(6 - n);
    }
    let offset = match b.get(pos) {
        Some(b'Z') => {
            pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            pos += 1;
            let oh = digits(&mut pos, 2, "Z07:00")?;
            lit(&mut pos, b':', "Z07:00")?;
            let om = digits(&mut pos, 2, "Z07:00")?;
            if oh > 24 || om > 60 {
                return Err(TimeError::Range("time zone offset"));
            }
            sign * (i64::from(oh) * 3600 + i64::from(om) * 60)
        }
        _ => return Err(TimeError::Element { rest: s[pos..].to_string(), element: "Z07:00" }),
    };
    if pos != b.len() {
        return Err(TimeError::Extra(s[pos..].to_string()));
    }
    if !(1..=12).contains(&month) {
        return Err(TimeError::Range("month"));
    }
    if day < 1 || day > days_in_month(i64::from(year), month) {
        return Err(TimeError::Range("day"));
    }
    if hour > 23 {
        return Err(TimeError::Range("hour"));
    }
    if minute > 59 {
        return Err(TimeError::Range("minute"));
    }
    if second > 59 {
        return Err(TimeError::Range("second"));
    }
    Ok((i64::from(year), month, day, hour, minute, second, offset, micros))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Go's `fmt.Sprintf("%+v", m)` of a decoded JSON value, as upstream quotes a strategic merge
/// patch in its errors: `map[spec:map[replicas:3]]`, keys sorted.
pub fn go_format(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_format).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{k}:{}", go_format(&map[k.as_str()]))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests;
