//! The decoder's mechanics on a small hand-made table: forms no served kind reaches yet
//! (Duration, RawExtension, doubles), packed lists, merging and the nesting bound.

use serde_json::{json, Map, Value};

use super::super::decode::{decode_message, MAX_DEPTH};
use super::super::table::{Field, Kind, Label, Message, Special};
use super::super::ProtoError;

const fn field(tag: u32, json: &'static str, kind: Kind, label: Label) -> Field {
    Field { tag, json, kind, label, keep_zero: false }
}

/// A recursive message, which no served kind has, to reach the nesting bound.
static NODE: Message = Message {
    name: "test.Node",
    fields: &[
        field(1, "child", Kind::Message(&NODE), Label::One),
        field(2, "duration", Kind::Special(Special::Duration), Label::One),
        field(3, "raw", Kind::Special(Special::RawExtension), Label::One),
        field(4, "numbers", Kind::Int64, Label::Repeated),
        field(5, "ratio", Kind::Double, Label::One),
        field(6, "times", Kind::Special(Special::Time), Label::Repeated),
        field(7, "name", Kind::String, Label::One),
        field(8, "ratios", Kind::Double, Label::Repeated),
    ],
};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn delimited(tag: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag << 3 | 2), &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn number(tag: u32, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag << 3), &mut out);
    varint(v, &mut out);
    out
}

fn decode(buf: &[u8]) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    decode_message(buf, &NODE, &mut out, 0)?;
    Ok(Value::Object(out))
}

#[test]
fn durations_raw_extensions_and_doubles() {
    let mut buf = delimited(2, &number(1, 3_600_000_000_000));
    buf.extend(delimited(3, &delimited(1, br#"{"kind":"Status"}"#)));
    buf.extend([5 << 3 | 1]);
    buf.extend(0.5f64.to_le_bytes());
    assert_eq!(decode(&buf).unwrap(), json!({"duration": "1h0m0s", "raw": {"kind": "Status"}, "ratio": 0.5}));

    // Bytes that are not JSON stay bytes.
    let buf = delimited(3, &delimited(1, &[0x6b, 0x38, 0x73, 0x00, 0x01]));
    assert_eq!(decode(&buf).unwrap(), json!({"raw": "azhzAAE="}));

    let mut nan = vec![5 << 3 | 1];
    nan.extend(f64::NAN.to_le_bytes());
    assert!(matches!(decode(&nan), Err(ProtoError::InvalidValue { .. })));
}

#[test]
fn packed_and_unpacked_lists_concatenate() {
    let mut packed = Vec::new();
    for v in [1u64, 2, (-3i64) as u64] {
        varint(v, &mut packed);
    }
    let mut buf = delimited(4, &packed);
    buf.extend(number(4, 4));
    let mut doubles = Vec::new();
    doubles.extend(1.5f64.to_le_bytes());
    doubles.extend(2.0f64.to_le_bytes());
    buf.extend(delimited(8, &doubles));
    assert_eq!(decode(&buf).unwrap(), json!({"numbers": [1, 2, -3, 4], "ratios": [1.5, 2.0]}));
    // A packed double list whose length is not a multiple of 8 is truncated.
    assert_eq!(decode(&delimited(8, &[0; 9])), Err(ProtoError::UnexpectedEof));
}

#[test]
fn zero_times_in_lists_are_null_and_repeated_messages_merge() {
    let mut buf = delimited(6, &[]);
    buf.extend(delimited(6, &number(1, 1_704_164_645)));
    // Go's zero instant sent explicitly is zero too; the Unix epoch is a real time.
    buf.extend(delimited(6, &number(1, (-62_135_596_800i64) as u64)));
    buf.extend(delimited(6, &number(1, 0)));
    let times = json!([null, "2024-01-02T03:04:05Z", null, "1970-01-01T00:00:00Z"]);
    assert_eq!(decode(&buf).unwrap(), json!({ "times": times }));

    // A singular message seen twice merges; a scalar seen twice keeps the last, and a last zero
    // is pruned like any zero.
    let mut buf = delimited(1, &delimited(7, b"a"));
    buf.extend(delimited(1, &delimited(2, &number(1, 1_500_000_000))));
    buf.extend(delimited(7, b"x"));
    buf.extend(delimited(7, b""));
    assert_eq!(decode(&buf).unwrap(), json!({"child": {"name": "a", "duration": "1.5s"}}));
}

#[test]
fn nesting_is_bounded() {
    let nest = |levels: usize| {
        let mut buf = delimited(7, b"leaf");
        for _ in 0..levels {
            buf = delimited(1, &buf);
        }
        buf
    };
    let ok = decode(&nest(MAX_DEPTH)).unwrap();
    let mut cur = &ok;
    for _ in 0..MAX_DEPTH {
        cur = &cur["child"];
    }
    assert_eq!(cur, &json!({"name": "leaf"}));
    assert_eq!(decode(&nest(MAX_DEPTH + 1)), Err(ProtoError::TooDeep { limit: MAX_DEPTH }));
    // Far deeper than the stack could take if it were not bounded.
    assert_eq!(decode(&nest(100_000)), Err(ProtoError::TooDeep { limit: MAX_DEPTH }));

    // A JSON bomb inside a RawExtension hits serde_json's own recursion limit and stays bytes.
    let bomb = "[".repeat(100_000);
    let got = decode(&delimited(3, &delimited(1, bomb.as_bytes()))).unwrap();
    assert!(got["raw"].is_string());
}

#[test]
fn wrong_wire_types_name_the_field() {
    // `child` sent as a varint.
    let err = decode(&number(1, 5)).unwrap_err();
    assert_eq!(err, ProtoError::WrongWireType { field: "Node.child".into(), wire_type: 0 });
    assert_eq!(err.to_string(), "proto: wrong wireType = 0 for field Node.child");
}
