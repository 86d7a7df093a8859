//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`, and the status
//! page (`/` with its assets, `/status`).

pub mod draining;
pub mod page;
pub mod publish_log;
pub mod rates;
pub mod status;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::serving::listeners::{self, Serving};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;
use pingora::apps::http_app::HttpServer;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What `/readyz` reports: ready once listeners are bound and discovery has synced, and
/// not ready again from the moment shutdown begins.
#[derive(Default)]
pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
    /// Discovered upstreams that have not completed their first sync.
    unsynced: AtomicUsize,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn set_unsynced(&self, count: usize) {
        self.unsynced.store(count, Ordering::Release);
    }

    /// Whether shutdown has begun: from then on no config change is applied.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("draining")
        } else if !self.listening.load(Ordering::Acquire) {
            Err("listeners not bound")
        } else if self.unsynced.load(Ordering::Acquire) > 0 {
            Err("discovery not synced")
        } else {
            Ok(())
        }
    }
}

/// The admin listener's socket and accept loop. A reload that changes `[admin] address`
/// binds the new address first (a failure refuses the reload) and then moves: the new
/// loop starts, the old one stops; connections already open finish where they are.
pub struct AdminListener {
    serving: Serving<HttpServer<Admin>>,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The socket the accept loop owns, kept to hand to a new binary on upgrade.
    socket: Option<std::os::fd::OwnedFd>,
}

impl AdminListener {
    pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        let mut sockets = listeners::bind_per_worker(address, 1)?;
        Ok(sockets.remove(0))
    }

    /// Serves `socket`, bound for `address`, on the current runtime.
    pub fn start(
        serving: Serving<HttpServer<Admin>>,
        address: SocketAddr,
        socket: std::net::TcpListener,
    ) -> Self {
        let kept = socket.try_clone().ok().map(std::os::fd::OwnedFd::from);
        let (stop, task) = Self::spawn(&serving, socket);
        Self {
            serving,
            address,
            stop,
            task,
            socket: kept,
        }
    }

    fn spawn(
        serving: &Serving<HttpServer<Admin>>,
        socket: std::net::TcpListener,
    ) -> (watch::Sender<bool>, JoinHandle<()>) {
        let bound = socket.local_addr().ok();
        let (stop, stop_rx) = watch::channel(false);
        let task = listeners::spawn_accept_loop(
            "admin".into(),
            socket,
            &tokio::runtime::Handle::current(),
            serving.clone(),
            None,
            stop_rx,
        );
        if let Some(bound) = bound {
            tracing::info!(address = %bound, "admin listening");
        }
        (stop, task)
    }

    /// The configured address (port 0 as written).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Moves to a socket bound by [`Self::bind`] for `address`.
    pub fn move_to(&mut self, address: SocketAddr, socket: std::net::TcpListener) {
        self.socket = socket.try_clone().ok().map(std::os::fd::OwnedFd::from);
        let (stop, task) = Self::spawn(&self.serving, socket);
        let _ = std::mem::replace(&mut self.stop, stop).send(true);
        drop(std::mem::replace(&mut self.task, task));
        self.address = address;
    }

    /// A copy of the listening socket, for a binary upgrade.
    pub fn handover_socket(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        match &self.socket {
            Some(socket) => socket.try_clone(),
            None => Err(std::io::Error::other("the admin socket could not be kept")),
        }
    }

    /// Stops accepting without waiting for the accept loop (a binary upgrade: the new
    /// process accepts on the same socket).
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub struct Admin {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// What the status page shows beyond the snapshot and the metrics.
    pub status: Arc<status::StatusSource>,
}

fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// A file of the status page, with the headers that keep it to this origin.
fn page_reply(content_type: &str, body: &'static str) -> Response<Vec<u8>> {
    let mut response = reply(200, content_type, body);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let text = "text/plain; charset=utf-8";
        if let Some(refusal) = self.authenticate(session, &path).await {
            return refusal;
        }
        if let Some(asset) = page::asset(&path) {
            return page_reply(asset.content_type, asset.body);
        }
        match path.as_str() {
            "/status" => {
                let snapshot = self.snapshot.load();
                let document =
                    self.status
                        .document(&snapshot, &self.metrics, self.readiness.is_ready());
                let mut body = serde_json::to_string_pretty(&document).unwrap_or_default();
                body.push('\n');
                let mut response = reply(200, "application/json", body);
                response.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                response
            }
            "/healthz" => reply(200, text, "ok\n"),
            "/readyz" => match self.readiness.is_ready() {
                Ok(()) => reply(200, text, "ready\n"),
                Err(why) => reply(503, text, format!("not ready: {why}\n")),
            },
            "/metrics" => reply(200, "text/plain; version=0.0.4; charset=utf-8", {
                let snapshot = self.snapshot.load();
                self.metrics.render(snapshot.generation, &snapshot.pools)
            }),
            "/config" => {
                let snapshot = self.snapshot.load();
                let loaded_at = time::OffsetDateTime::from(snapshot.source.loaded_at)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "generation": snapshot.generation,
                    "source": snapshot.source.path,
                    "loaded_at": loaded_at,
                    "hash": format!("sha256:{}", snapshot.source.hash),
                    "listeners": snapshot.config.listeners.iter().map(|l| serde_json::json!({
                        "name": &*l.name, "address": l.address.to_string(), "tls": l.tls.is_some(),
                    })).collect::<Vec<_>>(),
                    "routes": snapshot.config.routes.iter().map(|r| &*r.name).collect::<Vec<_>>(),
                    // Routes from Gateway API and Ingress objects, each with the object
                    // it came from (one entry per rule, however many matches it has).
                    "cluster_routes": cluster_routes(&snapshot.config.routes),
                    "upstreams": snapshot.pools.iter().map(|(name, pool)| (name.to_string(), serde_json::json!({
                        "endpoints": pool.members.iter().map(|m| serde_json::json!({
                            "address": m.endpoint.address.to_string(),
                            "weight": m.endpoint.weight,
                            "healthy": m.state.is_healthy(),
                            "ejected": m.state.is_ejected(crate::snapshot::pool::now_millis()),
                        })).collect::<Vec<_>>(),
                    }))).collect::<serde_json::Map<_, _>>(),
                });
                let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
                text.push('\n');
                reply(200, "application/json", text)
            }
            _ => reply(
                404,
                text,
                "not found: try /, /status, /metrics, /healthz, /readyz, /config\n",
            ),
        }
    }
}

impl Admin {
    /// `[admin] auth`: every page but the probes (`/healthz`, `/readyz`, which kubelets
    /// and load balancers ask without credentials) passes the authenticator first.
    async fn authenticate(&self, session: &ServerSession, path: &str) -> Option<Response<Vec<u8>>> {
        use crate::pipeline::auth::{AuthResult, Outcome, Probe};
        if matches!(path, "/healthz" | "/readyz") {
            return None;
        }
        let snapshot = self.snapshot.load_full();
        let name = snapshot.config.admin.auth.clone()?;
        let Some(compiled) = snapshot.auth.get(&name).cloned() else {
            return Some(reply(
                500,
                "text/plain; charset=utf-8",
                "authenticator missing\n",
            ));
        };
        let header = session.req_header();
        let uri = header
            .uri
            .path_and_query()
            .map_or_else(|| path.to_string(), |p| p.as_str().to_string());
        let host = header
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let probe = Probe {
            method: &header.method,
            uri: &uri,
            host: &host,
            peer,
            tls: false,
            fields: &header.headers,
        };
        let (result, answer) = match compiled.check(&probe).await {
            Outcome::Allowed { .. } => (AuthResult::Allowed, None),
            Outcome::Denied(answer) => (AuthResult::Denied, Some(answer)),
            Outcome::Error(answer) => (AuthResult::Error, Some(answer)),
        };
        self.metrics
            .auth
            .with_label_values(&["(admin)", result.as_str()])
            .inc();
        let answer = answer?;
        let mut response = Response::builder().status(answer.status);
        if !answer.content_type.is_empty() {
            response = response.header(http::header::CONTENT_TYPE, answer.content_type.as_ref());
        }
        if let Some(location) = &answer.location {
            response = response.header(http::header::LOCATION, location.as_str());
        }
        for (name, value) in &answer.headers {
            response = response.header(name, value);
        }
        Some(
            response
                .header(http::header::CONTENT_LENGTH, answer.body.len())
                .body(answer.body.to_vec())
                .unwrap_or_default(),
        )
    }
}

/// `[{name, source}]` of the cluster's routes, in precedence order of their objects.
fn cluster_routes(routes: &[std::sync::Arc<crate::config::model::Route>]) -> serde_json::Value {
    let mut seen = std::collections::HashSet::new();
    routes
        .iter()
        .filter(|r| r.is_from_cluster() && seen.insert(r.name.clone()))
        .map(|r| serde_json::json!({"name": &*r.name, "source": r.location.path.display().to_string()}))
        .collect()
}
