//! `[[tcp_routes]]`: whole connections relayed to an upstream. A route without `sni`
//! serves tcp listeners; a route with `sni` serves TLS listeners (passthrough), so a
//! route that could never see a connection is refused rather than left to surprise.

use super::*;
use crate::config::source::Location;

impl Checker<'_> {
    pub(super) fn tcp_routes(
        &mut self,
        raw: Vec<Spanned<raw::TcpRoute>>,
        listeners: &[Listener],
        upstreams: &[Upstream],
        http_routes: &[Arc<Route>],
    ) -> Vec<Arc<TcpRoute>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out: Vec<Arc<TcpRoute>> = Vec::new();
        for (order, route) in raw.into_iter().enumerate() {
            let route = route.into_inner();
            let Some(name) = self.unique_name(&mut seen, &route.name, "tcp route") else {
                continue;
            };
            let name = name.to_string();
            if http_routes.iter().any(|r| *r.name == *name) {
                self.error(
                    &route.name.span(),
                    format!("duplicate route name {name:?}: a [[routes]] entry has it (route names label metrics and logs, so they are unique across both kinds)"),
                );
            }
            let sni: Vec<HostMatch> = route
                .sni
                .iter()
                .flatten()
                .filter_map(|h| self.host(h))
                .collect();
            let passthrough = route.sni.is_some();
            if route.sni.as_ref().is_some_and(|s| s.is_empty()) {
                self.error(
                    &route.name.span(),
                    format!("tcp route {name:?}: `sni` must name at least one host (leave it out for a tcp listener)"),
                );
            }
            let route_listeners = route.listeners.map(|names| {
                names
                    .into_iter()
                    .filter_map(|n| {
                        let Some(listener) = listeners.iter().find(|l| *l.name == **n.get_ref())
                        else {
                            self.error(
                                &n.span(),
                                format!(
                                    "tcp route {name:?} names unknown listener {:?}",
                                    n.get_ref()
                                ),
                            );
                            return None;
                        };
                        match (listener.protocol, passthrough, listener.tls.is_some()) {
                            (ListenerProtocol::Tcp, true, _) => self.error(
                                &n.span(),
                                format!("tcp route {name:?}: listener {:?} is a tcp listener, which reads no SNI; `sni` needs a TLS listener", n.get_ref()),
                            ),
                            (ListenerProtocol::Http, false, _) => self.error(
                                &n.span(),
                                format!("tcp route {name:?}: listener {:?} is an HTTP listener; give the route `sni` names (TLS passthrough on a TLS listener) or name a listener with protocol = \"tcp\"", n.get_ref()),
                            ),
                            (ListenerProtocol::Http, true, false) => self.error(
                                &n.span(),
                                format!("tcp route {name:?}: listener {:?} has no [listeners.tls]; TLS passthrough by SNI needs a TLS listener", n.get_ref()),
                            ),
                            _ => {}
                        }
                        Some(Name::from(n.into_inner()))
                    })
                    .collect::<Vec<_>>()
            });
            if !upstreams
                .iter()
                .any(|u| *u.name == **route.upstream.get_ref())
            {
                self.error(
                    &route.upstream.span(),
                    format!(
                        "tcp route {name:?} names unknown upstream {:?}",
                        route.upstream.get_ref()
                    ),
                );
                continue;
            }
            out.push(Arc::new(TcpRoute {
                name: name.into(),
                order,
                listeners: route_listeners,
                sni,
                upstream: route.upstream.get_ref().as_str().into(),
                location: self.source.location(&route.name.span()),
            }));
        }
        self.tcp_listener_coverage(listeners, &out);
        for route in http_routes {
            for listener in route.listeners.iter().flatten() {
                let is_tcp = listeners
                    .iter()
                    .any(|l| l.name == *listener && l.protocol == ListenerProtocol::Tcp);
                if is_tcp {
                    self.push_at(
                        Severity::Error,
                        Some(route.location.clone()),
                        format!(
                            "route {:?} names listener {:?}, a tcp listener that serves no HTTP; use [[tcp_routes]] for it",
                            &*route.name, &**listener
                        ),
                    );
                }
            }
        }
        self.proxy_protocol_upstreams(upstreams, http_routes);
        out
    }

    /// A tcp listener with no route closes every connection; one with two routes uses only
    /// the first. Both are worth saying, neither is worth refusing a config for.
    fn tcp_listener_coverage(&mut self, listeners: &[Listener], routes: &[Arc<TcpRoute>]) {
        for listener in listeners
            .iter()
            .filter(|l| l.protocol == ListenerProtocol::Tcp)
        {
            let serving: Vec<&Arc<TcpRoute>> = routes
                .iter()
                .filter(|r| r.sni.is_empty() && r.applies_to_listener(&listener.name))
                .collect();
            match serving.as_slice() {
                [] => self.push_at(
                    Severity::Warning,
                    None,
                    format!(
                        "tcp listener {:?} has no tcp route; its connections are closed",
                        &*listener.name
                    ),
                ),
                [_] => {}
                [first, rest @ ..] => {
                    for shadowed in rest {
                        self.push_at(
                            Severity::Warning,
                            Some(shadowed.location.clone()),
                            format!(
                                "tcp route {:?} never matches on listener {:?}: tcp route {:?} at {} comes first",
                                &*shadowed.name, &*listener.name, &*first.name, first.location
                            ),
                        );
                    }
                }
            }
        }
    }

    /// `send_proxy_protocol` is spoken on relayed connections only: an HTTP route to such
    /// an upstream would reach an endpoint expecting a header it never gets.
    fn proxy_protocol_upstreams(&mut self, upstreams: &[Upstream], http_routes: &[Arc<Route>]) {
        for upstream in upstreams.iter().filter(|u| u.send_proxy_protocol.is_some()) {
            for route in http_routes {
                let uses = match &route.action {
                    Action::Upstream(name) => *name == upstream.name,
                    Action::Weighted(backends) => backends
                        .iter()
                        .any(|b| b.upstream.as_ref() == Some(&upstream.name)),
                    _ => false,
                };
                if uses {
                    self.push_at(
                        Severity::Error,
                        Some(route.location.clone()),
                        format!(
                            "route {:?} sends HTTP to upstream {:?}, which has send_proxy_protocol; the header is sent on tcp_routes connections only",
                            &*route.name, &*upstream.name
                        ),
                    );
                }
            }
        }
    }

    /// A diagnostic at a location already resolved (or at the top of the file).
    fn push_at(&mut self, severity: Severity, location: Option<Location>, message: String) {
        let location = location.unwrap_or_else(|| self.source.location(&(0..0)));
        self.diagnostics.push(Diagnostic {
            severity,
            location,
            message,
        });
    }
}
