//! The header plans: which of the client's fields reach the upstream and which of the
//! upstream's reach the client, and what the gateway adds. Each renderer applies the same
//! plan to its own representation (bytes in the HTTP/1.1 loop, a header map on pingora's
//! path), so forwarded headers, identity headers and route edits cannot drift apart.

use std::net::IpAddr;

use crate::config::model::HeaderEdits;

use super::context::RequestContext;
use super::fields::{Fields, HeaderSink};
use super::forwarded;

/// Hop-by-hop fields: meaningful for one connection only (RFC 9110 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
];

/// Framing fields: the HTTP/1.1 loop writes its own from what it parsed.
const FRAMING: &[&str] = &["transfer-encoding", "content-length"];

/// Fields the gateway always writes itself.
const GATEWAY_SET: &[&str] = &[
    "host",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Fields that claim a client's address, scheme or prefix: believed only from a trusted
/// proxy (Rack prefers `Forwarded`, chi `X-Real-IP`).
const CLIENT_CLAIMS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

fn listed(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a route's header edits replace or remove the field `name`.
fn edited_away(edits: Option<&HeaderEdits>, name: &[u8]) -> bool {
    let named = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
    edits.is_some_and(|e| e.remove.iter().any(named) || e.set.iter().any(|(n, _)| named(n)))
}

/// What the upstream receives besides the request line and body.
pub struct UpstreamHeaders<'a> {
    pub ctx: &'a RequestContext,
    pub peer: IpAddr,
    /// The Host the upstream gets: the absolute-form authority, `:authority` or the
    /// client's Host. `None`: the renderer names the endpoint (an HTTP/1.0 client sent
    /// none), as nginx's `$proxy_host` does.
    pub host: Option<&'a str>,
    /// The verified client certificate's identity, for the listener's identity header.
    pub identity: Option<&'a str>,
    /// The connection is handed over as a tunnel (WebSocket): `Upgrade` goes along.
    pub tunnel: bool,
    /// Keep the client's framing fields: pingora frames the body from them, while the
    /// HTTP/1.1 loop writes its own.
    pub keep_framing: bool,
}

impl UpstreamHeaders<'_> {
    /// Whether the client's field `name` is copied as it is.
    pub fn keeps<F: Fields>(&self, fields: &F, name: &[u8]) -> bool {
        self.keeps_named(fields, name, fields.first("connection").is_some())
    }

    /// `keeps`, told whether the request has a `Connection` field at all: most have
    /// none, and then no field needs the per-field look at what it names.
    fn keeps_named<F: Fields>(&self, fields: &F, name: &[u8], has_connection: bool) -> bool {
        if name.contains(&b'_') {
            // nginx drops these too: a CGI-style upstream would read `X_Forwarded_For`
            // as a second X-Forwarded-For.
            return false;
        }
        if listed(FRAMING, name) {
            return self.keep_framing;
        }
        if listed(HOP_BY_HOP, name) {
            return self.tunnel && name.eq_ignore_ascii_case(b"upgrade");
        }
        if listed(GATEWAY_SET, name) || (!self.ctx.trusted && listed(CLIENT_CLAIMS, name)) {
            return false;
        }
        let snapshot = &self.ctx.snapshot;
        if snapshot
            .identity_headers
            .iter()
            .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
        {
            // On every listener, whether or not it sets one: a client never supplies an
            // identity that the gateway vouches for elsewhere.
            return false;
        }
        if self.ctx.drop_authorization && name.eq_ignore_ascii_case(b"authorization") {
            return false;
        }
        let edits = self.ctx.route.as_ref().map(|r| &r.request_headers);
        if edited_away(edits, name) {
            return false;
        }
        // Fields a `Connection` header names are hop-by-hop too (never Host or framing:
        // those are handled above).
        !(has_connection && fields.has_token("connection", name))
    }

    /// The client's fields the plan keeps, then the gateway's own.
    pub fn write<F: Fields, S: HeaderSink>(&self, fields: &F, sink: &mut S) {
        let has_connection = fields.first("connection").is_some();
        for (name, value) in fields.each() {
            if self.keeps_named(fields, name, has_connection) {
                sink.put(name, value);
            }
        }
        self.add(fields, sink);
    }

    /// What the gateway adds: Host, forwarded headers, identity, request id, trace
    /// context and the route's `set`/`add` edits.
    pub fn add<F: Fields, S: HeaderSink>(&self, fields: &F, sink: &mut S) {
        let ctx = self.ctx;
        if let Some(host) = self.host {
            sink.put(b"host", host.as_bytes());
        }
        if fields.has_token("te", b"trailers") {
            // The one TE value that means something to the next hop (gRPC needs it).
            sink.put(b"te", b"trailers");
        }
        if self.tunnel {
            sink.put(b"connection", b"upgrade");
        }
        let trusted = ctx.trusted;
        let mut prior: Option<Vec<u8>> = None;
        if trusted {
            for (name, value) in fields.each() {
                if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                    let joined = prior.get_or_insert_with(Vec::new);
                    if !joined.is_empty() {
                        joined.extend_from_slice(b", ");
                    }
                    joined.extend_from_slice(value);
                }
            }
        }
        let chain = forwarded::forwarded_for(prior.as_deref(), self.peer, trusted);
        sink.put(b"x-forwarded-for", &chain);
        let own_proto: &[u8] = if ctx.downstream_tls {
            b"https"
        } else {
            b"http"
        };
        let client_proto = fields.first("x-forwarded-proto").filter(|_| trusted);
        sink.put(b"x-forwarded-proto", client_proto.unwrap_or(own_proto));
        let forwarded_host = fields
            .first("x-forwarded-host")
            .filter(|_| trusted)
            .or(self.host.map(str::as_bytes));
        if let Some(host) = forwarded_host {
            sink.put(b"x-forwarded-host", host);
        }
        if let Some(identity) = self.identity {
            if let Some(header) = ctx.client_identity_header() {
                sink.put(header.as_str().as_bytes(), identity.as_bytes());
            }
        }
        sink.put(b"x-request-id", ctx.request_id.as_bytes());
        sink.put(b"traceparent", &ctx.trace.header_value());
        for (name, value) in &ctx.upstream_additions {
            sink.put(name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(edits) = ctx.route.as_ref().map(|r| &r.request_headers) {
            for (name, value) in edits.set.iter().chain(&edits.add) {
                sink.put(name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
}

/// Response fields the gateway never copies: hop-by-hop ones and its own request id.
const RESPONSE_SKIP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "x-request-id",
];

/// What the client receives of an upstream response head.
pub struct ResponseHeaders<'a> {
    pub ctx: &'a RequestContext,
    pub status: u16,
    /// The body is encoded: `content-length` and a strong `etag` are replaced, and
    /// `content-encoding` and `vary` added.
    pub encoding: Option<&'a super::compress::Plan>,
    /// As for the request: pingora frames from the fields, the HTTP/1.1 loop writes its
    /// own.
    pub keep_framing: bool,
}

impl ResponseHeaders<'_> {
    pub fn keeps<F: Fields>(&self, fields: &F, name: &[u8]) -> bool {
        self.keeps_named(fields, name, fields.first("connection").is_some())
    }

    fn keeps_named<F: Fields>(&self, fields: &F, name: &[u8], has_connection: bool) -> bool {
        if self.encoding.is_some()
            && (name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"etag"))
        {
            return false;
        }
        if listed(FRAMING, name) {
            // A 204 or a 1xx has no body, and a length on it is a protocol error
            // (RFC 9110 8.6) that some clients act on.
            let bodyless = self.status == 204 || self.status < 200;
            return self.keep_framing && !bodyless;
        }
        if self.status == 101
            && (name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"connection"))
        {
            // The upgrade the client asked for, accepted: both sides switch protocols.
            return true;
        }
        if listed(RESPONSE_SKIP, name) {
            return false;
        }
        if edited_away(self.edits(), name) {
            return false;
        }
        !(has_connection && fields.has_token("connection", name))
    }

    fn edits(&self) -> Option<&HeaderEdits> {
        self.ctx.route.as_ref().map(|r| &r.response_headers)
    }

    pub fn write<F: Fields, S: HeaderSink>(&self, fields: &F, sink: &mut S) {
        let has_connection = fields.first("connection").is_some();
        for (name, value) in fields.each() {
            if self.keeps_named(fields, name, has_connection) {
                sink.put(name, value);
            }
        }
        self.add(sink);
    }

    pub fn add<S: HeaderSink>(&self, sink: &mut S) {
        if let Some(plan) = self.encoding {
            sink.put(b"content-encoding", plan.encoding.token().as_bytes());
            sink.put(b"vary", b"accept-encoding");
            if let Some(etag) = &plan.etag {
                sink.put(b"etag", etag.as_bytes());
            }
        }
        for (name, value) in &self.ctx.response_additions {
            sink.put(name.as_str().as_bytes(), value.as_bytes());
        }
        if let (Some(pool), Some(endpoint)) = (&self.ctx.pool, self.ctx.endpoint) {
            if pool.upstream.affinity.is_some() {
                if let Some(cookie) = pool.affinity_cookie(endpoint, self.ctx.affinity.as_deref()) {
                    sink.put(b"set-cookie", cookie.as_bytes());
                }
            }
        }
        if let Some(edits) = self.edits() {
            for (name, value) in edits.set.iter().chain(&edits.add) {
                sink.put(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        sink.put(b"x-request-id", self.ctx.request_id.as_bytes());
    }
}
