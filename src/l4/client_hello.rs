//! The server name of a TLS ClientHello, read without consuming it.
//!
//! The bytes are peeked and parsed by rustls' own `Acceptor` (the parser its server uses),
//! so a connection that is then terminated goes through the normal handshake from its
//! first byte, and a passthrough connection is relayed from its first byte, ClientHello
//! included.

use std::time::Duration;

use tokio::net::TcpStream;

/// A ClientHello larger than this (a record is at most 16 KiB) is left to the normal
/// handshake, which terminates it: no passthrough name is that long.
const MAX_PEEK: usize = 16 * 1024 + 5 + 1024;

/// What the first flight said.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello, with its server name when it sent one.
    Tls(Option<String>),
    /// Not a ClientHello rustls can read: the normal handshake refuses it.
    NotTls,
    /// The peer closed, or sent nothing whole in time.
    Gone,
}

pub async fn peek_server_name(tcp: &TcpStream, within: Duration) -> Hello {
    tokio::time::timeout(within, peek(tcp))
        .await
        .unwrap_or(Hello::Gone)
}

async fn peek(tcp: &TcpStream) -> Hello {
    let mut buf = vec![0u8; MAX_PEEK];
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(0) | Err(_) => return Hello::Gone,
            Ok(n) => n,
        };
        match parse(&buf[..n]) {
            Some(hello) => return hello,
            None if n == buf.len() => return Hello::NotTls,
            // The rest of the ClientHello is on its way.
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// `None`: incomplete, more bytes may tell.
fn parse(bytes: &[u8]) -> Option<Hello> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut reader = bytes;
    while !reader.is_empty() {
        match acceptor.read_tls(&mut reader) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Hello::NotTls),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Some(Hello::Tls(
            accepted.client_hello().server_name().map(str::to_owned),
        )),
        Ok(None) => None,
        Err(_) => Some(Hello::NotTls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello, as rustls' client writes it.
    fn client_hello(sni: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        client.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_the_name_and_waits_for_the_rest() {
        let hello = client_hello("secure.example.com");
        assert_eq!(
            parse(&hello),
            Some(Hello::Tls(Some("secure.example.com".into())))
        );
        for cut in [1, 5, hello.len() / 2, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), None, "cut at {cut}");
        }
        // An IP address is never sent as SNI.
        assert_eq!(parse(&client_hello("127.0.0.1")), Some(Hello::Tls(None)));
    }

    #[test]
    fn plain_text_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Some(Hello::NotTls));
    }
}
