//! `edgegate run`: load, bind, serve, reload on change, drain on SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::apps::ServerApp;
use pingora::server::configuration::ServerConf;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::config::model::LogFormat;
use crate::config::origin::{load_or_report, resolve_config, watched_files, ConfigOrigin, Report};
use crate::config::{Config, SourceFile};
use crate::control::health::HealthChecks;
use crate::control::publish::{Fingerprint, Publisher};
use crate::control::sources::discovery::Discovery;
use crate::control::sources::file_watch::FileWatch;
use crate::control::update::Update;
use crate::pipeline::Core;
use crate::process::cli::{LogFormatArg, RunArgs};
use crate::serving::admin::publish_log::PublishLog;
use crate::serving::admin::status::StatusSource;
use crate::serving::admin::{Admin, AdminListener, Readiness};
use crate::serving::h1::Engine;
use crate::serving::listeners::{ConnectionTracker, ListenerSet, Serving, Workers};
use crate::serving::proxy::PingoraAdapter;
use crate::snapshot::pool::MemberStates;
use crate::snapshot::{Discovered, Edges, Snapshot, SourceInfo};
use crate::telemetry::metrics::Metrics;

pub fn run(args: RunArgs) -> ExitCode {
    // Before anything can replace the binary on disk (see `Launch::capture`).
    let launch = crate::serving::upgrade::Launch::capture();
    let origin = resolve_config(args.config.config.as_deref());
    // In the new process of a binary upgrade, off the old process's CPU.
    let loaded = crate::serving::upgrade::start_up(|| load_or_report(&origin, Report::Stderr));
    let (source, loaded) = match loaded {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => loaded.config.gateway.log_format,
    };
    init_logging(format);
    match &origin {
        ConfigOrigin::Embedded => tracing::info!(
            "no config file found ($EDGEGATE_CONFIG, /etc/edgegate/edgegate.toml): running on the embedded default config"
        ),
        ConfigOrigin::File(path) => tracing::info!(config = %path.display(), "loaded config"),
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let threads = match loaded.config.gateway.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // Every worker is a current-thread runtime of its own (no work-stealing scheduler,
    // no cross-thread wakeups: measured, less CPU per request). The control plane
    // (reloads, discovery, health checks, admin) runs on a runtime of its own on this
    // thread, so a slow disk, resolver or API server never holds up a request.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .thread_name("edgegate-control")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let (worker_handles, workers_exit) = match spawn_workers(threads) {
        Ok(spawned) => spawned,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the worker threads");
            return ExitCode::FAILURE;
        }
    };
    let workers = Workers(worker_handles);
    let code = runtime.block_on(serve(
        origin,
        source,
        loaded.config,
        threads,
        workers,
        launch,
    ));
    // Connections still open after the grace period are abandoned, not awaited.
    drop(workers_exit);
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// How many tasks a worker polls between two looks at the sockets (tokio's default: 61).
/// A busy worker always has tasks queued, so it only looks when this many have run: a
/// request whose bytes arrived just after a look waits for up to 61 other requests' work,
/// and that wait is the HTTP/1.1 tail. At 16, in the same runs (64 keepalive connections,
/// one worker, 3 rounds each), p99 went from 1.76-2.55 ms to 1.54-1.58 ms against nginx's
/// 1.52-1.84, with no measurable change in CPU per request (the extra looks are
/// non-blocking `epoll_wait` calls). Noisy runs repeated it less cleanly; the figures
/// are in docs/performance.md.
const WORKER_EVENT_INTERVAL: u32 = 16;

/// Starts `count` worker threads, each running a current-thread runtime until the
/// returned sender is dropped.
fn spawn_workers(
    count: usize,
) -> std::io::Result<(Vec<tokio::runtime::Handle>, tokio::sync::watch::Sender<()>)> {
    let (exit, exit_rx) = tokio::sync::watch::channel(());
    let mut handles = Vec::with_capacity(count);
    for i in 1..=count.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name(format!("edgegate-worker-{i}"))
            .enable_all()
            .event_interval(WORKER_EVENT_INTERVAL)
            .build()?;
        handles.push(runtime.handle().clone());
        let mut exit_rx = exit_rx.clone();
        std::thread::Builder::new()
            .name(format!("edgegate-worker-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = exit_rx.changed().await;
                });
                runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            })?;
    }
    Ok((handles, exit))
}

fn init_logging(format: LogFormat) {
    // rustls warns on every handshake from a client sending an IP address as SNI (wrk
    // does); keep its noise out of the default level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(
    origin: ConfigOrigin,
    source: SourceFile,
    loaded: Config,
    threads: usize,
    workers: Workers,
    launch: std::io::Result<crate::serving::upgrade::Launch>,
) -> ExitCode {
    // Installed before anything is announced, so a SIGHUP right after "ready" reloads
    // instead of killing the process with the default action.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::new());
    // Made with the counters, so the status page's rates count every request served.
    let publish_log = Arc::new(PublishLog::default());
    let status = Arc::new(StatusSource::new(publish_log.clone()));
    let states = Arc::new(MemberStates::default());
    // Generation 0: nothing published yet, no listener (nothing can arrive). The
    // publisher makes generation 1 from the same config below, as it makes every other.
    let config = Arc::new(loaded.clone());
    let handle = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
        config.clone(),
        SourceInfo::new(origin.describe(), &source.text),
        0,
        &Discovered::new(),
        None,
        &states,
        Edges::default(),
    )));

    let server_conf = Arc::new(ServerConf {
        threads,
        // Idle upstream connections kept for reuse, across all upstreams. pingora's 128
        // made h2 clients with a few hundred concurrent streams churn through a new
        // upstream connection per request (measured: 133k new connections in 30 s).
        upstream_keepalive_pool_size: 1024,
        ..Default::default()
    });
    let core = Core {
        snapshot: handle.clone(),
        metrics: metrics.clone(),
    };
    // Where pingora parses every system root certificate (twice): in the new process of
    // a binary upgrade, off the old process's CPU (see `upgrade::start_up`).
    let runtime = tokio::runtime::Handle::current();
    let mut proxy = crate::serving::upgrade::start_up(|| {
        let _context = runtime.enter();
        pingora::proxy::http_proxy(&server_conf, PingoraAdapter(core.clone()))
    });
    // h2c stays off here: the accept loop recognises the preface itself (with a timeout)
    // and marks the stream as h2, which pingora then serves as HTTP/2.
    let mut options = HttpServerOptions::default();
    // HTTP/2 connections with no open stream (a header block that never completes opens
    // none) close like idle HTTP/1.1 ones. pingora takes one value for the process: the
    // shortest `idle_timeout` of the listeners at start.
    options.h2_idle_timeout = Some(
        config
            .listeners
            .iter()
            .map(|l| l.idle_timeout)
            .min()
            .unwrap_or(crate::config::model::Listener::DEFAULT_IDLE_TIMEOUT),
    );
    proxy.server_options = Some(options);
    let proxy = Arc::new(proxy);

    let upgraded = match crate::serving::upgrade::receive() {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::error!("binary upgrade: {e}");
            return ExitCode::FAILURE;
        }
    };
    // After a binary upgrade no accept loop takes a connection until this process is
    // ready and the previous one has let go: until then the previous one serves.
    let (accepting_tx, accepting) = watch::channel(!upgraded);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tracker = Arc::new(ConnectionTracker::default());
    let engine = Arc::new(Engine {
        core,
        fallback: proxy.clone(),
        shutdown: shutdown_rx.clone(),
    });
    let listener_set = Arc::new(ListenerSet::new(
        Serving {
            app: proxy.clone(),
            h1: Some(engine),
            shutdown: shutdown_rx.clone(),
            accepting: accepting.clone(),
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            snapshot: Some(handle.clone()),
        },
        workers,
    ));

    let readiness = Arc::new(Readiness::default());
    let inherited =
        crate::serving::upgrade::take(crate::serving::upgrade::ADMIN_KEY, config.admin.address)
            .and_then(|mut sockets| sockets.pop());
    let admin_socket = match inherited.map_or_else(|| AdminListener::bind(config.admin.address), Ok)
    {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(address = %config.admin.address, error = %e, "cannot bind the admin listener");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(status.clone().run(handle.clone(), metrics.clone()));
    let admin = Arc::new(pingora::apps::http_app::HttpServer::new_app(Admin {
        snapshot: handle.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        status,
    }));
    let admin = Arc::new(tokio::sync::Mutex::new(AdminListener::start(
        Serving {
            app: admin,
            h1: None,
            shutdown: shutdown_rx.clone(),
            accepting: accepting.clone(),
            tracker: Arc::new(ConnectionTracker::default()),
            metrics: metrics.clone(),
            snapshot: None,
        },
        config.admin.address,
        admin_socket,
    )));

    let (updates_tx, updates_rx) = mpsc::channel(64);
    let (configs, _) = watch::channel(config.clone());
    let mut publisher = Publisher {
        readiness: readiness.clone(),
        fingerprint: Fingerprint::default(),
        origin: origin.clone(),
        handle: handle.clone(),
        states,
        discovered: Discovered::new(),
        listeners: listener_set.clone(),
        health: Arc::new(HealthChecks::new(handle.clone(), metrics.clone())),
        metrics: metrics.clone(),
        configs,
        file_config: config.clone(),
        cluster: Default::default(),
        cluster_synced: false,
        cluster_certificates: Default::default(),
        admin: admin.clone(),
        publish_log,
    };
    if let Err(e) = publisher.start(source, loaded).await {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    // What the producers below follow: generation 1 as published.
    let config = handle.load().config.clone();
    if let ConfigOrigin::File(_) = &origin {
        match FileWatch::start(updates_tx.clone()) {
            Ok(watch) => {
                watch.watch_files(&watched_files(&origin, &config));
                tokio::spawn(watch.follow(origin.clone(), publisher.configs.subscribe()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
            }
        }
    }
    let discovery = Discovery::new(updates_tx.clone(), metrics.clone());
    let complete = discovery.reconcile(&config).await;
    tokio::spawn(discovery.follow(publisher.configs.subscribe(), complete));
    tokio::spawn(crate::control::sources::cluster_routes::watch::follow(
        updates_tx.clone(),
        publisher.configs.subscribe(),
    ));
    tokio::spawn(publisher.run(updates_rx));

    readiness.set_listening();
    tracing::info!(
        listeners = ?listener_set.bound_addresses().iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>(),
        "edgegate ready"
    );
    if upgraded {
        tokio::spawn(take_over(readiness.clone(), accepting_tx));
    } else {
        crate::telemetry::notify::ready();
    }

    let handover = Handover {
        launch,
        listeners: &*listener_set,
        admin: admin.clone(),
    };
    let upgraded = matches!(
        signals.wait_for_termination(updates_tx, handover).await,
        Ended::Upgraded
    );
    // The timings are the running config's, so a reload can change them.
    let gateway = handle.load().config.gateway.clone();
    if upgraded {
        // The new process accepts on the same sockets and answers /readyz: stop
        // accepting at once (no shutdown_delay, no 503), then drain as on SIGTERM.
        admin.lock().await.stop_accepting();
        tracing::info!("binary upgrade: stopping accepting");
    } else {
        crate::telemetry::notify::stopping();
        // /readyz fails first so load balancers stop sending, then the listeners close.
        readiness.set_draining();
        tracing::info!(delay = ?gateway.shutdown_delay, "shutting down: /readyz now 503");
        tokio::time::sleep(gateway.shutdown_delay).await;
    }
    // Then open connections get the grace period to finish.
    listener_set.stop_accepting().await;
    let _ = shutdown_tx.send(true);
    proxy.cleanup().await;
    tracing::info!(open = tracker.open(), grace = ?gateway.grace_period, "listeners closed; draining connections");
    if tokio::time::timeout(gateway.grace_period, tracker.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.open(),
            "grace period over; closing remaining connections"
        );
    }
    if let Ok(admin) = Arc::try_unwrap(admin) {
        admin.into_inner().stop().await;
    }
    tracing::info!(upgraded, "stopped");
    ExitCode::SUCCESS
}

struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    usr2: Signal,
}

enum Ended {
    /// SIGTERM or SIGINT: drain and exit.
    Signal,
    /// A new process serves the listening sockets: drain and exit, quietly.
    Upgraded,
}

/// What a binary upgrade (SIGUSR2) hands to the new process.
struct Handover<'a, A> {
    launch: std::io::Result<crate::serving::upgrade::Launch>,
    listeners: &'a ListenerSet<A>,
    admin: Arc<tokio::sync::Mutex<AdminListener>>,
}

impl<A: ServerApp + Send + Sync + 'static> Handover<'_, A> {
    async fn groups(&self) -> std::io::Result<Vec<crate::serving::upgrade::Group>> {
        let mut groups = self.listeners.handover_groups()?;
        let admin = self.admin.lock().await;
        groups.push(crate::serving::upgrade::Group {
            key: crate::serving::upgrade::ADMIN_KEY.into(),
            address: admin.address(),
            sockets: vec![admin.handover_socket()?],
        });
        Ok(groups)
    }
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Serves SIGHUP as reloads and SIGUSR2 as binary upgrades until SIGTERM or SIGINT
    /// arrives, or an upgrade succeeds.
    async fn wait_for_termination<A: ServerApp + Send + Sync + 'static>(
        mut self,
        updates: mpsc::Sender<Update>,
        handover: Handover<'_, A>,
    ) -> Ended {
        let mut upgrading: Option<tokio::task::JoinHandle<Result<u32, String>>> = None;
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    crate::telemetry::notify::reloading();
                    let _ = updates.send(Update::Reload { cause: "SIGHUP", force: true }).await;
                }
                _ = self.usr2.recv() => {
                    if upgrading.is_some() {
                        tracing::warn!("SIGUSR2: a binary upgrade is already under way");
                        continue;
                    }
                    let launch = match &handover.launch {
                        Ok(launch) => launch.clone(),
                        Err(e) => {
                            tracing::error!(error = %e, "SIGUSR2: cannot upgrade: the binary's path is unknown");
                            continue;
                        }
                    };
                    match handover.groups().await {
                        Ok(groups) => {
                            tracing::info!("SIGUSR2: binary upgrade: starting the new process");
                            upgrading = Some(tokio::task::spawn_blocking(move || {
                                crate::serving::upgrade::hand_over(&launch, &groups)
                            }));
                        }
                        Err(e) => tracing::error!(error = %e, "SIGUSR2: cannot copy the listening sockets"),
                    }
                }
                done = async { upgrading.as_mut().expect("guarded").await }, if upgrading.is_some() => {
                    upgrading = None;
                    match done {
                        Ok(Ok(pid)) => {
                            tracing::info!(new_pid = pid, "binary upgrade: the new process serves");
                            return Ended::Upgraded;
                        }
                        Ok(Err(e)) => tracing::error!("binary upgrade failed; still serving: {e}"),
                        Err(e) => tracing::error!(error = %e, "binary upgrade failed; still serving"),
                    }
                }
                _ = self.term.recv() => { tracing::info!("SIGTERM"); return Ended::Signal; }
                _ = self.int.recv() => { tracing::info!("SIGINT"); return Ended::Signal; }
            }
        }
    }
}

/// The new process's side of a binary upgrade: once it is ready as `/readyz` defines it
/// (config loaded, listeners bound, discovery and cluster routes synced), it tells the
/// previous process, and opens its accept loops only when that one has let go. Until
/// then the previous process alone serves; one that gives up on this process (it never
/// got ready) kills it having lost no connection, since it accepted none.
async fn take_over(readiness: Arc<Readiness>, accepting: watch::Sender<bool>) {
    while readiness.is_ready().is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = tokio::task::spawn_blocking(crate::serving::upgrade::announce_ready).await;
    accepting.send_replace(true);
    crate::serving::upgrade::serving();
}
