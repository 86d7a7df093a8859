//! Listening sockets and their accept loops, owned by edgegate rather than by pingora's
//! `Server`, whose listeners are fixed once it runs.
//!
//! Owning the loops is what makes listeners part of the config: a reload binds the new
//! sockets first (any failure refuses the whole reload), publishes the snapshot, then
//! starts the new loops and stops the old ones. A listener whose address and settings did
//! not change keeps its socket and its accept loop untouched, so nothing queued on it is
//! refused and its open connections never notice. An accepted connection that speaks
//! HTTP/1.1 (plain, or TLS without ALPN h2) goes to edgegate's own loop ([`crate::serving::h1`]);
//! h2 by ALPN and h2c by preface go to pingora's `ServerApp::process_new`, as does what
//! the loop hands over. Both render the one request core ([`crate::pipeline`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Ssl;
use pingora::server::ShutdownWatch;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::config::model::{Listener, ListenerProtocol, Name};
use crate::serving::h1::{ConnectionInfo, Engine};
use crate::snapshot::tls::{build_acceptor, TlsAcceptor};
use crate::snapshot::{ServedListener, Snapshot};
use crate::telemetry::metrics::Metrics;

/// Certificates from cluster Secrets, by the listener they serve on.
pub type ClusterCertificates = HashMap<Name, Vec<crate::snapshot::tls::LoadedCertificate>>;

/// Counts open downstream connections so shutdown can wait for them to finish.
#[derive(Default)]
pub struct ConnectionTracker {
    open: AtomicUsize,
    idle: Notify,
}

impl ConnectionTracker {
    fn enter(self: &Arc<Self>) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(self.clone())
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct ConnectionGuard(Arc<ConnectionTracker>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Everything an accept loop needs to serve one connection.
pub struct Serving<A> {
    pub app: Arc<A>,
    /// edgegate's own HTTP/1.1 loop; without it (the admin listener) pingora serves all.
    pub h1: Option<Arc<Engine<A>>>,
    pub shutdown: ShutdownWatch,
    /// Whether accept loops may take connections yet. A process started by a binary
    /// upgrade shares its listening sockets with the previous one, which keeps serving
    /// them until this one is ready; false until then.
    pub accepting: watch::Receiver<bool>,
    pub tracker: Arc<ConnectionTracker>,
    pub metrics: Arc<Metrics>,
    /// Where each connection learns its listener's name and TLS settings, from the same
    /// snapshot its requests are routed by; `None` for the admin listener.
    pub snapshot: Option<Arc<arc_swap::ArcSwap<Snapshot>>>,
}

impl<A> Clone for Serving<A> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            h1: self.h1.clone(),
            shutdown: self.shutdown.clone(),
            accepting: self.accepting.clone(),
            tracker: self.tracker.clone(),
            metrics: self.metrics.clone(),
            snapshot: self.snapshot.clone(),
        }
    }
}

/// Binds `address`; port 0 picks a free port, which `local_addr` then reports.
fn bind_socket(address: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// One listening socket per worker on the same address (`SO_REUSEPORT`): the kernel
/// spreads new connections over them by a hash of the connection's addresses, so each
/// worker accepts, serves and connects upstream on its own runtime and shares nothing on
/// the request path. Port 0 is resolved by the first socket and shared by the others.
/// The sockets are returned unregistered, to be registered by the runtime that serves
/// them.
pub fn bind_per_worker(
    address: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    if workers > 1 && address.port() != 0 {
        // SO_REUSEPORT would let this process share a port another process (a second
        // edgegate, a forgotten one) already listens on, splitting its traffic silently.
        // A plain bind first fails the way an operator expects: address in use.
        drop(bind_socket(address, false)?);
    }
    let first = bind_socket(address, workers > 1)?;
    let address = first.local_addr()?;
    let mut sockets = vec![first.into_std()?];
    for _ in 1..workers {
        sockets.push(bind_socket(address, true)?.into_std()?);
    }
    Ok(sockets)
}

/// The runtimes that serve connections: the first is the control runtime's own.
#[derive(Clone)]
pub struct Workers(pub Vec<tokio::runtime::Handle>);

impl Workers {
    pub fn count(&self) -> usize {
        self.0.len().max(1)
    }
}

/// Accepts until `stop` fires; connections already accepted are served to the end.
/// With `slots`, at most that many connections are open at once: beyond it the loop stops
/// accepting, so new connections wait in the kernel's backlog, not in our memory.
pub fn spawn_accept_loop<A: ServerApp + Send + Sync + 'static>(
    name: Name,
    listener: std::net::TcpListener,
    runtime: &tokio::runtime::Handle,
    serving: Serving<A>,
    slots: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    runtime.spawn(async move {
        // Registered here, so this runtime's reactor drives the socket and every
        // connection accepted from it.
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(listener = %name, error = %e, "cannot register the listening socket");
                return;
            }
        };
        let Ok(bound) = listener.local_addr() else {
            return;
        };
        let mut accepting = serving.accepting.clone();
        tokio::select! {
            open = accepting.wait_for(|open| *open) => if open.is_err() { return },
            _ = stop.changed() => return,
        }
        loop {
            let slot = match &slots {
                Some(slots) => tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.ok(),
                    _ = stop.changed() => break,
                },
                None => None,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (name, tls, layer4) = match &serving.snapshot {
                None => (name.clone(), None, Layer4::default()),
                Some(snapshot) => match snapshot.load().listener_at(bound) {
                    Some(served) => (
                        served.spec.name.clone(),
                        served.tls.clone(),
                        Layer4 {
                            tcp: served.spec.protocol == ListenerProtocol::Tcp,
                            proxy_protocol: served.spec.proxy_protocol,
                        },
                    ),
                    // Retired by the reload being applied: its loop is about to stop.
                    None => continue,
                },
            };
            let serving = serving.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let _guard = serving.tracker.enter();
                let gauge = serving
                    .metrics
                    .connections_active
                    .with_label_values(&[&name]);
                gauge.inc();
                serve_connection(&name, tcp, peer, bound, tls, layer4, &serving).await;
                gauge.dec();
            });
        }
        tracing::debug!(listener = %name, address = %bound, "stopped accepting");
    })
}

/// How long a new connection may stay silent (or, with TLS, take to finish its handshake)
/// before it is closed: nginx's `client_header_timeout` default.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain-text connection starts with the HTTP/2 preface. pingora's own check
/// waits for all 24 preface bytes with no timeout, so a complete HTTP/1.0 request shorter
/// than that (`GET / HTTP/1.0\r\n\r\n`) was never answered; this decides on the first
/// byte that differs. `None`: the client closed, or sent nothing in time.
async fn starts_with_h2_preface(tcp: &tokio::net::TcpStream) -> Option<bool> {
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let n = tcp.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // A preface arriving in pieces: wait for the rest without spinning.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(FIRST_BYTES_TIMEOUT, sniff)
        .await
        .ok()
        .flatten()
}

/// What a connection needs before any HTTP: read from the listener's settings once, at
/// accept.
#[derive(Debug, Default, Clone, Copy)]
struct Layer4 {
    /// Relay the connection whole (`protocol = "tcp"`).
    tcp: bool,
    /// It must open with a PROXY header.
    proxy_protocol: bool,
}

/// Reads the PROXY header a connection must open with, from a trusted peer only. The
/// client it names becomes the connection's peer for everything after (routing by
/// client, X-Forwarded-For, the access log, PROXY headers sent on). `None`: closed.
async fn accept_proxy_header<A>(
    name: &Name,
    tcp: &mut tokio::net::TcpStream,
    peer: SocketAddr,
    bound: SocketAddr,
    serving: &Serving<A>,
) -> Option<SocketAddr> {
    let (trusted, within) = match &serving.snapshot {
        Some(snapshot) => snapshot
            .load()
            .listener_at(bound)
            .map_or((false, FIRST_BYTES_TIMEOUT), |l| {
                (l.spec.is_trusted(peer.ip()), l.spec.header_timeout)
            }),
        None => (false, FIRST_BYTES_TIMEOUT),
    };
    if !trusted {
        tracing::info!(listener = %name, client = %peer, "PROXY protocol from a peer outside trusted_proxies; connection closed");
        return None;
    }
    match crate::l4::proxy_protocol::read_header(tcp, within).await {
        Ok(Some(client)) => Some(client),
        Ok(None) => Some(peer),
        Err(e) => {
            tracing::info!(listener = %name, client = %peer, error = %e, "connection closed");
            None
        }
    }
}

/// Relays a TLS connection whose ClientHello names a passthrough route; `Err` gives the
/// connection back to be terminated, `Ok` means it was served (or closed).
async fn try_passthrough<A>(
    name: &Name,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    serving: &Serving<A>,
) -> Result<(), tokio::net::TcpStream> {
    let Some(snapshots) = &serving.snapshot else {
        return Err(tcp);
    };
    if !snapshots.load().tcp_router.has_passthrough(name) {
        return Err(tcp);
    }
    use crate::l4::client_hello::{peek_server_name, Hello};
    let sni = match peek_server_name(&tcp, FIRST_BYTES_TIMEOUT).await {
        Hello::Gone => return Ok(()),
        Hello::NotTls | Hello::Tls(None) => return Err(tcp),
        Hello::Tls(Some(sni)) => sni,
    };
    let snapshot = snapshots.load_full();
    let Some(route) = snapshot.tcp_router.passthrough_route(name, &sni).cloned() else {
        return Err(tcp);
    };
    relay(name, route, peer, snapshot, serving, tcp).await;
    Ok(())
}

/// Relays a connection whole over its tcp route.
async fn relay<A>(
    name: &Name,
    route: Arc<crate::config::model::TcpRoute>,
    client: SocketAddr,
    snapshot: Arc<Snapshot>,
    serving: &Serving<A>,
    tcp: tokio::net::TcpStream,
) {
    let connection = crate::l4::Connection {
        listener: name,
        route,
        client,
        snapshot,
        metrics: &serving.metrics,
    };
    crate::l4::serve(connection, tcp).await;
}

async fn serve_connection<A: ServerApp + Send + Sync + 'static>(
    name: &Name,
    mut tcp: tokio::net::TcpStream,
    mut peer: SocketAddr,
    bound: SocketAddr,
    acceptor: Option<Arc<TlsAcceptor>>,
    layer4: Layer4,
    serving: &Serving<A>,
) {
    if layer4.proxy_protocol {
        match accept_proxy_header(name, &mut tcp, peer, bound, serving).await {
            Some(client) => peer = client,
            None => return,
        }
    }
    if layer4.tcp {
        if let Some(snapshots) = &serving.snapshot {
            let snapshot = snapshots.load_full();
            match snapshot.tcp_router.tcp_route(name).cloned() {
                Some(route) => relay(name, route, peer, snapshot, serving, tcp).await,
                None => {
                    tracing::debug!(listener = %name, client = %peer, "no tcp route; connection closed")
                }
            }
        }
        return;
    }
    if acceptor.is_some() {
        tcp = match try_passthrough(name, tcp, peer, serving).await {
            Ok(()) => return,
            Err(tcp) => tcp,
        };
    } else if crate::acme::challenge::challenges().http_pending() {
        // Only while an http-01 order waits for its validation.
        let answered = tokio::time::timeout(
            FIRST_BYTES_TIMEOUT,
            crate::acme::challenge::answer_http(&mut tcp),
        )
        .await;
        if answered.unwrap_or(true) {
            return;
        }
    }
    let info = ConnectionInfo {
        listener: name.clone(),
        peer,
        bound,
        tls: acceptor.is_some(),
    };
    if let (None, Some(engine)) = (&acceptor, &serving.h1) {
        // The HTTP/1.1 loop recognises the h2c preface itself and hands it over.
        crate::serving::h1::serve(engine, tcp, info).await;
        return;
    }
    let h2c = match acceptor {
        Some(_) => false,
        None => match starts_with_h2_preface(&tcp).await {
            Some(h2c) => h2c,
            None => return,
        },
    };
    let mut stream: L4Stream = tcp.into();
    crate::serving::buffered_io::record_addresses(&mut stream, peer, bound);
    let stream = crate::serving::buffered_io::BufferedIo::new(stream, h2c);
    let stream: pingora::protocols::Stream = match acceptor {
        None => Box::new(stream),
        Some(acceptor) => {
            match tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.tls_handshake(stream))
                .await
                .unwrap_or_else(|_| {
                    Err(pingora::Error::explain(
                        pingora::ErrorType::TLSHandshakeTimedout,
                        "no TLS handshake in time",
                    ))
                }) {
                Ok(tls_stream) => {
                    serving
                        .metrics
                        .tls_handshakes
                        .with_label_values(&[&**name, "success"])
                        .inc();
                    let h2 = tls_stream.selected_alpn_proto() == Some(pingora::protocols::ALPN::H2);
                    if let Some(engine) = &serving.h1 {
                        if h2 {
                            engine.serve_h2(tls_stream, bytes::Bytes::new(), info).await;
                        } else {
                            crate::serving::h1::serve(engine, tls_stream, info).await;
                        }
                        return;
                    }
                    Box::new(tls_stream)
                }
                Err(e) => {
                    serving
                        .metrics
                        .tls_handshakes
                        .with_label_values(&[&**name, "failure"])
                        .inc();
                    tracing::debug!(listener = %name, client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
            }
        }
    };
    serving.app.process_new(stream, &serving.shutdown).await;
}

/// Applies a reloaded `max_connections` to a running listener. Lowering it takes free
/// slots away at once; slots held by open connections leave as those close.
fn resize(slots: &Arc<Semaphore>, from: usize, to: usize) {
    if to > from {
        slots.add_permits(to - from);
    } else if to < from {
        let excess = from - to - slots.forget_permits(from - to);
        if excess > 0 {
            // The rest are held by open connections: retire them as they come back.
            let slots = slots.clone();
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(excess as u32).await {
                    permits.forget();
                }
            });
        }
    }
}

struct Running {
    spec: Listener,
    bound: SocketAddr,
    stop: watch::Sender<bool>,
    /// Open-connection slots (`max_connections`), resized in place by a reload.
    slots: Arc<Semaphore>,
    /// One accept loop per worker.
    tasks: Vec<JoinHandle<()>>,
    /// The sockets the accept loops own, kept to hand to a new binary on upgrade.
    sockets: Vec<std::os::fd::OwnedFd>,
}

/// Sockets and TLS acceptors built for a reload that has not been published yet.
pub struct Prepared {
    bound: HashMap<Name, Vec<std::net::TcpListener>>,
    tls: HashMap<Name, Option<Arc<TlsAcceptor>>>,
    /// New name -> running name, for listeners renamed in place (same address): they
    /// keep their socket and accept loops.
    renamed: HashMap<Name, Name>,
    /// Every listener of the config as requests will see it.
    pub served: Arc<[ServedListener]>,
}

/// The proxy listeners of the running config.
pub struct ListenerSet<A> {
    serving: Serving<A>,
    workers: Workers,
    running: Mutex<HashMap<Name, Running>>,
    /// Set by [`Self::stop_accepting`]: from then on nothing is bound or started again,
    /// so no port the load balancer was told is draining can reopen.
    closed: std::sync::atomic::AtomicBool,
}

impl<A: ServerApp + Send + Sync + 'static> ListenerSet<A> {
    pub fn new(serving: Serving<A>, workers: Workers) -> Self {
        Self {
            serving,
            workers,
            running: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether [`Self::stop_accepting`] has run (the process is draining).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Binds every new or moved listener and builds every TLS acceptor from the files the
    /// config loaded. Nothing changes for clients until the snapshot carrying
    /// [`Prepared::served`] is published and [`Self::commit`] runs; dropping the result
    /// releases the new sockets, so a refused reload leaves no trace.
    ///
    /// `cluster` adds certificates from cluster Secrets, by listener name.
    pub async fn prepare(
        &self,
        listeners: &[Listener],
        cluster: &ClusterCertificates,
    ) -> Result<Prepared, String> {
        if self.is_closed() {
            return Err("the listeners are closed: the process is draining".into());
        }
        let current: HashMap<Name, (SocketAddr, SocketAddr)> = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running
                .iter()
                .map(|(name, r)| (name.clone(), (r.spec.address, r.bound)))
                .collect()
        };
        let mut prepared = Prepared {
            bound: HashMap::new(),
            tls: HashMap::new(),
            renamed: HashMap::new(),
            served: Arc::from(Vec::new()),
        };
        let mut served = Vec::with_capacity(listeners.len());
        for spec in listeners {
            if let Some(acme) = spec.tls.as_ref().and_then(|t| t.acme.as_ref()) {
                crate::acme::ensure_running(acme, &spec.name, &self.serving.metrics);
            }
            let (acceptor, expiries) = match &spec.tls {
                Some(settings) => {
                    let from_cluster = cluster.get(&spec.name).cloned().unwrap_or_default();
                    let (acceptor, expiries) = build_acceptor(settings, from_cluster)
                        .map_err(|e| format!("listener {:?}: {e}", &*spec.name))?;
                    (Some(Arc::new(acceptor)), expiries)
                }
                None => (None, Vec::new()),
            };
            prepared.tls.insert(spec.name.clone(), acceptor.clone());
            // Kept: the same name at the same address. Renamed: a fixed address that a
            // listener no longer in the config holds.
            let kept = current
                .get(&spec.name)
                .filter(|(address, _)| *address == spec.address)
                .map(|(_, bound)| *bound);
            let renamed = || {
                current.iter().find(|(name, (address, _))| {
                    *address == spec.address
                        && spec.address.port() != 0
                        && !listeners.iter().any(|l| l.name == **name)
                })
            };
            let bound = match (kept, renamed()) {
                (Some(bound), _) => bound,
                (None, Some((old, (_, bound)))) => {
                    prepared.renamed.insert(spec.name.clone(), old.clone());
                    *bound
                }
                (None, None) => {
                    // After a binary upgrade: the previous process's sockets, used as they
                    // are (no probe bind: these very sockets hold the port).
                    let inherited = crate::serving::upgrade::take(
                        &crate::serving::upgrade::listener_key(&spec.name),
                        spec.address,
                    );
                    let sockets = match inherited {
                        Some(sockets) => sockets,
                        None => {
                            bind_per_worker(spec.address, self.workers.count()).map_err(|e| {
                                format!(
                                    "listener {:?}: cannot bind {}: {e}",
                                    &*spec.name, spec.address
                                )
                            })?
                        }
                    };
                    let bound = sockets
                        .first()
                        .and_then(|s| s.local_addr().ok())
                        .unwrap_or(spec.address);
                    prepared.bound.insert(spec.name.clone(), sockets);
                    bound
                }
            };
            served.push(ServedListener {
                bound,
                spec: spec.clone(),
                tls: acceptor,
                expiries,
            });
        }
        prepared.served = Arc::from(served);
        Ok(prepared)
    }

    /// The same listeners with their TLS acceptors rebuilt around new cluster
    /// certificates, for the next snapshot: sockets and accept loops are untouched. A
    /// listener whose acceptor cannot be built keeps the one it has.
    pub fn with_cluster_certificates(
        served: &[ServedListener],
        cluster: &ClusterCertificates,
    ) -> Arc<[ServedListener]> {
        served
            .iter()
            .map(|listener| {
                let (tls, expiries) = match (&listener.spec.tls, &listener.tls) {
                    (Some(settings), Some(current)) => {
                        let from_cluster = cluster.get(&listener.spec.name).cloned().unwrap_or_default();
                        match build_acceptor(settings, from_cluster) {
                            Ok((acceptor, expiries)) => (Some(Arc::new(acceptor)), expiries),
                            Err(e) => {
                                tracing::error!(listener = %listener.spec.name, error = %e, "cannot use the cluster's certificates; keeping the listener's");
                                (Some(current.clone()), listener.expiries.clone())
                            }
                        }
                    }
                    (_, current) => (current.clone(), listener.expiries.clone()),
                };
                ServedListener {
                    bound: listener.bound,
                    spec: listener.spec.clone(),
                    tls,
                    expiries,
                }
            })
            .collect()
    }

    /// Starts the prepared listeners and stops every listener the config no longer has
    /// (or has elsewhere). Call right after publishing the snapshot carrying
    /// [`Prepared::served`].
    pub fn commit(&self, mut prepared: Prepared, listeners: &[Listener]) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `stop_accepting` takes: a reload prepared just before
        // the drain began starts nothing (its new sockets close as `prepared` drops).
        if self.is_closed() {
            return;
        }
        for (new, old) in &prepared.renamed {
            if let Some(r) = running.remove(old) {
                tracing::info!(listener = %new, previously = %old, address = %r.bound, "listener renamed");
                running.insert(new.clone(), r);
            }
        }
        for spec in listeners {
            let Some(socket) = prepared.bound.remove(&spec.name) else {
                if let Some(r) = running.get_mut(&spec.name) {
                    resize(&r.slots, r.spec.max_connections, spec.max_connections);
                    r.spec = spec.clone();
                }
                continue;
            };
            let bound = socket
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(spec.address);
            let (stop, stop_rx) = watch::channel(false);
            // One cap for the listener, shared by its workers' accept loops.
            let slots = Arc::new(Semaphore::new(spec.max_connections));
            let sockets = socket
                .iter()
                .filter_map(|s| s.try_clone().ok().map(std::os::fd::OwnedFd::from))
                .collect();
            let tasks = socket
                .into_iter()
                .zip(self.workers.0.iter().cycle())
                .map(|(socket, runtime)| {
                    spawn_accept_loop(
                        spec.name.clone(),
                        socket,
                        runtime,
                        self.serving.clone(),
                        Some(slots.clone()),
                        stop_rx.clone(),
                    )
                })
                .collect();
            tracing::info!(listener = %spec.name, address = %bound, tls = spec.tls.is_some(), "listening");
            let replaced = running.insert(
                spec.name.clone(),
                Running {
                    spec: spec.clone(),
                    bound,
                    stop,
                    slots,
                    tasks,
                    sockets,
                },
            );
            if let Some(old) = replaced {
                tracing::info!(listener = %old.spec.name, from = %old.bound, to = %bound, "listener moved");
                let _ = old.stop.send(true);
            }
        }
        running.retain(|name, r| {
            let keep = listeners.iter().any(|l| l.name == *name);
            if !keep {
                tracing::info!(listener = %name, address = %r.bound, "listener removed");
                let _ = r.stop.send(true);
            }
            keep
        });
    }

    /// Addresses actually bound, by listener name (port 0 resolved).
    pub fn bound_addresses(&self) -> HashMap<Name, SocketAddr> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.iter().map(|(n, r)| (n.clone(), r.bound)).collect()
    }

    /// Copies of every listening socket, for a binary upgrade.
    pub fn handover_groups(&self) -> std::io::Result<Vec<crate::serving::upgrade::Group>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .map(|(name, r)| {
                Ok(crate::serving::upgrade::Group {
                    key: crate::serving::upgrade::listener_key(name),
                    address: r.spec.address,
                    sockets: r
                        .sockets
                        .iter()
                        .map(|s| s.try_clone())
                        .collect::<std::io::Result<_>>()?,
                })
            })
            .collect()
    }

    /// Stops every accept loop; open connections go on until they finish.
    pub async fn stop_accepting(&self) {
        let tasks: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Release);
            running
                .drain()
                .flat_map(|(_, r)| {
                    let _ = r.stop.send(true);
                    r.tasks
                })
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}
