//! Watch: chunked, newline-delimited JSON events from a store watch, with upstream's semantics —
//! synthetic ADDED events for the current state when the watch starts at "now" (resourceVersion unset
//! or "0"), selector transitions turned into ADDED/DELETED, bookmarks, timeouts, and an in-stream
//! ERROR (410 Expired) when the start revision is compacted.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};
use store::{EventKind, WatchStream};

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
    let prefix = res.list_prefix(rp.namespace.as_deref());
    let stream = match st.store.watch(&prefix, start_rev + 1).await {
        Ok(s) => Some(s),
        Err(store::Error::Compacted { .. }) => None,
        Err(e) => return Err(ApiError::from_store(res, "", e)),
    };
    let ctx = Ctx { res, q, table, bookmarks, start_rev };
    let body = events(ctx, initial, send_initial, stream, timeout);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

struct Ctx {
    res: &'static api_types::ResourceDef,
    q: ListQuery,
    table: Option<api_types::printing::TableOptions>,
    bookmarks: bool,
    start_rev: i64,
}

impl Ctx {
    fn line(&self, ty: &str, obj: Value) -> Result<bytes::Bytes, std::io::Error> {
        let obj = if let Some(opts) = self.table.as_ref().filter(|_| ty != "ERROR" && ty != "BOOKMARK") {
            let rev = meta::resource_version(&obj).unwrap_or("").to_string();
            let mut opts = opts.clone();
            opts.now = jiff::Timestamp::now();
            let mut t = api_types::printing::table(self.res, &[obj], &opts);
            t["metadata"] = json!({"resourceVersion": rev});
            t
        } else {
            obj
        };
        let mut s = json!({"type": ty, "object": obj}).to_string();
        s.push('\n');
        Ok(bytes::Bytes::from(s))
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Result<bytes::Bytes, std::io::Error> {
        let mut m = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": m});
        let mut s = json!({"type": "BOOKMARK", "object": obj}).to_string();
        s.push('\n');
        Ok(bytes::Bytes::from(s))
    }

    /// The watch event for one store event, if this watch should see it.
    fn convert(&self, ev: store::Event) -> Result<Option<(&'static str, Value)>, ApiError> {
        let rev = ev.revision();
        let cur = match ev.kind {
            EventKind::Put => Some(decode(self.res, &ev.kv)?),
            EventKind::Delete => None,
        };
        let old = match &ev.prev_kv {
            Some(p) => Some(decode(self.res, p)?),
            None => None,
        };
        let cur_ok = cur.as_ref().is_some_and(|o| self.q.matches(o));
        let old_ok = old.as_ref().is_some_and(|o| self.q.matches(o));
        Ok(match (cur, cur_ok, old_ok) {
            (Some(c), true, true) => Some(("MODIFIED", c)),
            (Some(c), true, false) => Some(("ADDED", c)),
            (_, false, true) => {
                // Gone, or no longer selected: DELETED with the last state seen, at this revision.
                let mut o = old.unwrap_or(Value::Null);
                meta::set(&mut o, "resourceVersion", json!(rev.to_string()));
                Some(("DELETED", o))
            }
            _ => None,
        })
    }
}

fn events(
    ctx: Ctx,
    initial: Vec<Value>,
    send_initial: bool,
    stream: Option<WatchStream>,
    timeout: Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    async_stream(move |tx| async move {
        for obj in initial {
            if tx.send(ctx.line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        let mut last = ctx.start_rev;
        if send_initial && ctx.bookmarks && tx.send(ctx.bookmark(last, true)).await.is_err() {
            return;
        }
        let Some(mut stream) = stream else {
            let status = ApiError::gone(format!("too old resource version: {}", ctx.start_rev)).status();
            let _ = tx.send(ctx.line("ERROR", status)).await;
            return;
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if ctx.bookmarks => {
                    if tx.send(ctx.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                next = stream.next() => match next {
                    Some(Ok(ev)) => {
                        last = ev.revision();
                        match ctx.convert(ev) {
                            Ok(Some((ty, obj))) => {
                                if tx.send(ctx.line(ty, obj)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                let _ = tx.send(ctx.line("ERROR", e.status())).await;
                                return;
                            }
                        }
                    }
                    Some(Err(store::Error::Compacted { requested, compact_revision })) => {
                        let status = ApiError::gone(format!("too old resource version: {requested} ({compact_revision})")).status();
                        let _ = tx.send(ctx.line("ERROR", status)).await;
                        return;
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(ctx.line("ERROR", ApiError::internal(e).status())).await;
                        return;
                    }
                    None => return,
                },
            }
        }
    })
}

/// A stream fed by a task, ending when the task does or the client goes away (the receiver drops,
/// the next send fails, the task returns).
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
