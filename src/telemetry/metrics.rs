//! Every collector edgegate exports, named and documented in one place.
//!
//! Label values come from the config (listener, route and upstream names) or from a small
//! fixed set (status codes, results), never from a request's path, host or client, so the
//! number of series stays bounded whatever the traffic.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::sync::Arc;

use prometheus::core::Collector;

use crate::config::model::Name;

/// The running snapshot's pools, by upstream: what the scrape-time gauges are read from.
/// What rendering reads of an upstream's pool. The snapshot's pools implement it, so
/// the metrics need nothing of the snapshot, which holds the sinks they count for.
pub trait PoolGauges {
    fn healthy_count(&self) -> usize;
    fn member_count(&self) -> usize;
    fn ejected_count(&self) -> usize;
    /// Whether a member with this endpoint label is in the pool.
    fn has_member(&self, label: &str) -> bool;
}

/// The running pools, by upstream name.
pub type Pools<P> = std::collections::HashMap<Name, std::sync::Arc<P>>;

/// Removes every series of `vec` with a label value `keep` rejects; `labels` are the
/// vec's label names in declaration order.
fn forget<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    labels: &[&str],
    keep: &dyn Fn(&str, &str) -> bool,
) {
    forget_series(vec, labels, &|values| {
        labels
            .iter()
            .zip(values)
            .all(|(name, value)| keep(name, value))
    });
}

/// Removes every series of `vec` whose label values (in the order of `labels`) `keep`
/// rejects: for checks that need two labels at once (an endpoint of an upstream).
fn forget_series<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    labels: &[&str],
    keep: &dyn Fn(&[&str]) -> bool,
) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let pairs = metric.get_label();
            let value_of = |name: &str| {
                pairs
                    .iter()
                    .find(|p| p.name() == name)
                    .map_or("", |p| p.value())
            };
            let values: Vec<&str> = labels.iter().map(|name| value_of(name)).collect();
            if !keep(&values) {
                let _ = vec.remove_label_values(&values);
            }
        }
    }
}

/// A collector registered in the registry and also kept by [`Metrics`], so `describe` can
/// read the label names of families that have no series yet (the registry skips them).
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

/// Histogram buckets suited to a proxy: from 100 µs (a local answer, a loopback
/// upstream) to 30 s (a long poll or a slow backend).
const PROXY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// One exported metric family, as the README table and the packaging checks read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDescription {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
}

pub struct Metrics {
    registry: Registry,
    /// `edgegate_requests_total{listener,route,upstream,code}`: responses sent, by the
    /// status the client received; empty labels where one does not apply.
    pub requests: IntCounterVec,
    /// `edgegate_request_duration_seconds{route}`: the same requests as `requests`.
    pub request_duration: HistogramVec,
    /// `edgegate_upstream_endpoints{upstream,state}`: refreshed from the live snapshot at
    /// every scrape, so it can never drift from what the proxy uses.
    pub upstream_endpoints: IntGaugeVec,
    /// `edgegate_config_reloads_total{result}`: `success` or `failure`.
    pub config_reloads: IntCounterVec,
    /// `edgegate_config_generation`: 1 at start, +1 per applied reload.
    pub config_generation: IntGauge,
    /// `edgegate_upstream_retries_total{upstream}`: attempts sent to another endpoint.
    pub upstream_retries: IntCounterVec,
    /// `edgegate_upstream_retry_budget_exhausted_total{upstream}`: retries not sent
    /// because retries in flight had reached the upstream's `retry_budget`.
    pub retry_budget_exhausted: IntCounterVec,
    /// `edgegate_auth_total{route,result}`: authentication verdicts, `allowed`, `denied`
    /// or `error` (the authenticator could not decide; the client got 503).
    pub auth: IntCounterVec,
    /// `edgegate_upstream_ejections_total{upstream}`: members ejected by passive health.
    pub ejections: IntCounterVec,
    /// `edgegate_health_checks_total{upstream,result}`: active checks, `pass` or `fail`.
    pub health_checks: IntCounterVec,
    /// `edgegate_access_log_dropped_total`: lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
    /// `edgegate_tls_handshakes_total{listener,result}`.
    pub tls_handshakes: IntCounterVec,
    /// `edgegate_tls_certificate_expiry_timestamp_seconds{listener,name}`.
    pub certificate_expiry: IntGaugeVec,
    /// `edgegate_connections_active{listener}`: downstream connections open now.
    pub connections_active: IntGaugeVec,
    /// `edgegate_discovery_events_total{service}`: watch events, by `namespace/name`.
    pub discovery_events: IntCounterVec,
    /// `edgegate_discovery_errors_total{service}`: failed or broken watches.
    pub discovery_errors: IntCounterVec,
    /// `edgegate_discovery_last_sync_timestamp_seconds{service}`: last published change.
    pub discovery_last_sync: IntGaugeVec,
    /// `edgegate_upstream_requests_total{upstream,endpoint,code}`: attempts sent to each
    /// endpoint, by the status it answered, or `error` when it gave no response (connect
    /// failure, reset, timeout, invalid response). Retries are separate attempts.
    pub upstream_requests: IntCounterVec,
    /// `edgegate_upstream_duration_seconds{upstream}`: from an attempt's start (connect
    /// included) to the upstream's response head.
    pub upstream_duration: HistogramVec,
    /// `edgegate_upstream_connect_failures_total{upstream,endpoint}`: connects that failed
    /// or timed out.
    pub upstream_connect_failures: IntCounterVec,
    /// `edgegate_requests_in_flight{listener}`: requests read and not yet answered.
    pub requests_in_flight: IntGaugeVec,
    /// `edgegate_request_bytes_total{route}`: request body bytes received from clients.
    pub request_bytes: IntCounterVec,
    /// `edgegate_response_bytes_total{route}`: response body bytes sent to clients.
    pub response_bytes: IntCounterVec,
    /// `edgegate_tracing_spans_exported_total`: spans the collector accepted.
    pub tracing_spans_exported: IntCounter,
    /// `edgegate_tracing_spans_dropped_total{reason}`: spans never delivered: `queue_full`
    /// (the exporter fell behind) or `export_failed` (the collector was down, slow or
    /// refused the batch).
    pub tracing_spans_dropped: IntCounterVec,
    /// `edgegate_access_denied_total{route}`: requests refused by a route's `allow`/`deny`.
    pub access_denied: IntCounterVec,
    /// `edgegate_rate_limited_total{route}`: requests refused by a route's rate limit.
    pub rate_limited: IntCounterVec,
    /// `edgegate_rate_limit_store_errors_total`: global limit checks the store did not
    /// answer in time (each followed `on_error`).
    pub rate_limit_store_errors: IntCounter,
    /// `edgegate_compressed_responses_total{route,encoding}`: answers the gateway encoded.
    pub compressed_responses: IntCounterVec,
    /// `edgegate_mirror_requests_total{route,result}`: request copies for a route's
    /// mirror, by what became of them (`sent`, `failed`, `dropped`, `too_large`).
    pub mirror_requests: IntCounterVec,
    /// `edgegate_tcp_connections_total{listener,route,upstream}`: connections relayed
    /// whole (tcp listeners and TLS passthrough), counted when their route is chosen.
    pub tcp_connections: IntCounterVec,
    /// `edgegate_tcp_bytes_total{route,direction}`: relayed bytes, `upstream` (from the
    /// client) or `downstream` (to the client).
    pub tcp_bytes: IntCounterVec,
    /// `edgegate_tcp_connections_active{listener}`: relayed connections open now.
    pub tcp_connections_active: IntGaugeVec,
    /// `edgegate_acme_orders_total{result}`: ACME orders, `success` or `failure`.
    pub acme_orders: IntCounterVec,
    /// Every collector above, for [`Metrics::describe`].
    collectors: Vec<Arc<dyn Collector>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("edgegate_requests_total", "Responses sent to clients."),
            &["listener", "route", "upstream", "code"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "edgegate_request_duration_seconds",
                "Time from request start to the end of its response.",
            )
            .buckets(PROXY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_endpoints = IntGaugeVec::new(
            Opts::new(
                "edgegate_upstream_endpoints",
                "Members of each upstream: healthy or unhealthy by active checks, ejected by passive health.",
            ),
            &["upstream", "state"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new("edgegate_config_reloads_total", "Config reload attempts."),
            &["result"],
        )
        .expect("valid metric");
        let config_generation = IntGauge::new(
            "edgegate_config_generation",
            "Generation of the running config.",
        )
        .expect("valid metric");
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "edgegate_upstream_retries_total",
                "Requests retried on another endpoint.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let retry_budget_exhausted = IntCounterVec::new(
            Opts::new(
                "edgegate_upstream_retry_budget_exhausted_total",
                "Retries not sent because the upstream's retry budget was spent.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let auth = IntCounterVec::new(
            Opts::new(
                "edgegate_auth_total",
                "Requests checked by a route's authenticator, by verdict.",
            ),
            &["route", "result"],
        )
        .expect("valid metric");
        let ejections = IntCounterVec::new(
            Opts::new(
                "edgegate_upstream_ejections_total",
                "Members ejected by passive health (outlier detection).",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let health_checks = IntCounterVec::new(
            Opts::new("edgegate_health_checks_total", "Active health checks."),
            &["upstream", "result"],
        )
        .expect("valid metric");
        let access_log_dropped = IntCounter::new(
            "edgegate_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )
        .expect("valid metric");
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "edgegate_tls_handshakes_total",
                "TLS handshakes by outcome.",
            ),
            &["listener", "result"],
        )
        .expect("valid metric");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "edgegate_tls_certificate_expiry_timestamp_seconds",
                "Expiry (not after) of each served certificate, Unix time.",
            ),
            &["listener", "name"],
        )
        .expect("valid metric");
        let connections_active = IntGaugeVec::new(
            Opts::new(
                "edgegate_connections_active",
                "Downstream connections currently open.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let discovery_events = IntCounterVec::new(
            Opts::new(
                "edgegate_discovery_events_total",
                "Kubernetes watch events.",
            ),
            &["service"],
        )
        .expect("valid metric");
        let discovery_errors = IntCounterVec::new(
            Opts::new(
                "edgegate_discovery_errors_total",
                "Kubernetes watch errors.",
            ),
            &["service"],
        )
        .expect("valid metric");
        let discovery_last_sync = IntGaugeVec::new(
            Opts::new(
                "edgegate_discovery_last_sync_timestamp_seconds",
                "When discovered members were last published, Unix time.",
            ),
            &["service"],
        )
        .expect("valid metric");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "edgegate_upstream_requests_total",
                "Attempts sent to upstream endpoints by response status; code error when none came.",
            ),
            &["upstream", "endpoint", "code"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "edgegate_upstream_duration_seconds",
                "Time from an upstream attempt's start to its response head.",
            )
            .buckets(PROXY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_connect_failures = IntCounterVec::new(
            Opts::new(
                "edgegate_upstream_connect_failures_total",
                "Connections to upstream endpoints that failed or timed out.",
            ),
            &["upstream", "endpoint"],
        )
        .expect("valid metric");
        let requests_in_flight = IntGaugeVec::new(
            Opts::new(
                "edgegate_requests_in_flight",
                "Requests read and not yet answered.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "edgegate_request_bytes_total",
                "Request body bytes received from clients.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "edgegate_response_bytes_total",
                "Response body bytes sent to clients.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let tracing_spans_exported = IntCounter::new(
            "edgegate_tracing_spans_exported_total",
            "Spans accepted by the OTLP collector.",
        )
        .expect("valid metric");
        let tracing_spans_dropped = IntCounterVec::new(
            Opts::new(
                "edgegate_tracing_spans_dropped_total",
                "Spans never delivered to the OTLP collector.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let access_denied = IntCounterVec::new(
            Opts::new(
                "edgegate_access_denied_total",
                "Requests refused (403) by a route's allow or deny list.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "edgegate_rate_limited_total",
                "Requests refused (429) by a route's rate limit.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let rate_limit_store_errors = IntCounter::new(
            "edgegate_rate_limit_store_errors_total",
            "Global rate limit checks the store did not answer within its budget.",
        )
        .expect("valid metric");
        let compressed_responses = IntCounterVec::new(
            Opts::new(
                "edgegate_compressed_responses_total",
                "Responses the gateway compressed, by coding.",
            ),
            &["route", "encoding"],
        )
        .expect("valid metric");
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "edgegate_mirror_requests_total",
                "Request copies for route mirrors: sent (the mirror answered), failed, dropped (too many in flight) or too_large (body over the copy limit).",
            ),
            &["route", "result"],
        )
        .expect("valid metric");
        let tcp_connections = IntCounterVec::new(
            Opts::new(
                "edgegate_tcp_connections_total",
                "Connections relayed whole to an upstream (tcp listeners and TLS passthrough).",
            ),
            &["listener", "route", "upstream"],
        )
        .expect("valid metric");
        let tcp_bytes = IntCounterVec::new(
            Opts::new(
                "edgegate_tcp_bytes_total",
                "Bytes relayed on tcp routes: upstream from clients, downstream to them.",
            ),
            &["route", "direction"],
        )
        .expect("valid metric");
        let tcp_connections_active = IntGaugeVec::new(
            Opts::new(
                "edgegate_tcp_connections_active",
                "Relayed connections currently open.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let acme_orders = IntCounterVec::new(
            Opts::new(
                "edgegate_acme_orders_total",
                "ACME certificate orders by outcome.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_endpoints.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_generation.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(retry_budget_exhausted.clone()),
            Box::new(ejections.clone()),
            Box::new(auth.clone()),
            Box::new(health_checks.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(connections_active.clone()),
            Box::new(discovery_events.clone()),
            Box::new(discovery_errors.clone()),
            Box::new(discovery_last_sync.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_connect_failures.clone()),
            Box::new(requests_in_flight.clone()),
            Box::new(request_bytes.clone()),
            Box::new(response_bytes.clone()),
            Box::new(tracing_spans_exported.clone()),
            Box::new(tracing_spans_dropped.clone()),
            Box::new(access_denied.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limit_store_errors.clone()),
            Box::new(compressed_responses.clone()),
            Box::new(mirror_requests.clone()),
            Box::new(tcp_connections.clone()),
            Box::new(tcp_bytes.clone()),
            Box::new(tcp_connections_active.clone()),
            Box::new(acme_orders.clone()),
        ];
        let collectors: Vec<Arc<dyn Collector>> = collectors.into_iter().map(Arc::from).collect();
        for collector in &collectors {
            registry
                .register(Box::new(Shared(collector.clone())))
                .expect("unique metric names");
        }
        for reason in ["queue_full", "export_failed"] {
            tracing_spans_dropped.with_label_values(&[reason]);
        }
        // Both results exist from the start so `rate()` and alerts see a zero, not nothing.
        config_reloads.with_label_values(&["success"]);
        config_reloads.with_label_values(&["failure"]);
        Self {
            registry,
            requests,
            request_duration,
            upstream_endpoints,
            config_reloads,
            config_generation,
            upstream_retries,
            retry_budget_exhausted,
            ejections,
            auth,
            health_checks,
            access_log_dropped,
            tls_handshakes,
            certificate_expiry,
            connections_active,
            discovery_events,
            discovery_errors,
            discovery_last_sync,
            upstream_requests,
            upstream_duration,
            upstream_connect_failures,
            requests_in_flight,
            request_bytes,
            response_bytes,
            tracing_spans_exported,
            tracing_spans_dropped,
            access_denied,
            rate_limited,
            rate_limit_store_errors,
            compressed_responses,
            mirror_requests,
            tcp_connections,
            tcp_bytes,
            tcp_connections_active,
            acme_orders,
            collectors,
        }
    }

    /// Every metric family the registry exports, with its label names, sorted by name:
    /// what the README's metric table and the packaging checks are held against.
    pub fn describe(&self) -> Vec<MetricDescription> {
        let mut out: Vec<MetricDescription> = self
            .collectors
            .iter()
            .flat_map(|collector| {
                let kind = collector.collect().first().map_or("untyped", |family| {
                    match family.get_field_type() {
                        prometheus::proto::MetricType::COUNTER => "counter",
                        prometheus::proto::MetricType::GAUGE => "gauge",
                        prometheus::proto::MetricType::HISTOGRAM => "histogram",
                        prometheus::proto::MetricType::SUMMARY => "summary",
                        prometheus::proto::MetricType::UNTYPED => "untyped",
                    }
                });
                collector
                    .desc()
                    .into_iter()
                    .map(|desc| MetricDescription {
                        name: desc.fq_name.clone(),
                        kind,
                        labels: desc.variable_labels.clone(),
                        help: desc.help.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Counts an upstream attempt that got a response head after `waited`.
    pub fn upstream_answered(&self, upstream: &str, endpoint: &str, status: u16, waited: f64) {
        let code = status_code(status);
        self.upstream_requests
            .with_label_values(&[upstream, endpoint, code.as_ref()])
            .inc();
        self.upstream_duration
            .with_label_values(&[upstream])
            .observe(waited);
    }

    /// Counts an upstream attempt that ended without a response; `connect` when the
    /// connection itself failed.
    pub fn upstream_failed(&self, upstream: &str, endpoint: &str, connect: bool) {
        self.upstream_requests
            .with_label_values(&[upstream, endpoint, "error"])
            .inc();
        if connect {
            self.upstream_connect_failures
                .with_label_values(&[upstream, endpoint])
                .inc();
        }
    }

    /// Drops the series of listeners, routes and upstreams a reload removed, so renaming
    /// things over months does not grow the registry (and dashboards do not show
    /// counters that can never move again).
    ///
    /// With routes from the cluster this runs on every route edit, which mostly removes
    /// no name at all: then the registry is not walked (collecting every series is the
    /// cost), and names are looked up in sets rather than scanned.
    pub fn forget_removed(&self, previous: &crate::config::Config, config: &crate::config::Config) {
        use std::collections::HashSet;
        let same_names = |a: &[Arc<crate::config::model::Route>],
                          b: &[Arc<crate::config::model::Route>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
        };
        // The common case first: an edit that kept every route where it was.
        if same_names(&previous.routes, &config.routes)
            && previous.tcp_routes.len() == config.tcp_routes.len()
            && previous
                .tcp_routes
                .iter()
                .zip(&config.tcp_routes)
                .all(|(x, y)| x.name == y.name)
            && previous.upstreams.len() == config.upstreams.len()
            && previous
                .upstreams
                .iter()
                .zip(&config.upstreams)
                .all(|(x, y)| x.name == y.name)
            && previous.listeners.len() == config.listeners.len()
            && previous
                .listeners
                .iter()
                .zip(&config.listeners)
                .all(|(x, y)| x.name == y.name)
        {
            return;
        }
        let routes: HashSet<&str> = config
            .routes
            .iter()
            .map(|r| &*r.name)
            .chain(config.tcp_routes.iter().map(|r| &*r.name))
            .collect();
        let upstreams: HashSet<&str> = config.upstreams.iter().map(|u| &*u.name).collect();
        let removed = previous
            .routes
            .iter()
            .map(|r| &*r.name)
            .chain(previous.tcp_routes.iter().map(|r| &*r.name))
            .any(|name| !routes.contains(name))
            || previous
                .upstreams
                .iter()
                .any(|u| !upstreams.contains(&*u.name))
            || previous
                .listeners
                .iter()
                .any(|l| !config.listeners.iter().any(|n| n.name == l.name));
        if !removed {
            return;
        }
        let known = |label: &str, value: &str| {
            value.is_empty()
                || match label {
                    "listener" => config.listeners.iter().any(|l| &*l.name == value),
                    "route" => routes.contains(value),
                    "upstream" => upstreams.contains(value),
                    _ => true,
                }
        };
        forget(
            &self.requests,
            &["listener", "route", "upstream", "code"],
            &known,
        );
        forget(&self.request_duration, &["route"], &known);
        forget(&self.upstream_retries, &["upstream"], &known);
        forget(&self.retry_budget_exhausted, &["upstream"], &known);
        forget(&self.ejections, &["upstream"], &known);
        forget(&self.auth, &["route", "result"], &known);
        forget(&self.health_checks, &["upstream", "result"], &known);
        forget(&self.connections_active, &["listener"], &known);
        forget(&self.requests_in_flight, &["listener"], &known);
        forget(&self.request_bytes, &["route"], &known);
        forget(&self.response_bytes, &["route"], &known);
        forget(&self.access_denied, &["route"], &known);
        forget(&self.rate_limited, &["route"], &known);
        forget(&self.compressed_responses, &["route", "encoding"], &known);
        forget(&self.mirror_requests, &["route", "result"], &known);
        forget(&self.upstream_duration, &["upstream"], &known);
        forget(&self.tls_handshakes, &["listener", "result"], &known);
        forget(
            &self.tcp_connections,
            &["listener", "route", "upstream"],
            &known,
        );
        forget(&self.tcp_bytes, &["route", "direction"], &known);
        forget(&self.tcp_connections_active, &["listener"], &known);
    }

    /// The expiry of every certificate the listeners serve (files and Secrets alike),
    /// as `(listener, name, not-after)`, set in place; series of certificates no longer
    /// served (`previous` less `next`) are removed afterwards, so a scrape never sees
    /// the gauge half-empty.
    pub fn set_certificate_expiries(
        &self,
        previous: &[(String, String, i64)],
        next: &[(String, String, i64)],
    ) {
        for (listener, name, at) in next {
            self.certificate_expiry
                .with_label_values(&[listener, name])
                .set(*at);
        }
        for (listener, name, _) in previous {
            if !next.iter().any(|(l, n, _)| l == listener && n == name) {
                let _ = self
                    .certificate_expiry
                    .remove_label_values(&[listener, name]);
            }
        }
    }

    /// Drops the series a discovery watch kept (`service` is `namespace/name`), once
    /// no upstream names that Service.
    pub fn forget_discovered_service(&self, service: &str) {
        let _ = self.discovery_events.remove_label_values(&[service]);
        let _ = self.discovery_errors.remove_label_values(&[service]);
        let _ = self.discovery_last_sync.remove_label_values(&[service]);
    }

    /// Drops the per-endpoint series of endpoints no longer in their upstream (removed by
    /// a reload or gone from discovery): endpoint addresses churn with every rollout.
    fn forget_departed_endpoints<P: PoolGauges>(&self, pools: &Pools<P>) {
        let present = |values: &[&str]| {
            pools
                .get(values[0])
                .is_some_and(|pool| pool.has_member(values[1]))
        };
        forget_series(
            &self.upstream_requests,
            &["upstream", "endpoint", "code"],
            &present,
        );
        forget_series(
            &self.upstream_connect_failures,
            &["upstream", "endpoint"],
            &present,
        );
    }

    /// Prometheus text exposition, with the gauges derived from the running snapshot
    /// (its `generation` and `pools`) refreshed.
    ///
    /// Series are overwritten in place and only those of upstreams the snapshot no
    /// longer has are removed: clearing the vector first would let a concurrent scrape
    /// gather it half-empty.
    pub fn render<P: PoolGauges>(&self, generation: u64, pools: &Pools<P>) -> String {
        self.forget_departed_endpoints(pools);
        forget(
            &self.upstream_endpoints,
            &["upstream", "state"],
            &|label, value| label != "upstream" || pools.contains_key(value),
        );
        for (name, pool) in pools {
            let healthy = pool.healthy_count() as i64;
            let total = pool.member_count() as i64;
            self.upstream_endpoints
                .with_label_values(&[name, "healthy"])
                .set(healthy);
            self.upstream_endpoints
                .with_label_values(&[name, "unhealthy"])
                .set(total - healthy);
            // Ejected members are also counted by their active-check health above.
            self.upstream_endpoints
                .with_label_values(&[name, "ejected"])
                .set(pool.ejected_count() as i64);
        }
        self.config_generation.set(generation as i64);
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A status code as a label value; the common ones without formatting.
pub fn status_code(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        204 => "204".into(),
        301 => "301".into(),
        302 => "302".into(),
        304 => "304".into(),
        400 => "400".into(),
        404 => "404".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod forget_tests {
    use super::*;
    use crate::config::{load, SourceFile};

    fn config(routes: &[&str]) -> crate::config::Config {
        let mut text = String::from("[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n");
        for name in routes {
            text.push_str(&format!(
                "[[routes]]\nname = \"{name}\"\nrespond = {{ status = 204 }}\n"
            ));
        }
        load(&SourceFile::new("m.toml", text.as_str()))
            .expect("valid")
            .config
    }

    fn routes_with_series(metrics: &Metrics) -> Vec<String> {
        let mut names: Vec<String> = metrics
            .requests
            .collect()
            .iter()
            .flat_map(|family| family.get_metric().to_vec())
            .flat_map(|m| {
                m.get_label()
                    .iter()
                    .filter(|l| l.name() == "route")
                    .map(|l| l.value().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_removed_route_loses_its_series_and_a_kept_or_moved_one_keeps_them() {
        let metrics = Metrics::new();
        for route in ["a", "b", "c"] {
            metrics
                .requests
                .with_label_values(&["web", route, "", "204"])
                .inc();
        }
        let all = config(&["a", "b", "c"]);
        // The same names, whatever else changed: nothing is forgotten.
        metrics.forget_removed(&all, &config(&["a", "b", "c"]));
        assert_eq!(routes_with_series(&metrics), ["a", "b", "c"]);
        // Reordered: still every name.
        metrics.forget_removed(&all, &config(&["c", "a", "b"]));
        assert_eq!(routes_with_series(&metrics), ["a", "b", "c"]);
        metrics.forget_removed(&all, &config(&["c", "a"]));
        assert_eq!(routes_with_series(&metrics), ["a", "c"]);
    }
}
