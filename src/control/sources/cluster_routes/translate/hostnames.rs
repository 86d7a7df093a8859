//! Hostname intersection of a route and a Gateway listener (Gateway API: a listener
//! `hostname` narrows the hosts its routes serve).

use crate::config::model::HostMatch;

/// The hosts a route serves on a listener: `Some(empty)` is any host; `None` means they
/// do not intersect and the route does not attach there.
pub fn on_listener(route_hosts: &[String], listener_host: Option<&str>) -> Option<Vec<String>> {
    let Some(listener) = listener_host.filter(|h| !h.is_empty()) else {
        return Some(route_hosts.to_vec());
    };
    if route_hosts.is_empty() {
        return Some(vec![listener.to_string()]);
    }
    let hosts: Vec<String> = route_hosts
        .iter()
        .filter_map(|h| intersect(h, listener))
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

/// The more specific of two hostnames when one is within the other.
fn intersect(route: &str, listener: &str) -> Option<String> {
    let route = route.to_ascii_lowercase();
    let listener = listener.to_ascii_lowercase();
    if route == listener || within(&route, &listener) {
        Some(route)
    } else if within(&listener, &route) {
        Some(listener)
    } else {
        None
    }
}

/// Whether `host` (a name or a wildcard) is covered by the wildcard `pattern`.
fn within(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            let host = host.strip_prefix('*').unwrap_or(host);
            host.len() > suffix.len() && host.ends_with(suffix)
        }
        None => false,
    }
}

/// A Kubernetes hostname as the router keeps it.
pub fn host_match(host: &str) -> HostMatch {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix('*') {
        Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
        None => HostMatch::Exact(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(route: &[&str], listener: Option<&str>) -> Option<Vec<String>> {
        let route: Vec<String> = route.iter().map(|s| s.to_string()).collect();
        on_listener(&route, listener)
    }

    #[test]
    fn listener_hostname_narrows_route_hostnames() {
        assert_eq!(on(&[], None), Some(vec![]));
        assert_eq!(
            on(&[], Some("a.example.com")),
            Some(vec!["a.example.com".into()])
        );
        assert_eq!(
            on(&["a.example.com", "b.other.org"], Some("*.example.com")),
            Some(vec!["a.example.com".into()])
        );
        // A wildcard route on a named listener serves that name only.
        assert_eq!(
            on(&["*.example.com"], Some("shop.example.com")),
            Some(vec!["shop.example.com".into()])
        );
        assert_eq!(
            on(&["*.a.example.com"], Some("*.example.com")),
            Some(vec!["*.a.example.com".into()])
        );
        assert_eq!(on(&["example.com"], Some("*.example.com")), None);
        assert_eq!(on(&["x.org"], Some("y.org")), None);
    }

    #[test]
    fn wildcards_become_suffixes() {
        assert_eq!(
            host_match("*.Example.com"),
            HostMatch::Wildcard(".example.com".into())
        );
        assert_eq!(host_match("A.b"), HostMatch::Exact("a.b".into()));
    }
}
