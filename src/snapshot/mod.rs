//! Validated config + discovered members -> one immutable [`Snapshot`], the only thing the
//! request path reads. Pure: no sockets, no clocks beyond the load time it is given.

pub mod pool;
pub mod router;
pub mod tcp_router;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::access_log::AccessLog;
use crate::config::model::Listener;
use crate::config::model::{Endpoint, KubernetesService, Members, Name, Upstream};
use crate::config::Config;
use crate::tls::TlsAcceptor;
use pool::{MemberStates, Pool};
use router::Router;
use tcp_router::TcpRouter;

use crate::trace_export::TraceExport;

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
        let router = Router::compile(&config.routes, &listener_names);
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
        Snapshot {
            generation,
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
        })
    }
}
