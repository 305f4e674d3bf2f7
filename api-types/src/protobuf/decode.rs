//! Table-driven decoding of one protobuf message into upstream's JSON form.
//!
//! Messages decode into a JSON map that is passed down, so a singular message field that occurs
//! twice merges into one object, as protobuf (and gogo's generated `Unmarshal`) merge it. Zero
//! values are pruned once a message is complete: gogo writes every non-pointer field, zero or not,
//! and Go's JSON would have omitted those zeros (see [`Field::keep_zero`] for the exceptions).

use serde_json::{Map, Number, Value};

use super::format::{base64, go_duration, rfc3339};
use super::table::{Field, Kind, Label, Message, Special};
use super::wire::{Reader, Wire};
use super::ProtoError;

/// How deep messages may nest. The served types nest about a dozen levels (Deployment → spec →
/// template → spec → containers → livenessProbe → httpGet → httpHeaders), so this only stops a
/// hostile or recursive input from exhausting the stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// Go's zero `time.Time` as Unix seconds.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// Decodes `buf` as `msg` into `out`, merging with what `out` already holds.
pub(crate) fn decode_message(
    buf: &[u8],
    msg: &'static Message,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep { limit: MAX_DEPTH });
    }
    let mut reader = Reader::new(buf);
    while let Some((tag, wire)) = reader.next_field()? {
        // Unknown fields (newer clients' additions) are skipped, as gogo skips them.
        let Some(field) = msg.field(tag) else { continue };
        match field.label {
            Label::One => decode_singular(msg, field, wire, out, depth)?,
            Label::Repeated => decode_repeated(msg, field, wire, out, depth)?,
            Label::Map => decode_map_entry(msg, field, wire, out, depth)?,
            Label::Inline => match field.kind {
                Kind::Message(sub) => decode_message(expect_bytes(msg, field, wire)?, sub, out, depth + 1)?,
                // The generator only inlines messages.
                _ => return Err(wrong_wire(msg, field, wire)),
            },
        }
    }
    prune(msg, out);
    Ok(())
}

fn decode_singular(
    msg: &'static Message,
    field: &'static Field,
    wire: Wire<'_>,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ProtoError> {
    if let Kind::Message(sub) = field.kind {
        let bytes = expect_bytes(msg, field, wire)?;
        let slot = out.entry(field.json).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        if let Value::Object(obj) = slot {
            decode_message(bytes, sub, obj, depth + 1)?;
        }
        return Ok(());
    }
    // Scalars and special forms: the last occurrence wins.
    match decode_value(msg, field, wire, depth)? {
        Some(v) => out.insert(field.json.to_string(), v),
        None => out.remove(field.json),
    };
    Ok(())
}

fn decode_repeated(
    msg: &'static Message,
    field: &'static Field,
    wire: Wire<'_>,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ProtoError> {
    let mut items = Vec::new();
    match (field.kind, wire) {
        // Packed numbers: proto2 k8s types are unpacked, but a packed encoding is just as valid.
        (Kind::Int32 | Kind::Int64 | Kind::Bool, Wire::Bytes(bytes)) => {
            let mut r = Reader::new(bytes);
            while !r.is_empty() {
                items.push(scalar(msg, field, Wire::Varint(r.varint()?))?);
            }
        }
        (Kind::Double, Wire::Bytes(bytes)) => {
            if bytes.len() % 8 != 0 {
                return Err(ProtoError::UnexpectedEof);
            }
            for chunk in bytes.chunks_exact(8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                items.push(scalar(msg, field, Wire::Fixed64(u64::from_le_bytes(word)))?);
            }
        }
        // Go marshals a zero Time inside a list as null rather than dropping the element.
        _ => items.push(decode_value(msg, field, wire, depth)?.unwrap_or(Value::Null)),
    }
    let slot = out.entry(field.json).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    if let Value::Array(list) = slot {
        list.extend(items);
    }
    Ok(())
}

/// One `map<string, V>` entry: a nested message with the key at 1 and the value at 2.
fn decode_map_entry(
    msg: &'static Message,
    field: &'static Field,
    wire: Wire<'_>,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ProtoError> {
    let entry = expect_bytes(msg, field, wire)?;
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(entry);
    while let Some((tag, w)) = r.next_field()? {
        match tag {
            1 => key = lossy(expect_bytes(msg, field, w)?),
            2 => value = decode_value(msg, field, w, depth)?,
            _ => {}
        }
    }
    // A missing value is the value type's zero, as Go's map decoding leaves it.
    let value = match value {
        Some(v) => v,
        None => decode_value(msg, field, Wire::Bytes(&[]), depth)
            .ok()
            .flatten()
            .unwrap_or_else(|| zero_of(field.kind)),
    };
    let slot = out.entry(field.json).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(map) = slot {
        map.insert(key, value);
    }
    Ok(())
}

/// One value of a field: `None` when it has no JSON form (a zero Time, an empty RawExtension).
fn decode_value(
    msg: &'static Message,
    field: &'static Field,
    wire: Wire<'_>,
    depth: usize,
) -> Result<Option<Value>, ProtoError> {
    match field.kind {
        Kind::Message(sub) => {
            let bytes = expect_bytes(msg, field, wire)?;
            let mut obj = Map::new();
            decode_message(bytes, sub, &mut obj, depth + 1)?;
            Ok(Some(Value::Object(obj)))
        }
        Kind::Special(special) => decode_special(msg, field, special, expect_bytes(msg, field, wire)?),
        _ => scalar(msg, field, wire).map(Some),
    }
}

fn scalar(msg: &'static Message, field: &'static Field, wire: Wire<'_>) -> Result<Value, ProtoError> {
    Ok(match (field.kind, wire) {
        (Kind::String, Wire::Bytes(b)) => Value::String(lossy(b)),
        (Kind::Bytes, Wire::Bytes(b)) => Value::String(base64(b)),
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // int32 is sent sign-extended to 64 bits; truncating is what gogo's decoding does.
        (Kind::Int32, Wire::Varint(v)) => Value::from(v as i32),
        (Kind::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Kind::Double, Wire::Fixed64(bits)) => {
            let f = f64::from_bits(bits);
            // JSON has no NaN or infinities; Go's encoder fails on them too.
            Value::Number(
                Number::from_f64(f).ok_or_else(|| invalid(msg, field, format!("unsupported value {f}")))?,
            )
        }
        _ => return Err(wrong_wire(msg, field, wire)),
    })
}

/// The zero of a kind, for a map entry without a value.
fn zero_of(kind: Kind) -> Value {
    match kind {
        Kind::Bool => Value::Bool(false),
        Kind::Int32 | Kind::Int64 | Kind::Double => Value::from(0),
        Kind::Message(_) => Value::Object(Map::new()),
        Kind::String | Kind::Bytes | Kind::Special(_) => Value::String(String::new()),
    }
}

/// The messages whose JSON form Go writes by hand (their `MarshalJSON`).
fn decode_special(
    msg: &'static Message,
    field: &'static Field,
    special: Special,
    bytes: &[u8],
) -> Result<Option<Value>, ProtoError> {
    let mut varints = [0u64; 3];
    let mut text: Option<&[u8]> = None;
    let mut texts: Vec<&[u8]> = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.next_field()? {
        match (special_field_is_bytes(special, tag), wire) {
            (Some(true), Wire::Bytes(b)) => {
                text = Some(b);
                texts.push(b);
            }
            (Some(false), Wire::Varint(v)) => {
                let index = usize::try_from(tag).ok().and_then(|t| t.checked_sub(1));
                if let Some(slot) = index.and_then(|i| varints.get_mut(i)) {
                    *slot = v;
                }
            }
            (Some(_), w) => return Err(wrong_wire(msg, field, w)),
            (None, _) => {}
        }
    }
    let [first, second, _] = varints;
    Ok(match special {
        // metav1.Time's Unmarshal treats an empty message as the zero time, which marshals as
        // null; anything else is a real instant (seconds only: Time drops nanos on decode).
        Special::Time | Special::MicroTime if bytes.is_empty() => None,
        Special::Time | Special::MicroTime => {
            let micros = special == Special::MicroTime;
            let nanos = if micros { second as i32 } else { 0 };
            // Go's zero instant (0001-01-01T00:00:00Z) sent explicitly is still IsZero: null.
            if first as i64 == GO_ZERO_TIME_UNIX && nanos == 0 {
                return Ok(None);
            }
            let text = rfc3339(first as i64, nanos, micros)
                .ok_or_else(|| invalid(msg, field, "time outside of the years 0 to 9999".to_string()))?;
            Some(Value::String(text))
        }
        Special::Duration => Some(Value::String(go_duration(first as i64))),
        Special::IntOrString => match first {
            0 => Some(Value::from(second as i32)),
            1 => Some(Value::String(lossy(text.unwrap_or_default()))),
            other => return Err(invalid(msg, field, format!("impossible IntOrString type {other}"))),
        },
        // A Quantity always travels as its canonical string; an empty one is Go's zero, "0".
        Special::Quantity => Some(Value::String(text.map(lossy).unwrap_or_else(|| "0".to_string()))),
        Special::FieldsV1 => match text {
            None | Some([]) => None,
            Some(raw) => Some(
                serde_json::from_slice(raw)
                    .map_err(|e| invalid(msg, field, format!("FieldsV1 is not JSON: {e}")))?,
            ),
        },
        Special::StringList => Some(Value::Array(texts.into_iter().map(|t| Value::String(lossy(t))).collect())),
        // Embedded objects are JSON in practice; anything else is kept, as base64 bytes.
        Special::RawExtension => match text {
            None | Some([]) => None,
            Some(raw) => Some(serde_json::from_slice(raw).unwrap_or_else(|_| Value::String(base64(raw)))),
        },
    })
}

/// Which tags a special message has: `Some(true)` for its bytes/string field, `Some(false)` for
/// its varints, `None` for tags it does not have (skipped, like any unknown field).
fn special_field_is_bytes(special: Special, tag: u32) -> Option<bool> {
    match (special, tag) {
        (Special::Time | Special::MicroTime, 1 | 2) | (Special::Duration, 1) => Some(false),
        (Special::IntOrString, 1 | 2) => Some(false),
        (Special::IntOrString, 3) => Some(true),
        (Special::Quantity | Special::FieldsV1 | Special::RawExtension | Special::StringList, 1) => Some(true),
        _ => None,
    }
}

/// Drops the zero values Go's `omitempty` would have dropped, keeping the allowlisted ones.
fn prune(msg: &'static Message, out: &mut Map<String, Value>) {
    for field in msg.fields {
        let drop = match out.get(field.json) {
            Some(Value::Null) => true,
            Some(v) => !field.keep_zero && is_zero(v),
            None => false,
        };
        if drop {
            out.remove(field.json);
        }
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Go strings are bytes: gogo does not validate UTF-8, and encoding/json replaces invalid bytes
/// with U+FFFD, which is what a lossy conversion does.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn expect_bytes<'a>(
    msg: &'static Message,
    field: &'static Field,
    wire: Wire<'a>,
) -> Result<&'a [u8], ProtoError> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        other => Err(wrong_wire(msg, field, other)),
    }
}

fn field_name(msg: &'static Message, field: &'static Field) -> String {
    let short = msg.name.rsplit('.').next().unwrap_or(msg.name);
    format!("{short}.{}", field.json)
}

fn wrong_wire(msg: &'static Message, field: &'static Field, wire: Wire<'_>) -> ProtoError {
    ProtoError::WrongWireType { field: field_name(msg, field), wire_type: wire.wire_type() }
}

fn invalid(msg: &'static Message, field: &'static Field, reason: String) -> ProtoError {
    ProtoError::InvalidValue { field: field_name(msg, field), reason }
}
