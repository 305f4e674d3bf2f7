//! A small HTTP/1.1 codec for the ingress's fast path ([`super::raw`]): how a message's body is
//! delimited ([`Framing`]), a scanner that finds the end of a chunked body without decoding it
//! ([`ChunkScanner`]), and [`forward`], which moves one message's body from one connection to
//! another as the bytes came (chunked bodies are passed on as chunked, never re-encoded). Heads
//! are parsed with `httparse` (hyper's own parser).

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from a connection at a time.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// How a message body ends (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (a response without either header).
    Close,
}

/// A `Content-Length` value: digits only, no sign, no list.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether a comma-separated header value (`Connection`, `Transfer-Encoding`) holds `token`.
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the last coding of a `Transfer-Encoding` value is `chunked`.
pub(crate) fn ends_chunked(value: &[u8]) -> bool {
    value.rsplit(|&b| b == b',').next().is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` so far).
    #[default]
    Size,
    /// A chunk extension, up to the line's end.
    Extension,
    /// The LF after a size line's CR.
    SizeLf,
    /// Chunk data still to come.
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// The LF of the final empty line.
    EndLf,
    Done,
}

/// Finds the end of a chunked body (RFC 9112 section 7.1) in bytes fed as they arrive, without
/// copying or decoding them.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkScanner {
    state: State,
    size: u64,
    digits: u8,
    /// Bytes of the current size line, extension included (bounded, as hyper bounds it).
    line: usize,
}

/// A size line (with its extensions) or a trailer line longer than this is refused.
const MAX_LINE: usize = 8 * 1024;

impl ChunkScanner {
    /// Scans `data`: how many of its bytes belong to the body, and whether the body ends there.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                State::Done => return Ok((i, true)),
                State::Data => {
                    let take = usize::try_from(self.size).unwrap_or(usize::MAX).min(data.len() - i);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 16 {
                            return Err("chunk size too large");
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(v);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => return Err("invalid chunk size"),
                    b';' | b' ' | b'\t' => self.state = State::Extension,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err("invalid chunk size"),
                },
                State::Extension => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err("chunk extension too long");
                    }
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err("bare LF in a chunk size line"),
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("invalid chunk size line end");
                    }
                    self.digits = 0;
                    self.line = 0;
                    self.state = if self.size == 0 { State::TrailerStart } else { State::Data };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("invalid chunk data end");
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' { State::EndLf } else { State::Trailer };
                    self.line = 1;
                }
                State::Trailer => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err("trailer line too long");
                    }
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err("invalid end of a chunked body");
                    }
                    self.state = State::Done;
                    return Ok((i + 1, true));
                }
            }
            i += 1;
        }
        Ok((i, self.state == State::Done))
    }
}

/// Where moving a body failed.
#[derive(Debug)]
pub(crate) enum Side {
    /// Reading the sender (or its framing was invalid; then the error is `InvalidData`).
    Src(io::Error),
    /// Writing the receiver.
    Dst(io::Error),
}

/// Writes `head`, then the body framed by `framing`, taken from `buf` (bytes already read from
/// `src`) and then from `src`, to `dst`. Leaves in `buf` what `src` sent after the body (a
/// pipelined request). Each piece is written and flushed as soon as it is read; the head goes in
/// one write with the body bytes already at hand.
pub(crate) async fn forward<R, W>(
    framing: Framing,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    head: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), Side>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = (!head.is_empty()).then_some(head);
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunks = ChunkScanner::default();
    loop {
        let (take, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
                remaining -= take as u64;
                (take, remaining == 0)
            }
            Framing::Chunked => {
                chunks.feed(buf).map_err(|e| Side::Src(io::Error::new(io::ErrorKind::InvalidData, e)))?
            }
            Framing::Close => (buf.len(), false),
        };
        let wrote = take > 0 || head.is_some();
        match head.take() {
            Some(h) if take > 0 => {
                scratch.clear();
                scratch.extend_from_slice(h);
                scratch.extend_from_slice(&buf[..take]);
                dst.write_all(scratch).await
            }
            Some(h) => dst.write_all(h).await,
            None if take > 0 => dst.write_all(&buf[..take]).await,
            None => Ok(()),
        }
        .map_err(Side::Dst)?;
        buf.advance(take);
        if wrote || done {
            dst.flush().await.map_err(Side::Dst)?;
        }
        if done {
            return Ok(());
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match src.read_buf(buf).await {
            Ok(0) if framing == Framing::Close => return Ok(()),
            Ok(0) => {
                return Err(Side::Src(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the body's end",
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Side::Src(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(data: &[u8], step: usize) -> Result<(usize, bool), &'static str> {
        let mut s = ChunkScanner::default();
        let mut at = 0;
        while at < data.len() {
            let end = (at + step).min(data.len());
            let (n, done) = s.feed(&data[at..end])?;
            at += n;
            if done {
                return Ok((at, true));
            }
        }
        Ok((at, false))
    }

    #[test]
    fn chunked_body_end_is_found_whatever_the_pieces() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        for step in 1..body.len() {
            assert_eq!(scan_all(body, step), Ok((end, true)), "step {step}");
        }
        assert_eq!(scan_all(b"0\r\n\r\n", 100), Ok((5, true)));
        assert_eq!(scan_all(b"3\r\nab", 100), Ok((5, false)));
    }

    #[test]
    fn bad_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"3\r\nabcd\r\n",
            b"3\rX",
            b"3\nabc",
            b"11111111111111111\r\n",
            b"0\r\n\rX",
        ] {
            assert!(scan_all(bad, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_values() {
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"+4"), None);
        assert_eq!(content_length(b"4, 4"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"99999999999999999999999"), None);
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"closed", "close"));
        assert!(ends_chunked(b"gzip, chunked"));
        assert!(!ends_chunked(b"chunked, gzip"));
    }

    #[tokio::test]
    async fn forward_moves_exactly_one_body_and_leaves_the_rest() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        // Length: part in the buffer, part still to read, then a pipelined request.
        let mut buf = BytesMut::from(&b"hel"[..]);
        let mut src: &[u8] = b"lo world GET";
        forward(Framing::Length(11), &mut src, &mut buf, &mut out, b"HEAD|", &mut scratch).await.unwrap();
        assert_eq!(out, b"HEAD|hello world");
        assert_eq!(&buf[..], b" GET");
        // Chunked, passed on as it came.
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        let mut src: &[u8] = b"2\r\nab\r\n0\r\n\r\nNEXT";
        forward(Framing::Chunked, &mut src, &mut buf, &mut out, b"", &mut scratch).await.unwrap();
        assert_eq!(out, b"2\r\nab\r\n0\r\n\r\n");
        assert_eq!(&buf[..], b"NEXT");
        // The sender closes mid-body: an error on its side.
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        let mut src: &[u8] = b"abc";
        let err = forward(Framing::Length(10), &mut src, &mut buf, &mut out, b"H", &mut scratch).await;
        assert!(matches!(err, Err(Side::Src(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
        // Until close.
        let mut out = Vec::new();
        let mut src: &[u8] = b"all of it";
        forward(Framing::Close, &mut src, &mut BytesMut::new(), &mut out, b"", &mut scratch).await.unwrap();
        assert_eq!(out, b"all of it");
    }
}
