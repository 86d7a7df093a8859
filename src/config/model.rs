//! Validated configuration: every value here has been checked, every name resolves.
//! Later stages (compile, proxy) never see raw TOML and never re-check.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::source::Location;
pub use super::tls_files::TlsFile;

/// Names of listeners, routes and upstreams: cheap to clone into every request context
/// and metric label.
pub type Name = Arc<str>;

impl Config {
    /// Every TLS file the config names: listener certificates, keys and client CAs, and
    /// upstream CAs.
    pub fn tls_files(&self) -> impl Iterator<Item = &TlsFile> {
        let listeners = self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|tls| {
                tls.certificates
                    .iter()
                    .flat_map(|pair| [&pair.cert, &pair.key])
                    .chain(tls.client_auth.as_ref().map(|auth| &auth.ca))
            });
        let upstreams = self
            .upstreams
            .iter()
            .filter_map(|u| u.tls.as_ref()?.ca.as_ref());
        listeners.chain(upstreams)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: Gateway,
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    /// Shared with the compiled router, so compiling a snapshot copies no route.
    pub routes: Vec<Arc<Route>>,
    /// Whole connections relayed to an upstream, by listener (and SNI on TLS listeners).
    pub tcp_routes: Vec<Arc<TcpRoute>>,
    pub upstreams: Vec<Upstream>,
    /// `[kubernetes]`: routes from the cluster; `None` watches nothing.
    pub kubernetes: Option<ClusterRoutes>,
}

/// Which cluster objects become routes (spec section 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRoutes {
    /// Gateways whose `gatewayClassName` is this are served, with their HTTPRoutes.
    pub gateway_class: Option<String>,
    /// Ingresses whose `spec.ingressClassName` is this are served.
    pub ingress_class: Option<String>,
    /// Namespaces watched; empty watches every namespace.
    pub namespaces: Vec<String>,
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
    /// OTLP span export; `None` exports nothing.
    pub tracing: Option<Tracing>,
}

/// Where and how spans are exported (spec section 7b).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub endpoint: OtlpEndpoint,
    /// Share of new traces (no sampled or unsampled `traceparent`) that are recorded.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// An `http://` OTLP/HTTP traces URL, split for the exporter's own small client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// As written, for logs.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Path and query sent in the request line.
    pub path: String,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            threads: 0,
            grace_period: Duration::from_secs(10),
            shutdown_delay: Duration::from_secs(1),
            log_format: LogFormat::Text,
            access_log: AccessLogTarget::Off,
            tracing: None,
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
    /// Once a request head's first byte arrives, the whole head must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no byte of a new one is closed after this.
    pub idle_timeout: Duration,
    /// Open client connections at most; at least 1.
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-*` headers are believed; single addresses are `/32` or
    /// `/128` networks. Stored without host bits.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub protocol: ListenerProtocol,
    /// Connections must open with a PROXY protocol header, and only trusted peers may
    /// send one: its source address then stands for the peer's everywhere.
    pub proxy_protocol: bool,
}

/// What a listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (TLS when `tls` is set), with TLS passthrough by SNI.
    Http,
    /// Raw TCP: each connection is relayed whole to its route's upstream.
    Tcp,
}

/// A layer-4 route: the connection is not parsed, only relayed.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRoute {
    pub name: Name,
    /// Position in the file; the last tie-breaker among equally specific SNI matches.
    pub order: usize,
    /// `None` applies the route to every tcp listener (never to TLS listeners, where a
    /// route needs `sni`).
    pub listeners: Option<Vec<Name>>,
    /// Empty on a tcp listener; on a TLS listener, the ClientHello names it matches.
    pub sni: Vec<HostMatch>,
    pub upstream: Name,
    pub location: Location,
}

impl TcpRoute {
    pub fn applies_to_listener(&self, listener: &str) -> bool {
        self.listeners
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| &**n == listener))
    }
}

impl Listener {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

    /// A listener with every optional setting at its default.
    pub fn new(name: impl Into<Name>, address: SocketAddr) -> Self {
        Self {
            name: name.into(),
            address,
            tls: None,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: Vec::new(),
            protocol: ListenerProtocol::Http,
            proxy_protocol: false,
        }
    }

    /// Whether a peer's `X-Forwarded-*` headers are believed. An IPv4 peer seen through a
    /// dual-stack socket (`::ffff:10.0.0.1`) is compared as the IPv4 address it is.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// May be empty when `acme` provides the certificate.
    pub certificates: Vec<CertificateFiles>,
    pub acme: Option<Acme>,
    pub min_version: TlsVersion,
    pub alpn: Vec<String>,
    pub client_auth: Option<ClientAuth>,
}

/// A certificate for `domains` from an ACME directory, kept in `storage`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acme {
    pub directory: String,
    pub email: Option<String>,
    /// Lowercased; the first names the files in `storage`.
    pub domains: Vec<String>,
    pub challenge: AcmeChallenge,
    pub storage: PathBuf,
    /// Roots for the directory's own HTTPS (a private or test CA); the system's otherwise.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcmeChallenge {
    /// Answered on the TLS listener itself (ALPN `acme-tls/1`).
    TlsAlpn01,
    /// Answered on the plain HTTP listeners, port 80 in production.
    Http01,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    pub cert: TlsFile,
    pub key: TlsFile,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    pub ca: TlsFile,
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
    /// Replaces the whole path sent upstream (the Gateway API's `ReplaceFullPath`).
    pub rewrite_path: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub timeout: Option<Duration>,
    /// Largest request body in bytes; `None` is no limit.
    pub max_body_size: Option<u64>,
    pub location: Location,
}

impl Route {
    /// Cluster routes are ordered after every file route (a file has fewer routes than
    /// this), so among otherwise equal routes the file's come first (spec section 10).
    pub const CLUSTER_ORDER_BASE: usize = 1 << 32;

    /// Whether the route came from a cluster object rather than the file; its
    /// `location.path` then names the object (`httproute/NS/NAME`).
    pub fn is_from_cluster(&self) -> bool {
        self.order >= Self::CLUSTER_ORDER_BASE
    }

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
    Regex(PathRegex),
    /// Normalised without a trailing slash; the root prefix is `/`.
    Prefix(String),
}

/// A `path_regex`, compiled once while validating: the router, `route` and `check` use
/// this one, so a pattern that passed validation can never fail (or be dropped) later.
#[derive(Debug, Clone)]
pub struct PathRegex(pub regex::Regex);

impl PathRegex {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PathRegex {}

impl std::hash::Hash for PathRegex {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Display for PathRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Upstream(Name),
    /// A share of requests to each upstream, by weight (Gateway API backendRefs across
    /// Services). A backend that did not resolve keeps its share and answers 500.
    Weighted(Vec<WeightedUpstream>),
    Redirect(Redirect),
    Respond(Respond),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedUpstream {
    /// `None`: the backend did not resolve; its share of requests answers 500.
    pub upstream: Option<Name>,
    pub weight: u32,
}

/// Picks a backend for a draw in `0..total weight`; `None` when the drawn backend did not
/// resolve (or no backend has weight). Pure, so the split is testable without traffic.
pub fn pick_weighted(backends: &[WeightedUpstream], draw: u64) -> Option<&Name> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut left = draw % total;
    for backend in backends {
        let weight = u64::from(backend.weight);
        if left < weight {
            return backend.upstream.as_ref();
        }
        left -= weight;
    }
    None
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
    /// Outlier ejection from live traffic; `None` when not configured.
    pub passive_health: Option<PassiveHealth>,
    /// Retries may be at most this share (0..=1) of the live requests to the upstream.
    pub retry_budget: f64,
    /// The key `Balance::Hash` hashes; kept (and ignored) for other balancers.
    pub hash_on: HashOn,
    /// A PROXY protocol header sent first on each new connection to an endpoint.
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

impl Upstream {
    pub const DEFAULT_RETRY_BUDGET: f64 = 0.2;
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
    pub ca: Option<TlsFile>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealth {
    /// Connect failures, resets and 502/503/504 in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; it doubles for an endpoint ejected again.
    pub ejection_time: Duration,
    /// The largest share (0..=1) of the pool that may be ejected at once.
    pub max_ejected: f64,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
            max_ejected: 0.5,
        }
    }
}

/// What `Balance::Hash` hashes to pick an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum HashOn {
    /// The client's IP address.
    #[default]
    ClientAddress,
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value, by cookie name.
    Cookie(String),
}
