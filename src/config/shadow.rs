//! Warnings for routes that can never win: another route matches every request they
//! match and ranks at least as high under the routing precedence (host, path, method, headers, query).

use std::collections::HashMap;

use super::model::{Config, HostMatch, PathMatch, Route};
use super::source::{Diagnostic, Severity};

// A compiled regex has an internal cache, but `PathRegex` hashes and compares by its
// pattern text, which never changes: the key is immutable where it matters.
#[allow(clippy::mutable_key_type)]
pub fn shadowed_routes(config: &Config) -> Vec<Diagnostic> {
    // A route can only be shadowed by one with the same path matcher that also has its
    // first host (or, like it, no host): index by that, so 10,000 routes stay cheap.
    let mut by_key: HashMap<(&PathMatch, Option<&HostMatch>), Vec<usize>> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        if route.hosts.is_empty() {
            by_key.entry((&route.path, None)).or_default().push(i);
        }
        for host in &route.hosts {
            by_key.entry((&route.path, Some(host))).or_default().push(i);
        }
    }
    let mut warnings = Vec::new();
    for (i, later) in config.routes.iter().enumerate() {
        let candidates = by_key
            .get(&(&later.path, later.hosts.first()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let winner = candidates
            .iter()
            .take_while(|&&j| j < i)
            .map(|&j| &config.routes[j])
            .find(|earlier| shadows(earlier, later));
        if let Some(winner) = winner {
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
        && earlier.cookies.len() == later.cookies.len()
        && earlier.cookies.iter().all(|c| later.cookies.contains(c))
        && same_query
}
