//! What every request on either path reads and reports to: the published snapshot, the
//! metrics, passive health, the retry policy, and the one record of a finished request.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::model::Name;
use crate::snapshot::pool::Pool;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_record::RequestRecord;
use crate::telemetry::trace_export::SpanRecord;

use super::answer::Failure;
use super::context::RequestContext;

/// The request core's handle on the gateway's state, shared by every renderer; each field is read without locks.
#[derive(Clone)]
pub struct Core {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

/// What the metrics and the access log need of a finished request, from either path.
pub struct Exchange<'a> {
    pub status: u16,
    pub method: &'a http::Method,
    /// Owned when the renderer already made a copy for the record (no second one).
    pub path: std::borrow::Cow<'a, str>,
    pub client: Option<SocketAddr>,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
}

impl Core {
    /// Feeds passive health; logs an ejection when one happens.
    pub fn note_outcome(&self, pool: &Pool, address: SocketAddr, ok: bool) {
        if let Some(duration) = pool.record_outcome(address, ok) {
            self.metrics
                .ejections
                .with_label_values(&[pool.name()])
                .inc();
            tracing::warn!(upstream = %pool.name(), endpoint = %address, ejected_for = ?duration, "endpoint ejected after consecutive failures");
        }
    }

    /// The attempt on `ctx.endpoint` ended: counted once toward passive health, however
    /// many places see the same failure (pingora reports a refused retry twice).
    pub fn settle_attempt(&self, ctx: &mut RequestContext, ok: bool) {
        if ctx.attempt_settled {
            return;
        }
        if let (Some(pool), Some(address)) = (&ctx.pool, ctx.endpoint) {
            self.note_outcome(pool, address, ok);
        }
        ctx.attempt_settled = true;
    }

    /// The retry policy, for both paths: after a failed attempt, whether to ask another
    /// endpoint. The failure counts once against the endpoint; a retry needs the request
    /// to be repeatable (`may_repeat`), one of the upstream's `retries` left and room in
    /// its retry budget.
    pub fn retry_after(
        &self,
        ctx: &mut RequestContext,
        failure: Failure,
        may_repeat: bool,
        error: &dyn std::fmt::Display,
    ) -> bool {
        self.settle_attempt(ctx, false);
        if let Some(address) = ctx.endpoint {
            if !ctx.tried.contains(&address) {
                ctx.tried.push(address);
            }
        }
        let Some(pool) = ctx.pool.clone() else {
            return false;
        };
        if !(may_repeat && failure.retryable(ctx.idempotent) && ctx.retries_left > 0) {
            return false;
        }
        match pool.try_retry() {
            Some(guard) => {
                ctx.retry_budget = Some(guard);
                ctx.retries_left -= 1;
                self.metrics
                    .upstream_retries
                    .with_label_values(&[pool.name()])
                    .inc();
                tracing::warn!(upstream = %pool.name(), endpoint = ?ctx.endpoint, request_id = %ctx.request_id, error = %error, "retrying on another endpoint");
                true
            }
            None => {
                self.metrics
                    .retry_budget_exhausted
                    .with_label_values(&[pool.name()])
                    .inc();
                tracing::debug!(upstream = %pool.name(), request_id = %ctx.request_id, "retry budget exhausted");
                false
            }
        }
    }

    /// Feeds the request's mirror copy (if it has one) a piece of the body as the
    /// upstream gets it; at the body's `end` the copy leaves, without waiting for it.
    pub fn mirror_body(&self, ctx: &mut RequestContext, piece: &[u8], end: bool) {
        let Some(copy) = ctx.mirror.as_mut() else {
            return;
        };
        copy.feed(piece);
        if end {
            if let Some(copy) = ctx.mirror.take() {
                super::mirror::send(&self.metrics, copy);
            }
        }
    }

    /// Logs a request that failed with a gateway error, the same way on both paths.
    pub fn log_failure(&self, ctx: &RequestContext, status: u16, error: &dyn std::fmt::Display) {
        tracing::warn!(
            listener = %ctx.listener,
            route = %ctx.route_name(),
            upstream = %ctx.upstream_name(),
            endpoint = ?ctx.endpoint,
            request_id = %ctx.request_id,
            status,
            error = %error,
            "request failed"
        );
    }

    /// Counts a finished request, writes its access log line and hands its span to the
    /// exporter: the one place both request paths report a request, so the metrics, the
    /// log and the trace always describe the same requests.
    /// The request is over: its owned fields move into the record instead of being
    /// copied.
    pub fn record(&self, ctx: &mut RequestContext, exchange: Exchange<'_>) {
        let elapsed = ctx.started.elapsed();
        let (route, upstream) = (ctx.route_name(), ctx.upstream_name());
        let code = crate::telemetry::metrics::status_code(exchange.status);
        self.metrics
            .requests
            .with_label_values(&[&*ctx.listener, route, upstream, code.as_ref()])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        match ctx.refusal {
            Some(super::policy::Refusal::AccessDenied) => {
                self.metrics.access_denied.with_label_values(&[route]).inc()
            }
            Some(super::policy::Refusal::RateLimited) => {
                self.metrics.rate_limited.with_label_values(&[route]).inc()
            }
            None => {}
        }
        if let Some(encoding) = ctx.compressed {
            self.metrics
                .compressed_responses
                .with_label_values(&[route, encoding.token()])
                .inc();
        }
        if ctx.store_error {
            self.metrics.rate_limit_store_errors.inc();
        }
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
        if let Some(note) = &ctx.auth {
            self.metrics
                .auth
                .with_label_values(&[route, note.result.as_str()])
                .inc();
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
            host: std::mem::take(&mut ctx.host),
            path: exchange.path.into_owned(),
            status: exchange.status,
            route: ctx.route.as_ref().map(|r| r.name.clone()),
            upstream: ctx.pool.as_ref().map(|p| p.name().clone()),
            endpoint: ctx.endpoint,
            bytes_sent: exchange.bytes_sent,
            duration: elapsed,
            request_id: std::mem::take(&mut ctx.request_id),
            trace: ctx.trace,
            auth: ctx.auth.clone(),
        });
        if let Some(export) = export {
            let (start_unix_nanos, end_unix_nanos) =
                crate::telemetry::trace_export::span_times(elapsed);
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
pub fn client_identity(ssl: &pingora::protocols::tls::SslDigest) -> Option<String> {
    if ssl.cert_digest.is_empty() {
        return None;
    }
    let hash: String = ssl.cert_digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("Hash={hash}");
    if let Some(serial) = &ssl.serial_number {
        out.push_str(&format!(";Serial={serial}"));
    }
    if let Some(org) = &ssl.organization {
        out.push_str(&format!(";O=\"{}\"", org.replace('"', "")));
    }
    Some(out)
}

/// One draw for a weighted route: each request independently, so the split holds across
/// workers and connections without shared state.
pub fn pick_backend(backends: &[crate::config::model::WeightedUpstream]) -> Option<&Name> {
    crate::config::model::pick_weighted(backends, rand::random::<u64>())
}
