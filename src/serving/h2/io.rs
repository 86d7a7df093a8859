//! Bodies between HTTP/2 streams and HTTP/1.1 upstream connections, within flow control.

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::serving::h1::body::Limits;

/// A stream's DATA frames as a writer, so the HTTP/1.1 loop's body transfer (chunked
/// decoding, compression, time limits) serves HTTP/2 clients as well. A write takes no
/// more than the client's window grants: a client that stops reading stops the upstream
/// read, and nothing queues without bound (a zero window held forever ends at the
/// transfer's write limit).
pub struct DataWriter<'a> {
    pub send: &'a mut SendStream<Bytes>,
}

fn stream_error(e: h2::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, e)
}

impl AsyncWrite for DataWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let granted = this.send.capacity();
            if granted > 0 {
                let n = granted.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(stream_error)?;
                return Poll::Ready(Ok(n));
            }
            this.send.reserve_capacity(buf.len());
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(stream_error(e))),
                None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Why a body stopped moving.
#[derive(Debug)]
pub enum PumpError {
    /// The client reset the stream or stopped sending for too long.
    ClientGone,
    /// The route's budget ran out while the client was still sending.
    RouteTimeout,
    TooLarge,
    UpstreamWrite(std::io::Error),
    UpstreamWriteTimeout,
}

/// Reads a whole small body (`expected` bytes, the declared length) before the upstream
/// is chosen, so it rides with the head and can be sent again on a retry.
pub async fn read_whole(
    body: &mut RecvStream,
    expected: usize,
    limit: Duration,
) -> Result<Vec<u8>, PumpError> {
    let mut whole = Vec::with_capacity(expected);
    let read = async {
        while let Some(data) = body.data().await {
            let data = data.map_err(|_| PumpError::ClientGone)?;
            whole.extend_from_slice(&data);
            let _ = body.flow_control().release_capacity(data.len());
        }
        Ok(())
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| PumpError::ClientGone)??;
    Ok(whole)
}

/// Streams the rest of a request body to the upstream: as it is for a declared length,
/// as chunks otherwise. The window is given back only once a piece is written, so a slow
/// upstream slows the client instead of filling the gateway's memory.
pub async fn pump<W: AsyncWrite + Unpin>(
    body: &mut RecvStream,
    upstream: &mut W,
    chunked: bool,
    max_size: Option<u64>,
    client_limit: Duration,
    limits: Limits,
    // Receives a copy of each piece as it passes (a route's mirror).
    mut tap: Option<&mut crate::pipeline::mirror::Copy>,
) -> Result<u64, PumpError> {
    let mut sent = 0u64;
    let mut frame = Vec::with_capacity(16);
    loop {
        let wait = limits
            .deadline
            .map_or(client_limit, |_| limits.read_limit().min(client_limit));
        let Some(data) = next_data(body, wait, &limits).await? else {
            break;
        };
        if data.is_empty() {
            // An empty DATA frame (often the one that ends the stream): as a chunk, it
            // would end the body early.
            continue;
        }
        sent += data.len() as u64;
        if max_size.is_some_and(|max| sent > max) {
            return Err(PumpError::TooLarge);
        }
        if let Some(tap) = tap.as_deref_mut() {
            tap.feed(&data);
        }
        let write = async {
            if chunked {
                frame.clear();
                let _ = write!(frame, "{:x}\r\n", data.len());
                upstream.write_all(&frame).await?;
                upstream.write_all(&data).await?;
                upstream.write_all(b"\r\n").await
            } else {
                upstream.write_all(&data).await
            }
        };
        match tokio::time::timeout(limits.write_limit(), write).await {
            Err(_) => return Err(PumpError::UpstreamWriteTimeout),
            Ok(Err(e)) => return Err(PumpError::UpstreamWrite(e)),
            Ok(Ok(())) => {}
        }
        let _ = body.flow_control().release_capacity(data.len());
    }
    if chunked {
        let end = upstream.write_all(b"0\r\n\r\n");
        match tokio::time::timeout(limits.write_limit(), end).await {
            Err(_) => return Err(PumpError::UpstreamWriteTimeout),
            Ok(Err(e)) => return Err(PumpError::UpstreamWrite(e)),
            Ok(Ok(())) => {}
        }
    }
    Ok(sent)
}

/// The next DATA piece of `body` within `wait`; `None` at its end. A wait that ran into
/// the route's deadline is the route's timeout; any other silence or a reset means the
/// sender is gone.
pub async fn next_data(
    body: &mut RecvStream,
    wait: Duration,
    limits: &Limits,
) -> Result<Option<Bytes>, PumpError> {
    match tokio::time::timeout(wait, body.data()).await {
        Err(_)
            if limits
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d) =>
        {
            Err(PumpError::RouteTimeout)
        }
        Err(_) | Ok(Some(Err(_))) => Err(PumpError::ClientGone),
        Ok(None) => Ok(None),
        Ok(Some(Ok(data))) => Ok(Some(data)),
    }
}
