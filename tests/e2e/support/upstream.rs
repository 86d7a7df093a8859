//! A real HTTP server on loopback standing in for a backend. It answers every request
//! with a JSON description of what it received, so tests can assert on what the gateway
//! forwarded; a few paths have special behaviour:
//! - `/slow/<ms>`: answers after a delay;
//! - `/status/<code>`: answers with that status;
//! - `/echo`: returns the request body as it arrived;
//! - `/ws`: a WebSocket echo endpoint;
//! - `/healthz`: answers with the status set by [`Upstream::set_health`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body_len: usize,
    pub body: Bytes,
    pub version: http::Version,
}

struct State {
    name: String,
    hits: AtomicUsize,
    health: AtomicU16,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name).await
    }

    /// An HTTPS upstream (HTTP/1.1 and h2 by ALPN) with the given certificate.
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> Upstream {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert pem");
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("a key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(
            "127.0.0.1:0".parse().expect("addr"),
            name,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Upstream {
        Self::serve(addr, name, None).await
    }

    async fn serve(
        addr: SocketAddr,
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_string(),
            hits: AtomicUsize::new(0),
            health: AtomicU16::new(200),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::Relaxed);
                let state = accept_state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream { addr, state, task }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::Relaxed);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        let status = state.health.load(Ordering::Relaxed);
        return Ok(Response::builder()
            .status(status)
            .body(full(Bytes::from_static(b"health\n")))
            .expect("response"));
    }
    if path == "/ws" && hyper_tungstenite_like::is_upgrade(&req) {
        return Ok(hyper_tungstenite_like::upgrade(&mut req));
    }
    state.hits.fetch_add(1, Ordering::Relaxed);
    let method = req.method().to_string();
    let version = req.version();
    let full_path = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.to_string());
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    state.seen.lock().expect("seen").push(Seen {
        method: method.clone(),
        path: full_path.clone(),
        headers: headers.clone(),
        body_len: body.len(),
        body: body.clone(),
        version,
    });
    if let Some(spec) = path.strip_prefix("/drip/") {
        // `/drip/<chunks>/<ms>`: a body that trickles in, one chunk every `ms`.
        let (chunks, ms) = spec.split_once('/').unwrap_or(("5", "100"));
        let (chunks, ms): (u64, u64) = (chunks.parse().unwrap_or(5), ms.parse().unwrap_or(100));
        let stream = futures_util::stream::unfold(0u64, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Some((
                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"drip\n"))),
                i + 1,
            ))
        });
        return Ok(Response::builder()
            .status(200)
            .header("x-upstream", state.name.as_str())
            .body(BodyExt::boxed(http_body_util::StreamBody::new(stream)))
            .expect("response"));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse().ok())
        .unwrap_or(200u16);
    let response_body = if path == "/echo" {
        body
    } else {
        let header_map: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        Bytes::from(
            serde_json::json!({
                "upstream": state.name,
                "method": method,
                "path": full_path,
                "headers": header_map,
                "body_len": body.len(),
            })
            .to_string(),
        )
    };
    Ok(Response::builder()
        .status(status)
        .header("x-upstream", state.name.as_str())
        .header("content-type", "application/json")
        .body(full(response_body))
        .expect("response"))
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

/// The WebSocket handshake by hand (RFC 6455 section 4.2.2), then tungstenite echoes.
mod hyper_tungstenite_like {
    use super::*;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    pub fn is_upgrade<B>(req: &Request<B>) -> bool {
        req.headers()
            .get("upgrade")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    }

    pub fn upgrade(req: &mut Request<Incoming>) -> Response<Body> {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", key)
            .body(full(Bytes::new()))
            .expect("response")
    }
}
