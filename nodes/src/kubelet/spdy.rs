//! The server side of SPDY/3.1 as Kubernetes' streaming protocols use it (client-go's
//! `httpstream/spdy`, over moby/spdystream): the client opens streams with SYN_STREAM (their
//! headers say what each stream is: `streamType`, `port`, `requestID`), the server answers each with
//! a SYN_REPLY, and both sides send data frames, a FIN flag half-closing a stream. PING is echoed;
//! SETTINGS and WINDOW_UPDATE are read and ignored (spdystream does no flow control). Header blocks
//! are zlib-compressed with the SPDY/3 dictionary, one compression context per direction for the
//! whole connection.
//!
//! No SPDY crate is kept up to date, and this subset is small, so the framing is written here;
//! zlib (with its preset dictionary) is flate2's.

use std::collections::HashMap;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// Largest frame payload accepted (header blocks and data are far smaller in practice).
const MAX_FRAME: usize = 16 << 20;
/// Largest data frame sent.
const CHUNK: usize = 32 << 10;
/// Largest decompressed header block accepted.
const MAX_HEADERS: usize = 1 << 20;

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed words, then
/// a run of plain text.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str =
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    /// Header names lower-cased, as spdystream sends them.
    pub headers: Vec<(String, String)>,
    data: mpsc::Receiver<Bytes>,
    writer: StreamWriter,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The next data the client sent; None once it half-closed (FIN), reset the stream, or went away.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.data.recv().await
    }

    pub fn writer(&self) -> StreamWriter {
        self.writer.clone()
    }

    pub fn into_parts(self) -> (mpsc::Receiver<Bytes>, StreamWriter) {
        (self.data, self.writer)
    }
}

/// Sends on one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    frames: mpsc::Sender<Vec<u8>>,
}

impl StreamWriter {
    /// Sends `data` (in frames of at most 32 KiB). False once the connection is gone.
    pub async fn send(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            if self.frames.send(data_frame(self.id, 0, chunk)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-closes the stream (an empty data frame with FIN).
    pub async fn close(&self) {
        let _ = self.frames.send(data_frame(self.id, FLAG_FIN, &[])).await;
    }
}

fn data_frame(id: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// Header-block (de)compression state of one connection.
struct Zlib {
    inflate: Decompress,
    deflate: Compress,
    dict: Vec<u8>,
}

impl Zlib {
    fn new() -> Result<Zlib, String> {
        let dict = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&dict).map_err(|e| e.to_string())?;
        Ok(Zlib { inflate: Decompress::new(true), deflate, dict })
    }

    fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADERS {
                    return Err("header block too large".into());
                }
                out.reserve(4096);
            }
            let (in0, out0) = (self.inflate.total_in(), out.len());
            let r = self.inflate.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - in0) as usize;
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let stalled = self.inflate.total_in() == in0 && out.len() == out0;
                    if (pos >= input.len() && out.len() < out.capacity())
                        || (stalled && out.len() < out.capacity())
                    {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dict).map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
        }
        Ok(out)
    }

    fn compress(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let in0 = self.deflate.total_in();
            self.deflate
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| e.to_string())?;
            pos += (self.deflate.total_in() - in0) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut p = 0usize;
    let u32_at = |p: &mut usize| -> Result<usize, String> {
        let b = block.get(*p..*p + 4).ok_or("truncated header block")?;
        *p += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(&mut p)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = u32_at(&mut p)?;
        let name = block.get(p..p + len).ok_or("truncated header name")?;
        p += len;
        let len = u32_at(&mut p)?;
        let value = block.get(p..p + len).ok_or("truncated header value")?;
        p += len;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        // Several values of one header are NUL-separated; the first is the one used here.
        for v in value.split(|b| *b == 0) {
            out.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(out)
}

/// Serves a SPDY/3.1 connection: returns the streams the client opens, in order. The connection
/// ends when the client closes it or sends GOAWAY, or on a protocol error; then every stream's
/// `recv` ends and writes fail.
pub fn serve<IO>(io: IO) -> mpsc::Receiver<Stream>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (new_tx, new_rx) = mpsc::channel(16);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let (mut rd, mut wr) = tokio::io::split(io);
    tokio::spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
            // Write out what is queued before waiting for more.
            if frames_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        if let Err(e) = read_loop(&mut rd, frames_tx, new_tx).await {
            tracing::debug!(error = %e, "spdy connection ended");
        }
    });
    new_rx
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    frames: mpsc::Sender<Vec<u8>>,
    new_streams: mpsc::Sender<Stream>,
) -> Result<(), String> {
    let mut zlib = Zlib::new()?;
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut head = [0u8; 8];
    loop {
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes"));
        }
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if let Some(tx) = open.get(&id) {
                if !payload.is_empty() && tx.send(Bytes::from(payload)).await.is_err() {
                    // The handler has stopped reading this stream.
                    open.remove(&id);
                }
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&id);
            }
            continue;
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(format!("unsupported SPDY version {version}"));
        }
        let id_at = |p: &[u8]| p.get(..4).map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
        match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                let id = id_at(&payload).ok_or("short SYN_STREAM")?;
                let block = payload.get(10..).ok_or("short SYN_STREAM")?;
                let headers = parse_headers(&zlib.decompress(block)?)?;
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, tx);
                }
                let mut reply = id.to_be_bytes().to_vec();
                reply.extend(zlib.compress(&0u32.to_be_bytes())?);
                frames.send(control_frame(SYN_REPLY, 0, &reply)).await.map_err(|_| "connection closed")?;
                let writer = StreamWriter { id, frames: frames.clone() };
                let _ = new_streams.send(Stream { id, headers, data: rx, writer }).await;
            }
            HEADERS => {
                // Decompressed only to keep the zlib context in step.
                if let Some(block) = payload.get(4..) {
                    zlib.decompress(block)?;
                }
            }
            RST_STREAM => {
                if let Some(id) = id_at(&payload) {
                    open.remove(&id);
                }
            }
            PING => {
                let _ = frames.send(control_frame(PING, 0, &payload)).await;
            }
            GOAWAY => return Ok(()),
            _ => {} // SETTINGS, WINDOW_UPDATE, NOOP, CREDENTIAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_one_context() {
        let mut a = Zlib::new().unwrap();
        let mut b = Zlib::new().unwrap();
        for _ in 0..3 {
            let mut block = 2u32.to_be_bytes().to_vec();
            for (k, v) in [("streamtype", "data"), ("port", "80")] {
                block.extend((k.len() as u32).to_be_bytes());
                block.extend(k.as_bytes());
                block.extend((v.len() as u32).to_be_bytes());
                block.extend(v.as_bytes());
            }
            let z = a.compress(&block).unwrap();
            let back = b.decompress(&z).unwrap();
            assert_eq!(
                parse_headers(&back).unwrap(),
                vec![("streamtype".into(), "data".into()), ("port".into(), "80".into())]
            );
        }
    }

    #[test]
    fn truncated_header_blocks_are_errors_not_panics() {
        assert!(parse_headers(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(parse_headers(&[0, 0]).is_err());
        let mut z = Zlib::new().unwrap();
        assert!(z.decompress(&[1, 2, 3, 4, 5]).is_err());
    }
}
