//! Mirroring: a copy of some of a route's requests goes to a shadow upstream, whose
//! answers are thrown away. The copy is chosen by the request core with the rest of the
//! decision, so every renderer mirrors alike; each renderer only feeds it the request
//! body as it passes and hands it to [`send`] once the body is whole.
//!
//! A mirror must never cost the real request anything: [`send`] returns at once, the
//! exchange with the shadow runs on a task of its own, bounded in time by the shadow
//! upstream's timeouts, and at most [`IN_FLIGHT`] copies are on their way per process.
//! A copy that would pass that bound, or whose body would pass [`BODY_LIMIT`], is dropped
//! and counted, never queued: a slow shadow costs copies, not memory.

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use crate::config::model::Name;
use crate::snapshot::pool::Pool;
use crate::snapshot::router::rewritten_path;
use crate::telemetry::metrics::Metrics;

use super::context::RequestContext;
use super::fields::Fields;
use super::headers::UpstreamHeaders;
use super::Incoming;

/// The largest request body copied: a larger request is not mirrored (a partial body
/// would be a different request), and its copy is counted as `too_large`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Copies on their way to shadows at once, per process. Past it copies are dropped: a
/// shadow that hangs holds at most this many connections and bodies.
pub const IN_FLIGHT: usize = 128;

/// The most of a shadow's answer read (and thrown away) so its connection can be reused.
const ANSWER_LIMIT: usize = 1 << 20;

static PERMITS: Semaphore = Semaphore::const_new(IN_FLIGHT);

type MirrorClient = Client<HttpConnector, Full<Bytes>>;

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

/// Pooled clients, one per protocol a shadow may speak: copies to one shadow reuse their
/// connections like any upstream's.
static HTTP1: LazyLock<MirrorClient> = LazyLock::new(|| {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector())
});
static HTTP2: LazyLock<MirrorClient> = LazyLock::new(|| {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .http2_only(true)
        .build(connector())
});

/// One request's copy, filled in while its body passes.
pub struct Copy {
    route: Name,
    pool: Arc<Pool>,
    method: Method,
    /// Path and query as the route's own upstream gets them (rewrites applied).
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Body,
}

/// A copy's body: whole, or given up once past [`BODY_LIMIT`] (and its memory freed).
#[derive(Default)]
struct Body {
    bytes: Vec<u8>,
    too_large: bool,
}

impl Body {
    fn feed(&mut self, piece: &[u8]) {
        if self.too_large {
            return;
        }
        if self.bytes.len() + piece.len() > BODY_LIMIT {
            self.too_large = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(piece);
        }
    }
}

impl Copy {
    /// A piece of the request body, as the upstream gets it.
    pub fn feed(&mut self, piece: &[u8]) {
        self.body.feed(piece);
    }

    /// The body is sent again from its start (a retry on another endpoint).
    pub fn restart(&mut self) {
        self.body = Body::default();
    }
}

/// Whether this request is copied, and the copy's head: the request as the route's
/// upstream will get it (the same header plan). `None` for a route without `mirror`, a
/// request not drawn, a WebSocket upgrade, or a shadow upstream not in the snapshot.
pub fn choose<F: Fields>(
    request: &Incoming<'_, F>,
    ctx: &RequestContext,
    path: &str,
    query: Option<&str>,
    host: Option<&str>,
) -> Option<Copy> {
    let route = ctx.route.as_ref()?;
    let mirror = route.mirror.as_ref()?;
    if mirror.percent < 100.0 && rand::random::<f64>() * 100.0 >= mirror.percent {
        return None;
    }
    let pool = ctx.snapshot.pools.get(&mirror.upstream)?.clone();
    let target = rewritten_path(route, path, query).unwrap_or_else(|| match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    });
    let plan = UpstreamHeaders {
        ctx,
        peer: request.peer,
        host,
        identity: None,
        tunnel: false,
        keep_framing: false,
    };
    let mut headers = Vec::with_capacity(16);
    plan.write(request.fields, &mut headers);
    Some(Copy {
        route: route.name.clone(),
        pool,
        method: request.method.clone(),
        target,
        headers,
        body: Body::default(),
    })
}

/// Sends the copy on a task of its own and returns at once; what becomes of it is
/// counted in `edgegate_mirror_requests_total`.
pub fn send(metrics: &Metrics, copy: Copy) {
    let count = |result: &str| {
        metrics
            .mirror_requests
            .with_label_values(&[&copy.route, result])
            .inc()
    };
    if copy.body.too_large {
        count("too_large");
        return;
    }
    let Ok(permit) = PERMITS.try_acquire() else {
        count("dropped");
        return;
    };
    let counter = metrics.mirror_requests.clone();
    tokio::spawn(async move {
        let mut copy = copy;
        let result = match exchange(&mut copy).await {
            Ok(()) => "sent",
            Err(error) => {
                tracing::debug!(route = %copy.route, upstream = %copy.pool.name(), %error, "mirror copy failed");
                "failed"
            }
        };
        counter.with_label_values(&[&copy.route, result]).inc();
        drop(permit);
    });
}

/// One exchange with a member of the shadow pool, bounded by the pool's connect and
/// read timeouts; the answer is read (up to a limit) and dropped.
async fn exchange(copy: &mut Copy) -> Result<(), String> {
    let pool = &copy.pool;
    let member = pool
        .select(&[], rand::random())
        .ok_or("no healthy endpoint")?;
    let _in_flight = member.state.start_request();
    let uri = format!("http://{}{}", member.endpoint.address, copy.target);
    let mut request =
        http::Request::new(Full::new(Bytes::from(std::mem::take(&mut copy.body.bytes))));
    *request.method_mut() = copy.method.clone();
    *request.uri_mut() = uri.parse().map_err(|e| format!("target: {e}"))?;
    let headers = request.headers_mut();
    for (name, value) in &copy.headers {
        headers.append(name.clone(), value.clone());
    }
    let upstream = &pool.upstream;
    let client: &MirrorClient = if upstream.http2 { &HTTP2 } else { &HTTP1 };
    let budget = upstream.connect_timeout + upstream.read_timeout;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        // The answer's head is what counts; its body only frees the connection.
        let _ = Limited::new(response.into_body(), ANSWER_LIMIT)
            .collect()
            .await;
        Ok(())
    };
    tokio::time::timeout(budget, exchange)
        .await
        .map_err(|_| format!("no answer within {budget:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_copied_whole_up_to_the_limit_and_given_up_past_it() {
        let mut body = Body::default();
        body.feed(&[1; 1000]);
        body.feed(&[2; BODY_LIMIT - 1000]);
        assert!(!body.too_large);
        assert_eq!(body.bytes.len(), BODY_LIMIT);
        assert_eq!(&body.bytes[999..1001], &[1, 2]);
        body.feed(&[3]);
        assert!(body.too_large);
        assert!(
            body.bytes.is_empty() && body.bytes.capacity() == 0,
            "memory freed"
        );
        body.feed(&[4; 10]);
        assert!(body.too_large && body.bytes.is_empty(), "stays given up");
    }
}
