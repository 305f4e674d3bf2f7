//! Authentication, as upstream's authenticator chain does it: an x509 client certificate (CN is
//! the user, O the groups), a static bearer token (`--token-auth-file`), a ServiceAccount JWT
//! (`serviceaccount.rs`), or an identity the transport vouches for (the in-process components).
//! Without one, a request is anonymous and gets 401, except `/healthz`, `/livez`, `/readyz` and
//! `/version`, which stay open as upstream allows. A bearer token that no authenticator accepts is
//! 401 on every path (upstream fails on a bad credential rather than falling back to anonymous).
//! Then impersonation (`Impersonate-User`/`-Group`), RBAC (`rbac.rs`) and the path half of
//! upstream's NodeRestriction.
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
pub mod serviceaccount;

/// Who made a request: upstream's `user.Info` (name, uid, groups, extra).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
    /// The static token file's uid column; a ServiceAccount's uid. Empty when none.
    pub uid: String,
    /// What a ServiceAccount token adds: `authentication.kubernetes.io/credential-id` (its
    /// `JTI=`), `pod-name` and `pod-uid` for a pod-bound token.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(name: impl Into<String>, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
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

/// Set by the TLS layer when a client presented a certificate that does not verify (expired,
/// another CA): the request is refused with 401 whatever else it carries, as upstream does.
#[derive(Clone, Copy, Debug)]
pub struct BadClientCertificate;

/// How the server authenticates.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// No authentication (plain HTTP with `--insecure-http`).
    pub insecure: bool,
    /// Static bearer tokens (`--token-auth-file`).
    pub tokens: HashMap<String, UserInfo>,
    /// ServiceAccount token signing and verification; None serves no TokenRequest and accepts no
    /// JWTs.
    pub service_accounts: Option<std::sync::Arc<serviceaccount::TokenKeys>>,
}

impl std::fmt::Debug for AuthConfig {
    // The tokens are credentials: only their number is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("insecure", &self.insecure)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("service_accounts", &self.service_accounts)
            .finish()
    }
}

/// Paths anyone may read, authenticated or not.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The outcome of authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Authn {
    User(UserInfo),
    /// No credential at all.
    Anonymous,
    /// A credential no authenticator accepts.
    Rejected,
}

/// The user behind a request with `headers`, if any authenticator accepts it. `transport` is the
/// identity the TLS handshake or the in-process transport established, if any.
pub async fn authenticate(
    st: &AppState,
    headers: &http::HeaderMap,
    transport: Option<&Authenticated>,
) -> Authn {
    let auth = &st.config.auth;
    if let Some(Authenticated(user)) = transport {
        return Authn::User(user.clone().authenticated());
    }
    if headers.contains_key(http::header::AUTHORIZATION) {
        // Basic auth or another scheme has no authenticator, as upstream.
        if let Some(token) = bearer(headers) {
            if let Some(user) = auth.tokens.get(token) {
                return Authn::User(user.clone().authenticated());
            }
            if let Some(keys) = &auth.service_accounts {
                match service_account(st, keys, token, &keys.audiences).await {
                    Ok((user, _, _)) => return Authn::User(user),
                    Err(why) => tracing::debug!(%why, "bearer token rejected"),
                }
            }
        }
        if !auth.insecure {
            return Authn::Rejected;
        }
    }
    if auth.insecure {
        return Authn::User(UserInfo::new("system:admin", &["system:masters"]).authenticated());
    }
    Authn::Anonymous
}

/// What a TokenReview learns about a bearer token: the user (with its uid and extra: a
/// ServiceAccount's uid, the pod a token is bound to) and the requested audiences the token is
/// valid for.
#[derive(Debug)]
pub struct TokenIdentity {
    pub user: UserInfo,
    pub audiences: Vec<String>,
}

/// Authenticates `token` as a bearer token for `audiences` (empty: the API server's), with the
/// same authenticators as requests: upstream's TokenReview. `Err(None)`: no authenticator knows
/// the token; `Err(Some(why))`: one knew it and refused it.
pub async fn review_token(
    st: &AppState,
    token: &str,
    audiences: &[String],
) -> Result<TokenIdentity, Option<String>> {
    let auth = &st.config.auth;
    let api_audiences: Vec<String> =
        auth.service_accounts.as_ref().map(|k| k.audiences.clone()).unwrap_or_default();
    let wanted: &[String] = if audiences.is_empty() { &api_audiences } else { audiences };
    if let Some(user) = auth.tokens.get(token) {
        // Static tokens know no audience: they are valid for the API server's (upstream's
        // audience-agnostic wrapper).
        let matched: Vec<String> = wanted.iter().filter(|a| api_audiences.contains(a)).cloned().collect();
        if !wanted.is_empty() && !api_audiences.is_empty() && matched.is_empty() {
            return Err(Some(format!(
                "token audiences {api_audiences:?} is invalid for the target audiences {wanted:?}"
            )));
        }
        return Ok(TokenIdentity { user: user.clone().authenticated(), audiences: matched });
    }
    let Some(keys) = &auth.service_accounts else { return Err(None) };
    if !serviceaccount::looks_like_jwt(token) {
        return Err(None);
    }
    match service_account(st, keys, token, wanted).await {
        Ok((user, _, audiences)) => Ok(TokenIdentity { user, audiences }),
        // A JWT another issuer signed is none of ours (upstream's authenticator passes on it).
        Err(why) if why == serviceaccount::TokenError::OtherIssuer.to_string() => Err(None),
        Err(why) => Err(Some(format!("invalid bearer token, {why}"))),
    }
}

/// A ServiceAccount JWT's user, once its signature and claims hold for one of `audiences` and its
/// ServiceAccount (and the object it is bound to) still exist with the uids it names; also its
/// claims and the audiences it matched.
async fn service_account(
    st: &AppState,
    keys: &serviceaccount::TokenKeys,
    token: &str,
    audiences: &[String],
) -> Result<(UserInfo, serviceaccount::SaClaims, Vec<String>), String> {
    if !serviceaccount::looks_like_jwt(token) {
        return Err("not a JWT".into());
    }
    let now = jiff::Timestamp::now().as_second();
    let (claims, matched) = keys.verify_for(token, now, audiences).map_err(|e| e.to_string())?;
    let live_uid = |kind: &str, name: &str| {
        let plural = match kind {
            "ServiceAccount" => "serviceaccounts",
            "Pod" => "pods",
            _ => "secrets",
        };
        let ns = claims.namespace.clone();
        let name = name.to_string();
        async move {
            let res = api_types::resources::lookup("", "v1", plural)?;
            let obj = crate::objects::read_cached(st, res, &res.key(Some(&ns), &name)).await?;
            Some(obj.pointer("/metadata/uid").and_then(serde_json::Value::as_str).unwrap_or("").to_string())
        }
    };
    match live_uid("ServiceAccount", &claims.name).await {
        None => return Err(format!("service account {}/{} not found", claims.namespace, claims.name)),
        Some(uid) if !claims.uid.is_empty() && uid != claims.uid => {
            return Err(format!("service account {}/{} uid mismatch", claims.namespace, claims.name))
        }
        Some(_) => {}
    }
    if let Some((kind, name, uid)) = &claims.bound {
        match live_uid(kind, name).await {
            Some(live) if live == *uid => {}
            _ => return Err(format!("the {kind} {name} the token is bound to is gone")),
        }
    }
    let ns_group = format!("system:serviceaccounts:{}", claims.namespace);
    let mut user = UserInfo::new(claims.username(), &["system:serviceaccounts", &ns_group]).authenticated();
    // As upstream's ServiceAccount authenticator: the ServiceAccount's uid, and in extra the
    // token's id and the pod it is bound to.
    user.uid = claims.uid.clone();
    let key = |k: &str| format!("authentication.kubernetes.io/{k}");
    if !claims.jti.is_empty() {
        user.extra.insert(key("credential-id"), vec![format!("JTI={}", claims.jti)]);
    }
    if let Some((kind, name, uid)) = &claims.bound {
        if kind == "Pod" {
            user.extra.insert(key("pod-name"), vec![name.clone()]);
            user.extra.insert(key("pod-uid"), vec![uid.clone()]);
        }
    }
    Ok((user, claims, matched))
}

/// Middleware: authenticates (401 if no one), authorizes with RBAC (403 with upstream's message),
/// and attaches the request's [`UserInfo`] for the handlers.
pub async fn middleware(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // A refusal for want of authentication is audited too (upstream's WithFailedAuthenticationAudit).
    let refuse = |req: &Request, x509: bool| {
        if let Some(auditor) = &st.config.audit {
            auditor.failed_authentication(&st.registry, req, x509);
        }
        ApiError::unauthorized().into_response()
    };
    if req.extensions().get::<BadClientCertificate>().is_some() {
        return refuse(&req, true);
    }
    let transport = req.extensions().get::<Authenticated>().cloned();
    let user = match authenticate(&st, req.headers(), transport.as_ref()).await {
        Authn::User(user) => user,
        Authn::Anonymous if open_path(req.uri().path()) => return next.run(req).await,
        Authn::Anonymous | Authn::Rejected => return refuse(&req, false),
    };
    // Audit sits between authentication and authorization, as upstream's filters do.
    let (req, mut audit) = match &st.config.audit {
        Some(auditor) => match auditor.begin(&st.registry, req, &user, st.config.max_body).await {
            Ok(begun) => begun,
            Err(too_large) => return too_large,
        },
        None => (req, None),
    };
    let long_running = audit.is_some()
        && crate::audit::long_running(&st.registry, req.method(), req.uri().path(), req.uri().query());
    let resp = authorize_and_run(&st, user, req, next, audit.as_mut()).await;
    match audit {
        Some(rec) => rec.finish(resp, long_running).await,
        None => resp,
    }
}

/// Impersonation, authorization (its decision told to the audit `Recorder`), then the request.
async fn authorize_and_run(
    st: &AppState,
    mut user: UserInfo,
    mut req: Request,
    next: Next,
    audit: Option<&mut crate::audit::Recorder>,
) -> Response {
    let mut audit = audit;
    if !st.config.auth.insecure {
        let impersonating = req.headers().contains_key(IMPERSONATE_USER);
        user = match impersonate(st, user, req.headers()).await {
            Ok(user) => user,
            Err(refused) => return refused.into_response(),
        };
        if let Some(audit) = audit.as_deref_mut().filter(|_| impersonating) {
            audit.impersonated(&user);
        }
        for h in [IMPERSONATE_USER, IMPERSONATE_GROUP, IMPERSONATE_UID] {
            req.headers_mut().remove(h);
        }
        let attrs =
            rbac::Attributes::of_request(&st.registry, req.method(), req.uri().path(), req.uri().query());
        let Some(reason) = rbac::allowed(st, &user, &attrs).await else {
            tracing::debug!(user = %user.name, ?attrs, "forbidden");
            if let Some(audit) = audit {
                audit.authorized(false, "");
            }
            return attrs.forbidden(&user).into_response();
        };
        if let Some(audit) = audit {
            audit.authorized(true, &reason);
        }
        if let Some(refused) = node_restriction(&user, &attrs) {
            return refused.into_response();
        }
    } else if let Some(audit) = audit {
        audit.authorized(true, "");
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";

/// Upstream's impersonation (`kubectl --as`, `--as-group`): the caller must be allowed the
/// `impersonate` verb on each `users`/`serviceaccounts`/`groups` it names; the request then acts as
/// that user, in those groups (plus `system:authenticated`, and a ServiceAccount's own groups).
/// `Impersonate-Extra-*` headers are not supported and refused.
async fn impersonate(st: &AppState, user: UserInfo, headers: &http::HeaderMap) -> Result<UserInfo, ApiError> {
    let text = |v: &http::HeaderValue| {
        v.to_str().map(str::to_string).map_err(|_| ApiError::bad_request("impersonation headers must be ASCII"))
    };
    let as_user = headers.get(IMPERSONATE_USER).map(text).transpose()?;
    let groups: Vec<String> = headers.get_all(IMPERSONATE_GROUP).iter().map(text).collect::<Result<_, _>>()?;
    let extras = headers.keys().any(|k| k.as_str().starts_with("impersonate-extra-"));
    let uid = headers.contains_key(IMPERSONATE_UID);
    let Some(as_user) = as_user else {
        if !groups.is_empty() || extras || uid {
            return Err(ApiError::bad_request(
                "requested [Impersonate-Group or Impersonate-Extra or Impersonate-Uid] without impersonating a user",
            ));
        }
        return Ok(user);
    };
    if extras || uid {
        return Err(ApiError::bad_request("kplane does not support Impersonate-Extra-* or Impersonate-Uid"));
    }
    let check = |resource: &str, namespace: &str, name: &str| rbac::Attributes::Resource {
        verb: "impersonate".into(),
        group: String::new(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
    };
    let sa = as_user.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':'));
    let mut wanted = vec![match sa {
        Some((ns, name)) => check("serviceaccounts", ns, name),
        None => check("users", "", &as_user),
    }];
    wanted.extend(groups.iter().map(|g| check("groups", "", g)));
    for attrs in &wanted {
        if rbac::allowed(st, &user, attrs).await.is_none() {
            tracing::debug!(user = %user.name, ?attrs, "impersonation forbidden");
            return Err(attrs.forbidden(&user));
        }
    }
    let mut as_groups = groups;
    if let Some((ns, _)) = sa {
        for g in ["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")] {
            if !as_groups.contains(&g) {
                as_groups.push(g);
            }
        }
    }
    let impersonated = UserInfo { name: as_user, groups: as_groups, ..Default::default() };
    Ok(if impersonated.name == "system:anonymous" { impersonated } else { impersonated.authenticated() })
}

/// Upstream's NodeRestriction admission: a node identity (`system:node:<name>` in `system:nodes`)
/// may create, change or delete only its own Node (and its status) and its own Lease in
/// `kube-node-lease`. Checked here for what the request path names; creates, whose name is in the
/// body, are checked by the create handler through [`node_restriction_create`].
fn node_restriction(user: &UserInfo, attrs: &rbac::Attributes) -> Option<ApiError> {
    let rbac::Attributes::Resource { verb, group, resource, namespace, name, .. } = attrs else { return None };
    if !matches!(verb.as_str(), "update" | "patch" | "delete") {
        return None;
    }
    node_restriction_on(user, group, resource, namespace, name)
}

/// [`node_restriction`] for a create of `obj` (a Node, or a Lease in `namespace`).
pub(crate) fn node_restriction_create(
    user: Option<&UserInfo>,
    res: &api_types::ResourceDef,
    namespace: Option<&str>,
    obj: &serde_json::Value,
) -> Option<ApiError> {
    let name = obj.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or("");
    node_restriction_on(user?, res.group, res.plural, namespace.unwrap_or(""), name)
}

fn node_restriction_on(
    user: &UserInfo,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Option<ApiError> {
    let own = user.name.strip_prefix("system:node:")?;
    if !user.groups.iter().any(|g| g == "system:nodes") || name == own {
        return None;
    }
    let (qualified, why) = match (group, resource, namespace) {
        ("", "nodes", _) => ("nodes", format!("node {own:?} is not allowed to modify node {name:?}")),
        ("coordination.k8s.io", "leases", "kube-node-lease") => (
            "leases.coordination.k8s.io",
            "can only access node lease with the same name as the requesting node".to_string(),
        ),
        _ => return None,
    };
    Some(ApiError {
        details: Some(serde_json::json!({"name": name, "group": group, "kind": resource})),
        ..ApiError::new(403, "Forbidden", format!("{qualified} {name:?} is forbidden: {why}"))
    })
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
    parse_token_file(&text).map_err(|(line, why)| err(line, why))
}

/// [`read_token_file`]'s parse of the file's text; an error gives the line (from 1) and why.
pub fn parse_token_file(text: &str) -> Result<HashMap<String, UserInfo>, (usize, String)> {
    let mut tokens = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line).map_err(|why| (i + 1, why))?;
        if fields.len() < 3 {
            return Err((i + 1, "want at least token,user,uid".into()));
        }
        let (token, user) = (fields[0].trim(), fields[1].trim());
        if token.is_empty() || user.is_empty() {
            return Err((i + 1, "empty token or user".into()));
        }
        let groups: Vec<String> = fields
            .get(3)
            .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let uid = fields[2].trim().to_string();
        tokens
            .insert(token.to_string(), UserInfo { name: user.to_string(), groups, uid, ..Default::default() });
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
        assert_eq!(tokens["t1"], UserInfo { uid: "1".into(), ..UserInfo::new("alice", &[]) });
        assert_eq!(tokens["t2"], UserInfo { uid: "2".into(), ..UserInfo::new("bob", &["dev", "ops"]) });
        std::fs::write(&path, "t1,alice\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap_err().line, 1);
        std::fs::write(&path, "t1,alice,1,\"dev\n").unwrap();
        assert!(read_token_file(&path).is_err());
    }

    #[test]
    fn nodes_may_change_only_themselves() {
        let node = UserInfo::new("system:node:worker7", &["system:nodes"]);
        let attrs =
            |verb: &str, group: &str, resource: &str, ns: &str, name: &str| rbac::Attributes::Resource {
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: ns.into(),
                name: name.into(),
            };
        assert!(node_restriction(&node, &attrs("patch", "", "nodes", "", "worker7")).is_none());
        assert!(node_restriction(&node, &attrs("get", "", "nodes", "", "worker0")).is_none());
        let e = node_restriction(&node, &attrs("patch", "", "nodes", "", "worker0")).unwrap();
        assert_eq!(
            e.message,
            "nodes \"worker0\" is forbidden: node \"worker7\" is not allowed to modify node \"worker0\""
        );
        assert!(node_restriction(&node, &attrs("delete", "", "nodes", "", "worker0")).is_some());
        let lease = attrs("update", "coordination.k8s.io", "leases", "kube-node-lease", "worker0");
        assert!(node_restriction(&node, &lease).is_some());
        let admin = UserInfo::new("kubernetes-admin", &["system:masters"]);
        assert!(node_restriction(&admin, &attrs("patch", "", "nodes", "", "worker0")).is_none());
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
