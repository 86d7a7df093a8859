//! Test support: the real gateway binary on loopback, and real HTTP servers behind it.

pub mod browser;
pub mod gateway;
pub mod http1;
pub mod kube_api;
pub mod otlp;
pub mod pki;
pub mod raw_upstream;
pub mod upstream;

pub use gateway::Gateway;
pub use http1::RawClient;
pub use raw_upstream::RawUpstream;
pub use upstream::Upstream;

/// An address on loopback where nothing listens: bound, then released.
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// The `x-request-id` the gateway put on a response.
pub fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"]
        .to_str()
        .expect("x-request-id is text")
        .to_string()
}

/// A plain HTTP client without connection reuse surprises between tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A client that speaks HTTP/2 from the first byte (h2c with prior knowledge).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("h2c client")
}

/// Sends raw bytes on a fresh connection and returns everything the gateway answers
/// until it closes the connection or `wait` passes.
pub async fn raw_exchange(
    addr: std::net::SocketAddr,
    request: &[u8],
    wait: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw answer.
pub fn status_of(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}
