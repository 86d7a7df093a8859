//! Serde mirror of the TOML file. Nothing here is checked beyond its shape: unknown keys
//! are refused by `deny_unknown_fields`, and every value a later check may complain about
//! keeps its span so the complaint can name `line:col`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Option<GatewaySettings>,
    pub admin: Option<Admin>,
    #[serde(default)]
    pub listeners: Vec<Spanned<Listener>>,
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// Layer-4 routes: whole connections relayed to an upstream (tcp listeners, and TLS
    /// passthrough by SNI on TLS listeners).
    #[serde(default)]
    pub tcp_routes: Vec<Spanned<TcpRoute>>,
    /// Neither keys nor values are `Spanned`: toml 0.8 cannot span a table that is only
    /// created implicitly (`[upstreams.web.kubernetes]` with no `[upstreams.web]`), so
    /// validation finds an upstream's place in the text itself.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes from the cluster's Gateway API and Ingress objects; off unless written.
    pub kubernetes: Option<Spanned<KubernetesSettings>>,
    /// `[auth.NAME]`: authenticators that routes (and `[admin]`) name with `auth`.
    #[serde(default)]
    pub auth: BTreeMap<String, Spanned<Auth>>,
}

/// `[auth.NAME]`: one table for every kind; `type` says which keys apply, and
/// validation refuses the keys of another kind at their place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(rename = "type")]
    pub kind: Text,
    /// basic: htpasswd lines, bcrypt or argon2 hashes.
    pub users_file: Option<Text>,
    pub realm: Option<Text>,
    /// jwt: where the keys come from (exactly one).
    pub jwks_url: Option<Text>,
    pub jwks_file: Option<Text>,
    pub issuer: Option<Text>,
    pub audiences: Option<Vec<Text>>,
    pub algorithms: Option<Vec<Text>>,
    pub clock_skew: Option<Text>,
    pub claims_to_headers: Option<BTreeMap<String, Text>>,
    pub cookie: Option<Text>,
    /// forward: the auth service's URL.
    pub address: Option<Text>,
    pub request_headers: Option<Vec<Text>>,
    pub response_headers: Option<Vec<Text>>,
    pub timeout: Option<Text>,
}

/// `[kubernetes]`: which Gateways and Ingresses are ours, and where to look for them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    pub gateway_class: Option<Text>,
    pub ingress_class: Option<Text>,
    pub namespaces: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub threads: Option<Spanned<i64>>,
    pub grace_period: Option<Text>,
    pub shutdown_delay: Option<Text>,
    pub log_format: Option<Text>,
    pub access_log: Option<Text>,
    pub tracing: Option<Spanned<Tracing>>,
    pub rate_limit_store: Option<Spanned<RateLimitStore>>,
}

/// `[gateway.rate_limit_store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStore {
    pub url: Text,
    pub on_error: Option<Text>,
    pub timeout: Option<Text>,
}

/// `[gateway.tracing]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    pub otlp_endpoint: Text,
    pub sample_ratio: Option<Spanned<f64>>,
    pub service_name: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: Option<Text>,
    /// An `[auth.NAME]` guarding every admin page.
    pub auth: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: Text,
    pub address: Text,
    /// Not `Spanned`: toml 0.8 cannot span a table created only implicitly (a listener
    /// written with `[listeners.tls.acme]` and no `[listeners.tls]`).
    pub tls: Option<ListenerTls>,
    pub header_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub max_connections: Option<Spanned<i64>>,
    /// CIDRs (`"10.0.0.0/8"`) or single addresses whose `X-Forwarded-*` are believed.
    pub trusted_proxies: Option<Vec<Text>>,
    /// `"http"` (default) or `"tcp"`.
    pub protocol: Option<Text>,
    /// Connections must open with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    pub name: Text,
    pub listeners: Option<Vec<Text>>,
    pub sni: Option<Vec<Text>>,
    pub upstream: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Required unless `acme` provides the certificate.
    pub certificates: Option<Spanned<Vec<Spanned<CertificatePair>>>>,
    pub acme: Option<Spanned<Acme>>,
    pub min_version: Option<Text>,
    pub alpn: Option<Spanned<Vec<Text>>>,
    pub client_ca: Option<Text>,
    /// "require" (default with `client_ca`) or "request".
    pub client_auth: Option<Text>,
    /// Header that carries the verified client certificate's subject to upstreams.
    pub client_identity_header: Option<Text>,
}

/// `[listeners.tls.acme]`: a certificate obtained and renewed from an ACME directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    pub directory: Text,
    pub email: Option<Text>,
    pub domains: Spanned<Vec<Text>>,
    pub challenge: Option<Text>,
    pub storage: Text,
    pub ca: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    pub cert: Text,
    pub key: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Text,
    pub listeners: Option<Vec<Text>>,
    pub hosts: Option<Vec<Text>>,
    pub path: Option<Text>,
    pub path_prefix: Option<Text>,
    pub path_regex: Option<Text>,
    pub methods: Option<Spanned<Vec<Text>>>,
    pub headers: Option<BTreeMap<String, Text>>,
    pub query: Option<BTreeMap<String, Text>>,
    pub cookies: Option<BTreeMap<String, Text>>,
    pub upstream: Option<Text>,
    /// Weighted upstreams, instead of `upstream`.
    pub backends: Option<Spanned<Vec<Spanned<Backend>>>>,
    pub redirect: Option<Spanned<Redirect>>,
    pub respond: Option<Spanned<Respond>>,
    pub rewrite_prefix: Option<Text>,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub timeout: Option<Text>,
    /// A size: `"10MiB"`, `"512KiB"`, `"1GB"`, or bytes.
    pub max_body_size: Option<Text>,
    /// An `[auth.NAME]` every request on the route must pass.
    pub auth: Option<Text>,
    /// CIDRs or addresses.
    pub allow: Option<Vec<Text>>,
    pub deny: Option<Vec<Text>>,
    pub rate_limit: Option<Spanned<RateLimit>>,
    pub cors: Option<Spanned<Cors>>,
    /// `true`, or `{ algorithms = [...], min_size = "1KiB" }`.
    pub compress: Option<Spanned<toml::Value>>,
    pub mirror: Option<Spanned<Mirror>>,
}

/// `mirror = { upstream = "shadow", percent = 10 }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub upstream: Text,
    /// A number from 0 to 100 (fractions allowed); 100 when left out.
    pub percent: Option<Spanned<toml::Value>>,
}

/// One of a route's weighted `backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub upstream: Text,
    pub weight: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: Spanned<i64>,
    pub per: Option<Text>,
    pub burst: Option<Spanned<i64>>,
    /// `"client"`, `"route"` or `{ header = "NAME" }`.
    pub key: Option<Spanned<toml::Value>>,
    pub scope: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allow_origins: Spanned<Vec<Text>>,
    pub allow_methods: Option<Vec<Text>>,
    pub allow_headers: Option<Vec<Text>>,
    pub expose_headers: Option<Vec<Text>>,
    pub allow_credentials: Option<Spanned<bool>>,
    pub max_age: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub scheme: Option<Text>,
    pub host: Option<Text>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Text>,
    pub status: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    pub status: Spanned<i64>,
    pub body: Option<String>,
    pub content_type: Option<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    #[serde(default)]
    pub set: BTreeMap<Text, Text>,
    #[serde(default)]
    pub add: BTreeMap<Text, Text>,
    #[serde(default)]
    pub remove: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub endpoints: Option<Spanned<Vec<Spanned<Endpoint>>>>,
    pub kubernetes: Option<Spanned<Kubernetes>>,
    pub balance: Option<Text>,
    pub connect_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
    pub write_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub retries: Option<Spanned<i64>>,
    pub http2: Option<bool>,
    pub tls: Option<Spanned<UpstreamTls>>,
    pub health_check: Option<Spanned<HealthCheck>>,
    pub passive_health: Option<Spanned<PassiveHealth>>,
    /// A share of live requests, `"20%"`.
    pub retry_budget: Option<Text>,
    pub hash_on: Option<Spanned<HashOn>>,
    pub affinity: Option<Spanned<Affinity>>,
    /// `"v1"` or `"v2"`: a PROXY protocol header on each new connection to an endpoint.
    pub send_proxy_protocol: Option<Text>,
}

/// `affinity = { cookie = "NAME", max_age = "1h" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub cookie: Text,
    pub max_age: Option<Text>,
}

/// What `balance = "hash"` hashes: `"client_address"`, `{ header = "x-user" }` or
/// `{ cookie = "session" }`. Untagged, so no `Spanned` inside (it cannot be buffered);
/// the whole value is spanned instead, and the table's keys are checked in validation.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "invalid hash_on: expected \"client_address\", { header = \"NAME\" } or { cookie = \"NAME\" }"
)]
pub enum HashOn {
    Name(String),
    Table(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub ejection_time: Option<Text>,
    /// A share of the pool, `"50%"`.
    pub max_ejected: Option<Text>,
}

/// An endpoint is written either as `"ip:port"` or as `{ address, weight }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Endpoint {
    Address(String),
    /// Untagged, so unknown keys cannot be refused by serde; validation checks them.
    Weighted(BTreeMap<String, toml::Value>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    pub namespace: Option<Text>,
    pub service: Text,
    pub port: Spanned<PortRef>,
    pub api: Option<Text>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(
    untagged,
    expecting = "invalid port: expected a Service port's name (\"http\") or number (80)"
)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub ca: Option<Text>,
    pub sni: Option<Text>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: Option<Text>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub healthy_threshold: Option<Spanned<i64>>,
}
