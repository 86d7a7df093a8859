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
use super::tls_files;

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
        // Errors first, each kind in the order of the file, as a compiler lists them.
        all.sort_by_key(|d| {
            (
                d.severity != Severity::Error,
                d.location.line,
                d.location.column,
            )
        });
        return Err(Diagnostics(all));
    }
    let mut warnings = checker.diagnostics;
    warnings.extend(super::shadow::shadowed_routes(&config));
    Ok(Loaded { config, warnings })
}

/// `{ address = "ip:port", weight = N }`: an untagged form, so its keys are checked here
/// (a misspelt `wieght` must not quietly mean weight 1).
fn weighted(
    table: &std::collections::BTreeMap<String, toml::Value>,
) -> Result<(String, i64), String> {
    if let Some(unknown) = table
        .keys()
        .find(|k| !matches!(k.as_str(), "address" | "weight"))
    {
        return Err(format!(
            "unknown key {unknown:?} in endpoint: expected `address` and optionally `weight`"
        ));
    }
    let address = match table.get("address") {
        Some(toml::Value::String(a)) => a.clone(),
        Some(_) => return Err("endpoint address must be a string \"ip:port\"".into()),
        None => return Err("endpoint table needs `address`".into()),
    };
    let weight = match table.get("weight") {
        None => 1,
        Some(toml::Value::Integer(w)) => *w,
        Some(_) => return Err("weight must be an integer".into()),
    };
    Ok((address, weight))
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

    /// Reads a file the config names; a file that cannot be read is an error at the
    /// place that names it (the bytes are then empty, and the config is refused anyway).
    fn tls_file(&mut self, text: &raw::Text, what: &str) -> TlsFile {
        let path = self.path(text.get_ref());
        match TlsFile::read(path.clone()) {
            Ok(file) => file,
            Err(e) => {
                self.error(
                    &text.span(),
                    format!("cannot read {what} {}: {e}", path.display()),
                );
                TlsFile {
                    path,
                    pem: Arc::from(&[][..]),
                }
            }
        }
    }

    /// A CA bundle the config names: readable, with at least one usable certificate.
    fn ca_file(&mut self, text: &raw::Text, what: &str) -> TlsFile {
        let before = self.diagnostics.len();
        let file = self.tls_file(text, what);
        if self.diagnostics.len() == before {
            if let Err(e) = tls_files::trust_anchors(&file) {
                self.error(&text.span(), format!("{what}: {e}"));
            }
        }
        file
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

    /// A duration that must not be zero (a zero timeout would cut every connection).
    fn positive_duration(
        &mut self,
        value: Option<&raw::Text>,
        default: Duration,
        what: &str,
    ) -> Duration {
        let duration = self.duration(value, default);
        match value {
            Some(text) if duration.is_zero() => {
                self.error(&text.span(), format!("{what} must be greater than zero"));
                default
            }
            _ => duration,
        }
    }

    fn size(&mut self, text: &raw::Text, what: &str) -> Option<u64> {
        match parse_size(text.get_ref()) {
            Ok(bytes) => Some(bytes),
            Err(problem) => {
                self.error(
                    &text.span(),
                    format!(
                        "invalid {what} {:?}: {problem} (write e.g. \"10MiB\", \"512KiB\", \"1GB\" or a number of bytes)",
                        text.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A percentage, `"20%"`, as a fraction in 0..=1.
    fn share(&mut self, value: Option<&raw::Text>, default: f64, what: &str) -> f64 {
        let Some(text) = value else { return default };
        match parse_share(text.get_ref()) {
            Ok(share) => share,
            Err(problem) => {
                self.error(
                    &text.span(),
                    format!("invalid {what} {:?}: {problem}", text.get_ref()),
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
        let kubernetes = raw.kubernetes.map(|raw| {
            super::cluster::validate(raw, &mut |severity, span, message| {
                self.push(severity, &span, message)
            })
        });
        model::Config {
            gateway,
            admin,
            listeners,
            routes,
            upstreams,
            kubernetes,
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
            // Checked before the address, so a bad address does not hide their problems.
            let header_timeout = self.positive_duration(
                listener.header_timeout.as_ref(),
                Listener::DEFAULT_HEADER_TIMEOUT,
                "header_timeout",
            );
            let idle_timeout = self.positive_duration(
                listener.idle_timeout.as_ref(),
                Listener::DEFAULT_IDLE_TIMEOUT,
                "idle_timeout",
            );
            let max_connections = match listener.max_connections {
                None => Listener::DEFAULT_MAX_CONNECTIONS,
                Some(m) => match usize::try_from(*m.get_ref()) {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        self.error(&m.span(), "max_connections must be at least 1");
                        Listener::DEFAULT_MAX_CONNECTIONS
                    }
                },
            };
            let trusted_proxies = listener
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .filter_map(|entry| self.trusted_proxy(entry))
                .collect();
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
                header_timeout,
                idle_timeout,
                max_connections,
                trusted_proxies,
            });
        }
        out
    }

    /// One `trusted_proxies` entry: a CIDR, or a single address as its own network.
    fn trusted_proxy(&mut self, text: &raw::Text) -> Option<ipnet::IpNet> {
        let value = text.get_ref().trim();
        let net = match value.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => match value.parse::<std::net::IpAddr>() {
                Ok(addr) => ipnet::IpNet::from(addr),
                Err(_) => {
                    self.error(
                        &text.span(),
                        format!(
                            "invalid trusted_proxies entry {value:?}: expected a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.1\""
                        ),
                    );
                    return None;
                }
            },
        };
        let network = net.trunc();
        if network != net {
            self.warning(
                &text.span(),
                format!("trusted_proxies entry {value:?} has host bits set; it means {network}"),
            );
        }
        Some(network)
    }

    fn listener_tls(&mut self, raw: Spanned<raw::ListenerTls>) -> ListenerTls {
        let raw = raw.into_inner();
        let cert_span = raw.certificates.span();
        let mut names_seen: Vec<(String, PathBuf)> = Vec::new();
        let certificates: Vec<CertificateFiles> = raw
            .certificates
            .into_inner()
            .into_iter()
            .map(|pair| {
                let span = pair.span();
                let location = self.source.location(&span);
                let pair = pair.into_inner();
                let before = self.diagnostics.len();
                let files = CertificateFiles {
                    cert: self.tls_file(&pair.cert, "certificate"),
                    key: self.tls_file(&pair.key, "key"),
                    location,
                };
                if self.diagnostics.len() == before {
                    match tls_files::certificate(&files.cert, &files.key) {
                        Ok(loaded) => {
                            self.certificate_warnings(&span, &files, &loaded, &mut names_seen)
                        }
                        Err(e) => self.error(&span, e),
                    }
                }
                files
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
                    ca: self.ca_file(&ca, "client_ca"),
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

    /// Worth a warning, not a refusal: an expired certificate (clients will complain, but
    /// refusing the whole config would take every other listener down too), and a name
    /// served by two certificates (the first one listed wins).
    fn certificate_warnings(
        &mut self,
        span: &Range<usize>,
        files: &CertificateFiles,
        loaded: &tls_files::LoadedCertificate,
        seen: &mut Vec<(String, PathBuf)>,
    ) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if loaded.not_after < now {
            let when = time::OffsetDateTime::from_unix_timestamp(loaded.not_after)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            self.warning(
                span,
                format!("certificate {} expired at {when}", files.cert.display()),
            );
        }
        for name in &loaded.names {
            if let Some((_, other)) = seen.iter().find(|(n, _)| n == name) {
                let message = format!(
                    "name {name:?} of {} is also served by {}; the first one wins",
                    files.cert.display(),
                    other.display()
                );
                self.warning(span, message);
            } else {
                seen.push((name.clone(), files.cert.path.clone()));
            }
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
        let mut headers = self.upstream_headers();
        if raw.keys().any(|name| !headers.contains_key(name)) {
            self.upstream_keys(&mut headers);
        }
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

    /// Where upstreams written without a `[upstreams.NAME]` header (inline
    /// `api = { … }` or dotted `api.endpoints = …` keys) are named: toml_edit keeps the
    /// key spans that serde's view of the document loses. Parsed only when needed.
    fn upstream_keys(&self, found: &mut HashMap<String, usize>) {
        let Ok(doc) = toml_edit::ImDocument::parse(self.source.text.as_str()) else {
            return;
        };
        let Some(upstreams) = doc.get("upstreams").and_then(|i| i.as_table_like()) else {
            return;
        };
        for (name, _) in upstreams.iter() {
            let start = upstreams
                .get_key_value(name)
                .and_then(|(key, _)| key.span())
                .map(|span| span.start);
            if let Some(start) = start {
                found.entry(name.to_string()).or_insert(start);
            }
        }
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
                ca: tls.ca.map(|ca| self.ca_file(&ca, "upstream CA")),
                sni: tls.sni.map(Spanned::into_inner),
                verify,
            }
        });
        let health_check = raw
            .health_check
            .map(|hc| self.health_check(hc.into_inner()));
        let passive_health = raw
            .passive_health
            .map(|ph| self.passive_health(ph.into_inner()));
        let retry_budget = self.share(
            raw.retry_budget.as_ref(),
            Upstream::DEFAULT_RETRY_BUDGET,
            "retry_budget",
        );
        let hash_on = match raw.hash_on {
            None => HashOn::ClientAddress,
            Some(h) => {
                if balance != Balance::Hash {
                    self.warning(
                        &h.span(),
                        format!(
                            "upstream {:?}: hash_on has no effect unless balance = \"hash\"",
                            name.get_ref()
                        ),
                    );
                }
                self.hash_on(h)
            }
        };
        Some(Upstream {
            name: name.into_inner().into(),
            members,
            balance,
            connect_timeout: self.positive_duration(
                raw.connect_timeout.as_ref(),
                Duration::from_secs(5),
                "connect_timeout",
            ),
            read_timeout: self.positive_duration(
                raw.read_timeout.as_ref(),
                Duration::from_secs(60),
                "read_timeout",
            ),
            write_timeout: self.positive_duration(
                raw.write_timeout.as_ref(),
                Duration::from_secs(60),
                "write_timeout",
            ),
            idle_timeout: self.duration(raw.idle_timeout.as_ref(), Duration::from_secs(60)),
            retries,
            http2: raw.http2.unwrap_or(false),
            tls,
            health_check,
            passive_health,
            retry_budget,
            hash_on,
        })
    }

    fn hash_on(&mut self, raw: Spanned<raw::HashOn>) -> HashOn {
        let span = raw.span();
        match raw.into_inner() {
            raw::HashOn::Name(name) if name == "client_address" => HashOn::ClientAddress,
            raw::HashOn::Name(other) => {
                self.error(
                    &span,
                    format!(
                        "unknown hash_on {other:?}: expected \"client_address\", {{ header = \"NAME\" }} or {{ cookie = \"NAME\" }}"
                    ),
                );
                HashOn::ClientAddress
            }
            raw::HashOn::Table(table) => {
                let mut entries = table.into_iter();
                match (entries.next(), entries.next()) {
                    (Some((key, value)), None) if key == "header" => {
                        match HeaderName::from_bytes(value.as_bytes()) {
                            Ok(name) => HashOn::Header(name),
                            Err(_) => {
                                self.error(&span, format!("invalid header name {value:?}"));
                                HashOn::ClientAddress
                            }
                        }
                    }
                    (Some((key, value)), None) if key == "cookie" => {
                        if is_token(&value) {
                            HashOn::Cookie(value)
                        } else {
                            self.error(&span, format!("invalid cookie name {value:?}"));
                            HashOn::ClientAddress
                        }
                    }
                    _ => {
                        self.error(
                            &span,
                            "hash_on takes exactly one of `header` or `cookie`, e.g. { header = \"x-user\" }",
                        );
                        HashOn::ClientAddress
                    }
                }
            }
        }
    }

    fn passive_health(&mut self, raw: raw::PassiveHealth) -> PassiveHealth {
        let defaults = PassiveHealth::default();
        let consecutive_failures = match raw.consecutive_failures {
            None => defaults.consecutive_failures,
            Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.error(&n.span(), "consecutive_failures must be between 1 and 1000");
                defaults.consecutive_failures
            }
        };
        PassiveHealth {
            consecutive_failures,
            ejection_time: self.positive_duration(
                raw.ejection_time.as_ref(),
                defaults.ejection_time,
                "ejection_time",
            ),
            max_ejected: self.share(
                raw.max_ejected.as_ref(),
                defaults.max_ejected,
                "max_ejected",
            ),
        }
    }

    fn endpoints(&mut self, raw: Spanned<Vec<Spanned<raw::Endpoint>>>) -> Vec<Endpoint> {
        let list_span = raw.span();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let entries = raw.into_inner();
        if entries.is_empty() {
            self.error(&list_span, "endpoints must list at least one address");
        }
        for endpoint in entries {
            let span = endpoint.span();
            let (address, weight) = match endpoint.into_inner() {
                raw::Endpoint::Address(a) => (a, 1),
                raw::Endpoint::Weighted(table) => match weighted(&table) {
                    Ok(pair) => pair,
                    Err(problem) => {
                        self.error(&span, problem);
                        continue;
                    }
                },
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
            timeout: self.positive_duration(
                raw.timeout.as_ref(),
                Duration::from_secs(2),
                "health check timeout",
            ),
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
            .map(|t| self.positive_duration(Some(t), Duration::from_secs(60), "timeout"));
        let max_body_size = raw
            .max_body_size
            .and_then(|size| self.size(&size, "max_body_size"));
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
            rewrite_path: None,
            request_headers,
            response_headers,
            timeout,
            max_body_size,
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

/// A size in bytes: a whole number, optionally followed by a unit: `B`, the decimal `KB`,
/// `MB`, `GB`, `TB` or the binary `KiB`, `MiB`, `GiB`, `TiB` (units in any case, a space
/// before the unit allowed). Bare `K`/`M`/`G` are refused: whether they mean 1000 or 1024
/// differs between tools. Integer arithmetic only; a size past `u64` is an error, not a
/// silently saturated limit.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err("expected a whole number, optionally with a unit".to_string());
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| "number too large".to_string())?;
    let unit = text[digits..].trim_start();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: expected B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| "size too large".to_string())
}

/// A percentage between `"0%"` and `"100%"` (decimals allowed), as a fraction in 0..=1.
fn parse_share(text: &str) -> Result<f64, String> {
    let expected = || "expected a percentage between \"0%\" and \"100%\", e.g. \"20%\"";
    let number = text
        .trim()
        .strip_suffix('%')
        .map(str::trim_end)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| expected().to_string())?;
    match number.parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent / 100.0),
        _ => Err(expected().to_string()),
    }
}

/// An HTTP token (RFC 9110 section 5.6.2), which a cookie name must be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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

    fn loaded(text: &str) -> Loaded {
        match load(&SourceFile::new("t.toml", text)) {
            Ok(loaded) => loaded,
            Err(d) => panic!("{d}"),
        }
    }

    fn warnings(text: &str) -> Vec<String> {
        loaded(text)
            .warnings
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    const LISTENER: &str = "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n";

    fn listener(extra: &str) -> String {
        format!("{LISTENER}{extra}")
    }

    fn one_listener(extra: &str) -> Listener {
        loaded(&listener(extra)).config.listeners.remove(0)
    }

    /// One upstream `u` with the given lines added to its table.
    fn upstream_text(extra: &str) -> String {
        format!("[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n{extra}")
    }

    fn one_upstream(extra: &str) -> Upstream {
        loaded(&upstream_text(extra)).config.upstreams.remove(0)
    }

    fn route_text(extra: &str) -> String {
        format!("[[routes]]\nname = \"r\"\nrespond = {{ status = 200 }}\n{extra}")
    }

    #[test]
    fn listener_limits_have_safe_defaults() {
        let l = one_listener("");
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.max_connections, 10_000);
        assert!(l.trusted_proxies.is_empty());
        assert!(!l.is_trusted(std::net::IpAddr::from([127, 0, 0, 1])));
    }

    #[test]
    fn listener_limits_are_read() {
        let l = one_listener(
            "header_timeout = \"2s\"\nidle_timeout = \"250ms\"\nmax_connections = 3\n\
             trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\", \"::1\"]\n",
        );
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_millis(250));
        assert_eq!(l.max_connections, 3);
        let nets: Vec<String> = l.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
        );
        let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
        for (addr, trusted) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("2001:db8::5", true),
            ("::1", true),
            // An IPv4 peer on a dual-stack socket.
            ("::ffff:10.9.9.9", true),
            ("::ffff:11.0.0.1", false),
        ] {
            let Some(addr_ip) = ip(addr) else {
                panic!("bad test address {addr}")
            };
            assert_eq!(l.is_trusted(addr_ip), trusted, "{addr}");
        }
    }

    #[test]
    fn bad_listener_limits_are_reported_at_their_values() {
        let e = errors(&listener(
            "header_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\n\
             trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"proxy.local\"]\n",
        ));
        assert_eq!(
            e,
            [
                "error: t.toml:4:18: header_timeout must be greater than zero",
                "error: t.toml:5:16: invalid duration \"soon\": expected number at 0 (write e.g. \"250ms\", \"5s\", \"1m\")",
                "error: t.toml:6:19: max_connections must be at least 1",
                "error: t.toml:7:34: invalid trusted_proxies entry \"10.0.0.0/33\": expected a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.1\"",
                "error: t.toml:7:49: invalid trusted_proxies entry \"proxy.local\": expected a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.1\"",
            ],
        );
        // Reported even when the listener's address is bad too.
        let e =
            errors("[[listeners]]\nname = \"a\"\naddress = \"nowhere\"\nmax_connections = -1\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.starts_with("error: t.toml:4:19: max_connections")),
            "{e:?}"
        );
    }

    #[test]
    fn trusted_proxy_with_host_bits_is_a_warning_and_truncated() {
        let text = listener("trusted_proxies = [\"10.1.2.3/8\"]\n");
        assert_eq!(
            warnings(&text),
            ["warning: t.toml:4:20: trusted_proxies entry \"10.1.2.3/8\" has host bits set; it means 10.0.0.0/8"]
        );
        let l = loaded(&text).config.listeners.remove(0);
        assert_eq!(l.trusted_proxies[0].to_string(), "10.0.0.0/8");
    }

    #[test]
    fn max_body_size_is_read_in_bytes() {
        let route = |extra: &str| loaded(&route_text(extra)).config.routes[0].max_body_size;
        assert_eq!(route(""), None);
        assert_eq!(route("max_body_size = \"10MiB\"\n"), Some(10 * 1024 * 1024));
        assert_eq!(route("max_body_size = \"512KiB\"\n"), Some(512 * 1024));
        assert_eq!(route("max_body_size = \"1GB\"\n"), Some(1_000_000_000));
        assert_eq!(route("max_body_size = \"1024\"\n"), Some(1024));
        assert_eq!(route("max_body_size = \"0\"\n"), Some(0));
    }

    #[test]
    fn bad_max_body_size_is_reported_at_its_value() {
        let e = errors(&route_text("max_body_size = \"10M\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "error: t.toml:4:17: invalid max_body_size \"10M\": unknown unit \"M\""
            ),
            "{e:?}"
        );
        let e = errors(&route_text("max_body_size = 1024\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("error: t.toml:4:17: "), "{e:?}");
    }

    #[test]
    fn sizes_parse_exactly() {
        for (text, bytes) in [
            ("0", 0),
            ("1024", 1024),
            ("1024B", 1024),
            ("1KB", 1000),
            ("1kb", 1000),
            ("3 MB", 3_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("1KiB", 1024),
            ("10MiB", 10 << 20),
            ("10mib", 10 << 20),
            ("4GiB", 4 << 30),
            ("2TiB", 2 << 40),
            (" 7 KiB ", 7 * 1024),
            ("16777215TiB", 16_777_215 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
        for text in [
            "",
            "MiB",
            "-1",
            "1.5MiB",
            "10M",
            "10 K",
            "1 KiBs",
            "1e3",
            "16777216TiB",
            "99999999999999999999",
        ] {
            assert!(parse_size(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn shares_parse_as_fractions() {
        for (text, share) in [
            ("0%", 0.0),
            ("20%", 0.2),
            ("50%", 0.5),
            ("100%", 1.0),
            ("12.5%", 0.125),
        ] {
            assert_eq!(parse_share(text), Ok(share), "{text:?}");
        }
        for text in [
            "", "%", "50", "0.5", "-5%", "101%", "1e2%", "inf%", "NaN%", "5 0%",
        ] {
            assert!(parse_share(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn upstream_hardening_defaults() {
        let u = one_upstream("");
        assert_eq!(u.passive_health, None);
        assert_eq!(u.retry_budget, 0.2);
        assert_eq!(u.hash_on, HashOn::ClientAddress);
        assert!(warnings(&upstream_text("")).is_empty());
    }

    #[test]
    fn passive_health_is_read_with_defaults_for_missing_keys() {
        let u = one_upstream("[upstreams.u.passive_health]\n");
        assert_eq!(u.passive_health, Some(PassiveHealth::default()));
        let defaults = PassiveHealth::default();
        assert_eq!(defaults.consecutive_failures, 5);
        assert_eq!(defaults.ejection_time, Duration::from_secs(30));
        assert_eq!(defaults.max_ejected, 0.5);
        let u = one_upstream(
            "[upstreams.u.passive_health]\nconsecutive_failures = 3\nejection_time = \"10s\"\nmax_ejected = \"25%\"\n",
        );
        assert_eq!(
            u.passive_health,
            Some(PassiveHealth {
                consecutive_failures: 3,
                ejection_time: Duration::from_secs(10),
                max_ejected: 0.25,
            })
        );
    }

    #[test]
    fn bad_passive_health_is_reported_at_its_values() {
        let e = errors(&upstream_text(
            "[upstreams.u.passive_health]\nconsecutive_failures = 0\nejection_time = \"0s\"\nmax_ejected = \"150%\"\n",
        ));
        assert_eq!(
            e,
            [
                "error: t.toml:4:24: consecutive_failures must be between 1 and 1000",
                "error: t.toml:5:17: ejection_time must be greater than zero",
                "error: t.toml:6:15: invalid max_ejected \"150%\": expected a percentage between \"0%\" and \"100%\", e.g. \"20%\"",
            ]
        );
        let e = errors(&upstream_text(
            "[upstreams.u.passive_health]\nfailures = 3\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("error: t.toml:4:1: unknown field `failures`"),
            "{e:?}"
        );
    }

    #[test]
    fn retry_budget_is_a_share() {
        assert_eq!(one_upstream("retry_budget = \"5%\"\n").retry_budget, 0.05);
        let e = errors(&upstream_text("retry_budget = \"0.2\"\n"));
        assert_eq!(
            e,
            ["error: t.toml:3:16: invalid retry_budget \"0.2\": expected a percentage between \"0%\" and \"100%\", e.g. \"20%\""]
        );
    }

    #[test]
    fn hash_on_takes_the_client_address_a_header_or_a_cookie() {
        let hash_on =
            |value: &str| one_upstream(&format!("balance = \"hash\"\nhash_on = {value}\n")).hash_on;
        assert_eq!(hash_on("\"client_address\""), HashOn::ClientAddress);
        assert_eq!(
            hash_on("{ header = \"X-User\" }"),
            HashOn::Header(HeaderName::from_static("x-user"))
        );
        assert_eq!(
            hash_on("{ cookie = \"session\" }"),
            HashOn::Cookie("session".to_string())
        );
        assert!(warnings(&upstream_text(
            "balance = \"hash\"\nhash_on = { cookie = \"s\" }\n"
        ))
        .is_empty());
    }

    #[test]
    fn bad_hash_on_is_reported_at_its_value() {
        for value in [
            "\"client_ip\"",
            "{ header = \"x user\" }",
            "{ cookie = \"a;b\" }",
            "{ header = \"x\", cookie = \"y\" }",
            "{ query = \"x\" }",
            "{}",
            "3",
        ] {
            let e = errors(&upstream_text(&format!(
                "balance = \"hash\"\nhash_on = {value}\n"
            )));
            assert_eq!(e.len(), 1, "{value}: {e:?}");
            assert!(e[0].starts_with("error: t.toml:4:11: "), "{value}: {e:?}");
        }
    }

    #[test]
    fn hash_on_without_hash_balance_is_a_warning() {
        let text = upstream_text("hash_on = { header = \"x-user\" }\n");
        assert_eq!(
            warnings(&text),
            ["warning: t.toml:3:11: upstream \"u\": hash_on has no effect unless balance = \"hash\""]
        );
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
