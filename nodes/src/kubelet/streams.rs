//! The seam between the kubelet's streaming endpoints (`/exec`, `/attach`, `/portForward`, served by
//! `server.rs`) and the container runtime that runs the pods' commands (the workers and the
//! sandbox). The server parses the wire protocol (WebSocket channels, SPDY) and turns a request into
//! one of these calls; the runtime finds the container and runs or attaches to its process.
//!
//! Errors carry upstream's wording, because the server sends them to kubectl as they are.

use std::net::IpAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A terminal size, as the resize channel carries it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// The streams of one exec or attach. Absent streams were not asked for (`stdin=false`, …). With a
/// TTY, stderr is merged into stdout (as a real TTY does) and `stderr` is None.
pub struct Stdio {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub tty: bool,
    /// Terminal size changes, when `tty`.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// Why a stream could not start. The Display text is what the client sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("pod {0} not found")]
    PodNotFound(String),
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound { pod: String, container: String },
    /// The container exists but has no running process (not started yet, exited, or the pod is
    /// terminating).
    #[error("container {0} is not running")]
    NotRunning(String),
    /// `attach` to a container that was not started with `stdin: true` while stdin was asked for.
    #[error("{0}")]
    Invalid(String),
}

/// What the streaming endpoints need from the runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `argv` in the container's sandbox with `io`, and resolves to its exit code once it has
    /// ended and its output has been written. An unknown program is exit code 127 with the shell's
    /// message on stderr, as in a real container, not an error.
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        argv: Vec<String>,
        io: Stdio,
    ) -> BoxFuture<'static, Result<i32, StreamError>>;

    /// Connects `io` to the container's main process (its stdin if it was started with
    /// `stdin: true`, its stdout/stderr from now on) and resolves when the process ends (its exit
    /// code) or the client closes stdin / goes away (`Ok(0)`), whichever comes first. The process
    /// keeps running after a detach.
    fn attach(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        io: Stdio,
    ) -> BoxFuture<'static, Result<i32, StreamError>>;

    /// The IP of a running pod on this node, for port-forwarding to `ip:port`.
    fn pod_ip(&self, namespace: &str, pod: &str) -> Result<IpAddr, StreamError>;
}
