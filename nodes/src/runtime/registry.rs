//! The node's running containers, for the kubelet's streaming endpoints: [`Containers`]
//! implements `kubelet::streams::Runtime` (exec runs a command in a container's sandbox; attach
//! joins its main process; pod_ip for port-forwarding). The pod workers register and unregister.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use super::io::{Input, Out, Sink, Writer};
use super::shell::{Io, Shell};
use super::Sandbox;
use crate::kubelet::logs::ContainerLog;
use crate::kubelet::streams::{Runtime, Stdio, StreamError};

/// One running container instance.
#[derive(Clone)]
pub struct Running {
    pub sb: Arc<Sandbox>,
    pub env: Vec<(String, String)>,
    /// Its output as the log records it (attach follows it).
    pub log: Arc<ContainerLog>,
    /// Its main process's stdin (containers with `stdin: true`).
    pub stdin: Option<Out>,
    /// `stdinOnce`: the first attach session that closes stdin closes it for the process.
    pub stdin_once: bool,
    /// Set to the exit code when the main process ends.
    pub exited: watch::Receiver<Option<i32>>,
}

#[derive(Default)]
struct Pod {
    ip: Option<Ipv4Addr>,
    /// Every container name in the spec (init containers included).
    names: Vec<String>,
    running: HashMap<String, Running>,
}

/// The node's pods and their running containers, by "namespace/name".
#[derive(Default)]
pub struct Containers {
    pods: Mutex<HashMap<String, Pod>>,
}

fn key(ns: &str, pod: &str) -> String {
    format!("{ns}/{pod}")
}

impl Containers {
    pub fn new() -> Arc<Containers> {
        Arc::new(Containers::default())
    }

    /// A pod is on this node (its container names, from the spec).
    pub fn add_pod(&self, ns: &str, pod: &str, names: Vec<String>) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.entry(key(ns, pod)).or_default().names = names;
    }

    pub fn set_ip(&self, ns: &str, pod: &str, ip: Option<Ipv4Addr>) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pods.get_mut(&key(ns, pod)) {
            p.ip = ip;
        }
    }

    pub fn remove_pod(&self, ns: &str, pod: &str) {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(ns, pod));
    }

    pub fn started(&self, ns: &str, pod: &str, container: &str, r: Running) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.entry(key(ns, pod)).or_default().running.insert(container.to_string(), r);
    }

    pub fn stopped(&self, ns: &str, pod: &str, container: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pods.get_mut(&key(ns, pod)) {
            p.running.remove(container);
        }
    }

    /// The running container, or upstream's error.
    fn find(&self, ns: &str, pod: &str, container: &str) -> Result<Running, StreamError> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let p = pods.get(&key(ns, pod)).ok_or_else(|| StreamError::PodNotFound(pod.to_string()))?;
        if !p.names.iter().any(|n| n == container) {
            return Err(StreamError::ContainerNotFound {
                pod: pod.to_string(),
                container: container.to_string(),
            });
        }
        p.running.get(container).cloned().ok_or_else(|| StreamError::NotRunning(container.to_string()))
    }
}

/// A TTY's output: `\n` becomes `\r\n`, as the terminal's line discipline does.
struct TtyOut(Out);

impl Sink for TtyOut {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let mut v = Vec::with_capacity(data.len() + 8);
            for &b in data {
                if b == b'\n' {
                    v.push(b'\r');
                }
                v.push(b);
            }
            self.0.write(&v).await
        })
    }
}

/// The streams as the shell's `Io` (stderr merged into stdout with a TTY).
fn shell_io(io: Stdio) -> Io {
    let wrap = |w: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>| -> Out {
        match w {
            Some(w) => Arc::new(Writer(tokio::sync::Mutex::new(w))),
            None => Arc::new(super::io::Null),
        }
    };
    let stdout = wrap(io.stdout);
    let (stdout, stderr): (Out, Out) = if io.tty {
        let t: Out = Arc::new(TtyOut(stdout));
        (t.clone(), t)
    } else {
        (stdout, wrap(io.stderr))
    };
    let stdin = match io.stdin {
        Some(r) => Input::reader(r),
        None => Input::empty(),
    };
    Io { stdin, stdout, stderr }
}

impl Runtime for Containers {
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        argv: Vec<String>,
        io: Stdio,
    ) -> BoxFuture<'static, Result<i32, StreamError>> {
        let found = self.find(namespace, pod, container);
        async move {
            let r = found?;
            let mut sh = Shell::new(r.sb.clone(), &r.env);
            let io = shell_io(io);
            let mut exited = r.exited.clone();
            // The exec ends with the container: its processes die with it.
            let run = sh.run_argv(argv, io.clone());
            tokio::select! {
                code = run => Ok(code),
                _ = exited.wait_for(Option::is_some) => Ok(137),
            }
        }
        .boxed()
    }

    fn attach(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        io: Stdio,
    ) -> BoxFuture<'static, Result<i32, StreamError>> {
        let found = self.find(namespace, pod, container);
        async move {
            let r = found?;
            if io.stdin.is_some() && r.stdin.is_none() {
                return Err(StreamError::Invalid(
                    "Stdin is not enabled for this attach session. Please use stdin=true".into(),
                ));
            }
            let io = shell_io(io);
            let (_, mut lines) = r.log.snapshot_and_subscribe();
            let mut exited = r.exited.clone();
            let out = io.stdout.clone();
            let write_line = |l: crate::kubelet::logs::Line| {
                let out = out.clone();
                async move { out.write(format!("{}\n", l.text).as_bytes()).await.is_ok() }
            };
            // Until the process ends (its exit code), the client goes away, or the log closes. The
            // client closing stdin does not end the session (kubectl then waits for the output);
            // with `stdinOnce` it closes the process's stdin, so a shell reading it exits.
            let mut stdin_open = r.stdin.is_some();
            loop {
                tokio::select! {
                    biased;
                    l = lines.recv() => match l {
                        Ok(l) => {
                            if !write_line(l).await {
                                return Ok(0);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(0),
                    },
                    code = async { exited.wait_for(Option::is_some).await.ok().and_then(|c| *c) } => {
                        let code = code.unwrap_or(0);
                        // The lines it wrote before exiting are already in the channel.
                        while let Ok(l) = lines.try_recv() {
                            if !write_line(l).await {
                                break;
                            }
                        }
                        return Ok(code);
                    }
                    c = io.stdin.chunk(), if stdin_open => match (c, &r.stdin) {
                        (Some(c), Some(w)) => {
                            // A TTY sends \r for Enter.
                            let c: Vec<u8> = c.into_iter().map(|b| if b == b'\r' { b'\n' } else { b }).collect();
                            if w.write(&c).await.is_err() {
                                stdin_open = false;
                            }
                        }
                        (_, w) => {
                            stdin_open = false;
                            if r.stdin_once {
                                if let Some(w) = w {
                                    w.close();
                                }
                            }
                        }
                    },
                }
            }
        }
        .boxed()
    }

    fn pod_ip(&self, namespace: &str, pod: &str) -> Result<IpAddr, StreamError> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let p = pods.get(&key(namespace, pod)).ok_or_else(|| StreamError::PodNotFound(pod.to_string()))?;
        p.ip.map(IpAddr::V4).ok_or_else(|| StreamError::NotRunning(pod.to_string()))
    }
}
