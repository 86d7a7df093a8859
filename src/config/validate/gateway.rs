//! `[gateway]`, `[admin]` and `[[listeners]]`, with the TLS files listeners name.

use super::*;

impl Checker<'_> {
    /// Reads a file the config names; a file that cannot be read is an error at the
    /// place that names it (the bytes are then empty, and the config is refused anyway).
    pub(super) fn tls_file(&mut self, text: &raw::Text, what: &str) -> TlsFile {
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
    pub(super) fn ca_file(&mut self, text: &raw::Text, what: &str) -> TlsFile {
        let before = self.diagnostics.len();
        let file = self.tls_file(text, what);
        if self.diagnostics.len() == before {
            if let Err(e) = tls_files::trust_anchors(&file) {
                self.error(&text.span(), format!("{what}: {e}"));
            }
        }
        file
    }

    pub(super) fn gateway(&mut self, raw: raw::GatewaySettings) -> GatewaySettings {
        let defaults = GatewaySettings::default();
        let threads = match raw.threads {
            Some(t) if !(0..=1024).contains(t.get_ref()) => {
                self.error(&t.span(), "threads must be between 0 and 1024");
                0
            }
            Some(t) => *t.get_ref() as usize,
            None => 0,
        };
        let log_format = self.one_of(
            raw.log_format.as_ref(),
            "log_format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        let access_log = match raw.access_log {
            None => AccessLogTarget::Off,
            Some(t) => match t.get_ref().as_str() {
                "off" | "" => AccessLogTarget::Off,
                "stderr" => AccessLogTarget::Stderr,
                "stdout" => AccessLogTarget::Stdout,
                path => AccessLogTarget::File(self.path(path)),
            },
        };
        GatewaySettings {
            threads,
            grace_period: self.duration(raw.grace_period.as_ref(), defaults.grace_period),
            shutdown_delay: self.duration(raw.shutdown_delay.as_ref(), defaults.shutdown_delay),
            log_format,
            access_log,
            rate_limit_store: raw
                .rate_limit_store
                .and_then(|raw| self.rate_limit_store(raw.into_inner())),
            tracing: raw.tracing.and_then(|raw| {
                crate::config::validate::tracing::tracing(raw, &mut |span, message| {
                    self.error(span, message)
                })
            }),
        }
    }

    pub(super) fn admin(&mut self, raw: Option<raw::Admin>, auth: &HashSet<&str>) -> Admin {
        let default = SocketAddr::from(([127, 0, 0, 1], 9901));
        let (address, auth_name) = match raw {
            Some(raw) => (raw.address, raw.auth),
            None => (None, None),
        };
        let address = address
            .and_then(|text| self.socket_addr(&text, "admin address"))
            .unwrap_or(default);
        let auth = auth_name.and_then(|name| self.auth_ref(&name, auth, "[admin]"));
        Admin { address, auth }
    }

    pub(super) fn unique_name<'n>(
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

    pub(super) fn listeners(&mut self, raw: Vec<Spanned<raw::Listener>>) -> Vec<Listener> {
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
            let trusted_proxies: Vec<ipnet::IpNet> = listener
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
            let protocol = self.one_of(
                listener.protocol.as_ref(),
                "protocol",
                &[
                    ("http", ListenerProtocol::Http),
                    ("tcp", ListenerProtocol::Tcp),
                ],
                ListenerProtocol::Http,
            );
            if let (ListenerProtocol::Tcp, Some(_)) = (protocol, &listener.tls) {
                self.error(
                    &listener.name.span(),
                    format!("listener {name:?}: a tcp listener relays bytes and terminates no TLS; for TLS passthrough, give a TLS listener tcp_routes with `sni`"),
                );
            }
            let proxy_protocol = match listener.proxy_protocol {
                Some(p) if *p.get_ref() && trusted_proxies.is_empty() => {
                    self.error(
                        &p.span(),
                        format!("listener {name:?}: proxy_protocol needs trusted_proxies, the peers allowed to send the header (every other connection is closed)"),
                    );
                    true
                }
                Some(p) => *p.get_ref(),
                None => false,
            };
            let name_span = listener.name.span();
            let tls = listener.tls.map(|tls| self.listener_tls(tls, name_span));
            out.push(Listener {
                protocol,
                proxy_protocol,
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
    pub(super) fn trusted_proxy(&mut self, text: &raw::Text) -> Option<ipnet::IpNet> {
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

    /// `listener_span` points at the listener when the problem has no key of its own.
    pub(super) fn listener_tls(
        &mut self,
        raw: raw::ListenerTls,
        listener_span: Range<usize>,
    ) -> ListenerTls {
        let tls_span = listener_span;
        let cert_span = raw.certificates.as_ref().map_or(tls_span, |c| c.span());
        let acme = raw.acme.map(|acme| self.acme(acme));
        let mut names_seen: Vec<(String, PathBuf)> = Vec::new();
        let certificates: Vec<CertificateFiles> = raw
            .certificates
            .map(Spanned::into_inner)
            .unwrap_or_default()
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
        if certificates.is_empty() && acme.is_none() {
            self.error(
                &cert_span,
                "a TLS listener needs at least one certificate (or [listeners.tls.acme])",
            );
        }
        let min_version = self.one_of(
            raw.min_version.as_ref(),
            "min_version",
            &[("1.2", TlsVersion::V1_2), ("1.3", TlsVersion::V1_3)],
            TlsVersion::V1_2,
        );
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
                let required = self.one_of(
                    raw.client_auth.as_ref(),
                    "client_auth",
                    &[("require", true), ("request", false)],
                    true,
                );
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
            acme,
            min_version,
            alpn,
            client_auth,
        }
    }

    fn acme(&mut self, raw: Spanned<raw::Acme>) -> Acme {
        let raw = raw.into_inner();
        let directory = raw.directory.get_ref().trim().to_string();
        if !directory.starts_with("https://") {
            self.error(
                &raw.directory.span(),
                format!("invalid ACME directory {directory:?}: expected an https:// URL"),
            );
        }
        let domains_span = raw.domains.span();
        let domains: Vec<String> = raw
            .domains
            .into_inner()
            .iter()
            .filter_map(|d| match self.host(d)? {
                HostMatch::Exact(name) => Some(name),
                HostMatch::Wildcard(_) => {
                    self.error(
                        &d.span(),
                        "ACME wildcard names need the dns-01 challenge, which edgegate does not answer",
                    );
                    None
                }
            })
            .collect();
        if domains.is_empty() {
            self.error(&domains_span, "acme needs at least one domain");
        }
        let challenge = self.one_of(
            raw.challenge.as_ref(),
            "challenge",
            &[
                ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
                ("http-01", AcmeChallenge::Http01),
            ],
            AcmeChallenge::TlsAlpn01,
        );
        let ca = raw.ca.map(|ca| {
            let file = self.ca_file(&ca, "acme ca");
            file.path
        });
        Acme {
            directory,
            email: raw.email.map(Spanned::into_inner),
            domains,
            challenge,
            storage: self.path(raw.storage.get_ref()),
            ca,
        }
    }

    /// Worth a warning, not a refusal: an expired certificate (clients will complain, but
    /// refusing the whole config would take every other listener down too), and a name
    /// served by two certificates (the first one listed wins).
    pub(super) fn certificate_warnings(
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
}
