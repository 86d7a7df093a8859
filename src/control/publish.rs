//! The single writer of the running snapshot. Producers (file watcher, SIGHUP, discovery)
//! send [`Update`]s here; only this task validates, compiles and swaps, so two changes can
//! never interleave and a failure always leaves the last good snapshot serving.

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
use crate::serving::listeners::{ClusterCertificates, ListenerSet};
use crate::snapshot::pool::MemberStates;
use crate::snapshot::{members_of, Discovered, DiscoveredMembers, Edges, Snapshot, SourceInfo};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::admin::{AdminListener, Readiness};
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

    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>) {
        while let Some(first) = updates.recv().await {
            let batch = Batch::drain(first, &mut updates);
            if let Some(cluster) = batch.cluster {
                self.apply_cluster(cluster);
            }
            for (upstream, source, endpoints) in batch.endpoints {
                self.apply_members(upstream, source, endpoints);
            }
            if let Some((cause, force)) = batch.reload {
                self.reload(cause, force).await;
                crate::process::notify::reload_finished();
            }
        }
    }

    /// Publishes new members of one discovered upstream: only its pool is rebuilt.
    fn apply_members(
        &mut self,
        upstream: Name,
        source: KubernetesService,
        endpoints: Vec<Endpoint>,
    ) {
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
        if let Some(next) = current.with_members(&upstream, &endpoints, &self.states) {
            self.handle.store(Arc::new(next));
        }
        self.discovered
            .insert(upstream, DiscoveredMembers { source, endpoints });
        self.update_readiness(&current.config);
    }

    /// Publishes the cluster's routes merged onto the file's config: the generation (the
    /// file's) stays, pools whose Service and members did not change are reused.
    fn apply_cluster(&mut self, cluster: Arc<ClusterRoutes>) {
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
            self.cluster_certificates = load_cluster_certificates(&self.cluster);
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
        let next = Arc::new(Snapshot::compile(
            config.clone(),
            current.source.clone(),
            current.generation,
            &self.discovered,
            Some(&current),
            &self.states,
            edges,
        ));
        self.handle.store(next.clone());
        self.health.reconcile(&next);
        self.metrics.forget_removed(&config);
        self.forget_unnamed_services(&config);
        self.update_readiness(&config);
        tracing::info!(
            routes = self.cluster.routes.len(),
            upstreams = self.cluster.upstreams.len(),
            certificates = self.cluster.certificates.len(),
            "cluster routes applied"
        );
        self.configs.send_replace(config);
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
        let prepared = self
            .listeners
            .prepare(&loaded.config.listeners, &self.cluster_certificates)
            .await?;
        let admin_address = loaded.config.admin.address;
        let admin_socket = if admin_address == self.admin.lock().await.address() {
            None
        } else {
            let socket = AdminListener::bind(admin_address)
                .map_err(|e| format!("[admin] cannot bind {admin_address}: {e}"))?;
            Some(socket)
        };
        let file_config = Arc::new(loaded.config);
        let config = Arc::new(self.cluster.merged_onto(&file_config));
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
        let access_log = match AccessLog::open(
            &config.gateway.access_log,
            current.edges.access_log.as_ref(),
            &self.metrics,
        ) {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(error = %e, "cannot open access log; keeping the previous one");
                current.edges.access_log.clone()
            }
        };
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
        let next = Arc::new(next);
        self.handle.store(next.clone());
        crate::telemetry::trace_export::start(next.trace_export.as_deref(), &self.metrics);
        self.listeners.commit(prepared, &config.listeners);
        if let Some(socket) = admin_socket {
            self.admin.lock().await.move_to(admin_address, socket);
        }
        self.health.reconcile(&next);
        self.metrics.forget_removed(&config);
        self.forget_unnamed_services(&config);
        self.file_config = file_config;
        self.update_readiness(&config);
        self.fingerprint = Fingerprint::of(&source.text, &config);
        self.configs.send_replace(config.clone());
        Ok(Some(summary))
    }
}

/// Parses the cluster's certificates (Secrets) per listener; a bad one is logged and
/// left out, never failing the routes that came with it.
fn load_cluster_certificates(cluster: &ClusterRoutes) -> ClusterCertificates {
    let mut by_listener = ClusterCertificates::default();
    for certificate in &cluster.certificates {
        match crate::serving::tls::certificate_from_pem(
            &certificate.cert,
            &certificate.key,
            &certificate.source,
        ) {
            Ok(loaded) => {
                for listener in &certificate.listeners {
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
            "listener idle_timeout changed: HTTP/1.1 connections opened from now on use it; HTTP/2 connections keep the value the process started with until a restart"
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
