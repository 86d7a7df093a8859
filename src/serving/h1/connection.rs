//! One client connection: read a head, decide, answer or forward, loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use pingora::apps::ServerApp;
use pingora::protocols::tls::SslDigest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exchange::{Buffers, Next};
use super::forward::{self, RequestMeta};
use super::head::{self, FieldsView, Framing, HeadError, RequestHead};
use super::reply::send_answer;
use super::{ClientIo, ConnectionInfo, Engine};
use crate::config::model::Listener;
use crate::pipeline::framing::MAX_REQUEST_HEAD;
use crate::pipeline::{
    decide, Decision, Exchange, Incoming, LocalAnswer, RequestContext, UpstreamHeaders,
};
use crate::snapshot::pool::Pool;

/// The listener's timers for one connection, read from the snapshot when it opens.
struct Policy {
    /// Once a head's first byte arrives, the whole head must arrive within this.
    header_timeout: Duration,
    /// With no request in flight and no byte of a new one, the connection closes.
    idle_timeout: Duration,
}

impl Policy {
    fn of(snapshot: &crate::snapshot::Snapshot, info: &ConnectionInfo) -> Self {
        match snapshot.listener_at(info.bound).map(|l| &l.spec) {
            Some(listener) => Self {
                header_timeout: listener.header_timeout,
                idle_timeout: listener.idle_timeout,
            },
            None => Self {
                header_timeout: Listener::DEFAULT_HEADER_TIMEOUT,
                idle_timeout: Listener::DEFAULT_IDLE_TIMEOUT,
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
    let policy = Policy::of(&engine.core.snapshot.load(), &info);
    // Looked up once per connection: each request only moves the gauge.
    let in_flight = engine
        .core
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
                engine.serve_h2(client, replay, info).await;
                return;
            }
            HeadRead::Refused(status, reason) => {
                tracing::debug!(listener = %info.listener, client = %info.peer, status, reason, "refused request head");
                let answer = LocalAnswer::refusal(status, reason);
                let ctx =
                    RequestContext::new(engine.core.snapshot.load_full(), info.listener.clone());
                send_answer(
                    &mut client,
                    &mut buffers.out,
                    &answer,
                    &ctx,
                    &http::Method::GET,
                    true,
                )
                .await;
                linger_close(&mut client).await;
                return;
            }
        };
        match handle(engine, &mut client, &mut buffers, head, &info, &in_flight).await {
            // Even when the drain began while this response was on its way (without
            // `connection: close`): read_head lingers for the client's next request.
            Next::KeepAlive => continue,
            Next::Close => {
                linger_close(&mut client).await;
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

/// Ends a connection: a TLS close_notify and a FIN, then a lingering close. A client may
/// still be sending a body the gateway answered without reading (413, 404, a refusal);
/// closing with those bytes unread makes the kernel send RST, and the client sees
/// "connection reset" instead of the answer. So the gateway reads and discards for a
/// short while, until the client closes too, as nginx's `lingering_close` does. Every
/// stage is bounded in time: a client that stopped reading or keeps sending
/// cannot hold the task (and its connection slot).
async fn linger_close<C: ClientIo>(client: &mut C) {
    if tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown())
        .await
        .is_err()
    {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut discard = [0u8; 16384];
    loop {
        let read = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + LINGER_QUIET),
            client.read(&mut discard),
        )
        .await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            return;
        }
    }
}

/// A lingering close ends when the client has been quiet this long...
const LINGER_QUIET: Duration = Duration::from_secs(1);
/// ...or after this long in all (nginx: `lingering_timeout` 5 s, `lingering_time` 30 s).
const LINGER_TOTAL: Duration = Duration::from_secs(5);

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

/// What the loop does with one request once the core has decided.
enum Decided {
    /// A response of the gateway's own; `close` when unread body bytes would otherwise
    /// be read as the next request.
    Answer(LocalAnswer, bool),
    /// Forward to this pool; the upstream head is in `buffers.upstream_head`.
    Forward(Arc<Pool>, RequestMeta),
    /// pingora-proxy serves this one (a WebSocket, a TLS or HTTP/2 upstream).
    HandOver,
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
    in_flight: &prometheus::IntGauge,
) -> Next {
    let core = &engine.core;
    let snapshot = core.snapshot.load_full();
    // Named by this request's snapshot: a listener renamed by a reload is matched
    // against the new routes under its new name, never the old one.
    let logging = snapshot.edges.access_log.is_some();
    let mut ctx = info.request_context(core, snapshot, in_flight);
    let mut logged = Logged {
        method: head.method.clone(),
        path: String::new(),
    };
    let wants_path = logging || ctx.snapshot.trace_export.is_some();
    let decided = render_decision(
        &mut ctx,
        buffers,
        &head,
        info,
        client.tls_digest(),
        wants_path.then_some(&mut logged.path),
    )
    .await;
    // Draining: the answer says `connection: close`, so the client opens its next
    // connection (to a live process) instead of racing a close.
    let draining = *engine.shutdown.borrow();
    let outcome = match decided {
        Decided::HandOver => return Next::HandOver,
        Decided::Answer(answer, close) => {
            let close = close || answer.close || draining;
            let outcome =
                send_answer(client, &mut buffers.out, &answer, &ctx, &head.method, close).await;
            buffers.request.advance(head.len.min(buffers.request.len()));
            outcome
        }
        Decided::Forward(pool, mut meta) => {
            meta.client_keepalive &= !draining;
            let outcome = forward::proxy(core, client, buffers, &mut ctx, &pool, &meta).await;
            ctx.in_flight = None;
            outcome
        }
    };
    let bytes_received = ctx.body_bytes;
    core.record(
        &mut ctx,
        Exchange {
            status: outcome.status,
            method: &logged.method,
            path: std::borrow::Cow::Owned(logged.path),
            client: Some(info.peer),
            bytes_sent: outcome.bytes_sent,
            bytes_received,
        },
    );
    outcome.next
}

/// Runs the core over the head in the read buffer and renders its decision: for a
/// forward, the upstream head is written into `buffers.upstream_head` while the request
/// is still borrowed, so nothing of it is copied. `log_path` receives the path when the
/// access log or a span wants it.
async fn render_decision(
    ctx: &mut RequestContext,
    buffers: &mut Buffers,
    head: &RequestHead,
    info: &ConnectionInfo,
    tls: Option<Arc<SslDigest>>,
    log_path: Option<&mut String>,
) -> Decided {
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
    let client_keepalive = if head.minor == 1 {
        !view.has_token("connection", b"close")
    } else {
        view.has_token("connection", b"keep-alive")
    };
    let framing = if view.first("transfer-encoding").is_some() {
        Framing::Chunked
    } else {
        match head::content_length(&view) {
            Ok(Some(0)) | Ok(None) => Framing::None,
            Ok(Some(n)) => Framing::Length(n),
            Err(_) => {
                return Decided::Answer(LocalAnswer::refusal(400, "invalid Content-Length"), true)
            }
        }
    };
    let Ok(target) = std::str::from_utf8(target_bytes) else {
        return Decided::Answer(LocalAnswer::refusal(400, "invalid request target"), true);
    };
    let request = Incoming {
        method: &head.method,
        version: if head.minor == 1 {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_10
        },
        target,
        authority: None,
        fields: &view,
        raw_head: Some(&request[..head.len]),
        declared_length: match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        peer: info.peer.ip(),
    };
    // An HTTP/1.0 message with Transfer-Encoding ends the connection (RFC 9112 6.1).
    let client_keepalive = client_keepalive && !(head.minor == 0 && framing == Framing::Chunked);
    let forward = match decide(&request, ctx).await {
        // Whatever of a request body is unread makes a local answer close the connection.
        Decision::Answer(answer) => {
            return Decided::Answer(answer, !client_keepalive || framing != Framing::None)
        }
        Decision::Forward(forward) => forward,
    };
    let upstream = &forward.pool.upstream;
    if forward.tunnel || upstream.tls.is_some() || upstream.http2 {
        // pingora-proxy tunnels upgrades and keeps TLS and HTTP/2 upstream sessions.
        return Decided::HandOver;
    }
    let meta = RequestMeta {
        method: head.method.clone(),
        minor: head.minor,
        head_len: head.len,
        framing,
        client_keepalive,
        expect_continue: head.minor == 1 && view.has_token("expect", b"100-continue"),
        needs_host: forward.host.is_none(),
        max_body_size: ctx.route.as_ref().and_then(|r| r.max_body_size),
    };
    let identity = tls
        .as_deref()
        .and_then(crate::pipeline::serving::client_identity);
    let plan = UpstreamHeaders {
        ctx,
        peer: info.peer.ip(),
        host: forward.host,
        identity: identity.as_deref(),
        tunnel: false,
        keep_framing: false,
    };
    forward::write_upstream_head(
        upstream_head,
        &meta,
        &forward.path,
        forward.query,
        &view,
        &plan,
    );
    Decided::Forward(forward.pool, meta)
}
