//! ingress-nginx annotations (prefix `nginx.ingress.kubernetes.io/`, or `edgegate.dev/`)
//! -> the traffic policy and limits of every route of that Ingress. An annotation under
//! either prefix that edgegate does not serve is reported as a problem, never ignored
//! silently; a bad value is reported and makes the Ingress's routes answer 500 (a
//! broken allow list must not open the route).

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::config::model::{
    Compress, Cors, Encoding, OriginMatch, RateLimit, RateLimitKey, RateLimitScope, RoutePolicy,
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
    /// Values that could not be read: the routes answer 500.
    pub invalid: Vec<String>,
    /// Annotations under our prefixes that are not served.
    pub unserved: Vec<String>,
}

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
}
