//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) over what the API server reads from
//! the network before any handler runs: request bodies through the typed decoder, and bearer
//! tokens (the `Authorization` header, the static token file, ServiceAccount JWTs). Each takes
//! arbitrary bytes and must return, never panic; the `fuzz_corpus` test replays every stored input
//! in `fuzz/corpus/<target>/` through the same functions.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use bytes::Bytes;

use crate::auth::serviceaccount::TokenKeys;

/// A create or update body as the handlers decode it (`handlers::body::decode_typed`): the first
/// byte picks the media type (JSON, YAML, protobuf) and the kind (`api_types::fuzzing::KINDS`),
/// the rest is the body. An error is rendered as the Status the client would get.
pub fn body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let media = match which % 3 {
        0 => "application/json",
        1 => "application/yaml",
        _ => api_types::protobuf::CONTENT_TYPE,
    };
    let (group, version, kind) = api_types::fuzzing::kind_of(which / 3);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    if let Err(e) = crate::handlers::decode_typed(group, version, kind, &headers, &Bytes::copy_from_slice(body))
    {
        let _ = e.into_response();
    }
}

/// The ServiceAccount key the token target verifies against (its issuer and audience are
/// upstream's defaults for a cluster at kubernetes.default.svc).
fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pem =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key").serialize_pem();
        TokenKeys::from_pem(&pem, "https://kubernetes.default.svc.cluster.local", Vec::new())
            .expect("the key loads")
    })
}

/// Token parsing; the first byte picks what the rest is:
/// - 0: an `Authorization` header value: the bearer token it carries is verified as a JWT;
/// - 1: a `--token-auth-file` (CSV lines `token,user,uid,"groups"`);
/// - 2: `<JWT header JSON>\xff<JWT claims JSON>`, signed with the server's key and verified, so the
///   claim checks run on tokens whose signature holds.
pub fn tokens(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let now = 1_796_601_600; // 2026-12-07
    match which % 3 {
        0 => {
            let Ok(value) = HeaderValue::from_bytes(rest) else { return };
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value);
            if let Some(token) = crate::auth::bearer(&headers) {
                if crate::auth::serviceaccount::looks_like_jwt(token) {
                    let _ = keys().verify(token, now);
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = crate::auth::parse_token_file(text);
            }
        }
        _ => {
            let Some(split) = rest.iter().position(|&b| b == 0xff) else { return };
            if let Ok(token) = keys().sign_raw(&rest[..split], &rest[split + 1..]) {
                if let Ok(claims) = keys().verify(&token, now) {
                    let _ = claims.username();
                }
            }
        }
    }
}

/// A fuzz entry point: arbitrary bytes in, never a panic.
pub type Entry = fn(&[u8]);

/// The API server's targets, by name (the name of their `fuzz/corpus/` directory).
pub const TARGETS: &[(&str, Entry)] = &[("body", body), ("tokens", tokens)];
