//! The PROXY protocol (v1 text and v2 binary), parsed and built with the `ppp` crate.
//!
//! The header is peeked until it is complete and then exactly its bytes are consumed, so
//! what follows (a ClientHello, an HTTP request) stays in the socket for the code that
//! serves the connection, whatever it is.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::model::ProxyProtocolVersion;

/// The largest header accepted: a v1 line is at most 107 bytes; a v2 header with TLVs
/// (which edgegate ignores) is bounded here rather than by its 64 KiB length field.
const MAX_HEADER: usize = 4096;

/// Why a connection that had to start with a PROXY header was closed.
#[derive(Debug)]
pub enum HeaderError {
    Closed,
    TimedOut,
    Malformed(String),
    Io(std::io::Error),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("the peer closed before a complete PROXY header"),
            Self::TimedOut => f.write_str("no complete PROXY header in time"),
            Self::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            Self::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

impl From<std::io::Error> for HeaderError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads the PROXY header a connection opens with. `Ok(Some(source))` is the client the
/// header names; `Ok(None)` is a header without one (v2 `LOCAL`, v1 `UNKNOWN`: a load
/// balancer's own health check), where the peer stays the client.
pub async fn read_header(
    tcp: &mut TcpStream,
    within: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    let (length, source) = tokio::time::timeout(within, peek_header(tcp))
        .await
        .map_err(|_| HeaderError::TimedOut)??;
    let mut consumed = vec![0u8; length];
    tcp.read_exact(&mut consumed).await?;
    Ok(source)
}

async fn peek_header(tcp: &TcpStream) -> Result<(usize, Option<SocketAddr>), HeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() && v1_line_ended(&buf[..n]) {
            // A whole v1 line the parser still calls partial (a bad address reads as a
            // missing one): more bytes cannot fix it.
            return Err(HeaderError::Malformed("invalid v1 line".to_string()));
        }
        if parsed.is_incomplete() {
            if n == buf.len() {
                return Err(HeaderError::Malformed(format!(
                    "longer than {MAX_HEADER} bytes"
                )));
            }
            // The rest is on its way: wait for it without spinning on the same bytes.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        return match parsed {
            HeaderResult::V1(Ok(header)) => Ok((header.header.len(), source_v1(&header))),
            HeaderResult::V2(Ok(header)) => Ok((header.len(), source_v2(&header))),
            HeaderResult::V1(Err(e)) => Err(HeaderError::Malformed(e.to_string())),
            HeaderResult::V2(Err(e)) => Err(HeaderError::Malformed(e.to_string())),
        };
    }
}

/// A v1 header is one line of at most 107 bytes: once its end (or that length) has
/// arrived, it is complete, whatever the parser thinks.
fn v1_line_ended(bytes: &[u8]) -> bool {
    const V1_MAX: usize = 107;
    bytes.starts_with(b"PROXY") && (bytes.len() >= V1_MAX || bytes.windows(2).any(|w| w == b"\r\n"))
}

fn source_v1(header: &v1::Header<'_>) -> Option<SocketAddr> {
    match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn source_v2(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

/// The header sent first to an endpoint: `client` as the source, `local` (where the client
/// connected) as the destination. Mixed families (an IPv4 client on an IPv6 socket) are
/// written in the family both can share.
pub fn build_header(
    version: ProxyProtocolVersion,
    client: SocketAddr,
    local: SocketAddr,
) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocolVersion::V1 => {
            let addresses = v1::Addresses::from((client, local));
            // Its `Display` is the whole line, CRLF included.
            addresses.to_string().into_bytes()
        }
        ProxyProtocolVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, local),
        )
        .build()
        .unwrap_or_default(),
    }
}

fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, local)
        }
        (SocketAddr::V4(c), SocketAddr::V6(_)) => (
            SocketAddr::new(c.ip().to_ipv6_mapped().into(), c.port()),
            local,
        ),
        (SocketAddr::V6(_), SocketAddr::V4(l)) => (
            client,
            SocketAddr::new(l.ip().to_ipv6_mapped().into(), l.port()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn built_headers_parse_back_to_the_client() {
        let client = addr("203.0.113.7:5555");
        let local = addr("127.0.0.1:443");
        for version in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            let bytes = build_header(version, client, local);
            let parsed = HeaderResult::parse(&bytes);
            let source = match &parsed {
                HeaderResult::V1(Ok(h)) => {
                    assert_eq!(h.header.len(), bytes.len());
                    source_v1(h)
                }
                HeaderResult::V2(Ok(h)) => {
                    assert_eq!(h.len(), bytes.len());
                    source_v2(h)
                }
                other => panic!("{version:?}: {other:?}"),
            };
            assert_eq!(source, Some(client), "{version:?}");
        }
        let v1 = build_header(ProxyProtocolVersion::V1, client, local);
        assert_eq!(v1, b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n");
    }

    #[test]
    fn mixed_families_share_one() {
        let bytes = build_header(
            ProxyProtocolVersion::V1,
            addr("192.0.2.1:1000"),
            addr("[::1]:443"),
        );
        assert!(
            bytes.starts_with(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1000 443"),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }

    #[test]
    fn garbage_is_complete_and_refused() {
        let parsed = HeaderResult::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(parsed.is_complete());
        assert!(matches!(parsed, HeaderResult::V1(Err(_))));
        assert!(HeaderResult::parse(b"PROXY TCP4 1.2.3.4").is_incomplete());
        assert!(!v1_line_ended(b"PROXY TCP4 1.2.3.4"));
        assert!(v1_line_ended(b"PROXY TCP4 not-an-address\r\nGET /"));
    }
}
