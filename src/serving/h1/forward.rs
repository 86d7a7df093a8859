//! One request forwarded to an upstream member and its response relayed back.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{self, BodyError, Limits, Never, Output, Transfer, CLIENT_TIMEOUT, COALESCE};
use super::exchange::{Buffers, Next, Outcome};
use super::head::{self, FieldsView, Framing, HeadError};
use super::reply::{reason, send_answer, write_status_line};
use super::upstream_cache::{self, CacheKey};
use super::ClientIo;
use crate::pipeline::framing::MAX_REQUEST_HEAD;
use crate::pipeline::{
    Core, Failure as FailureKind, Fields, HeaderSink, LocalAnswer, RequestContext, ResponseHeaders,
    UpstreamHeaders,
};
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
    /// The route's `max_body_size`, enforced while a chunked body streams.
    pub max_body_size: Option<u64>,
}

/// Writes the upstream request head, all but its Host fallback and final empty line
/// (added per attempt, since the fallback names the endpoint): the request line, the
/// core's header plan, then the framing the loop parsed.
pub fn write_upstream_head<F: Fields>(
    out: &mut Vec<u8>,
    meta: &RequestMeta,
    path: &str,
    query: Option<&str>,
    view: &F,
    plan: &UpstreamHeaders<'_>,
) {
    out.clear();
    out.extend_from_slice(meta.method.as_str().as_bytes());
    out.push(b' ');
    let rewritten = plan
        .ctx
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
    plan.write(view, out);
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
pub(crate) enum Failure {
    Connect(std::io::Error),
    ConnectTimeout,
    /// Closed or reset before a response head.
    Reset(std::io::Error),
    ReadTimeout,
    WriteTimeout,
    /// The route's `timeout` ran out.
    RouteTimeout,
    InvalidResponse(&'static str),
}

impl Failure {
    /// The core's name for it: its status, whether it may be retried.
    pub(crate) fn kind(&self) -> FailureKind {
        match self {
            Failure::Connect(_) => FailureKind::Connect,
            Failure::ConnectTimeout => FailureKind::ConnectTimeout,
            Failure::Reset(_) => FailureKind::Reset,
            Failure::ReadTimeout => FailureKind::ResponseTimeout,
            Failure::WriteTimeout => FailureKind::WriteTimeout,
            Failure::RouteTimeout => FailureKind::RouteTimeout,
            Failure::InvalidResponse(_) => FailureKind::InvalidResponse,
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
            Failure::RouteTimeout => write!(f, "route timeout exceeded"),
            Failure::InvalidResponse(why) => write!(f, "invalid response: {why}"),
        }
    }
}

/// The route's total budget, if it has one.
pub(crate) fn deadline(ctx: &RequestContext) -> Option<Instant> {
    ctx.route
        .as_ref()
        .and_then(|r| r.timeout)
        .map(|t| ctx.started + t)
}

pub(crate) fn capped(d: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => d
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1)),
        None => d,
    }
}

pub(crate) async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
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
        /// The request can be sent again as it was (its body is kept, or there is none).
        repeatable: bool,
    },
}

/// Forwards the request whose head `buffers.upstream_head` holds (all but its final empty
/// line), relays the answer, and says what the connection does next. A body of up to
/// [`COALESCE`] bytes that is already read is kept in `upstream_body` for resending.
pub async fn proxy<C: ClientIo>(
    core: &Core,
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
        core.mirror_body(ctx, &buffers.upstream_body, true);
    }
    let mut fresh = false;
    let _in_flight = pool.start_request();
    loop {
        let Some(member) =
            pool.select_preferring(&ctx.tried, ctx.hash_key, ctx.affinity.as_deref())
        else {
            let failure = LocalAnswer::failure(FailureKind::NoHealthyEndpoint);
            return answer(client, buffers, ctx, meta, &failure).await;
        };
        let address = member.endpoint.address;
        let label = &member.label;
        ctx.begin_attempt(address);
        ctx.in_flight = Some(member.state.start_request());
        let began = Instant::now();
        ctx.upstream_answer = None;
        let result = attempt(
            core,
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
        match result {
            Attempt::Done(outcome) => {
                if let Some((status, at)) = ctx.upstream_answer.take() {
                    let waited = at.saturating_duration_since(began).as_secs_f64();
                    core.metrics
                        .upstream_answered(pool.name(), label, status, waited);
                }
                core.settle_attempt(ctx, !matches!(outcome.status, 502..=504));
                return outcome;
            }
            // A pooled connection the upstream had closed: sent again on a fresh one,
            // which is no retry and no fault of the endpoint's. (`retries = 0` does not
            // stop it: the request never reached a live connection.)
            Attempt::Stale => fresh = true,
            Attempt::Failed {
                failure,
                repeatable,
            } => {
                let kind = failure.kind();
                core.metrics
                    .upstream_failed(pool.name(), label, kind.connect());
                if core.retry_after(ctx, kind, repeatable, &failure) {
                    continue;
                }
                let reply = LocalAnswer::failure(kind);
                core.log_failure(ctx, reply.status, &failure);
                return answer(client, buffers, ctx, meta, &reply).await;
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
    core: &Core,
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
                // Nothing was sent: the request can go elsewhere as it is.
                return Attempt::Failed {
                    failure,
                    repeatable: true,
                };
            }
        },
    };
    let replayable = wire.body.is_some();
    let may_retry = replayable && meta.method.is_idempotent();
    // A pooled connection the upstream had closed fails at once. Sending again on a fresh
    // one is safe when the request never left (the head write failed), or when it may be
    // repeated anyway (idempotent): a POST that was sent may have been acted on.
    let stale_or = |failure: Failure, sent: bool| {
        let resend = if sent { may_retry } else { replayable };
        if reused && resend && matches!(failure, Failure::Reset(_)) {
            Attempt::Stale
        } else {
            Attempt::Failed {
                failure,
                repeatable: replayable,
            }
        }
    };
    let timed_out = |failure: Failure| {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            Failure::RouteTimeout
        } else {
            failure
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
                failure: timed_out(Failure::WriteTimeout),
                repeatable: false,
            }
        }
        Ok(Err(e)) => return stale_or(Failure::Reset(e), false),
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
            encoder: None,
            tap: ctx.mirror.as_mut(),
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
            Ok(n) => {
                ctx.body_bytes = n;
                core.mirror_body(ctx, b"", true);
            }
            Err(BodyError::Interrupted) | Err(BodyError::Write(_)) => body_complete = false,
            Err(BodyError::WriteTimeout) => {
                return Attempt::Failed {
                    failure: timed_out(Failure::WriteTimeout),
                    repeatable: false,
                }
            }
            Err(BodyError::ReadTimeout) if deadline.is_some_and(|d| Instant::now() >= d) => {
                // The route's budget ran out while the client was still sending: an
                // answer (504), not a silent close.
                return Attempt::Failed {
                    failure: Failure::RouteTimeout,
                    repeatable: false,
                };
            }
            Err(BodyError::Read(_)) | Err(BodyError::ReadTimeout) => {
                tracing::debug!(request_id = %ctx.request_id, "client went away while sending its body");
                return Attempt::Done(gone());
            }
            Err(BodyError::Framing(e)) => {
                let reason = e.reason();
                tracing::warn!(listener = %ctx.listener, request_id = %ctx.request_id, reason, "refused request body");
                let reply = LocalAnswer::refusal(400, reason);
                return Attempt::Done(answer(client, buffers, ctx, meta, &reply).await);
            }
            Err(BodyError::TooLarge) => {
                let reply = LocalAnswer::body_too_large();
                return Attempt::Done(answer(client, buffers, ctx, meta, &reply).await);
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
        Err(failure) => stale_or(timed_out(failure), true),
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
    reply: &LocalAnswer,
) -> Outcome {
    // Whatever of the request body is unread makes the connection unusable.
    let close = reply.close || !meta.client_keepalive || !matches!(meta.framing, Framing::None);
    send_answer(client, &mut buffers.out, reply, ctx, &meta.method, close).await
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
    let head = read_response_head(
        &mut stream,
        &mut buffers.response,
        &mut buffers.response_fields,
        limits,
    )
    .await?;
    if head.status == 101 {
        return Err(Failure::InvalidResponse("101 without an upgrade request"));
    }
    ctx.upstream_answer = Some((head.status, Instant::now()));
    let view = FieldsView {
        bytes: &buffers.response,
        fields: &buffers.response_fields,
    };
    let ResponseFraming {
        framing,
        declared_length,
        upstream_keepalive,
    } = response_framing(&view, &head, &meta.method)?;
    let http10_client = meta.minor == 0;
    // An HTTP/1.0 client cannot take chunks: its answers stay as they are.
    let encoding = match ctx.route.as_ref().and_then(|r| r.compress.as_ref()) {
        Some(settings) if !http10_client => {
            crate::pipeline::compress::plan(ctx.compression, settings, head.status, &view)
        }
        _ => None,
    };
    let encoder = match (&encoding, framing) {
        (Some(plan), Framing::Length(_) | Framing::Chunked | Framing::UntilClose) => {
            crate::pipeline::compress::Encoder::new(plan.encoding).ok()
        }
        _ => None,
    };
    ctx.compressed = encoding.as_ref().map(|plan| plan.encoding);
    let output = if (framing == Framing::Chunked && http10_client) || encoder.is_some() {
        Output::Dechunked
    } else {
        Output::Same
    };
    // A dechunked answer to an HTTP/1.0 client ends at close; an encoded one is chunked
    // anew and keeps the connection.
    let client_close = !meta.client_keepalive
        || !request_body_complete
        || framing == Framing::UntilClose
        || (output == Output::Dechunked && encoder.is_none());

    // The client's head.
    let out = &mut buffers.out;
    out.clear();
    let reason = if head.reason.is_empty() {
        reason(head.status)
    } else {
        &buffers.response[head.reason.clone()]
    };
    write_status_line(out, head.status, reason);
    ResponseHeaders {
        ctx,
        status: head.status,
        encoding: encoding.as_ref(),
        keep_framing: false,
    }
    .write(&view, out);
    match (framing, output) {
        _ if encoder.is_some() => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // An encoded HEAD answer has no length to promise.
        (Framing::None, _) if encoding.is_some() => {}
        (Framing::Chunked, Output::Same) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n")
        }
        (Framing::Length(n), _) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        // A 204 has no body and no length (RFC 9110 8.6); a HEAD or 304 answer keeps the
        // length of what a GET would have sent.
        (Framing::None, _) if head.status != 204 => {
            if let Some(n) = declared_length {
                let _ = write!(out, "content-length: {n}\r\n");
            }
        }
        _ => {}
    }
    if client_close {
        out.put(b"connection", b"close");
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
        encoder,
        tap: None,
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

/// Reads a response head into `response` (interim 1xx answers but 101 are read and
/// dropped: the gateway answered `Expect` itself). `Err` when none arrives intact.
pub(crate) async fn read_response_head(
    stream: &mut TcpStream,
    response: &mut bytes::BytesMut,
    fields: &mut Vec<super::head::Field>,
    limits: Limits,
) -> Result<head::ResponseHead, Failure> {
    loop {
        if !response.is_empty() {
            match head::parse_response(response, fields) {
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    response.advance(head.len);
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) if response.len() > MAX_REQUEST_HEAD => {
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
        response.reserve(4096);
        let read = tokio::time::timeout(limits.read_limit(), stream.read_buf(response)).await;
        match read {
            Err(_) => return Err(Failure::ReadTimeout),
            Ok(Err(e)) => return Err(Failure::Reset(e)),
            Ok(Ok(0)) => {
                return Err(if response.is_empty() {
                    Failure::Reset(std::io::ErrorKind::UnexpectedEof.into())
                } else {
                    Failure::InvalidResponse("response head cut short")
                })
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// How an upstream response's body is delimited, and whether its connection stays open.
pub(crate) struct ResponseFraming {
    pub framing: Framing,
    /// Its `content-length`, even when it has no body (a HEAD or 304 answer keeps it).
    pub declared_length: Option<u64>,
    pub upstream_keepalive: bool,
}

pub(crate) fn response_framing(
    view: &FieldsView<'_>,
    head: &head::ResponseHead,
    method: &http::Method,
) -> Result<ResponseFraming, Failure> {
    let declared_length = head::content_length(view)
        .map_err(|_| Failure::InvalidResponse("invalid Content-Length"))?;
    let bodyless = method == http::Method::HEAD || head.status == 204 || head.status == 304;
    let framing = if bodyless {
        Framing::None
    } else {
        match head::ends_chunked(view) {
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
    Ok(ResponseFraming {
        framing,
        declared_length,
        upstream_keepalive,
    })
}
