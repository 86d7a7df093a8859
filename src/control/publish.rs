//! The single writer of the running snapshot. Producers (file watcher, SIGHUP, discovery,
//! cluster routes) send [`Update`]s here; only this task validates, compiles and swaps,
//! so two changes can never interleave and a failure always leaves the last good
//! snapshot serving.
//!
//! Every snapshot goes live through one step, `publish`: the start (generation 1, from
//! the config `run` loaded), each reload, new members, new cluster routes. It stores the
//! snapshot, then starts what it needs and forgets what it dropped, so no source of
//! change can skip a part (an exporter, an accept loop, a health check, a metric series,
//! readiness). Once the process drains, no reload is applied: nothing would be bound
//! again after the load balancer was told the instance is going away.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::model::{Endpoint, KubernetesService, Members, Name};
use crate::config::origin::ConfigOrigin;
use crate::config::{self, Config};
use crate::control::health::HealthChecks;
use crate::control::sources::cluster_routes::translate::ClusterRoutes;
use crate::control::update::{Batch, Update};
use crate::serving::admin::{AdminListener, Readiness};
use crate::serving::listeners::{ClusterCertificates, ListenerSet, Prepared};
use crate::snapshot::pool::MemberStates;
use crate::snapshot::{members_of, Discovered, DiscoveredMembers, Edges, Snapshot, SourceInfo};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

pub struct Publisher<A> {
    pub origin: ConfigOrigin,
    pub handle: Arc<ArcSwap<Snapshot>>,
    pub states: Arc<MemberStates>,
    pub discovered: Discovered,
    pub listeners: Arc<ListenerSet<A>>,
    pub health: Arc<HealthChecks>,
    pub metrics: Arc<Metrics>,
    /// Every applied config, for the producers that follow it (the file watcher's
    /// file list, discovery's watches); they subscribe, the publisher never calls them.
    pub configs: tokio::sync::watch::Sender<Arc<Config>>,
    pub admin: Arc<tokio::sync::Mutex<AdminListener>>,
    pub readiness: Arc<Readiness>,
    /// Hash of the config text and TLS files last loaded (or refused).
    pub fingerprint: Fingerprint,
    /// The file's config as last applied. Cluster routes are merged onto it, so a cluster
    /// change never re-reads the file (and never counts as a reload).
    pub file_config: Arc<Config>,
    /// The cluster's routes as last received; empty until then.
    pub cluster: Arc<ClusterRoutes>,
    /// Whether cluster routes were received once: `/readyz` waits for it when the
    /// config has `[kubernetes]`, as it waits for discovered upstreams.
    pub cluster_synced: bool,
    /// The certificates of `cluster`, parsed once per change, by listener.
    pub cluster_certificates: ClusterCertificates,
    /// Each reload's outcome and the cluster's certificates, for the status page.
    pub publish_log: Arc<crate::serving::admin::publish_log::PublishLog>,
}

/// What a reload compares to decide whether anything changed: the config text, and the
/// TLS files a config names (a certificate rewritten in place changes nothing in the text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    text: [u8; 32],
    tls_files: [u8; 32],
    /// Users files and JWKS files: an edited users file is a change to the config.
    auth_files: [u8; 32],
}

impl Fingerprint {
    /// Of a loaded config: its text and the TLS bytes it loaded.
    pub fn of(text: &str, config: &Config) -> Self {
        Self::hash(
            text,
            config
                .tls_files()
                .map(|f| (f.path.as_path(), f.pem.to_vec())),
            config
                .auth_files()
                .map(|f| (f.path.as_path(), f.pem.to_vec())),
        )
    }

    /// Of the files on disk now: `text` as just read, and the TLS files `config` names
    /// read again. Equal to the running config's [`Self::of`] when nothing changed.
    fn on_disk(text: &str, config: &Config) -> Self {
        let read = |f: &'_ crate::config::model::TlsFile| {
            (f.path.clone(), std::fs::read(&f.path).unwrap_or_default())
        };
        let tls: Vec<_> = config.tls_files().map(read).collect();
        let auth: Vec<_> = config.auth_files().map(read).collect();
        Self::hash(
            text,
            tls.iter().map(|(p, b)| (p.as_path(), b.clone())),
            auth.iter().map(|(p, b)| (p.as_path(), b.clone())),
        )
    }

    fn hash<'a>(
        text: &str,
        tls_files: impl Iterator<Item = (&'a std::path::Path, Vec<u8>)>,
        auth_files: impl Iterator<Item = (&'a std::path::Path, Vec<u8>)>,
    ) -> Self {
        use sha2::Digest;
        let digest = |files: &mut dyn Iterator<Item = (&'a std::path::Path, Vec<u8>)>| {
            let mut hasher = sha2::Sha256::new();
            for (path, bytes) in files {
                hasher.update(path.as_os_str().as_encoded_bytes());
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            <[u8; 32]>::from(hasher.finalize())
        };
        let (mut tls_files, mut auth_files) = (tls_files, auth_files);
        Self {
            text: sha2::Sha256::digest(text.as_bytes()).into(),
            tls_files: digest(&mut tls_files),
            auth_files: digest(&mut auth_files),
        }
    }
}

/// What a reload reads from disk, read off the runtime: a FIFO, a hung network mount or
/// a slow resolver (endpoint host names) holds up only this, never a request or a scrape.
enum Read {
    Unchanged,
    Changed {
        source: config::SourceFile,
        loaded: Box<Result<config::Loaded, String>>,
        certificates_changed: bool,
    },
}

fn read_config(
    origin: &ConfigOrigin,
    running: &Config,
    last: &Fingerprint,
    force: bool,
) -> Result<(Read, Fingerprint), String> {
    let source = origin
        .read()
        .map_err(|e| format!("cannot read {}: {e}", origin.describe()))?;
    let seen = Fingerprint::on_disk(&source.text, running);
    if !force && seen == *last {
        return Ok((Read::Unchanged, seen));
    }
    let certificates_changed = seen.tls_files != last.tls_files;
    let loaded = Box::new(config::load(&source).map_err(|d| d.to_string()));
    Ok((
        Read::Changed {
            source,
            loaded,
            certificates_changed,
        },
        seen,
    ))
}

/// What a publication starts or moves besides the snapshot itself. Only a config from
/// the file brings sockets; members and cluster routes reuse the running ones.
#[derive(Default)]
struct Effects {
    /// Listener sockets and acceptors bound for this snapshot: their accept loops start
    /// (and retired listeners stop) right after the store.
    listeners: Option<Prepared>,
    /// A new admin address and its socket, moved to right after the store.
    admin: Option<(std::net::SocketAddr, std::net::TcpListener)>,
}

impl<A: pingora::apps::ServerApp + Send + Sync + 'static> Publisher<A> {
    /// `/readyz` waits for every discovered upstream's first sync.
    pub fn update_readiness(&self, config: &Config) {
        let unsynced = config
            .upstreams
            .iter()
            .filter(|u| members_of(u, &self.discovered).is_none())
            .count();
        // Cluster routes count as one more source to sync, like a discovered upstream.
        let cluster = usize::from(config.kubernetes.is_some() && !self.cluster_synced);
        self.readiness.set_unsynced(unsynced + cluster);
    }

    /// Generation 1: the config `run` loaded, published exactly as a reload publishes
    /// one (listeners bound or inherited, access log opened, exporter and health checks
    /// started, readiness counted). An error means the process cannot serve it.
    pub async fn start(
        &mut self,
        source: config::SourceFile,
        loaded: Config,
    ) -> Result<(), String> {
        self.apply_file(source, loaded).await.map(|_| ())
    }

    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>) {
        while let Some(first) = updates.recv().await {
            let batch = Batch::drain(first, &mut updates);
            if let Some(cluster) = batch.cluster {
                self.apply_cluster(cluster).await;
            }
            for (upstream, source, endpoints, seq) in batch.endpoints {
                self.apply_members(upstream, source, endpoints, seq).await;
            }
            if let Some((cause, force)) = batch.reload {
                if self.readiness.is_draining() || self.listeners.is_closed() {
                    // A reload now would bind listeners the drain has closed (or is
                    // about to close), reopening ports the load balancer was told
                    // are going away.
                    tracing::warn!(cause, "config change not applied: the process is draining");
                } else {
                    self.reload(cause, force).await;
                    if force {
                        // SIGHUP is what logrotate sends: reopen the log even when the
                        // config is unchanged or refused.
                        if let Some(log) = &self.handle.load().edges.access_log {
                            log.reopen();
                        }
                    }
                }
                crate::telemetry::notify::reload_finished();
            }
        }
    }

    /// The one way a snapshot goes live, whatever produced it: store it, then start
    /// what it needs (exporter, accept loops, admin socket, health checks), forget what
    /// it no longer names, count readiness, and tell the producers that follow configs.
    async fn publish(&mut self, next: Snapshot, effects: Effects) -> Arc<Snapshot> {
        let next = Arc::new(next);
        let previous = self.handle.swap(next.clone());
        crate::telemetry::trace_export::start(next.trace_export.as_deref(), &self.metrics);
        if let Some(prepared) = effects.listeners {
            self.listeners.commit(prepared, &next.config.listeners);
        }
        if !Arc::ptr_eq(&previous.config, &next.config) {
            crate::acme::apply(&next.config.listeners, &self.metrics);
        }
        if let Some((address, socket)) = effects.admin {
            self.admin.lock().await.move_to(address, socket);
        }
        if !Arc::ptr_eq(&previous.edges.listeners, &next.edges.listeners) {
            self.metrics.set_certificate_expiries(
                &expiry_series(&previous.edges.listeners),
                &expiry_series(&next.edges.listeners),
            );
        }
        let config_changed = !Arc::ptr_eq(&previous.config, &next.config);
        if config_changed {
            self.health.reconcile(&next);
            self.metrics.forget_removed(&previous.config, &next.config);
            self.forget_unnamed_services(&next.config);
        }
        self.metrics.config_generation.set(next.generation as i64);
        self.update_readiness(&next.config);
        if config_changed {
            self.configs.send_replace(next.config.clone());
        }
        next
    }

    /// Publishes new members of one discovered upstream: only its pool is rebuilt.
    async fn apply_members(
        &mut self,
        upstream: Name,
        source: KubernetesService,
        endpoints: Vec<Endpoint>,
        seq: u64,
    ) {
        if self
            .discovered
            .get(&upstream)
            .is_some_and(|applied| applied.newer_than(&source, seq))
        {
            // Computed before the members already applied, and queued behind them.
            return;
        }
        let current = self.handle.load_full();
        let wanted = current
            .config
            .upstream(&upstream)
            .is_some_and(|u| matches!(&u.members, Members::Kubernetes(s) if *s == source));
        if !wanted {
            // From a watch a reload has just retired or re-pointed.
            return;
        }
        tracing::info!(
            upstream = %upstream,
            members = ?endpoints.iter().map(|e| e.address.to_string()).collect::<Vec<_>>(),
            "discovered members"
        );
        let next = current.with_members(&upstream, &endpoints, &self.states);
        self.discovered.insert(
            upstream,
            DiscoveredMembers {
                source,
                endpoints,
                seq,
            },
        );
        match next {
            Some(next) => {
                self.publish(next, Effects::default()).await;
            }
            // The same members: nothing to store, but this may be the first sync.
            None => self.update_readiness(&current.config),
        }
    }

    /// Publishes the cluster's routes merged onto the file's config: the generation (the
    /// file's) stays, pools whose Service and members did not change are reused.
    async fn apply_cluster(&mut self, cluster: Arc<ClusterRoutes>) {
        let first = !self.cluster_synced;
        self.cluster_synced = true;
        if *cluster == *self.cluster {
            if first {
                self.update_readiness(&self.handle.load().config);
            }
            return;
        }
        let certificates_changed = cluster.certificates != self.cluster.certificates;
        self.cluster = cluster;
        let current = self.handle.load_full();
        let config = Arc::new(self.cluster.merged_onto(&self.file_config));
        // Renewed Secrets mean new acceptors, in the same snapshot as the routes. A route
        // edit keeps the acceptors (and their TLS session caches) as they are.
        let edges = if certificates_changed {
            self.cluster_certificates =
                load_cluster_certificates(&self.cluster, &self.file_config.listeners);
            Edges {
                listeners: ListenerSet::<A>::with_cluster_certificates(
                    &current.edges.listeners,
                    &self.cluster_certificates,
                ),
                access_log: current.edges.access_log.clone(),
            }
        } else {
            current.edges.clone()
        };
        let next = Snapshot::compile(
            config,
            current.source.clone(),
            current.generation,
            &self.discovered,
            Some(&current),
            &self.states,
            edges,
        );
        self.publish(next, Effects::default()).await;
        tracing::info!(
            routes = self.cluster.routes.len(),
            upstreams = self.cluster.upstreams.len(),
            certificates = self.cluster.certificates.len(),
            "cluster routes applied"
        );
        self.publish_log.cluster_applied(self.cluster.clone());
    }

    /// Members read from a Service an upstream no longer names are forgotten at once.
    fn forget_unnamed_services(&mut self, config: &Config) {
        self.discovered.retain(|name, members| {
            config.upstream(name).is_some_and(
                |u| matches!(&u.members, Members::Kubernetes(s) if *s == members.source),
            )
        });
    }

    /// Validates and applies the config file, or refuses it and keeps the running one.
    pub async fn reload(&mut self, cause: &str, force: bool) -> bool {
        match self.try_reload(force).await {
            Ok(None) => {
                tracing::debug!(cause, "config files unchanged; nothing to reload");
                true
            }
            Ok(Some(summary)) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(cause, generation = self.handle.load().generation, changes = %summary, "config reloaded");
                self.publish_log.record(cause, None);
                true
            }
            Err(problems) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                for problem in problems.lines() {
                    tracing::error!(cause, "config reload refused: {problem}");
                }
                self.publish_log.record(cause, Some(problems));
                false
            }
        }
    }

    async fn try_reload(&mut self, force: bool) -> Result<Option<String>, String> {
        let current = self.handle.load_full();
        let (origin, running, last) = (
            self.origin.clone(),
            current.config.clone(),
            self.fingerprint.clone(),
        );
        let (read, seen) =
            tokio::task::spawn_blocking(move || read_config(&origin, &running, &last, force))
                .await
                .map_err(|e| format!("reading the config failed: {e}"))??;
        // A refused config is not read again until something changes.
        self.fingerprint = seen;
        let Read::Changed {
            source,
            loaded,
            certificates_changed,
        } = read
        else {
            return Ok(None);
        };
        let loaded = (*loaded)?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let config = self.apply_file(source, loaded.config).await?;
        for warning in not_applied_in_place(&current.config, &config) {
            tracing::warn!("{warning}");
        }
        let mut summary = describe_changes(&current.config, &config);
        if certificates_changed {
            summary = match summary.as_str() {
                "no changes" => "certificates changed".to_string(),
                _ => format!("{summary}; certificates changed"),
            };
        }
        Ok(Some(summary))
    }

    /// Publishes a config read from the file as the next generation: binds what it adds
    /// (any failure refuses it whole), merges the cluster's routes onto it, and swaps.
    /// Returns the config as published.
    async fn apply_file(
        &mut self,
        source: config::SourceFile,
        file_config: Config,
    ) -> Result<Arc<Config>, String> {
        let current = self.handle.load_full();
        // Certificates from Secrets are by listener name: follow a rename.
        let cluster_certificates = if self.cluster.renamed_listeners(&file_config.listeners)
            == self.cluster.renamed_listeners(&self.file_config.listeners)
        {
            self.cluster_certificates.clone()
        } else {
            load_cluster_certificates(&self.cluster, &file_config.listeners)
        };
        let prepared = self
            .listeners
            .prepare(&file_config.listeners, &cluster_certificates)
            .await?;
        let admin_address = file_config.admin.address;
        let admin = if admin_address == self.admin.lock().await.address() {
            None
        } else {
            let socket = AdminListener::bind(admin_address)
                .map_err(|e| format!("[admin] cannot bind {admin_address}: {e}"))?;
            Some((admin_address, socket))
        };
        let file_config = Arc::new(file_config);
        let config = Arc::new(self.cluster.merged_onto(&file_config));
        let access_log = match AccessLog::open(
            &config.gateway.access_log,
            current.edges.access_log.as_ref(),
            &self.metrics,
        ) {
            Ok(log) => log,
            // Nothing to keep at start: a log that cannot be opened stops it.
            Err(e) if current.generation == 0 => {
                return Err(format!("cannot open the access log: {e}"))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open access log; keeping the previous one");
                current.edges.access_log.clone()
            }
        };
        // A log kept across a reload is reopened by its path, as a new one is opened.
        if let (Some(kept), Some(previous)) = (&access_log, &current.edges.access_log) {
            if Arc::ptr_eq(kept, previous) {
                kept.reopen();
            }
        }
        let edges = Edges {
            listeners: prepared.served.clone(),
            access_log,
        };
        // The one store: routes, pools, listener names, TLS acceptors and the access log
        // change together.
        let next = Snapshot::compile(
            config.clone(),
            SourceInfo::new(self.origin.describe(), &source.text),
            current.generation + 1,
            &self.discovered,
            Some(&current),
            &self.states,
            edges,
        );
        let effects = Effects {
            listeners: Some(prepared),
            admin,
        };
        self.publish(next, effects).await;
        self.cluster_certificates = cluster_certificates;
        self.file_config = file_config;
        self.fingerprint = Fingerprint::of(&source.text, &config);
        Ok(config)
    }
}

/// `(listener, certificate name, not-after)` of every certificate the listeners serve.
fn expiry_series(listeners: &[crate::snapshot::ServedListener]) -> Vec<(String, String, i64)> {
    listeners
        .iter()
        .flat_map(|l| {
            l.expiries
                .iter()
                .map(move |(name, at)| (l.spec.name.to_string(), name.clone(), *at))
        })
        .collect()
}

/// Parses the cluster's certificates (Secrets) per listener; a bad one is logged and
/// left out, never failing the routes that came with it.
fn load_cluster_certificates(
    cluster: &ClusterRoutes,
    listeners: &[config::model::Listener],
) -> ClusterCertificates {
    // By the listeners' names now: a reload may have renamed one since translation.
    let renamed = cluster.renamed_listeners(listeners);
    let mut by_listener = ClusterCertificates::default();
    for certificate in &cluster.certificates {
        match crate::snapshot::tls::certificate_from_pem(
            &certificate.cert,
            &certificate.key,
            &certificate.source,
        ) {
            Ok(loaded) => {
                for listener in &certificate.listeners {
                    let listener = renamed.get(listener).unwrap_or(listener);
                    by_listener
                        .entry(listener.clone())
                        .or_default()
                        .push(loaded.clone());
                }
            }
            Err(e) => {
                tracing::warn!(secret = %certificate.source, error = %e, "cannot use the certificate")
            }
        }
    }
    by_listener
}

/// Settings a reload cannot apply to the running process, each named so that nothing in a
/// reloaded file is ignored silently.
pub fn not_applied_in_place(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.gateway.threads != new.gateway.threads {
        out.push(format!(
            "[gateway] threads changed from {} to {}: the worker count is fixed at start; restart to apply it",
            old.gateway.threads, new.gateway.threads
        ));
    }
    if old.gateway.log_format != new.gateway.log_format {
        out.push(
            "[gateway] log_format changed: the log format is fixed at start; restart to apply it"
                .to_string(),
        );
    }
    let shortest = |c: &Config| c.listeners.iter().map(|l| l.idle_timeout).min();
    if shortest(old) != shortest(new) {
        out.push(
            "listener idle_timeout changed: connections opened from now on use it, except HTTP/2 connections of listeners whose routes reach TLS upstreams (served by pingora-proxy), which keep the value the process started with until a restart"
                .to_string(),
        );
    }
    out
}

/// A one-line account of what a reload changed, by name.
pub fn describe_changes(old: &Config, new: &Config) -> String {
    fn diff<T: PartialEq>(
        kind: &str,
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
        out: &mut Vec<String>,
    ) {
        let find = |list: &'_ [T], n: &str| list.iter().position(|x| name(x) == n);
        let added: Vec<_> = new
            .iter()
            .filter(|x| find(old, name(x)).is_none())
            .map(&name)
            .collect();
        let removed: Vec<_> = old
            .iter()
            .filter(|x| find(new, name(x)).is_none())
            .map(&name)
            .collect();
        let changed: Vec<_> = new
            .iter()
            .filter(|x| find(old, name(x)).is_some_and(|i| old[i] != **x))
            .map(&name)
            .collect();
        for (verb, names) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !names.is_empty() {
                out.push(format!("{kind} {verb}: {}", names.join(", ")));
            }
        }
    }
    let mut out = Vec::new();
    // Route positions shift when one is inserted; compare them without their position.
    let strip = |routes: &[Arc<config::model::Route>]| {
        routes
            .iter()
            .map(|r| config::model::Route {
                order: 0,
                location: config::Location {
                    path: PathBuf::new(),
                    line: 0,
                    column: 0,
                },
                ..(**r).clone()
            })
            .collect::<Vec<_>>()
    };
    diff(
        "listeners",
        &old.listeners,
        &new.listeners,
        |l| &l.name,
        &mut out,
    );
    diff(
        "routes",
        &strip(&old.routes),
        &strip(&new.routes),
        |r| &r.name,
        &mut out,
    );
    diff(
        "upstreams",
        &old.upstreams,
        &new.upstreams,
        |u| &u.name,
        &mut out,
    );
    // Authenticators by what they do (an edited users file is a change), not by place.
    let kinds = |auth: &[Arc<config::model::Authenticator>]| {
        auth.iter()
            .map(|a| (a.name.clone(), a.kind.clone()))
            .collect::<Vec<_>>()
    };
    diff(
        "authenticators",
        &kinds(&old.auth),
        &kinds(&new.auth),
        |(name, _)| name,
        &mut out,
    );
    if out.is_empty() {
        "no changes".to_string()
    } else {
        out.join("; ")
    }
}
