//! The pingora `ProxyHttp` implementation: one snapshot per request, route, act.
//!
//! Nothing here reads raw config or takes a lock on the request path: the snapshot is
//! loaded once into the request context and every decision reads from it.

mod context;
pub mod forwarded;
pub mod framing;
mod respond;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::model::{Action, Name};
use crate::metrics::Metrics;
use crate::request_record::RequestRecord;
use crate::snapshot::router::{normalize_host, rewritten_path, RequestFacts};
use crate::snapshot::Snapshot;
use crate::trace_export::SpanRecord;
pub use context::{InFlightGauge, RequestContext};
pub use respond::redirect_location;
use respond::{error_response, Reply};

/// Names the connection's peer and listening address for pingora: the listening address,
/// not the connection's own, is how the proxy tells which listener (and so which routes)
/// a request arrived on.
pub(crate) fn record_addresses(
    stream: &mut pingora::protocols::l4::stream::Stream,
    peer: SocketAddr,
    bound: SocketAddr,
) {
    let digest =
        pingora::protocols::SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(stream));
    let _ = digest.peer_addr.set(Some(peer.into()));
    let _ = digest.local_addr.set(Some(bound.into()));
    pingora::protocols::GetSocketDigest::set_socket_digest(stream, digest);
}

/// State shared by every request; each field is read without locks.
/// One draw for a weighted route: each request independently, so the split holds across
/// workers and connections without shared state.
pub fn pick_backend(backends: &[crate::config::model::WeightedUpstream]) -> Option<&Name> {
    crate::config::model::pick_weighted(backends, rand::random::<u64>())
}

#[derive(Clone)]
pub struct Gateway {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    /// Feeds passive health; logs an ejection when one happens.
    pub(crate) fn note_outcome(
        &self,
        pool: &crate::snapshot::pool::Pool,
        address: SocketAddr,
        ok: bool,
    ) {
        if let Some(duration) = pool.record_outcome(address, ok) {
            self.metrics
                .ejections
                .with_label_values(&[pool.name()])
                .inc();
            tracing::warn!(upstream = %pool.name(), endpoint = %address, ejected_for = ?duration, "endpoint ejected after consecutive failures");
        }
    }

    /// The listener a request arrived on, named by the request's own snapshot.
    fn listener_of(session: &Session, snapshot: &Snapshot) -> Option<Name> {
        match session.server_addr()? {
            PingoraAddr::Inet(addr) => snapshot.listener_name(*addr),
            _ => None,
        }
    }

    /// Spends a retry if the upstream's retry budget allows, counting the failed attempt
    /// against the endpoint's passive health.
    fn take_retry(&self, ctx: &mut RequestContext) -> bool {
        let Some(pool) = ctx.pool.clone() else {
            return false;
        };
        if let Some(address) = ctx.endpoint {
            self.note_outcome(&pool, address, false);
        }
        match pool.try_retry() {
            Some(guard) => {
                ctx.retry_budget = Some(guard);
                ctx.retries_left -= 1;
                self.metrics
                    .upstream_retries
                    .with_label_values(&[pool.name()])
                    .inc();
                true
            }
            None => {
                self.metrics
                    .retry_budget_exhausted
                    .with_label_values(&[pool.name()])
                    .inc();
                false
            }
        }
    }

    async fn reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        reply: Reply,
    ) -> Result<bool> {
        reply.send(session, ctx).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext::new(self.snapshot.load_full(), context::unnamed_listener())
    }

    /// No downstream modules: pingora's default adds a (disabled) compression module that
    /// every response would still pass through.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Pipelined requests are answered one by one, in order, instead of the connection
        // being closed after the first.
        session.as_downstream_mut().set_pipelining_enabled(true);
        if let Some(listener) = Self::listener_of(session, &ctx.snapshot) {
            ctx.listener = listener;
        }
        ctx.in_flight_gauge = Some(InFlightGauge::enter(
            self.metrics
                .requests_in_flight
                .with_label_values(&[&ctx.listener]),
        ));
        ctx.downstream_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.request_id = request_id(
            session
                .req_header()
                .headers
                .get("x-request-id")
                .map(|v| v.as_bytes()),
        );
        ctx.trace = trace::TraceContext::continue_or_start(
            session
                .req_header()
                .headers
                .get("traceparent")
                .map(|v| v.as_bytes()),
            ctx.sample_ratio(),
        );

        if let Some(h1) = session.as_http1() {
            if let Err(refusal) = framing::check_request_head(&h1.get_headers_raw_bytes()) {
                tracing::warn!(
                    listener = %ctx.listener,
                    request_id = %ctx.request_id,
                    status = refusal.status,
                    reason = refusal.reason,
                    "refused request"
                );
                session.set_keepalive(None);
                return self
                    .reply(
                        session,
                        ctx,
                        Reply::plain(refusal.status, format!("{}\n", refusal.reason)),
                    )
                    .await;
            }
        }

        // The HTTP/1.1 loop's rules, for HTTP/2 and handed-over requests: one normalised
        // path for routing and the upstream.
        let path = session.req_header().uri.path();
        match crate::http_path::normalize_path(path) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(normalised)) => {
                let uri = &session.req_header().uri;
                let target = match uri.query() {
                    Some(query) => format!("{normalised}?{query}"),
                    None => normalised,
                };
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = target.parse().ok();
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    session.req_header_mut().set_uri(uri);
                }
            }
            Err(e) => {
                session.set_keepalive(None);
                let body = format!("{e}\n");
                return self.reply(session, ctx, Reply::plain(400, body)).await;
            }
        }
        let header = session.req_header();
        let raw_host = header
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| header.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        ctx.host = normalize_host(raw_host).into_owned();
        let facts = RequestFacts {
            host: &ctx.host,
            path: header.uri.path(),
            query: header.uri.query(),
            method: &header.method,
            headers: &header.headers,
        };
        let snapshot = ctx.snapshot.clone();
        let Some(route) = snapshot.router.route(&ctx.listener, &facts).cloned() else {
            tracing::debug!(listener = %ctx.listener, host = %ctx.host, path = %header.uri.path(), "no route");
            return self
                .reply(session, ctx, Reply::plain(404, "no route\n"))
                .await;
        };
        ctx.route = Some(route.clone());
        match &route.action {
            Action::Respond(respond) => {
                let reply = Reply {
                    status: respond.status.as_u16(),
                    content_type: respond.content_type.clone(),
                    body: respond.body.clone(),
                    location: None,
                };
                self.reply(session, ctx, reply).await
            }
            Action::Redirect(redirect) => {
                let location = redirect_location(
                    redirect,
                    session.req_header().uri.path(),
                    session.req_header().uri.query(),
                    raw_host,
                    ctx.downstream_tls,
                );
                let reply = Reply {
                    status: redirect.status.as_u16(),
                    content_type: http::HeaderValue::from_static("text/plain; charset=utf-8"),
                    body: Bytes::new(),
                    location: Some(location),
                };
                self.reply(session, ctx, reply).await
            }
            Action::Upstream(_) | Action::Weighted(_) => {
                let picked = match &route.action {
                    Action::Upstream(name) => Some(name),
                    Action::Weighted(backends) => pick_backend(backends),
                    Action::Redirect(_) | Action::Respond(_) => None,
                };
                let Some(name) = picked else {
                    return self
                        .reply(session, ctx, Reply::plain(500, "backend not resolved\n"))
                        .await;
                };
                let Some(pool) = snapshot.pools.get(name).cloned() else {
                    return self
                        .reply(session, ctx, Reply::plain(503, "no such upstream\n"))
                        .await;
                };
                if pool.available_count() == 0 {
                    tracing::warn!(
                        upstream = %name,
                        request_id = %ctx.request_id,
                        members = pool.members.len(),
                        "no healthy endpoint"
                    );
                    ctx.pool = Some(pool);
                    return self
                        .reply(session, ctx, Reply::plain(503, "no healthy endpoint\n"))
                        .await;
                }
                let declared = session
                    .req_header()
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(n), Some(max)) = (declared, route.max_body_size) {
                    if n > max {
                        session.set_keepalive(None);
                        return self
                            .reply(session, ctx, Reply::plain(413, "request body too large\n"))
                            .await;
                    }
                }
                ctx.retries_left = pool.upstream.retries;
                ctx.budget = Some(pool.start_request());
                let client = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip());
                let headers = &session.req_header().headers;
                ctx.hash_key = match client {
                    Some(ip) => forwarded::hash_key(&pool.upstream.hash_on, ip, |name| {
                        headers.get(name).map(|v| v.as_bytes())
                    }),
                    None => 0,
                };
                ctx.pool = Some(pool);
                Ok(false)
            }
        }
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
        let Some(member) = pool.select(&ctx.tried, ctx.hash_key) else {
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
        ctx.endpoint = Some(address);
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
            self.metrics
                .upstream_failed(ctx.upstream_name(), &endpoint, true);
        }
        tracing::warn!(
            upstream = %ctx.upstream_name(),
            endpoint = %peer._address,
            request_id = %ctx.request_id,
            error = %e,
            "connect to endpoint failed"
        );
        if ctx.retries_left > 0 && self.take_retry(ctx) {
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
        client_reused: bool,
    ) -> Box<Error> {
        ctx.h2_checkout = None;
        if let Some((_, endpoint)) = ctx.attempt.take() {
            self.metrics
                .upstream_failed(ctx.upstream_name(), &endpoint, false);
        }
        let mut e = e.more_context(format!("endpoint {}", peer._address));
        let idempotent = session.req_header().method.is_idempotent();
        let replayable = idempotent && !session.as_ref().retry_buffer_truncated();
        let reset = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if replayable
            && reset
            && ctx.retries_left > 0
            && session.response_written().is_none()
            && self.take_retry(ctx)
        {
            e.set_retry(true);
        } else if replayable {
            e.retry.decide_reuse(client_reused);
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
        // What a client says about earlier hops is believed only from a trusted proxy.
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = client_ip.is_some_and(|ip| {
            ctx.snapshot
                .config
                .listeners
                .iter()
                .any(|l| l.name == ctx.listener && l.is_trusted(ip))
        });
        if let Some(ip) = client_ip {
            let prior: Vec<u8> = upstream_request
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .join(&b", "[..]);
            let chain = forwarded::forwarded_for(Some(&prior), ip, trusted);
            let chain = http::HeaderValue::from_bytes(&chain)
                .map_err(|e| Error::because(ErrorType::InternalError, "x-forwarded-for", e))?;
            upstream_request.insert_header("x-forwarded-for", chain)?;
        }
        if !(trusted && upstream_request.headers.contains_key("x-forwarded-proto")) {
            let proto = if ctx.downstream_tls { "https" } else { "http" };
            upstream_request.insert_header("x-forwarded-proto", proto)?;
        }
        if !trusted {
            upstream_request.remove_header("x-forwarded-host");
        }
        // HTTP/1.1 requires Host; an HTTP/1.0 client may have sent none. Like nginx's
        // `proxy_set_header Host $proxy_host`, name the endpoint.
        if upstream_request.headers.get(http::header::HOST).is_none() {
            let authority = upstream_request
                .uri
                .authority()
                .map(|a| a.to_string())
                .or_else(|| ctx.endpoint.map(|e| e.to_string()));
            if let Some(authority) = authority {
                upstream_request.insert_header(http::header::HOST, authority)?;
            }
        }
        if !ctx.host.is_empty() && upstream_request.headers.get("x-forwarded-host").is_none() {
            if let Some(host) = upstream_request.headers.get(http::header::HOST).cloned() {
                upstream_request.insert_header("x-forwarded-host", host)?;
            }
        }
        // Only TLS listeners can have client certificates; plain ones skip the lookup.
        let identity_header = if ctx.downstream_tls {
            ctx.client_identity_header()
        } else {
            None
        };
        if let Some(header) = identity_header {
            // Never trust the client's own copy of the identity header.
            upstream_request.remove_header(&header);
            let identity = session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .filter(|ssl| !ssl.cert_digest.is_empty())
                .map(|ssl| client_identity(ssl));
            if let Some(identity) = identity {
                upstream_request.insert_header(header, identity)?;
            }
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        upstream_request.insert_header("traceparent", ctx.trace.header_value())?;
        if let Some(route) = ctx.route.clone() {
            let uri = &upstream_request.uri;
            if let Some(new_path) = rewritten_path(&route, uri.path(), uri.query()) {
                let new_uri = new_path
                    .parse::<http::Uri>()
                    .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
                upstream_request.set_uri(new_uri);
            }
            let edits = &route.request_headers;
            for name in &edits.remove {
                upstream_request.remove_header(name);
            }
            for (name, value) in &edits.set {
                upstream_request.insert_header(name.clone(), value.clone())?;
            }
            for (name, value) in &edits.add {
                upstream_request.append_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    /// Enforces the route's `max_body_size` on a body that streams without a declared
    /// length (HTTP/2 data frames, chunked).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(chunk), Some(max)) = (body, ctx.route.as_ref().and_then(|r| r.max_body_size)) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > max {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    /// Enforces the route's total `timeout` while the body streams: a response that keeps
    /// trickling in never outlives it.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let Some(timeout) = ctx.route.as_ref().and_then(|r| r.timeout) {
            if ctx.started.elapsed() > timeout {
                return Error::e_explain(ErrorType::ReadTimedout, "route timeout exceeded");
            }
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        // Interim responses are not the answer; a 101 (an upgrade) is.
        if status >= 200 || status == 101 {
            if let Some((began, endpoint)) = ctx.attempt.take() {
                self.metrics.upstream_answered(
                    ctx.upstream_name(),
                    &endpoint,
                    status,
                    began.elapsed().as_secs_f64(),
                );
            }
        }
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(route) = &ctx.route {
            respond::apply_response_edits(upstream_response, &route.response_headers)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let (status, body) = error_response(e);
        if status >= 500 {
            tracing::warn!(
                listener = %ctx.listener,
                route = %ctx.route_name(),
                upstream = %ctx.upstream_name(),
                endpoint = ?ctx.endpoint,
                request_id = %ctx.request_id,
                status,
                error = %e,
                "request failed"
            );
        } else {
            tracing::debug!(request_id = %ctx.request_id, status, error = %e, "request failed");
        }
        if status > 0 && session.response_written().is_none() {
            // The connection closes after an error; say so, so the client does not
            // send its next request into a closing socket.
            session.set_keepalive(None);
            if let Err(write_error) = Reply::plain(status, body).send(session, ctx).await {
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
        if let (Some(pool), Some(address)) = (&ctx.pool, ctx.endpoint) {
            self.note_outcome(pool, address, !(502..=504).contains(&status));
        }
        // An attempt that ended in a gateway error without passing through the hooks
        // above (a response timeout) is counted here; one the client abandoned is not.
        if let Some((_, endpoint)) = ctx.attempt.take() {
            if (502..=504).contains(&status) {
                self.metrics
                    .upstream_failed(ctx.upstream_name(), &endpoint, false);
            }
        }
        self.record(
            ctx,
            &Exchange {
                status,
                method: &header.method,
                path: header.uri.path(),
                client,
                bytes_sent: session.body_bytes_sent() as u64,
                bytes_received: session.body_bytes_read() as u64,
            },
        );
    }
}

/// What the metrics and the access log need of a finished request, from either path.
pub struct Exchange<'a> {
    pub status: u16,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub client: Option<SocketAddr>,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
}

impl Gateway {
    /// Counts a finished request, writes its access log line and hands its span to the
    /// exporter: the one place both request paths report a request, so the metrics, the
    /// log and the trace always describe the same requests.
    pub fn record(&self, ctx: &RequestContext, exchange: &Exchange<'_>) {
        let elapsed = ctx.started.elapsed();
        let (route, upstream) = (ctx.route_name(), ctx.upstream_name());
        let code = crate::metrics::status_code(exchange.status);
        self.metrics
            .requests
            .with_label_values(&[&*ctx.listener, route, upstream, code.as_ref()])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if exchange.bytes_received > 0 {
            self.metrics
                .request_bytes
                .with_label_values(&[route])
                .inc_by(exchange.bytes_received);
        }
        if exchange.bytes_sent > 0 {
            self.metrics
                .response_bytes
                .with_label_values(&[route])
                .inc_by(exchange.bytes_sent);
        }
        let export = ctx
            .snapshot
            .trace_export
            .as_ref()
            .filter(|_| ctx.trace.sampled());
        let access_log = ctx.snapshot.edges.access_log.as_ref();
        if export.is_none() && access_log.is_none() {
            return;
        }
        // Filled once, shared by whichever sinks are on.
        let request = Arc::new(RequestRecord {
            listener: ctx.listener.clone(),
            client: exchange.client,
            method: exchange.method.clone(),
            host: ctx.host.clone(),
            path: exchange.path.to_string(),
            status: exchange.status,
            route: ctx.route.as_ref().map(|r| r.name.clone()),
            upstream: ctx.pool.as_ref().map(|p| p.name().clone()),
            endpoint: ctx.endpoint,
            bytes_sent: exchange.bytes_sent,
            duration: elapsed,
            request_id: ctx.request_id.clone(),
            trace: ctx.trace,
        });
        if let Some(export) = export {
            let (start_unix_nanos, end_unix_nanos) = crate::trace_export::span_times(elapsed);
            let span = SpanRecord {
                request: request.clone(),
                start_unix_nanos,
                end_unix_nanos,
            };
            if !export.submit(span) {
                self.metrics
                    .tracing_spans_dropped
                    .with_label_values(&["queue_full"])
                    .inc();
            }
        }
        if let Some(access_log) = access_log {
            access_log.write(request);
        }
    }
}

/// The request's own `x-request-id` when usable, else a fresh v4 UUID from the
/// thread-local generator (`Uuid::new_v4` asks the kernel for randomness, a syscall, on
/// every request).
pub fn request_id(offered: Option<&[u8]>) -> String {
    offered
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .map(str::to_string)
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string()
        })
}

/// The verified client certificate, in the style of Envoy's `x-forwarded-client-cert`:
/// what pingora's TLS digest keeps of it (hash, serial, organization).
pub(crate) fn client_identity(ssl: &pingora::protocols::tls::SslDigest) -> String {
    let hash: String = ssl.cert_digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("Hash={hash}");
    if let Some(serial) = &ssl.serial_number {
        out.push_str(&format!(";Serial={serial}"));
    }
    if let Some(org) = &ssl.organization {
        out.push_str(&format!(";O=\"{}\"", org.replace('"', "")));
    }
    out
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
