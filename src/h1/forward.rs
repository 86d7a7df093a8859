//! One request forwarded to an upstream member and its response relayed back.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use pingora::protocols::tls::SslDigest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{self, BodyError, Limits, Never, Output, Transfer, CLIENT_TIMEOUT, COALESCE};
use super::exchange::{Buffers, Next, Outcome};
use super::head::{self, FieldsView, Framing, HeadError};
use super::reply::{field, write_status_line, LocalReply};
use super::upstream_cache::{self, CacheKey};
use super::ClientIo;
use crate::config::model::HeaderEdits;
use crate::proxy::{forwarded, Gateway, RequestContext};
use crate::snapshot::pool::Pool;
use crate::snapshot::router::rewritten_path;

/// Everything the exchange needs of the request once its head is no longer borrowed.
pub struct RequestMeta {
    pub method: http::Method,
    pub minor: u8,
    pub head_len: usize,
    pub framing: Framing,
    pub client_keepalive: bool,
    pub expect_continue: bool,
    /// No Host (HTTP/1.0): name the endpoint, as nginx's `$proxy_host` does.
    pub needs_host: bool,
    /// The authority of an absolute-form target, which replaces the client's Host
    /// (RFC 9112 section 3.2.2): the upstream must see the host the request was routed by.
    pub host_override: Option<String>,
    /// The client is one of the listener's `trusted_proxies`.
    pub trusted: bool,
    /// The route's `max_body_size`, enforced while a chunked body streams.
    pub max_body_size: Option<u64>,
}

/// Fields never copied to the upstream as they are: hop-by-hop fields, framing (rewritten
/// from what was parsed) and the ones the gateway sets itself.
const REQUEST_SKIP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "expect",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

const RESPONSE_SKIP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "x-request-id",
];

fn listed(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a route's header edits replace or remove the field `name`.
fn edited_away(edits: Option<&HeaderEdits>, name: &[u8]) -> bool {
    let named = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
    edits.is_some_and(|e| e.remove.iter().any(named) || e.set.iter().any(|(n, _)| named(n)))
}

/// Writes the upstream request head, all but its Host fallback and final empty line
/// (added per attempt, since the fallback names the endpoint).
#[allow(clippy::too_many_arguments)]
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    meta: &RequestMeta,
    path: &str,
    query: Option<&str>,
    view: &FieldsView<'_>,
    ctx: &RequestContext,
    peer: SocketAddr,
    tls: Option<&Arc<SslDigest>>,
) {
    out.clear();
    out.extend_from_slice(meta.method.as_str().as_bytes());
    out.push(b' ');
    let rewritten = ctx
        .route
        .as_ref()
        .and_then(|route| rewritten_path(route, path, query));
    match &rewritten {
        Some(target) => out.extend_from_slice(target.as_bytes()),
        None => {
            out.extend_from_slice(path.as_bytes());
            if let Some(query) = query {
                out.push(b'?');
                out.extend_from_slice(query.as_bytes());
            }
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let edits = ctx.route.as_ref().map(|r| &r.request_headers);
    let identity_header = tls.and_then(|_| ctx.client_identity_header());
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut forwarded_proto: Option<&[u8]> = None;
    let mut forwarded_host: Option<&[u8]> = None;
    let mut host: Option<&[u8]> = None;
    // Fields a `Connection` header names are hop-by-hop too; most requests have none.
    let names_fields = view.first("connection").is_some();
    for (name, value) in view.iter() {
        if listed(REQUEST_SKIP, name) {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                let joined = forwarded_for.get_or_insert_with(Vec::new);
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value);
            } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
                forwarded_proto.get_or_insert(value);
            } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
                forwarded_host.get_or_insert(value);
            }
            continue;
        }
        if (names_fields && view.has_token("connection", name))
            || edited_away(edits, name)
            || identity_header
                .as_ref()
                .is_some_and(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            if meta.host_override.is_some() || value.is_empty() {
                continue;
            }
            host = Some(value);
        }
        field(out, name, value);
    }
    if let Some(authority) = &meta.host_override {
        field(out, b"host", authority.as_bytes());
        host = Some(authority.as_bytes());
    }
    // What a client says about earlier hops is believed only from a trusted proxy.
    let trusted = meta.trusted;
    let chain = forwarded::forwarded_for(forwarded_for.as_deref(), peer.ip(), trusted);
    field(out, b"x-forwarded-for", &chain);
    let own_proto: &[u8] = if ctx.downstream_tls {
        b"https"
    } else {
        b"http"
    };
    field(
        out,
        b"x-forwarded-proto",
        forwarded_proto.filter(|_| trusted).unwrap_or(own_proto),
    );
    if let Some(host) = forwarded_host.filter(|_| trusted).or(host) {
        field(out, b"x-forwarded-host", host);
    }
    if let (Some(header), Some(ssl)) = (identity_header, tls) {
        if !ssl.cert_digest.is_empty() {
            let identity = crate::proxy::client_identity(ssl);
            field(out, header.as_str().as_bytes(), identity.as_bytes());
        }
    }
    field(out, b"x-request-id", ctx.request_id.as_bytes());
    let _ = write!(out, "traceparent: {}\r\n", ctx.trace);
    if let Some(edits) = edits {
        for (name, value) in edits.set.iter().chain(&edits.add) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    match meta.framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {
            // A body-less request keeps an explicit zero length when it had one (a POST
            // with an empty body), which some origins require.
            if view.first("content-length").is_some() {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
}

#[derive(Debug)]
enum Failure {
    Connect(std::io::Error),
    ConnectTimeout,
    /// Closed or reset before a response head.
    Reset(std::io::Error),
    ReadTimeout,
    WriteTimeout,
    InvalidResponse(&'static str),
}

impl Failure {
    fn status(&self) -> (u16, &'static [u8]) {
        match self {
            Failure::Connect(_) => (502, b"upstream connection failed\n"),
            Failure::ConnectTimeout | Failure::ReadTimeout | Failure::WriteTimeout => {
                (504, b"upstream timed out\n")
            }
            Failure::Reset(_) => (502, b"upstream connection reset\n"),
            Failure::InvalidResponse(_) => (502, b"invalid upstream response\n"),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect failed: {e}"),
            Failure::ConnectTimeout => write!(f, "connect timed out"),
            Failure::Reset(e) => write!(f, "connection closed before a response: {e}"),
            Failure::ReadTimeout => write!(f, "response timed out"),
            Failure::WriteTimeout => write!(f, "request write timed out"),
            Failure::InvalidResponse(why) => write!(f, "invalid response: {why}"),
        }
    }
}

/// The route's total budget, if it has one.
fn deadline(ctx: &RequestContext) -> Option<Instant> {
    ctx.route
        .as_ref()
        .and_then(|r| r.timeout)
        .map(|t| ctx.started + t)
}

fn capped(d: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => d
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1)),
        None => d,
    }
}

async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => Err(Failure::ConnectTimeout),
        Ok(Err(e)) => Err(Failure::Connect(e)),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

enum Attempt {
    Done(Outcome),
    /// A pooled connection turned out closed before any response: send again on a fresh
    /// one, which does not count as a retry.
    Stale,
    Failed {
        failure: Failure,
        retryable: bool,
    },
}

/// Forwards the request whose head `buffers.upstream_head` holds (all but its final empty
/// line), relays the answer, and says what the connection does next. A body of up to
/// [`COALESCE`] bytes that is already read is kept in `upstream_body` for resending.
pub async fn proxy<C: ClientIo>(
    gateway: &Gateway,
    client: &mut C,
    buffers: &mut Buffers,
    ctx: &mut RequestContext,
    pool: &Arc<Pool>,
    meta: &RequestMeta,
) -> Outcome {
    buffers.request.advance(meta.head_len);
    // A small body already read whole rides with the head in one send, and can be sent
    // again if a pooled connection turns out to be closed.
    let buffered_body = match meta.framing {
        Framing::None => Some(0),
        Framing::Length(n) if n as usize <= COALESCE && n as usize <= buffers.request.len() => {
            Some(n as usize)
        }
        _ => None,
    };
    let head_end = buffers.upstream_head.len();
    buffers.upstream_body.clear();
    if let Some(n) = buffered_body {
        buffers
            .upstream_body
            .extend_from_slice(&buffers.request[..n]);
        buffers.request.advance(n);
        ctx.body_bytes = n as u64;
    }
    let mut fresh = false;
    let _in_flight = pool.start_request();
    let mut _retry: Option<crate::snapshot::pool::BudgetGuard> = None;
    loop {
        let Some(member) = pool.select(&ctx.tried, ctx.hash_key) else {
            let reply = LocalReply::plain(503, b"no healthy endpoint\n", &ctx.request_id);
            return answer(client, buffers, ctx, meta, reply).await;
        };
        let address = member.endpoint.address;
        let label = &member.label;
        ctx.endpoint = Some(address);
        ctx.in_flight = Some(member.state.start_request());
        let began = Instant::now();
        ctx.upstream_answer = None;
        let result = attempt(
            client,
            buffers,
            ctx,
            pool,
            meta,
            Wire {
                address,
                fresh,
                head_end,
                body: buffered_body,
            },
        )
        .await;
        fresh = false;
        match &result {
            Attempt::Done(_) => {
                if let Some((status, at)) = ctx.upstream_answer.take() {
                    let waited = at.saturating_duration_since(began).as_secs_f64();
                    gateway
                        .metrics
                        .upstream_answered(pool.name(), label, status, waited);
                }
            }
            Attempt::Stale => {}
            Attempt::Failed { failure, .. } => {
                let connect = matches!(failure, Failure::Connect(_) | Failure::ConnectTimeout);
                gateway.metrics.upstream_failed(pool.name(), label, connect);
            }
        }
        match result {
            Attempt::Done(outcome) => {
                let failed = matches!(outcome.status, 502..=504);
                gateway.note_outcome(pool, address, !failed);
                return outcome;
            }
            Attempt::Stale => fresh = true,
            Attempt::Failed { failure, retryable } => {
                gateway.note_outcome(pool, address, false);
                ctx.tried.push(address);
                if retryable && ctx.retries_left > 0 {
                    match pool.try_retry() {
                        Some(guard) => {
                            _retry = Some(guard);
                            ctx.retries_left -= 1;
                            gateway
                                .metrics
                                .upstream_retries
                                .with_label_values(&[pool.name()])
                                .inc();
                            tracing::warn!(upstream = %pool.name(), endpoint = %address, request_id = %ctx.request_id, error = %failure, "retrying on another endpoint");
                            continue;
                        }
                        None => {
                            gateway
                                .metrics
                                .retry_budget_exhausted
                                .with_label_values(&[pool.name()])
                                .inc();
                            tracing::debug!(upstream = %pool.name(), request_id = %ctx.request_id, "retry budget exhausted");
                        }
                    }
                }
                let (status, body) = failure.status();
                tracing::warn!(
                    listener = %ctx.listener,
                    route = %ctx.route_name(),
                    upstream = %pool.name(),
                    endpoint = %address,
                    request_id = %ctx.request_id,
                    status,
                    error = %failure,
                    "request failed"
                );
                let mut reply = LocalReply::plain(status, body, &ctx.request_id);
                reply.close = true;
                return answer(client, buffers, ctx, meta, reply).await;
            }
        }
    }
}

/// Where and what one attempt sends.
struct Wire {
    address: SocketAddr,
    fresh: bool,
    /// End of the head proper in `upstream_head` (each attempt appends its own tail).
    head_end: usize,
    body: Option<usize>,
}

async fn attempt<C: ClientIo>(
    client: &mut C,
    buffers: &mut Buffers,
    ctx: &mut RequestContext,
    pool: &Pool,
    meta: &RequestMeta,
    wire: Wire,
) -> Attempt {
    let upstream = &pool.upstream;
    let deadline = deadline(ctx);
    let key = CacheKey {
        group: pool.group_key,
        address: wire.address,
    };
    let cached = if wire.fresh {
        None
    } else {
        upstream_cache::checkout(key, upstream.idle_timeout)
    };
    let reused = cached.is_some();
    let mut stream = match cached {
        Some(stream) => stream,
        None => match connect(wire.address, capped(upstream.connect_timeout, deadline)).await {
            Ok(stream) => stream,
            Err(failure) => {
                tracing::warn!(upstream = %pool.name(), endpoint = %wire.address, request_id = %ctx.request_id, error = %failure, "connect to endpoint failed");
                return Attempt::Failed {
                    failure,
                    retryable: true,
                };
            }
        },
    };
    let replayable = wire.body.is_some();
    let may_retry = replayable && meta.method.is_idempotent();
    // A pooled connection the upstream had closed fails at once. Sending again on a fresh
    // one is safe when the request never left (the head write failed), or when it may be
    // repeated anyway (idempotent): a POST that was sent may have been acted on.
    let stale_or = |failure: Failure, sent: bool, retryable: bool| {
        let resend = if sent { may_retry } else { replayable };
        if reused && resend && matches!(failure, Failure::Reset(_)) {
            Attempt::Stale
        } else {
            Attempt::Failed { failure, retryable }
        }
    };
    // The head's tail for this endpoint, then the buffered body, in one write.
    let head = &mut buffers.upstream_head;
    head.truncate(wire.head_end);
    if meta.needs_host {
        let _ = write!(head, "host: {}\r\n", wire.address);
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&buffers.upstream_body);
    let limits = Limits {
        read: upstream.read_timeout,
        write: upstream.write_timeout,
        deadline,
    };
    let sent = tokio::time::timeout(
        limits.write_limit(),
        stream.write_all(&buffers.upstream_head),
    )
    .await;
    match sent {
        Err(_) => {
            return Attempt::Failed {
                failure: Failure::WriteTimeout,
                retryable: false,
            }
        }
        Ok(Err(e)) => return stale_or(Failure::Reset(e), false, may_retry),
        Ok(Ok(())) => {}
    }
    let mut body_complete = true;
    if !replayable {
        // Stream the body, watching for an upstream that answers before reading it all.
        if meta.expect_continue
            && body::send_in_time(client, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Attempt::Done(gone());
        }
        let (upstream_read, mut upstream_write) = stream.split();
        buffers.out.clear();
        let mut transfer = Transfer {
            buf: &mut buffers.request,
            out: &mut buffers.out,
            limits: Limits {
                read: CLIENT_TIMEOUT,
                write: upstream.write_timeout,
                deadline,
            },
            max_size: meta.max_body_size,
        };
        let copied = transfer
            .copy(
                client,
                &mut upstream_write,
                meta.framing,
                Output::Same,
                &upstream_read,
            )
            .await;
        match copied {
            Ok(n) => ctx.body_bytes = n,
            Err(BodyError::Interrupted) | Err(BodyError::Write(_)) => body_complete = false,
            Err(BodyError::WriteTimeout) => {
                return Attempt::Failed {
                    failure: Failure::WriteTimeout,
                    retryable: false,
                }
            }
            Err(BodyError::Read(_)) | Err(BodyError::ReadTimeout) => {
                tracing::debug!(request_id = %ctx.request_id, "client went away while sending its body");
                return Attempt::Done(gone());
            }
            Err(BodyError::Framing(e)) => {
                let reason = e.reason();
                tracing::warn!(listener = %ctx.listener, request_id = %ctx.request_id, reason, "refused request body");
                let body = format!("{reason}\n");
                let mut reply = LocalReply::plain(400, body.as_bytes(), &ctx.request_id);
                reply.close = true;
                return Attempt::Done(answer(client, buffers, ctx, meta, reply).await);
            }
            Err(BodyError::TooLarge) => {
                let mut reply =
                    LocalReply::plain(413, b"request body too large\n", &ctx.request_id);
                reply.close = true;
                return Attempt::Done(answer(client, buffers, ctx, meta, reply).await);
            }
        }
    }
    match relay_response(
        client,
        buffers,
        ctx,
        meta,
        stream,
        key,
        limits,
        body_complete,
    )
    .await
    {
        Ok(outcome) => Attempt::Done(outcome),
        Err(failure) => {
            let retryable = may_retry && !matches!(failure, Failure::ReadTimeout);
            stale_or(failure, true, retryable)
        }
    }
}

fn gone() -> Outcome {
    Outcome {
        status: 0,
        bytes_sent: 0,
        next: Next::Close,
    }
}

/// Writes an answer of the gateway's own in place of a response.
async fn answer<C: ClientIo>(
    client: &mut C,
    buffers: &mut Buffers,
    ctx: &RequestContext,
    meta: &RequestMeta,
    mut reply: LocalReply<'_>,
) -> Outcome {
    reply.edits = ctx.route.as_ref().map(|r| &r.response_headers);
    reply.head_only = meta.method == http::Method::HEAD;
    // Whatever of the request body is unread makes the connection unusable.
    reply.close |= !meta.client_keepalive || !matches!(meta.framing, Framing::None);
    super::reply::send_reply(client, &mut buffers.out, &reply).await
}

/// Reads the response head (skipping interim 1xx), writes the client's head and relays
/// the body. `Err` only before anything reached the client.
#[allow(clippy::too_many_arguments)]
async fn relay_response<C: ClientIo>(
    client: &mut C,
    buffers: &mut Buffers,
    ctx: &mut RequestContext,
    meta: &RequestMeta,
    mut stream: TcpStream,
    key: CacheKey,
    limits: Limits,
    request_body_complete: bool,
) -> Result<Outcome, Failure> {
    buffers.response.clear();
    let head = loop {
        if !buffers.response.is_empty() {
            match head::parse_response(&buffers.response, &mut buffers.response_fields) {
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    // Interim responses: the gateway answered `Expect` itself.
                    buffers.response.advance(head.len);
                    continue;
                }
                Ok(Some(head)) => break head,
                Ok(None) if buffers.response.len() > crate::proxy::framing::MAX_REQUEST_HEAD => {
                    return Err(Failure::InvalidResponse("response head too large"))
                }
                Ok(None) => {}
                Err(HeadError::TooManyFields) => {
                    return Err(Failure::InvalidResponse("too many response fields"))
                }
                Err(HeadError::Malformed) => {
                    return Err(Failure::InvalidResponse("malformed response head"))
                }
            }
        }
        buffers.response.reserve(4096);
        let read =
            tokio::time::timeout(limits.read_limit(), stream.read_buf(&mut buffers.response)).await;
        match read {
            Err(_) => return Err(Failure::ReadTimeout),
            Ok(Err(e)) => return Err(Failure::Reset(e)),
            Ok(Ok(0)) => {
                return Err(if buffers.response.is_empty() {
                    Failure::Reset(std::io::ErrorKind::UnexpectedEof.into())
                } else {
                    Failure::InvalidResponse("response head cut short")
                })
            }
            Ok(Ok(_)) => {}
        }
    };
    if head.status == 101 {
        return Err(Failure::InvalidResponse("101 without an upgrade request"));
    }
    ctx.upstream_answer = Some((head.status, Instant::now()));
    let view = FieldsView {
        bytes: &buffers.response,
        fields: &buffers.response_fields,
    };
    let declared_length = head::content_length(&view)
        .map_err(|_| Failure::InvalidResponse("invalid Content-Length"))?;
    let bodyless = meta.method == http::Method::HEAD || head.status == 204 || head.status == 304;
    let framing = if bodyless {
        Framing::None
    } else {
        match head::ends_chunked(&view) {
            Some(true) => Framing::Chunked,
            Some(false) => Framing::UntilClose,
            None => match declared_length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            },
        }
    };
    let upstream_keepalive = if head.minor == 1 {
        !view.has_token("connection", b"close")
    } else {
        view.has_token("connection", b"keep-alive")
    };
    let http10_client = meta.minor == 0;
    let output = if framing == Framing::Chunked && http10_client {
        Output::Dechunked
    } else {
        Output::Same
    };
    let client_close = !meta.client_keepalive
        || !request_body_complete
        || framing == Framing::UntilClose
        || output == Output::Dechunked;

    // The client's head.
    let out = &mut buffers.out;
    out.clear();
    let reason = if head.reason.is_empty() {
        super::reply::reason(head.status)
    } else {
        &buffers.response[head.reason.clone()]
    };
    write_status_line(out, head.status, reason);
    let edits = ctx.route.as_ref().map(|r| &r.response_headers);
    let names_fields = view.first("connection").is_some();
    for (name, value) in view.iter() {
        if listed(RESPONSE_SKIP, name)
            || (names_fields && view.has_token("connection", name))
            || edited_away(edits, name)
        {
            continue;
        }
        field(out, name, value);
    }
    if let Some(edits) = edits {
        for (name, value) in edits.set.iter().chain(&edits.add) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    field(out, b"x-request-id", ctx.request_id.as_bytes());
    match (framing, output) {
        (Framing::Chunked, Output::Same) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n")
        }
        (Framing::Length(n), _) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        (Framing::None, _) => {
            if let Some(n) = declared_length {
                let _ = write!(out, "content-length: {n}\r\n");
            }
        }
        _ => {}
    }
    if client_close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10_client {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    buffers.response.advance(head.len);

    let mut transfer = Transfer {
        buf: &mut buffers.response,
        out: &mut buffers.out,
        limits: Limits {
            read: limits.read,
            write: CLIENT_TIMEOUT,
            deadline: limits.deadline,
        },
        max_size: None,
    };
    let relayed = transfer
        .copy(&mut stream, client, framing, output, &Never)
        .await;
    let status = head.status;
    match relayed {
        Ok(bytes_sent) => {
            if upstream_keepalive
                && request_body_complete
                && framing != Framing::UntilClose
                && buffers.response.is_empty()
            {
                upstream_cache::release(key, stream);
            }
            Ok(Outcome {
                status,
                bytes_sent,
                next: if client_close {
                    Next::Close
                } else {
                    Next::KeepAlive
                },
            })
        }
        Err(e) => {
            // The response started: all that is left is to close both sides.
            tracing::debug!(request_id = %ctx.request_id, error = %e, "response relay ended early");
            Ok(Outcome {
                status,
                bytes_sent: 0,
                next: Next::Close,
            })
        }
    }
}
