//! Validated config + discovered members -> one immutable [`Snapshot`], the only thing the
//! request path reads. Pure: no sockets, no clocks beyond the load time it is given.

pub mod pool;
pub mod router;
pub mod tls;

#[cfg(test)]
mod gauges_tests;
pub mod tcp_router;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::model::Listener;
use crate::config::model::{Endpoint, KubernetesService, Members, Name, RateLimitScope, Upstream};
use crate::config::Config;
use crate::pipeline::policy::bucket::LocalLimiter;
use crate::pipeline::policy::store::Store;
use crate::snapshot::tls::TlsAcceptor;
use crate::telemetry::access_log::AccessLog;
use pool::{MemberStates, Pool};
use router::Router;
use tcp_router::TcpRouter;

use crate::pipeline::auth::Authenticators;

use crate::telemetry::trace_export::TraceExport;

/// Where a snapshot's config came from, for `/config` and logs.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub path: String,
    pub loaded_at: SystemTime,
    /// SHA-256 of the config text, hex.
    pub hash: String,
}

impl SourceInfo {
    pub fn new(path: impl Into<String>, text: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        Self {
            path: path.into(),
            loaded_at: SystemTime::now(),
            hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Members of a discovered (Kubernetes) upstream, with the Service they were read from.
#[derive(Debug, Clone)]
pub struct DiscoveredMembers {
    pub source: KubernetesService,
    pub endpoints: Vec<Endpoint>,
    /// The stamp of the message they came in (`update::next_seq`).
    pub seq: u64,
}

impl DiscoveredMembers {
    /// Whether these members were computed after members of `source` stamped `seq`,
    /// which must then be ignored.
    pub fn newer_than(&self, source: &KubernetesService, seq: u64) -> bool {
        self.source == *source && self.seq > seq
    }
}

/// Members of discovered upstreams, by upstream name.
pub type Discovered = HashMap<Name, DiscoveredMembers>;

/// The members an upstream has now: its static list, or what discovery last read from the
/// Service it names *now* (members of a Service it named before never count).
pub fn members_of<'a>(
    upstream: &'a Upstream,
    discovered: &'a Discovered,
) -> Option<&'a [Endpoint]> {
    match &upstream.members {
        Members::Static(endpoints) => Some(endpoints),
        Members::Kubernetes(service) => discovered
            .get(&upstream.name)
            .filter(|d| d.source == *service)
            .map(|d| d.endpoints.as_slice()),
    }
}

/// A listener as the request path sees it: where it is bound (port 0 resolved), its
/// settings, and the TLS acceptor new handshakes use.
pub struct ServedListener {
    pub bound: SocketAddr,
    pub spec: Listener,
    pub tls: Option<Arc<TlsAcceptor>>,
    /// `(first name, not-after)` of every certificate `tls` serves (files and
    /// Secrets), for the expiry metric.
    pub expiries: Vec<(String, i64)>,
}

impl std::fmt::Debug for ServedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {} (tls: {})",
            self.spec.name,
            self.bound,
            self.tls.is_some()
        )
    }
}

/// What the request path reads besides routes and pools. It is part of the snapshot, so
/// a connection's listener name, TLS settings and access log always come from the same
/// config as the routes its requests are matched against: a renamed listener has no
/// moment where its new routes meet its old name.
#[derive(Debug, Clone, Default)]
pub struct Edges {
    pub listeners: Arc<[ServedListener]>,
    pub access_log: Option<Arc<AccessLog>>,
}

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub source: SourceInfo,
    pub router: Arc<Router>,
    pub tcp_router: Arc<TcpRouter>,
    pub pools: HashMap<Name, Arc<Pool>>,
    pub edges: Edges,
    /// Span export (`[gateway.tracing]`), or `None` when off: requests read the sampling
    /// ratio and the queue from here, so a reload switches export with everything else.
    pub trace_export: Option<Arc<TraceExport>>,
    /// Every listener's client identity header: removed from every client request on
    /// every listener, so no client forges one an upstream trusts.
    pub identity_headers: Arc<[http::HeaderName]>,
    /// `[auth.NAME]` with their live state (credential caches, keys, pooled clients).
    pub auth: Arc<Authenticators>,
    /// The buckets of each route with a local rate limit, by route name. A reload that
    /// keeps a route's limit keeps its buckets, so a reload never refills them.
    pub limiters: HashMap<Name, Arc<LocalLimiter>>,
    /// `[gateway.rate_limit_store]`, kept (with its connection) while its settings do not
    /// change.
    pub rate_limit_store: Option<Arc<Store>>,
    /// Listeners with a route to an upstream over TLS. edgegate's HTTP/2 loop forwards
    /// over plain connections only (HTTP/1.1, or HTTP/2 for `http2` upstreams); an
    /// HTTP/2 client of one of these listeners is served whole by pingora-proxy, which
    /// keeps TLS upstream sessions (a connection cannot change hands between streams).
    pub h2_by_pingora: Arc<HashSet<Name>>,
}

/// The listeners of `config` with a route that can reach an upstream over TLS.
fn h2_by_pingora(config: &Config) -> HashSet<Name> {
    let special: HashSet<&str> = config
        .upstreams
        .iter()
        .filter(|u| u.tls.is_some())
        .map(|u| &*u.name)
        .collect();
    if special.is_empty() {
        return HashSet::new();
    }
    let reaches_special = |route: &crate::config::model::Route| match &route.action {
        crate::config::model::Action::Upstream(name) => special.contains(&**name),
        crate::config::model::Action::Weighted(backends) => backends
            .iter()
            .any(|b| b.upstream.as_ref().is_some_and(|n| special.contains(&**n))),
        _ => false,
    };
    config
        .listeners
        .iter()
        .filter(|l| {
            config
                .routes
                .iter()
                .any(|r| r.applies_to_listener(&l.name) && reaches_special(r))
        })
        .map(|l| l.name.clone())
        .collect()
}

/// The local limiters of `config`'s routes, taking over `previous` ones whose limit did
/// not change.
fn limiters(config: &Config, previous: Option<&Snapshot>) -> HashMap<Name, Arc<LocalLimiter>> {
    config
        .routes
        .iter()
        .filter_map(|route| {
            let limit = route.policy.as_ref()?.rate_limit.as_ref()?;
            if limit.scope != RateLimitScope::Local {
                return None;
            }
            let reused = previous
                .and_then(|p| p.limiters.get(&route.name))
                .filter(|l| l.limit == *limit)
                .cloned();
            let limiter = reused.unwrap_or_else(|| Arc::new(LocalLimiter::new(limit.clone())));
            Some((route.name.clone(), limiter))
        })
        .collect()
}

fn rate_limit_store(config: &Config, previous: Option<&Snapshot>) -> Option<Arc<Store>> {
    let settings = config.gateway.rate_limit_store.as_ref()?;
    if let Some(kept) = previous
        .and_then(|p| p.rate_limit_store.clone())
        .filter(|s| s.settings == *settings)
    {
        return Some(kept);
    }
    match Store::new(settings.clone()) {
        Ok(store) => Some(Arc::new(store)),
        Err(error) => {
            // Validation checked the scheme; whatever the client still refuses is
            // reported, and the global limits follow on_error.
            tracing::error!(%error, "rate limit store unusable");
            None
        }
    }
}

impl Snapshot {
    /// Builds the next snapshot. Pools whose upstream definition and members did not change
    /// are taken over from `previous` as they are (round-robin position included).
    pub fn compile(
        config: Arc<Config>,
        source: SourceInfo,
        generation: u64,
        discovered: &Discovered,
        previous: Option<&Snapshot>,
        states: &MemberStates,
        edges: Edges,
    ) -> Snapshot {
        let listener_names: Vec<Name> = config.listeners.iter().map(|l| l.name.clone()).collect();
        // After one cluster object's edit only its hosts' tables are rebuilt.
        let router = match previous {
            Some(p) => {
                Router::compile_from(&p.router, &p.config.routes, &config.routes, &listener_names)
            }
            None => Router::compile(&config.routes, &listener_names),
        };
        let tcp_router = TcpRouter::compile(&config.tcp_routes, &config.listeners);
        let pools = config
            .upstreams
            .iter()
            .map(|upstream| {
                let endpoints = members_of(upstream, discovered).unwrap_or_default();
                let reused = previous
                    .and_then(|p| p.pools.get(&upstream.name))
                    .filter(|p| *p.upstream == *upstream && p.endpoints().eq(endpoints.iter()))
                    .cloned();
                let pool = reused.unwrap_or_else(|| {
                    Arc::new(Pool::new(Arc::new(upstream.clone()), endpoints, states))
                });
                (upstream.name.clone(), pool)
            })
            .collect::<HashMap<_, _>>();
        states.retain(|upstream, address| {
            pools
                .get(upstream)
                .is_some_and(|p| p.endpoints().any(|e| e.address == *address))
        });
        // Unchanged tracing settings keep the running exporter and its queue.
        let trace_export = config.gateway.tracing.as_ref().map(|settings| {
            previous
                .and_then(|p| p.trace_export.clone())
                .filter(|export| export.settings == *settings)
                .unwrap_or_else(|| Arc::new(TraceExport::new(settings.clone())))
        });
        let identity_headers = config
            .listeners
            .iter()
            .filter_map(|l| {
                l.tls
                    .as_ref()?
                    .client_auth
                    .as_ref()?
                    .identity_header
                    .clone()
            })
            // The headers authenticators fill are identities too: stripped the same way.
            .chain(Authenticators::filled_headers(&config))
            .collect();
        let auth = Arc::new(Authenticators::compile(&config, previous.map(|p| &*p.auth)));
        Snapshot {
            h2_by_pingora: Arc::new(h2_by_pingora(&config)),
            generation,
            limiters: limiters(&config, previous),
            rate_limit_store: rate_limit_store(&config, previous),
            identity_headers,
            auth,
            config,
            source,
            router: Arc::new(router),
            tcp_router: Arc::new(tcp_router),
            pools,
            edges,
            trace_export,
        }
    }

    /// The listener whose socket is bound at `bound` (the listening address a
    /// connection arrived on).
    pub fn listener_at(&self, bound: SocketAddr) -> Option<&ServedListener> {
        self.edges.listeners.iter().find(|l| l.bound == bound)
    }

    pub fn listener_name(&self, bound: SocketAddr) -> Option<Name> {
        self.listener_at(bound).map(|l| l.spec.name.clone())
    }

    /// The same snapshot with one discovered upstream's members replaced: only that pool
    /// is rebuilt; the router and every other pool are shared.
    pub fn with_members(
        &self,
        upstream: &Name,
        endpoints: &[Endpoint],
        states: &MemberStates,
    ) -> Option<Snapshot> {
        let current = self.pools.get(upstream)?;
        if current.endpoints().eq(endpoints.iter()) {
            return None;
        }
        states.retain(|name, address| {
            name != upstream || endpoints.iter().any(|e| e.address == *address)
        });
        let mut pools = self.pools.clone();
        pools.insert(
            upstream.clone(),
            Arc::new(Pool::new(current.upstream.clone(), endpoints, states)),
        );
        Some(Snapshot {
            generation: self.generation,
            config: self.config.clone(),
            source: self.source.clone(),
            router: self.router.clone(),
            tcp_router: self.tcp_router.clone(),
            pools,
            edges: self.edges.clone(),
            trace_export: self.trace_export.clone(),
            identity_headers: self.identity_headers.clone(),
            auth: self.auth.clone(),
            limiters: self.limiters.clone(),
            rate_limit_store: self.rate_limit_store.clone(),
            h2_by_pingora: self.h2_by_pingora.clone(),
        })
    }
}
