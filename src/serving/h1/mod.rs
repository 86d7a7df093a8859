//! edgegate's own HTTP/1.1 proxy loop.
//!
//! pingora-proxy spends, per request, a boxed future per filter phase, fresh buffers and
//! header maps, a channel pair between the two halves and a task per idle upstream
//! connection; a bare pingora proxy costs about twice nginx's CPU. This loop serves the
//! common case straight-line instead, one connection at a time:
//!
//! ```text
//! read head (reused buffer) -> one snapshot load -> route -> check out an idle upstream
//! connection (thread-local, no lock, no syscall) -> write head (+ small body) in one send
//! -> stream the body -> read the response -> write it -> release the connection -> loop
//! ```
//!
//! Every decision is the request core's ([`crate::pipeline`]); this loop renders it into
//! bytes. Anything it does not take (a WebSocket upgrade, an upstream over TLS or
//! HTTP/2) is handed to pingora-proxy with the bytes already read replayed first, and the
//! core decides again there the same way; HTTP/2 clients never enter here.

pub(crate) mod body;
pub mod chunked;
mod connection;
mod exchange;
pub(crate) mod forward;
pub mod head;
mod reply;
pub mod upstream_cache;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Ssl;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::model::Name;
use crate::pipeline::Core;
use crate::serving::buffered_io::BufferedIo;

pub use connection::serve;

/// Where a connection came from and arrived.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub listener: Name,
    pub peer: SocketAddr,
    /// The listening address (it names the listener to pingora after a hand-over).
    pub bound: SocketAddr,
    pub tls: bool,
}

impl ConnectionInfo {
    /// A request's context on this connection. It is named by the request's snapshot (a
    /// listener renamed by a reload is matched against the new routes under its new
    /// name) and counted in the connection's in-flight gauge, looked up once when the
    /// connection opened, unless that rename happened since.
    pub fn request_context(
        &self,
        core: &Core,
        snapshot: Arc<crate::snapshot::Snapshot>,
        in_flight: &prometheus::IntGauge,
    ) -> crate::pipeline::RequestContext {
        let listener = snapshot
            .listener_name(self.bound)
            .unwrap_or_else(|| self.listener.clone());
        let mut ctx = crate::pipeline::RequestContext::new(snapshot, listener);
        let gauge = if ctx.listener == self.listener {
            in_flight.clone()
        } else {
            core.metrics
                .requests_in_flight
                .with_label_values(&[&ctx.listener])
        };
        ctx.in_flight_gauge = Some(crate::pipeline::InFlightGauge::enter(gauge));
        ctx.downstream_tls = self.tls;
        ctx
    }
}

/// What the loop needs of the proxy around it.
pub struct Engine<A> {
    pub core: Core,
    /// pingora-proxy, for what the loop hands over.
    pub fallback: Arc<A>,
    pub shutdown: ShutdownWatch,
}

/// A client connection the loop can serve and, when needed, hand to pingora.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The TLS session (client certificate) of a TLS connection.
    fn tls_digest(&self) -> Option<Arc<SslDigest>>;

    /// The connection as a pingora stream that reads `replay` first; `h2c` when it
    /// opened with the HTTP/2 preface.
    fn into_pingora(
        self,
        replay: Bytes,
        info: &ConnectionInfo,
        h2c: bool,
    ) -> pingora::protocols::Stream;
}

impl ClientIo for tokio::net::TcpStream {
    fn tls_digest(&self) -> Option<Arc<SslDigest>> {
        None
    }

    fn into_pingora(
        self,
        replay: Bytes,
        info: &ConnectionInfo,
        h2c: bool,
    ) -> pingora::protocols::Stream {
        let mut stream: L4Stream = self.into();
        crate::serving::buffered_io::record_addresses(&mut stream, info.peer, info.bound);
        Box::new(BufferedIo::replaying(stream, h2c, replay))
    }
}

impl ClientIo for pingora::protocols::tls::TlsStream<BufferedIo> {
    fn tls_digest(&self) -> Option<Arc<SslDigest>> {
        self.get_ssl_digest()
    }

    fn into_pingora(
        self,
        replay: Bytes,
        _info: &ConnectionInfo,
        _h2c: bool,
    ) -> pingora::protocols::Stream {
        // TLS connections choose HTTP/2 by ALPN before they get here.
        Box::new(BufferedIo::replaying(self, false, replay))
    }
}

impl<A: ServerApp + Send + Sync + 'static> Engine<A> {
    /// Serves the rest of a connection with pingora-proxy.
    pub(crate) async fn hand_over<C: ClientIo>(
        &self,
        client: C,
        replay: Bytes,
        info: &ConnectionInfo,
        h2c: bool,
    ) {
        let stream = client.into_pingora(replay, info, h2c);
        self.fallback.process_new(stream, &self.shutdown).await;
    }
}
