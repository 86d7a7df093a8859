//! One HTTP/2 stream: the request core's decision, then a local answer or the exchange
//! with an HTTP/1.1 upstream, relayed back as HEADERS and DATA frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use pingora::apps::ServerApp;
use pingora::protocols::tls::SslDigest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::io::{self, DataWriter, PumpError};
use super::upstream_h2;
use crate::pipeline::{
    decide, Core, Decision, Exchange, Failure as FailureKind, HeaderSink, Incoming, LocalAnswer,
    RequestContext, ResponseHeaders, UpstreamHeaders,
};
use crate::serving::h1::body::{Limits, Never, Output, Transfer, CLIENT_TIMEOUT, COALESCE};
use crate::serving::h1::forward::{
    self, capped, connect, deadline, read_response_head, response_framing, Failure, RequestMeta,
    ResponseFraming,
};
use crate::serving::h1::head::{FieldsView, Framing, ResponseHead};
use crate::serving::h1::upstream_cache::{self, CacheKey};
use crate::serving::h1::{ConnectionInfo, Engine};
use crate::snapshot::pool::Pool;

/// What every stream of a connection shares.
pub struct Shared<'a, A> {
    pub engine: &'a Engine<A>,
    pub info: &'a ConnectionInfo,
    pub tls: Option<&'a Arc<SslDigest>>,
    pub in_flight: &'a prometheus::IntGauge,
}

/// Fields whose value is new in every message: HPACK sends them as literals never indexed
/// (`h2` does so for a sensitive value). Indexed, each one would be inserted into the
/// connection's dynamic table only to evict an entry that could have been reused, and
/// every later lookup of the name would walk the chain of dead request ids: profiled at
/// 2% of the HTTP/2 loop's CPU in the encoder alone.
const UNIQUE_PER_MESSAGE: &[&str] = &["x-request-id", "traceparent"];

/// A header map as the plans' sink. HTTP/2 forbids connection-specific fields (RFC 9113
/// 8.2.2), and `h2` refuses a head that has one, so they never get in.
struct H2Fields(http::HeaderMap);

impl HeaderSink for H2Fields {
    fn put(&mut self, name: &[u8], value: &[u8]) {
        const CONNECTION_SPECIFIC: &[&[u8]] = &[
            b"connection",
            b"keep-alive",
            b"proxy-connection",
            b"transfer-encoding",
            b"upgrade",
        ];
        if CONNECTION_SPECIFIC
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            return;
        }
        if let (Ok(name), Ok(mut value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            if UNIQUE_PER_MESSAGE.contains(&name.as_str()) {
                value.set_sensitive(true);
            }
            self.0.append(name, value);
        }
    }
}

fn length_field(fields: &mut H2Fields, n: u64) {
    fields
        .0
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
}

fn response_of(status: u16, fields: H2Fields) -> http::Response<()> {
    let mut response = http::Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *response.headers_mut() = fields.0;
    response
}

/// How a stream ended, for the connection's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Served,
    /// Refused for the client to send it again on a new connection.
    Refused,
    /// The client reset it before its response began.
    ResetByClient,
}

/// Serves one stream to its end.
pub async fn serve<A: ServerApp + Send + Sync + 'static>(
    shared: &Shared<'_, A>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> StreamEnd {
    let core = &shared.engine.core;
    let info = shared.info;
    let mut ctx = info.request_context(core, core.snapshot.load_full(), shared.in_flight);
    let (parts, mut body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let declared_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let incoming = Incoming {
        method: &parts.method,
        version: http::Version::HTTP_2,
        target,
        authority: parts.uri.authority().map(|a| a.as_str()),
        fields: &parts.headers,
        raw_head: None,
        declared_length,
        peer: info.peer.ip(),
    };
    let mut end = StreamEnd::Served;
    let (status, bytes_sent) = match decide(&incoming, &mut ctx).await {
        Decision::Answer(answer) => send_answer(&mut respond, &answer, &ctx, &parts.method),
        Decision::Forward(forward) => {
            let upstream = &forward.pool.upstream;
            if forward.tunnel || upstream.tls.is_some() {
                // The routes changed since the connection opened: this stream needs an
                // upstream session only pingora-proxy keeps. Never processed, so the
                // client may send it again, on a new connection (RFC 9113 8.7).
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                end = StreamEnd::Refused;
                (0, 0)
            } else {
                let framing = if body.is_end_stream() {
                    Framing::None
                } else {
                    match declared_length {
                        Some(0) => Framing::None,
                        Some(n) => Framing::Length(n),
                        None => Framing::Chunked,
                    }
                };
                let meta = RequestMeta {
                    method: parts.method.clone(),
                    minor: 1,
                    head_len: 0,
                    framing,
                    client_keepalive: true,
                    expect_continue: false,
                    needs_host: forward.host.is_none(),
                    max_body_size: ctx.route.as_ref().and_then(|r| r.max_body_size),
                };
                let identity = shared
                    .tls
                    .and_then(|digest| crate::pipeline::serving::client_identity(digest));
                let plan = UpstreamHeaders {
                    ctx: &ctx,
                    peer: info.peer.ip(),
                    host: forward.host,
                    identity: identity.as_deref(),
                    tunnel: false,
                    keep_framing: false,
                };
                let mut head = Vec::new();
                let mut h2_request = None;
                if upstream.http2 {
                    h2_request = Some(H2Request::new(
                        &plan,
                        &parts.headers,
                        &forward.path,
                        forward.query,
                        forward.host,
                    ));
                } else {
                    head.reserve(1024);
                    forward::write_upstream_head(
                        &mut head,
                        &meta,
                        &forward.path,
                        forward.query,
                        &parts.headers,
                        &plan,
                    );
                }
                let pool = forward.pool;
                let mut exchange = StreamExchange {
                    core,
                    ctx: &mut ctx,
                    meta: &meta,
                    head,
                    h2_request,
                    body: &mut body,
                    respond: &mut respond,
                    client_reset: false,
                };
                let answered = exchange.proxy(&pool).await;
                if exchange.client_reset {
                    end = StreamEnd::ResetByClient;
                }
                answered
            }
        }
    };
    ctx.in_flight = None;
    let bytes_received = ctx.body_bytes;
    core.record(
        &mut ctx,
        Exchange {
            status,
            method: &parts.method,
            path: std::borrow::Cow::Borrowed(parts.uri.path()),
            client: Some(info.peer),
            bytes_sent,
            bytes_received,
        },
    );
    end
}

/// Sends an answer of the gateway's own; the status and body bytes sent (0, 0 when the
/// client was gone).
fn send_answer(
    respond: &mut SendResponse<Bytes>,
    answer: &LocalAnswer,
    ctx: &RequestContext,
    method: &http::Method,
) -> (u16, u64) {
    let mut fields = H2Fields(http::HeaderMap::with_capacity(8));
    answer.write_fields(ctx, &mut fields);
    if answer.sends_length() {
        length_field(&mut fields, answer.body.len() as u64);
    }
    let has_body = answer.has_body(method);
    match respond.send_response(response_of(answer.status, fields), !has_body) {
        Ok(mut send) if has_body => {
            // Small, and the gateway's own: queued whole, sent as the window allows.
            match send.send_data(answer.body.clone(), true) {
                Ok(()) => (answer.status, answer.body.len() as u64),
                Err(_) => (answer.status, 0),
            }
        }
        Ok(_) => (answer.status, 0),
        Err(e) => {
            tracing::debug!(error = %e, "could not send an answer on a stream");
            (0, 0)
        }
    }
}

enum Attempt {
    /// The status and body bytes the client got.
    Done(u16, u64),
    /// A pooled connection turned out closed before any response: sent again on a fresh
    /// one, which is no retry.
    Stale,
    Failed {
        failure: Failure,
        repeatable: bool,
    },
    /// The client reset the stream before the response began: the work stops there.
    ClientReset,
}

/// An HTTP/2 upstream session that failed a stream before its answer: a kept session
/// the upstream had closed meanwhile is no retry when nothing but the head was sent.
fn session_failed(e: h2::Error, reused: bool, no_body: bool) -> Attempt {
    if reused && no_body {
        return Attempt::Stale;
    }
    Attempt::Failed {
        failure: Failure::Reset(std::io::Error::other(e)),
        repeatable: no_body,
    }
}

/// How far an attempt got before the response head arrived.
enum Sent {
    Head {
        stream: TcpStream,
        response: BytesMut,
        fields: Vec<crate::serving::h1::head::Field>,
        head: ResponseHead,
        body_complete: bool,
    },
    Ended(Attempt),
    BodyTooLarge,
}

/// One stream's forwarded request, across its attempts.
struct StreamExchange<'s> {
    core: &'s Core,
    ctx: &'s mut RequestContext,
    meta: &'s RequestMeta,
    /// The upstream head, all but its Host fallback and final empty line (HTTP/1.1
    /// upstreams).
    head: Vec<u8>,
    /// The upstream request's parts (HTTP/2 upstreams).
    h2_request: Option<H2Request>,
    body: &'s mut RecvStream,
    respond: &'s mut SendResponse<Bytes>,
    /// The client reset the stream mid-exchange (counted against rapid reset).
    client_reset: bool,
}

impl StreamExchange<'_> {
    /// Forwards the request to a member of `pool`, retrying as the route allows; the
    /// status and body bytes the client got.
    async fn proxy(&mut self, pool: &Arc<Pool>) -> (u16, u64) {
        // A small body is read whole first: it rides with the head in one send, and can
        // be sent again if an attempt fails before the upstream answers.
        let buffered = match self.meta.framing {
            Framing::None => {
                self.core.mirror_body(self.ctx, b"", true);
                Some(Vec::new())
            }
            // An HTTP/2 upstream takes the body as it streams (gRPC streams both ways).
            _ if self.h2_request.is_some() => None,
            Framing::Length(n) if n as usize <= COALESCE => {
                let limit = capped(CLIENT_TIMEOUT, deadline(self.ctx));
                match io::read_whole(self.body, n as usize, limit).await {
                    Ok(whole) => {
                        self.ctx.body_bytes = whole.len() as u64;
                        self.core.mirror_body(self.ctx, &whole, true);
                        Some(whole)
                    }
                    Err(_) => {
                        tracing::debug!(request_id = %self.ctx.request_id, "client went away while sending its body");
                        return (0, 0);
                    }
                }
            }
            _ => None,
        };
        let head_end = self.head.len();
        let mut fresh = false;
        let _in_flight = pool.start_request();
        loop {
            let Some(member) = pool.select_preferring(
                &self.ctx.tried,
                self.ctx.hash_key,
                self.ctx.affinity.as_deref(),
            ) else {
                return self.answer(&LocalAnswer::failure(FailureKind::NoHealthyEndpoint));
            };
            let address = member.endpoint.address;
            let label = member.label.clone();
            self.ctx.begin_attempt(address);
            self.ctx.in_flight = Some(member.state.start_request());
            let began = Instant::now();
            self.ctx.upstream_answer = None;
            let result = if self.h2_request.is_some() {
                self.attempt_h2(pool, address, fresh).await
            } else {
                self.attempt(pool, address, fresh, head_end, buffered.as_deref())
                    .await
            };
            fresh = false;
            match result {
                Attempt::Done(status, sent) => {
                    if let Some((answered, at)) = self.ctx.upstream_answer.take() {
                        let waited = at.saturating_duration_since(began).as_secs_f64();
                        self.core
                            .metrics
                            .upstream_answered(pool.name(), &label, answered, waited);
                    }
                    self.core
                        .settle_attempt(self.ctx, !matches!(status, 502..=504));
                    return (status, sent);
                }
                Attempt::ClientReset => {
                    self.client_reset = true;
                    return (0, 0);
                }
                Attempt::Stale => fresh = true,
                Attempt::Failed {
                    failure,
                    repeatable,
                } => {
                    let kind = failure.kind();
                    self.core
                        .metrics
                        .upstream_failed(pool.name(), &label, kind.connect());
                    if self.core.retry_after(self.ctx, kind, repeatable, &failure) {
                        continue;
                    }
                    let reply = LocalAnswer::failure(kind);
                    self.core.log_failure(self.ctx, reply.status, &failure);
                    return self.answer(&reply);
                }
            }
        }
    }

    fn answer(&mut self, reply: &LocalAnswer) -> (u16, u64) {
        send_answer(self.respond, reply, self.ctx, &self.meta.method)
    }

    async fn attempt(
        &mut self,
        pool: &Pool,
        address: SocketAddr,
        fresh: bool,
        head_end: usize,
        buffered: Option<&[u8]>,
    ) -> Attempt {
        let (key, limits) = endpoint_limits(pool, address, self.ctx);
        let sending = Sending {
            core: self.core,
            ctx: self.ctx,
            meta: self.meta,
            head: &mut self.head,
            body: self.body,
        };
        let respond = &mut *self.respond;
        // Until the response begins, a client reset ends the attempt at once: a client
        // opening and resetting streams (rapid reset) costs no more upstream work than
        // what had already started.
        let sent = tokio::select! {
            biased;
            sent = sending.send(pool, key, fresh, head_end, buffered, limits) => sent,
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => Sent::Ended(Attempt::ClientReset),
        };
        match sent {
            Sent::Ended(attempt) => attempt,
            Sent::BodyTooLarge => {
                let (status, sent) = self.answer(&LocalAnswer::body_too_large());
                Attempt::Done(status, sent)
            }
            Sent::Head {
                stream,
                response,
                fields,
                head,
                body_complete,
            } => {
                let response = Upstream {
                    stream,
                    response,
                    fields,
                    head,
                };
                match self
                    .relay_response(response, key, limits, body_complete)
                    .await
                {
                    Ok(done) => done,
                    Err(failure) => Attempt::Failed {
                        failure,
                        repeatable: false,
                    },
                }
            }
        }
    }

    /// One attempt on an HTTP/2 upstream: the request body and the response move at
    /// once (a gRPC call may stream both ways), each within its receiver's window.
    async fn attempt_h2(&mut self, pool: &Pool, address: SocketAddr, fresh: bool) -> Attempt {
        let upstream = &pool.upstream;
        let (key, limits) = endpoint_limits(pool, address, self.ctx);
        let Some(request) = self
            .h2_request
            .as_ref()
            .map(|r| r.build(&self.meta.method, address))
        else {
            return Attempt::Failed {
                failure: Failure::InvalidResponse("no HTTP/2 request"),
                repeatable: false,
            };
        };
        let no_body = self.body.is_end_stream();
        let connect_limit = capped(upstream.connect_timeout, limits.deadline);
        let (mut session, reused) = match upstream_h2::session(key, fresh, connect_limit).await {
            Ok(session) => session,
            Err(failure) => {
                tracing::warn!(upstream = %pool.name(), endpoint = %address, request_id = %self.ctx.request_id, error = %failure, "connect to endpoint failed");
                return Attempt::Failed {
                    failure,
                    repeatable: true,
                };
            }
        };
        let (response, upstream_send) = match session.send_request(request, no_body) {
            Ok(pair) => pair,
            Err(e) => return session_failed(e, reused, no_body),
        };
        let max_size = self.meta.max_body_size;
        // The mirror's copy is fed as the body streams, and leaves once it is whole.
        let mut copy = self.ctx.mirror.take();
        let feed = copy.as_mut();
        let body = &mut *self.body;
        let respond = &mut *self.respond;
        let ctx = &mut *self.ctx;
        let method = &self.meta.method;
        let pump = async move {
            if no_body {
                return Ok(0);
            }
            let mut upstream_send = upstream_send;
            let pumped = upstream_h2::relay(
                body,
                &mut upstream_send,
                CLIENT_TIMEOUT,
                max_size,
                limits,
                feed,
            )
            .await;
            if pumped.is_err() {
                upstream_send.send_reset(h2::Reason::CANCEL);
            }
            pumped
        };
        let answer = async {
            let head = tokio::select! {
                biased;
                head = tokio::time::timeout(limits.read_limit(), response) => head,
                _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return Attempt::ClientReset,
            };
            let response = match head {
                Err(_) => {
                    let failure = if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                        Failure::RouteTimeout
                    } else {
                        Failure::ReadTimeout
                    };
                    return Attempt::Failed {
                        failure,
                        repeatable: no_body,
                    };
                }
                Ok(Err(e)) => return session_failed(e, reused, no_body),
                Ok(Ok(response)) => response,
            };
            let (parts, mut upstream_body) = response.into_parts();
            let status = parts.status.as_u16();
            ctx.upstream_answer = Some((status, Instant::now()));
            let mut fields = H2Fields(http::HeaderMap::with_capacity(parts.headers.len() + 4));
            ResponseHeaders {
                ctx,
                status,
                encoding: None,
                keep_framing: false,
            }
            .write(&parts.headers, &mut fields);
            if let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH) {
                if status != 204 {
                    fields
                        .0
                        .insert(http::header::CONTENT_LENGTH, length.clone());
                }
            }
            let empty = upstream_body.is_end_stream() || *method == http::Method::HEAD;
            let mut send = match respond.send_response(response_of(status, fields), empty) {
                Ok(send) => send,
                Err(_) => return Attempt::ClientReset,
            };
            if empty {
                return Attempt::Done(status, 0);
            }
            let client_limits = Limits {
                read: limits.read,
                write: CLIENT_TIMEOUT,
                deadline: limits.deadline,
            };
            let relayed = upstream_h2::relay(
                &mut upstream_body,
                &mut send,
                limits.read,
                None,
                client_limits,
                None,
            )
            .await;
            match relayed {
                Ok(sent) => Attempt::Done(status, sent),
                Err(e) => {
                    tracing::debug!(request_id = %ctx.request_id, error = ?e, "HTTP/2 response relay ended early");
                    send.send_reset(h2::Reason::INTERNAL_ERROR);
                    Attempt::Done(status, 0)
                }
            }
        };
        let (pumped, answered) = tokio::join!(pump, answer);
        if let (Ok(_), Some(copy)) = (&pumped, copy) {
            crate::pipeline::mirror::send(&self.core.metrics, copy);
        }
        match (pumped, answered) {
            (Err(PumpError::TooLarge), Attempt::ClientReset) => {
                let (status, sent) = send_answer(
                    self.respond,
                    &LocalAnswer::body_too_large(),
                    self.ctx,
                    &self.meta.method,
                );
                Attempt::Done(status, sent)
            }
            (Ok(n), answered) => {
                self.ctx.body_bytes = n;
                answered
            }
            (Err(_), answered) => answered,
        }
    }

    /// Reads the response head, sends the client's, and relays the body within the
    /// client's window. `Err` only before anything reached the client.
    async fn relay_response(
        &mut self,
        upstream: Upstream,
        key: CacheKey,
        limits: Limits,
        request_body_complete: bool,
    ) -> Result<Attempt, Failure> {
        let Upstream {
            mut stream,
            mut response,
            fields: response_fields,
            head,
        } = upstream;
        if head.status == 101 {
            return Err(Failure::InvalidResponse("101 without an upgrade request"));
        }
        self.ctx.upstream_answer = Some((head.status, Instant::now()));
        let view = FieldsView {
            bytes: &response,
            fields: &response_fields,
        };
        let ResponseFraming {
            framing,
            declared_length,
            upstream_keepalive,
        } = response_framing(&view, &head, &self.meta.method)?;
        let encoding = self
            .ctx
            .route
            .as_ref()
            .and_then(|r| r.compress.as_ref())
            .and_then(|settings| {
                crate::pipeline::compress::plan(self.ctx.compression, settings, head.status, &view)
            });
        let encoder = match (&encoding, framing) {
            (Some(plan), Framing::Length(_) | Framing::Chunked | Framing::UntilClose) => {
                crate::pipeline::compress::Encoder::new(plan.encoding).ok()
            }
            _ => None,
        };
        self.ctx.compressed = encoding.as_ref().map(|plan| plan.encoding);
        let mut fields = H2Fields(http::HeaderMap::with_capacity(view.fields.len() + 4));
        ResponseHeaders {
            ctx: self.ctx,
            status: head.status,
            encoding: encoding.as_ref(),
            keep_framing: false,
        }
        .write(&view, &mut fields);
        match framing {
            Framing::Length(n) if encoder.is_none() => length_field(&mut fields, n),
            // A 204 has no length (RFC 9110 8.6); a HEAD or 304 answer keeps the length
            // of what a GET would have sent.
            Framing::None if head.status != 204 && encoding.is_none() => {
                if let Some(n) = declared_length {
                    length_field(&mut fields, n);
                }
            }
            _ => {}
        }
        let status = head.status;
        let empty = matches!(framing, Framing::None | Framing::Length(0));
        let mut send = match self
            .respond
            .send_response(response_of(status, fields), empty)
        {
            Ok(send) => send,
            Err(e) => {
                tracing::debug!(request_id = %self.ctx.request_id, error = %e, "client went away before the response");
                return Ok(Attempt::Done(0, 0));
            }
        };
        response.advance(head.len.min(response.len()));
        if empty {
            if let Framing::Length(0) | Framing::None = framing {
                if upstream_keepalive && request_body_complete && response.is_empty() {
                    upstream_cache::release(key, stream);
                }
            }
            return Ok(Attempt::Done(status, 0));
        }
        let mut out = Vec::new();
        let mut transfer = Transfer {
            buf: &mut response,
            out: &mut out,
            limits: Limits {
                read: limits.read,
                write: CLIENT_TIMEOUT,
                deadline: limits.deadline,
            },
            max_size: None,
            encoder,
            tap: None,
        };
        let mut writer = DataWriter { send: &mut send };
        let relayed = transfer
            .copy(&mut stream, &mut writer, framing, Output::Bare, &Never)
            .await;
        match relayed {
            Ok(bytes_sent) => {
                if send.send_data(Bytes::new(), true).is_ok()
                    && upstream_keepalive
                    && request_body_complete
                    && framing != Framing::UntilClose
                    && response.is_empty()
                {
                    upstream_cache::release(key, stream);
                }
                Ok(Attempt::Done(status, bytes_sent))
            }
            Err(e) => {
                // The response started: the stream is reset and the upstream connection,
                // mid-body, is closed rather than reused.
                tracing::debug!(request_id = %self.ctx.request_id, error = %e, "response relay ended early");
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                Ok(Attempt::Done(status, 0))
            }
        }
    }
}

/// An upstream response whose head has arrived.
struct Upstream {
    stream: TcpStream,
    /// The head's bytes, then whatever of the body came with them.
    response: BytesMut,
    fields: Vec<crate::serving::h1::head::Field>,
    head: ResponseHead,
}

/// What sending a request needs of its stream, the client's side of it excepted.
struct Sending<'a> {
    core: &'a Core,
    ctx: &'a mut RequestContext,
    meta: &'a RequestMeta,
    head: &'a mut Vec<u8>,
    body: &'a mut RecvStream,
}

impl Sending<'_> {
    /// Sends the request (head, then body) and reads the response head.
    async fn send(
        self,
        pool: &Pool,
        key: CacheKey,
        fresh: bool,
        head_end: usize,
        buffered: Option<&[u8]>,
        limits: Limits,
    ) -> Sent {
        let upstream = &pool.upstream;
        let address = key.address;
        let deadline = limits.deadline;
        let cached = if fresh {
            None
        } else {
            upstream_cache::checkout(key, upstream.idle_timeout)
        };
        let reused = cached.is_some();
        let mut stream = match cached {
            Some(stream) => stream,
            None => match connect(address, capped(upstream.connect_timeout, deadline)).await {
                Ok(stream) => stream,
                Err(failure) => {
                    tracing::warn!(upstream = %pool.name(), endpoint = %address, request_id = %self.ctx.request_id, error = %failure, "connect to endpoint failed");
                    return Sent::Ended(Attempt::Failed {
                        failure,
                        repeatable: true,
                    });
                }
            },
        };
        let replayable = buffered.is_some();
        let may_retry = replayable && self.meta.method.is_idempotent();
        // A pooled connection the upstream had closed fails at once: sent again on a
        // fresh one when the request never left, or may be repeated anyway.
        let stale_or = |failure: Failure, sent: bool| {
            let resend = if sent { may_retry } else { replayable };
            Sent::Ended(
                if reused && resend && matches!(failure, Failure::Reset(_)) {
                    Attempt::Stale
                } else {
                    Attempt::Failed {
                        failure,
                        repeatable: replayable,
                    }
                },
            )
        };
        let timed_out = |failure: Failure| {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                Failure::RouteTimeout
            } else {
                failure
            }
        };
        let head = self.head;
        head.truncate(head_end);
        if self.meta.needs_host {
            use std::io::Write;
            let _ = write!(head, "host: {address}\r\n");
        }
        head.extend_from_slice(b"\r\n");
        if let Some(body) = buffered {
            head.extend_from_slice(body);
        }
        match tokio::time::timeout(limits.write_limit(), stream.write_all(head)).await {
            Err(_) => {
                return Sent::Ended(Attempt::Failed {
                    failure: timed_out(Failure::WriteTimeout),
                    repeatable: false,
                })
            }
            Ok(Err(e)) => return stale_or(Failure::Reset(e), false),
            Ok(Ok(())) => {}
        }
        let mut body_complete = true;
        if !replayable {
            let pumped = io::pump(
                self.body,
                &mut stream,
                self.meta.framing == Framing::Chunked,
                self.meta.max_body_size,
                CLIENT_TIMEOUT,
                limits,
                self.ctx.mirror.as_mut(),
            )
            .await;
            match pumped {
                Ok(n) => {
                    self.ctx.body_bytes = n;
                    self.core.mirror_body(self.ctx, b"", true);
                }
                // The upstream stopped reading: it may have answered already.
                Err(PumpError::UpstreamWrite(e)) => {
                    tracing::debug!(request_id = %self.ctx.request_id, error = %e, "upstream stopped reading the request body");
                    body_complete = false;
                }
                Err(PumpError::UpstreamWriteTimeout) => {
                    return Sent::Ended(Attempt::Failed {
                        failure: timed_out(Failure::WriteTimeout),
                        repeatable: false,
                    })
                }
                Err(PumpError::RouteTimeout) => {
                    return Sent::Ended(Attempt::Failed {
                        failure: Failure::RouteTimeout,
                        repeatable: false,
                    })
                }
                Err(PumpError::ClientGone) => {
                    tracing::debug!(request_id = %self.ctx.request_id, "client went away while sending its body");
                    return Sent::Ended(Attempt::ClientReset);
                }
                Err(PumpError::TooLarge) => return Sent::BodyTooLarge,
            }
        }
        let mut response = BytesMut::with_capacity(4096);
        let mut fields = Vec::with_capacity(16);
        match read_response_head(&mut stream, &mut response, &mut fields, limits).await {
            Ok(head) => Sent::Head {
                stream,
                response,
                fields,
                head,
                body_complete,
            },
            Err(failure) => stale_or(timed_out(failure), true),
        }
    }
}

/// An upstream HTTP/2 request's parts, built once per stream: the path as routed (and
/// rewritten), the authority, and the header plan's fields.
struct H2Request {
    path_and_query: String,
    /// The client's Host (`None`: it sent none, and the endpoint is named instead).
    authority: Option<String>,
    fields: http::HeaderMap,
}

impl H2Request {
    fn new(
        plan: &UpstreamHeaders<'_>,
        headers: &http::HeaderMap,
        path: &str,
        query: Option<&str>,
        host: Option<&str>,
    ) -> Self {
        let rewritten = plan
            .ctx
            .route
            .as_ref()
            .and_then(|route| crate::snapshot::router::rewritten_path(route, path, query));
        let path_and_query = match (rewritten, query) {
            (Some(target), _) => target,
            (None, Some(query)) => format!("{path}?{query}"),
            (None, None) => path.to_string(),
        };
        let mut fields = H2Fields(http::HeaderMap::with_capacity(headers.len() + 8));
        plan.write(headers, &mut fields);
        // HTTP/2 names the authority in `:authority`, not in a Host field.
        fields.0.remove(http::header::HOST);
        // gRPC servers require `te: trailers`, the one TE value HTTP/2 allows.
        if headers
            .get(http::header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            fields
                .0
                .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        Self {
            path_and_query,
            authority: host.map(str::to_owned),
            fields: fields.0,
        }
    }

    fn build(&self, method: &http::Method, address: SocketAddr) -> http::Request<()> {
        let authority = match &self.authority {
            Some(host) => host.clone(),
            None => address.to_string(),
        };
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(self.path_and_query.as_str())
            .build()
            .unwrap_or_else(|_| http::Uri::from_static("http://invalid/"));
        let mut request = http::Request::new(());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = self.fields.clone();
        request
    }
}

/// The connection-cache key of an endpoint of `pool`, and the time limits of one attempt
/// on it (its per-operation timeouts, within the route's budget).
fn endpoint_limits(pool: &Pool, address: SocketAddr, ctx: &RequestContext) -> (CacheKey, Limits) {
    let upstream = &pool.upstream;
    let key = CacheKey {
        group: pool.group_key,
        address,
    };
    let limits = Limits {
        read: upstream.read_timeout,
        write: upstream.write_timeout,
        deadline: deadline(ctx),
    };
    (key, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_new_in_every_message_are_never_indexed_and_other_fields_may_be() {
        let mut fields = H2Fields(http::HeaderMap::new());
        fields.put(b"x-request-id", b"0b5c6a34-8f1e-4c55-9d2a-6a4f0d7e9b10");
        fields.put(
            b"traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        fields.put(b"content-type", b"text/plain");
        fields.put(b"connection", b"close");
        let sensitive = |name: &str| fields.0.get(name).map(http::HeaderValue::is_sensitive);
        assert_eq!(sensitive("x-request-id"), Some(true));
        assert_eq!(sensitive("traceparent"), Some(true));
        assert_eq!(sensitive("content-type"), Some(false));
        // Connection-specific fields never reach an HTTP/2 head.
        assert_eq!(sensitive("connection"), None);
    }
}
