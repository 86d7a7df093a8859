//! Responses the gateway writes itself: direct responses, redirects and errors.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::model::{HeaderEdits, Redirect};

use super::RequestContext;

pub struct Reply {
    pub status: u16,
    pub content_type: HeaderValue,
    pub body: Bytes,
    pub location: Option<String>,
}

impl Reply {
    pub fn plain(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            body: Bytes::from(body.into()),
            location: None,
        }
    }

    pub async fn send(self, session: &mut Session, ctx: &RequestContext) -> Result<()> {
        let mut header = ResponseHeader::build(self.status, Some(4))?;
        header.insert_header(http::header::CONTENT_TYPE, self.content_type)?;
        header.insert_header(http::header::CONTENT_LENGTH, self.body.len().to_string())?;
        if !ctx.request_id.is_empty() {
            header.insert_header("x-request-id", ctx.request_id.as_str())?;
        }
        if let Some(location) = self.location {
            header.insert_header(http::header::LOCATION, location)?;
        }
        if let Some(route) = &ctx.route {
            apply_response_edits(&mut header, &route.response_headers)?;
        }
        let head_only = session.req_header().method == http::Method::HEAD || self.body.is_empty();
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(())
    }
}

pub fn apply_response_edits(header: &mut ResponseHeader, edits: &HeaderEdits) -> Result<()> {
    for name in &edits.remove {
        header.remove_header(name);
    }
    for (name, value) in &edits.set {
        header.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &edits.add {
        header.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Builds the `Location` of a redirect: every part not named in the route is kept.
pub fn redirect_location(
    redirect: &Redirect,
    path: &str,
    query: Option<&str>,
    raw_host: &str,
    downstream_tls: bool,
) -> String {
    let current_scheme = if downstream_tls { "https" } else { "http" };
    let scheme = redirect.scheme.as_deref().unwrap_or(current_scheme);
    let (host, current_port) = split_host_port(raw_host);
    let host = redirect.host.as_deref().unwrap_or(host);
    // A scheme change drops the old port (8080 means nothing for https); an explicit
    // port always wins.
    let port = match redirect.port {
        Some(p) => Some(p),
        None if scheme != current_scheme => None,
        None => current_port,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|&p| p != default_port) {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(redirect.path.as_deref().unwrap_or(path));
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    location
}

fn split_host_port(raw: &str) -> (&str, Option<u16>) {
    if raw.starts_with('[') {
        return match raw.rsplit_once("]:") {
            Some((host, port)) => (&raw[..host.len() + 1], port.parse().ok()),
            None => (raw, None),
        };
    }
    match raw.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (raw, None),
        },
        None => (raw, None),
    }
}

/// Maps a proxying failure to the status of spec section 4 and a short body. Status 0
/// means the client is gone and nothing should be written.
pub fn error_response(e: &Error) -> (u16, String) {
    use ErrorType::*;
    if super::is_downstream_gone(e) {
        return (0, String::new());
    }
    let (status, text): (u16, &str) = match e.etype() {
        HTTPStatus(503) => (503, "no healthy endpoint"),
        HTTPStatus(413) => (413, "request body too large"),
        HTTPStatus(code) => (*code, "error"),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            (504, "upstream timed out")
        }
        _ if matches!(e.esource(), ErrorSource::Downstream) => (400, "bad request"),
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => {
            (502, "upstream connection failed")
        }
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => {
            (502, "upstream TLS handshake failed")
        }
        ConnectionClosed | ReadError | WriteError => (502, "upstream connection reset"),
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
            (502, "invalid upstream response")
        }
        _ if matches!(e.esource(), ErrorSource::Upstream) => (502, "bad gateway"),
        _ => (500, "internal error"),
    };
    (status, format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(scheme: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme: scheme.map(str::to_string),
            host: None,
            port,
            path: None,
            status: http::StatusCode::MOVED_PERMANENTLY,
        }
    }

    #[test]
    fn redirect_keeps_host_path_and_query() {
        let req = ("/a/b", Some("x=1"));
        assert_eq!(
            redirect_location(
                &redirect(Some("https"), None),
                req.0,
                req.1,
                "example.com:8080",
                false
            ),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(
            redirect_location(
                &redirect(None, Some(8443)),
                req.0,
                req.1,
                "example.com",
                false
            ),
            "http://example.com:8443/a/b?x=1"
        );
        assert_eq!(
            redirect_location(&redirect(None, None), req.0, req.1, "[::1]:8080", false),
            "http://[::1]:8080/a/b?x=1"
        );
    }
}
