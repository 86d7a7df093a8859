//! `[upstreams.NAME]`: members (static or discovered), balancing, health and retries.

use super::*;

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

impl Checker<'_> {
    pub(super) fn upstreams(
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
    pub(super) fn upstream_headers(&self) -> HashMap<String, usize> {
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
    pub(super) fn upstream_keys(&self, found: &mut HashMap<String, usize>) {
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

    pub(super) fn upstream(
        &mut self,
        name: raw::Text,
        raw: Spanned<raw::Upstream>,
    ) -> Option<Upstream> {
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
        let balance = self.one_of(
            raw.balance.as_ref(),
            "balance",
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_requests", Balance::LeastRequests),
                ("hash", Balance::Hash),
            ],
            Balance::RoundRobin,
        );
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
            affinity: raw.affinity.and_then(|a| self.affinity(a.into_inner())),
            send_proxy_protocol: raw.send_proxy_protocol.as_ref().and_then(|text| {
                self.one_of(
                    Some(text),
                    "send_proxy_protocol",
                    &[
                        ("v1", Some(ProxyProtocolVersion::V1)),
                        ("v2", Some(ProxyProtocolVersion::V2)),
                    ],
                    None,
                )
            }),
        })
    }

    pub(super) fn hash_on(&mut self, raw: Spanned<raw::HashOn>) -> HashOn {
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

    pub(super) fn passive_health(&mut self, raw: raw::PassiveHealth) -> PassiveHealth {
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

    pub(super) fn endpoints(&mut self, raw: Spanned<Vec<Spanned<raw::Endpoint>>>) -> Vec<Endpoint> {
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

    pub(super) fn kubernetes(&mut self, raw: Spanned<raw::Kubernetes>) -> KubernetesService {
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
        let api = self.one_of(
            raw.api.as_ref(),
            "api",
            &[
                ("endpointslices", DiscoveryApi::EndpointSlices),
                ("endpoints", DiscoveryApi::Endpoints),
            ],
            DiscoveryApi::EndpointSlices,
        );
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

    pub(super) fn health_check(&mut self, raw: raw::HealthCheck) -> HealthCheck {
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
}
