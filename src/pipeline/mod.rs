//! The request core: one protocol-neutral decision per request, rendered by each
//! protocol loop.
//!
//! ```text
//! request facts (method, target, authority, fields, peer)  ── borrowed, no copies
//!    -> steps, in order: identify -> admit (framing, target, Host, path)
//!                        -> route -> act (respond, redirect, pick an upstream) -> limits
//!    -> Decision: Answer(LocalAnswer) | Forward(plan)
//! plan: the pool, the normalised path, the upstream Host, tunnel or not
//!       + UpstreamHeaders / ResponseHeaders (header plans) + the retry policy
//!       + the mirror copy (in the context; renderers feed it the body, then send it)
//! renderers: h1 (bytes in its buffers), proxy (pingora's header maps)
//! ```
//!
//! A step sees the request facts and the snapshot and either continues or answers; it
//! never touches a socket, so the whole decision is unit-tested without one. A new gate
//! (access lists, rate limits, authentication) is a new step in [`decide`] (or, when it
//! must wait on something, in [`gates`], which runs between routing and the route's
//! action), and both renderers get it at once. What a gate adds to the upstream request
//! or to the response (identity headers, rate-limit headers) goes into the context's
//! additions, which the header plans and local answers write on every path.

pub mod answer;
pub mod auth;
pub mod compress;
pub mod context;
pub mod fields;
pub mod forwarded;
pub mod framing;
pub mod gates;
pub mod headers;
pub mod http_path;
pub mod hygiene;
pub mod mirror;
pub mod policy;
pub mod serving;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::Method;

use crate::config::model::Action;
use crate::snapshot::pool::Pool;
use crate::snapshot::router::{normalize_host, RequestFacts};

pub use answer::{Failure, LocalAnswer};
pub use context::{InFlightGauge, RequestContext};
pub use fields::{Fields, HeaderSink};
pub use headers::{ResponseHeaders, UpstreamHeaders};
pub use serving::{Core, Exchange};

/// What a renderer knows of a request when its head has arrived, borrowed from wherever
/// the renderer keeps it.
pub struct Incoming<'a, F> {
    pub method: &'a Method,
    pub version: http::Version,
    /// The request target as sent (HTTP/1) or `:path` (HTTP/2).
    pub target: &'a str,
    /// HTTP/2's `:authority`; HTTP/1 has it in an absolute-form target or Host.
    pub authority: Option<&'a str>,
    pub fields: &'a F,
    /// The HTTP/1 head as received, for the framing checks.
    pub raw_head: Option<&'a [u8]>,
    /// The request body's declared length, when it has one.
    pub declared_length: Option<u64>,
    /// The client's address (the connection's peer).
    pub peer: IpAddr,
}

/// What to do with a request.
pub enum Decision<'a> {
    Answer(LocalAnswer),
    Forward(Forward<'a>),
}

/// A request to forward, and the parts of it the upstream sees differently.
pub struct Forward<'a> {
    pub pool: Arc<Pool>,
    /// Normalised: routing and the upstream see the same path.
    pub path: Cow<'a, str>,
    pub query: Option<&'a str>,
    /// The Host the upstream gets, as the client sent it (`None`: the client sent none).
    pub host: Option<&'a str>,
    /// A WebSocket upgrade: the connection becomes a tunnel once the upstream agrees.
    pub tunnel: bool,
}

/// What the steps have found so far.
struct Work<'a> {
    path: Cow<'a, str>,
    query: Option<&'a str>,
    raw_host: &'a str,
    tunnel: bool,
    pool: Option<Arc<Pool>>,
}

enum Flow {
    Next,
    Answer(LocalAnswer),
}

type Step<F> = for<'a, 'r> fn(&'r Incoming<'a, F>, &mut RequestContext, &mut Work<'a>) -> Flow;

/// Runs the request steps in order; the first answer ends the request. Only the gates
/// of a route that has some can wait; for every other request this completes on its
/// first poll.
pub async fn decide<'a, F: Fields + Sync>(
    request: &Incoming<'a, F>,
    ctx: &mut RequestContext,
) -> Decision<'a> {
    let before_gates: [Step<F>; 3] = [identify, admit, route];
    let after_gates: [Step<F>; 2] = [act, limits];
    let mut work = Work {
        path: Cow::Borrowed(""),
        query: None,
        raw_host: "",
        tunnel: false,
        pool: None,
    };
    for step in before_gates {
        if let Flow::Answer(answer) = step(request, ctx, &mut work) {
            return Decision::Answer(answer);
        }
    }
    if let Some(answer) = gates::run(request, ctx).await {
        return Decision::Answer(answer);
    }
    for step in after_gates {
        if let Flow::Answer(answer) = step(request, ctx, &mut work) {
            return Decision::Answer(answer);
        }
    }
    let Some(pool) = work.pool else {
        return Decision::Answer(LocalAnswer::failure(Failure::Internal));
    };
    let host = Some(work.raw_host).filter(|h| !h.is_empty());
    if !work.tunnel && ctx.route.as_ref().is_some_and(|r| r.mirror.is_some()) {
        ctx.mirror = mirror::choose(request, ctx, &work.path, work.query, host);
    }
    Decision::Forward(Forward {
        pool,
        path: work.path,
        query: work.query,
        host,
        tunnel: work.tunnel,
    })
}

/// Names the request: its id, trace context, and whether its peer is trusted.
fn identify<'a, F: Fields>(
    request: &Incoming<'a, F>,
    ctx: &mut RequestContext,
    _work: &mut Work<'a>,
) -> Flow {
    let fields = request.fields;
    ctx.request_id = serving::request_id(fields.first("x-request-id"));
    ctx.trace = crate::telemetry::trace::TraceContext::continue_or_start(
        fields.first("traceparent"),
        ctx.sample_ratio(),
    );
    ctx.idempotent = request.method.is_idempotent();
    ctx.trusted = ctx
        .listener_spec()
        .is_some_and(|l| l.is_trusted(request.peer));
    Flow::Next
}

fn refuse(ctx: &RequestContext, status: u16, reason: &'static str) -> Flow {
    tracing::debug!(listener = %ctx.listener, request_id = %ctx.request_id, status, reason, "refused request");
    Flow::Answer(LocalAnswer::refusal(status, reason))
}

/// Request hygiene: framing, the target, Host, and the one normalised path.
fn admit<'a, F: Fields>(
    request: &Incoming<'a, F>,
    ctx: &mut RequestContext,
    work: &mut Work<'a>,
) -> Flow {
    if let Some(raw) = request.raw_head {
        if let Err(refusal) = framing::check_request_head(raw) {
            tracing::warn!(listener = %ctx.listener, request_id = %ctx.request_id, status = refusal.status, reason = refusal.reason, "refused request");
            return Flow::Answer(LocalAnswer::refusal(refusal.status, refusal.reason));
        }
    }
    if request.method == Method::CONNECT {
        // A reverse proxy has no tunnel to open to an arbitrary authority.
        return Flow::Answer(LocalAnswer::refusal(405, "CONNECT is not served"));
    }
    let target = match hygiene::split_target(request.target) {
        Ok(target) => target,
        Err(reason) => return refuse(ctx, 400, reason),
    };
    let fields = request.fields;
    let hosts = fields.count("host");
    if hosts > 1 {
        // Routing reads one Host; an upstream might read the other (RFC 9112 3.2).
        return refuse(ctx, 400, "more than one Host field");
    }
    let host_field = fields.first("host");
    if request.version == http::Version::HTTP_11
        && host_field.is_none()
        && target.authority.is_none()
    {
        return refuse(ctx, 400, "missing Host");
    }
    // The absolute-form authority (or HTTP/2's :authority) wins over Host, on every path.
    let raw_host = match target.authority.or(request.authority) {
        Some(authority) => authority,
        None => match host_field.map(std::str::from_utf8) {
            Some(Ok(host)) => host,
            Some(Err(_)) => return refuse(ctx, 400, "invalid Host"),
            None => "",
        },
    };
    if !raw_host.is_empty() && !hygiene::valid_host(raw_host) {
        return refuse(ctx, 400, "invalid Host");
    }
    ctx.host = normalize_host(raw_host).into_owned();
    work.raw_host = raw_host;
    work.path = target.path;
    work.query = target.query;
    work.tunnel = request.version <= http::Version::HTTP_11
        && fields.has_token("upgrade", b"websocket")
        && fields.has_token("connection", b"upgrade");
    Flow::Next
}

fn route<'a, F: Fields + Sync>(
    request: &Incoming<'a, F>,
    ctx: &mut RequestContext,
    work: &mut Work<'a>,
) -> Flow {
    let facts = RequestFacts {
        host: &ctx.host,
        path: &work.path,
        query: work.query,
        method: request.method,
        headers: request.fields,
    };
    match ctx.snapshot.router.route(&ctx.listener, &facts) {
        Some(route) => {
            ctx.route = Some(route.clone());
            Flow::Next
        }
        None => {
            tracing::debug!(listener = %ctx.listener, host = %ctx.host, path = %work.path, "no route");
            Flow::Answer(LocalAnswer::no_route())
        }
    }
}

/// The route's action: a direct response, a redirect, or the upstream to ask.
fn act<'a, F: Fields>(
    _request: &Incoming<'a, F>,
    ctx: &mut RequestContext,
    work: &mut Work<'a>,
) -> Flow {
    let Some(route) = ctx.route.clone() else {
        return Flow::Answer(LocalAnswer::no_route());
    };
    let with_edits = |mut answer: LocalAnswer| {
        answer.route_edits = true;
        Flow::Answer(answer)
    };
    let name = match &route.action {
        Action::Respond(respond) => {
            return with_edits(LocalAnswer {
                status: respond.status.as_u16(),
                body: respond.body.clone(),
                content_type: bytes::Bytes::copy_from_slice(respond.content_type.as_bytes()),
                location: None,
                route_edits: true,
                close: false,
                head_only: false,
                headers: Vec::new(),
            })
        }
        Action::Redirect(redirect) => {
            let mut answer = LocalAnswer::plain(redirect.status.as_u16(), b"");
            answer.location = Some(answer::redirect_location(
                redirect,
                &work.path,
                work.query,
                work.raw_host,
                ctx.downstream_tls,
            ));
            answer.head_only = true;
            return with_edits(answer);
        }
        Action::Upstream(name) => name,
        Action::Weighted(backends) => match serving::pick_backend(backends) {
            Some(name) => name,
            None => return with_edits(LocalAnswer::backend_not_resolved()),
        },
    };
    match ctx.snapshot.pools.get(name) {
        Some(pool) => {
            work.pool = Some(pool.clone());
            ctx.pool = Some(pool.clone());
            Flow::Next
        }
        None => with_edits(LocalAnswer::no_such_upstream()),
    }
}

/// The pool can answer and the body fits: refused before any upstream is contacted.
fn limits<'a, F: Fields>(
    request: &Incoming<'a, F>,
    ctx: &mut RequestContext,
    work: &mut Work<'a>,
) -> Flow {
    let Some(pool) = &work.pool else {
        return Flow::Next;
    };
    let edits = |mut answer: LocalAnswer| {
        answer.route_edits = true;
        Flow::Answer(answer)
    };
    if pool.available_count() == 0 {
        tracing::warn!(upstream = %pool.name(), request_id = %ctx.request_id, members = pool.members.len(), "no healthy endpoint");
        return edits(LocalAnswer::no_healthy_endpoint());
    }
    let max = ctx.route.as_ref().and_then(|r| r.max_body_size);
    if let (Some(length), Some(max)) = (request.declared_length, max) {
        if length > max {
            return edits(LocalAnswer::body_too_large());
        }
    }
    ctx.retries_left = pool.upstream.retries;
    ctx.hash_key = forwarded::hash_key(&pool.upstream.hash_on, request.peer, |name| {
        request.fields.first(name)
    });
    if let Some(compress) = ctx.route.as_ref().and_then(|r| r.compress.as_ref()) {
        // A range is a slice of the identity body: never encoded.
        if request.fields.first("range").is_none() {
            ctx.compression = compress::choose(
                request.fields.first("accept-encoding"),
                &compress.algorithms,
            );
        }
    }
    if let Some(affinity) = &pool.upstream.affinity {
        ctx.affinity = request
            .fields
            .each()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .find_map(|(_, field)| forwarded::cookie(field, &affinity.cookie))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
    }
    Flow::Next
}
