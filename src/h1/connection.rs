//! One client connection: read a head, decide, answer or forward, loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use pingora::apps::ServerApp;
use pingora::protocols::tls::SslDigest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exchange::{Buffers, Next, Outcome};
use super::forward::{self, RequestMeta};
use super::head::{self, FieldsView, Framing, HeadError, RequestHead};
use super::reply::{send_reply, LocalReply};
use super::{ClientIo, ConnectionInfo, Engine};
use crate::config::model::{Action, Listener};
use crate::http_path::{normalize_path, PathError};
use crate::proxy::framing::{check_request_head, MAX_REQUEST_HEAD};
use crate::proxy::trace::TraceContext;
use crate::proxy::{
    forwarded, redirect_location, request_id, Exchange, InFlightGauge, RequestContext,
};
use crate::snapshot::pool::Pool;
use crate::snapshot::router::{normalize_host, RequestFacts};

/// The listener's rules for one connection, read from the snapshot when it opens.
struct Policy {
    /// Once a head's first byte arrives, the whole head must arrive within this.
    header_timeout: Duration,
    /// With no request in flight and no byte of a new one, the connection closes.
    idle_timeout: Duration,
    /// The peer is one of the listener's `trusted_proxies`.
    trusted: bool,
}

impl Policy {
    fn of(snapshot: &crate::snapshot::Snapshot, info: &ConnectionInfo) -> Self {
        match snapshot.listener_at(info.bound).map(|l| &l.spec) {
            Some(listener) => Self {
                header_timeout: listener.header_timeout,
                idle_timeout: listener.idle_timeout,
                trusted: listener.is_trusted(info.peer.ip()),
            },
            None => Self {
                header_timeout: Listener::DEFAULT_HEADER_TIMEOUT,
                idle_timeout: Listener::DEFAULT_IDLE_TIMEOUT,
                trusted: false,
            },
        }
    }
}

enum HeadRead {
    Ready(RequestHead),
    /// Closed, idle, or shutting down: nothing to answer.
    Gone,
    Refused(u16, &'static str),
    /// The connection opened with the HTTP/2 preface (h2c, prior knowledge).
    H2c,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a connection until it closes, then returns.
pub async fn serve<C: ClientIo, A: ServerApp + Send + Sync + 'static>(
    engine: &Engine<A>,
    mut client: C,
    info: ConnectionInfo,
) {
    let mut buffers = Buffers::new();
    let mut shutdown = engine.shutdown.clone();
    let policy = Policy::of(&engine.gateway.snapshot.load(), &info);
    // Looked up once per connection: each request only moves the gauge.
    let in_flight = engine
        .gateway
        .metrics
        .requests_in_flight
        .with_label_values(&[&info.listener]);
    let mut first = true;
    loop {
        let read = read_head(&mut client, &mut buffers, &mut shutdown, &policy, first).await;
        first = false;
        let head = match read {
            HeadRead::Ready(head) => head,
            HeadRead::Gone => return,
            HeadRead::H2c => {
                let replay = buffers.request.split().freeze();
                engine.hand_over(client, replay, &info, true).await;
                return;
            }
            HeadRead::Refused(status, reason) => {
                tracing::debug!(listener = %info.listener, client = %info.peer, status, reason, "refused request head");
                let mut reply = LocalReply::plain(status, reason.as_bytes(), "");
                reply.close = true;
                send_reply(&mut client, &mut buffers.out, &reply).await;
                close(&mut client).await;
                return;
            }
        };
        match handle(
            engine,
            &mut client,
            &mut buffers,
            head,
            &info,
            &policy,
            &in_flight,
        )
        .await
        {
            // Even when the drain began while this response was on its way (without
            // `connection: close`): read_head lingers for the client's next request.
            Next::KeepAlive => continue,
            Next::Close => {
                close(&mut client).await;
                return;
            }
            Next::HandOver => {
                let replay = buffers.request.split().freeze();
                engine.hand_over(client, replay, &info, false).await;
                return;
            }
        }
    }
}

/// Ends a connection: a TLS close_notify and a FIN, bounded in time, since a client that
/// stopped reading would otherwise hold the task (and its connection slot) forever.
async fn close<C: ClientIo>(client: &mut C) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await;
}

/// How long a draining process keeps an idle keep-alive connection open for a request
/// that may be in flight: longer than a loopback or LAN round trip, short enough not to
/// hold the drain.
const DRAIN_LINGER: Duration = Duration::from_millis(500);

/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

async fn read_head<C: ClientIo>(
    client: &mut C,
    buffers: &mut Buffers,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    policy: &Policy,
    first: bool,
) -> HeadRead {
    let mut idle_deadline = Instant::now() + policy.idle_timeout;
    let mut head_deadline: Option<Instant> = None;
    // Draining already (the drain began during the last response, or before this
    // connection's first read): linger from the start.
    let mut lingering = *shutdown.borrow();
    if lingering {
        idle_deadline = idle_deadline.min(Instant::now() + DRAIN_LINGER);
    }
    loop {
        let seen = buffers.request.len().min(H2_PREFACE.len());
        let maybe_h2c = first && seen > 0 && buffers.request[..seen] == H2_PREFACE[..seen];
        if maybe_h2c && seen == H2_PREFACE.len() {
            return HeadRead::H2c;
        }
        if maybe_h2c {
            // Part of the preface: read on (a request line cannot start this way).
            head_deadline.get_or_insert_with(|| Instant::now() + policy.header_timeout);
        } else if !buffers.request.is_empty() {
            match head::parse_request(&buffers.request, &mut buffers.request_fields) {
                Ok(Some(head)) => return HeadRead::Ready(head),
                Ok(None) if buffers.request.len() > MAX_REQUEST_HEAD => {
                    return HeadRead::Refused(431, "request header fields too large\n")
                }
                Ok(None) => {}
                Err(HeadError::TooManyFields) => {
                    return HeadRead::Refused(431, "request header fields too large\n")
                }
                Err(HeadError::Malformed) => return HeadRead::Refused(400, "bad request\n"),
            }
            // The idle wait ends with the first byte of a head; from then on the whole head
            // must arrive within the header timeout, however the bytes trickle in.
            head_deadline.get_or_insert_with(|| Instant::now() + policy.header_timeout);
        } else {
            buffers.request.clear();
        }
        let deadline = head_deadline.unwrap_or(idle_deadline);
        buffers.request.reserve(4096);
        let read = tokio::select! {
            biased;
            read = client.read_buf(&mut buffers.request) => read,
            // Draining: an idle keep-alive connection may already have a request on the
            // wire, and closing now would fail it. Wait a little for one, answer it with
            // `connection: close`, and close only a connection that stays silent.
            _ = shutdown.changed(), if head_deadline.is_none() && !lingering => {
                lingering = true;
                idle_deadline = idle_deadline.min(Instant::now() + DRAIN_LINGER);
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                return match head_deadline {
                    None => HeadRead::Gone,
                    Some(_) => HeadRead::Refused(408, "request head timed out\n"),
                };
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            return HeadRead::Gone;
        }
    }
}

/// The request target split into what routing and forwarding need.
struct Target<'a> {
    path: &'a str,
    query: Option<&'a str>,
    /// The authority of an absolute-form target, which replaces Host.
    authority: Option<String>,
    owned_path: Option<String>,
}

fn split_target(target: &[u8]) -> Option<Target<'_>> {
    let text = std::str::from_utf8(target).ok()?;
    if text.starts_with('/') {
        let (path, query) = match text.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (text, None),
        };
        return Some(Target {
            path,
            query,
            authority: None,
            owned_path: None,
        });
    }
    if text == "*" {
        return Some(Target {
            path: "*",
            query: None,
            authority: None,
            owned_path: None,
        });
    }
    // Absolute form: rare (proxies talking to proxies); parsed with `http`.
    let uri: http::Uri = text.parse().ok()?;
    uri.scheme()?;
    let authority = uri.authority()?.to_string();
    let query_start = text.find('?');
    Some(Target {
        path: "",
        query: query_start.map(|i| &text[i + 1..]),
        authority: Some(authority),
        owned_path: Some(uri.path().to_string()),
    })
}

/// What the gateway does with one request.
enum Decision {
    /// A response of the gateway's own.
    Answer(Answer),
    /// Forward to this pool; the upstream head is in `buffers.upstream_head`.
    Forward(Arc<Pool>, RequestMeta),
    HandOver,
}

/// A response the gateway writes itself, owned so the request buffer can be released.
struct Answer {
    status: u16,
    body: Bytes,
    content_type: Bytes,
    location: Option<String>,
    /// Apply the route's response header edits.
    edits: bool,
    head_only: bool,
    close: bool,
}

impl Answer {
    fn plain(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
            content_type: Bytes::from_static(b"text/plain; charset=utf-8"),
            location: None,
            edits: false,
            head_only: false,
            close: false,
        }
    }

    /// A refusal: the connection closes after it.
    fn refusal(status: u16, reason: &str) -> Self {
        let mut answer = Self::plain(status, format!("{reason}\n"));
        answer.close = true;
        answer
    }
}

/// The request's method and path as the metrics and the access log record them.
struct Logged {
    method: http::Method,
    path: String,
}

async fn handle<C: ClientIo, A: ServerApp + Send + Sync + 'static>(
    engine: &Engine<A>,
    client: &mut C,
    buffers: &mut Buffers,
    head: RequestHead,
    info: &ConnectionInfo,
    policy: &Policy,
    in_flight: &prometheus::IntGauge,
) -> Next {
    let gateway = &engine.gateway;
    let snapshot = gateway.snapshot.load_full();
    // Named by this request's snapshot: a listener renamed by a reload is matched
    // against the new routes under its new name, never the old one.
    let listener = snapshot
        .listener_name(info.bound)
        .unwrap_or_else(|| info.listener.clone());
    let logging = snapshot.edges.access_log.is_some();
    let mut ctx = RequestContext::new(snapshot, listener);
    // The connection's gauge, unless a reload renamed its listener since it opened.
    let gauge = if ctx.listener == info.listener {
        in_flight.clone()
    } else {
        gateway
            .metrics
            .requests_in_flight
            .with_label_values(&[&ctx.listener])
    };
    ctx.in_flight_gauge = Some(InFlightGauge::enter(gauge));
    ctx.downstream_tls = info.tls;
    let tls = client.tls_digest();
    let mut logged = Logged {
        method: head.method.clone(),
        path: String::new(),
    };
    let wants_path = logging || ctx.snapshot.trace_export.is_some();
    let decision = decide(
        &mut ctx,
        buffers,
        &head,
        info,
        policy,
        tls.as_ref(),
        wants_path.then_some(&mut logged.path),
    );
    // Draining: the answer says `connection: close`, so the client opens its next
    // connection (to a live process) instead of racing a close.
    let draining = *engine.shutdown.borrow();
    let outcome = match decision {
        Decision::HandOver => return Next::HandOver,
        Decision::Answer(mut answer) => {
            answer.close |= draining;
            let outcome = answer_locally(client, buffers, &ctx, &head, answer).await;
            buffers.request.advance(head.len.min(buffers.request.len()));
            outcome
        }
        Decision::Forward(pool, mut meta) => {
            meta.client_keepalive &= !draining;
            let outcome = forward::proxy(gateway, client, buffers, &mut ctx, &pool, &meta).await;
            ctx.in_flight = None;
            outcome
        }
    };
    gateway.record(
        &ctx,
        &Exchange {
            status: outcome.status,
            method: &logged.method,
            path: &logged.path,
            client: Some(info.peer),
            bytes_sent: outcome.bytes_sent,
            bytes_received: ctx.body_bytes,
        },
    );
    outcome.next
}

/// Reads the request head and decides; everything it needs of the head is copied out
/// (or written into the upstream head) before the request buffer is touched again.
/// `log_path` receives the path when the access log or a span wants it.
fn decide(
    ctx: &mut RequestContext,
    buffers: &mut Buffers,
    head: &RequestHead,
    info: &ConnectionInfo,
    policy: &Policy,
    tls: Option<&Arc<SslDigest>>,
    log_path: Option<&mut String>,
) -> Decision {
    let Buffers {
        request,
        request_fields,
        upstream_head,
        ..
    } = buffers;
    let view = FieldsView {
        bytes: request,
        fields: request_fields,
    };
    if view.first("upgrade").is_some() || head.method == http::Method::CONNECT {
        // WebSocket and other upgrades continue on pingora-proxy, which tunnels them.
        return Decision::HandOver;
    }
    ctx.request_id = request_id(view.first("x-request-id"));
    ctx.trace = TraceContext::continue_or_start(view.first("traceparent"), ctx.sample_ratio());
    let client_keepalive = if head.minor == 1 {
        !view.has_token("connection", b"close")
    } else {
        view.has_token("connection", b"keep-alive")
    };
    let target_bytes = &request[head.target.clone()];
    if let Some(path) = log_path {
        *path = String::from_utf8_lossy(
            target_bytes
                .split(|&b| b == b'?')
                .next()
                .unwrap_or_default(),
        )
        .into_owned();
    }
    if let Err(refusal) = check_request_head(&request[..head.len]) {
        tracing::warn!(listener = %ctx.listener, request_id = %ctx.request_id, status = refusal.status, reason = refusal.reason, "refused request");
        return Decision::Answer(Answer::refusal(refusal.status, refusal.reason));
    }
    let framing = if view.first("transfer-encoding").is_some() {
        Framing::Chunked
    } else {
        match head::content_length(&view) {
            Ok(Some(0)) | Ok(None) => Framing::None,
            Ok(Some(n)) => Framing::Length(n),
            Err(_) => return Decision::Answer(Answer::refusal(400, "invalid Content-Length")),
        }
    };
    let Some(target) = split_target(target_bytes) else {
        return Decision::Answer(Answer::refusal(400, "invalid request target"));
    };
    if view.values("host").nth(1).is_some() {
        // Routing reads one Host; an upstream might read the other (RFC 9112 3.2).
        return Decision::Answer(Answer::refusal(400, "more than one Host field"));
    }
    // An HTTP/1.0 message with Transfer-Encoding ends the connection (RFC 9112 6.1).
    let client_keepalive = client_keepalive && !(head.minor == 0 && framing == Framing::Chunked);
    // Routing and the upstream see one normalised path, so `/public/../admin` cannot
    // walk around a route meant for `/admin`.
    let path = match normalize_path(target.owned_path.as_deref().unwrap_or(target.path)) {
        Ok(path) => path,
        Err(e) => {
            let reason = match e {
                PathError::AboveRoot => "path climbs above the root",
                PathError::Invalid => "invalid path",
            };
            tracing::debug!(listener = %ctx.listener, request_id = %ctx.request_id, reason, "refused request");
            return Decision::Answer(Answer::refusal(400, reason));
        }
    };
    let path: &str = &path;
    let raw_host = match &target.authority {
        Some(authority) => authority.as_str(),
        None => view
            .first("host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or_default(),
    };
    ctx.host = normalize_host(raw_host).into_owned();
    let facts = RequestFacts {
        host: &ctx.host,
        path,
        query: target.query,
        method: &head.method,
        headers: &view,
    };
    let snapshot = ctx.snapshot.clone();
    // Whatever of a request body is unread makes a local answer close the connection.
    let local_close = !client_keepalive || framing != Framing::None;
    let head_only = head.method == http::Method::HEAD;
    let Some(route) = snapshot.router.route(&ctx.listener, &facts).cloned() else {
        tracing::debug!(listener = %ctx.listener, host = %ctx.host, path, "no route");
        let mut answer = Answer::plain(404, &b"no route\n"[..]);
        answer.head_only = head_only;
        answer.close = local_close;
        return Decision::Answer(answer);
    };
    ctx.route = Some(route.clone());
    let answer = |mut answer: Answer| {
        answer.edits = true;
        answer.close |= local_close;
        Decision::Answer(answer)
    };
    let name = match &route.action {
        Action::Respond(respond) => {
            return answer(Answer {
                status: respond.status.as_u16(),
                body: respond.body.clone(),
                content_type: Bytes::copy_from_slice(respond.content_type.as_bytes()),
                location: None,
                edits: true,
                head_only,
                close: false,
            })
        }
        Action::Redirect(redirect) => {
            let mut reply = Answer::plain(redirect.status.as_u16(), Bytes::new());
            reply.location = Some(redirect_location(
                redirect,
                path,
                target.query,
                raw_host,
                ctx.downstream_tls,
            ));
            reply.head_only = true;
            return answer(reply);
        }
        Action::Upstream(name) => name,
        Action::Weighted(backends) => match crate::proxy::pick_backend(backends) {
            Some(name) => name,
            None => return answer(Answer::plain(500, &b"backend not resolved\n"[..])),
        },
    };
    let Some(pool) = snapshot.pools.get(name).cloned() else {
        return answer(Answer::plain(503, &b"no such upstream\n"[..]));
    };
    if pool.upstream.tls.is_some() || pool.upstream.http2 {
        // pingora-proxy keeps TLS and HTTP/2 upstream sessions.
        return Decision::HandOver;
    }
    ctx.pool = Some(pool.clone());
    if pool.available_count() == 0 {
        tracing::warn!(upstream = %name, request_id = %ctx.request_id, members = pool.members.len(), "no healthy endpoint");
        return answer(Answer::plain(503, &b"no healthy endpoint\n"[..]));
    }
    if let (Framing::Length(n), Some(max)) = (framing, route.max_body_size) {
        if n > max {
            // Refused before any upstream is contacted.
            let mut reply = Answer::plain(413, &b"request body too large\n"[..]);
            reply.close = true;
            return answer(reply);
        }
    }
    ctx.retries_left = pool.upstream.retries;
    ctx.hash_key = forwarded::hash_key(&pool.upstream.hash_on, info.peer.ip(), |name| {
        view.first(name)
    });
    let meta = RequestMeta {
        method: head.method.clone(),
        minor: head.minor,
        head_len: head.len,
        framing,
        client_keepalive,
        expect_continue: head.minor == 1 && view.has_token("expect", b"100-continue"),
        needs_host: raw_host.is_empty(),
        host_override: target.authority.clone(),
        trusted: policy.trusted,
        max_body_size: route.max_body_size,
    };
    forward::write_upstream_head(
        upstream_head,
        &meta,
        path,
        target.query,
        &view,
        ctx,
        info.peer,
        tls,
    );
    Decision::Forward(pool, meta)
}

/// Writes an answer of the gateway's own.
async fn answer_locally<C: ClientIo>(
    client: &mut C,
    buffers: &mut Buffers,
    ctx: &RequestContext,
    head: &RequestHead,
    answer: Answer,
) -> Outcome {
    let edits = ctx
        .route
        .as_ref()
        .filter(|_| answer.edits)
        .map(|r| &r.response_headers);
    let reply = LocalReply {
        status: answer.status,
        content_type: &answer.content_type,
        body: &answer.body,
        location: answer.location.as_deref(),
        request_id: &ctx.request_id,
        edits,
        head_only: answer.head_only || head.method == http::Method::HEAD,
        close: answer.close,
    };
    send_reply(client, &mut buffers.out, &reply).await
}
