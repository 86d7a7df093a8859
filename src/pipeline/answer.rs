//! Answers the gateway makes itself, and the one table that maps an upstream failure to
//! the status a client gets. Both renderers write these; neither has literals of its own.

use bytes::Bytes;

use crate::config::model::Redirect;

use super::context::RequestContext;
use super::fields::HeaderSink;

/// A response of the gateway's own: a refusal, a direct response, a redirect or an error.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    pub status: u16,
    pub body: Bytes,
    pub content_type: Bytes,
    pub location: Option<String>,
    /// The route's response header edits apply (the request had reached its route).
    pub route_edits: bool,
    /// The request could not be read safely: the connection closes after the answer.
    pub close: bool,
    /// Headers only, whatever the method (a redirect).
    pub head_only: bool,
    /// Fields of the answer's own (an authentication challenge, or what an auth service
    /// sent with its refusal).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

const PLAIN: &[u8] = b"text/plain; charset=utf-8";

impl LocalAnswer {
    pub fn plain(status: u16, body: &'static [u8]) -> Self {
        Self {
            status,
            body: Bytes::from_static(body),
            content_type: Bytes::from_static(PLAIN),
            location: None,
            route_edits: false,
            close: false,
            head_only: false,
            headers: Vec::new(),
        }
    }

    /// A request refused as unsafe to read on: the reason is the body, and the
    /// connection closes after it.
    pub fn refusal(status: u16, reason: &'static str) -> Self {
        let mut answer = Self::plain(status, b"");
        answer.body = Bytes::from(format!("{reason}\n"));
        answer.close = true;
        answer
    }

    pub fn no_route() -> Self {
        Self::plain(404, b"no route\n")
    }

    pub fn no_healthy_endpoint() -> Self {
        Self::plain(503, b"no healthy endpoint\n")
    }

    pub fn no_such_upstream() -> Self {
        Self::plain(503, b"no such upstream\n")
    }

    pub fn backend_not_resolved() -> Self {
        Self::plain(500, b"backend not resolved\n")
    }

    /// 403: the client address is refused by the route's access lists.
    pub fn forbidden() -> Self {
        Self::plain(403, b"forbidden\n").after_route()
    }

    /// 429: the route's rate limit refused the request (its fields carry the wait).
    pub fn too_many_requests() -> Self {
        Self::plain(429, b"too many requests\n").after_route()
    }

    /// 503: a global rate limit could not ask its store, and `on_error` is `deny`.
    pub fn store_unavailable() -> Self {
        Self::plain(503, b"rate limit store unavailable\n").after_route()
    }

    /// 204 to a CORS preflight: the gateway answers it, the upstream never sees it.
    pub fn preflight() -> Self {
        let mut answer = Self::plain(204, b"").after_route();
        answer.content_type = Bytes::new();
        answer
    }

    fn after_route(mut self) -> Self {
        self.route_edits = true;
        self
    }

    /// 413: the rest of the body is not read, so the connection closes after it.
    pub fn body_too_large() -> Self {
        let mut answer = Self::plain(413, b"request body too large\n");
        answer.close = true;
        answer
    }

    /// 401 with its challenge (`Basic realm="..."`, `Bearer`, `Bearer error=...`).
    pub fn unauthorized(challenge: String) -> Self {
        let mut answer = Self::plain(401, b"authentication required\n");
        if let Ok(value) = http::HeaderValue::try_from(challenge) {
            answer.headers.push((http::header::WWW_AUTHENTICATE, value));
        }
        answer
    }

    /// 503: an authenticator could not decide (auth service down, no keys, the hashing
    /// pool full for too long), and nothing passes unauthenticated.
    pub fn auth_unavailable(body: &'static [u8]) -> Self {
        Self::plain(503, body)
    }

    /// An auth service's refusal, passed through as it sent it.
    pub fn passed_through(
        status: u16,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        content_type: Option<http::HeaderValue>,
        body: Bytes,
    ) -> Self {
        let mut answer = Self::plain(status, b"");
        answer.body = body;
        answer.content_type =
            content_type.map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes()));
        answer.headers = headers;
        answer
    }

    /// The answer for a failed exchange. It always closes the client connection: the
    /// request's body may be half-sent, and the client must not pipeline into it.
    pub fn failure(failure: Failure) -> Self {
        let (status, body) = failure.status();
        let mut answer = Self::plain(status, body);
        answer.close = true;
        answer
    }

    /// Writes every field but the framing and `connection` (which each renderer owns):
    /// content type, request id, location and the route's edits.
    pub fn write_fields<S: HeaderSink>(&self, ctx: &RequestContext, sink: &mut S) {
        let edits = ctx
            .route
            .as_ref()
            .filter(|_| self.route_edits)
            .map(|r| &r.response_headers);
        let removed = |name: &str| {
            edits.is_some_and(|e| {
                e.remove.iter().any(|n| n.as_str() == name)
                    || e.set.iter().any(|(n, _)| n.as_str() == name)
            })
        };
        if !removed("content-type") && !self.content_type.is_empty() {
            sink.put(b"content-type", &self.content_type);
        }
        for (name, value) in &self.headers {
            sink.put(name.as_str().as_bytes(), value.as_bytes());
        }
        if !ctx.request_id.is_empty() && !removed("x-request-id") {
            sink.put(b"x-request-id", ctx.request_id.as_bytes());
        }
        if let Some(location) = &self.location {
            if !removed("location") {
                sink.put(b"location", location.as_bytes());
            }
        }
        for (name, value) in &ctx.response_additions {
            sink.put(name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(edits) = edits {
            for (name, value) in edits.set.iter().chain(&edits.add) {
                sink.put(name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }

    /// Whether the head carries `content-length` (never on a 204 or 304).
    pub fn sends_length(&self) -> bool {
        !matches!(self.status, 204 | 304)
    }

    /// Whether a body goes out with the head.
    pub fn has_body(&self, method: &http::Method) -> bool {
        !self.head_only && method != http::Method::HEAD && !self.body.is_empty()
    }
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

/// Why an exchange with an upstream failed, whichever renderer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    ConnectTimeout,
    /// Closed or reset before a response head.
    Reset,
    ResponseTimeout,
    WriteTimeout,
    /// The route's total `timeout` ran out (also while the request body was streaming).
    RouteTimeout,
    InvalidResponse,
    TlsHandshake,
    NoHealthyEndpoint,
    Internal,
}

impl Failure {
    /// The status table: 502 for a failed or reset connection and an invalid answer, 503
    /// for a pool with nobody to ask, 504 for every timeout.
    pub fn status(self) -> (u16, &'static [u8]) {
        match self {
            Failure::Connect => (502, b"upstream connection failed\n"),
            Failure::ConnectTimeout | Failure::ResponseTimeout | Failure::WriteTimeout => {
                (504, b"upstream timed out\n")
            }
            Failure::RouteTimeout => (504, b"route timeout exceeded\n"),
            Failure::Reset => (502, b"upstream connection reset\n"),
            Failure::InvalidResponse => (502, b"invalid upstream response\n"),
            Failure::TlsHandshake => (502, b"upstream TLS handshake failed\n"),
            Failure::NoHealthyEndpoint => (503, b"no healthy endpoint\n"),
            Failure::Internal => (500, b"internal error\n"),
        }
    }

    /// Whether another endpoint may be asked: a connection that never opened always; a
    /// connection reset before any response only for a request that may be repeated.
    /// A timeout or an invalid answer is never retried: the request may have been acted on.
    pub fn retryable(self, idempotent: bool) -> bool {
        match self {
            Failure::Connect | Failure::ConnectTimeout | Failure::TlsHandshake => true,
            Failure::Reset => idempotent,
            _ => false,
        }
    }

    /// Whether the endpoint itself is to blame, for passive health.
    pub fn connect(self) -> bool {
        matches!(
            self,
            Failure::Connect | Failure::ConnectTimeout | Failure::TlsHandshake
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_follows_the_contract() {
        assert_eq!(Failure::Connect.status().0, 502);
        assert_eq!(Failure::Reset.status().0, 502);
        assert_eq!(Failure::InvalidResponse.status().0, 502);
        assert_eq!(Failure::NoHealthyEndpoint.status().0, 503);
        assert_eq!(Failure::ConnectTimeout.status().0, 504);
        assert_eq!(Failure::ResponseTimeout.status().0, 504);
        assert_eq!(Failure::RouteTimeout.status().0, 504);
    }

    #[test]
    fn only_safe_failures_are_retried() {
        assert!(Failure::Connect.retryable(false));
        assert!(Failure::Reset.retryable(true));
        assert!(!Failure::Reset.retryable(false));
        assert!(!Failure::InvalidResponse.retryable(true));
        assert!(!Failure::ResponseTimeout.retryable(true));
    }

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
