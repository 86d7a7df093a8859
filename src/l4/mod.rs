//! Layer 4: connections relayed whole to an upstream member, never parsed: every
//! connection of a `protocol = "tcp"` listener, and the TLS connections whose ClientHello
//! names a passthrough route (the backend terminates TLS, so the client sees the
//! backend's certificate). Also the PROXY protocol, which any listener may require.
//!
//! A relayed connection holds the snapshot it was routed by only until its upstream
//! connection is open; from then on it depends on no config, so a reload never cuts it.

pub mod client_hello;
pub mod explain;
pub mod proxy_protocol;
pub mod relay;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::model::{Name, TcpRoute};
use crate::snapshot::pool::Pool;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;

/// One connection to relay: where it came from and which route took it.
pub struct Connection<'a> {
    pub listener: &'a Name,
    pub route: Arc<TcpRoute>,
    /// The client: the TCP peer, or the PROXY header's source.
    pub client: SocketAddr,
    pub snapshot: Arc<Snapshot>,
    pub metrics: &'a Metrics,
}

/// Connects to a member of the route's upstream and relays until both sides are done.
pub async fn serve(conn: Connection<'_>, client: TcpStream) {
    let route = conn.route.clone();
    let Some(pool) = conn.snapshot.pools.get(&route.upstream).cloned() else {
        return;
    };
    let idle = conn
        .snapshot
        .config
        .listeners
        .iter()
        .find(|l| l.name == *conn.listener)
        .map_or(crate::config::model::Listener::DEFAULT_IDLE_TIMEOUT, |l| {
            l.idle_timeout
        });
    let metrics = conn.metrics;
    metrics
        .tcp_connections
        .with_label_values(&[conn.listener, &route.name, &route.upstream])
        .inc();
    // Where the client connected: the PROXY destination sent upstream.
    let local = client
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let Some((upstream, member)) = connect(&pool, conn.client, local, metrics).await else {
        tracing::warn!(route = %route.name, upstream = %route.upstream, client = %conn.client, "no member of the upstream took the connection; closing it");
        return;
    };
    // From here on the relay needs nothing of the config.
    drop(conn.snapshot);
    let state = pool
        .members
        .iter()
        .find(|m| m.endpoint.address == member)
        .map(|m| m.state.clone());
    let _in_flight = state.as_ref().map(|s| s.start_request());
    let active = metrics
        .tcp_connections_active
        .with_label_values(&[conn.listener]);
    active.inc();
    let to_upstream = metrics
        .tcp_bytes
        .with_label_values(&[&route.name, "upstream"]);
    let to_client = metrics
        .tcp_bytes
        .with_label_values(&[&route.name, "downstream"]);
    let ended = relay::relay(client, upstream, idle, &to_upstream, &to_client).await;
    active.dec();
    match ended {
        relay::Ended::Closed => {}
        relay::Ended::Idle => {
            tracing::debug!(route = %route.name, client = %conn.client, endpoint = %member, "relay idle past idle_timeout; closed")
        }
        relay::Ended::Failed(e) => {
            tracing::debug!(route = %route.name, client = %conn.client, endpoint = %member, error = %e, "relay ended by an error")
        }
    }
}

/// Opens a connection to a member, skipping members that refuse (or time out) within the
/// upstream's `retries`, and sends the PROXY header when the upstream asks for one.
async fn connect(
    pool: &Pool,
    client: SocketAddr,
    local: SocketAddr,
    metrics: &Metrics,
) -> Option<(TcpStream, SocketAddr)> {
    let upstream = &pool.upstream;
    let hash_key = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        client.ip().to_canonical().hash(&mut hasher);
        hasher.finish()
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    for attempt in 0..=upstream.retries {
        let member = pool.select(&tried, hash_key)?;
        let address = member.endpoint.address;
        if attempt > 0 {
            metrics
                .upstream_retries
                .with_label_values(&[pool.name()])
                .inc();
        }
        let connected =
            tokio::time::timeout(upstream.connect_timeout, TcpStream::connect(address)).await;
        let error = match connected {
            Ok(Ok(mut tcp)) => {
                let _ = tcp.set_nodelay(true);
                match upstream.send_proxy_protocol {
                    None => {
                        note_outcome(pool, address, true, metrics);
                        return Some((tcp, address));
                    }
                    Some(version) => {
                        let header = proxy_protocol::build_header(version, client, local);
                        match tcp.write_all(&header).await {
                            Ok(()) => {
                                note_outcome(pool, address, true, metrics);
                                return Some((tcp, address));
                            }
                            Err(e) => e.to_string(),
                        }
                    }
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_string(),
        };
        metrics
            .upstream_connect_failures
            .with_label_values(&[pool.name(), &member.label])
            .inc();
        note_outcome(pool, address, false, metrics);
        tracing::info!(upstream = %pool.name(), endpoint = %address, error = %error, "connect to endpoint failed");
        tried.push(address);
    }
    None
}

fn note_outcome(pool: &Pool, address: SocketAddr, ok: bool, metrics: &Metrics) {
    if let Some(duration) = pool.record_outcome(address, ok) {
        metrics.ejections.with_label_values(&[pool.name()]).inc();
        tracing::warn!(upstream = %pool.name(), endpoint = %address, ejected_for = ?duration, "endpoint ejected after consecutive failures");
    }
}
