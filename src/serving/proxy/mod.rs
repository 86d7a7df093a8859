//! The pingora `ProxyHttp` adapter: renders the request core for HTTP/2, h2c and the
//! HTTP/1.1 connections the loop hands over (WebSocket upgrades, TLS and HTTP/2
//! upstreams). Every decision is the core's; this module only moves it into pingora's
//! session and header maps, and maps pingora's errors onto the core's failure table.

mod respond;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::model::Name;
use crate::pipeline::context::unnamed_listener;
use crate::pipeline::serving::client_identity;
use crate::pipeline::{
    decide, Core, Decision, Exchange, Failure, InFlightGauge, Incoming, RequestContext,
    ResponseHeaders, UpstreamHeaders,
};
use crate::snapshot::router::rewritten_path;
use crate::snapshot::Snapshot;

/// pingora's side of the gateway: the shared serving state, as a `ProxyHttp`.
#[derive(Clone)]
pub struct PingoraAdapter(pub Core);

impl PingoraAdapter {
    /// The listener a request arrived on, named by the request's own snapshot.
    fn listener_of(session: &Session, snapshot: &Snapshot) -> Option<Name> {
        match session.server_addr()? {
            PingoraAddr::Inet(addr) => snapshot.listener_name(*addr),
            _ => None,
        }
    }

    /// The listener's timers on a handed-over HTTP/1.1 connection: pingora would
    /// otherwise read its later heads with a fixed 60 s timeout of its own.
    fn keep_listener_timers(session: &mut Session, snapshot: &Snapshot) {
        let Some(PingoraAddr::Inet(bound)) = session.server_addr().cloned() else {
            return;
        };
        if let Some(listener) = snapshot.listener_at(bound) {
            let idle = listener.spec.idle_timeout.as_secs().max(1);
            session.set_keepalive(Some(idle));
            session.set_read_timeout(Some(listener.spec.header_timeout));
        }
    }
}

/// A request head's target as sent: pingora's parsed URI drops a fragment, which the
/// core must see to refuse it.
fn raw_target(raw_head: &[u8]) -> Option<&str> {
    let line = raw_head.split(|&b| b == b'\n').next()?;
    let mut parts = line.split(|&b| b == b' ');
    parts.next()?;
    std::str::from_utf8(parts.next()?).ok()
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for PingoraAdapter {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext::new(self.0.snapshot.load_full(), unnamed_listener())
    }

    /// No downstream modules: pingora's default adds a (disabled) compression module that
    /// every response would still pass through.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Pipelined requests are answered one by one, in order, instead of the connection
        // being closed after the first.
        session.as_downstream_mut().set_pipelining_enabled(true);
        let snapshot = ctx.snapshot.clone();
        if let Some(listener) = Self::listener_of(session, &snapshot) {
            ctx.listener = listener;
        }
        if session.as_http1().is_some() {
            Self::keep_listener_timers(session, &snapshot);
        }
        ctx.in_flight_gauge = Some(InFlightGauge::enter(
            self.0
                .metrics
                .requests_in_flight
                .with_label_values(&[&ctx.listener]),
        ));
        ctx.downstream_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let raw_head = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
        let peer = client_ip(session).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let header = session.req_header();
        let uri = &header.uri;
        let target = match raw_head.as_deref().and_then(raw_target) {
            Some(target) => target,
            None => uri.path_and_query().map_or("/", |pq| pq.as_str()),
        };
        let declared_length = header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let request = Incoming {
            method: &header.method,
            version: header.version,
            target,
            authority: uri.authority().map(|a| a.as_str()),
            fields: &header.headers,
            raw_head: raw_head.as_deref(),
            declared_length,
            peer,
        };
        let (answer, new_target, host) = match decide(&request, ctx).await {
            Decision::Answer(answer) => (Some(answer), None, None),
            Decision::Forward(forward) => {
                let new_target = match (&forward.path, uri.path()) {
                    (path, current) if path.as_ref() == current => None,
                    (path, _) => Some(match forward.query {
                        Some(query) => format!("{path}?{query}"),
                        None => path.to_string(),
                    }),
                };
                ctx.tunnel = forward.tunnel;
                ctx.budget = Some(forward.pool.start_request());
                (None, new_target, forward.host.map(str::to_owned))
            }
        };
        if let Some(answer) = answer {
            respond::send(session, ctx, &answer).await?;
            return Ok(true);
        }
        if let Some(target) = new_target {
            // The upstream gets the path routing matched.
            let mut parts = session.req_header().uri.clone().into_parts();
            parts.path_and_query = target.parse().ok();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                session.req_header_mut().set_uri(uri);
            }
        }
        ctx.upstream_host = host;
        if ctx.mirror.is_some() && session.as_downstream_mut().is_body_empty() {
            self.0.mirror_body(ctx, b"", true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool chosen"))?;
        let Some(member) =
            pool.select_preferring(&ctx.tried, ctx.hash_key, ctx.affinity.as_deref())
        else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy endpoint",
            ));
        };
        if pool.upstream.http2 {
            // pingora takes a shared h2 connection out of its pool while it opens a stream
            // on it; a concurrent request to the same member arriving meanwhile would
            // open another connection.
            ctx.h2_checkout = Some(member.h2_checkout.clone().lock_owned().await);
        }
        let address = member.endpoint.address;
        ctx.tried.push(address);
        ctx.begin_attempt(address);
        ctx.in_flight = Some(member.state.start_request());
        ctx.attempt = Some((std::time::Instant::now(), member.label.clone()));
        let upstream = &pool.upstream;
        let tls = upstream.tls.as_ref();
        // SNI only means something with TLS; plain peers skip formatting an address.
        let sni = match tls {
            Some(t) => t.sni.clone().unwrap_or_else(|| address.ip().to_string()),
            None => String::new(),
        };
        let mut peer = HttpPeer::new(address, tls.is_some(), sni);
        // Pooled connections are never shared between upstreams: two upstreams may reach
        // one address with different TLS trust, and a connection verified for one must
        // not serve the other.
        peer.group_key = pool.group_key;
        // The route's `timeout` bounds the whole exchange: every connect and read gets at
        // most what is left of it (a retry gets less than the first attempt).
        let remaining = ctx.route.as_ref().and_then(|r| r.timeout).map(|t| {
            t.saturating_sub(ctx.started.elapsed())
                .max(Duration::from_millis(1))
        });
        let limit = |d: Duration| remaining.map_or(d, |t| t.min(d));
        peer.options.connection_timeout = Some(limit(upstream.connect_timeout));
        peer.options.read_timeout = Some(limit(upstream.read_timeout));
        peer.options.write_timeout = Some(limit(upstream.write_timeout));
        peer.options.idle_timeout = Some(upstream.idle_timeout);
        if let Some(tls) = tls {
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            if let Some(ca) = &pool.tls_ca {
                peer.options.ca = Some(ca.clone());
            }
        }
        if upstream.http2 {
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = 128;
        }
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.h2_checkout = None;
        Ok(())
    }

    /// A client that goes away mid-exchange is routine at the edge (nginx logs it as 499
    /// at info); pingora would log it as an error.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        is_downstream_gone(error)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.h2_checkout = None;
        if let Some((_, endpoint)) = ctx.attempt.take() {
            self.0
                .metrics
                .upstream_failed(ctx.upstream_name(), &endpoint, true);
        }
        tracing::warn!(
            upstream = %ctx.upstream_name(),
            endpoint = %peer._address,
            request_id = %ctx.request_id,
            error = %e,
            "connect to endpoint failed"
        );
        let failure = respond::failure_of(&e).unwrap_or(Failure::Connect);
        if self.0.retry_after(ctx, failure, true, &e) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        upstream_reused: bool,
    ) -> Box<Error> {
        ctx.h2_checkout = None;
        if let Some((_, endpoint)) = ctx.attempt.take() {
            self.0
                .metrics
                .upstream_failed(ctx.upstream_name(), &endpoint, false);
        }
        let mut e = e.more_context(format!("endpoint {}", peer._address));
        let failure = respond::failure_of(&e).unwrap_or(Failure::Reset);
        let repeatable =
            !session.as_ref().retry_buffer_truncated() && session.response_written().is_none();
        if let Some(copy) = ctx.mirror.as_mut() {
            // A retry sends the body again from its start.
            copy.restart();
        }
        if upstream_reused && repeatable && ctx.idempotent && failure == Failure::Reset {
            // A pooled connection the upstream had closed: sent again on a fresh one,
            // which is no retry and no fault of the endpoint's (as on the HTTP/1.1 loop).
            e.retry.decide_reuse(true);
        } else if self.0.retry_after(ctx, failure, repeatable, &e) {
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let identity = if ctx.downstream_tls {
            session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .and_then(|ssl| client_identity(ssl))
        } else {
            None
        };
        let endpoint = ctx.endpoint.map(|e| e.to_string());
        let plan = UpstreamHeaders {
            ctx,
            peer: client_ip(session).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            // HTTP/1.1 requires Host; an HTTP/1.0 client may have sent none. Like nginx's
            // `proxy_set_header Host $proxy_host`, name the endpoint.
            host: ctx.upstream_host.as_deref().or(endpoint.as_deref()),
            identity: identity.as_deref(),
            tunnel: ctx.tunnel,
            keep_framing: true,
        };
        let mut added: Vec<(http::HeaderName, http::HeaderValue)> = Vec::with_capacity(8);
        plan.add(&upstream_request.headers, &mut added);
        apply_plan(
            upstream_request,
            |fields, name| plan.keeps(fields, name),
            added,
        )?;
        if let Some(route) = ctx.route.clone() {
            let uri = &upstream_request.uri;
            if let Some(new_path) = rewritten_path(&route, uri.path(), uri.query()) {
                let new_uri = new_path
                    .parse::<http::Uri>()
                    .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
                upstream_request.set_uri(new_uri);
            }
        }
        Ok(())
    }

    /// Enforces the route's `max_body_size` on a body that streams without a declared
    /// length (HTTP/2 data frames, chunked), and its `timeout` while the body is still
    /// being sent.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let route = ctx.route.clone();
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
        }
        if let Some(max) = route.as_ref().and_then(|r| r.max_body_size) {
            if ctx.body_bytes > max {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        if ctx.mirror.is_some() {
            let piece = body.as_deref().unwrap_or_default();
            self.0.mirror_body(ctx, piece, end_of_stream);
        }
        check_route_timeout(ctx)
    }

    /// Enforces the route's total `timeout` while the body streams: a response that keeps
    /// trickling in never outlives it.
    /// Encodes the body when the response was planned for compression: each piece is
    /// flushed through the encoder as it arrives (streams stay live).
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        let Some(encoder) = ctx.encoder.as_mut() else {
            return Ok(None);
        };
        let encode_error =
            |e: std::io::Error| Error::explain(ErrorType::InternalError, format!("encoding: {e}"));
        let mut out = match body.take() {
            Some(piece) if !piece.is_empty() => encoder.push(&piece).map_err(encode_error)?,
            _ => Vec::new(),
        };
        if end_of_stream {
            if let Some(encoder) = ctx.encoder.take() {
                out.extend(encoder.finish().map_err(encode_error)?);
            }
        }
        *body = (!out.is_empty()).then(|| Bytes::from(out));
        Ok(None)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        check_route_timeout(ctx).map(|()| None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        // Interim responses are not the answer; a 101 (an upgrade) is.
        if status >= 200 || status == 101 {
            if let Some((began, endpoint)) = ctx.attempt.take() {
                self.0.metrics.upstream_answered(
                    ctx.upstream_name(),
                    &endpoint,
                    status,
                    began.elapsed().as_secs_f64(),
                );
            }
        }
        let encoding = ctx
            .route
            .as_ref()
            .and_then(|r| r.compress.as_ref())
            .and_then(|settings| {
                crate::pipeline::compress::plan(
                    ctx.compression,
                    settings,
                    status,
                    &upstream_response.headers,
                )
            });
        let plan = ResponseHeaders {
            ctx,
            status,
            encoding: encoding.as_ref(),
            keep_framing: true,
        };
        let mut added: Vec<(http::HeaderName, http::HeaderValue)> = Vec::with_capacity(4);
        plan.add(&mut added);
        apply_plan(
            upstream_response,
            |fields, name| plan.keeps(fields, name),
            added,
        )?;
        if let Some(plan) = &encoding {
            ctx.compressed = Some(plan.encoding);
            if !session.is_http2() {
                upstream_response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
            if session.req_header().method != http::Method::HEAD {
                ctx.encoder = crate::pipeline::compress::Encoder::new(plan.encoding).ok();
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let answer = respond::error_answer(e);
        let status = answer.as_ref().map_or(0, |a| a.status);
        if status >= 500 {
            self.0.log_failure(ctx, status, e);
        } else {
            tracing::debug!(request_id = %ctx.request_id, status, error = %e, "request failed");
        }
        if let Some(answer) = answer.filter(|_| session.response_written().is_none()) {
            if let Err(write_error) = respond::send(session, ctx, &answer).await {
                tracing::debug!(error = %write_error, "could not send error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let header = session.req_header();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| SocketAddr::new(a.ip(), a.port()));
        ctx.in_flight = None;
        self.0.settle_attempt(ctx, !(502..=504).contains(&status));
        // An attempt that ended in a gateway error without passing through the hooks
        // above (a response timeout) is counted here; one the client abandoned is not.
        if let Some((_, endpoint)) = ctx.attempt.take() {
            if (502..=504).contains(&status) {
                self.0
                    .metrics
                    .upstream_failed(ctx.upstream_name(), &endpoint, false);
            }
        }
        self.0.record(
            ctx,
            Exchange {
                status,
                method: &header.method,
                path: std::borrow::Cow::Borrowed(header.uri.path()),
                client,
                bytes_sent: session.body_bytes_sent() as u64,
                bytes_received: session.body_bytes_read() as u64,
            },
        );
    }
}

/// pingora's request and response heads, edited alike by the core's header plans
/// (through their own methods, which keep HTTP/1 field-name case in step).
trait PingoraHead {
    fn fields(&self) -> &http::HeaderMap;
    fn remove(&mut self, name: &http::HeaderName);
    fn append(&mut self, name: http::HeaderName, value: http::HeaderValue) -> Result<()>;
}

impl PingoraHead for RequestHeader {
    fn fields(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn remove(&mut self, name: &http::HeaderName) {
        self.remove_header(name);
    }
    fn append(&mut self, name: http::HeaderName, value: http::HeaderValue) -> Result<()> {
        self.append_header(name, value).map(|_| ())
    }
}

impl PingoraHead for ResponseHeader {
    fn fields(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn remove(&mut self, name: &http::HeaderName) {
        self.remove_header(name);
    }
    fn append(&mut self, name: http::HeaderName, value: http::HeaderValue) -> Result<()> {
        self.append_header(name, value).map(|_| ())
    }
}

/// Drops the fields a plan does not keep, then appends what it adds.
fn apply_plan(
    head: &mut impl PingoraHead,
    keeps: impl Fn(&http::HeaderMap, &[u8]) -> bool,
    added: Vec<(http::HeaderName, http::HeaderValue)>,
) -> Result<()> {
    let fields = head.fields();
    let dropped: Vec<http::HeaderName> = fields
        .keys()
        .filter(|name| !keeps(fields, name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in &dropped {
        head.remove(name);
    }
    for (name, value) in added {
        head.append(name, value)?;
    }
    Ok(())
}

/// The error a spent route budget raises on pingora's path: a type of its own, so the
/// failure table tells it from an upstream's read timeout whatever context pingora adds.
pub(crate) const ROUTE_TIMEOUT: ErrorType = ErrorType::Custom("route timeout");

/// The route's total budget, spent: 504, also while the request body is still arriving.
fn check_route_timeout(ctx: &RequestContext) -> Result<()> {
    if let Some(timeout) = ctx.route.as_ref().and_then(|r| r.timeout) {
        if ctx.started.elapsed() > timeout {
            return Error::e_explain(ROUTE_TIMEOUT, "route timeout exceeded");
        }
    }
    Ok(())
}

/// Whether pingora's error came from the downstream side and needs no answer.
/// An HTTP/2 stream the client reset counts as gone too (h2load and browsers abandon
/// streams routinely).
pub(crate) fn is_downstream_gone(e: &Error) -> bool {
    matches!(e.esource(), ErrorSource::Downstream)
        && matches!(
            e.etype(),
            ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error
        )
}
