//! edgegate's own HTTP/2 server loop.
//!
//! pingora-proxy serves each HTTP/2 stream through its per-request session machinery (a
//! task per stream, boxed futures per filter phase, header maps copied between its
//! layers): on a TLS h2load run it cost 2.7x HAProxy's CPU per request. This loop keeps
//! the `h2` crate for framing, HPACK and flow control and does the rest itself:
//!
//! ```text
//! handshake -> accept streams on one task: each stream is a future in a FuturesUnordered
//!   per stream: one snapshot load -> the request core's decision (the same `decide` as
//!   the HTTP/1.1 loop) -> a local answer, or the upstream exchange: over the per-worker
//!   HTTP/1.1 connection cache, or a multiplexed HTTP/2 session per endpoint for `http2`
//!   upstreams (gRPC) -> response head -> body as DATA frames (and trailers), within
//!   the client's flow-control window
//! ```
//!
//! A listener whose routes reach an upstream over TLS keeps its HTTP/2 clients on
//! pingora-proxy, which holds TLS upstream sessions: the choice is made per connection,
//! from the snapshot, when the connection opens.

mod io;
mod stream;
mod upstream_h2;

use stream::StreamEnd;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use pingora::apps::ServerApp;
use pingora::protocols::tls::SslDigest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h1::{ClientIo, ConnectionInfo, Engine};
use crate::config::model::Listener;

/// How long a draining connection with no stream in flight waits for the client to
/// close after GOAWAY (a request may be on the wire) before it is closed.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS): nginx's
/// `http2_max_concurrent_streams` default; HAProxy's is 100.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Per-stream receive window: large enough that an upload is not throttled by round
/// trips on a LAN, small enough that a slow upstream bounds what one stream buffers.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Connection receive window: several streams uploading at once.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes queued per stream towards the client beyond its window (h2's own buffer).
const SEND_BUFFER: usize = 64 * 1024;
/// Decoded header list bound: the same as an HTTP/1.1 head (an HPACK bomb or a
/// CONTINUATION flood ends at this, not in memory).
const MAX_HEADER_LIST: u32 = crate::pipeline::framing::MAX_REQUEST_HEAD as u32;
/// Streams the client reset before the gateway accepted them, at once: past this the
/// connection ends with ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
const MAX_PENDING_RESETS: usize = 20;
/// Streams the client reset while their exchange was under way, past which a connection
/// that resets more streams than it lets finish is closed with ENHANCE_YOUR_CALM.
const MAX_CLIENT_RESETS: u64 = 100;
/// Streams the gateway itself reset for the client's protocol errors over the
/// connection's life, before it gives up on the client.
const MAX_ERROR_RESETS: usize = 1024;

impl<A: ServerApp + Send + Sync + 'static> Engine<A> {
    /// Serves an HTTP/2 connection (ALPN h2, or h2c prior knowledge whose first bytes
    /// were read into `replay`): on this loop, or on pingora-proxy when the listener's
    /// routes need it.
    pub async fn serve_h2<C: ClientIo>(&self, client: C, replay: Bytes, info: ConnectionInfo) {
        let by_pingora = {
            let snapshot = self.core.snapshot.load();
            let listener = snapshot
                .listener_name(info.bound)
                .unwrap_or_else(|| info.listener.clone());
            snapshot.h2_by_pingora.contains(&listener)
        };
        if by_pingora {
            self.hand_over(client, replay, &info, true).await;
            return;
        }
        let tls = client.tls_digest();
        serve(self, Rewind::new(replay, client), info, tls).await;
    }
}

/// The listener's timers for one connection.
struct Timers {
    /// The client preface and SETTINGS must arrive within this.
    handshake: Duration,
    /// With no stream open, the connection closes after this.
    idle: Duration,
}

impl Timers {
    fn of(snapshot: &crate::snapshot::Snapshot, info: &ConnectionInfo) -> Self {
        match snapshot.listener_at(info.bound).map(|l| &l.spec) {
            Some(listener) => Self {
                handshake: listener.header_timeout,
                idle: listener.idle_timeout,
            },
            None => Self {
                handshake: Listener::DEFAULT_HEADER_TIMEOUT,
                idle: Listener::DEFAULT_IDLE_TIMEOUT,
            },
        }
    }
}

fn builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS));
    builder
}

async fn serve<IO, A>(engine: &Engine<A>, io: IO, info: ConnectionInfo, tls: Option<Arc<SslDigest>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: ServerApp + Send + Sync + 'static,
{
    let timers = Timers::of(&engine.core.snapshot.load(), &info);
    let handshake = tokio::time::timeout(timers.handshake, builder().handshake::<_, Bytes>(io));
    let mut connection = match handshake.await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(listener = %info.listener, client = %info.peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(listener = %info.listener, client = %info.peer, "no HTTP/2 preface in time");
            return;
        }
    };
    tracing::debug!(listener = %info.listener, client = %info.peer, "HTTP/2 connection");
    // Looked up once per connection: each stream only moves the gauge.
    let in_flight = engine
        .core
        .metrics
        .requests_in_flight
        .with_label_values(&[&info.listener]);
    let shared = stream::Shared {
        engine,
        info: &info,
        tls: tls.as_ref(),
        in_flight: &in_flight,
    };
    let mut streams = FuturesUnordered::new();
    let mut shutdown = engine.shutdown.clone();
    let mut draining = false;
    let mut closing = false;
    let (mut served, mut resets) = (0u64, 0u64);
    let idle = tokio::time::sleep(timers.idle);
    tokio::pin!(idle);
    if *shutdown.borrow() {
        draining = true;
        connection.graceful_shutdown();
        idle.as_mut()
            .reset(tokio::time::Instant::now() + DRAIN_GRACE);
    }
    loop {
        // Streams first: every stream that can move does (queueing its frames) before
        // the connection is polled again, which reads what came in and writes what was
        // queued. Polled the other way round, a burst of answers would leave as one TLS
        // record and one `send` each.
        tokio::select! {
            biased;
            Some(end) = streams.next(), if !streams.is_empty() => {
                match end {
                    StreamEnd::Refused if !draining => {
                        // A stream this loop does not serve (the routes changed since
                        // the connection opened): the client retries it on a new
                        // connection.
                        draining = true;
                        connection.graceful_shutdown();
                    }
                    StreamEnd::ResetByClient => {
                        resets += 1;
                        if resets > MAX_CLIENT_RESETS && resets * 2 > served {
                            // Rapid reset: most streams are cancelled as soon as they
                            // start work upstream. The connection ends.
                            tracing::warn!(listener = %info.listener, client = %info.peer, resets, served, "HTTP/2 client resets most of its streams; connection closed");
                            closing = true;
                            connection.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        }
                    }
                    _ => {}
                }
                served += 1;
                if streams.is_empty() {
                    let quiet = if draining { DRAIN_GRACE } else { timers.idle };
                    idle.as_mut().reset(tokio::time::Instant::now() + quiet);
                }
            }
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    // Boxed where it is made: the stream's state machine (a few KiB,
                    // every step of the exchange inline) is then written once, to the
                    // heap, not copied again into the set's task.
                    streams.push(Box::pin(stream::serve(&shared, request, respond)));
                }
                Some(Err(e)) => {
                    tracing::debug!(listener = %info.listener, client = %info.peer, error = %e, "HTTP/2 connection ended");
                    break;
                }
                None => break,
            },
            _ = shutdown.changed(), if !draining => {
                // GOAWAY: streams in flight finish, new ones go to a live process.
                draining = true;
                connection.graceful_shutdown();
                if streams.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + DRAIN_GRACE);
                }
            }
            _ = &mut idle, if streams.is_empty() && !closing => {
                // Idle (or drained, and the client has not closed): GOAWAY and close now;
                // no stream is in flight to lose.
                closing = true;
                connection.abrupt_shutdown(h2::Reason::NO_ERROR);
            }
        }
    }
    // The connection is gone: what streams remain cannot be answered any more.
    drop(streams);
}

/// A client connection whose first bytes were already read (the h2c preface the
/// HTTP/1.1 loop recognised): they are read again first.
struct Rewind<C> {
    replay: Bytes,
    inner: C,
}

impl<C> Rewind<C> {
    fn new(replay: Bytes, inner: C) -> Self {
        Self { replay, inner }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Rewind<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            let replayed = self.replay.split_to(n);
            buf.put_slice(&replayed);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Rewind<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
