//! Copying bytes both ways between two connections until both close or nothing moves for an idle
//! timeout: the service proxy's TCP connections and the ingress's upgraded (WebSocket) tunnels.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// tokio's clock, not std's, so tests can run on paused time.
use tokio::time::Instant;

/// How a pipe ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Both sides closed.
    Closed,
    /// Nothing was read or written in either direction for the idle timeout.
    Idle,
    /// A read or write failed.
    Failed(std::io::Error),
}

/// The time of the last byte moved, in milliseconds since `start`; shared by both directions.
pub(crate) struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    pub fn new() -> Arc<Clock> {
        Arc::new(Clock { start: Instant::now(), last_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once no byte moved for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that stamps its clock whenever bytes are read from or written to it.
pub(crate) struct Stamped<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Stamped<S> {
    pub fn new(inner: S, clock: Arc<Clock>) -> Self {
        Stamped { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies `a` ⇄ `b` (half-closes passed on, as `copy_bidirectional`) until both sides are done, or
/// until no byte moved either way for `idle`. Dropping the streams afterwards closes them.
pub(crate) async fn copy_with_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock::new();
    let mut a = Stamped::new(a, clock.clone());
    let mut b = Stamped::new(b, clock.clone());
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
            Ok(_) => Ended::Closed,
            Err(e) => Ended::Failed(e),
        },
        () = clock.idle_for(idle) => Ended::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_idle_pipe_ends_and_a_busy_one_does_not() {
        let (mut a, mut a_peer) = tokio::io::duplex(64);
        let (mut b, mut b_peer) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let pipe = tokio::spawn(async move { copy_with_idle(&mut a, &mut b, idle).await });
        // Traffic every 6 s (under the timeout) keeps it open for 30 s of (paused) time.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            a_peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            b_peer.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            assert!(!pipe.is_finished(), "a pipe with traffic stays open");
        }
        // Then silence: it ends once the idle timeout passes.
        let ended = tokio::time::timeout(idle * 2, pipe).await.expect("the idle pipe ends").unwrap();
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
    }
}
