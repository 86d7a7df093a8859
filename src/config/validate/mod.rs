//! Raw TOML -> validated [`model::Config`], collecting every problem with its location.
//! `edgegate check`, startup and every reload go through [`load`], so they agree.
//!
//! Split by section (`gateway`, `routes`, `upstreams`); the helpers every section uses
//! (durations, sizes, shares, addresses, "one of these strings") live here.

pub(crate) mod auth;
mod gateway;
mod kubernetes;
mod policy;
mod routes;
mod tcp_routes;
#[cfg(test)]
mod tests;
pub(crate) mod tracing;
mod upstreams;

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
        has_rate_limit_store: false,
        tls_upstreams: HashSet::new(),
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

struct Checker<'a> {
    source: &'a SourceFile,
    base_dir: PathBuf,
    diagnostics: Vec<Diagnostic>,
    /// `[gateway.rate_limit_store]` is configured: `scope = "global"` limits may be used.
    has_rate_limit_store: bool,
    /// Upstreams reached over TLS: a route's `mirror` cannot name one.
    tls_upstreams: HashSet<String>,
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

    /// A value that must be one of a few words (`balance`, `min_version`, …): `default`
    /// when absent; when unknown, an error listing the choices, and `default`.
    fn one_of<T: Copy>(
        &mut self,
        value: Option<&raw::Text>,
        what: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = value else { return default };
        if let Some((_, chosen)) = choices.iter().find(|(word, _)| *word == text.get_ref()) {
            return *chosen;
        }
        let words: Vec<String> = choices
            .iter()
            .map(|(word, _)| format!("{word:?}"))
            .collect();
        let expected = match words.as_slice() {
            [only] => only.clone(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
            [] => String::new(),
        };
        self.error(
            &text.span(),
            format!("unknown {what} {:?}: expected {expected}", text.get_ref()),
        );
        default
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
        let auth = self.authenticators(raw.auth);
        let auth_names: HashSet<&str> = auth.iter().map(|a| &*a.name).collect();
        self.has_rate_limit_store = gateway.rate_limit_store.is_some();
        let admin = self.admin(raw.admin, &auth_names);
        let listeners = self.listeners(raw.listeners);
        let upstreams = self.upstreams(raw.upstreams);
        let listener_names: HashSet<&str> = listeners.iter().map(|l| &*l.name).collect();
        let upstream_names: HashSet<&str> = upstreams.iter().map(|u| &*u.name).collect();
        self.tls_upstreams = upstreams
            .iter()
            .filter(|u| u.tls.is_some())
            .map(|u| u.name.to_string())
            .collect();
        let routes = self.routes(raw.routes, &listener_names, &upstream_names, &auth_names);
        let tcp_routes = self.tcp_routes(raw.tcp_routes, &listeners, &upstreams, &routes);
        let kubernetes = raw.kubernetes.map(|raw| {
            kubernetes::validate(raw, &mut |severity, span, message| {
                self.push(severity, &span, message)
            })
        });
        model::Config {
            gateway,
            admin,
            listeners,
            routes,
            tcp_routes,
            upstreams,
            kubernetes,
            auth,
        }
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
