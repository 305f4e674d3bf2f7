//! Data-plane worker threads: one per core, each a current-thread tokio runtime with its own
//! reactor (epoll) and timers, as nginx runs one worker process per core. The ingress and the
//! userspace service proxy accept on their listeners as before and hand each connection to the
//! next worker in turn ([`Workers::serve`]); it is served there to its end, so its reads, writes,
//! timers and wakeups never cross threads. (On the process's shared multi-thread runtime, a
//! proxied request's two sockets are woken by whichever worker polls the reactor, and a worker
//! that queues a task wakes an idle peer to steal it: futex calls and context switches on every
//! request.)
//!
//! Dropping [`Workers`] stops handing out connections; each thread then ends once the connections
//! it serves have ended (as connection tasks outlived their accept loop before).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A set of worker threads, connections dealt to them round-robin.
pub(crate) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

/// The number of cores this process may run on (at least 1): the default number of workers.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// Starts `count` (at least 1) threads named `<name>-<i>`.
    pub fn start(name: &str, count: usize) -> std::io::Result<Workers> {
        let mut queues = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, rx) = mpsc::unbounded_channel::<Job>();
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || runtime.block_on(run(rx)))?;
            queues.push(tx);
        }
        Ok(Workers { queues, next: AtomicUsize::new(0) })
    }

    /// Serves `stream` with `serve` on the next worker. The stream moves to that worker's
    /// reactor (registered there on the task's first poll).
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let job: Job = Box::pin(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection with its worker"),
            }
        });
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        if let Err(mpsc::error::SendError(job)) = self.queues[i].send(job) {
            // That worker's thread is gone (it cannot be, short of an abort): serve the
            // connection on the caller's runtime rather than drop it.
            tracing::warn!(worker = i, "data-plane worker gone; serving on the shared runtime");
            tokio::spawn(job);
        }
    }
}

/// A worker's loop: runs the connections it is given; once no more can come, waits for those
/// still open.
async fn run(mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => {
                    tasks.spawn(job);
                }
                None => break,
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a data-plane connection task panicked");
                    }
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Accepts `n` connections on a loopback listener and hands each to `workers` with an echo
    /// that also answers with the serving thread's name.
    async fn echo_server(workers: std::sync::Arc<Workers>, n: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..n {
                let (stream, _) = listener.accept().await.unwrap();
                workers.serve(stream, |mut s| async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 {
                            return;
                        }
                        let who = std::thread::current().name().unwrap_or("").to_string();
                        if s.write_all(format!("{}@{who}", String::from_utf8_lossy(&b[..n])).as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn ask(conn: &mut TcpStream, what: &str) -> String {
        conn.write_all(what.as_bytes()).await.unwrap();
        let mut b = [0u8; 128];
        let n = conn.read(&mut b).await.unwrap();
        String::from_utf8_lossy(&b[..n]).into_owned()
    }

    #[tokio::test]
    async fn connections_are_dealt_round_robin_and_served_on_their_worker() {
        let workers = std::sync::Arc::new(Workers::start("test-worker", 2).unwrap());
        let addr = echo_server(workers.clone(), 4).await;
        let mut conns = Vec::new();
        let mut seen = Vec::new();
        for i in 0..4 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            seen.push(ask(&mut c, &format!("m{i}")).await);
            conns.push(c);
        }
        assert_eq!(seen, ["m0@test-worker-0", "m1@test-worker-1", "m2@test-worker-0", "m3@test-worker-1"]);
        // A connection stays on its worker for its whole life.
        for (i, c) in conns.iter_mut().enumerate() {
            assert_eq!(ask(c, "again").await, format!("again@test-worker-{}", i % 2));
        }
    }

    #[tokio::test]
    async fn open_connections_outlive_the_workers_handle_and_then_the_threads_end() {
        let workers = std::sync::Arc::new(Workers::start("test-drain", 1).unwrap());
        let addr = echo_server(workers.clone(), 1).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut c, "x").await, "x@test-drain-0");
        // The accept loop has finished (one connection) and dropped its handle; drop ours.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(std::sync::Arc::strong_count(&workers), 1);
        drop(workers);
        assert_eq!(ask(&mut c, "still").await, "still@test-drain-0", "the open connection is still served");
        drop(c);
        // With its last connection closed, the thread ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while thread_named("test-drain-0") {
            assert!(std::time::Instant::now() < deadline, "the worker thread did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a thread of this process has this name (`/proc/self/task/*/comm`).
    fn thread_named(name: &str) -> bool {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(Result::ok)
            .any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
    }
}
