//! The authenticators' HTTP client: JWKS fetches and forward-auth subrequests. One
//! pooled client per authenticator, so subrequests reuse their connections like any
//! upstream's, and `https://` JWKS URLs are verified against the system's roots.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type AuthClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A pooled client for `http://` and `https://` URLs.
pub fn new_client() -> AuthClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!(error = %e, "no system trust roots; https JWKS URLs will fail");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty_roots())
        }
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https)
}

fn empty_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// A response read whole, its body at most `limit` bytes.
pub struct Fetched {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends `request` and reads the answer within `timeout`; an error or a body past
/// `limit` is `Err` with a reason for the log.
pub async fn fetch(
    client: &AuthClient,
    request: http::Request<Empty<Bytes>>,
    timeout: Duration,
    limit: usize,
) -> Result<Fetched, String> {
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Fetched {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
