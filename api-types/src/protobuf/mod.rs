//! Kubernetes protobuf request bodies decoded into the JSON kplane handles.
//!
//! client-go's typed clients (what `kubectl create deployment|configmap|secret|...` uses) send
//! `application/vnd.kubernetes.protobuf` bodies and never fall back to JSON. [`decode_to_json`]
//! turns such a body into the JSON that upstream's JSON encoding of the same object would be, so
//! the rest of the API server sees no difference.
//!
//! The body is the magic `k8s\0` followed by a `runtime.Unknown` envelope (1 typeMeta {1
//! apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType) whose `raw` is the object's own
//! protobuf encoding. That encoding is decoded by a field table (`fields.rs`) that is generated
//! from k8s-pb's prost types and named after the served JSON schemas; see `gen.rs` and
//! `examples/gen_proto_fields.rs`. Pure: no I/O, no panics, no allocation sized by the input's
//! length prefixes, bounded nesting.

mod decode;
#[rustfmt::skip]
pub(crate) mod fields;
pub(crate) mod format;
#[cfg(test)]
mod gen;
pub(crate) mod table;
#[cfg(test)]
mod tests;
mod wire;

use serde_json::{Map, Value};

use wire::{Reader, Wire};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with: `k8s\0`.
pub const MAGIC: [u8; 4] = [0x6b, 0x38, 0x73, 0x00];

/// Why a body could not be decoded. The API server answers 400 with the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Same wording as upstream's protobuf serializer.
    #[error("empty data")]
    EmptyData,
    #[error("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]")]
    BadMagic,
    #[error("empty body")]
    EmptyBody,
    /// Upstream defines no encodings of the envelope's payload; accepting one would mean
    /// decoding bytes we cannot read.
    #[error("unsupported content encoding {0:?} in the protobuf envelope: the object must not be encoded")]
    ContentEncoding(String),
    #[error("the API version in the data ({found}) does not match the expected API version ({expected})")]
    ApiVersionMismatch { found: String, expected: String },
    #[error("the kind in the data ({found}) does not match the expected kind ({expected})")]
    KindMismatch { found: String, expected: String },
    #[error("protobuf is not supported for {kind} in {api_version}; send JSON instead")]
    UnsupportedKind { api_version: String, kind: String },
    #[error("unexpected EOF")]
    UnexpectedEof,
    #[error("proto: integer overflow")]
    VarintOverflow,
    #[error(
        "proto: length {length} of field {field} runs past the end of its message ({remaining} bytes left)"
    )]
    LengthOutOfBounds { field: u32, length: u64, remaining: usize },
    #[error("proto: illegal tag {number} (wire type {wire_type})")]
    IllegalTag { number: u64, wire_type: u8 },
    #[error("proto: illegal wireType {0}")]
    IllegalWireType(u8),
    #[error("proto: wrong wireType = {wire_type} for field {field}")]
    WrongWireType { field: String, wire_type: u8 },
    #[error("proto: messages nest deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("proto: invalid value for field {field}: {reason}")]
    InvalidValue { field: String, reason: String },
}

/// Decodes a Kubernetes protobuf request body for `group`/`version`/`kind` (`""`, `"v1"`,
/// `"ConfigMap"`) into upstream's JSON form of the object, `apiVersion` and `kind` included.
///
/// An envelope whose typeMeta leaves apiVersion or kind empty gets the requested ones, as
/// upstream's decoder defaults them. `DeleteOptions` may also say `meta.k8s.io/v1`, since upstream
/// registers it there as well as in every group-version.
pub fn decode_to_json(body: &[u8], group: &str, version: &str, kind: &str) -> Result<Value, ProtoError> {
    let envelope = Envelope::parse(body)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtoError::ContentEncoding(envelope.content_encoding));
    }
    let expected_api_version =
        if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    let api_version =
        if envelope.api_version.is_empty() { expected_api_version.clone() } else { envelope.api_version };
    let found_kind = if envelope.kind.is_empty() { kind.to_string() } else { envelope.kind };
    if found_kind != kind {
        return Err(ProtoError::KindMismatch { found: found_kind, expected: kind.to_string() });
    }
    let meta_delete_options = kind == "DeleteOptions" && api_version == "meta.k8s.io/v1";
    if api_version != expected_api_version && !meta_delete_options {
        return Err(ProtoError::ApiVersionMismatch { found: api_version, expected: expected_api_version });
    }
    let message = message_for(group, version, kind).ok_or_else(|| ProtoError::UnsupportedKind {
        api_version: api_version.clone(),
        kind: kind.to_string(),
    })?;
    let mut object = Map::new();
    decode::decode_message(envelope.raw, message, &mut object, 0)?;
    object.insert("apiVersion".to_string(), Value::String(api_version));
    object.insert("kind".to_string(), Value::String(found_kind));
    Ok(Value::Object(object))
}

/// Whether [`decode_to_json`] knows the kind, so a server can answer 415 up front otherwise.
pub fn supports(group: &str, version: &str, kind: &str) -> bool {
    message_for(group, version, kind).is_some()
}

fn message_for(group: &str, version: &str, kind: &str) -> Option<&'static table::Message> {
    let exact = fields::KINDS.iter().find(|(g, v, k, _)| *g == group && *v == version && *k == kind);
    // DeleteOptions is one type, registered in every group-version (upstream's AddToGroupVersion).
    let delete_options = || {
        let meta = fields::KINDS.iter().find(|(g, _, k, _)| *g == "meta.k8s.io" && *k == "DeleteOptions");
        meta.filter(|_| kind == "DeleteOptions" && version == "v1")
    };
    exact.or_else(delete_options).map(|(_, _, _, m)| *m)
}

/// The `runtime.Unknown` envelope, borrowing its payload.
#[derive(Debug, Default)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, ProtoError> {
        if body.is_empty() {
            return Err(ProtoError::EmptyData);
        }
        let data = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtoError::BadMagic)?;
        if data.is_empty() {
            return Err(ProtoError::EmptyBody);
        }
        let mut envelope = Envelope::default();
        let mut r = Reader::new(data);
        while let Some((tag, wire)) = r.next_field()? {
            match tag {
                1 => {
                    let mut tm = Reader::new(envelope_bytes("typeMeta", wire)?);
                    while let Some((tag, wire)) = tm.next_field()? {
                        match tag {
                            1 => envelope.api_version = envelope_string("apiVersion", wire)?,
                            2 => envelope.kind = envelope_string("kind", wire)?,
                            _ => {}
                        }
                    }
                }
                2 => envelope.raw = envelope_bytes("raw", wire)?,
                3 => envelope.content_encoding = envelope_string("contentEncoding", wire)?,
                // contentType (4) is informational: the body's media type already said protobuf.
                _ => {}
            }
        }
        Ok(envelope)
    }
}

fn envelope_bytes<'a>(name: &str, wire: Wire<'a>) -> Result<&'a [u8], ProtoError> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        other => {
            Err(ProtoError::WrongWireType { field: format!("Unknown.{name}"), wire_type: other.wire_type() })
        }
    }
}

fn envelope_string(name: &str, wire: Wire<'_>) -> Result<String, ProtoError> {
    envelope_bytes(name, wire).map(|b| String::from_utf8_lossy(b).into_owned())
}
