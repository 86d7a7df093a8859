//! HTTP/2 to upstreams (`http2 = true`, gRPC): one multiplexed connection per endpoint per
//! worker, streams relayed both ways at once with flow control on both sides, trailers
//! passed on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};

use super::io::PumpError;
use crate::serving::h1::body::Limits;
use crate::serving::h1::forward::{connect, Failure};
use crate::serving::h1::upstream_cache::CacheKey;

thread_local! {
    /// The worker's HTTP/2 sessions: a stream on one costs no connect, no handshake and
    /// no lock.
    static SESSIONS: RefCell<HashMap<CacheKey, SendRequest<Bytes>>> = RefCell::new(HashMap::new());
}

/// Window sizes towards the upstream: a 4 MiB gRPC message crosses in a few round trips.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// A session ready for one more stream: the worker's open one, or a new connection.
/// `reused` says which, so a failure on a reused one can be tried once on a fresh one.
pub async fn session(
    key: CacheKey,
    fresh: bool,
    connect_timeout: Duration,
) -> Result<(SendRequest<Bytes>, bool), Failure> {
    let cached = if fresh {
        None
    } else {
        SESSIONS.with(|s| s.borrow().get(&key).cloned())
    };
    if let Some(session) = cached {
        match session.ready().await {
            Ok(ready) => return Ok((ready, true)),
            Err(e) => {
                tracing::debug!(endpoint = %key.address, error = %e, "HTTP/2 upstream session closed; reconnecting");
                SESSIONS.with(|s| s.borrow_mut().remove(&key));
            }
        }
    }
    let stream = connect(key.address, connect_timeout).await?;
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(stream);
    let (session, connection) = match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(Failure::Reset(std::io::Error::other(e))),
        Err(_) => return Err(Failure::ConnectTimeout),
    };
    let address = key.address;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(endpoint = %address, error = %e, "HTTP/2 upstream connection ended");
        }
    });
    SESSIONS.with(|s| s.borrow_mut().insert(key, session.clone()));
    let ready = session
        .ready()
        .await
        .map_err(|e| Failure::Reset(std::io::Error::other(e)))?;
    Ok((ready, false))
}

/// Sends `data` on `send` as the peer's window allows, waiting for window as it opens.
pub async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let mut granted = send.capacity();
        while granted == 0 {
            match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => granted = n.max(send.capacity()),
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            }
        }
        let piece = data.split_to(granted.min(data.len()));
        send.send_data(piece, false)?;
    }
    Ok(())
}

/// Relays one HTTP/2 body with its trailers: each piece's window is given back to the
/// sender only once the receiver took it. Returns the body bytes moved.
/// `copy`, when given, is fed every piece (a request's mirror copy).
pub async fn relay(
    from: &mut RecvStream,
    to: &mut SendStream<Bytes>,
    read_limit: Duration,
    max_size: Option<u64>,
    limits: Limits,
    mut copy: Option<&mut crate::pipeline::mirror::Copy>,
) -> Result<u64, PumpError> {
    let mut moved = 0u64;
    loop {
        let wait = limits.read_limit().min(read_limit);
        let Some(data) = super::io::next_data(from, wait, &limits).await? else {
            break;
        };
        let len = data.len();
        if let Some(copy) = copy.as_deref_mut() {
            copy.feed(&data);
        }
        moved += len as u64;
        if max_size.is_some_and(|max| moved > max) {
            return Err(PumpError::TooLarge);
        }
        let sent = tokio::time::timeout(limits.write_limit(), send_all(to, data)).await;
        match sent {
            Err(_) => return Err(PumpError::UpstreamWriteTimeout),
            Ok(Err(e)) => return Err(PumpError::UpstreamWrite(std::io::Error::other(e))),
            Ok(Ok(())) => {}
        }
        let _ = from.flow_control().release_capacity(len);
    }
    let trailers = tokio::time::timeout(read_limit, from.trailers()).await;
    let ended = match trailers {
        Ok(Ok(Some(trailers))) => to.send_trailers(trailers),
        Ok(Ok(None)) => to.send_data(Bytes::new(), true),
        Err(_) | Ok(Err(_)) => return Err(PumpError::ClientGone),
    };
    ended.map_err(|e| PumpError::UpstreamWrite(std::io::Error::other(e)))?;
    Ok(moved)
}
