//! Validated config + discovered members -> one immutable [`Snapshot`], the only thing the
//! request path reads. Pure: no sockets, no clocks beyond the load time it is given.

pub mod pool;
pub mod router;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::model::{Endpoint, Members, Name};
use crate::config::Config;
use pool::{MemberStates, Pool};
use router::Router;

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

/// Members of discovered (Kubernetes) upstreams, by upstream name.
pub type Discovered = HashMap<Name, Vec<Endpoint>>;

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub source: SourceInfo,
    pub router: Arc<Router>,
    pub pools: HashMap<Name, Arc<Pool>>,
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
    ) -> Snapshot {
        let listener_names: Vec<Name> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let router = Router::compile(&config.routes, &listener_names);
        let pools = config
            .upstreams
            .iter()
            .map(|upstream| {
                let endpoints: &[Endpoint] = match &upstream.members {
                    Members::Static(endpoints) => endpoints,
                    Members::Kubernetes(_) => discovered
                        .get(&upstream.name)
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                };
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
            pools,
            trace_export,
        }
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
            pools,
            trace_export: self.trace_export.clone(),
        })
    }
}
