//! Malformed and hostile bodies: every one is an error (or a harmless value), never a panic.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message as _;
use serde_json::json;

use super::super::{decode_to_json, ProtoError, MAGIC};
use super::body;

fn configmap_raw() -> Vec<u8> {
    core::ConfigMap {
        metadata: Some(meta::ObjectMeta { name: Some("cfg".into()), ..Default::default() }),
        data: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn with_magic(envelope: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(envelope);
    out
}

#[test]
fn bad_magic_and_empty_bodies() {
    let cm = |b: &[u8]| decode_to_json(b, "", "v1", "ConfigMap");
    assert_eq!(cm(b""), Err(ProtoError::EmptyData));
    assert_eq!(cm(&MAGIC), Err(ProtoError::EmptyBody));
    let mut wrong = body("v1", "ConfigMap", configmap_raw());
    wrong[3] = 1;
    assert_eq!(cm(&wrong), Err(ProtoError::BadMagic));
    assert_eq!(cm(b"k8s"), Err(ProtoError::BadMagic));
    assert_eq!(cm(br#"{"kind":"ConfigMap"}"#), Err(ProtoError::BadMagic));
    assert_eq!(
        ProtoError::BadMagic.to_string(),
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    );
}

#[test]
fn envelope_type_meta_must_match_and_defaults_when_empty() {
    let raw = configmap_raw();
    let err = decode_to_json(&body("v1", "Secret", raw.clone()), "", "v1", "ConfigMap").unwrap_err();
    assert_eq!(err, ProtoError::KindMismatch { found: "Secret".into(), expected: "ConfigMap".into() });
    assert_eq!(err.to_string(), "the kind in the data (Secret) does not match the expected kind (ConfigMap)");
    let err = decode_to_json(&body("apps/v1", "ConfigMap", raw.clone()), "", "v1", "ConfigMap").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    );

    // Upstream defaults an empty apiVersion or kind from the request.
    let bare = Unknown { type_meta: None, raw: Some(raw.clone()), ..Default::default() };
    let got = decode_to_json(&with_magic(&bare.encode_to_vec()), "", "v1", "ConfigMap").unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}})
    );

    let gzip = Unknown {
        type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some("ConfigMap".into()) }),
        raw: Some(raw.clone()),
        content_encoding: Some("gzip".into()),
        content_type: None,
    };
    let err = decode_to_json(&with_magic(&gzip.encode_to_vec()), "", "v1", "ConfigMap").unwrap_err();
    assert_eq!(err, ProtoError::ContentEncoding("gzip".into()));

    let err = decode_to_json(&body("v1", "Widget", raw), "", "v1", "Widget").unwrap_err();
    assert!(matches!(err, ProtoError::UnsupportedKind { .. }), "{err}");
}

#[test]
fn truncated_bodies_fail_cleanly() {
    let raw = configmap_raw();
    let full = body("v1", "ConfigMap", raw.clone());
    assert!(decode_to_json(&full, "", "v1", "ConfigMap").is_ok());
    let raw_start = full.windows(raw.len()).position(|w| w == raw.as_slice()).unwrap();
    for n in 0..full.len() {
        match decode_to_json(&full[..n], "", "v1", "ConfigMap") {
            // A cut between envelope fields leaves a shorter but valid envelope, as in Go.
            Ok(v) => assert!(n < raw_start || n >= raw_start + raw.len(), "prefix {n}: {v}"),
            Err(err) => {
                let expected = matches!(
                    err,
                    ProtoError::EmptyData
                        | ProtoError::BadMagic
                        | ProtoError::EmptyBody
                        | ProtoError::UnexpectedEof
                        | ProtoError::LengthOutOfBounds { .. }
                );
                assert!(expected, "prefix {n}: {err}");
            }
        }
    }
    // Inside the object, a cut through metadata (its first field) is an error.
    let metadata_len = usize::from(raw[1]);
    for n in 1..2 + metadata_len {
        let cut = body("v1", "ConfigMap", raw[..n].to_vec());
        assert!(decode_to_json(&cut, "", "v1", "ConfigMap").is_err(), "object prefix {n}");
    }
}

#[test]
fn lengths_past_the_end_are_rejected() {
    // The envelope's raw field claims 100 bytes and has 3.
    let err = decode_to_json(&with_magic(&[0x12, 100, 1, 2, 3]), "", "v1", "ConfigMap").unwrap_err();
    assert_eq!(err, ProtoError::LengthOutOfBounds { field: 2, length: 100, remaining: 3 });
    // Inside the object: metadata claims 80 bytes and has 1.
    let err =
        decode_to_json(&body("v1", "ConfigMap", vec![0x0a, 80, 0x0a]), "", "v1", "ConfigMap").unwrap_err();
    assert_eq!(err, ProtoError::LengthOutOfBounds { field: 1, length: 80, remaining: 1 });
    // A length near u64::MAX is neither trusted nor allocated.
    let huge = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let err = decode_to_json(&body("v1", "ConfigMap", huge.to_vec()), "", "v1", "ConfigMap").unwrap_err();
    assert!(matches!(err, ProtoError::LengthOutOfBounds { field: 1, .. }), "{err}");
}

#[test]
fn nesting_bombs_do_not_overflow() {
    // 100k levels of `metadata` inside `metadata`: the served types are not recursive, so the
    // table runs out after one level (ObjectMeta's field 1 is the name string) and the rest is
    // just bytes; nothing recurses on it.
    let mut bomb = b"x".to_vec();
    for _ in 0..100_000 {
        let mut outer = vec![0x0a];
        let mut len = bomb.len() as u64;
        while len >= 0x80 {
            outer.push((len as u8) | 0x80);
            len >>= 7;
        }
        outer.push(len as u8);
        outer.extend_from_slice(&bomb);
        bomb = outer;
    }
    let got = decode_to_json(&body("v1", "ConfigMap", bomb), "", "v1", "ConfigMap");
    assert!(got.is_ok_and(|v| v["metadata"]["name"].is_string()));

    // Unknown groups nested without end are bounded too.
    let groups = [0xfb, 0x01].repeat(10_000);
    let err = decode_to_json(&body("v1", "ConfigMap", groups), "", "v1", "ConfigMap").unwrap_err();
    assert!(matches!(err, ProtoError::TooDeep { .. }), "{err}");
}

#[test]
fn unknown_fields_are_skipped() {
    let mut raw = configmap_raw();
    // Field 99 of every wire type, as a newer client might send.
    raw.extend([0x98, 0x06, 1, 0x99, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0x9a, 0x06, 1, 7, 0x9d, 0x06, 0, 0, 0, 0]);
    let got = decode_to_json(&body("v1", "ConfigMap", raw), "", "v1", "ConfigMap").unwrap();
    assert_eq!(got["data"], json!({"a": "b"}));
}

#[test]
fn invalid_values_are_errors() {
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    let svc = core::Service {
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                target_port: Some(IntOrString { r#type: Some(7), int_val: None, str_val: None }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode_to_json(&body("v1", "Service", svc.encode_to_vec()), "", "v1", "Service").unwrap_err();
    assert_eq!(
        err.to_string(),
        "proto: invalid value for field ServicePort.targetPort: impossible IntOrString type 7"
    );

    let year_10000 = meta::ObjectMeta {
        creation_timestamp: Some(meta::Time { seconds: Some(253_402_300_800), nanos: None }),
        ..Default::default()
    };
    let cm = core::ConfigMap { metadata: Some(year_10000), ..Default::default() };
    let err = decode_to_json(&body("v1", "ConfigMap", cm.encode_to_vec()), "", "v1", "ConfigMap").unwrap_err();
    assert!(matches!(err, ProtoError::InvalidValue { .. }), "{err}");
}

#[test]
fn random_and_mutated_bodies_never_panic() {
    // A fixed xorshift stream: reproducible, no dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = body("v1", "ConfigMap", configmap_raw());
    for round in 0..20_000 {
        let data = if round % 2 == 0 {
            let len = (next() % 96) as usize;
            let mut d = MAGIC.to_vec();
            d.extend((0..len).map(|_| next() as u8));
            d
        } else {
            let mut d = valid.clone();
            for _ in 0..1 + next() % 4 {
                let i = 4 + (next() as usize) % (d.len() - 4);
                d[i] = next() as u8;
            }
            d
        };
        for kind in [("", "v1", "ConfigMap"), ("apps", "v1", "Deployment"), ("", "v1", "Pod")] {
            let _ = decode_to_json(&data, kind.0, kind.1, kind.2);
        }
    }
}
