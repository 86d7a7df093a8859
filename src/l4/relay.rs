//! Bytes both ways between two TCP connections, until both directions end.
//!
//! Each direction ends on its own: an end of stream from one side is passed on as a
//! half-close (`shutdown(Write)`) to the other, which may go on sending (a client that
//! sends its request and closes its half still gets the whole answer). An error on either
//! side, or `idle` with no byte either way, ends both.
//!
//! Two ways to move the bytes, chosen once per process by `EDGEGATE_TCP_RELAY`: `splice`
//! (the default) moves them socket -> pipe -> socket with `splice(2)`, so they never
//! enter user space; `copy` reads into a buffer per direction and writes it out. In a
//! release build on loopback (`benches/tcp.sh splice`) splice moved a GiB at 0.27 CPU
//! seconds against the copy's 0.77 (HAProxy: 0.90), at 1.6x the copy's throughput; it
//! costs about 10% more per short connection (a pipe pair each), so `copy` is kept for
//! workloads of many tiny connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::IntCounter;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::snapshot::pool::now_millis;

/// Per direction. Large enough that a bulk transfer moves in few syscalls, small enough
/// that ten thousand idle relays stay well under a GiB.
const BUFFER: usize = 32 * 1024;

/// How the bytes of a relay move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `read` into a buffer, `write` out of it.
    Copy,
    /// `splice(2)` through a pipe per direction.
    Splice,
}

/// The process's relay mode, from `EDGEGATE_TCP_RELAY` (`splice`, `copy`) at first use.
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let mode = match std::env::var("EDGEGATE_TCP_RELAY").as_deref() {
            Ok("copy") => Mode::Copy,
            Ok("splice") | Err(_) => Mode::Splice,
            Ok(other) => {
                tracing::warn!(
                    value = other,
                    "EDGEGATE_TCP_RELAY is splice or copy; relaying by splice"
                );
                Mode::Splice
            }
        };
        tracing::info!(mode = ?mode, "tcp relay mode");
        mode
    })
}

/// How a relay ended.
#[derive(Debug)]
pub enum Ended {
    /// Both sides closed their halves.
    Closed,
    Idle,
    Failed(std::io::Error),
}

pub async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    idle: Duration,
    to_upstream: &IntCounter,
    to_client: &IntCounter,
) -> Ended {
    let activity = AtomicU64::new(now_millis());
    if mode() == Mode::Splice {
        let both = async {
            tokio::try_join!(
                splice_pipe(&client, &upstream, &activity, to_upstream),
                splice_pipe(&upstream, &client, &activity, to_client),
            )
        };
        return tokio::select! {
            result = both => match result {
                Ok(_) => Ended::Closed,
                Err(e) => Ended::Failed(e),
            },
            () = idle_for(&activity, idle) => Ended::Idle,
        };
    }
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let both = async {
        tokio::try_join!(
            pipe(client_read, upstream_write, &activity, to_upstream),
            pipe(upstream_read, client_write, &activity, to_client),
        )
    };
    tokio::select! {
        result = both => match result {
            Ok(_) => Ended::Closed,
            Err(e) => Ended::Failed(e),
        },
        () = idle_for(&activity, idle) => Ended::Idle,
    }
}

async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    activity: &AtomicU64,
    counter: &IntCounter,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close passed on; the other direction carries on.
            return match to.shutdown().await {
                Ok(()) => Ok(()),
                // The other side already went away entirely: nothing left to tell it.
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
                Err(e) => Err(e),
            };
        }
        activity.store(now_millis(), Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
        counter.inc_by(n as u64);
    }
}

/// What one `splice` call may move: the default pipe's capacity.
const SPLICE_CHUNK: usize = 64 * 1024;

/// One direction by `splice(2)`: `from` -> pipe -> `to`. The pipe is drained before it
/// is filled again, so an `EAGAIN` always means the socket side is not ready, which is
/// what tokio's readiness needs to be told.
async fn splice_pipe(
    from: &TcpStream,
    to: &TcpStream,
    activity: &AtomicU64,
    counter: &IntCounter,
) -> std::io::Result<()> {
    let (pipe_out, pipe_in) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    from,
                    None,
                    &pipe_in,
                    None,
                    SPLICE_CHUNK,
                    flags,
                )?)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // Half-close passed on; the other direction carries on.
            return match rustix::net::shutdown(to, rustix::net::Shutdown::Write) {
                Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        activity.store(now_millis(), Ordering::Relaxed);
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(rustix::pipe::splice(
                    &pipe_out, None, to, None, left, flags,
                )?)
            }) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counter.inc_by(n as u64);
    }
}

/// Resolves once `idle` passes with no byte relayed either way.
async fn idle_for(activity: &AtomicU64, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let quiet = now_millis().saturating_sub(activity.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}
