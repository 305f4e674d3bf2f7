//! The shell's standard streams: shared, cloneable outputs (`Out`) and a shared input (`Input`).
//! Pipes are bounded channels, so a fast writer waits for a slow reader and a closed reader ends
//! the writer (`Broken pipe`).

use std::io;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::vfs::Fs;

/// Where output goes.
pub trait Sink: Send + Sync {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;

    /// Ends the stream: the reader sees end of file once it has read what was written (a pipe;
    /// other sinks have no reader to tell).
    fn close(&self) {}
}

pub type Out = Arc<dyn Sink>;

/// `/dev/null`.
pub struct Null;

impl Sink for Null {
    fn write<'a>(&'a self, _: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Collects output (command substitution, tests).
#[derive(Default)]
pub struct Buffer(pub Mutex<Vec<u8>>);

impl Buffer {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Bytes a command substitution may collect.
const MAX_CAPTURE: usize = 16 << 20;

impl Sink for Buffer {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if b.len() + data.len() > MAX_CAPTURE {
                return Err(io::Error::other("output too large"));
            }
            b.extend_from_slice(data);
            Ok(())
        })
    }
}

/// The write end of a pipe; `close` drops the sender, so the reader gets end of file.
pub struct PipeWriter(std::sync::Mutex<Option<mpsc::Sender<Vec<u8>>>>);

impl Sink for PipeWriter {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            if data.is_empty() {
                return Ok(());
            }
            let tx = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(tx) = tx else { return Err(io::Error::from(io::ErrorKind::BrokenPipe)) };
            tx.send(data.to_vec()).await.map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        })
    }

    fn close(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// An async writer (an exec stream).
pub struct Writer(pub tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>);

impl Sink for Writer {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut w = self.0.lock().await;
            w.write_all(data).await?;
            w.flush().await
        })
    }
}

/// Output into a file of the container's filesystem (`>` / `>>`; the first write of `>` has
/// already truncated it).
pub struct FileSink {
    pub fs: Fs,
    pub path: String,
}

impl Sink for FileSink {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(
            async move { self.fs.write(&self.path, data, true).map_err(|e| io::Error::other(e.to_string())) },
        )
    }
}

/// Line-buffered output handed to a callback (the container log): each complete line, and the
/// rest when flushed. A line longer than 16 KiB is cut, as the container runtime's log does.
pub struct Lines<F: Fn(String) + Send + Sync> {
    pending: Mutex<Vec<u8>>,
    emit: F,
}

const MAX_LINE: usize = 16 << 10;

impl<F: Fn(String) + Send + Sync> Lines<F> {
    pub fn new(emit: F) -> Lines<F> {
        Lines { pending: Mutex::new(Vec::new()), emit }
    }

    /// Emits a partial last line.
    pub fn flush(&self) {
        let rest = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !rest.is_empty() {
            (self.emit)(String::from_utf8_lossy(&rest).into_owned());
        }
    }
}

impl<F: Fn(String) + Send + Sync> Sink for Lines<F> {
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        let mut lines = Vec::new();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for &b in data {
                if b == b'\n' {
                    lines.push(String::from_utf8_lossy(&std::mem::take(&mut *p)).into_owned());
                } else {
                    p.push(b);
                    if p.len() >= MAX_LINE {
                        lines.push(String::from_utf8_lossy(&std::mem::take(&mut *p)).into_owned());
                    }
                }
            }
        }
        for l in lines {
            (self.emit)(l);
        }
        Box::pin(async { Ok(()) })
    }
}

enum Src {
    Empty,
    Bytes(Vec<u8>),
    Pipe(mpsc::Receiver<Vec<u8>>),
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

struct InState {
    src: Src,
    /// Read but not yet consumed (after a `read` of one line).
    buf: Vec<u8>,
}

/// A command's standard input, shared by the commands that read it in turn.
pub struct Input(tokio::sync::Mutex<InState>);

pub type In = Arc<Input>;

/// Bytes `read_all` takes at most (a container's memory is small).
pub const MAX_INPUT: usize = 64 << 20;

impl Input {
    fn of(src: Src) -> In {
        Arc::new(Input(tokio::sync::Mutex::new(InState { src, buf: Vec::new() })))
    }

    pub fn empty() -> In {
        Input::of(Src::Empty)
    }

    pub fn bytes(data: Vec<u8>) -> In {
        Input::of(Src::Bytes(data))
    }

    pub fn reader(r: Box<dyn AsyncRead + Send + Unpin>) -> In {
        Input::of(Src::Reader(r))
    }

    /// The next chunk, None at end of input.
    pub async fn chunk(&self) -> Option<Vec<u8>> {
        let mut st = self.0.lock().await;
        if !st.buf.is_empty() {
            return Some(std::mem::take(&mut st.buf));
        }
        next(&mut st.src).await
    }

    /// One line without its newline; None at end of input.
    pub async fn line(&self) -> Option<String> {
        let mut st = self.0.lock().await;
        loop {
            if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
                let rest = st.buf.split_off(pos + 1);
                let mut line = std::mem::replace(&mut st.buf, rest);
                line.pop();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            match next(&mut st.src).await {
                Some(c) => {
                    if st.buf.len() > MAX_INPUT {
                        st.buf.clear();
                    }
                    st.buf.extend_from_slice(&c)
                }
                None if st.buf.is_empty() => return None,
                None => {
                    let line = std::mem::take(&mut st.buf);
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    }

    /// Everything up to the end of input (at most [`MAX_INPUT`] bytes).
    pub async fn all(&self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await {
            out.extend_from_slice(&c);
            if out.len() > MAX_INPUT {
                out.truncate(MAX_INPUT);
                break;
            }
        }
        out
    }
}

async fn next(src: &mut Src) -> Option<Vec<u8>> {
    match src {
        Src::Empty => None,
        Src::Bytes(b) => {
            let b = std::mem::take(b);
            *src = Src::Empty;
            (!b.is_empty()).then_some(b)
        }
        Src::Pipe(rx) => rx.recv().await,
        Src::Reader(r) => {
            let mut buf = vec![0u8; 8192];
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    *src = Src::Empty;
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some(buf)
                }
            }
        }
    }
}

/// A pipe: its write end (an `Out`) and read end (an `In`). Dropping every clone of the writer
/// ends the reader's input.
pub fn pipe() -> (Out, In) {
    let (tx, rx) = mpsc::channel(16);
    (Arc::new(PipeWriter(std::sync::Mutex::new(Some(tx)))), Input::of(Src::Pipe(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_and_pipes() {
        let input = Input::bytes(b"a\nbb\nc".to_vec());
        assert_eq!(input.line().await.as_deref(), Some("a"));
        assert_eq!(input.all().await, b"bb\nc");
        assert_eq!(input.line().await, None);
        let (w, r) = pipe();
        let writer = tokio::spawn(async move {
            w.write(b"x\ny").await.unwrap();
        });
        writer.await.unwrap();
        assert_eq!(r.all().await, b"x\ny");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let lines = Lines::new(move |l| g.lock().unwrap().push(l));
        lines.write(b"one\ntw").await.unwrap();
        lines.write(b"o\nthree").await.unwrap();
        lines.flush();
        assert_eq!(*got.lock().unwrap(), vec!["one", "two", "three"]);
    }

    #[tokio::test]
    async fn a_closed_reader_breaks_the_pipe() {
        let (w, r) = pipe();
        drop(r);
        assert_eq!(w.write(b"x").await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
