//! Warnings for routes that can never win: another route matches every request they
//! match and ranks at least as high under the precedence of spec section 3.

use std::collections::HashMap;

use super::model::{Config, HostMatch, PathMatch, Route};
use super::source::{Diagnostic, Severity};

pub fn shadowed_routes(config: &Config) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    for (i, later) in config.routes.iter().enumerate() {
        if let Some(winner) = config.routes[..i]
            .iter()
            .find(|earlier| shadows(earlier, later))
        {
            warnings.push(Diagnostic {
                severity: Severity::Warning,
                location: later.location.clone(),
                message: format!(
                    "route {:?} can never match: route {:?} at {} matches every request it matches and takes precedence",
                    &*later.name, &*winner.name, winner.location
                ),
            });
        }
    }
    warnings
}

/// Whether `earlier` (written first) wins every request that `later` matches.
fn shadows(earlier: &Route, later: &Route) -> bool {
    let listeners_covered = match (&earlier.listeners, &later.listeners) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|name| e.contains(name)),
    };
    let hosts_covered = if later.hosts.is_empty() {
        earlier.hosts.is_empty()
    } else {
        later.hosts.iter().all(|h| earlier.hosts.contains(h))
    };
    let methods_covered = match (&earlier.methods, &later.methods) {
        (None, None) => true,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
        _ => false,
    };
    let same_set = |a: &[(http::HeaderName, String)], b: &[(http::HeaderName, String)]| {
        a.len() == b.len() && a.iter().all(|x| b.contains(x))
    };
    let same_query = earlier.query.len() == later.query.len()
        && earlier.query.iter().all(|x| later.query.contains(x));
    listeners_covered
        && hosts_covered
        && earlier.path == later.path
        && methods_covered
        && same_set(&earlier.headers, &later.headers)
        && same_query
}
