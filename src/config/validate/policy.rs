//! A route's traffic policy (`allow`, `deny`, `rate_limit`, `cors`), its weighted
//! `backends`, and `[gateway.rate_limit_store]`.

use super::*;

/// The most a bucket may hold or refill per period: beyond it a limit limits nothing.
const MAX_REQUESTS: i64 = 1_000_000_000;

impl Checker<'_> {
    pub(super) fn policy(
        &mut self,
        allow: Option<Vec<raw::Text>>,
        deny: Option<Vec<raw::Text>>,
        rate_limit: Option<Spanned<raw::RateLimit>>,
        cors: Option<Spanned<raw::Cors>>,
    ) -> Option<Arc<RoutePolicy>> {
        let mut nets = |list: Option<Vec<raw::Text>>, what: &str| {
            list.unwrap_or_default()
                .iter()
                .filter_map(|text| self.cidr(text, what))
                .collect::<Vec<_>>()
        };
        let allow = nets(allow, "allow");
        let deny = nets(deny, "deny");
        let rate_limit = rate_limit.and_then(|r| self.rate_limit(r));
        let cors = cors.and_then(|c| self.cors(c));
        let policy = RoutePolicy {
            allow,
            deny,
            rate_limit,
            cors,
        };
        (!policy.is_empty()).then(|| Arc::new(policy))
    }

    /// One `allow`/`deny` entry: a CIDR, or a single address as its own network.
    fn cidr(&mut self, text: &raw::Text, what: &str) -> Option<ipnet::IpNet> {
        let value = text.get_ref().trim();
        let net = value.parse::<ipnet::IpNet>().ok().or_else(|| {
            value
                .parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        });
        match net {
            Some(net) => Some(net.trunc()),
            None => {
                self.error(
                    &text.span(),
                    format!(
                        "invalid {what} entry {value:?}: expected a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.1\""
                    ),
                );
                None
            }
        }
    }

    fn count(&mut self, value: &Spanned<i64>, what: &str) -> Option<u64> {
        if (1..=MAX_REQUESTS).contains(value.get_ref()) {
            Some(*value.get_ref() as u64)
        } else {
            self.error(
                &value.span(),
                format!("{what} must be between 1 and {MAX_REQUESTS}"),
            );
            None
        }
    }

    fn rate_limit(&mut self, raw: Spanned<raw::RateLimit>) -> Option<RateLimit> {
        let span = raw.span();
        let raw = raw.into_inner();
        let requests = self.count(&raw.requests, "rate_limit requests");
        let per = self.positive_duration(raw.per.as_ref(), Duration::from_secs(1), "per");
        let burst = match &raw.burst {
            Some(b) => self.count(b, "rate_limit burst"),
            None => requests,
        };
        let key = match raw.key {
            None => Some(RateLimitKey::Client),
            Some(key) => {
                let key_span = key.span();
                match key.into_inner() {
                    toml::Value::String(s) if s == "client" => Some(RateLimitKey::Client),
                    toml::Value::String(s) if s == "route" => Some(RateLimitKey::Route),
                    toml::Value::Table(t) if t.len() == 1 && t.contains_key("header") => {
                        match t.get("header").and_then(|h| h.as_str()) {
                            Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                                Ok(name) => Some(RateLimitKey::Header(name)),
                                Err(_) => {
                                    self.error(&key_span, format!("invalid header name {h:?}"));
                                    None
                                }
                            },
                            None => {
                                self.error(&key_span, "rate_limit key header must be a string");
                                None
                            }
                        }
                    }
                    _ => {
                        self.error(
                            &key_span,
                            "invalid rate_limit key: expected \"client\", \"route\" or { header = \"NAME\" }",
                        );
                        None
                    }
                }
            }
        };
        let scope = self.one_of(
            raw.scope.as_ref(),
            "rate_limit scope",
            &[
                ("local", RateLimitScope::Local),
                ("global", RateLimitScope::Global),
            ],
            RateLimitScope::Local,
        );
        if scope == RateLimitScope::Global && !self.has_rate_limit_store {
            let at = raw.scope.as_ref().map_or(span, |s| s.span());
            self.error(
                &at,
                "scope = \"global\" needs [gateway.rate_limit_store] (where the shared buckets live)",
            );
        }
        Some(RateLimit {
            requests: requests?,
            per,
            burst: burst?,
            key: key?,
            scope,
        })
    }

    fn cors(&mut self, raw: Spanned<raw::Cors>) -> Option<Cors> {
        let raw = raw.into_inner();
        let origins_span = raw.allow_origins.span();
        let allow_origins: Vec<OriginMatch> = raw
            .allow_origins
            .into_inner()
            .iter()
            .filter_map(|o| self.origin(o))
            .collect();
        let allow_credentials = raw.allow_credentials.as_ref().is_some_and(|c| *c.get_ref());
        if allow_credentials && allow_origins.contains(&OriginMatch::Any) {
            self.error(
                &origins_span,
                "cors allow_origins \"*\" cannot be used with allow_credentials = true (browsers refuse it; list the origins)",
            );
            return None;
        }
        let allow_methods = raw
            .allow_methods
            .unwrap_or_default()
            .iter()
            .filter_map(
                |m| match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        self.error(&m.span(), format!("invalid method {:?}", m.get_ref()));
                        None
                    }
                },
            )
            .collect();
        let mut names = |list: Option<Vec<raw::Text>>| {
            list.unwrap_or_default()
                .iter()
                .filter_map(|h| self.header_name(h))
                .collect::<Vec<_>>()
        };
        let allow_headers = names(raw.allow_headers);
        let expose_headers = names(raw.expose_headers);
        let max_age = raw
            .max_age
            .as_ref()
            .map(|m| self.duration(Some(m), Duration::ZERO));
        Some(Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
        })
    }

    fn origin(&mut self, text: &raw::Text) -> Option<OriginMatch> {
        let value = text.get_ref().trim().to_ascii_lowercase();
        if value == "*" {
            return Some(OriginMatch::Any);
        }
        let parsed = value.split_once("://").filter(|(scheme, rest)| {
            matches!(*scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
        });
        match parsed {
            Some((scheme, rest)) => match rest.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                    Some(OriginMatch::Subdomains {
                        scheme: format!("{scheme}://"),
                        suffix: suffix.to_string(),
                    })
                }
                Some(_) => None,
                None if !rest.contains('*') => Some(OriginMatch::Exact(value.clone())),
                None => None,
            },
            None => None,
        }
        .or_else(|| {
            self.error(
                &text.span(),
                format!(
                    "invalid cors origin {:?}: expected \"*\", \"https://app.example.com\" or \"https://*.example.com\"",
                    text.get_ref()
                ),
            );
            None
        })
    }

    pub(super) fn backends(
        &mut self,
        name: &str,
        raw: Spanned<Vec<Spanned<raw::Backend>>>,
        upstreams: &HashSet<&str>,
    ) -> Option<Action> {
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.is_empty() {
            self.error(&span, format!("route {name:?} has empty backends"));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for backend in raw {
            let backend = backend.into_inner();
            if !upstreams.contains(backend.upstream.get_ref().as_str()) {
                self.error(
                    &backend.upstream.span(),
                    format!(
                        "route {name:?} names unknown upstream {:?}",
                        backend.upstream.get_ref()
                    ),
                );
                ok = false;
                continue;
            }
            let weight = match backend.weight {
                None => 1,
                Some(w) if (0..=1_000_000).contains(w.get_ref()) => *w.get_ref() as u32,
                Some(w) => {
                    self.error(&w.span(), "backend weight must be between 0 and 1000000");
                    ok = false;
                    continue;
                }
            };
            out.push(WeightedUpstream {
                upstream: Some(Name::from(backend.upstream.into_inner())),
                weight,
            });
        }
        if ok && out.iter().all(|b| b.weight == 0) {
            self.error(&span, format!("route {name:?}: every backend has weight 0"));
            return None;
        }
        ok.then_some(Action::Weighted(out))
    }

    pub(super) fn compress(&mut self, raw: Spanned<toml::Value>) -> Option<Compress> {
        let span = raw.span();
        let all = vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip];
        let expected = "invalid compress: expected true, false or { algorithms = [\"zstd\", \"br\", \"gzip\"], min_size = \"1KiB\" }";
        match raw.into_inner() {
            toml::Value::Boolean(false) => None,
            toml::Value::Boolean(true) => Some(Compress {
                algorithms: all,
                min_size: Compress::DEFAULT_MIN_SIZE,
            }),
            toml::Value::Table(table) => {
                let mut out = Compress {
                    algorithms: all,
                    min_size: Compress::DEFAULT_MIN_SIZE,
                };
                for (key, value) in table {
                    match (key.as_str(), value) {
                        ("algorithms", toml::Value::Array(items)) => {
                            let mut algorithms = Vec::new();
                            for item in items {
                                match item.as_str() {
                                    Some("zstd") => algorithms.push(Encoding::Zstd),
                                    Some("br") => algorithms.push(Encoding::Br),
                                    Some("gzip") => algorithms.push(Encoding::Gzip),
                                    _ => {
                                        self.error(&span, format!("unknown compress algorithm {item}: expected \"zstd\", \"br\" or \"gzip\""));
                                        return None;
                                    }
                                }
                            }
                            if algorithms.is_empty() {
                                self.error(&span, "compress algorithms must not be empty");
                                return None;
                            }
                            out.algorithms = algorithms;
                        }
                        ("min_size", toml::Value::String(size)) => match parse_size(&size) {
                            Ok(bytes) => out.min_size = bytes,
                            Err(problem) => {
                                self.error(
                                    &span,
                                    format!("invalid compress min_size {size:?}: {problem}"),
                                );
                                return None;
                            }
                        },
                        _ => {
                            self.error(&span, expected);
                            return None;
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.error(&span, expected);
                None
            }
        }
    }

    pub(super) fn affinity(&mut self, raw: raw::Affinity) -> Option<Affinity> {
        let max_age =
            self.positive_duration(raw.max_age.as_ref(), Duration::from_secs(3600), "max_age");
        let name = raw.cookie.get_ref();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            self.error(
                &raw.cookie.span(),
                format!("invalid affinity cookie name {name:?}"),
            );
            return None;
        }
        Some(Affinity {
            cookie: name.clone(),
            max_age,
        })
    }

    pub(super) fn rate_limit_store(&mut self, raw: raw::RateLimitStore) -> Option<RateLimitStore> {
        let on_error = self.one_of(
            raw.on_error.as_ref(),
            "on_error",
            &[("allow", OnStoreError::Allow), ("deny", OnStoreError::Deny)],
            OnStoreError::Allow,
        );
        let url = raw.url.get_ref().trim();
        if !(url.starts_with("redis://") || url.starts_with("rediss://"))
            || url
                .split_once("://")
                .is_none_or(|(_, rest)| rest.is_empty())
        {
            self.error(
                &raw.url.span(),
                "invalid rate_limit_store url: expected redis://HOST:PORT/DB or rediss://...",
            );
            return None;
        }
        let timeout = self.positive_duration(
            raw.timeout.as_ref(),
            RateLimitStore::DEFAULT_TIMEOUT,
            "timeout",
        );
        Some(RateLimitStore {
            url: url.to_string(),
            on_error,
            timeout,
        })
    }

    /// `mirror = { upstream, percent }`: a known plain-HTTP upstream and a share of 0-100.
    pub(super) fn mirror(
        &mut self,
        route: &str,
        raw: Spanned<raw::Mirror>,
        upstreams: &HashSet<&str>,
    ) -> Option<Mirror> {
        let raw = raw.into_inner();
        let name = raw.upstream.get_ref().as_str();
        if !upstreams.contains(name) {
            self.error(
                &raw.upstream.span(),
                format!("route {route:?} mirrors to unknown upstream {name:?}"),
            );
            return None;
        }
        if self.tls_upstreams.contains(name) {
            self.error(
                &raw.upstream.span(),
                format!("route {route:?} mirrors to upstream {name:?}, which uses tls: copies are sent over plain HTTP only"),
            );
            return None;
        }
        let percent = match &raw.percent {
            None => 100.0,
            Some(value) => {
                let number = match value.get_ref() {
                    toml::Value::Integer(n) => Some(*n as f64),
                    toml::Value::Float(f) => Some(*f),
                    _ => None,
                };
                match number.filter(|p| (0.0..=100.0).contains(p)) {
                    Some(p) => p,
                    None => {
                        self.error(
                            &value.span(),
                            "mirror percent must be a number from 0 to 100",
                        );
                        return None;
                    }
                }
            }
        };
        Some(Mirror {
            upstream: Name::from(raw.upstream.into_inner()),
            percent,
        })
    }
}
