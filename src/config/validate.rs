//! Raw TOML -> validated [`model::Config`], collecting every problem with its location.
//! `edgegate check`, startup and every reload go through [`load`], so they agree.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use toml::Spanned;

use super::model::{self, *};
use super::raw;
use super::source::{Diagnostic, Diagnostics, Severity, SourceFile};

/// A config that passed validation, with any warnings it produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: model::Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates one config file.
pub fn load(source: &SourceFile) -> Result<Loaded, Diagnostics> {
    let mut checker = Checker {
        source,
        base_dir: source.base_dir(),
        diagnostics: Vec::new(),
    };
    let raw: raw::Config = match toml::from_str(&source.text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            checker.error(&span, e.message().trim().to_string());
            return Err(Diagnostics(checker.diagnostics));
        }
    };
    let config = checker.config(raw);
    if checker
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error)
    {
        let mut all = checker.diagnostics;
        all.sort_by_key(|d| d.severity != Severity::Error);
        return Err(Diagnostics(all));
    }
    let mut warnings = checker.diagnostics;
    warnings.extend(super::shadow::shadowed_routes(&config));
    Ok(Loaded { config, warnings })
}

struct Checker<'a> {
    source: &'a SourceFile,
    base_dir: PathBuf,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn push(&mut self, severity: Severity, span: &Range<usize>, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            location: self.source.location(span),
            message,
        });
    }

    fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(Severity::Error, span, message.into());
    }

    fn warning(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(Severity::Warning, span, message.into());
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn duration(&mut self, value: Option<&raw::Text>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.get_ref().trim()) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    &text.span(),
                    format!(
                        "invalid duration {:?}: {e} (write e.g. \"250ms\", \"5s\", \"1m\")",
                        text.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn socket_addr(&mut self, text: &raw::Text, what: &str) -> Option<SocketAddr> {
        let value = text.get_ref().trim();
        if let Ok(addr) = value.parse::<SocketAddr>() {
            return Some(addr);
        }
        match value.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => Some(addr),
            _ => {
                self.error(
                    &text.span(),
                    format!(
                        "invalid {what} {value:?}: expected HOST:PORT, e.g. \"127.0.0.1:8080\""
                    ),
                );
                None
            }
        }
    }

    fn config(&mut self, raw: raw::Config) -> model::Config {
        let gateway = self.gateway(raw.gateway.unwrap_or_default());
        let admin = self.admin(raw.admin);
        let listeners = self.listeners(raw.listeners);
        let upstreams = self.upstreams(raw.upstreams);
        let listener_names: HashSet<&str> = listeners.iter().map(|l| &*l.name).collect();
        let upstream_names: HashSet<&str> = upstreams.iter().map(|u| &*u.name).collect();
        let routes = self.routes(raw.routes, &listener_names, &upstream_names);
        model::Config {
            gateway,
            admin,
            listeners,
            routes,
            upstreams,
        }
    }

    fn gateway(&mut self, raw: raw::Gateway) -> Gateway {
        let defaults = Gateway::default();
        let threads = match raw.threads {
            Some(t) if !(0..=1024).contains(t.get_ref()) => {
                self.error(&t.span(), "threads must be between 0 and 1024");
                0
            }
            Some(t) => *t.get_ref() as usize,
            None => 0,
        };
        let log_format = match raw.log_format {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.error(
                        &f.span(),
                        format!("unknown log_format {other:?}: expected \"text\" or \"json\""),
                    );
                    LogFormat::Text
                }
            },
        };
        let access_log = match raw.access_log {
            None => AccessLogTarget::Off,
            Some(t) => match t.get_ref().as_str() {
                "off" | "" => AccessLogTarget::Off,
                "stderr" => AccessLogTarget::Stderr,
                "stdout" => AccessLogTarget::Stdout,
                path => AccessLogTarget::File(self.path(path)),
            },
        };
        Gateway {
            threads,
            grace_period: self.duration(raw.grace_period.as_ref(), defaults.grace_period),
            shutdown_delay: self.duration(raw.shutdown_delay.as_ref(), defaults.shutdown_delay),
            log_format,
            access_log,
        }
    }

    fn admin(&mut self, raw: Option<raw::Admin>) -> Admin {
        let default = SocketAddr::from(([127, 0, 0, 1], 9901));
        let address = raw
            .and_then(|a| a.address)
            .and_then(|text| self.socket_addr(&text, "admin address"))
            .unwrap_or(default);
        Admin { address }
    }

    fn unique_name<'n>(
        &mut self,
        seen: &mut HashSet<String>,
        name: &'n raw::Text,
        kind: &str,
    ) -> Option<&'n str> {
        let value = name.get_ref().as_str();
        if value.is_empty() {
            self.error(&name.span(), format!("{kind} name must not be empty"));
            return None;
        }
        if !seen.insert(value.to_string()) {
            self.error(&name.span(), format!("duplicate {kind} name {value:?}"));
        }
        Some(value)
    }

    fn listeners(&mut self, raw: Vec<Spanned<raw::Listener>>) -> Vec<Listener> {
        let mut seen = HashSet::new();
        let mut by_address: HashMap<SocketAddr, String> = HashMap::new();
        let mut out = Vec::new();
        for listener in raw {
            let listener = listener.into_inner();
            let name = self
                .unique_name(&mut seen, &listener.name, "listener")
                .unwrap_or_default()
                .to_string();
            let Some(address) = self.socket_addr(&listener.address, "listener address") else {
                continue;
            };
            if address.port() != 0 {
                if let Some(other) = by_address.insert(address, name.clone()) {
                    self.error(
                        &listener.address.span(),
                        format!("address {address} is already used by listener {other:?}"),
                    );
                }
            }
            let tls = listener.tls.map(|tls| self.listener_tls(tls));
            out.push(Listener {
                name: name.into(),
                address,
                tls,
            });
        }
        out
    }

    fn listener_tls(&mut self, raw: Spanned<raw::ListenerTls>) -> ListenerTls {
        let raw = raw.into_inner();
        let cert_span = raw.certificates.span();
        let certificates: Vec<CertificateFiles> = raw
            .certificates
            .into_inner()
            .into_iter()
            .map(|pair| {
                let location = self.source.location(&pair.span());
                let pair = pair.into_inner();
                CertificateFiles {
                    cert: self.path(pair.cert.get_ref()),
                    key: self.path(pair.key.get_ref()),
                    location,
                }
            })
            .collect();
        if certificates.is_empty() {
            self.error(&cert_span, "a TLS listener needs at least one certificate");
        }
        let min_version = match raw.min_version {
            None => TlsVersion::V1_2,
            Some(v) => match v.get_ref().as_str() {
                "1.2" => TlsVersion::V1_2,
                "1.3" => TlsVersion::V1_3,
                other => {
                    self.error(
                        &v.span(),
                        format!("unknown min_version {other:?}: expected \"1.2\" or \"1.3\""),
                    );
                    TlsVersion::V1_2
                }
            },
        };
        let alpn = match raw.alpn {
            None => vec!["h2".to_string(), "http/1.1".to_string()],
            Some(list) => {
                let list_span = list.span();
                let protocols: Vec<String> = list
                    .into_inner()
                    .into_iter()
                    .filter_map(|p| match p.get_ref().as_str() {
                        "h2" | "http/1.1" => Some(p.into_inner()),
                        other => {
                            self.error(
                                &p.span(),
                                format!(
                                    "unsupported ALPN protocol {other:?}: expected \"h2\" or \"http/1.1\""
                                ),
                            );
                            None
                        }
                    })
                    .collect();
                if protocols.is_empty() {
                    self.error(&list_span, "alpn must name at least one protocol");
                }
                protocols
            }
        };
        let client_auth = match raw.client_ca {
            None => {
                if let Some(mode) = raw.client_auth.as_ref() {
                    self.error(&mode.span(), "client_auth needs client_ca");
                }
                None
            }
            Some(ca) => {
                let required = match raw.client_auth {
                    None => true,
                    Some(mode) => match mode.get_ref().as_str() {
                        "require" => true,
                        "request" => false,
                        other => {
                            self.error(
                                &mode.span(),
                                format!(
                                    "unknown client_auth {other:?}: expected \"require\" or \"request\""
                                ),
                            );
                            true
                        }
                    },
                };
                let identity_header = raw
                    .client_identity_header
                    .and_then(|h| self.header_name(&h));
                Some(ClientAuth {
                    ca: self.path(ca.get_ref()),
                    required,
                    identity_header,
                })
            }
        };
        ListenerTls {
            certificates,
            min_version,
            alpn,
            client_auth,
        }
    }

    fn header_name(&mut self, text: &raw::Text) -> Option<HeaderName> {
        match HeaderName::from_bytes(text.get_ref().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(
                    &text.span(),
                    format!("invalid header name {:?}", text.get_ref()),
                );
                None
            }
        }
    }

    fn header_value(&mut self, text: &raw::Text) -> Option<HeaderValue> {
        match HeaderValue::from_str(text.get_ref()) {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(
                    &text.span(),
                    format!("invalid header value {:?}", text.get_ref()),
                );
                None
            }
        }
    }

    fn header_edits(&mut self, raw: Option<raw::HeaderEdits>) -> HeaderEdits {
        let Some(raw) = raw else {
            return HeaderEdits::default();
        };
        let mut pairs = |map: &std::collections::BTreeMap<raw::Text, raw::Text>| {
            map.iter()
                .filter_map(|(k, v)| Some((self.header_name(k)?, self.header_value(v)?)))
                .collect::<Vec<_>>()
        };
        let set = pairs(&raw.set);
        let add = pairs(&raw.add);
        let remove = raw
            .remove
            .iter()
            .filter_map(|h| self.header_name(h))
            .collect();
        HeaderEdits { set, add, remove }
    }

    fn upstreams(
        &mut self,
        raw: std::collections::BTreeMap<String, raw::Upstream>,
    ) -> Vec<Upstream> {
        let headers = self.upstream_headers();
        let mut entries: Vec<_> = raw
            .into_iter()
            .map(|(name, upstream)| {
                let start = headers.get(&name).copied().unwrap_or(0);
                (
                    Spanned::new(start..start, name),
                    Spanned::new(start..start, upstream),
                )
            })
            .collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        entries
            .into_iter()
            .filter_map(|(name, upstream)| self.upstream(name, upstream))
            .collect()
    }

    /// Where each `[upstreams.NAME` header (or `[upstreams.NAME.` sub-table) first
    /// appears, by name: one pass over the text however many upstreams there are.
    fn upstream_headers(&self) -> HashMap<String, usize> {
        let mut found = HashMap::new();
        for (i, _) in self.source.text.match_indices("[upstreams.") {
            let rest = &self.source.text[i + "[upstreams.".len()..];
            let name = match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next(),
                None => rest.split([']', '.', ' ']).next(),
            };
            if let Some(name) = name {
                found.entry(name.to_string()).or_insert(i + 1);
            }
        }
        found
    }

    fn upstream(&mut self, name: raw::Text, raw: Spanned<raw::Upstream>) -> Option<Upstream> {
        let span = raw.span();
        let raw = raw.into_inner();
        let members = match (raw.endpoints, raw.kubernetes) {
            (Some(_), Some(k)) => {
                self.error(
                    &k.span(),
                    format!(
                        "upstream {:?} has both `endpoints` and `kubernetes`; it must have exactly one",
                        name.get_ref()
                    ),
                );
                return None;
            }
            (None, None) => {
                self.error(
                    &span,
                    format!(
                        "upstream {:?} needs `endpoints` or a `kubernetes` block",
                        name.get_ref()
                    ),
                );
                return None;
            }
            (Some(endpoints), None) => Members::Static(self.endpoints(endpoints)),
            (None, Some(k)) => Members::Kubernetes(self.kubernetes(k)),
        };
        let balance = match raw.balance {
            None => Balance::RoundRobin,
            Some(b) => match b.get_ref().as_str() {
                "round_robin" => Balance::RoundRobin,
                "least_requests" => Balance::LeastRequests,
                "hash" => Balance::Hash,
                other => {
                    self.error(
                        &b.span(),
                        format!(
                            "unknown balance {other:?}: expected \"round_robin\", \"least_requests\" or \"hash\""
                        ),
                    );
                    Balance::RoundRobin
                }
            },
        };
        let retries = match raw.retries {
            None => 0,
            Some(r) if !(0..=10).contains(r.get_ref()) => {
                self.error(&r.span(), "retries must be between 0 and 10");
                0
            }
            Some(r) => *r.get_ref() as usize,
        };
        let tls = raw.tls.map(|tls| {
            let span = tls.span();
            let tls = tls.into_inner();
            let verify = tls.verify.unwrap_or(true);
            if !verify {
                self.warning(
                    &span,
                    format!(
                        "upstream {:?} does not verify its endpoints' certificates (verify = false)",
                        name.get_ref()
                    ),
                );
            }
            UpstreamTls {
                ca: tls.ca.map(|ca| self.path(ca.get_ref())),
                sni: tls.sni.map(Spanned::into_inner),
                verify,
            }
        });
        let health_check = raw
            .health_check
            .map(|hc| self.health_check(hc.into_inner()));
        Some(Upstream {
            name: name.into_inner().into(),
            members,
            balance,
            connect_timeout: self.duration(raw.connect_timeout.as_ref(), Duration::from_secs(5)),
            read_timeout: self.duration(raw.read_timeout.as_ref(), Duration::from_secs(60)),
            write_timeout: self.duration(raw.write_timeout.as_ref(), Duration::from_secs(60)),
            idle_timeout: self.duration(raw.idle_timeout.as_ref(), Duration::from_secs(60)),
            retries,
            http2: raw.http2.unwrap_or(false),
            tls,
            health_check,
        })
    }

    fn endpoints(&mut self, raw: Spanned<Vec<Spanned<raw::Endpoint>>>) -> Vec<Endpoint> {
        let list_span = raw.span();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for endpoint in raw.into_inner() {
            let span = endpoint.span();
            let (address, weight) = match endpoint.into_inner() {
                raw::Endpoint::Address(a) => (a, 1),
                raw::Endpoint::Weighted { address, weight } => (address, weight.unwrap_or(1)),
            };
            if !(1..=1000).contains(&weight) {
                self.error(&span, "weight must be between 1 and 1000");
                continue;
            }
            let text = Spanned::new(span.clone(), address);
            let Some(address) = self.socket_addr(&text, "endpoint address") else {
                continue;
            };
            if !seen.insert(address) {
                self.error(&span, format!("duplicate endpoint {address}"));
                continue;
            }
            out.push(Endpoint {
                address,
                weight: weight as u32,
            });
        }
        if out.is_empty()
            && self
                .diagnostics
                .iter()
                .all(|d| d.severity != Severity::Error)
        {
            self.error(&list_span, "endpoints must list at least one address");
        }
        out
    }

    fn kubernetes(&mut self, raw: Spanned<raw::Kubernetes>) -> KubernetesService {
        let raw = raw.into_inner();
        let port_span = raw.port.span();
        let port = match raw.port.into_inner() {
            raw::PortRef::Number(n) if (1..=65535).contains(&n) => ServicePort::Number(n as u16),
            raw::PortRef::Number(_) => {
                self.error(&port_span, "port must be between 1 and 65535");
                ServicePort::Number(1)
            }
            raw::PortRef::Name(name) => match name.parse::<u16>() {
                Ok(n) if n > 0 => ServicePort::Number(n),
                _ if !name.is_empty() => ServicePort::Name(name),
                _ => {
                    self.error(&port_span, "port must not be empty");
                    ServicePort::Number(1)
                }
            },
        };
        let api = match raw.api {
            None => DiscoveryApi::EndpointSlices,
            Some(api) => match api.get_ref().as_str() {
                "endpointslices" => DiscoveryApi::EndpointSlices,
                "endpoints" => DiscoveryApi::Endpoints,
                other => {
                    self.error(
                        &api.span(),
                        format!(
                            "unknown api {other:?}: expected \"endpointslices\" or \"endpoints\""
                        ),
                    );
                    DiscoveryApi::EndpointSlices
                }
            },
        };
        if raw.service.get_ref().is_empty() {
            self.error(&raw.service.span(), "service must not be empty");
        }
        KubernetesService {
            namespace: raw
                .namespace
                .map_or_else(|| "default".to_string(), Spanned::into_inner),
            service: raw.service.into_inner(),
            port,
            api,
        }
    }

    fn health_check(&mut self, raw: raw::HealthCheck) -> HealthCheck {
        let threshold = |checker: &mut Self, value: Option<Spanned<i64>>| match value {
            None => 2,
            Some(v) if (1..=100).contains(v.get_ref()) => *v.get_ref() as u32,
            Some(v) => {
                checker.error(&v.span(), "threshold must be between 1 and 100");
                2
            }
        };
        let path = match raw.path {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') => p.into_inner(),
            Some(p) => {
                self.error(&p.span(), "health check path must start with '/'");
                "/".to_string()
            }
        };
        let interval = self
            .duration(raw.interval.as_ref(), Duration::from_secs(5))
            .max(Duration::from_millis(10));
        HealthCheck {
            path,
            interval,
            timeout: self.duration(raw.timeout.as_ref(), Duration::from_secs(2)),
            unhealthy_threshold: threshold(self, raw.unhealthy_threshold),
            healthy_threshold: threshold(self, raw.healthy_threshold),
        }
    }

    fn routes(
        &mut self,
        raw: Vec<Spanned<raw::Route>>,
        listeners: &HashSet<&str>,
        upstreams: &HashSet<&str>,
    ) -> Vec<Arc<Route>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (order, route) in raw.into_iter().enumerate() {
            let span = route.span();
            let route = route.into_inner();
            let name = self
                .unique_name(&mut seen, &route.name, "route")
                .unwrap_or_default()
                .to_string();
            if let Some(route) = self.route(order, name, span, route, listeners, upstreams) {
                out.push(Arc::new(route));
            }
        }
        out
    }

    fn route(
        &mut self,
        order: usize,
        name: String,
        span: Range<usize>,
        raw: raw::Route,
        listeners: &HashSet<&str>,
        upstreams: &HashSet<&str>,
    ) -> Option<Route> {
        let location = self.source.location(&raw.name.span());
        let route_listeners = raw.listeners.map(|names| {
            names
                .into_iter()
                .filter_map(|n| {
                    if listeners.contains(n.get_ref().as_str()) {
                        Some(Name::from(n.into_inner()))
                    } else {
                        self.error(
                            &n.span(),
                            format!("route {name:?} names unknown listener {:?}", n.get_ref()),
                        );
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let hosts = raw
            .hosts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| self.host(&h))
            .collect();
        let path = self.path_match(raw.path, raw.path_prefix, raw.path_regex);
        let methods = raw.methods.map(|methods| {
            methods
                .into_inner()
                .into_iter()
                .filter_map(|m| {
                    let upper = m.get_ref().to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(method) => Some(method),
                        Err(_) => {
                            self.error(&m.span(), format!("invalid method {:?}", m.get_ref()));
                            None
                        }
                    }
                })
                .collect()
        });
        let headers = raw
            .headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                let name = match HeaderName::from_bytes(k.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        self.error(&v.span(), format!("invalid header name {k:?}"));
                        return None;
                    }
                };
                Some((name, v.into_inner()))
            })
            .collect();
        let query = raw
            .query
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();
        let action = self.action(
            &name,
            &span,
            raw.upstream,
            raw.redirect,
            raw.respond,
            upstreams,
        );
        let rewrite_prefix = raw.rewrite_prefix.and_then(|r| {
            if !matches!(path, Some(PathMatch::Prefix(_))) {
                self.error(&r.span(), "rewrite_prefix needs path_prefix");
                None
            } else if !r.get_ref().starts_with('/') {
                self.error(&r.span(), "rewrite_prefix must start with '/'");
                None
            } else {
                Some(r.into_inner())
            }
        });
        let request_headers = self.header_edits(raw.request_headers);
        let response_headers = self.header_edits(raw.response_headers);
        let timeout = raw
            .timeout
            .as_ref()
            .map(|t| self.duration(Some(t), Duration::ZERO));
        Some(Route {
            name: name.into(),
            order,
            listeners: route_listeners,
            hosts,
            path: path?,
            methods,
            headers,
            query,
            action: action?,
            rewrite_prefix,
            request_headers,
            response_headers,
            timeout,
            location,
        })
    }

    fn host(&mut self, text: &raw::Text) -> Option<HostMatch> {
        let host = text.get_ref().trim().to_ascii_lowercase();
        let valid_label = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.split('.').all(valid_label) {
                return Some(HostMatch::Wildcard(format!(".{suffix}")));
            }
        } else if host.split('.').all(valid_label) || host.parse::<std::net::IpAddr>().is_ok() {
            return Some(HostMatch::Exact(host));
        }
        self.error(
            &text.span(),
            format!(
                "invalid host {:?}: expected a name like \"api.example.com\" or \"*.example.com\"",
                text.get_ref()
            ),
        );
        None
    }

    fn path_match(
        &mut self,
        exact: Option<raw::Text>,
        prefix: Option<raw::Text>,
        regex: Option<raw::Text>,
    ) -> Option<PathMatch> {
        let given: Vec<_> = [&exact, &prefix, &regex].into_iter().flatten().collect();
        if given.len() > 1 {
            self.error(
                &given[1].span(),
                "a route has at most one of path, path_prefix and path_regex",
            );
            return None;
        }
        if let Some(p) = exact {
            if !p.get_ref().starts_with('/') {
                self.error(&p.span(), "path must start with '/'");
                return None;
            }
            return Some(PathMatch::Exact(p.into_inner()));
        }
        if let Some(r) = regex {
            if let Err(e) = regex::Regex::new(r.get_ref()) {
                let first_line = e.to_string();
                self.error(
                    &r.span(),
                    format!(
                        "invalid path_regex: {}",
                        first_line.lines().last().unwrap_or_default().trim()
                    ),
                );
                return None;
            }
            return Some(PathMatch::Regex(r.into_inner()));
        }
        match prefix {
            // No path condition matches every path, as Gateway API's default `/` prefix.
            None => Some(PathMatch::Prefix("/".to_string())),
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(&p.span(), "path_prefix must start with '/'");
                None
            }
            Some(p) => {
                let trimmed = p.get_ref().trim_end_matches('/');
                Some(PathMatch::Prefix(if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                }))
            }
        }
    }

    fn action(
        &mut self,
        name: &str,
        span: &Range<usize>,
        upstream: Option<raw::Text>,
        redirect: Option<Spanned<raw::Redirect>>,
        respond: Option<Spanned<raw::Respond>>,
        upstreams: &HashSet<&str>,
    ) -> Option<Action> {
        let count = upstream.is_some() as u8 + redirect.is_some() as u8 + respond.is_some() as u8;
        if count != 1 {
            self.error(
                span,
                format!(
                    "route {name:?} needs exactly one action: upstream, redirect or respond (found {count})"
                ),
            );
            return None;
        }
        if let Some(u) = upstream {
            if !upstreams.contains(u.get_ref().as_str()) {
                self.error(
                    &u.span(),
                    format!("route {name:?} names unknown upstream {:?}", u.get_ref()),
                );
                return None;
            }
            return Some(Action::Upstream(Arc::from(u.into_inner())));
        }
        if let Some(r) = redirect {
            let r = r.into_inner();
            let status = match r.status {
                None => StatusCode::FOUND,
                Some(s) if [301, 302, 303, 307, 308].contains(s.get_ref()) => {
                    StatusCode::from_u16(*s.get_ref() as u16).ok()?
                }
                Some(s) => {
                    self.error(
                        &s.span(),
                        "redirect status must be 301, 302, 303, 307 or 308",
                    );
                    return None;
                }
            };
            let scheme = match r.scheme {
                Some(s) if !matches!(s.get_ref().as_str(), "http" | "https") => {
                    self.error(&s.span(), "redirect scheme must be \"http\" or \"https\"");
                    return None;
                }
                s => s.map(Spanned::into_inner),
            };
            let port = match r.port {
                Some(p) if !(1..=65535).contains(p.get_ref()) => {
                    self.error(&p.span(), "redirect port must be between 1 and 65535");
                    return None;
                }
                p => p.map(|p| *p.get_ref() as u16),
            };
            return Some(Action::Redirect(Redirect {
                scheme,
                host: r.host.map(Spanned::into_inner),
                port,
                path: r.path.map(Spanned::into_inner),
                status,
            }));
        }
        let r = respond?.into_inner();
        let status = match StatusCode::from_u16(u16::try_from(*r.status.get_ref()).unwrap_or(0)) {
            Ok(s) if (100..=599).contains(&s.as_u16()) && s.as_u16() >= 200 => s,
            _ => {
                self.error(
                    &r.status.span(),
                    "respond status must be between 200 and 599",
                );
                return None;
            }
        };
        let content_type = match r.content_type {
            None => HeaderValue::from_static("text/plain; charset=utf-8"),
            Some(ct) => self.header_value(&ct)?,
        };
        Some(Action::Respond(Respond {
            status,
            body: Bytes::from(r.body.unwrap_or_default()),
            content_type,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let src = SourceFile::new("t.toml", text);
        match load(&src) {
            Ok(_) => vec![],
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_config_is_valid() {
        assert!(errors("[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n").is_empty());
    }

    #[test]
    fn unknown_key_is_reported_at_its_location() {
        let e = errors("[gateway]\nthreadz = 1\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("error: t.toml:2:1: unknown field `threadz`"),
            "{e:?}"
        );
    }

    #[test]
    fn every_problem_is_collected() {
        let e = errors(
            "[[routes]]\nname = \"a\"\nupstream = \"nope\"\n[[routes]]\nname = \"a\"\ntimeout = \"soon\"\nrespond = { status = 200 }\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
    }
}
