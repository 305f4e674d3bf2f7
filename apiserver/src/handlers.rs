//! The generic handlers: one implementation of get, list, create, update, patch, delete and
//! deletecollection for every resource in the table. Per-resource behaviour comes from
//! `strategy.rs`; storage conventions from `objects.rs`.

use api_types::ResourceDef;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use store::{Error as StoreError, ListOptions};

use crate::error::{ApiError, ApiResult};
use crate::objects::{decode, encode, parse_rv, set_kind};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::strategy::{self, Half};
use crate::{meta, AppState};

/// How often an update retries after a conflict it caused itself (no client precondition).
const MAX_RETRIES: usize = 100;

pub fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Dispatches a request on a resource path.
pub async fn dispatch(
    st: &AppState,
    method: &Method,
    rp: ResourcePath,
    params: Params,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    if res.namespaced && rp.name.is_some() && rp.namespace.is_none() {
        // `/api/v1/pods/x`: a namespaced object needs its namespace.
        return Err(ApiError::no_route());
    }
    if !res.stored {
        return crate::synthetic::serve(st, method, &rp, &params, headers).await;
    }
    match (method.as_str(), rp.name.as_deref(), rp.subresource.as_deref()) {
        ("GET", None, None) if params.bool("watch")? => crate::watch::serve(st, &rp, &params, headers).await,
        ("GET", None, None) => list(st, &rp, &params, headers).await,
        ("POST", None, None) if rp.namespace.is_some() || !res.namespaced => {
            create(st, &rp, &params, headers, &body).await
        }
        ("DELETE", None, None) => delete_collection(st, &rp, &params, headers, &body).await,
        ("GET", Some(name), None) => get(st, &rp, name, headers).await,
        ("PUT", Some(name), sub @ (None | Some("status"))) => {
            let half = if sub.is_some() { Half::Status } else { Half::Main };
            update(st, &rp, name, half, &params, headers, &body).await
        }
        ("PATCH", Some(name), sub @ (None | Some("status"))) => {
            let half = if sub.is_some() { Half::Status } else { Half::Main };
            patch(st, &rp, name, half, &params, headers, &body).await
        }
        ("DELETE", Some(name), None) => delete(st, &rp, name, &params, headers, &body).await,
        ("GET", Some(name), Some("status")) if res.has(api_types::Subresource::Status) => {
            get(st, &rp, name, headers).await
        }
        (_, Some(name), Some(sub)) => {
            crate::subresources::serve(st, method, &rp, name, sub, &params, headers, &body).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

pub fn key(rp: &ResourcePath, name: &str) -> String {
    rp.res.key(rp.namespace.as_deref(), name)
}

/// Reads one object, or NotFound.
pub async fn read(st: &AppState, rp: &ResourcePath, name: &str) -> ApiResult<(Value, i64)> {
    let kv = st.store.get(&key(rp, name)).await.map_err(|e| ApiError::from_store(rp.res, name, e))?;
    Ok((decode(rp.res, &kv)?, kv.mod_revision))
}

async fn get(st: &AppState, rp: &ResourcePath, name: &str, headers: &HeaderMap) -> ApiResult<Response> {
    let (obj, rev) = read(st, rp, name).await?;
    Ok(crate::render::object(rp.res, obj, rev, headers))
}

/// A parsed list request.
pub struct ListQuery {
    pub labels: Option<api_types::selectors::LabelSelector>,
    pub fields: Option<api_types::selectors::FieldSelector>,
}

impl ListQuery {
    pub fn parse(res: &ResourceDef, params: &Params) -> ApiResult<ListQuery> {
        let labels = match params.get("labelSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(
                api_types::selectors::LabelSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            None => None,
        };
        let fields = match params.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let f = api_types::selectors::FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                f.validate(res.field_selectors).map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        Ok(ListQuery { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches(&api_types::selectors::labels_of(obj)))
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }

    pub fn filtering(&self) -> bool {
        self.labels.is_some() || self.fields.is_some()
    }
}

/// The continue token: the revision of the first page and the last key returned (opaque to clients).
fn encode_continue(rev: i64, key: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string();
    base64_url(raw.as_bytes())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String)> {
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64_url_decode(token).ok_or_else(|| bad("not base64"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
    let rev = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(|| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(|| bad("missing start"))?;
    if !start.starts_with(prefix) {
        return Err(bad("the continue token is for another list"));
    }
    Ok((rev, start.to_string()))
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64_url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let vals: Option<Vec<u32>> =
        s.trim_end_matches('=').bytes().map(|c| B64.iter().position(|b| *b == c).map(|p| p as u32)).collect();
    let vals = vals?;
    for chunk in vals.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let n = chunk.iter().fold(0u32, |acc, v| (acc << 6) | v) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// The items of a list request and the list metadata, upstream's semantics for resourceVersion,
/// resourceVersionMatch, limit and continue.
pub async fn list_items(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
) -> ApiResult<(Vec<Value>, Value, i64)> {
    let res = rp.res;
    let q = ListQuery::parse(res, params)?;
    let prefix = res.list_prefix(rp.namespace.as_deref());
    let limit = params.int("limit")?.filter(|l| *l > 0).unwrap_or(0);
    let rv = params.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = params.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let (mut revision, mut after) = (0i64, None);
    if let Some(token) = params.get("continue").filter(|s| !s.is_empty()) {
        if rv.is_some_and(|r| r != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (r, start) = decode_continue(token, &prefix)?;
        revision = r;
        after = Some(start);
    } else {
        match (rv, rv_match) {
            (None, Some(_)) => {
                return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"))
            }
            (Some(r), Some("Exact")) => {
                revision = parse_rv(r)?;
                if revision == 0 {
                    return Err(ApiError::bad_request("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""));
                }
            }
            (Some(r), Some("NotOlderThan")) | (Some(r), None) => {
                let n = parse_rv(r)?;
                // Legacy semantics: a non-zero resourceVersion with a limit reads exactly there.
                if n > 0 && limit > 0 && rv_match.is_none() {
                    revision = n;
                } else if n > 0 {
                    let current = st.store.current_revision().await.map_err(|e| ApiError::from_store(res, "", e))?;
                    if n > current {
                        return Err(ApiError::timeout(format!("Too large resource version: {n}, current: {current}")));
                    }
                }
            }
            (Some(_), Some(other)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
            (None, None) => {}
        }
    }
    let mut items = Vec::new();
    let mut remaining = None;
    let mut next = None;
    // Read pages until the limit is met: with selectors, a page may match fewer than asked for.
    let page = if limit > 0 { limit.max(if q.filtering() { 500 } else { limit }) } else { 0 };
    loop {
        let r = st
            .store
            .list(ListOptions { prefix: prefix.clone(), revision, limit: page, continue_after: after.clone() })
            .await
            .map_err(|e| ApiError::from_store(res, "", e))?;
        revision = r.revision;
        let n = r.items.len();
        for (i, kv) in r.items.into_iter().enumerate() {
            let obj = decode(res, &kv)?;
            after = Some(kv.key.clone());
            if q.matches(&obj) {
                items.push(obj);
                if limit > 0 && items.len() as i64 == limit {
                    let left = (n - i - 1) as i64 + r.remaining;
                    if left > 0 {
                        next = Some(encode_continue(revision, &kv.key));
                        if !q.filtering() {
                            remaining = Some(left);
                        }
                    }
                    break;
                }
            }
        }
        if next.is_some() || !r.more || limit == 0 {
            break;
        }
    }
    let mut list_meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = next {
        list_meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        list_meta["remainingItemCount"] = json!(r);
    }
    Ok((items, list_meta, revision))
}

async fn list(st: &AppState, rp: &ResourcePath, params: &Params, headers: &HeaderMap) -> ApiResult<Response> {
    let (items, list_meta, _) = list_items(st, rp, params).await?;
    crate::render::list(rp.res, items, list_meta, headers, params)
}

/// Reads and parses a JSON body into an object of the resource's kind.
pub fn decode_body(res: &ResourceDef, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct.split(';').next().unwrap_or("").trim();
    let mut obj: Value = match mime {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}",
                res.kind,
                res.version,
                res.kind,
                json_error_text(&e)
            ))
        })?,
        api_types::protobuf::CONTENT_TYPE => api_types::protobuf::decode_to_json(body, res.group, res.version, res.kind)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    res.kind, res.version, res.kind
                ))
            })?,
        "application/yaml" => serde_yaml_ng::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("{} in version \"{}\" cannot be handled as a {}: {e}", res.kind, res.version, res.kind))
        })?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other:?})"
            )))
        }
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
            res.kind, res.version, res.kind
        )));
    }
    let want_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "{k} in version \"{}\" cannot be handled as a {}: the kind in the data ({k}) does not match the expected kind ({})",
                res.version, res.kind, res.kind
            )))
        }
        _ => {}
    }
    set_kind(res, &mut obj);
    Ok(obj)
}

/// Whether the body is JSON (field validation scans JSON only).
fn is_json(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    ct.split(';').next().is_some_and(|m| matches!(m.trim(), "application/json" | "" | "*/*"))
}

fn json_error_text(e: &serde_json::Error) -> String {
    format!("json: {e}")
}

/// Checks the body's namespace against the URL's and fills it in.
fn check_namespace(rp: &ResourcePath, obj: &mut Value) -> ApiResult<()> {
    if !rp.res.namespaced {
        meta::remove(obj, "namespace");
        return Ok(());
    }
    let url_ns = rp.namespace.clone().unwrap_or_default();
    match meta::namespace(obj) {
        Some(ns) if ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta::set(obj, "namespace", json!(url_ns));
            Ok(())
        }
    }
}

/// Creates in a namespace only if it exists and is not terminating.
async fn check_namespace_accepts(st: &AppState, rp: &ResourcePath) -> ApiResult<()> {
    let Some(ns) = rp.namespace.as_deref().filter(|_| rp.res.namespaced) else { return Ok(()) };
    let ns_res = api_types::resources::lookup("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    let key = ns_res.key(None, ns);
    // The watch cache answers for namespaces it has; one it lacks may be brand new, so the store
    // has the last word (upstream's namespace lifecycle admission does the same).
    let cached = st.cacher.cache(&st.store, ns_res).and_then(|c| c.get(&key));
    let obj = match cached {
        Some(obj) => (*obj).clone(),
        None => {
            let kv = st.store.get(&key).await.map_err(|e| ApiError::from_store(ns_res, ns, e))?;
            decode(ns_res, &kv)?
        }
    };
    if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        || meta::deletion_timestamp(&obj).is_some()
    {
        let name = "";
        return Err(ApiError {
            details: Some(json!({"name": name, "kind": rp.res.plural})),
            ..ApiError::forbidden(
                rp.res,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            )
        });
    }
    Ok(())
}

fn random_suffix() -> String {
    // Upstream's alphabet for generated names: no vowels (no words), no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Runs field validation per the `fieldValidation` parameter on the raw JSON of an object: unknown
/// and duplicate fields are an error under Strict, warnings under Warn (the default), ignored under
/// Ignore.
fn field_validation(res: &ResourceDef, params: &Params, raw: &[u8]) -> ApiResult<Vec<String>> {
    let mode = params.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let findings = match api_types::fieldcheck::strict_findings(res.group, res.version, res.kind, raw) {
        Ok(f) => f,
        // The body already parsed as JSON; a scan failure here is not the client's problem.
        Err(e) => {
            tracing::debug!(error = %e, "field validation scan failed");
            return Ok(Vec::new());
        }
    };
    if findings.is_empty() {
        return Ok(Vec::new());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(api_types::fieldcheck::strict_decoding_error(
            res.kind,
            res.version,
            &findings,
        )));
    }
    Ok(findings.iter().map(|f| f.to_string()).collect())
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

async fn create(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    let mut obj = decode_body(res, headers, body)?;
    let warnings = if is_json(headers) { field_validation(res, params, body)? } else { Vec::new() };
    check_namespace(rp, &mut obj)?;
    let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
    for field in ["resourceVersion", "uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta::remove(&mut obj, field);
    }
    let generate = meta::str_field(&obj, "generateName").map(str::to_string);
    if meta::name(&obj).is_none() {
        if let Some(prefix) = &generate {
            meta::set(&mut obj, "name", json!(format!("{}{}", truncate_prefix(prefix), random_suffix())));
        }
    }
    meta::set(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
    meta::set(&mut obj, "creationTimestamp", json!(meta::now_rfc3339()));
    strategy::prepare_create(res, &mut obj);
    let name = meta::name(&obj).unwrap_or("").to_string();
    let causes = strategy::validate(res, &obj, None);
    if !causes.is_empty() {
        return Err(ApiError::invalid(res, &name, causes));
    }
    check_namespace_accepts(st, rp).await?;
    // An existing Service is AlreadyExists before its allocation could fail for its sake (the create
    // below still guards the race; other kinds allocate nothing, so they skip the extra read).
    if res.kind == "Service" {
        match st.store.get(&key(rp, &name)).await {
            Ok(_) => return Err(ApiError::already_exists(res, &name)),
            Err(store::Error::NotFound { .. }) => {}
            Err(e) => return Err(ApiError::from_store(res, &name, e)),
        }
    }
    let allocation = crate::services::allocate(st, res, &mut obj, None).await?;
    if dry_run {
        allocation.release(st).await;
        return Ok(with_warnings(json_response(StatusCode::CREATED, &obj), &warnings));
    }
    match st.store.create(&key(rp, &name), encode(res, &obj), 0).await {
        Ok(kv) => {
            // What was stored is `obj`: no need to parse it back from the store's bytes.
            let mut obj = obj;
            meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
            crate::services::after_create(st, res, &obj).await;
            Ok(with_warnings(
                crate::render::object_with_code(res, obj, kv.mod_revision, headers, StatusCode::CREATED),
                &warnings,
            ))
        }
        Err(e) => {
            allocation.release(st).await;
            Err(ApiError::from_store(res, &name, e))
        }
    }
}

/// Upstream keeps generated names within 63 characters: the prefix is cut to leave room for 5.
fn truncate_prefix(prefix: &str) -> &str {
    let max = 63 - 5;
    if prefix.len() <= max {
        prefix
    } else {
        let mut end = max;
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        &prefix[..end]
    }
}

/// The update path every write of an existing object goes through (PUT, PATCH, status, scale,
/// finalizer removal): prepare, validate, write at `old_rev`, or delete when the last finalizer of a
/// deleting object is gone.
pub async fn write_update(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    half: Half,
    mut new: Value,
    old: &Value,
    old_rev: i64,
) -> Result<(Value, i64), (ApiError, bool)> {
    let res = rp.res;
    strategy::prepare_update(res, half, &mut new, old);
    meta::set(&mut new, "name", json!(name));
    let causes = strategy::validate(res, &new, Some(old));
    if !causes.is_empty() {
        return Err((ApiError::invalid(res, name, causes), false));
    }
    let mut unchanged_new = new.clone();
    meta::remove(&mut unchanged_new, "resourceVersion");
    let mut unchanged_old = old.clone();
    meta::remove(&mut unchanged_old, "resourceVersion");
    if unchanged_new == unchanged_old {
        return Ok((old.clone(), old_rev));
    }
    let k = key(rp, name);
    if meta::deletion_timestamp(&new).is_some()
        && meta::finalizers(&new).is_empty()
        && !pod_awaiting_kubelet(res, &new)
    {
        return match st.store.delete(&k, Some(old_rev)).await {
            Ok(d) => {
                crate::services::after_delete(st, res, old).await;
                Ok((new, d.revision))
            }
            Err(StoreError::Conflict { .. }) => Err((ApiError::modified(res, name), true)),
            Err(e) => Err((ApiError::from_store(res, name, e), false)),
        };
    }
    match st.store.update(&k, encode(res, &new), old_rev, 0).await {
        Ok(kv) => Ok((decode(res, &kv).map_err(|e| (e, false))?, kv.mod_revision)),
        Err(StoreError::Conflict { .. }) => Err((ApiError::modified(res, name), true)),
        Err(e) => Err((ApiError::from_store(res, name, e), false)),
    }
}

/// A pod on a node with a grace period waits for its kubelet's final delete.
fn pod_awaiting_kubelet(res: &ResourceDef, obj: &Value) -> bool {
    res.kind == "Pod"
        && obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        && meta::meta(obj)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
}

async fn update(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    half: Half,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    let mut new = decode_body(res, headers, body)?;
    let warnings = if is_json(headers) { field_validation(res, params, body)? } else { Vec::new() };
    check_namespace(rp, &mut new)?;
    if let Some(n) = meta::name(&new) {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let precondition = match meta::resource_version(&new) {
        Some(rv) => Some(parse_rv(rv)?),
        None => None,
    };
    for _ in 0..MAX_RETRIES {
        let (old, old_rev) = match read(st, rp, name).await {
            Ok(v) => v,
            Err(e) if e.code == 404 && allow_create_on_update(res) && half == Half::Main => {
                return create(st, rp, params, headers, body).await;
            }
            Err(e) => return Err(e),
        };
        if precondition.is_some_and(|p| p != old_rev) {
            return Err(ApiError::modified(res, name));
        }
        match write_update(st, rp, name, half, new.clone(), &old, old_rev).await {
            Ok((obj, rev)) => {
                return Ok(with_warnings(crate::render::object(res, obj, rev, headers), &warnings))
            }
            Err((e, true)) if precondition.is_none() => {
                tracing::debug!(error = %e.message, "update conflict, retrying");
                continue;
            }
            Err((e, _)) => return Err(e),
        }
    }
    Err(ApiError::modified(res, name))
}

/// Upstream lets PUT create these (their writers upsert).
fn allow_create_on_update(res: &ResourceDef) -> bool {
    matches!(res.kind, "Endpoints" | "Lease" | "EndpointSlice")
}

async fn patch(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    half: Half,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let res = rp.res;
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let patch_type = api_types::patch::PatchType::from_content_type(ct)
        .map_err(|e| ApiError::unsupported_media_type(e.to_string()))?;
    for _ in 0..MAX_RETRIES {
        let (old, old_rev) = read(st, rp, name).await?;
        let mut patched = crate::patching::apply(res, patch_type, &old, body)?;
        set_kind(res, &mut patched);
        check_namespace(rp, &mut patched)?;
        let precondition = match meta::resource_version(&patched) {
            Some(rv) if Some(rv) != meta::resource_version(&old) => Some(parse_rv(rv)?),
            _ => None,
        };
        if precondition.is_some_and(|p| p != old_rev) {
            return Err(ApiError::modified(res, name));
        }
        if meta::name(&patched) != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&patched).unwrap_or("")
            )));
        }
        let warnings = field_validation(res, params, &serde_json::to_vec(&patched).unwrap_or_default())?;
        match write_update(st, rp, name, half, patched, &old, old_rev).await {
            Ok((obj, rev)) => {
                return Ok(with_warnings(crate::render::object(res, obj, rev, headers), &warnings))
            }
            Err((_, true)) if precondition.is_none() => continue,
            Err((e, _)) => return Err(e),
        }
    }
    Err(ApiError::modified(res, name))
}

/// `DeleteOptions` from the body or the query.
#[derive(Debug, Default)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

pub fn delete_opts(
    res: &ResourceDef,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<DeleteOpts> {
    let mut o = DeleteOpts { grace: params.int("gracePeriodSeconds")?, ..Default::default() };
    o.propagation = params.get("propagationPolicy").map(str::to_string);
    if params.bool("orphanDependents")? {
        o.propagation = Some("Orphan".into());
    }
    o.dry_run = params.get("dryRun").is_some_and(|d| d == "All");
    if !body.is_empty() {
        let invalid = |e: &dyn std::fmt::Display| {
            ApiError::bad_request(format!("the body of the request is not a valid DeleteOptions: {e}"))
        };
        let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let v: Value = if ct.starts_with(api_types::protobuf::CONTENT_TYPE) {
            // Typed clients send DeleteOptions as protobuf too.
            api_types::protobuf::decode_to_json(body, res.group, res.version, "DeleteOptions")
                .map_err(|e| invalid(&e))?
        } else {
            serde_json::from_slice(body).map_err(|e| invalid(&e))?
        };
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        o.uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        o.resource_version =
            v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        if v.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|d| d == "All")) {
            o.dry_run = true;
        }
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    if o.grace.is_some_and(|g| g < 0) {
        o.grace = Some(0);
    }
    Ok(o)
}

async fn delete(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let opts = delete_opts(rp.res, params, headers, body)?;
    let (code, out) = delete_one(st, rp, name, &opts).await?;
    Ok(json_response(code, &out))
}

/// Deletes one object: at once, or by marking it (deletionTimestamp) when finalizers or a pod's grace
/// period hold it.
pub async fn delete_one(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<(StatusCode, Value)> {
    let res = rp.res;
    for _ in 0..MAX_RETRIES {
        let (old, old_rev) = read(st, rp, name).await?;
        if let Some(uid) = &opts.uid {
            if meta::uid(&old) != Some(uid.as_str()) {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old).unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if meta::resource_version(&old) != Some(rv.as_str()) {
                return Err(ApiError::conflict(res, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta::resource_version(&old).unwrap_or("")
                )));
            }
        }
        let mut finalizers = meta::finalizers(&old);
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
            _ => {}
        }
        let on_node = res.kind == "Pod"
            && old.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let grace = if on_node {
            opts.grace.unwrap_or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
            })
        } else {
            0
        };
        let already = meta::deletion_timestamp(&old).is_some();
        let current_grace =
            meta::meta(&old).and_then(|m| m.get("deletionGracePeriodSeconds")).and_then(Value::as_i64);
        let mut with_added = old.clone();
        meta::set(&mut with_added, "finalizers", json!(finalizers));
        let must_wait = strategy::holds_deletion(res, &with_added) || grace > 0;
        if opts.dry_run {
            return Ok((StatusCode::OK, old));
        }
        if must_wait {
            if already && current_grace.is_none_or(|g| g <= grace) && finalizers == meta::finalizers(&old) {
                // Already being deleted, and this request shortens nothing.
                return Ok((StatusCode::OK, old));
            }
            let mut marked = old.clone();
            if !already || current_grace.is_some_and(|g| grace < g) {
                let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                meta::set(
                    &mut marked,
                    "deletionTimestamp",
                    json!(when.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                meta::set(&mut marked, "deletionGracePeriodSeconds", json!(grace));
            }
            if finalizers.is_empty() {
                meta::remove(&mut marked, "finalizers");
            } else {
                meta::set(&mut marked, "finalizers", json!(finalizers));
            }
            if res.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
            match st.store.update(&key(rp, name), encode(res, &marked), old_rev, 0).await {
                Ok(kv) => return Ok((StatusCode::OK, decode(res, &kv)?)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(res, name, e)),
            }
        }
        match st.store.delete(&key(rp, name), Some(old_rev)).await {
            Ok(_) => {
                crate::services::after_delete(st, res, &old).await;
                let mut details =
                    json!({"name": name, "kind": res.plural, "uid": meta::uid(&old).unwrap_or("")});
                if !res.group.is_empty() {
                    details["group"] = json!(res.group);
                }
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details,
                });
                return Ok((StatusCode::OK, status));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(res, name, e)),
        }
    }
    Err(ApiError::modified(res, name))
}

async fn delete_collection(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let opts = delete_opts(rp.res, params, headers, body)?;
    let (items, list_meta, _) = list_items(st, rp, params).await?;
    let mut deleted = Vec::new();
    for obj in items {
        let Some(name) = meta::name(&obj).map(str::to_string) else { continue };
        let mut one = rp.clone();
        if rp.res.namespaced {
            one.namespace = meta::namespace(&obj).map(str::to_string);
        }
        match delete_one(st, &one, &name, &opts).await {
            Ok((_, out)) if out.get("kind").and_then(Value::as_str) != Some("Status") => deleted.push(out),
            Ok(_) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut list = json!({"kind": rp.res.list_kind(), "apiVersion": rp.res.api_version(), "metadata": list_meta, "items": deleted});
    if let Some(m) = list.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("continue");
        m.remove("remainingItemCount");
    }
    Ok(json_response(StatusCode::OK, &list))
}
