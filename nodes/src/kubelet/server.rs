//! The kubelet's HTTP endpoint on `node_ip:kubelet_port`: `/healthz` and
//! `GET /containerLogs/{namespace}/{pod}/{container}` (and the streaming endpoints of
//! `stream_server.rs`: `/exec`, `/attach`, `/portForward`) with upstream's query parameters (`follow`,
//! `tailLines`, `timestamps`, `sinceSeconds`, `sinceTime`, `limitBytes`; `previous`: the instance before the last restart). The API server's `pods/log` proxies here.
//! `/metrics/resource`: the simulated resource usage (`usage.rs`), as metrics-server scrapes it.
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
use super::streams::Runtime;

pub fn router(logs: Arc<LogStore>, runtime: Arc<dyn Runtime>, usage: Arc<super::usage::Usage>) -> Router {
    let resource = Router::new()
        .route(
            "/metrics/resource",
            get(|State(u): State<Arc<super::usage::Usage>>| async move {
                ([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], u.render())
            }),
        )
        .with_state(usage);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .with_state(logs)
        .merge(super::stream_server::router(runtime))
        .merge(resource)
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
}

async fn container_logs(
    State(logs): State<Arc<LogStore>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut opts = match LogOptions::parse(&q) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(pod_logs) = logs.get(&format!("{ns}/{pod}")) else {
        return text(StatusCode::NOT_FOUND, format!("pod \"{pod}\" not found in namespace \"{ns}\""));
    };
    if !pod_logs.names.iter().any(|n| n == &container) {
        return text(StatusCode::NOT_FOUND, format!("container \"{container}\" not found in pod \"{pod}\""));
    }
    let previous = q.get("previous").is_some_and(|v| v == "true" || v == "1");
    let log = if previous {
        // The instance before the last restart; it has ended, so there is nothing to follow.
        opts.follow = false;
        pod_logs.previous(&container).ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            )
        })
    } else {
        pod_logs.get(&container).ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
            )
        })
    };
    let log = match log {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    drop(pod_logs);
    let (mut lines, rx) = log.snapshot_and_subscribe();
    // Only the follower's receiver may keep the stream open: when the pod goes, the log (and with it
    // the broadcast sender) is dropped and the stream ends. A weak handle lets a follower that fell
    // behind catch up from the ring instead of skipping lines.
    let weak = Arc::downgrade(&log);
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
    let timestamps = opts.timestamps;
    let render = move |lines: &[Line]| -> Bytes {
        lines
            .iter()
            .map(|l| if timestamps { format!("{} {}\n", l.time, l.text) } else { format!("{}\n", l.text) })
            .collect::<String>()
            .into()
    };
    let last_seq = lines.last().map(|l| l.seq);
    let head = futures::stream::iter([render(&lines)]);
    let body = if opts.follow {
        let follow = futures::stream::unfold((rx, last_seq), move |(mut rx, last)| {
            let weak = weak.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(line) if last.is_some_and(|s| line.seq <= s) => continue,
                        Ok(line) => return Some((vec![line.clone()], (rx, Some(line.seq)))),
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let log = weak.upgrade()?;
                            let (ring, _) = log.snapshot_and_subscribe();
                            let missed: Vec<Line> =
                                ring.into_iter().filter(|l| last.is_none_or(|s| l.seq > s)).collect();
                            if let Some(end) = missed.last().map(|l| l.seq) {
                                return Some((missed, (rx, Some(end))));
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .map(move |batch| render(&batch));
        head.chain(follow).boxed()
    } else {
        head.boxed()
    };
    let body = match opts.limit_bytes {
        Some(limit) => limit_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX)).boxed(),
        None => body,
    };
    let body = body.filter(|b| futures::future::ready(!b.is_empty())).map(Ok::<_, std::io::Error>);
    Response::builder()
        .status(200)
        .header("Content-Type", "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_follower_that_falls_behind_catches_up_from_the_ring_without_gaps() {
        let logs = Arc::new(LogStore::default());
        let pod = logs.add("default/p", "uid-1", vec!["c".into()]);
        let log = pod.start("c");
        let req =
            axum::http::Request::get("/containerLogs/default/p/c?follow=true").body(Body::empty()).unwrap();
        let resp = router(
            logs.clone(),
            crate::runtime::registry::Containers::new(),
            Arc::new(crate::kubelet::usage::Usage::new(Default::default())),
        )
        .oneshot(req)
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        // More lines than the broadcast holds, before the follower reads anything.
        for i in 0..600 {
            log.push(format!("line {i}"));
        }
        drop((log, pod));
        let mut body = resp.into_body();
        let mut text = String::new();
        while text.lines().count() < 600 {
            let frame = body.frame().await.expect("more lines").unwrap();
            text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
        let got: Vec<&str> = text.lines().collect();
        let want: Vec<String> = (0..600).map(|i| format!("line {i}")).collect();
        assert_eq!(got, want);
        // The pod goes: the stream ends.
        logs.remove("default/p", "uid-1");
        assert!(body.frame().await.is_none());
    }
}
