//! Per-request state: the one snapshot the request lives on, and what it chose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::model::{Name, Route};
use crate::snapshot::pool::{BudgetGuard, InFlight, Pool};
use crate::snapshot::Snapshot;

use crate::telemetry::trace::TraceContext;

pub struct RequestContext {
    /// Loaded once when the request starts; a reload never changes it mid-request.
    pub snapshot: Arc<Snapshot>,
    pub started: Instant,
    pub listener: Name,
    pub downstream_tls: bool,
    /// The peer is one of the listener's `trusted_proxies` (read per request, from the
    /// request's own snapshot).
    pub trusted: bool,
    /// The method may be repeated (a reset before a response may then be retried).
    pub idempotent: bool,
    pub host: String,
    pub route: Option<Arc<Route>>,
    pub pool: Option<Arc<Pool>>,
    /// Endpoints already attempted, so a retry goes elsewhere.
    pub tried: Vec<SocketAddr>,
    pub endpoint: Option<SocketAddr>,
    /// The attempt on `endpoint` has been counted toward passive health.
    pub attempt_settled: bool,
    pub in_flight: Option<InFlight>,
    /// Held from choosing an HTTP/2 peer until pingora has a stream on a connection, so
    /// concurrent requests find the shared connection instead of each opening one.
    pub h2_checkout: Option<tokio::sync::OwnedMutexGuard<()>>,
    pub retries_left: usize,
    /// This request's place in its upstream's retry budget, and its retry's, if any.
    pub budget: Option<BudgetGuard>,
    pub retry_budget: Option<BudgetGuard>,
    pub hash_key: u64,
    /// A WebSocket upgrade (pingora's path): `Upgrade` goes to the upstream.
    pub tunnel: bool,
    /// The Host the upstream gets, as the client sent it (pingora's path).
    pub upstream_host: Option<String>,
    /// Fields a gate adds to the upstream request (an authenticated identity), written
    /// by the upstream header plan after the client's fields.
    pub upstream_additions: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fields a gate adds to whatever the client receives, an upstream's response or a
    /// local answer (rate-limit headers, CORS).
    pub response_additions: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The route's authenticator let the request in, or refused it: for the access log
    /// and `edgegate_auth_total`.
    pub auth: Option<super::auth::AuthNote>,
    /// The client's `Authorization` is not forwarded (it carried a password).
    pub drop_authorization: bool,
    /// The member key the request's affinity cookie names (upstreams with `affinity`).
    pub affinity: Option<String>,
    /// The coding the client accepts, on a route with `compress` (the response decides
    /// whether it is used).
    pub compression: Option<crate::config::model::Encoding>,
    /// The coding the answer was sent in (counted when the request is recorded).
    pub compressed: Option<crate::config::model::Encoding>,
    /// The response body's encoder (pingora's path), when the answer is compressed.
    pub encoder: Option<super::compress::Encoder>,
    /// The copy of this request for the route's mirror, until its body is whole and it
    /// is sent.
    pub mirror: Option<super::mirror::Copy>,
    /// Traffic policy refused the request (counted when it is recorded).
    pub refusal: Option<super::policy::Refusal>,
    /// The rate-limit store failed this request (counted when it is recorded).
    pub store_error: bool,
    /// Request body bytes seen so far, against the route's `max_body_size`.
    pub body_bytes: u64,
    pub request_id: String,
    pub trace: TraceContext,
    /// The upstream attempt under way (pingora's path): when it started and its endpoint's
    /// metric label. Taken when the attempt is counted, so each is counted once.
    pub attempt: Option<(Instant, Name)>,
    /// The status and arrival of the upstream's response head (the HTTP/1.1 loop's path).
    pub upstream_answer: Option<(u16, Instant)>,
    /// Counts the request in `edgegate_requests_in_flight` until the context is dropped.
    pub in_flight_gauge: Option<InFlightGauge>,
}

/// One request in `edgegate_requests_in_flight{listener}`; leaves it when dropped, however
/// the request ends.
pub struct InFlightGauge(prometheus::IntGauge);

impl InFlightGauge {
    pub fn enter(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The listener of a request not yet attributed to one: shared, so no request allocates it.
pub fn unnamed_listener() -> Name {
    static UNNAMED: std::sync::LazyLock<Name> = std::sync::LazyLock::new(|| Name::from(""));
    UNNAMED.clone()
}

impl RequestContext {
    /// `listener` is known to the HTTP/1.1 loop when a connection opens; pingora's path
    /// learns it from the connection's address and passes the unnamed one.
    pub fn new(snapshot: Arc<Snapshot>, listener: Name) -> Self {
        Self {
            snapshot,
            started: Instant::now(),
            listener,
            downstream_tls: false,
            trusted: false,
            idempotent: true,
            host: String::new(),
            route: None,
            pool: None,
            tried: Vec::new(),
            endpoint: None,
            attempt_settled: false,
            in_flight: None,
            h2_checkout: None,
            retries_left: 0,
            budget: None,
            retry_budget: None,
            hash_key: 0,
            tunnel: false,
            upstream_host: None,
            upstream_additions: Vec::new(),
            response_additions: Vec::new(),
            auth: None,
            drop_authorization: false,
            affinity: None,
            compression: None,
            encoder: None,
            compressed: None,
            mirror: None,
            refusal: None,
            store_error: false,
            body_bytes: 0,
            request_id: String::new(),
            trace: TraceContext::default(),
            attempt: None,
            upstream_answer: None,
            in_flight_gauge: None,
        }
    }

    /// A new attempt on `endpoint` begins.
    pub fn begin_attempt(&mut self, endpoint: SocketAddr) {
        self.endpoint = Some(endpoint);
        self.attempt_settled = false;
    }

    pub fn route_name(&self) -> &str {
        self.route.as_ref().map_or("", |r| &r.name)
    }

    /// The request's listener as its own snapshot defines it: the one place a step looks
    /// up the listener's settings (trusted proxies, client identity).
    pub fn listener_spec(&self) -> Option<&crate::config::model::Listener> {
        self.snapshot
            .config
            .listeners
            .iter()
            .find(|l| l.name == self.listener)
    }

    /// The header that carries a verified client certificate's identity upstream, when
    /// the request's listener names one.
    pub fn client_identity_header(&self) -> Option<http::HeaderName> {
        self.listener_spec()?
            .tls
            .as_ref()?
            .client_auth
            .as_ref()?
            .identity_header
            .clone()
    }

    /// The share of new traces to sample, when spans are exported.
    pub fn sample_ratio(&self) -> Option<f64> {
        self.snapshot
            .trace_export
            .as_ref()
            .map(|t| t.sample_ratio())
    }

    pub fn upstream_name(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.name())
    }
}
