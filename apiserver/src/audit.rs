//! The audit log, as kube-apiserver's: an `audit.k8s.io/v1` Policy (`--audit-policy-file`) says at
//! which level each request is recorded (first matching rule wins; no match: None), and each stage
//! of a recorded request is one `audit.k8s.io/v1` Event, one JSON object per line, on
//! `--audit-log-path` (`-`: stdout), rotated by size with lumberjack's semantics
//! (`--audit-log-maxsize` MB; backups `<name>-<timestamp>.<ext>`; `--audit-log-maxbackup`,
//! `--audit-log-maxage` days).
//!
//! Where it sits: the auth middleware calls [`Auditor::begin`] once the request is authenticated
//! and before it is authorized (upstream's filter order), which writes RequestReceived; then
//! [`Recorder::finish`] with the response and the authorization decision writes ResponseStarted
//! (long-running requests: watches, logs) and ResponseComplete (when the response body ends). A
//! handler that panics gets a Panic event. Nothing is special-cased beyond the policy: a Secret is
//! logged at the level the policy gives it, as upstream.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::UserInfo;
use crate::route::Target;

/// Audit levels, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyFile {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// An `audit.k8s.io/v1` Policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Vec<Stage>,
    omit_managed_fields: bool,
}

/// What the policy says for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub level: Level,
    pub omit_stages: Vec<Stage>,
    pub omit_managed_fields: bool,
}

/// The attributes a policy rule looks at.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    pub user: String,
    pub groups: Vec<String>,
    /// Upstream's verb: get, list, watch, create, update, patch, delete, deletecollection; for a
    /// non-resource request the lower-case HTTP method.
    pub verb: String,
    /// None for a non-resource request.
    pub resource: Option<ResourceAttrs>,
    pub path: String,
}

#[derive(Clone, Debug, Default)]
pub struct ResourceAttrs {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Policy {
    /// Reads a policy file (YAML or JSON); every error names the file.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the audit policy file {}: {e}", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("the audit policy file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if file.api_version != "audit.k8s.io/v1" || file.kind != "Policy" {
            return Err(format!(
                "want apiVersion audit.k8s.io/v1 and kind Policy, have apiVersion {:?} and kind {:?}",
                file.api_version, file.kind
            ));
        }
        if file.rules.is_empty() {
            return Err("the policy has no rules".into());
        }
        for (i, rule) in file.rules.iter().enumerate() {
            let bad = |what: &str| Err(format!("rules[{i}]: {what}"));
            if !rule.non_resource_urls.is_empty() && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return bad("rules cannot apply to both regular resources and non-resource URLs");
            }
            for url in &rule.non_resource_urls {
                if !url.starts_with('/') && url != "*" {
                    return bad(&format!("nonResourceURLs: {url:?} must start with \"/\" or be \"*\""));
                }
                if url.find('*').is_some_and(|at| at != url.len() - 1) {
                    return bad(&format!("nonResourceURLs: {url:?}: \"*\" is allowed only at the end"));
                }
            }
            for gr in &rule.resources {
                if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                    return bad("resourceNames require resources");
                }
            }
        }
        Ok(Policy {
            rules: file.rules,
            omit_stages: file.omit_stages,
            omit_managed_fields: file.omit_managed_fields,
        })
    }

    /// The first matching rule's level, stages to omit and managed-fields choice; None when no
    /// rule matches.
    pub fn decide(&self, a: &Attrs) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| matches(r, a)) else {
            return Decision { level: Level::None, omit_stages: Vec::new(), omit_managed_fields: false };
        };
        let mut omit_stages = self.omit_stages.clone();
        omit_stages.extend(rule.omit_stages.iter().copied());
        Decision {
            level: rule.level,
            omit_stages,
            omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
        }
    }
}

fn matches(r: &Rule, a: &Attrs) -> bool {
    if !r.users.is_empty() && !r.users.contains(&a.user) {
        return false;
    }
    if !r.user_groups.is_empty() && !a.groups.iter().any(|g| r.user_groups.contains(g)) {
        return false;
    }
    if !r.verbs.is_empty() && !r.verbs.contains(&a.verb) {
        return false;
    }
    match &a.resource {
        Some(res) => {
            if !r.non_resource_urls.is_empty() {
                return false;
            }
            if !r.namespaces.is_empty() && !r.namespaces.contains(&res.namespace) {
                return false;
            }
            r.resources.is_empty() || r.resources.iter().any(|gr| group_resources_match(gr, res))
        }
        None => {
            if !r.resources.is_empty() || !r.namespaces.is_empty() {
                return false;
            }
            r.non_resource_urls.is_empty()
                || r.non_resource_urls.iter().any(|u| match u.strip_suffix('*') {
                    Some(prefix) => a.path.starts_with(prefix),
                    None => *u == a.path,
                })
        }
    }
}

fn group_resources_match(gr: &GroupResources, res: &ResourceAttrs) -> bool {
    if gr.group != res.group {
        return false;
    }
    if !gr.resources.is_empty() {
        let full = if res.subresource.is_empty() {
            res.resource.clone()
        } else {
            format!("{}/{}", res.resource, res.subresource)
        };
        let hit = gr.resources.iter().any(|want| {
            *want == full
                || *want == "*"
                || (res.subresource.is_empty() && *want == res.resource)
                || want.strip_prefix("*/").is_some_and(|sub| sub == res.subresource && !sub.is_empty())
                || want.strip_suffix("/*").is_some_and(|r| r == res.resource && !res.subresource.is_empty())
        });
        if !hit {
            return false;
        }
    }
    gr.resource_names.is_empty() || gr.resource_names.contains(&res.name)
}

/// Where events go: stdout, or a file rotated by size.
enum Sink {
    Stdout,
    File(RotatingFile),
}

/// Lumberjack's rotation: before a write would take the file past `max_size` bytes it is renamed
/// to `<name>-<UTC timestamp>.<ext>` and a new one started; then backups beyond `max_backups` (0:
/// keep all) or older than `max_age` (zero: keep all) are removed.
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_size: u64,
    max_backups: usize,
    max_age: Duration,
}

impl RotatingFile {
    fn open(path: &Path, max_size: u64, max_backups: usize, max_age: Duration) -> Result<RotatingFile, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("creating the audit log's directory {}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("opening the audit log {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile { path: path.to_path_buf(), file, size, max_size, max_backups, max_age })
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `<stem>-` and `.<ext>`, the parts of a backup's name around its timestamp.
    fn backup_parts(&self) -> (String, String) {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (format!("{stem}-"), format!(".{ext}")),
            _ => (format!("{name}-"), String::new()),
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let (prefix, ext) = self.backup_parts();
        let stamp = jiff::Timestamp::now().strftime("%Y-%m-%dT%H-%M-%S%.3f").to_string();
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut backup = dir.join(format!("{prefix}{stamp}{ext}"));
        let mut n = 1;
        while backup.exists() {
            backup = dir.join(format!("{prefix}{stamp}.{n}{ext}"));
            n += 1;
        }
        std::fs::rename(&self.path, &backup)?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        self.prune(&dir, &prefix, &ext);
        Ok(())
    }

    fn prune(&self, dir: &Path, prefix: &str, ext: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut backups: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(prefix) && name.ends_with(ext) && e.path() != self.path
            })
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), e.path()))
            .collect();
        backups.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let now = SystemTime::now();
        for (i, (modified, path)) in backups.iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old =
                !self.max_age.is_zero() && now.duration_since(*modified).is_ok_and(|age| age > self.max_age);
            if too_many || too_old {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The audit log's settings (kube-apiserver's `--audit-*` flags).
#[derive(Clone, Debug, Default)]
pub struct AuditArgs {
    pub policy_file: Option<PathBuf>,
    pub log_path: Option<String>,
    /// Days to keep backups; 0 keeps them whatever their age.
    pub max_age_days: u64,
    /// Backups to keep; 0 keeps all.
    pub max_backups: usize,
    /// Megabytes a log file may reach before it is rotated; 0 never rotates.
    pub max_size_mb: u64,
}

/// A policy and where its events go.
pub struct Auditor {
    policy: Policy,
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Auditor {
    /// None unless both a policy and a log path are given (as upstream, which records nothing
    /// without a policy); a policy that cannot be read or is invalid is an error naming the file.
    pub fn from_args(args: &AuditArgs) -> Result<Option<Arc<Auditor>>, String> {
        let policy = args.policy_file.as_deref().map(Policy::load).transpose()?;
        let (Some(policy), Some(path)) = (policy, args.log_path.as_deref()) else { return Ok(None) };
        let sink = if path == "-" {
            Sink::Stdout
        } else {
            Sink::File(RotatingFile::open(
                Path::new(path),
                args.max_size_mb.saturating_mul(1024 * 1024),
                args.max_backups,
                Duration::from_secs(args.max_age_days.saturating_mul(86_400)),
            )?)
        };
        Ok(Some(Arc::new(Auditor { policy, sink: Mutex::new(sink) })))
    }

    /// An auditor with `policy` writing to `path` (tests).
    pub fn to_file(policy: Policy, path: &Path, max_size: u64, max_backups: usize) -> Result<Auditor, String> {
        let file = RotatingFile::open(path, max_size, max_backups, Duration::ZERO)?;
        Ok(Auditor { policy, sink: Mutex::new(Sink::File(file)) })
    }

    fn write(&self, event: &Value) {
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        let mut sink = self.sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = match &mut *sink {
            Sink::Stdout => std::io::stdout().lock().write_all(&line),
            Sink::File(f) => f.write_line(&line),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }

    /// Starts recording an authenticated request: decides its level and, unless None, writes
    /// RequestReceived. A request body the level needs (Request and above) or that names a created
    /// object is read here and put back.
    /// A body over `max_body` is answered 413 here, as the handler would.
    pub async fn begin(
        self: &Arc<Self>,
        registry: &api_types::Registry,
        req: Request,
        user: &UserInfo,
        max_body: usize,
    ) -> Result<(Request, Option<Recorder>), Response> {
        let attrs = attrs_of(registry, req.method(), req.uri().path(), req.uri().query(), user);
        let decision = self.policy.decide(&attrs);
        if decision.level == Level::None {
            return Ok((req, None));
        }
        let (parts, body) = req.into_parts();
        let wants_body = decision.level >= Level::Request || parts.method == Method::POST;
        let (req, request_object) = if wants_body {
            match axum::body::to_bytes(body, max_body).await {
                Ok(bytes) => {
                    // Objects as the handler decodes them (JSON, YAML or protobuf); anything else
                    // (patches) as JSON if it is JSON.
                    let typed = attrs.resource.as_ref().and_then(|r| {
                        api_types::resources::lookup(&r.group, &r.version, &r.resource)
                            .filter(|_| r.subresource.is_empty() && parts.method != Method::PATCH)
                    });
                    let obj = typed
                        .and_then(|res| crate::handlers::decode_body(res, &parts.headers, &bytes).ok())
                        .or_else(|| serde_json::from_slice::<Value>(&bytes).ok());
                    (Request::from_parts(parts, Body::from(bytes)), obj)
                }
                Err(_) => return Err(crate::ApiError::too_large(max_body).into_response()),
            }
        } else {
            (Request::from_parts(parts, body), None)
        };
        let received = jiff::Timestamp::now();
        let mut object_ref = attrs.resource.as_ref().map(object_ref);
        if let (Some(r), Some(obj)) = (object_ref.as_mut(), request_object.as_ref()) {
            if r.get("name").is_none() {
                if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
                    r.insert("name".into(), json!(name));
                }
            }
        }
        let mut base = Map::new();
        base.insert("kind".into(), json!("Event"));
        base.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        base.insert("level".into(), json!(decision.level.name()));
        base.insert("auditID".into(), json!(audit_id(req.headers())));
        let uri = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_else(|| req.uri().path());
        base.insert("requestURI".into(), json!(uri));
        base.insert("verb".into(), json!(attrs.verb));
        base.insert("user".into(), crate::reviews::user_info(user));
        base.insert("sourceIPs".into(), json!(source_ips(&req)));
        if let Some(ua) = req.headers().get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
            base.insert("userAgent".into(), json!(ua));
        }
        if let Some(r) = object_ref {
            base.insert("objectRef".into(), Value::Object(r));
        }
        base.insert("requestReceivedTimestamp".into(), json!(micros(received)));
        let mut rec = Recorder { auditor: self.clone(), decision, base, annotations: Map::new(), done: false };
        rec.emit(Stage::RequestReceived, None);
        // As upstream's, the request object is in the stages after RequestReceived (upstream decodes
        // the body only after that stage is written).
        if rec.decision.level >= Level::Request {
            if let Some(mut obj) = request_object {
                if rec.decision.omit_managed_fields {
                    strip_managed_fields(&mut obj);
                }
                rec.base.insert("requestObject".into(), obj);
            }
        }
        Ok((req, Some(rec)))
    }
}

impl Auditor {
    /// A request refused for want of authentication (upstream's `WithFailedAuthenticationAudit`):
    /// one event at ResponseStarted, `user` empty (no one was authenticated, so a rule naming users
    /// or groups does not match), `responseStatus` 401 with the credentials attempted, never their
    /// value. `x509` is whether a client certificate was presented.
    pub fn failed_authentication(&self, registry: &api_types::Registry, req: &Request, x509: bool) {
        let nobody = UserInfo::new("", &[]);
        let attrs = attrs_of(registry, req.method(), req.uri().path(), req.uri().query(), &nobody);
        let decision = self.policy.decide(&attrs);
        if decision.level == Level::None || decision.omit_stages.contains(&Stage::ResponseStarted) {
            return;
        }
        let now = micros(jiff::Timestamp::now());
        let mut ev = Map::new();
        ev.insert("kind".into(), json!("Event"));
        ev.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        ev.insert("level".into(), json!(decision.level.name()));
        ev.insert("auditID".into(), json!(audit_id(req.headers())));
        ev.insert("stage".into(), json!(Stage::ResponseStarted.name()));
        let uri = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_else(|| req.uri().path());
        ev.insert("requestURI".into(), json!(uri));
        ev.insert("verb".into(), json!(attrs.verb));
        ev.insert("user".into(), json!({}));
        ev.insert("sourceIPs".into(), json!(source_ips(req)));
        if let Some(ua) = req.headers().get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
            ev.insert("userAgent".into(), json!(ua));
        }
        if let Some(r) = attrs.resource.as_ref() {
            ev.insert("objectRef".into(), Value::Object(object_ref(r)));
        }
        ev.insert(
            "responseStatus".into(),
            json!({"metadata": {}, "message": auth_methods(req, x509), "code": 401}),
        );
        ev.insert("requestReceivedTimestamp".into(), json!(now));
        ev.insert("stageTimestamp".into(), json!(now));
        self.write(&Value::Object(ev));
    }
}

/// Upstream's message for a failed authentication: the kinds of credential the request carried.
fn auth_methods(req: &Request, x509: bool) -> String {
    let mut tried = Vec::new();
    let auth = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = auth.trim().split(' ');
    let scheme = parts.next().unwrap_or("").to_ascii_lowercase();
    let has_value = parts.next().is_some();
    if scheme == "basic" && has_value {
        tried.push("basic");
    }
    if scheme == "bearer" && has_value {
        tried.push("bearer");
    }
    let access_token = crate::params::Params::parse(req.uri().query())
        .ok()
        .and_then(|p| p.get("access_token").map(|t| !t.trim().is_empty()))
        .unwrap_or(false);
    if access_token {
        tried.push("access_token");
    }
    if x509 {
        tried.push("x509");
    }
    if tried.is_empty() {
        "Authentication failed, no credentials provided".into()
    } else {
        format!("Authentication failed, attempted: {}", tried.join(", "))
    }
}

/// One request being recorded.
pub struct Recorder {
    auditor: Arc<Auditor>,
    decision: Decision,
    base: Map<String, Value>,
    annotations: Map<String, Value>,
    done: bool,
}

impl Recorder {
    /// The user the request acts as (`kubectl --as`): upstream's `impersonatedUser`.
    pub fn impersonated(&mut self, user: &UserInfo) {
        self.base.insert("impersonatedUser".into(), crate::reviews::user_info(user));
    }

    /// The authorization decision: `allow` with the authorizer's reason, or `forbid`.
    pub fn authorized(&mut self, allowed: bool, reason: &str) {
        self.annotations
            .insert("authorization.k8s.io/decision".into(), json!(if allowed { "allow" } else { "forbid" }));
        self.annotations.insert("authorization.k8s.io/reason".into(), json!(reason));
    }

    fn emit(&self, stage: Stage, extra: Option<Map<String, Value>>) {
        if self.decision.omit_stages.contains(&stage) {
            return;
        }
        let mut ev = self.base.clone();
        ev.insert("stage".into(), json!(stage.name()));
        ev.insert("stageTimestamp".into(), json!(micros(jiff::Timestamp::now())));
        if let Some(extra) = extra {
            ev.extend(extra);
        }
        if !self.annotations.is_empty() && stage != Stage::RequestReceived {
            ev.insert("annotations".into(), Value::Object(self.annotations.clone()));
        }
        self.auditor.write(&Value::Object(ev));
    }

    /// Records the response: long-running ones get ResponseStarted now; ResponseComplete is
    /// written when the body has been sent (or dropped).
    pub async fn finish(mut self, resp: Response, long_running: bool) -> Response {
        let code = resp.status().as_u16();
        let needs_body = !long_running && (code >= 400 || self.decision.level == Level::RequestResponse);
        let (parts, body) = resp.into_parts();
        let (body, object) = if needs_body {
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(bytes) => {
                    let obj = serde_json::from_slice::<Value>(&bytes).ok();
                    (Body::from(bytes), obj)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a response for the audit log failed");
                    (Body::empty(), None)
                }
            }
        } else {
            (body, None)
        };
        let mut status = json!({"metadata": {}, "code": code});
        if let Some(obj) = object.as_ref().filter(|o| o["kind"] == "Status") {
            for k in ["status", "message", "reason"] {
                if let Some(v) = obj.get(k) {
                    status[k] = v.clone();
                }
            }
        }
        let mut extra = Map::new();
        extra.insert("responseStatus".into(), status);
        if self.decision.level == Level::RequestResponse {
            if let Some(mut obj) = object {
                if self.decision.omit_managed_fields {
                    strip_managed_fields(&mut obj);
                }
                extra.insert("responseObject".into(), obj);
            }
        }
        if let (Some(r), Some(name)) = (
            self.base.get_mut("objectRef").and_then(Value::as_object_mut),
            extra.get("responseObject").and_then(|o| o.pointer("/metadata/name")).cloned(),
        ) {
            r.entry("name").or_insert(name);
        }
        if long_running {
            self.emit(Stage::ResponseStarted, Some(extra.clone()));
            let done = Complete { rec: Some(self), extra };
            let body = body.into_data_stream().map(move |chunk| {
                done.touch();
                chunk
            });
            return Response::from_parts(parts, Body::from_stream(body));
        }
        self.emit(Stage::ResponseComplete, Some(extra));
        self.done = true;
        Response::from_parts(parts, body)
    }
}

/// A recorder dropped while its thread unwinds belongs to a request whose handler panicked: the
/// Panic stage, with the 500 the panic is answered with. (Dropped otherwise — the client went away
/// — it writes nothing more, as upstream's.)
impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done && std::thread::panicking() {
            self.done = true;
            let mut extra = Map::new();
            extra.insert(
                "responseStatus".into(),
                json!({"metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500}),
            );
            self.emit(Stage::Panic, Some(extra));
        }
    }
}

/// Writes ResponseComplete when a long-running response's body is done.
struct Complete {
    rec: Option<Recorder>,
    extra: Map<String, Value>,
}

impl Complete {
    fn touch(&self) {}
}

impl Drop for Complete {
    fn drop(&mut self) {
        if let Some(mut rec) = self.rec.take() {
            rec.emit(Stage::ResponseComplete, Some(std::mem::take(&mut self.extra)));
            rec.done = true;
        }
    }
}

fn strip_managed_fields(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            strip_managed_fields(item);
        }
    }
}

/// RFC 3339 with microseconds, as upstream's `metav1.MicroTime`.
fn micros(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The client's `Audit-ID` header if it sent one, else a new UUID (upstream's rule).
fn audit_id(headers: &HeaderMap) -> String {
    headers
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// `X-Forwarded-For`'s addresses, then the peer's; in-process requests (no socket) are loopback.
fn source_ips(req: &Request) -> Vec<String> {
    let mut ips: Vec<String> = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    if !ips.contains(&peer) {
        ips.push(peer);
    }
    ips
}

fn object_ref(r: &ResourceAttrs) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("resource".into(), json!(r.resource));
    if !r.namespace.is_empty() {
        m.insert("namespace".into(), json!(r.namespace));
    }
    if !r.name.is_empty() {
        m.insert("name".into(), json!(r.name));
    }
    if !r.group.is_empty() {
        m.insert("apiGroup".into(), json!(r.group));
    }
    m.insert("apiVersion".into(), json!(r.version));
    if !r.subresource.is_empty() {
        m.insert("subresource".into(), json!(r.subresource));
    }
    m
}

/// A request's attributes for the policy.
pub fn attrs_of(
    registry: &api_types::Registry,
    method: &Method,
    path: &str,
    query: Option<&str>,
    user: &UserInfo,
) -> Attrs {
    let params = crate::params::Params::parse(query).unwrap_or_default();
    let watch = params.bool("watch").unwrap_or(false);
    let target = if let Some(rest) = path.strip_prefix("/api/") {
        crate::route::parse(registry, true, rest).ok()
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        crate::route::parse(registry, false, rest).ok()
    } else {
        None
    };
    let mut a = Attrs {
        user: user.name.clone(),
        groups: user.groups.clone(),
        path: path.to_string(),
        ..Default::default()
    };
    match target {
        Some(Target::Resource(rp)) => {
            a.verb = match (method.as_str(), rp.name.is_some()) {
                ("GET" | "HEAD", _) if watch => "watch",
                ("GET" | "HEAD", false) => "list",
                ("GET" | "HEAD", true) => "get",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", false) => "deletecollection",
                ("DELETE", true) => "delete",
                (m, _) => return Attrs { verb: m.to_ascii_lowercase(), ..a },
            }
            .into();
            a.resource = Some(ResourceAttrs {
                group: rp.res.group.into(),
                version: rp.res.version.into(),
                resource: rp.res.plural.into(),
                subresource: rp.subresource.clone().unwrap_or_default(),
                namespace: rp.namespace.clone().unwrap_or_default(),
                name: rp.name.clone().unwrap_or_default(),
            });
        }
        _ => a.verb = method.as_str().to_ascii_lowercase(),
    }
    a
}

/// Long-running requests: watches and streamed subresources (their ResponseStarted stage).
pub fn long_running(registry: &api_types::Registry, method: &Method, path: &str, query: Option<&str>) -> bool {
    let a = attrs_of(registry, method, path, query, &UserInfo::new("", &[]));
    a.verb == "watch"
        || a.resource
            .is_some_and(|r| matches!(r.subresource.as_str(), "log" | "exec" | "attach" | "portforward"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "configmaps"]
- level: RequestResponse
  resources:
  - group: apps
    resources: ["deployments/scale"]
    resourceNames: ["web"]
- level: Request
  nonResourceURLs: ["/healthz*", "/version"]
  omitStages: ["ResponseStarted"]
"#;

    fn attrs(verb: &str, user: &str, res: Option<(&str, &str, &str, &str)>, path: &str) -> Attrs {
        Attrs {
            user: user.into(),
            groups: vec!["system:authenticated".into()],
            verb: verb.into(),
            resource: res.map(|(group, resource, subresource, name)| ResourceAttrs {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: "default".into(),
                name: name.into(),
            }),
            path: path.into(),
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let p = Policy::parse(POLICY).unwrap();
        let level = |a: &Attrs| p.decide(a).level;
        assert_eq!(level(&attrs("watch", "system:kube-proxy", Some(("", "secrets", "", "")), "")), Level::None);
        assert_eq!(
            level(&attrs("get", "system:kube-proxy", Some(("", "secrets", "", "s")), "")),
            Level::Metadata
        );
        assert_eq!(level(&attrs("get", "alice", Some(("", "configmaps", "", "c")), "")), Level::Metadata);
        // A subresource matches only when named.
        assert_eq!(level(&attrs("get", "alice", Some(("", "secrets", "status", "c")), "")), Level::None);
        assert_eq!(
            level(&attrs("update", "alice", Some(("apps", "deployments", "scale", "web")), "")),
            Level::RequestResponse
        );
        assert_eq!(
            level(&attrs("update", "alice", Some(("apps", "deployments", "scale", "db")), "")),
            Level::None
        );
        assert_eq!(level(&attrs("get", "alice", None, "/healthz/etcd")), Level::Request);
        assert_eq!(level(&attrs("get", "alice", None, "/version")), Level::Request);
        assert_eq!(level(&attrs("get", "alice", None, "/versions")), Level::None);
        let d = p.decide(&attrs("get", "alice", None, "/version"));
        assert_eq!(d.omit_stages, vec![Stage::RequestReceived, Stage::ResponseStarted]);
    }

    #[test]
    fn a_failed_authentication_names_the_credential_kinds_attempted_never_their_value() {
        let req = |auth: Option<&str>, uri: &str| {
            let mut b = axum::http::Request::builder().uri(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(Body::empty()).unwrap()
        };
        let none = "Authentication failed, no credentials provided";
        assert_eq!(auth_methods(&req(None, "/api"), false), none);
        assert_eq!(auth_methods(&req(Some("Bearer"), "/api"), false), none);
        assert_eq!(
            auth_methods(&req(Some("Bearer s3cret"), "/api"), false),
            "Authentication failed, attempted: bearer"
        );
        assert_eq!(
            auth_methods(&req(Some("Basic dTpw"), "/api?access_token=s3cret"), true),
            "Authentication failed, attempted: basic, access_token, x509"
        );
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        let e = Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n").unwrap_err();
        assert!(e.contains("no rules"), "{e}");
        let e =
            Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n").unwrap_err();
        assert!(e.contains("Loud"), "{e}");
        let e = Policy::parse("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(e.contains("audit.k8s.io/v1"), "{e}");
        let e = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [\"/a*b\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("only at the end"), "{e}");
    }

    #[test]
    fn rotation_keeps_lumberjack_names_and_the_backup_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = RotatingFile::open(&path, 100, 2, Duration::ZERO).unwrap();
        for _ in 0..10 {
            f.write_line(&[b'x'; 60]).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"audit.log".to_string()));
        for n in names.iter().filter(|n| *n != "audit.log") {
            assert!(n.starts_with("audit-") && n.ends_with(".log"), "{n}");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 60);
    }
}
