//! Idle upstream connections, kept per worker thread.
//!
//! pingora's pool pays, per reuse, a mutex, an LRU node, a oneshot, a spawned idle-watch
//! task and a `getpeername`. Here a worker keeps a LIFO of idle streams per (upstream,
//! endpoint) in a thread-local map: checking one out is a hash lookup and a pop, and its
//! liveness is read from the readiness the reactor already recorded (a closed or chatty
//! idle connection has become readable), so a quiet connection costs no syscall at all.
//! A connection whose close the reactor has not seen yet fails on its first read; the
//! caller retries that request once on a fresh connection, as nginx does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per endpoint per worker; more are closed when released.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// Which idle connections may serve a request: never shared between upstreams (two may
/// reach one address with different settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub group: u64,
    pub address: SocketAddr,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<CacheKey, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// The most recently released live connection for `key`, if any.
pub fn checkout(key: CacheKey, max_idle: Duration) -> Option<TcpStream> {
    IDLE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let idle = cache.get_mut(&key)?;
        let now = Instant::now();
        while let Some(candidate) = idle.pop() {
            if now.duration_since(candidate.since) >= max_idle {
                // LIFO: everything below is older still.
                idle.clear();
                return None;
            }
            if is_quiet(&candidate.stream) {
                return Some(candidate.stream);
            }
        }
        None
    })
}

/// Keeps a connection whose last exchange ended cleanly for the next request.
pub fn release(key: CacheKey, stream: TcpStream) {
    IDLE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let idle = cache.entry(key).or_default();
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
        idle.push(Idle {
            stream,
            since: Instant::now(),
        });
    })
}

/// Whether an idle connection has nothing to say: the upstream neither closed it nor sent
/// bytes nobody asked for. Reads the reactor's recorded readiness; only a connection
/// marked readable is probed with a (non-blocking) read.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn closed_idle_connections_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let key = CacheKey { group: 1, address };
        let client = TcpStream::connect(address).await.expect("connect");
        let (mut server_side, _) = listener.accept().await.expect("accept");
        release(key, client);
        let live = checkout(key, Duration::from_secs(60)).expect("a quiet connection");
        release(key, live);
        server_side.shutdown().await.expect("shutdown");
        drop(server_side);
        // Let the reactor see the FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(checkout(key, Duration::from_secs(60)).is_none());
    }

    #[tokio::test]
    async fn expired_connections_are_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let key = CacheKey { group: 2, address };
        let client = TcpStream::connect(address).await.expect("connect");
        let _server_side = listener.accept().await.expect("accept");
        release(key, client);
        assert!(checkout(key, Duration::ZERO).is_none());
    }
}
