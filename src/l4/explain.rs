//! `edgegate route ... TCP URL`: which tcp route a connection would take, without opening
//! one. The same [`TcpRouter`](crate::snapshot::tcp_router::TcpRouter) the gateway uses
//! decides.

use std::process::ExitCode;

use crate::config::model::{HostMatch, Listener, ListenerProtocol, Members};
use crate::config::Config;
use crate::process::cli::RouteArgs;
use crate::snapshot::Snapshot;

/// `tls://secure.example.com:8443`, `tcp://:5432`, or a bare server name: (SNI, port).
fn parse_target(url: &str) -> (String, Option<u16>) {
    let rest = url
        .strip_prefix("tls://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url)
        .trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            (host.to_ascii_lowercase(), port.parse().ok())
        }
        _ => (rest.to_ascii_lowercase(), None),
    }
}

pub fn route(config: &Config, snapshot: &Snapshot, args: &RouteArgs) -> ExitCode {
    let (sni, port) = parse_target(&args.url);
    let router = &snapshot.tcp_router;
    let fits = |l: &&Listener| match l.protocol {
        ListenerProtocol::Tcp => sni.is_empty() || router.tcp_route(&l.name).is_some(),
        ListenerProtocol::Http => router.has_passthrough(&l.name),
    };
    let listener = match (&args.listener, port) {
        (Some(name), _) => config.listeners.iter().find(|l| &*l.name == name),
        (None, Some(port)) => config.listeners.iter().find(|l| l.address.port() == port),
        (None, None) => config.listeners.iter().find(fits),
    };
    let Some(listener) = listener else {
        println!("error: no such listener");
        return ExitCode::FAILURE;
    };
    let route = match listener.protocol {
        ListenerProtocol::Tcp => router.tcp_route(&listener.name),
        ListenerProtocol::Http => router.passthrough_route(&listener.name, &sni),
    };
    let Some(route) = route else {
        println!("no route");
        if listener.tls.is_some() {
            println!(
                "terminated: listener {} terminates TLS for {sni:?} and serves its HTTP routes",
                listener.name
            );
        }
        return ExitCode::FAILURE;
    };
    println!("route: {}", route.name);
    let members = match config.upstream(&route.upstream).map(|u| &u.members) {
        Some(Members::Kubernetes(k)) => format!(
            "(members from Kubernetes service {}/{} at run time)",
            k.namespace, k.service
        ),
        _ => snapshot
            .pools
            .get(&route.upstream)
            .map(|p| {
                p.endpoints()
                    .map(|e| e.address.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    };
    println!("upstream: {} {members}", route.upstream);
    println!("listener: {}", listener.name);
    if let Some(version) = config
        .upstream(&route.upstream)
        .and_then(|u| u.send_proxy_protocol)
    {
        println!("proxy-protocol: {version:?} sent to the member");
    }
    match listener.protocol {
        ListenerProtocol::Tcp => println!("reason: the tcp listener's route ({})", route.location),
        ListenerProtocol::Http => {
            let name = sni.trim_end_matches('.');
            let matched = route.sni.iter().find(|m| match m {
                HostMatch::Exact(h) => h == name,
                HostMatch::Wildcard(suffix) => name.ends_with(suffix.as_str()),
            });
            let how = match matched {
                Some(HostMatch::Exact(h)) => format!("sni {h:?} (exact)"),
                Some(HostMatch::Wildcard(s)) => format!("sni \"*{s}\" (wildcard)"),
                None => "sni".to_string(),
            };
            println!(
                "reason: {how}: relayed unterminated, the member answers the TLS handshake ({})",
                route.location
            );
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("tls://Secure.Example.com:8443"),
            ("secure.example.com".to_string(), Some(8443))
        );
        assert_eq!(parse_target("tcp://:5432"), (String::new(), Some(5432)));
        assert_eq!(
            parse_target("a.example.com"),
            ("a.example.com".to_string(), None)
        );
    }
}
