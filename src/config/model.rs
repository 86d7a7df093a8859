//! Validated configuration: every value here has been checked, every name resolves.
//! Later stages (compile, proxy) never see raw TOML and never re-check.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::source::Location;

/// Names of listeners, routes and upstreams: cheap to clone into every request context
/// and metric label.
pub type Name = Arc<str>;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: Gateway,
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    /// Shared with the compiled router, so compiling a snapshot copies no route.
    pub routes: Vec<Arc<Route>>,
    pub upstreams: Vec<Upstream>,
}

impl Config {
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_delay: Duration,
    pub log_format: LogFormat,
    pub access_log: AccessLogTarget,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            threads: 0,
            grace_period: Duration::from_secs(10),
            shutdown_delay: Duration::from_secs(1),
            log_format: LogFormat::Text,
            access_log: AccessLogTarget::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stderr,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: Name,
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certificates: Vec<CertificateFiles>,
    pub min_version: TlsVersion,
    pub alpn: Vec<String>,
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    pub ca: PathBuf,
    /// Without a certificate a client is refused (`true`) or let in unauthenticated.
    pub required: bool,
    pub identity_header: Option<HeaderName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: Name,
    /// Position in the file; the last tie-breaker of the routing precedence.
    pub order: usize,
    /// `None` applies the route to every listener.
    pub listeners: Option<Vec<Name>>,
    pub hosts: Vec<HostMatch>,
    pub path: PathMatch,
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<(HeaderName, String)>,
    pub query: Vec<(String, String)>,
    pub action: Action,
    pub rewrite_prefix: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub timeout: Option<Duration>,
    pub location: Location,
}

impl Route {
    pub fn applies_to_listener(&self, listener: &str) -> bool {
        self.listeners
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| &**n == listener))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Lowercased host without port.
    Exact(String),
    /// The suffix including its leading dot: `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    Regex(String),
    /// Normalised without a trailing slash; the root prefix is `/`.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Upstream(Name),
    Redirect(Redirect),
    Respond(Respond),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: StatusCode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Respond {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: Name,
    pub members: Members,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: usize,
    pub http2: bool,
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Members {
    Static(Vec<Endpoint>),
    Kubernetes(KubernetesService),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesService {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
    pub api: DiscoveryApi,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscoveryApi {
    EndpointSlices,
    Endpoints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequests,
    Hash,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub sni: Option<String>,
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}
