//! `GET /status`: one JSON document with what the status page shows, read from the
//! running snapshot, the metrics the gateway keeps and the last reload's outcome.
//!
//! Everything here is read on the admin side when the document is asked for (or by the
//! sampler every few seconds); the request path does nothing for it. The fields are
//! documented in `docs/status.md`, and the page (`assets/status.js`) reads only those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::draining::Departures;
use super::publish_log::PublishLog;
use super::rates::{Reading, RouteRates, Sampler};
use crate::config::model::{Action, HostMatch, Members, PathMatch, Route};
use crate::config::Config;
use crate::control::sources::cluster_routes::translate::ClusterRoutes;
use crate::snapshot::pool::now_millis;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;

/// The `/status` document. Field names are part of the admin interface.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// When this document was made, RFC 3339.
    pub time: String,
    pub uptime_seconds: u64,
    pub ready: bool,
    /// Why `/readyz` fails, when it does.
    pub not_ready_reason: Option<&'static str>,
    pub config: ConfigStatus,
    pub listeners: Vec<ListenerStatus>,
    /// Seconds the route rates cover: a minute, or less right after start.
    pub window_seconds: f64,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
    pub certificates: Vec<CertificateStatus>,
}

#[derive(Debug, Serialize)]
pub struct ConfigStatus {
    pub generation: u64,
    pub source: String,
    pub loaded_at: String,
    pub hash: String,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// `None` until the first reload after start.
    pub last_reload: Option<LastReload>,
}

#[derive(Debug, Serialize)]
pub struct LastReload {
    pub at: String,
    pub cause: String,
    /// `success` or `failure`.
    pub result: &'static str,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub address: String,
    pub tls: bool,
    pub connections: i64,
    pub requests_in_flight: i64,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub name: String,
    /// `file` or `cluster`.
    pub origin: &'static str,
    /// `FILE:LINE:COLUMN` for a file route; the object (`httproute/NS/NAME`,
    /// `ingress/NS/NAME`) for a cluster route.
    pub source: String,
    /// Empty: every host.
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    /// Empty: every listener.
    pub listeners: Vec<String>,
    /// What the route does: `upstream NAME`, `split A 80%, B 20%`, `redirect 301`, `respond 200`.
    pub action: String,
    pub upstreams: Vec<String>,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub error_ratio: Option<f64>,
    pub p99_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    /// `static` (endpoints in the config), `kubernetes NS/SERVICE:PORT`, or `removed`
    /// (no longer configured; only its draining members are left).
    pub source: String,
    pub balance: &'static str,
    pub health_check: bool,
    pub passive_health: bool,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub address: String,
    pub weight: u32,
    /// `healthy`, `unhealthy` (failing active checks), `ejected` (passive health), or
    /// `draining` (removed, requests still in flight).
    pub state: &'static str,
    pub in_flight: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertificateStatus {
    pub listener: String,
    pub names: Vec<String>,
    pub not_after: String,
    /// Negative once expired.
    pub expires_in_seconds: i64,
    pub source: String,
    #[serde(skip)]
    not_after_unix: i64,
}

/// The admin side's state for the page: rate history, members seen, the reload log.
pub struct StatusSource {
    started: Instant,
    sampler: Arc<Sampler>,
    departures: Departures,
    log: Arc<PublishLog>,
    /// Certificates of the config and cluster routes last asked about: parsed once.
    certificates: Mutex<CertificateCache>,
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl StatusSource {
    pub fn new(log: Arc<PublishLog>) -> Self {
        let started = Instant::now();
        // Every counter of this process starts at zero: an empty reading taken now is
        // exact, and counts the requests served before the sampler first runs.
        let sampler = Arc::new(Sampler::default());
        sampler.keep(Reading {
            at: started,
            routes: HashMap::new(),
        });
        Self {
            started,
            sampler,
            departures: Departures::default(),
            log,
            certificates: Mutex::default(),
        }
    }

    /// Reads the counters and the pools every few seconds for as long as the process
    /// runs, so rates cover a minute and a member that leaves is seen leaving.
    pub async fn run(
        self: Arc<Self>,
        snapshot: Arc<arc_swap::ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
    ) {
        let mut ticks = tokio::time::interval(super::rates::INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.sampler.keep(Reading::take(&metrics, Instant::now()));
            self.departures.observe(&snapshot.load().pools);
        }
    }

    pub fn document(
        &self,
        snapshot: &Snapshot,
        metrics: &Metrics,
        ready: Result<(), &'static str>,
    ) -> Status {
        let now = Instant::now();
        let reading = Reading::take(metrics, now);
        let window_seconds = self
            .sampler
            .baseline()
            .map_or(0.0, |b| now.saturating_duration_since(b.at).as_secs_f64());
        let rates = self.sampler.rates(reading);
        let reloads = |result: &str| {
            metrics
                .config_reloads
                .get_metric_with_label_values(&[result])
                .map_or(0, |c| c.get())
        };
        Status {
            version: env!("CARGO_PKG_VERSION"),
            time: rfc3339(SystemTime::now()),
            uptime_seconds: now.saturating_duration_since(self.started).as_secs(),
            ready: ready.is_ok(),
            not_ready_reason: ready.err(),
            config: ConfigStatus {
                generation: snapshot.generation,
                source: snapshot.source.path.clone(),
                loaded_at: rfc3339(snapshot.source.loaded_at),
                hash: format!("sha256:{}", snapshot.source.hash),
                reloads_succeeded: reloads("success"),
                reloads_failed: reloads("failure"),
                last_reload: self.log.last().map(|r| LastReload {
                    at: rfc3339(r.at),
                    result: if r.succeeded() { "success" } else { "failure" },
                    cause: r.cause,
                    error: r.error,
                }),
            },
            listeners: listeners(snapshot, metrics),
            window_seconds,
            routes: routes(&snapshot.config.routes, &rates),
            upstreams: self.upstreams(snapshot),
            certificates: self.certificates(&snapshot.config),
        }
    }

    fn upstreams(&self, snapshot: &Snapshot) -> Vec<UpstreamStatus> {
        let draining = self.departures.observe(&snapshot.pools);
        let now = now_millis();
        let mut out: Vec<UpstreamStatus> = snapshot
            .pools
            .iter()
            .map(|(name, pool)| {
                let upstream = &pool.upstream;
                UpstreamStatus {
                    name: name.to_string(),
                    source: match &upstream.members {
                        Members::Static(_) => "static".to_string(),
                        Members::Kubernetes(s) => format!(
                            "kubernetes {}/{}:{}",
                            s.namespace,
                            s.service,
                            match &s.port {
                                crate::config::model::ServicePort::Number(n) => n.to_string(),
                                crate::config::model::ServicePort::Name(n) => n.clone(),
                            }
                        ),
                    },
                    balance: match upstream.balance {
                        crate::config::model::Balance::RoundRobin => "round_robin",
                        crate::config::model::Balance::LeastRequests => "least_requests",
                        crate::config::model::Balance::Hash => "hash",
                    },
                    health_check: upstream.health_check.is_some(),
                    passive_health: pool.ejection.is_some(),
                    members: pool
                        .members
                        .iter()
                        .map(|m| MemberStatus {
                            address: m.endpoint.address.to_string(),
                            weight: m.endpoint.weight,
                            state: if pool.ejection.is_some() && m.state.is_ejected(now) {
                                "ejected"
                            } else if !m.state.is_healthy() {
                                "unhealthy"
                            } else {
                                "healthy"
                            },
                            in_flight: m.state.in_flight(),
                        })
                        .collect(),
                }
            })
            .collect();
        for member in draining {
            let status = MemberStatus {
                address: member.address.to_string(),
                weight: member.weight,
                state: "draining",
                in_flight: member.in_flight,
            };
            match out.iter_mut().find(|u| *u.name == *member.upstream) {
                Some(upstream) => upstream.members.push(status),
                None => out.push(UpstreamStatus {
                    name: member.upstream.to_string(),
                    source: "removed".to_string(),
                    balance: "round_robin",
                    health_check: false,
                    passive_health: false,
                    members: vec![status],
                }),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The listeners' certificates, from files and from the cluster's Secrets, soonest
    /// expiry first.
    fn certificates(&self, config: &Arc<Config>) -> Vec<CertificateStatus> {
        let cluster = self.log.cluster();
        let mut cache = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cache.config.ptr_eq(&Arc::downgrade(config))
            && cache.cluster.ptr_eq(&Arc::downgrade(&cluster));
        if !fresh {
            let mut all = certificates_of(config);
            all.extend(cluster_certificates(&cluster));
            all.sort_by_key(|c| c.not_after_unix);
            *cache = CertificateCache {
                config: Arc::downgrade(config),
                cluster: Arc::downgrade(&cluster),
                parsed: all,
            };
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        cache
            .parsed
            .iter()
            .map(|c| CertificateStatus {
                expires_in_seconds: c.not_after_unix - now,
                ..c.clone()
            })
            .collect()
    }
}

/// Parsed certificates, and the config and cluster routes they were read from.
#[derive(Default)]
struct CertificateCache {
    config: Weak<Config>,
    cluster: Weak<ClusterRoutes>,
    parsed: Vec<CertificateStatus>,
}

fn summary(
    listener: &str,
    loaded: crate::snapshot::tls::LoadedCertificate,
    source: String,
) -> Option<CertificateStatus> {
    let not_after = time::OffsetDateTime::from_unix_timestamp(loaded.not_after)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(CertificateStatus {
        listener: listener.to_string(),
        names: loaded.names,
        not_after,
        expires_in_seconds: 0,
        source,
        not_after_unix: loaded.not_after,
    })
}

/// Certificates from Secrets, once per listener they serve on. One that does not parse
/// was left out of the acceptors as well (and logged then).
fn cluster_certificates(cluster: &ClusterRoutes) -> Vec<CertificateStatus> {
    cluster
        .certificates
        .iter()
        .filter_map(|c| {
            let loaded =
                crate::snapshot::tls::certificate_from_pem(&c.cert, &c.key, &c.source).ok()?;
            Some((c, loaded))
        })
        .flat_map(|(c, loaded)| {
            c.listeners
                .iter()
                .filter_map(move |listener| summary(listener, loaded.clone(), c.source.clone()))
        })
        .collect()
}

fn certificates_of(config: &Config) -> Vec<CertificateStatus> {
    config
        .listeners
        .iter()
        .filter_map(|l| Some((l, l.tls.as_ref()?)))
        .flat_map(|(listener, tls)| {
            tls.certificates.iter().filter_map(move |files| {
                // The config loaded (and checked) these already; one that no longer
                // parses cannot be serving either.
                let loaded = crate::config::tls_files::certificate(&files.cert, &files.key).ok()?;
                summary(
                    &listener.name,
                    loaded,
                    files.cert.path.display().to_string(),
                )
            })
        })
        .collect()
}

/// Gauge values by their `listener` label.
fn by_listener(vec: &prometheus::IntGaugeVec) -> HashMap<String, i64> {
    prometheus::core::Collector::collect(vec)
        .iter()
        .flat_map(|family| family.get_metric())
        .filter_map(|m| {
            let name = m.get_label().iter().find(|p| p.name() == "listener")?;
            Some((name.value().to_string(), m.get_gauge().get_value() as i64))
        })
        .collect()
}

fn listeners(snapshot: &Snapshot, metrics: &Metrics) -> Vec<ListenerStatus> {
    let connections = by_listener(&metrics.connections_active);
    let in_flight = by_listener(&metrics.requests_in_flight);
    snapshot
        .edges
        .listeners
        .iter()
        .map(|l| ListenerStatus {
            name: l.spec.name.to_string(),
            address: l.bound.to_string(),
            tls: l.spec.tls.is_some(),
            connections: connections.get(&*l.spec.name).copied().unwrap_or(0),
            requests_in_flight: in_flight.get(&*l.spec.name).copied().unwrap_or(0),
        })
        .collect()
}

fn path_text(path: &PathMatch) -> String {
    match path {
        PathMatch::Exact(p) => format!("= {p}"),
        PathMatch::Prefix(p) => format!("{p}*"),
        PathMatch::Regex(r) => format!("~ {r}"),
    }
}

fn action_text(action: &Action) -> (String, Vec<String>) {
    match action {
        Action::Upstream(name) => (format!("upstream {name}"), vec![name.to_string()]),
        Action::Weighted(backends) => {
            let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
            let parts: Vec<String> = backends
                .iter()
                .map(|b| {
                    let name = b.upstream.as_deref().unwrap_or("(unresolved)");
                    let share = (u64::from(b.weight) * 100).checked_div(total).unwrap_or(0);
                    format!("{name} {share}%")
                })
                .collect();
            let names = backends
                .iter()
                .filter_map(|b| b.upstream.as_ref().map(|n| n.to_string()))
                .collect();
            (format!("split {}", parts.join(", ")), names)
        }
        Action::Redirect(r) => (format!("redirect {}", r.status.as_u16()), Vec::new()),
        Action::Respond(r) => (format!("respond {}", r.status.as_u16()), Vec::new()),
    }
}

/// One entry per route name, in precedence order; a cluster rule with several matches is
/// several routes of one name, shown as one with all their hosts and paths.
fn routes(routes: &[Arc<Route>], rates: &HashMap<String, RouteRates>) -> Vec<RouteStatus> {
    let mut out: Vec<RouteStatus> = Vec::new();
    for route in routes {
        let hosts = route.hosts.iter().map(|h| match h {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Wildcard(suffix) => format!("*{suffix}"),
        });
        let path = path_text(&route.path);
        if let Some(existing) = out.iter_mut().find(|r| *r.name == *route.name) {
            for host in hosts {
                if !existing.hosts.contains(&host) {
                    existing.hosts.push(host);
                }
            }
            if !existing.paths.contains(&path) {
                existing.paths.push(path);
            }
            continue;
        }
        let (action, upstreams) = action_text(&route.action);
        let rate = rates.get(&*route.name);
        out.push(RouteStatus {
            name: route.name.to_string(),
            origin: if route.is_from_cluster() {
                "cluster"
            } else {
                "file"
            },
            source: if route.is_from_cluster() {
                route.location.path.display().to_string()
            } else {
                route.location.to_string()
            },
            hosts: hosts.collect(),
            paths: vec![path],
            listeners: route
                .listeners
                .iter()
                .flatten()
                .map(|l| l.to_string())
                .collect(),
            action,
            upstreams,
            requests: rate.map_or(0, |r| r.requests),
            errors: rate.map_or(0, |r| r.errors),
            requests_per_second: rate.map_or(0.0, |r| r.requests_per_second),
            error_ratio: rate.and_then(|r| r.error_ratio),
            p99_seconds: rate.and_then(|r| r.p99_seconds),
        });
    }
    out
}
