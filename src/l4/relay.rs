//! Bytes both ways between two TCP connections, until both directions end.
//!
//! Each direction ends on its own: an end of stream from one side is passed on as a
//! half-close (`shutdown(Write)`) to the other, which may go on sending (a client that
//! sends its request and closes its half still gets the whole answer). An error on either
//! side, or `idle` with no byte either way, ends both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::snapshot::pool::now_millis;

/// Per direction. Large enough that a bulk transfer moves in few syscalls, small enough
/// that ten thousand idle relays stay well under a GiB.
const BUFFER: usize = 32 * 1024;

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
