//! Write coalescing for accepted connections.
//!
//! pingora's own listeners give each accepted stream a small write buffer (one segment)
//! so a response head and a small body leave in one `send`; that setter is crate-private,
//! and streams built from a `TcpStream` write through unbuffered. This wrapper restores the
//! buffer: writes gather until pingora flushes (it flushes wherever its own buffered
//! streams need it) or the buffer fills. On loopback every extra `send` also pays for
//! waking the receiver, so this is a large share of per-request CPU.
//!
//! It also replays bytes already read: when edgegate's own HTTP/1.1 loop hands a
//! connection to pingora mid-stream (an upgrade, an HTTP/2 or TLS upstream), the request
//! head it read comes first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, IO,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One TCP segment on a typical path, as pingora's default.
const WRITE_BUFFER: usize = 1460;

#[derive(Debug)]
pub struct BufferedIo<S = L4Stream> {
    inner: S,
    /// Bytes read before the hand-over, served to the reader first.
    replay: bytes::Bytes,
    /// The connection opened with the HTTP/2 preface (h2c prior knowledge); reported as
    /// ALPN h2 so pingora serves it as HTTP/2 without peeking itself.
    h2c: bool,
    pending: Vec<u8>,
    /// How much of `pending` has been written out during the current flush.
    written: usize,
}

impl<S: IO> BufferedIo<S> {
    pub fn new(inner: S, h2c: bool) -> Self {
        Self::replaying(inner, h2c, bytes::Bytes::new())
    }

    pub fn replaying(inner: S, h2c: bool, replay: bytes::Bytes) -> Self {
        Self {
            inner,
            replay,
            h2c,
            pending: Vec::new(),
            written: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: IO> AsyncRead for BufferedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: IO> AsyncWrite for BufferedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.len() + buf.len() > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        if buf.len() >= WRITE_BUFFER {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: IO> Shutdown for BufferedIo<S> {
    async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        self.inner.shutdown().await
    }
}

impl<S: IO> UniqueID for BufferedIo<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: IO> Ssl for BufferedIo<S> {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        if self.h2c {
            return Some(pingora::protocols::ALPN::H2);
        }
        self.inner.selected_alpn_proto()
    }
}

impl<S: IO> GetTimingDigest for BufferedIo<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl<S: IO> GetProxyDigest for BufferedIo<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl<S: IO> GetSocketDigest for BufferedIo<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl<S: IO> Peek for BufferedIo<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.len());
            buf[..n].copy_from_slice(&self.replay[..n]);
            return Ok(n == buf.len());
        }
        self.inner.try_peek(buf).await
    }
}

/// Names the connection's peer and listening address for pingora: the listening address,
/// not the connection's own, is how a handed-over request finds its listener (and so its
/// routes).
pub(crate) fn record_addresses(
    stream: &mut pingora::protocols::l4::stream::Stream,
    peer: std::net::SocketAddr,
    bound: std::net::SocketAddr,
) {
    let digest =
        pingora::protocols::SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(stream));
    let _ = digest.peer_addr.set(Some(peer.into()));
    let _ = digest.local_addr.set(Some(bound.into()));
    pingora::protocols::GetSocketDigest::set_socket_digest(stream, digest);
}
