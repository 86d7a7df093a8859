//! ingress-nginx annotations (prefix `nginx.ingress.kubernetes.io/`, or `edgegate.dev/`)
//! -> the traffic policy and limits of every route of that Ingress, the settings of the
//! upstreams it uses (timeouts, TLS, HTTP/2, cookie affinity), the redirect to https and
//! a canary split. An annotation under either prefix that edgegate does not serve is
//! reported as a problem, never ignored silently; a bad value is reported and makes the
//! Ingress's routes answer 500 (a broken allow list must not open the route).

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::config::model::{
    Affinity, Compress, Cors, Encoding, OriginMatch, RateLimit, RateLimitKey, RateLimitScope,
    RoutePolicy, Upstream, UpstreamTls,
};

const PREFIXES: [&str; 2] = ["nginx.ingress.kubernetes.io/", "edgegate.dev/"];

/// What an Ingress's annotations ask of each of its routes.
#[derive(Debug, Default, PartialEq)]
pub struct IngressPolicy {
    pub policy: Option<RoutePolicy>,
    /// `proxy-body-size` in bytes (`0`, or none given: no limit).
    pub max_body_size: Option<u64>,
    /// `enable-compression: "true"`: `compress = true`.
    pub compress: Option<Compress>,
    /// Settings of the upstreams the Ingress's routes use.
    pub upstream: UpstreamTuning,
    pub ssl_redirect: SslRedirect,
    /// `canary: "true"`: the Ingress splits traffic with the main Ingress of its host
    /// and path instead of serving routes of its own.
    pub canary: Option<Canary>,
    /// `canary: "true"`, readable or not: such an Ingress never serves routes of its own
    /// (a broken canary must not shadow its main Ingress with 500s).
    pub is_canary: bool,
    /// Values that could not be read: the routes answer 500.
    pub invalid: Vec<String>,
    /// Annotations under our prefixes that are not served.
    pub unserved: Vec<String>,
}

/// What an Ingress asks of the upstreams its routes use; the default leaves the shared
/// upstream of each Service port as it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UpstreamTuning {
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// `backend-protocol: HTTPS` or `GRPCS` (unverified, as ingress-nginx's default).
    pub tls: bool,
    /// `backend-protocol: GRPC` or `GRPCS`.
    pub http2: bool,
    pub affinity: Option<Affinity>,
}

impl UpstreamTuning {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the Ingress's settings to a copy of a Service port's upstream.
    pub fn apply(&self, upstream: &mut Upstream) {
        if let Some(t) = self.connect_timeout {
            upstream.connect_timeout = t;
        }
        if let Some(t) = self.read_timeout {
            upstream.read_timeout = t;
        }
        if let Some(t) = self.write_timeout {
            upstream.write_timeout = t;
        }
        if self.tls {
            upstream.tls = Some(UpstreamTls {
                ca: None,
                sni: None,
                verify: false,
            });
        }
        upstream.http2 |= self.http2;
        if self.affinity.is_some() {
            upstream.affinity = self.affinity.clone();
        }
    }
}

/// `ssl-redirect` / `force-ssl-redirect`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SslRedirect {
    /// Neither asked for (edgegate does not redirect unless told to).
    #[default]
    Off,
    /// `ssl-redirect: "true"`: when the Ingress has a `tls` section.
    WithTls,
    /// `force-ssl-redirect: "true"`.
    Always,
}

/// A canary Ingress's rules for taking requests from the main Ingress.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// `canary-weight` out of `canary-weight-total` (default 100) of the other requests.
    pub weight: u32,
    pub total: u32,
    /// `canary-by-header`, and `canary-by-header-value` (none: the values `always` and
    /// `never`).
    pub by_header: Option<(HeaderName, Option<String>)>,
    /// `canary-by-cookie`: the values `always` and `never`.
    pub by_cookie: Option<String>,
}

/// ingress-nginx's cookie name for `affinity: cookie`.
const DEFAULT_AFFINITY_COOKIE: &str = "INGRESSCOOKIE";
/// The cookie's lifetime when `session-cookie-max-age` is not given (ingress-nginx's
/// `session-cookie-expires` default of two days).
const DEFAULT_AFFINITY_MAX_AGE: Duration = Duration::from_secs(48 * 3600);

/// ingress-nginx's defaults for `enable-cors`.
const DEFAULT_CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_CORS_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const DEFAULT_CORS_MAX_AGE: u64 = 1_728_000;

pub fn read(annotations: Option<&BTreeMap<String, String>>) -> IngressPolicy {
    let mut out = IngressPolicy::default();
    let Some(annotations) = annotations else {
        return out;
    };
    let mut ours: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, value) in annotations {
        if let Some(name) = PREFIXES.iter().find_map(|p| key.strip_prefix(p)) {
            ours.insert(name, value.trim());
        }
    }
    if ours.is_empty() {
        return out;
    }
    let mut policy = RoutePolicy::default();
    let mut bad = |name: &str, value: &str, why: &str| {
        out.invalid
            .push(format!("annotation {name}: invalid value {value:?}: {why}"));
    };
    for (&name, &value) in &ours {
        match name {
            "whitelist-source-range" | "denylist-source-range" => {
                let mut nets = Vec::new();
                for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    match entry
                        .parse::<ipnet::IpNet>()
                        .ok()
                        .or_else(|| entry.parse::<std::net::IpAddr>().ok().map(Into::into))
                    {
                        Some(net) => nets.push(net.trunc()),
                        None => bad(name, entry, "expected CIDRs separated by commas"),
                    }
                }
                if name == "whitelist-source-range" {
                    policy.allow = nets;
                } else {
                    policy.deny = nets;
                }
            }
            "limit-rps" | "limit-rpm" => {
                let per = if name == "limit-rps" { 1 } else { 60 };
                if name == "limit-rpm" && ours.contains_key("limit-rps") {
                    out.unserved.push(
                        "annotation limit-rpm beside limit-rps: only limit-rps is applied"
                            .to_string(),
                    );
                    continue;
                }
                let multiplier = match ours.get("limit-burst-multiplier") {
                    None => Some(5),
                    Some(m) => m.parse::<u64>().ok().filter(|m| (1..=1000).contains(m)),
                };
                match (
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n)),
                    multiplier,
                ) {
                    (Some(requests), Some(multiplier)) => {
                        policy.rate_limit = Some(RateLimit {
                            requests,
                            per: Duration::from_secs(per),
                            burst: requests * multiplier,
                            key: RateLimitKey::Client,
                            scope: RateLimitScope::Local,
                        })
                    }
                    (None, _) => bad(name, value, "expected a whole number from 1"),
                    (_, None) => bad(
                        "limit-burst-multiplier",
                        ours["limit-burst-multiplier"],
                        "expected a whole number from 1 to 1000",
                    ),
                }
            }
            "limit-burst-multiplier" => {}
            "enable-cors" => {
                if value == "true" {
                    match cors(&ours) {
                        Ok(cors) => policy.cors = Some(cors),
                        Err((name, value, why)) => bad(name, value, why),
                    }
                } else if value != "false" {
                    bad(name, value, "expected \"true\" or \"false\"");
                }
            }
            n if n.starts_with("cors-") => {
                if ours.get("enable-cors") != Some(&"true") {
                    out.unserved.push(format!(
                        "annotation {n} without enable-cors: \"true\" has no effect"
                    ));
                }
            }
            "enable-compression" => match value {
                "true" => {
                    out.compress = Some(Compress {
                        algorithms: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
                        min_size: Compress::DEFAULT_MIN_SIZE,
                    })
                }
                "false" => {}
                _ => bad(name, value, "expected \"true\" or \"false\""),
            },
            "proxy-body-size" => match nginx_size(value) {
                Some(0) => out.max_body_size = None,
                Some(size) => out.max_body_size = Some(size),
                None => bad(name, value, "expected a size like 8m, 512k or 0"),
            },
            "ssl-redirect" | "force-ssl-redirect" => match value {
                "true" if name == "force-ssl-redirect" => out.ssl_redirect = SslRedirect::Always,
                "true" => {
                    if out.ssl_redirect != SslRedirect::Always {
                        out.ssl_redirect = SslRedirect::WithTls
                    }
                }
                "false" => {}
                _ => bad(name, value, "expected \"true\" or \"false\""),
            },
            "backend-protocol" => match value.to_ascii_uppercase().as_str() {
                "HTTP" => {}
                "HTTPS" => out.upstream.tls = true,
                "GRPC" => out.upstream.http2 = true,
                "GRPCS" => (out.upstream.tls, out.upstream.http2) = (true, true),
                _ => bad(
                    name,
                    value,
                    "expected HTTP, HTTPS, GRPC or GRPCS (AUTO_HTTP, AJP and FCGI are not served)",
                ),
            },
            "proxy-connect-timeout" | "proxy-read-timeout" | "proxy-send-timeout" => {
                match seconds(value) {
                    Some(t) => match name {
                        "proxy-connect-timeout" => out.upstream.connect_timeout = Some(t),
                        "proxy-read-timeout" => out.upstream.read_timeout = Some(t),
                        _ => out.upstream.write_timeout = Some(t),
                    },
                    None => bad(name, value, "expected whole seconds from 1, like 30 or 30s"),
                }
            }
            "affinity" => match value {
                "cookie" => {
                    let cookie = ours
                        .get("session-cookie-name")
                        .copied()
                        .unwrap_or(DEFAULT_AFFINITY_COOKIE);
                    if cookie.is_empty() || cookie.contains([';', '=', ' ', ',']) {
                        bad("session-cookie-name", cookie, "expected a cookie name");
                        continue;
                    }
                    let max_age = match ours.get("session-cookie-max-age") {
                        None => Some(DEFAULT_AFFINITY_MAX_AGE),
                        Some(v) => seconds(v),
                    };
                    match max_age {
                        Some(max_age) => {
                            out.upstream.affinity = Some(Affinity {
                                cookie: cookie.to_string(),
                                max_age,
                            })
                        }
                        None => bad(
                            "session-cookie-max-age",
                            ours["session-cookie-max-age"],
                            "expected whole seconds from 1",
                        ),
                    }
                }
                _ => bad(
                    name,
                    value,
                    "expected \"cookie\" (the only affinity served)",
                ),
            },
            "session-cookie-name" | "session-cookie-max-age" => {
                if ours.get("affinity") != Some(&"cookie") {
                    out.unserved.push(format!(
                        "annotation {name} without affinity: cookie has no effect"
                    ));
                }
            }
            "canary" => match value {
                "true" => {
                    out.is_canary = true;
                    match canary(&ours) {
                        Ok(canary) => out.canary = Some(canary),
                        Err((name, value, why)) => bad(name, value, why),
                    }
                }
                "false" => {}
                _ => bad(name, value, "expected \"true\" or \"false\""),
            },
            "canary-weight"
            | "canary-weight-total"
            | "canary-by-header"
            | "canary-by-header-value"
            | "canary-by-cookie" => {
                if ours.get("canary") != Some(&"true") {
                    out.unserved.push(format!(
                        "annotation {name} without canary: \"true\" has no effect"
                    ));
                }
            }
            // Read with the Ingress's authentication (see `ingress.rs`).
            "auth-url"
            | "auth-response-headers"
            | "auth-signin"
            | "auth-type"
            | "auth-secret"
            | "auth-secret-type"
            | "auth-realm" => {}
            other => out
                .unserved
                .push(format!("annotation {other} is not served")),
        }
    }
    out.policy = (!policy.is_empty()).then_some(policy);
    out
}

type Problem<'a> = (&'a str, &'a str, &'static str);

/// nginx timeouts: whole seconds, with or without an `s`.
fn seconds(text: &str) -> Option<Duration> {
    let digits = text.strip_suffix('s').unwrap_or(text);
    digits
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=86_400 * 365).contains(s))
        .map(Duration::from_secs)
}

/// `canary: "true"` with its `canary-*` family.
fn canary<'a>(ours: &BTreeMap<&'a str, &'a str>) -> Result<Canary, Problem<'a>> {
    let total = match ours.get("canary-weight-total") {
        None => 100,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|t| (1..=1_000_000).contains(t))
            .ok_or(("canary-weight-total", *v, "expected a whole number from 1"))?,
    };
    let weight = match ours.get("canary-weight") {
        None => 0,
        Some(v) => v.parse::<u32>().ok().filter(|w| *w <= total).ok_or((
            "canary-weight",
            *v,
            "expected a whole number from 0 to canary-weight-total",
        ))?,
    };
    let by_header = match ours.get("canary-by-header") {
        None => None,
        Some(h) => {
            let name = HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| ("canary-by-header", *h, "expected a header name"))?;
            Some((
                name,
                ours.get("canary-by-header-value").map(|v| v.to_string()),
            ))
        }
    };
    if by_header.is_none() {
        if let Some(v) = ours.get("canary-by-header-value") {
            return Err((
                "canary-by-header-value",
                v,
                "needs canary-by-header (the header it is the value of)",
            ));
        }
    }
    let by_cookie = match ours.get("canary-by-cookie") {
        None => None,
        Some(c) if c.is_empty() || c.contains([';', '=', ' ', ',']) => {
            return Err(("canary-by-cookie", c, "expected a cookie name"))
        }
        Some(c) => Some(c.to_string()),
    };
    Ok(Canary {
        weight,
        total,
        by_header,
        by_cookie,
    })
}

/// `enable-cors` with the `cors-*` family, at ingress-nginx's defaults. Its default origin
/// is `*`, with which credentials are never sent (browsers refuse the pair), so
/// `cors-allow-credentials` applies only to listed origins.
fn cors<'a>(ours: &BTreeMap<&'a str, &'a str>) -> Result<Cors, Problem<'a>> {
    let get = |name: &str, default: &'a str| ours.get(name).copied().unwrap_or(default);
    let list = |text: &'a str| text.split(',').map(str::trim).filter(|s| !s.is_empty());
    let origins_text = get("cors-allow-origin", "*");
    let mut allow_origins = Vec::new();
    for origin in list(origins_text) {
        allow_origins.push(origin_match(origin).ok_or((
            "cors-allow-origin",
            origin,
            "expected *, https://host or https://*.domain",
        ))?);
    }
    let mut allow_methods = Vec::new();
    for m in list(get("cors-allow-methods", DEFAULT_CORS_METHODS)) {
        allow_methods.push(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| ("cors-allow-methods", m, "expected HTTP methods"))?,
        );
    }
    let names = |name: &'a str, text: &'a str| -> Result<Vec<HeaderName>, Problem<'a>> {
        list(text)
            .map(|h| {
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| (name, h, "expected header names"))
            })
            .collect()
    };
    let allow_headers = names(
        "cors-allow-headers",
        get("cors-allow-headers", DEFAULT_CORS_HEADERS),
    )?;
    let expose_headers = names("cors-expose-headers", get("cors-expose-headers", ""))?;
    let credentials = get("cors-allow-credentials", "true");
    let allow_credentials = match credentials {
        "true" => !allow_origins.contains(&OriginMatch::Any),
        "false" => false,
        v => return Err(("cors-allow-credentials", v, "expected true or false")),
    };
    let max_age = match ours.get("cors-max-age") {
        None => DEFAULT_CORS_MAX_AGE,
        Some(v) => v
            .parse()
            .map_err(|_| ("cors-max-age", *v, "expected whole seconds"))?,
    };
    Ok(Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials,
        max_age: Some(Duration::from_secs(max_age)),
    })
}

fn origin_match(origin: &str) -> Option<OriginMatch> {
    let origin = origin.to_ascii_lowercase();
    if origin == "*" {
        return Some(OriginMatch::Any);
    }
    let (scheme, host) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
        return None;
    }
    match host.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
            Some(OriginMatch::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: suffix.to_string(),
            })
        }
        Some(_) => None,
        None => Some(OriginMatch::Exact(origin.clone())),
    }
}

/// nginx sizes: bytes, or `k`/`m`/`g` (binary, either case).
fn nginx_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_pairs(pairs: &[(&str, &str)]) -> IngressPolicy {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect();
        read(Some(&map))
    }

    #[test]
    fn served_annotations_become_the_routes_policy() {
        let out = read_pairs(&[
            ("limit-rps", "10"),
            ("limit-burst-multiplier", "2"),
            ("whitelist-source-range", "10.0.0.0/8, 192.0.2.1"),
            ("denylist-source-range", "10.9.0.0/16"),
            ("enable-cors", "true"),
            (
                "cors-allow-origin",
                "https://app.example.com, https://*.example.org",
            ),
            ("proxy-body-size", "8m"),
            ("enable-compression", "true"),
        ]);
        assert!(out.invalid.is_empty() && out.unserved.is_empty(), "{out:?}");
        let policy = out.policy.expect("policy");
        let limit = policy.rate_limit.expect("limit");
        assert_eq!((limit.requests, limit.burst), (10, 20));
        assert_eq!(limit.per, Duration::from_secs(1));
        assert_eq!(policy.allow.len(), 2);
        assert_eq!(policy.deny.len(), 1);
        let cors = policy.cors.expect("cors");
        assert!(cors.allow_credentials);
        assert_eq!(cors.allow_origins.len(), 2);
        assert_eq!(
            cors.max_age,
            Some(Duration::from_secs(DEFAULT_CORS_MAX_AGE))
        );
        assert_eq!(out.max_body_size, Some(8 << 20));
        assert_eq!(out.compress.expect("compress").min_size, 1024);
    }

    #[test]
    fn nginx_defaults_for_cors_never_pair_any_origin_with_credentials() {
        let cors = read_pairs(&[("enable-cors", "true")])
            .policy
            .and_then(|p| p.cors)
            .expect("cors");
        assert_eq!(cors.allow_origins, vec![OriginMatch::Any]);
        assert!(!cors.allow_credentials);
        assert_eq!(cors.allow_methods.len(), 6);
    }

    #[test]
    fn unserved_and_invalid_annotations_are_reported() {
        let out = read_pairs(&[
            ("rewrite-target", "/$1"),
            ("whitelist-source-range", "10.0.0.0/33"),
            ("limit-rpm", "many"),
        ]);
        assert_eq!(
            out.unserved,
            vec!["annotation rewrite-target is not served"]
        );
        assert_eq!(out.invalid.len(), 2, "{:?}", out.invalid);
        let other: BTreeMap<String, String> =
            [("kubernetes.io/ingress.class".to_string(), "x".to_string())].into();
        assert_eq!(read(Some(&other)), IngressPolicy::default());
    }

    #[test]
    fn upstream_redirect_and_canary_annotations_are_read() {
        let out = read_pairs(&[
            ("backend-protocol", "grpcs"),
            ("proxy-connect-timeout", "3"),
            ("proxy-read-timeout", "120s"),
            ("proxy-send-timeout", "30"),
            ("affinity", "cookie"),
            ("ssl-redirect", "false"),
            ("force-ssl-redirect", "true"),
            ("canary", "true"),
            ("canary-weight", "30"),
            ("canary-weight-total", "50"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "beta"),
        ]);
        assert!(out.invalid.is_empty() && out.unserved.is_empty(), "{out:?}");
        let u = &out.upstream;
        assert!(u.tls && u.http2);
        assert_eq!(u.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(u.read_timeout, Some(Duration::from_secs(120)));
        assert_eq!(u.write_timeout, Some(Duration::from_secs(30)));
        let affinity = u.affinity.as_ref().expect("affinity");
        assert_eq!(
            (affinity.cookie.as_str(), affinity.max_age),
            ("INGRESSCOOKIE", DEFAULT_AFFINITY_MAX_AGE)
        );
        assert_eq!(out.ssl_redirect, SslRedirect::Always, "force wins");
        let canary = out.canary.expect("canary");
        assert_eq!((canary.weight, canary.total), (30, 50));
        assert_eq!(
            canary.by_header,
            Some((HeaderName::from_static("x-canary"), None))
        );
        assert_eq!(canary.by_cookie.as_deref(), Some("beta"));
        assert_eq!(
            read_pairs(&[("ssl-redirect", "true")]).ssl_redirect,
            SslRedirect::WithTls
        );
    }

    #[test]
    fn bad_upstream_and_canary_values_are_invalid_and_strays_unserved() {
        for pair in [
            ("backend-protocol", "FCGI"),
            ("proxy-read-timeout", "0"),
            ("proxy-connect-timeout", "5m"),
            ("affinity", "balanced"),
            ("force-ssl-redirect", "yes"),
        ] {
            let out = read_pairs(&[pair]);
            assert_eq!(out.invalid.len(), 1, "{pair:?}: {out:?}");
        }
        let out = read_pairs(&[("canary", "true"), ("canary-weight", "101")]);
        assert_eq!(out.invalid.len(), 1, "{out:?}");
        assert!(
            out.canary.is_none() && out.is_canary,
            "a broken canary serves nothing"
        );
        let out = read_pairs(&[("canary-weight", "10"), ("session-cookie-max-age", "60")]);
        assert_eq!(out.unserved.len(), 2, "{out:?}");
        assert!(out.invalid.is_empty() && out.canary.is_none() && out.upstream.is_default());
    }
}
