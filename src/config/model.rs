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
    pub gateway: GatewaySettings,
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    /// Shared with the compiled router, so compiling a snapshot copies no route.
    pub routes: Vec<Arc<Route>>,
    /// Whole connections relayed to an upstream, by listener (and SNI on TLS listeners).
    pub tcp_routes: Vec<Arc<TcpRoute>>,
    pub upstreams: Vec<Upstream>,
    /// `[kubernetes]`: routes from the cluster; `None` watches nothing.
    pub kubernetes: Option<KubernetesSettings>,
    /// `[auth.NAME]`, in name order.
    pub auth: Vec<Arc<Authenticator>>,
}

/// `[auth.NAME]`: how the requests of the routes naming it prove who they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticator {
    pub name: Name,
    pub kind: AuthKind,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthKind {
    Basic(BasicAuth),
    Jwt(JwtAuth),
    Forward(ForwardAuth),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuth {
    pub realm: String,
    /// The users file as read when the config was loaded (a reload compares it by
    /// content, so an edited file is a change). `None` for users from a cluster Secret:
    /// the cluster watch follows those, and no file on disk stands behind them for the
    /// file watcher or a reload's fingerprint to read.
    pub users_file: Option<TlsFile>,
    /// User name and its hash, checked at load to be bcrypt or argon2.
    pub users: Arc<[(String, String)]>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    /// Read (and checked to be a key set) when the config is loaded.
    File(TlsFile),
    Url(http::Uri),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuth {
    pub jwks: JwksSource,
    pub issuer: Option<String>,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub clock_skew: Duration,
    /// Claim name, and the upstream header its value is sent in.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    /// Read the token from this cookie instead of `Authorization: Bearer`.
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAuth {
    /// An `http://` URL.
    pub address: http::Uri,
    pub request_headers: Vec<HeaderName>,
    pub response_headers: Vec<HeaderName>,
    pub timeout: Duration,
    /// Where a 401 from the service redirects the client instead (`?rd=` the original
    /// URL), as ingress-nginx's `auth-signin`; only from an Ingress annotation.
    pub signin: Option<String>,
}

impl Config {
    pub fn authenticator(&self, name: &str) -> Option<&Arc<Authenticator>> {
        self.auth.iter().find(|a| &*a.name == name)
    }

    /// Files the authenticators read at load (users files, JWKS files): a change to one
    /// is a change to the config.
    pub fn auth_files(&self) -> impl Iterator<Item = &TlsFile> {
        self.auth.iter().filter_map(|a| match &a.kind {
            AuthKind::Basic(basic) => basic.users_file.as_ref(),
            AuthKind::Jwt(JwtAuth {
                jwks: JwksSource::File(file),
                ..
            }) => Some(file),
            _ => None,
        })
    }
}

/// `[kubernetes]`: which cluster objects become routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
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
pub struct GatewaySettings {
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_delay: Duration,
    pub log_format: LogFormat,
    pub access_log: AccessLogTarget,
    /// OTLP span export; `None` exports nothing.
    pub tracing: Option<Tracing>,
    /// `[gateway.rate_limit_store]`: where `scope = "global"` limits keep their buckets.
    pub rate_limit_store: Option<RateLimitStore>,
}

/// The shared store of global rate limits (Redis or a compatible server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStore {
    /// `redis://` or `rediss://`, as written (it may carry a password: never logged).
    pub url: String,
    pub on_error: OnStoreError,
    /// The most a request waits on the store.
    pub timeout: Duration,
}

impl RateLimitStore {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
}

/// What a global limit does when its store is down or slower than its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Admit the request (availability over the limit).
    Allow,
    /// Refuse it with 503.
    Deny,
}

/// Where and how spans are exported (`[gateway.tracing]`).
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

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            threads: 0,
            grace_period: Duration::from_secs(10),
            shutdown_delay: Duration::from_secs(1),
            log_format: LogFormat::Text,
            access_log: AccessLogTarget::Off,
            tracing: None,
            rate_limit_store: None,
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
    /// The `[auth.NAME]` guarding the admin pages.
    pub auth: Option<Name>,
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
    /// Exact cookie values the request must carry (a match, like `headers`).
    pub cookies: Vec<(String, String)>,
    pub action: Action,
    pub rewrite_prefix: Option<String>,
    /// Replaces the whole path sent upstream (the Gateway API's `ReplaceFullPath`).
    pub rewrite_path: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub timeout: Option<Duration>,
    /// Largest request body in bytes; `None` is no limit.
    pub max_body_size: Option<u64>,
    /// The `[auth.NAME]` every request on the route must pass.
    pub auth: Option<Name>,
    /// Access lists, rate limit and CORS; `None` on a route that uses none of them, so
    /// such a route pays one check.
    pub policy: Option<Arc<RoutePolicy>>,
    /// Response compression; `None` leaves bodies as the upstream sent them.
    pub compress: Option<Compress>,
    /// A shadow upstream that gets a copy of some requests; its answers are discarded.
    pub mirror: Option<Mirror>,
    pub location: Location,
}

/// `mirror` on a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub upstream: Name,
    /// The share of requests copied, 0 to 100.
    pub percent: f64,
}

/// `compress` on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// The codings offered, in no particular order (the client's preference decides).
    pub algorithms: Vec<Encoding>,
    /// Bodies shorter than this (by `Content-Length`, where known) are sent as they are.
    pub min_size: u64,
}

impl Compress {
    pub const DEFAULT_MIN_SIZE: u64 = 1024;
}

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Zstd,
    Br,
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// A route's traffic policy: what a request must pass before the route's action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutePolicy {
    /// The client address must be in one of these (empty: no allow list).
    pub allow: Vec<ipnet::IpNet>,
    /// Checked before `allow`; a client address in one is refused.
    pub deny: Vec<ipnet::IpNet>,
    pub rate_limit: Option<RateLimit>,
    pub cors: Option<Cors>,
}

impl RoutePolicy {
    /// Whether the policy does anything (an empty one is stored as no policy).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.rate_limit.is_none()
            && self.cors.is_none()
    }
}

/// A token bucket: `burst` tokens, refilled at `requests` per `per`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests: u64,
    pub per: Duration,
    pub burst: u64,
    pub key: RateLimitKey,
    pub scope: RateLimitScope,
}

impl RateLimit {
    /// The time one token takes to come back, in microseconds (at least 1).
    pub fn interval_micros(&self) -> u64 {
        let per = u64::try_from(self.per.as_micros()).unwrap_or(u64::MAX);
        (per / self.requests.max(1)).max(1)
    }
}

/// What a rate limit counts separately.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateLimitKey {
    /// The client address (the peer, or the last untrusted X-Forwarded-For hop).
    Client,
    /// One bucket for the whole route.
    Route,
    /// A request header's value; a request without it counts as the empty value.
    Header(HeaderName),
}

/// Where a rate limit's buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitScope {
    /// In this process.
    Local,
    /// In `[gateway.rate_limit_store]`, shared by every gateway using it.
    Global,
}

/// Cross-origin resource sharing for a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<OriginMatch>,
    pub allow_methods: Vec<Method>,
    /// Lowercase.
    pub allow_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub allow_credentials: bool,
    pub max_age: Option<Duration>,
}

/// One `allow_origins` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginMatch {
    /// `"*"`: every origin.
    Any,
    /// `scheme://host[:port]`, lowercased.
    Exact(String),
    /// `https://*.example.com`: the scheme with `://`, and the suffix with its dot.
    Subdomains { scheme: String, suffix: String },
}

impl OriginMatch {
    /// Whether an `Origin` value (compared case-insensitively) is this entry's.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginMatch::Any => true,
            OriginMatch::Exact(exact) => exact.eq_ignore_ascii_case(origin),
            OriginMatch::Subdomains { scheme, suffix } => {
                let lower = origin.to_ascii_lowercase();
                lower.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host[..host.len() - suffix.len()].contains(['/', '@'])
                })
            }
        }
    }
}

impl Route {
    /// Cluster routes are ordered after every file route (a file has fewer routes than
    /// this), so among otherwise equal routes the file's come first.
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
    /// Cookie affinity: a client that carries the cookie returns to its member.
    pub affinity: Option<Affinity>,
    /// A PROXY protocol header sent first on each new connection to an endpoint.
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
}

/// `affinity = { cookie, max_age }` on an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub cookie: String,
    pub max_age: Duration,
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
