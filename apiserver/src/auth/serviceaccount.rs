//! ServiceAccount tokens: JWTs the API server signs (`POST serviceaccounts/<name>/token`, what
//! `kubectl create token` calls) and verifies on every request, as upstream's bound service account
//! tokens work.
//!
//! - The signing key is an ECDSA P-256 key in `<data-dir>/tls/sa.key` (PKCS#8 PEM, mode 0600),
//!   created on first start and reused. Tokens are ES256 JWTs (RFC 7519) with upstream's claims:
//!   `iss`, `sub` (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `nbf`, `iat`, `jti`, and the
//!   private `kubernetes.io` claim naming the namespace, the ServiceAccount (name and uid) and the
//!   object a token is bound to (a Pod or a Secret).
//! - Verification ([`TokenKeys::verify`]) is everything that needs no storage: the shape, `alg`
//!   (ES256 only, so never `none`), the signature, the issuer, `exp`/`nbf` (with go-jose's one
//!   minute leeway, as upstream), and the audience. The authenticator then checks, as upstream
//!   does, that the ServiceAccount (and the bound object) still exist with the uid in the token, so
//!   deleting a ServiceAccount revokes its tokens.
//!
//! The JWT is encoded and checked here with `ring` (already the TLS stack's crypto provider) rather
//! than through a JWT crate: one algorithm, a fixed header, and every check spelled out below.

use std::path::Path;

use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{json, Value};

use crate::pki::{write_private, PkiError};

/// Upstream's usual `--service-account-issuer` (kubeadm, k3s), also the default API audience.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Go-jose's default leeway for `exp` and `nbf`, which upstream's validator uses.
const LEEWAY_SECS: i64 = 60;
/// Longest token accepted for parsing at all; real ones are under 2 KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The signing key, the issuer and the audiences the API server accepts.
pub struct TokenKeys {
    key: EcdsaKeyPair,
    /// `kid`: base64url of the SHA-256 of the public key's SubjectPublicKeyInfo, as upstream.
    kid: String,
    pub issuer: String,
    /// The API server's audiences (`--api-audiences`, upstream defaults them to the issuer).
    pub audiences: Vec<String>,
}

impl std::fmt::Debug for TokenKeys {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// What a verified token says, for the storage checks that follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaClaims {
    pub namespace: String,
    pub name: String,
    /// The ServiceAccount's uid when the token was issued.
    pub uid: String,
    /// The object the token is bound to: (kind, name, uid).
    pub bound: Option<(String, String, String)>,
    /// The token's `jti` (empty in a token without one).
    pub jti: String,
}

impl SaClaims {
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// Why a token was refused (logged at debug, never sent: the client only sees 401).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("not issued by this API server")]
    OtherIssuer,
    #[error("unsupported signing algorithm")]
    Algorithm,
    #[error("invalid signature")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audiences do not match the API server's")]
    Audience,
    #[error("missing or malformed service account claims")]
    Claims,
}

/// What a new token is for.
pub struct Request<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub audiences: &'a [String],
    pub expiration_seconds: i64,
    /// (kind, name, uid) of the object the token is bound to.
    pub bound: Option<(&'a str, &'a str, &'a str)>,
}

impl TokenKeys {
    /// Loads `dir/sa.key`, creating it (mode 0600) on first use.
    pub fn load_or_create(dir: &Path, issuer: &str, audiences: Vec<String>) -> Result<TokenKeys, PkiError> {
        let path = dir.join("sa.key");
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_pem();
                write_private(&path, pem.as_bytes())?;
                pem
            }
            Err(source) => return Err(PkiError::Io { path, source }),
        };
        TokenKeys::from_pem(&pem, issuer, audiences)
    }

    /// A key from its PKCS#8 PEM (ECDSA P-256).
    pub fn from_pem(pem: &str, issuer: &str, audiences: Vec<String>) -> Result<TokenKeys, PkiError> {
        let pair = rcgen::KeyPair::from_pem(pem)?;
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der(), &rng)
                .map_err(|_| PkiError::Cert(rcgen::Error::CouldNotParseKeyPair))?;
        let kid = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&pair),
        ));
        let audiences = if audiences.is_empty() { vec![issuer.to_string()] } else { audiences };
        Ok(TokenKeys { key, kid, issuer: issuer.to_string(), audiences })
    }

    /// Signs a token for `req`, issued at `now` (Unix seconds).
    pub fn issue(&self, req: &Request<'_>, now: i64) -> Result<String, TokenError> {
        let mut k8s = json!({
            "namespace": req.namespace,
            "serviceaccount": {"name": req.name, "uid": req.uid},
        });
        if let Some((kind, name, uid)) = req.bound {
            k8s[kind.to_ascii_lowercase()] = json!({"name": name, "uid": uid});
        }
        let claims = json!({
            "aud": req.audiences,
            "exp": now + req.expiration_seconds,
            "iat": now,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "nbf": now,
            "sub": format!("system:serviceaccount:{}:{}", req.namespace, req.name),
        });
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let rng = ring::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, signing_input.as_bytes()).map_err(|_| TokenError::Signature)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// A token of this key's signature over any header and payload bytes (base64url-encoded as
    /// given), so the fuzz entry reaches [`TokenKeys::verify`]'s claim checks with tokens whose
    /// signature holds.
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> Result<String, TokenError> {
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let rng = ring::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, signing_input.as_bytes()).map_err(|_| TokenError::Signature)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// Verifies everything about `token` that needs no storage, at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<SaClaims, TokenError> {
        self.verify_for(token, now, &self.audiences).map(|(claims, _)| claims)
    }

    /// [`TokenKeys::verify`] for `audiences` instead of the API server's (a TokenReview's
    /// `spec.audiences`); also returns the token's audiences among them.
    pub fn verify_for(
        &self,
        token: &str,
        now: i64,
        audiences: &[String],
    ) -> Result<(SaClaims, Vec<String>), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| B64.decode(part).map_err(|_| TokenError::Malformed);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        let payload: Value = serde_json::from_slice(&decode(p)?).map_err(|_| TokenError::Malformed)?;
        let sig = decode(s)?;
        // Only tokens that name this issuer are ours to judge (upstream's authenticator skips others).
        if payload.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(TokenError::OtherIssuer);
        }
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        let public =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.key.public_key());
        let signed = &token[..h.len() + 1 + p.len()];
        public.verify(signed.as_bytes(), &sig).map_err(|_| TokenError::Signature)?;

        let time = |k: &str| payload.get(k).and_then(Value::as_i64);
        let exp = time("exp").ok_or(TokenError::Claims)?;
        if now - LEEWAY_SECS > exp {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = time("nbf") {
            if now + LEEWAY_SECS < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        let auds: Vec<&str> = match payload.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let matched: Vec<String> =
            audiences.iter().filter(|ours| auds.iter().any(|a| a == ours)).cloned().collect();
        if matched.is_empty() {
            return Err(TokenError::Audience);
        }
        let k8s = payload.get("kubernetes.io").ok_or(TokenError::Claims)?;
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let claims = SaClaims {
            namespace: s(k8s.get("namespace")),
            name: s(k8s.pointer("/serviceaccount/name")),
            uid: s(k8s.pointer("/serviceaccount/uid")),
            bound: ["pod", "secret"].iter().find_map(|kind| {
                let b = k8s.get(*kind)?;
                let kind = if *kind == "pod" { "Pod" } else { "Secret" };
                Some((kind.to_string(), s(b.get("name")), s(b.get("uid"))))
            }),
            jti: s(payload.get("jti")),
        };
        let sub = payload.get("sub").and_then(Value::as_str).unwrap_or("");
        if claims.namespace.is_empty() || claims.name.is_empty() || sub != claims.username() {
            return Err(TokenError::Claims);
        }
        Ok((claims, matched))
    }
}

/// Whether a bearer token looks like a JWT (three dot-separated parts), to tell it from a static
/// token in logs and errors.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
        TokenKeys::from_pem(&pem, DEFAULT_ISSUER, vec![]).unwrap()
    }

    fn request(aud: &[String]) -> Request<'_> {
        Request {
            namespace: "default",
            name: "robot",
            uid: "u-1",
            audiences: aud,
            expiration_seconds: 3600,
            bound: None,
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn issued_tokens_verify_with_upstreams_claims() {
        let k = keys();
        let aud = vec![DEFAULT_ISSUER.to_string()];
        let token = k.issue(&request(&aud), NOW).unwrap();
        let claims = k.verify(&token, NOW + 10).unwrap();
        assert_eq!(claims.username(), "system:serviceaccount:default:robot");
        assert_eq!(claims.uid, "u-1");
        let payload: Value =
            serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["kubernetes.io"]["serviceaccount"]["name"], "robot");
        assert_eq!(payload["exp"], NOW + 3600);
        // A bound token names its object.
        let mut r = request(&aud);
        r.bound = Some(("Pod", "p", "pod-uid"));
        let claims = k.verify(&k.issue(&r, NOW).unwrap(), NOW).unwrap();
        assert_eq!(claims.bound, Some(("Pod".into(), "p".into(), "pod-uid".into())));
    }

    #[test]
    fn time_audience_and_issuer_are_checked() {
        let k = keys();
        let aud = vec![DEFAULT_ISSUER.to_string()];
        let token = k.issue(&request(&aud), NOW).unwrap();
        assert_eq!(k.verify(&token, NOW + 3600 + LEEWAY_SECS + 1), Err(TokenError::Expired));
        assert!(k.verify(&token, NOW + 3600 + LEEWAY_SECS).is_ok(), "within the leeway");
        assert_eq!(k.verify(&token, NOW - LEEWAY_SECS - 1), Err(TokenError::NotYetValid));
        let other = vec!["vault".to_string()];
        assert_eq!(k.verify(&k.issue(&request(&other), NOW).unwrap(), NOW), Err(TokenError::Audience));
        let foreign = TokenKeys::from_pem(
            &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem(),
            "https://elsewhere",
            vec![DEFAULT_ISSUER.to_string()],
        )
        .unwrap();
        assert_eq!(k.verify(&foreign.issue(&request(&aud), NOW).unwrap(), NOW), Err(TokenError::OtherIssuer));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let k = keys();
        let aud = vec![DEFAULT_ISSUER.to_string()];
        let token = k.issue(&request(&aud), NOW).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // The payload changed (another name), the signature kept.
        let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = json!("system:serviceaccount:kube-system:admin");
        payload["kubernetes.io"]["namespace"] = json!("kube-system");
        payload["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
        let tampered = format!("{}.{}.{}", parts[0], B64.encode(payload.to_string()), parts[2]);
        assert_eq!(k.verify(&tampered, NOW), Err(TokenError::Signature));
        // Signed by another key, same issuer.
        let other = keys();
        assert_eq!(k.verify(&other.issue(&request(&aud), NOW).unwrap(), NOW), Err(TokenError::Signature));
        // alg none, with or without a signature.
        let none = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(k.verify(&format!("{none}.{}.", parts[1]), NOW), Err(TokenError::Algorithm));
        assert_eq!(k.verify(&format!("{none}.{}.{}", parts[1], parts[2]), NOW), Err(TokenError::Algorithm));
        // HS256 "signed" with the public key (the classic confusion) is refused by alg as well.
        let hs = B64.encode(r#"{"alg":"HS256"}"#);
        assert_eq!(k.verify(&format!("{hs}.{}.{}", parts[1], parts[2]), NOW), Err(TokenError::Algorithm));
        for junk in ["", ".", "..", "a.b.c", "a.b.c.d", &"x".repeat(MAX_TOKEN_LEN + 1), "é.é.é", "e30.e30.e30"]
        {
            assert!(k.verify(junk, NOW).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn keys_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKeys::load_or_create(dir.path(), DEFAULT_ISSUER, vec![]).unwrap();
        let b = TokenKeys::load_or_create(dir.path(), DEFAULT_ISSUER, vec![]).unwrap();
        assert_eq!(a.kid, b.kid);
        let aud = vec![DEFAULT_ISSUER.to_string()];
        assert!(b.verify(&a.issue(&request(&aud), NOW).unwrap(), NOW).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sa.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug shows no key");
    }
}
