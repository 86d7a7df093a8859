//! Moving a body from one side to the other, framed as its head declared, through the
//! connection's reused buffers. Chunked bodies pass through the strict decoder and are
//! re-framed on the way out, so what the receiver reads is exactly what was decoded.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{ChunkError, ChunkedDecoder, Event};
use super::head::Framing;

/// Output gathered before it is written: small bodies leave with their head in one send.
pub const COALESCE: usize = 16 * 1024;
/// Read size while streaming a body.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub enum BodyError {
    /// The sender stopped before the body ended, or its read failed.
    Read(std::io::Error),
    ReadTimeout,
    /// The receiver went away or its write failed.
    Write(std::io::Error),
    WriteTimeout,
    Framing(ChunkError),
    /// The body grew past the route's `max_body_size`.
    TooLarge,
    /// The upstream started answering while the request body was still being sent.
    Interrupted,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "read failed: {e}"),
            BodyError::ReadTimeout => write!(f, "read timed out"),
            BodyError::Write(e) => write!(f, "write failed: {e}"),
            BodyError::WriteTimeout => write!(f, "write timed out"),
            BodyError::Framing(e) => write!(f, "{}", e.reason()),
            BodyError::TooLarge => write!(f, "body too large"),
            BodyError::Interrupted => write!(f, "interrupted by an early response"),
        }
    }
}

/// Writes all of `bytes` and flushes: a TLS stream (and the write buffer under it) holds
/// what it was given until flushed; on a plain socket the flush costs nothing.
pub async fn send<W: AsyncWrite + Unpin>(dst: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    dst.write_all(bytes).await?;
    dst.flush().await
}

/// How long a client may take to accept the next piece of what is written to it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// [`send`] to a client, bounded by [`CLIENT_TIMEOUT`].
pub async fn send_in_time<W: AsyncWrite + Unpin>(dst: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(CLIENT_TIMEOUT, send(dst, bytes))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Time limits of one direction: each read and write may wait `per_op`, and nothing may
/// run past `deadline` (the route's total timeout).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub read: Duration,
    pub write: Duration,
    pub deadline: Option<Instant>,
}

impl Limits {
    fn cap(&self, d: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => d.min(deadline.saturating_duration_since(Instant::now())),
            None => d,
        }
    }

    pub fn read_limit(&self) -> Duration {
        self.cap(self.read)
    }

    pub fn write_limit(&self) -> Duration {
        self.cap(self.write)
    }
}

/// How the body is written to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// As received: lengths stay lengths, close-delimited stays close-delimited.
    Same,
    /// A chunked body decoded to its bytes (for an HTTP/1.0 client, which ends at close).
    Dechunked,
    /// The body's bytes and nothing else, encoded ones included: the receiver frames
    /// them itself (HTTP/2 DATA frames).
    Bare,
}

/// Something that, when ready, stops a request body transfer (the upstream answering
/// early).
pub trait Interrupt {
    fn ready(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// Never interrupts.
pub struct Never;

impl Interrupt for Never {
    async fn ready(&self) {
        std::future::pending::<()>().await
    }
}

/// The upstream answering while the request body streams. An interim response (a 1xx
/// other than 101: `100 Continue`, `103 Early Hints`) is not an answer: it is read off the
/// connection and dropped, and the body keeps streaming. Anything else (a final answer,
/// a close) interrupts.
impl Interrupt for tokio::net::tcp::ReadHalf<'_> {
    async fn ready(&self) {
        let stream: &tokio::net::TcpStream = self.as_ref();
        let mut peeked = [0u8; 2048];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            let n = match stream.peek(&mut peeked).await {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let Some(len) = interim_head_len(&peeked[..n]) else {
                return;
            };
            let mut left = len;
            while left > 0 {
                match stream.try_read(&mut peeked[..left]) {
                    Ok(read) if read > 0 => left -= read,
                    _ => return,
                }
            }
            tracing::debug!(
                bytes = len,
                "dropped an interim response while the request body streams"
            );
        }
    }
}

/// The length of a complete interim response head (1xx but 101) at the start of `bytes`.
fn interim_head_len(bytes: &[u8]) -> Option<usize> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(len))
            if response
                .code
                .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
        {
            Some(len)
        }
        _ => None,
    }
}

pub struct Transfer<'a> {
    pub buf: &'a mut BytesMut,
    pub out: &'a mut Vec<u8>,
    pub limits: Limits,
    pub max_size: Option<u64>,
    /// Encodes the body (route `compress`): each piece read is encoded, flushed and sent
    /// as a chunk, so the output is chunked whatever the input's framing (pass
    /// `Output::Dechunked` so the input's own chunk framing is not copied).
    pub encoder: Option<crate::pipeline::compress::Encoder>,
    /// Receives a copy of each piece of body as it passes (a route's mirror).
    pub tap: Option<&'a mut crate::pipeline::mirror::Copy>,
}

impl Transfer<'_> {
    /// Copies one body from `src` to `dst`; `buf` holds bytes already read from `src`,
    /// and `out` bytes already due to `dst` (a head), written before the body. Returns the
    /// number of body bytes delivered. Bytes after the body stay in `buf`.
    pub async fn copy<R, W, I>(
        &mut self,
        src: &mut R,
        dst: &mut W,
        framing: Framing,
        output: Output,
        interrupt: &I,
    ) -> Result<u64, BodyError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        I: Interrupt,
    {
        let mut delivered = 0u64;
        match framing {
            Framing::None => {}
            Framing::Length(mut remaining) => {
                if self.max_size.is_some_and(|max| remaining > max) {
                    return Err(BodyError::TooLarge);
                }
                loop {
                    let take = (self.buf.len() as u64).min(remaining) as usize;
                    if take > 0 {
                        self.emit(dst, take, output, interrupt).await?;
                        remaining -= take as u64;
                        delivered += take as u64;
                    }
                    if remaining == 0 {
                        break;
                    }
                    self.refill(src, dst, interrupt, true).await?;
                }
            }
            Framing::UntilClose => loop {
                let take = self.buf.len();
                if take > 0 {
                    self.emit(dst, take, output, interrupt).await?;
                    delivered += take as u64;
                }
                if !self.refill(src, dst, interrupt, false).await? {
                    break;
                }
            },
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                let mut trailers_started = false;
                loop {
                    let (event, consumed) =
                        decoder.step(&self.buf[..]).map_err(BodyError::Framing)?;
                    match event {
                        Some(Event::Data { offset, len }) => {
                            delivered += len as u64;
                            if self.max_size.is_some_and(|max| delivered > max) {
                                return Err(BodyError::TooLarge);
                            }
                            self.buf.advance(offset);
                            if output == Output::Same {
                                self.out
                                    .extend_from_slice(format!("{len:x}\r\n").as_bytes());
                            }
                            self.emit(dst, len, output, interrupt).await?;
                            if output == Output::Same {
                                self.out.extend_from_slice(b"\r\n");
                            }
                            self.buf.advance(consumed - offset - len);
                            continue;
                        }
                        Some(Event::Trailer { offset, len }) => {
                            if output == Output::Same {
                                if !trailers_started {
                                    self.out.extend_from_slice(b"0\r\n");
                                    trailers_started = true;
                                }
                                self.out.extend_from_slice(&self.buf[offset..offset + len]);
                                self.out.extend_from_slice(b"\r\n");
                            }
                        }
                        Some(Event::End) => {
                            if output == Output::Same {
                                if !trailers_started {
                                    self.out.extend_from_slice(b"0\r\n");
                                }
                                self.out.extend_from_slice(b"\r\n");
                            }
                            self.buf.advance(consumed);
                            break;
                        }
                        None => {
                            self.buf.advance(consumed);
                            self.refill(src, dst, interrupt, true).await?;
                            continue;
                        }
                    }
                    self.buf.advance(consumed);
                }
            }
        }
        if let Some(encoder) = self.encoder.take() {
            let last = encoder.finish().map_err(BodyError::Write)?;
            if output == Output::Bare {
                self.out.extend_from_slice(&last);
            } else {
                self.chunk(&last);
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        self.flush(dst, interrupt).await?;
        Ok(delivered)
    }

    /// One chunk of encoded bytes, due to the receiver (nothing for no bytes: a zero
    /// length chunk would end the body).
    fn chunk(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.out
                .extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
            self.out.extend_from_slice(bytes);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Moves the first `len` bytes of `buf` towards `dst`: gathered in `out` while small,
    /// written straight from `buf` when large.
    async fn emit<W: AsyncWrite + Unpin, I: Interrupt>(
        &mut self,
        dst: &mut W,
        len: usize,
        output: Output,
        interrupt: &I,
    ) -> Result<(), BodyError> {
        if let Some(tap) = self.tap.as_deref_mut() {
            tap.feed(&self.buf[..len]);
        }
        if let Some(encoder) = self.encoder.as_mut() {
            let encoded = encoder.push(&self.buf[..len]).map_err(BodyError::Write)?;
            self.buf.advance(len);
            if output == Output::Bare {
                self.out.extend_from_slice(&encoded);
            } else {
                self.chunk(&encoded);
            }
            if self.out.len() >= COALESCE {
                self.flush(dst, interrupt).await?;
            }
            return Ok(());
        }
        if self.out.len() + len <= COALESCE {
            self.out.extend_from_slice(&self.buf[..len]);
        } else {
            self.flush(dst, interrupt).await?;
            write(dst, &self.buf[..len], self.limits, interrupt).await?;
        }
        self.buf.advance(len);
        Ok(())
    }

    pub async fn flush<W: AsyncWrite + Unpin, I: Interrupt>(
        &mut self,
        dst: &mut W,
        interrupt: &I,
    ) -> Result<(), BodyError> {
        if !self.out.is_empty() {
            write(dst, self.out, self.limits, interrupt).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes what is due, then reads more into `buf`. `false` at a clean end of input
    /// when `required` is false; an early end is an error when it is true.
    async fn refill<R, W, I>(
        &mut self,
        src: &mut R,
        dst: &mut W,
        interrupt: &I,
        required: bool,
    ) -> Result<bool, BodyError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        I: Interrupt,
    {
        self.flush(dst, interrupt).await?;
        if self.buf.is_empty() {
            self.buf.clear();
        }
        self.buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(self.limits.read_limit(), src.read_buf(self.buf));
        let n = tokio::select! {
            biased;
            n = read => n.map_err(|_| BodyError::ReadTimeout)?.map_err(BodyError::Read)?,
            _ = interrupt.ready() => return Err(BodyError::Interrupted),
        };
        if n == 0 {
            if required {
                return Err(BodyError::Read(std::io::ErrorKind::UnexpectedEof.into()));
            }
            return Ok(false);
        }
        Ok(true)
    }
}

async fn write<W: AsyncWrite + Unpin, I: Interrupt>(
    dst: &mut W,
    bytes: &[u8],
    limits: Limits,
    interrupt: &I,
) -> Result<(), BodyError> {
    let written = tokio::time::timeout(limits.write_limit(), send(dst, bytes));
    tokio::select! {
        biased;
        r = written => r.map_err(|_| BodyError::WriteTimeout)?.map_err(BodyError::Write),
        _ = interrupt.ready() => Err(BodyError::Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        framing: Framing,
        output: Output,
        input: &[u8],
    ) -> (Result<u64, String>, Vec<u8>, Vec<u8>) {
        let mut src = input;
        let mut dst: Vec<u8> = Vec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut transfer = Transfer {
            buf: &mut buf,
            out: &mut out,
            limits: Limits {
                read: Duration::from_secs(1),
                write: Duration::from_secs(1),
                deadline: None,
            },
            max_size: Some(1 << 20),
            encoder: None,
            tap: None,
        };
        let result = transfer
            .copy(&mut src, &mut dst, framing, output, &Never)
            .await
            .map_err(|e| format!("{e:?}"));
        (result, dst, buf.to_vec())
    }

    #[tokio::test]
    async fn chunked_bodies_are_reframed_without_extensions() {
        let (n, dst, left) = run(
            Framing::Chunked,
            Output::Same,
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\nNEXT",
        )
        .await;
        assert_eq!(n, Ok(5));
        assert_eq!(dst, b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n");
        assert_eq!(left, b"NEXT");
        let (n, dst, _) = run(
            Framing::Chunked,
            Output::Dechunked,
            b"3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!((n, dst), (Ok(3), b"abc".to_vec()));
    }

    #[tokio::test]
    async fn length_bodies_stop_at_their_length() {
        let (n, dst, left) = run(Framing::Length(3), Output::Same, b"abcGET").await;
        assert_eq!((n, dst, left), (Ok(3), b"abc".to_vec(), b"GET".to_vec()));
        let (n, _, _) = run(Framing::Length(5), Output::Same, b"abc").await;
        assert!(n.is_err(), "a short body is an error");
        let (n, _, _) = run(Framing::Length(2 << 20), Output::Same, b"abc").await;
        assert_eq!(n, Err("TooLarge".to_string()));
    }
}
