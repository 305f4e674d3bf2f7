//! The kubelet's HTTP endpoint on `node_ip:kubelet_port`: `/healthz` and
//! `GET /containerLogs/{namespace}/{pod}/{container}` with upstream's query parameters (`follow`,
//! `tailLines`, `timestamps`, `sinceSeconds`, `sinceTime`, `limitBytes`; `previous` has nothing to show). The API server's `pods/log` proxies here.
//! Plain HTTP: everything is on loopback.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::logs::{Line, LogStore};

pub fn router(logs: Arc<LogStore>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .with_state(logs)
}

/// Parsed `/containerLogs` options (upstream's `PodLogOptions`).
#[derive(Debug, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    /// RFC 3339; `sinceSeconds` wins when both are given.
    pub since_time: Option<jiff::Timestamp>,
    pub limit_bytes: Option<i64>,
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [("Content-Type", "text/plain; charset=utf-8")], msg).into_response()
}

impl LogOptions {
    fn parse(q: &HashMap<String, String>) -> Result<LogOptions, String> {
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let int = |k: &str| -> Result<Option<i64>, String> {
            q.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<i64>().map_err(|_| format!("invalid {k}: {v:?}")))
                .transpose()
        };
        let o = LogOptions {
            follow: flag("follow"),
            timestamps: flag("timestamps"),
            tail_lines: int("tailLines")?,
            since_seconds: int("sinceSeconds")?,
            since_time: q
                .get("sinceTime")
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<jiff::Timestamp>().map_err(|_| format!("invalid sinceTime: {v:?}")))
                .transpose()?,
            limit_bytes: int("limitBytes")?,
        };
        if o.tail_lines.is_some_and(|n| n < 0) {
            return Err("tailLines must be greater than or equal to 0".into());
        }
        if o.since_seconds.is_some_and(|n| n < 1) {
            return Err("sinceSeconds must be greater than 0".into());
        }
        if o.limit_bytes.is_some_and(|n| n < 1) {
            return Err("limitBytes must be greater than 0".into());
        }
        Ok(o)
    }

    fn format(&self, line: &Line) -> String {
        if self.timestamps {
            format!("{} {}\n", line.time, line.text)
        } else {
            format!("{}\n", line.text)
        }
    }
}

async fn container_logs(
    State(logs): State<Arc<LogStore>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let opts = match LogOptions::parse(&q) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(pod_logs) = logs.get(&format!("{ns}/{pod}")) else {
        return text(StatusCode::NOT_FOUND, format!("pod \"{pod}\" not found in namespace \"{ns}\""));
    };
    if !pod_logs.names.iter().any(|n| n == &container) {
        return text(StatusCode::NOT_FOUND, format!("container \"{container}\" not found in pod \"{pod}\""));
    }
    if q.get("previous").is_some_and(|v| v == "true" || v == "1") {
        // Simulated containers never restart, so there is no previous instance.
        return text(
            StatusCode::BAD_REQUEST,
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
        );
    }
    let Some(log) = pod_logs.get(&container) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
        );
    };
    drop(pod_logs);
    let (mut lines, rx) = log.snapshot_and_subscribe();
    // Only the follower's receiver may keep the stream open: when the pod goes, the log (and with it
    // the broadcast sender) is dropped and the stream ends.
    drop(log);
    let since = match (opts.since_seconds, opts.since_time) {
        (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
        (None, t) => t,
    };
    if let Some(since) = since {
        lines.retain(|l| l.time >= since);
    }
    if let Some(n) = opts.tail_lines {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if lines.len() > n {
            lines.drain(..lines.len() - n);
        }
    }
    let last_seq = lines.last().map(|l| l.seq);
    let first: String = lines.iter().map(|l| opts.format(l)).collect();
    let head = futures::stream::iter([Bytes::from(first)]);
    let body = if opts.follow {
        let follow = futures::stream::unfold((rx, last_seq), move |(mut rx, last)| async move {
            loop {
                match rx.recv().await {
                    Ok(line) if last.is_some_and(|s| line.seq <= s) => continue,
                    Ok(line) => return Some((line.clone(), (rx, Some(line.seq)))),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .map(move |l| {
            Bytes::from(if opts.timestamps {
                format!("{} {}\n", l.time, l.text)
            } else {
                format!("{}\n", l.text)
            })
        });
        head.chain(follow).boxed()
    } else {
        head.boxed()
    };
    let body = match opts_limit(&q) {
        Some(limit) => limit_bytes(body, limit).boxed(),
        None => body,
    };
    let body = body.filter(|b| futures::future::ready(!b.is_empty())).map(Ok::<_, std::io::Error>);
    Response::builder()
        .status(200)
        .header("Content-Type", "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

fn opts_limit(q: &HashMap<String, String>) -> Option<usize> {
    q.get("limitBytes").and_then(|v| v.parse::<usize>().ok())
}

/// Ends the stream after `limit` bytes.
fn limit_bytes(
    s: futures::stream::BoxStream<'static, Bytes>,
    limit: usize,
) -> impl futures::Stream<Item = Bytes> + Send {
    futures::stream::unfold((s, limit), |(mut s, left)| async move {
        if left == 0 {
            return None;
        }
        let mut chunk = s.next().await?;
        if chunk.len() > left {
            chunk.truncate(left);
        }
        let left = left - chunk.len();
        Some((chunk, (s, left)))
    })
}
