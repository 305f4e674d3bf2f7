//! Watch: chunked, newline-delimited JSON events, with upstream's semantics — synthetic ADDED events
//! for the current state when the watch starts at "now" (resourceVersion unset or "0"), selector
//! transitions turned into ADDED/DELETED, bookmarks, timeouts, and an in-stream ERROR (410 Expired)
//! when the start revision is compacted.
//!
//! Events come from the watch cache (`cacher.rs`) when it covers the start revision, else straight
//! from a store watch; both become the same `Change` and go through one loop. Both sources hand over
//! whole revisions, and a revision's lines are all sent before anything else (a bookmark, the
//! timeout) is looked at, so the watch's `last` revision is always fully delivered: a bookmark at it,
//! or a client that re-watches from the last resourceVersion it saw, never misses the other events
//! of a revision many objects share (an expired Event lease deletes them all at one revision).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use store::{EventKind, RevisionStream};
use tokio::sync::{broadcast, mpsc};

use crate::cacher::{deleted_at, line, line_with, Attached, CachedEvent, ResourceCache, Version};
use crate::error::{ApiError, ApiResult};
use crate::handlers::ListQuery;
use crate::objects::{decode, parse_rv};
use crate::params::Params;
use crate::render::wants_table;
use crate::route::ResourcePath;
use crate::{meta, AppState};

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// Upstream's default watch timeout is 30–60 minutes; kplane uses the lower bound.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long a watch waits for a just-started cache before it watches the store directly.
const CACHE_WAIT: Duration = Duration::from_secs(2);

pub async fn serve(
    st: &AppState,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let res = rp.res;
    let q = ListQuery::parse(res, params)?;
    let bookmarks = params.bool("allowWatchBookmarks")?;
    let send_initial = params.bool("sendInitialEvents")?;
    let timeout = match params.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => DEFAULT_TIMEOUT,
    };
    let rv = params.get("resourceVersion").filter(|s| !s.is_empty());
    let table = if wants_table(headers) { Some(crate::render::table_options(Some(params))?) } else { None };
    // The cache starts before the initial list, so the list's revision is inside its window.
    let cache = st.cacher.cache(&st.store, res);
    if let Some(c) = &cache {
        let deadline = tokio::time::Instant::now() + CACHE_WAIT;
        while !c.ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let from_now = rv.is_none_or(|r| r == "0");
    let mut initial = Vec::new();
    let start_rev = if from_now || send_initial {
        let mut list_params = params.clone_without(&["watch", "resourceVersion", "limit", "continue"]);
        if let Some(r) = rv.filter(|r| *r != "0") {
            list_params.set("resourceVersion", r);
        }
        let (items, _, rev) = crate::handlers::list_items(st, rp, &list_params).await?;
        initial = items;
        rev
    } else {
        parse_rv(rv.unwrap_or("0"))?
    };
    let source = match cache.as_ref().and_then(|c| c.attach(start_rev).map(|a| (c.clone(), a))) {
        Some((c, a)) => Source::Cache(c, a),
        None => {
            let prefix = res.list_prefix(rp.namespace.as_deref());
            match st.store.watch_revisions(&prefix, start_rev + 1, true).await {
                Ok(s) => Source::Store(s),
                Err(store::Error::Compacted { .. }) => Source::Compacted,
                Err(e) => return Err(ApiError::from_store(res, "", e)),
            }
        }
    };
    let namespace = rp.namespace.clone().filter(|_| res.namespaced);
    let plain = !q.filtering() && table.is_none();
    let ctx = Ctx { res, q, namespace, plain, table, bookmarks, start_rev };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(ctx, initial, send_initial, source, timeout, tx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

enum Source {
    Cache(Arc<ResourceCache>, Attached),
    Store(RevisionStream),
    Compacted,
}

/// One change, from either source.
struct Change {
    revision: i64,
    cur: Option<Arc<Version>>,
    old: Option<Arc<Version>>,
    /// Set when the change came from the cache: its shared, prebuilt line.
    cached: Option<Arc<CachedEvent>>,
}

struct Ctx {
    res: &'static api_types::ResourceDef,
    q: ListQuery,
    namespace: Option<String>,
    /// No selectors and no Table: the shared event line serves as is.
    plain: bool,
    table: Option<api_types::printing::TableOptions>,
    bookmarks: bool,
    start_rev: i64,
}

type Out = mpsc::Sender<Result<Bytes, std::io::Error>>;

impl Ctx {
    fn in_namespace(&self, v: &Version) -> bool {
        self.namespace.as_deref().is_none_or(|ns| v.facts.namespace() == Some(ns))
    }

    /// The line of an ADDED or MODIFIED event: straight from the object's bytes, unless a Table
    /// needs the decoded object.
    fn render_version(&self, ty: &str, v: &Version) -> Bytes {
        match self.table {
            Some(_) => self.render(ty, &v.decode()),
            None => line_with(ty, &v.bytes).0,
        }
    }

    fn render(&self, ty: &str, obj: &Value) -> Bytes {
        match self.table.as_ref() {
            Some(opts) if ty != "ERROR" && ty != "BOOKMARK" => {
                let rev = meta::resource_version(obj).unwrap_or("").to_string();
                let mut opts = opts.clone();
                opts.now = jiff::Timestamp::now();
                let mut t = api_types::printing::table(self.res, std::slice::from_ref(obj), &opts);
                t["metadata"] = json!({"resourceVersion": rev});
                line(ty, &t)
            }
            _ => line(ty, obj),
        }
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut m = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line("BOOKMARK", &json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": m}))
    }

    /// The line this watch sends for a change, if any.
    fn convert(&self, ch: &Change) -> Option<Bytes> {
        let any = ch.cur.as_deref().or(ch.old.as_deref())?;
        if !self.in_namespace(any) {
            return None;
        }
        if self.plain {
            if let Some(c) = &ch.cached {
                return Some(c.plain_line().1.clone());
            }
        }
        let cur_ok = ch.cur.as_deref().is_some_and(|o| self.q.matches_facts(&o.facts));
        let old_ok = ch.old.as_deref().is_some_and(|o| self.q.matches_facts(&o.facts));
        match (&ch.cur, cur_ok, old_ok) {
            (Some(c), true, true) => Some(self.render_version("MODIFIED", c)),
            (Some(c), true, false) => Some(self.render_version("ADDED", c)),
            // Gone, or no longer selected: DELETED with the last state seen, at this revision.
            (_, false, true) => {
                ch.old.as_deref().map(|o| self.render("DELETED", &deleted_at(&o.decode(), ch.revision)))
            }
            _ => None,
        }
    }
}

fn store_change(res: &'static api_types::ResourceDef, ev: store::Event) -> Result<Change, ApiError> {
    let cur = match ev.kind {
        EventKind::Put => Some(Arc::new(Version::new(res, &decode(res, &ev.kv)?))),
        EventKind::Delete => None,
    };
    let old = match &ev.prev_kv {
        Some(p) => Some(Arc::new(Version::new(res, &decode(res, p)?))),
        None => None,
    };
    Ok(Change { revision: ev.revision(), cur, old, cached: None })
}

fn cached_change(e: &Arc<CachedEvent>) -> Change {
    Change { revision: e.revision, cur: e.cur.clone(), old: e.old.clone(), cached: Some(e.clone()) }
}

/// Sends `bytes`; false when the client has gone.
async fn send(tx: &Out, bytes: Bytes) -> bool {
    tx.send(Ok(bytes)).await.is_ok()
}

async fn run(ctx: Ctx, initial: Vec<Value>, send_initial: bool, source: Source, timeout: Duration, tx: Out) {
    for obj in initial {
        if !send(&tx, ctx.render("ADDED", &obj)).await {
            return;
        }
    }
    let mut last = ctx.start_rev;
    if send_initial && ctx.bookmarks && !send(&tx, ctx.bookmark(last, true)).await {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    match source {
        Source::Compacted => {
            let status = ApiError::gone(format!("too old resource version: {}", ctx.start_rev)).status();
            let _ = send(&tx, ctx.render("ERROR", &status)).await;
        }
        Source::Store(mut stream) => loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if ctx.bookmarks => {
                    if !send(&tx, ctx.bookmark(last, false)).await { return; }
                }
                next = stream.next() => {
                    let changes = match next {
                        Some(Ok(events)) => {
                            events.into_iter().map(|ev| store_change(ctx.res, ev)).collect::<Result<Vec<_>, _>>()
                        }
                        Some(Err(store::Error::Compacted { requested, compact_revision })) => {
                            Err(ApiError::gone(format!("too old resource version: {requested} ({compact_revision})")))
                        }
                        Some(Err(e)) => Err(ApiError::internal(e)),
                        None => return,
                    };
                    match changes {
                        Ok(changes) => {
                            for ch in &changes {
                                last = ch.revision;
                                if let Some(l) = ctx.convert(ch) {
                                    if !send(&tx, l).await { return; }
                                }
                            }
                        }
                        Err(e) => {
                            let _ = send(&tx, ctx.render("ERROR", &e.status())).await;
                            return;
                        }
                    }
                }
            }
        },
        Source::Cache(cache, attached) => {
            let Attached { replay, mut live, generation } = attached;
            for e in &replay {
                last = e.revision;
                if let Some(l) = ctx.convert(&cached_change(e)) {
                    if !send(&tx, l).await {
                        return;
                    }
                }
            }
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                    _ = tick.tick(), if ctx.bookmarks => {
                        if !send(&tx, ctx.bookmark(last, false)).await { return; }
                    }
                    msg = live.recv() => match msg {
                        Ok((g, revision)) if g == generation => {
                            for e in revision.iter().filter(|e| e.revision > last) {
                                if let Some(l) = ctx.convert(&cached_change(e)) {
                                    if !send(&tx, l).await { return; }
                                }
                            }
                            last = last.max(revision.first().map_or(last, |e| e.revision));
                        }
                        // The cache was rebuilt: this watch ends, and its client re-watches from `last`.
                        Ok(_) => return,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Too slow for the live feed: catch up from the window, or end the watch.
                            let Some(events) = cache.catch_up(last, generation) else { return };
                            for e in events {
                                last = e.revision;
                                if let Some(l) = ctx.convert(&cached_change(&e)) {
                                    if !send(&tx, l).await { return; }
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::selectors::{FieldSelector, LabelSelector};

    fn pods() -> &'static api_types::ResourceDef {
        api_types::resources::lookup("", "v1", "pods").expect("pods")
    }

    fn pod(app: &str, node: &str, rv: i64) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default", "resourceVersion": rv.to_string(),
                            "labels": {"app": app}},
               "spec": {"nodeName": node}, "status": {"phase": "Pending"}})
    }

    fn ctx(labels: Option<&str>, fields: Option<&str>, namespace: Option<&str>) -> Ctx {
        let q = ListQuery {
            labels: labels.map(|s| LabelSelector::parse(s).unwrap()),
            fields: fields.map(|s| FieldSelector::parse(s).unwrap()),
        };
        let plain = !q.filtering();
        Ctx {
            res: pods(),
            q,
            namespace: namespace.map(str::to_string),
            plain,
            table: None,
            bookmarks: false,
            start_rev: 0,
        }
    }

    /// A pod's history through the cache: each event with the state after it.
    fn history(states: &[Option<Value>]) -> Vec<(Arc<CachedEvent>, Option<Value>, Option<Value>)> {
        let mut out = Vec::new();
        let mut prev: Option<(Arc<Version>, Value)> = None;
        for (i, s) in states.iter().enumerate() {
            let rev = 10 + i as i64;
            let e = Arc::new(CachedEvent::new(
                rev,
                s.as_ref().map(|v| Version::new(pods(), v)),
                prev.as_ref().map(|(v, _)| v.clone()),
            ));
            out.push((e.clone(), s.clone(), prev.as_ref().map(|(_, v)| v.clone())));
            prev = e.cur.clone().zip(s.clone());
        }
        out
    }

    /// The line the watch sent before the window went compact: from decoded values.
    fn value_line(c: &Ctx, rev: i64, cur: &Option<Value>, old: &Option<Value>) -> Option<Bytes> {
        let any = cur.as_ref().or(old.as_ref())?;
        if c.namespace.as_deref().is_some_and(|ns| meta::namespace(any) != Some(ns)) {
            return None;
        }
        let cur_ok = cur.as_ref().is_some_and(|o| c.q.matches(o));
        let old_ok = old.as_ref().is_some_and(|o| c.q.matches(o));
        match (cur, cur_ok, old_ok) {
            (Some(v), true, true) => Some(line("MODIFIED", v)),
            (Some(v), true, false) => Some(line("ADDED", v)),
            (_, false, true) => old.as_ref().map(|o| line("DELETED", &deleted_at(o, rev))),
            _ => None,
        }
    }

    #[test]
    fn selector_transitions_from_compact_events() {
        let states = [
            Some(pod("a", "", 10)),   // created, not selected by app=b
            Some(pod("b", "", 11)),   // enters app=b: ADDED
            Some(pod("b", "n1", 12)), // stays: MODIFIED; enters spec.nodeName=n1
            Some(pod("a", "n1", 13)), // leaves app=b: DELETED at 13
            None,                     // deleted
        ];
        let h = history(&states);
        let sent = |c: &Ctx| -> Vec<Option<String>> {
            h.iter()
                .map(|(e, cur, old)| {
                    let got = c.convert(&cached_change(e));
                    assert_eq!(got, value_line(c, e.revision, cur, old), "revision {}", e.revision);
                    got.map(|l| {
                        let v: Value = serde_json::from_slice(&l).unwrap();
                        format!(
                            "{} {}",
                            v["type"].as_str().unwrap(),
                            v["object"]["metadata"]["resourceVersion"]
                        )
                    })
                })
                .collect()
        };
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            sent(&ctx(Some("app=b"), None, None)),
            [None, s("ADDED \"11\""), s("MODIFIED \"12\""), s("DELETED \"13\""), None]
        );
        assert_eq!(
            sent(&ctx(None, Some("spec.nodeName=n1"), None)),
            [None, None, s("ADDED \"12\""), s("MODIFIED \"13\""), s("DELETED \"14\"")]
        );
        assert_eq!(
            sent(&ctx(Some("app!=b"), Some("metadata.namespace=default"), None)),
            [s("ADDED \"10\""), s("DELETED \"11\""), None, s("ADDED \"13\""), s("DELETED \"14\"")]
        );
        assert_eq!(
            sent(&ctx(None, None, None)),
            [
                s("ADDED \"10\""),
                s("MODIFIED \"11\""),
                s("MODIFIED \"12\""),
                s("MODIFIED \"13\""),
                s("DELETED \"14\"")
            ]
        );
        assert_eq!(sent(&ctx(None, None, Some("other"))), [None, None, None, None, None]);
        // The plain watcher's line is the event's shared line.
        let plain = ctx(None, None, Some("default"));
        for (e, _, _) in &h {
            assert_eq!(plain.convert(&cached_change(e)), Some(e.plain_line().1.clone()));
        }
    }
}
