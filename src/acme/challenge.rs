//! The answers to ACME challenges this process is waiting to be asked for: a
//! `tls-alpn-01` certificate per domain (served to handshakes that offer only the
//! `acme-tls/1` protocol) and an `http-01` key authorization per token (served at
//! `/.well-known/acme-challenge/TOKEN` on plain listeners). Process-wide: the validation
//! server may reach any listener on the port it was told.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of `tls-alpn-01` (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of `http-01` (RFC 8555 section 8.3).
pub const HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges {
    tls_alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    http: Mutex<HashMap<String, String>>,
    /// Tokens published: plain connections are only looked at when this is not zero.
    http_pending: AtomicUsize,
}

pub fn challenges() -> &'static Arc<Challenges> {
    static CHALLENGES: OnceLock<Arc<Challenges>> = OnceLock::new();
    CHALLENGES.get_or_init(Arc::default)
}

impl Challenges {
    pub fn publish_tls_alpn(&self, domain: &str, digest: &[u8]) -> Result<(), String> {
        let key = challenge_certificate(domain, digest)?;
        self.tls_alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_string(), key);
        Ok(())
    }

    pub fn withdraw_tls_alpn(&self, domain: &str) {
        self.tls_alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(domain);
    }

    pub fn tls_alpn(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&domain.to_ascii_lowercase())
            .cloned()
    }

    pub fn publish_http(&self, token: &str, key_authorization: &str) {
        let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        if http
            .insert(token.to_string(), key_authorization.to_string())
            .is_none()
        {
            self.http_pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn withdraw_http(&self, token: &str) {
        let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        if http.remove(token).is_some() {
            self.http_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn http_pending(&self) -> bool {
        self.http_pending.load(Ordering::Relaxed) > 0
    }

    pub fn http(&self, token: &str) -> Option<String> {
        self.http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// A key and certificate made here: the `tls-alpn-01` answer (with the `acmeIdentifier`
/// extension) when `digest` is given, else a placeholder served until issuance.
pub fn self_signed(domains: &[String], digest: Option<&[u8]>) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        domains.first().cloned().unwrap_or_default(),
    );
    if let Some(digest) = digest {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::new_acme_identifier(digest));
    }
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
}

fn challenge_certificate(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    self_signed(&[domain.to_string()], Some(digest))
}

/// Answers an `http-01` request read from a plain connection, if it is one: the bytes
/// are peeked first, so any other request is left untouched for the HTTP loop.
pub async fn answer_http(tcp: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let prefix = format!("GET {HTTP_PREFIX}");
    let mut head = vec![0u8; 1024];
    let Ok(n) = tcp.peek(&mut head).await else {
        return false;
    };
    if n < prefix.len() || &head[..prefix.len()] != prefix.as_bytes() {
        return false;
    }
    // The whole head (small: a validation request) before answering.
    let mut read = Vec::new();
    let mut buf = [0u8; 1024];
    while !read.windows(4).any(|w| w == b"\r\n\r\n") && read.len() < 8192 {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&read);
    let token = line
        .split_whitespace()
        .nth(1)
        .and_then(|path| path.strip_prefix(HTTP_PREFIX))
        .unwrap_or_default();
    let answer = match challenges().http(token) {
        Some(key_authorization) => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{key_authorization}",
            key_authorization.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
    };
    let _ = tcp.write_all(answer.as_bytes()).await;
    let _ = tcp.shutdown().await;
    true
}
