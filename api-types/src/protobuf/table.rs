//! The shape of the generated field table (`fields.rs`): one [`Message`] per protobuf message the
//! decoder can meet, each field tied to its tag, its upstream JSON name and how to decode it.
//!
//! Messages refer to each other by `&'static` reference, so the table is walked without lookups
//! and a dangling type name is a compile error rather than a runtime one.

/// One protobuf message, e.g. `api.apps.v1.Deployment`.
#[derive(Debug)]
pub struct Message {
    /// The full protobuf name without the `k8s.io.` prefix, as k8s-pb names its modules.
    pub name: &'static str,
    /// Sorted by tag (the generator emits them so), so lookups can binary-search.
    pub fields: &'static [Field],
}

impl Message {
    pub fn field(&self, tag: u32) -> Option<&'static Field> {
        let fields: &'static [Field] = self.fields;
        fields.binary_search_by_key(&tag, |f| f.tag).ok().and_then(|i| fields.get(i))
    }
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// Upstream's JSON name (`podIPs`, `type`), resolved against the served JSON schemas.
    pub json: &'static str,
    pub kind: Kind,
    pub label: Label,
    /// Keep the field even when its decoded value is zero. Set for Go pointer fields whose zero
    /// means something (`replicas: 0`): protobuf cannot tell those from unset non-pointer fields,
    /// which gogo-protobuf always writes, so every other zero is dropped as Go's `omitempty` would.
    pub keep_zero: bool,
}

/// How many values a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// At most one value; a later occurrence wins (messages merge, as protobuf merges them).
    One,
    /// A JSON array; scalars may arrive packed or unpacked.
    Repeated,
    /// `map<string, kind>`: a JSON object.
    Map,
    /// A message whose fields JSON puts in the parent's object: a Go struct embedded with
    /// `json:",inline"` (LocalObjectReference in ConfigMapKeySelector). Its `json` name is empty.
    Inline,
}

/// How one value is decoded.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    String,
    Bool,
    Int32,
    Int64,
    // The decoder handles every type k8s-pb uses; the served kinds happen not to use doubles.
    #[allow(dead_code)]
    Double,
    /// Base64 in JSON, as Go marshals `[]byte`.
    Bytes,
    Message(&'static Message),
    /// A message whose JSON form is not an object (Time, Quantity, IntOrString, ...).
    Special(Special),
}

/// Messages with a hand-written JSON form; the generator checks their wire layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `meta.v1.Time`: 1 seconds int64, 2 nanos int32; RFC 3339 to the second.
    Time,
    /// `meta.v1.MicroTime`: as Time, RFC 3339 with 6 fractional digits.
    MicroTime,
    /// `meta.v1.Duration`: 1 duration int64 (nanoseconds); Go's duration string.
    // Like RawExtension, reached by no served kind today, but the decoder knows it.
    #[allow(dead_code)]
    Duration,
    /// `meta.v1.FieldsV1`: 1 Raw bytes holding JSON.
    FieldsV1,
    /// `util.intstr.IntOrString`: 1 type int64, 2 intVal int32, 3 strVal string.
    IntOrString,
    /// `api.resource.Quantity`: 1 string.
    Quantity,
    /// `ExtraValue` (authentication, authorization, certificates): 1 repeated string; a JSON list.
    StringList,
    /// `runtime.RawExtension`: 1 raw bytes, usually JSON.
    #[allow(dead_code)]
    RawExtension,
}
