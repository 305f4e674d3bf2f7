//! Authentication, as upstream's authenticator chain does it: an x509 client certificate (CN is
//! the user, O the groups), a static bearer token (`--token-auth-file`), or an identity the
//! transport vouches for (the in-process components). Without one, a request is anonymous and gets
//! 401, except `/healthz`, `/livez`, `/readyz` and `/version`, which stay open as upstream allows.
//!
//! With `--insecure-http` there is no authentication at all (upstream's old insecure port): every
//! request acts as a cluster administrator, which is why that mode binds loopback only.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

pub mod rbac;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn new(name: impl Into<String>, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    /// Every authenticated user is also in `system:authenticated`, as upstream adds it.
    fn authenticated(mut self) -> UserInfo {
        if !self.groups.iter().any(|g| g == "system:authenticated") {
            self.groups.push("system:authenticated".into());
        }
        self
    }
}

/// An identity established below HTTP: by the TLS handshake's client certificate, or by the
/// in-process transport of a component. A request from the network cannot set it.
#[derive(Clone, Debug)]
pub struct Authenticated(pub UserInfo);

/// How the server authenticates.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// No authentication (plain HTTP with `--insecure-http`).
    pub insecure: bool,
    /// Static bearer tokens (`--token-auth-file`).
    pub tokens: HashMap<String, UserInfo>,
}

/// Paths anyone may read, authenticated or not.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The user behind `req`, if any authenticator accepts it.
pub fn authenticate(auth: &AuthConfig, req: &Request) -> Option<UserInfo> {
    if let Some(Authenticated(user)) = req.extensions().get::<Authenticated>() {
        return Some(user.clone().authenticated());
    }
    if let Some(token) = bearer(req) {
        return auth.tokens.get(token).cloned().map(UserInfo::authenticated);
    }
    if auth.insecure {
        return Some(UserInfo::new("system:admin", &["system:masters"]).authenticated());
    }
    None
}

/// Middleware: authenticates (401 if no one), authorizes with RBAC (403 with upstream's message),
/// and attaches the request's [`UserInfo`] for the handlers.
pub async fn middleware(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(user) = authenticate(&st.config.auth, &req) else {
        if open_path(req.uri().path()) {
            return next.run(req).await;
        }
        return ApiError::unauthorized().into_response();
    };
    if !st.config.auth.insecure {
        let attrs = rbac::Attributes::of_request(req.method(), req.uri().path(), req.uri().query());
        if rbac::allowed(&st, &user, &attrs).await.is_none() {
            tracing::debug!(user = %user.name, ?attrs, "forbidden");
            return attrs.forbidden(&user).into_response();
        }
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: line {line}: {why}")]
pub struct TokenFileError {
    pub path: String,
    pub line: usize,
    pub why: String,
}

/// Reads upstream's static token file: CSV lines `token,user,uid[,"group1,group2"]`.
pub fn read_token_file(path: &Path) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let err = |line: usize, why: String| TokenFileError { path: path.display().to_string(), line, why };
    let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
    let mut tokens = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line).map_err(|why| err(i + 1, why))?;
        if fields.len() < 3 {
            return Err(err(i + 1, "want at least token,user,uid".into()));
        }
        let (token, user) = (fields[0].trim(), fields[1].trim());
        if token.is_empty() || user.is_empty() {
            return Err(err(i + 1, "empty token or user".into()));
        }
        let groups: Vec<String> = fields
            .get(3)
            .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        tokens.insert(token.to_string(), UserInfo { name: user.to_string(), groups });
    }
    Ok(tokens)
}

/// Splits one CSV line, honouring double quotes (`""` inside quotes is a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = out.last_mut() {
                    f.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => {
                if let Some(f) = out.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_in_upstreams_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "# comment\nt1,alice,1\nt2,bob,2,\"dev,ops\"\n").unwrap();
        let tokens = read_token_file(&path).unwrap();
        assert_eq!(tokens["t1"], UserInfo::new("alice", &[]));
        assert_eq!(tokens["t2"], UserInfo::new("bob", &["dev", "ops"]));
        std::fs::write(&path, "t1,alice\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap_err().line, 1);
        std::fs::write(&path, "t1,alice,1,\"dev\n").unwrap();
        assert!(read_token_file(&path).is_err());
    }

    #[test]
    fn open_paths_are_only_health_and_version() {
        for p in ["/healthz", "/livez", "/readyz", "/version", "/readyz/etcd"] {
            assert!(open_path(p), "{p}");
        }
        for p in ["/api", "/apis", "/api/v1/pods", "/metrics", "/openapi/v3", "/healthzz"] {
            assert!(!open_path(p), "{p}");
        }
    }
}
