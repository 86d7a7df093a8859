//! Layer-4 routing: which `tcp_routes` entry takes a connection. On a tcp listener that
//! is the listener's route; on a TLS listener it is the route whose `sni` matches the
//! ClientHello's server name, with the HTTP router's host precedence (an exact name beats
//! a wildcard, a longer wildcard beats a shorter, then the route written first).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::model::{HostMatch, Listener, ListenerProtocol, Name, TcpRoute};

#[derive(Debug, Default)]
struct SniTable {
    exact: HashMap<String, Arc<TcpRoute>>,
    /// By suffix with its leading dot, as [`HostMatch::Wildcard`] stores it.
    wildcard: HashMap<String, Arc<TcpRoute>>,
}

/// Every listener's layer-4 routes.
#[derive(Debug, Default)]
pub struct TcpRouter {
    tcp: HashMap<Name, Arc<TcpRoute>>,
    passthrough: HashMap<Name, SniTable>,
}

impl TcpRouter {
    pub fn compile(routes: &[Arc<TcpRoute>], listeners: &[Listener]) -> TcpRouter {
        let mut ordered: Vec<&Arc<TcpRoute>> = routes.iter().collect();
        ordered.sort_by_key(|r| r.order);
        let mut router = TcpRouter::default();
        for listener in listeners {
            let applicable = ordered
                .iter()
                .filter(|r| r.applies_to_listener(&listener.name));
            match listener.protocol {
                ListenerProtocol::Tcp => {
                    if let Some(route) = applicable.clone().find(|r| r.sni.is_empty()) {
                        router.tcp.insert(listener.name.clone(), (*route).clone());
                    }
                }
                ListenerProtocol::Http if listener.tls.is_some() => {
                    let mut table = SniTable::default();
                    for route in applicable.filter(|r| !r.sni.is_empty()) {
                        for host in &route.sni {
                            let slot = match host {
                                HostMatch::Exact(h) => table.exact.entry(h.clone()),
                                HostMatch::Wildcard(s) => table.wildcard.entry(s.clone()),
                            };
                            slot.or_insert_with(|| (*route).clone());
                        }
                    }
                    if !table.exact.is_empty() || !table.wildcard.is_empty() {
                        router.passthrough.insert(listener.name.clone(), table);
                    }
                }
                ListenerProtocol::Http => {}
            }
        }
        router
    }

    /// The route of a tcp listener.
    pub fn tcp_route(&self, listener: &str) -> Option<&Arc<TcpRoute>> {
        self.tcp.get(listener)
    }

    /// Whether a TLS listener relays some names instead of terminating them: only then is
    /// a ClientHello read before the handshake.
    pub fn has_passthrough(&self, listener: &str) -> bool {
        !self.passthrough.is_empty() && self.passthrough.contains_key(listener)
    }

    /// The passthrough route for a server name on a TLS listener; `None` terminates.
    pub fn passthrough_route(&self, listener: &str, sni: &str) -> Option<&Arc<TcpRoute>> {
        let table = self.passthrough.get(listener)?;
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(route) = table.exact.get(&name) {
            return Some(route);
        }
        // Longest suffix first: ".b.example.com" before ".example.com".
        name.match_indices('.')
            .find_map(|(i, _)| table.wildcard.get(&name[i..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ListenerTls;

    fn route(name: &str, order: usize, sni: &[HostMatch]) -> Arc<TcpRoute> {
        Arc::new(TcpRoute {
            name: name.into(),
            order,
            listeners: None,
            sni: sni.to_vec(),
            upstream: "u".into(),
            location: crate::config::source::Location {
                path: Default::default(),
                line: 1,
                column: 1,
            },
        })
    }

    fn tls_listener() -> Listener {
        let mut listener = Listener::new("secure", "127.0.0.1:0".parse().expect("addr"));
        listener.tls = Some(ListenerTls {
            certificates: Vec::new(),
            acme: None,
            min_version: crate::config::model::TlsVersion::V1_2,
            alpn: Vec::new(),
            client_auth: None,
        });
        listener
    }

    #[test]
    fn sni_follows_host_precedence() {
        let exact = HostMatch::Exact("a.example.com".into());
        let short = HostMatch::Wildcard(".example.com".into());
        let long = HostMatch::Wildcard(".b.example.com".into());
        let routes = [
            route("short", 0, &[short]),
            route("long", 1, &[long]),
            route("exact", 2, std::slice::from_ref(&exact)),
            route("later-exact", 3, &[exact]),
        ];
        let router = TcpRouter::compile(&routes, &[tls_listener()]);
        let pick = |sni: &str| {
            router
                .passthrough_route("secure", sni)
                .map(|r| r.name.to_string())
        };
        assert_eq!(pick("A.Example.com.").as_deref(), Some("exact"));
        assert_eq!(pick("x.b.example.com").as_deref(), Some("long"));
        assert_eq!(pick("x.example.com").as_deref(), Some("short"));
        assert_eq!(pick("example.com"), None, "a wildcard needs a label");
        assert_eq!(pick("other.org"), None);
        assert!(router.has_passthrough("secure"));
        assert!(!router.has_passthrough("web"));
    }

    #[test]
    fn a_tcp_listener_takes_its_first_route_without_sni() {
        let mut db = Listener::new("db", "127.0.0.1:0".parse().expect("addr"));
        db.protocol = ListenerProtocol::Tcp;
        let routes = [
            route("passthrough", 0, &[HostMatch::Exact("a".into())]),
            route("first", 1, &[]),
            route("second", 2, &[]),
        ];
        let router = TcpRouter::compile(&routes, &[db]);
        assert_eq!(
            router
                .tcp_route("db")
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("first")
        );
        assert!(!router.has_passthrough("db"));
    }
}
