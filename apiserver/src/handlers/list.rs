//! Get and list.

use api_types::ResourceDef;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::*;
use crate::error::{ApiError, ApiResult};
use crate::objects::{decode, parse_rv};
use crate::params::Params;
use crate::route::ResourcePath;
use crate::AppState;

pub(crate) async fn get(
    st: &AppState,
    rp: &ResourcePath,
    name: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
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

    /// `matches` on a cached version's facts (its labels and selectable fields), the same answer
    /// without the object.
    pub fn matches_facts(&self, f: &crate::cacher::Facts) -> bool {
        use api_types::selectors::FieldOperator;
        self.labels.as_ref().is_none_or(|l| l.matches(&f.label_map()))
            && self.fields.as_ref().is_none_or(|s| {
                s.terms().iter().all(|t| match t.operator {
                    FieldOperator::Equals => f.field(&t.field) == t.value,
                    FieldOperator::NotEquals => f.field(&t.field) != t.value,
                })
            })
    }

    pub fn filtering(&self) -> bool {
        self.labels.is_some() || self.fields.is_some()
    }
}

/// The continue token: the revision of the first page, the last key returned and how many keys of
/// the range follow it at that revision (opaque to clients). The count is the first page's, carried
/// on: at one revision it cannot change, so later pages need not count the range again.
pub(crate) fn encode_continue(rev: i64, key: &str, left: i64) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key, "left": left}).to_string();
    base64_url(raw.as_bytes())
}

/// A continue token's revision, start key and, when the token carries it, the keys left after it.
pub(crate) fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String, Option<i64>)> {
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
    let left = v.get("left").and_then(Value::as_i64).filter(|n| *n >= 0);
    Ok((rev, start.to_string(), left))
}

pub(crate) fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// The items of a list request and the list metadata, upstream's semantics for resourceVersion,
/// resourceVersionMatch, limit and continue.
/// One listed object: decoded when selectors needed to look at it, else still the stored bytes.
pub(crate) enum Listed {
    Raw(store::KeyValue),
    Decoded(Value),
    /// From the watch cache: the object's JSON as served (Go field order, resourceVersion set).
    Cached(std::sync::Arc<crate::cacher::Version>),
}

/// How long a list waits for the watch cache to catch up with the revision it must show before it
/// reads the store instead (upstream's cacher blocks 3 s in `waitUntilFreshAndBlock`).
const FRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Which lists the watch cache may answer, after upstream 1.33's `shouldDelegateList` with
/// ConsistentListFromCache on (and ListFromCacheSnapshot off).
#[derive(Clone, Copy, Debug, PartialEq)]
enum FromCache {
    /// To the store: `resourceVersionMatch=Exact`, the legacy exact read (a non-zero
    /// resourceVersion with a limit and no match), and continue tokens.
    No,
    /// `resourceVersion=0`: whatever the cache holds; the limit is ignored, as upstream's cacher
    /// does for "0".
    Any,
    /// `resourceVersion=N` (`NotOlderThan`, or unset match without a limit): once the cache has
    /// seen N.
    AtLeast(i64),
    /// resourceVersion unset: a consistent read, once the cache has seen the store's current
    /// revision.
    Consistent,
}

fn from_cache(continued: bool, rv: Option<&str>, rv_match: Option<&str>, limit: i64) -> ApiResult<FromCache> {
    if continued {
        return Ok(FromCache::No);
    }
    Ok(match (rv, rv_match) {
        (None, _) => FromCache::Consistent,
        (Some(_), Some("Exact")) => FromCache::No,
        (Some(r), m) => match parse_rv(r)? {
            0 => FromCache::Any,
            _ if m.is_none() && limit > 0 => FromCache::No,
            n => FromCache::AtLeast(n),
        },
    })
}

/// The list from the watch cache, if the cache may and can answer it; None sends it to the store.
async fn cached_list(
    st: &AppState,
    res: &'static ResourceDef,
    prefix: &str,
    q: &ListQuery,
    plan: FromCache,
    limit: i64,
) -> ApiResult<Option<crate::cacher::CachedList>> {
    if plan == FromCache::No {
        return Ok(None);
    }
    let Some(cache) = st.cacher.cache(&st.store, res) else { return Ok(None) };
    // Upstream: a cache that is not ready yet sends the list to the store.
    if !cache.ready() {
        return Ok(None);
    }
    let need = match plan {
        FromCache::No => return Ok(None),
        FromCache::Any => 0,
        FromCache::AtLeast(n) => n,
        FromCache::Consistent if cache.progress() => {
            st.store.current_revision().await.map_err(|e| ApiError::from_store(res, "", e))?
        }
        // The cache cannot learn it has seen a revision that wrote nothing of this resource.
        FromCache::Consistent => return Ok(None),
    };
    // Without progress reports a wait could only end by a write of this resource: read the store.
    let wait = if cache.progress() { FRESH_WAIT } else { std::time::Duration::ZERO };
    let fresh = need == 0 || cache.wait_fresh(need, wait).await;
    if !fresh {
        return Ok(None);
    }
    let limit = if plan == FromCache::Any { 0 } else { limit.max(0) as usize };
    Ok(cache.list(prefix, |f| q.matches_facts(f), limit))
}

/// The objects of a list request, decoded.
pub async fn list_items(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
) -> ApiResult<(Vec<Value>, Value, i64)> {
    let (entries, list_meta, revision) = list_entries(st, rp, params).await?;
    let items = entries.into_iter().map(|e| decode_listed(rp.res, e)).collect::<ApiResult<Vec<_>>>()?;
    Ok((items, list_meta, revision))
}

fn decode_listed(res: &ResourceDef, e: Listed) -> ApiResult<Value> {
    match e {
        Listed::Raw(kv) => decode(res, &kv),
        Listed::Decoded(v) => Ok(v),
        Listed::Cached(v) => Ok(v.decode()),
    }
}

/// The entries of a list request, with upstream's semantics for resourceVersion,
/// resourceVersionMatch, limit and continue. Objects are decoded only when selectors need them.
pub(crate) async fn list_entries(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
) -> ApiResult<(Vec<Listed>, Value, i64)> {
    let res = rp.res;
    let q = ListQuery::parse(res, params)?;
    let prefix = res.list_prefix(rp.namespace.as_deref());
    let limit = params.int("limit")?.filter(|l| *l > 0).unwrap_or(0);
    let rv = params.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = params.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let (mut revision, mut after) = (0i64, None);
    // Keys of the range after `after` at `revision`, once known (from the token or a counted page).
    let mut left_after: Option<i64> = None;
    if let Some(token) = params.get("continue").filter(|s| !s.is_empty()) {
        if rv.is_some_and(|r| r != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (r, start, left) = decode_continue(token, &prefix)?;
        revision = r;
        after = Some(start);
        left_after = left;
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
    let plan = from_cache(after.is_some(), rv, rv_match, limit)?;
    if let Some(l) = cached_list(st, res, &prefix, &q, plan, limit).await? {
        st.metrics.cache_list(res.etcd_prefix);
        let mut list_meta = json!({"resourceVersion": l.revision.to_string()});
        if let Some((key, left)) = &l.cut {
            list_meta["continue"] = json!(encode_continue(l.revision, key, *left));
            if !q.filtering() {
                list_meta["remainingItemCount"] = json!(left);
            }
        }
        return Ok((l.items.into_iter().map(Listed::Cached).collect(), list_meta, l.revision));
    }
    let mut items = Vec::new();
    let mut remaining = None;
    let mut next = None;
    // Read pages until the limit is met: with selectors, a page may match fewer than asked for.
    let page = if limit > 0 { limit.max(if q.filtering() { 500 } else { limit }) } else { 0 };
    loop {
        let opts = ListOptions { prefix: prefix.clone(), revision, limit: page, continue_after: after.clone() };
        // Only a list's first read counts the range; after it the count is known.
        let r = match left_after {
            Some(_) => st.store.list_without_count(opts).await,
            None => st.store.list(opts).await,
        }
        .map_err(|e| ApiError::from_store(res, "", e))?;
        revision = r.revision;
        let n = r.items.len();
        let left_after_page = match left_after {
            Some(known) => (known - n as i64).max(0),
            None => r.remaining,
        };
        left_after = Some(left_after_page);
        for (i, kv) in r.items.into_iter().enumerate() {
            after = Some(kv.key.clone());
            let key = kv.key.clone();
            let entry = if q.filtering() {
                let obj = decode(res, &kv)?;
                q.matches(&obj).then_some(Listed::Decoded(obj))
            } else {
                Some(Listed::Raw(kv))
            };
            if let Some(entry) = entry {
                items.push(entry);
                if limit > 0 && items.len() as i64 == limit {
                    let left = (n - i - 1) as i64 + left_after_page;
                    if left > 0 || (i + 1 == n && r.more) {
                        next = Some(encode_continue(revision, &key, left));
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

pub(crate) async fn list(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let table = crate::render::wants_table(headers);
    if table && !crate::objects::converts(rp.res) && crate::crd::custom(rp.res).is_none() {
        return table_list(st, rp, params).await;
    }
    if table || crate::objects::converts(rp.res) {
        let (items, list_meta, _) = list_items(st, rp, params).await?;
        return crate::render::list(rp.res, items, list_meta, headers, params);
    }
    // Plain JSON lists skip the decode/encode round trip: each stored object is spliced in with its
    // resourceVersion (a LIST of 10k pods is mostly this).
    let (entries, list_meta, _) = list_entries(st, rp, params).await?;
    let res = rp.res;
    let mut body = Vec::with_capacity(
        entries
            .iter()
            .map(|e| match e {
                Listed::Raw(kv) => kv.value.len() + 40,
                Listed::Cached(v) => v.bytes.len(),
                Listed::Decoded(_) => 1024,
            })
            .sum::<usize>()
            + 256,
    );
    body.extend_from_slice(
        format!(
            r#"{{"kind":"{}","apiVersion":"{}","metadata":{},"items":["#,
            res.list_kind(),
            res.api_version(),
            api_types::goorder::list_meta_to_string(&list_meta)
        )
        .as_bytes(),
    );
    for (i, e) in entries.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match e {
            Listed::Raw(kv) => {
                if !crate::objects::splice_into(res, &kv, &mut body) {
                    body.extend_from_slice(&api_types::goorder::to_vec(&decode(res, &kv)?));
                }
            }
            Listed::Decoded(v) => body.extend_from_slice(&api_types::goorder::to_vec(&v)),
            Listed::Cached(v) => body.extend_from_slice(&v.bytes),
        }
    }
    body.extend_from_slice(b"]}");
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A list as a Table (`kubectl get`), written row by row: each row's object is the listed object's
/// JSON as served (the watch cache's bytes, or the stored bytes with the resourceVersion spliced in),
/// or its metadata text, never re-serialized; cells come from a decode that skips managedFields.
async fn table_list(st: &AppState, rp: &ResourcePath, params: &Params) -> ApiResult<Response> {
    let opts = crate::render::table_options(Some(params))?;
    let (entries, list_meta, _) = list_entries(st, rp, params).await?;
    let res = rp.res;
    // A row carries about the object's size (its metadata, managedFields included) plus the cells.
    let size: usize = entries
        .iter()
        .map(|e| match e {
            Listed::Raw(kv) => kv.value.len() / 2 + 200,
            Listed::Cached(v) => v.bytes.len() / 2 + 200,
            Listed::Decoded(_) => 1024,
        })
        .sum();
    let Some(mut table) = api_types::printing::TableWriter::new(res, &opts, list_meta.clone(), size) else {
        // Only custom resources have no writer, and they do not come here; the whole Table then.
        let items = entries.into_iter().map(|e| decode_listed(res, e)).collect::<ApiResult<Vec<_>>>()?;
        let mut t = api_types::printing::table(res, &items, &opts);
        t["metadata"] = list_meta;
        return Ok(json_response(axum::http::StatusCode::OK, &t));
    };
    for e in entries {
        match e {
            Listed::Cached(v) => table.push_json(&v.bytes),
            Listed::Raw(kv) => push_stored(&mut table, res, &kv)?,
            Listed::Decoded(v) => table.push_value(&v),
        }
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], table.finish()).into_response())
}

/// A stored object's row. Unless the row carries the whole object, the stored bytes are read once:
/// decoded for the cells (without managedFields) and the metadata text taken as stored, the
/// resourceVersion spliced in; anything unusual goes through `splice` or, failing that, `decode`
/// (and its error).
fn push_stored(
    table: &mut api_types::printing::TableWriter,
    res: &ResourceDef,
    kv: &store::KeyValue,
) -> ApiResult<()> {
    if table.include_object() != api_types::printing::IncludeObject::Object {
        if let Some((mut v, Some(meta))) = api_types::printing::decode_for_row(&kv.value) {
            if let Some(meta) = crate::objects::metadata_with_rv(res, meta.get(), kv.mod_revision) {
                crate::objects::set_kind(res, &mut v);
                crate::meta::set(&mut v, "resourceVersion", json!(kv.mod_revision.to_string()));
                table.push_parts(&v, b"", Some(&meta));
                return Ok(());
            }
        }
    }
    match crate::objects::splice(res, kv) {
        Some(bytes) => table.push_json(&bytes),
        None => table.push_value(&decode(res, kv)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{from_cache, push_stored, FromCache};
    use api_types::printing::{IncludeObject, TableOptions, TableWriter};
    use serde_json::json;

    #[test]
    fn stored_rows_equal_decoded_rows() {
        let pods = api_types::resources::lookup("", "v1", "pods").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "default",
            "uid": "u", "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"x": "y"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n1"},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.1"}});
        let encoded = String::from_utf8(crate::objects::encode(pods, &pod)).unwrap();
        let stored = [
            encoded.as_str(),
            r#"{"metadata":{},"spec":{}}"#,
            r#"{"metadata":{ "name":"b" },"status":{"phase":"Failed"}}"#,
            r#"{"metadata":{"resourceVersion":"3","name":"c"}}"#,
            r#"{"metadata":"junk"}"#,
        ];
        let now = "2024-01-01T01:00:00Z".parse().unwrap();
        for include in [IncludeObject::Metadata, IncludeObject::Object, IncludeObject::None] {
            let opts = TableOptions { now, include_object: include, no_headers: false };
            let mut fast = TableWriter::new(pods, &opts, json!({"resourceVersion": "9"}), 0).unwrap();
            let mut slow = TableWriter::new(pods, &opts, json!({"resourceVersion": "9"}), 0).unwrap();
            for s in stored {
                let kv = store::KeyValue {
                    key: "/registry/pods/default/a".into(),
                    value: s.as_bytes().to_vec(),
                    create_revision: 5,
                    mod_revision: 9,
                    version: 2,
                    lease: 0,
                };
                push_stored(&mut fast, pods, &kv).unwrap();
                slow.push_value(&crate::objects::decode(pods, &kv).unwrap());
            }
            // The same Table; odd stored text (whitespace) is kept as stored, as `splice` keeps it.
            let (fast, slow) = (fast.finish(), slow.finish());
            let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            assert_eq!(parse(&fast), parse(&slow), "{include:?}");
            // What the server stores is written byte for byte as the decoded row.
            let (fast, slow) = (String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
            let first_row =
                |t: &str| t[t.find(r#""rows":[{"#).unwrap()..t.find(r#"},{"cells""#).unwrap()].to_string();
            assert_eq!(first_row(&fast), first_row(&slow), "{include:?}");
        }
    }

    #[test]
    fn which_lists_the_cache_answers_as_upstream_1_33() {
        let plan = |continued, rv, m, limit| from_cache(continued, rv, m, limit).unwrap();
        // Unset: a consistent read, with or without a limit.
        assert_eq!(plan(false, None, None, 0), FromCache::Consistent);
        assert_eq!(plan(false, None, None, 500), FromCache::Consistent);
        // "0": whatever the cache holds (its limit ignored later).
        assert_eq!(plan(false, Some("0"), None, 0), FromCache::Any);
        assert_eq!(plan(false, Some("0"), None, 5), FromCache::Any);
        assert_eq!(plan(false, Some("0"), Some("NotOlderThan"), 5), FromCache::Any);
        // NotOlderThan, or a bare resourceVersion without a limit: once the cache has seen it.
        assert_eq!(plan(false, Some("42"), Some("NotOlderThan"), 5), FromCache::AtLeast(42));
        assert_eq!(plan(false, Some("42"), None, 0), FromCache::AtLeast(42));
        // To the store: Exact, the legacy exact read (a resourceVersion with a limit), continue.
        assert_eq!(plan(false, Some("42"), Some("Exact"), 0), FromCache::No);
        assert_eq!(plan(false, Some("42"), None, 5), FromCache::No);
        assert_eq!(plan(true, None, None, 5), FromCache::No);
        assert!(from_cache(false, Some("x"), None, 0).is_err());
    }
}
