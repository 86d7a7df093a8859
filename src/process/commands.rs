//! The `check` and `route` commands, and config file resolution shared with `run`.

use std::process::ExitCode;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config;
use crate::config::model::{Action, Members};
use crate::config::origin::{load_or_report, resolve_config, Report};
use crate::pipeline::http_path::{normalize_path, PathError};
use crate::process::cli::{Cli, Command, ConfigArg, RouteArgs};
use crate::snapshot::pool::MemberStates;
use crate::snapshot::router::{matches_directly, normalize_host, rewritten_path, RequestFacts};
use crate::snapshot::{Discovered, Snapshot, SourceInfo};

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        None => crate::process::run::run(cli.run),
        Some(Command::Run(args)) => crate::process::run::run(args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Route(args)) => route(&args),
        Some(Command::Upgrade(args)) => {
            match crate::serving::upgrade::request(args.pid, args.timeout) {
                Ok(()) => {
                    println!("ok: process {} handed over and exited", args.pid);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(args: &ConfigArg) -> ExitCode {
    let origin = resolve_config(args.config.as_deref());
    let (_, loaded) = match load_or_report(&origin, Report::Stdout) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    for warning in &loaded.warnings {
        println!("{warning}");
    }
    let c = &loaded.config;
    if let Err(e) = check_tls_files(c) {
        println!("{e}");
        return ExitCode::FAILURE;
    }
    println!(
        "ok: {} listeners, {} routes, {} upstreams",
        c.listeners.len(),
        c.routes.len(),
        c.upstreams.len()
    );
    ExitCode::SUCCESS
}

/// The files themselves were checked while loading; what is left is what only an
/// acceptor can tell (the client CA with the TLS versions), built the way a listener
/// builds it, so `check` catches what a reload would refuse.
fn check_tls_files(config: &config::Config) -> Result<(), String> {
    let mut problems = Vec::new();
    for listener in &config.listeners {
        if let Some(tls) = &listener.tls {
            if let Err(e) = crate::snapshot::tls::build_acceptor(tls, Vec::new()) {
                let place = tls
                    .certificates
                    .first()
                    .map_or_else(String::new, |c| c.location.to_string());
                problems.push(format!(
                    "error: {place}: listener {:?}: {e}",
                    &*listener.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// One list of each kind, within 10 seconds, on a runtime of its own (`route` is sync).
fn read_cluster_routes(
    settings: &crate::config::model::KubernetesSettings,
    listeners: &[crate::control::sources::cluster_routes::translate::ListenerFacts],
) -> Result<crate::control::sources::cluster_routes::translate::ClusterRoutes, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            crate::control::sources::cluster_routes::watch::list_once(settings, listeners),
        )
        .await
        .map_err(|_| "the API server did not answer within 10 s".to_string())?
    })
}

fn route(args: &RouteArgs) -> ExitCode {
    let origin = resolve_config(args.config.config.as_deref());
    let (source, loaded) = match load_or_report(&origin, Report::Stdout) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let mut config = Arc::new(loaded.config);
    if let Some(settings) = config.kubernetes.clone() {
        // Cluster routes too, read once from the API server the gateway would watch.
        let listeners = crate::control::sources::cluster_routes::translate::ListenerFacts::of(
            &config.listeners,
        );
        match read_cluster_routes(&settings, &listeners) {
            Ok(cluster) => {
                println!(
                    "cluster: {} routes from Gateway API and Ingress objects",
                    cluster.routes.len()
                );
                config = Arc::new(cluster.merged_onto(&config));
            }
            Err(e) => println!("warning: cluster routes not read ({e}); file routes only"),
        }
    }
    let snapshot = Snapshot::compile(
        config.clone(),
        SourceInfo::new(origin.describe(), &source.text),
        1,
        &Discovered::new(),
        None,
        &MemberStates::default(),
        Default::default(),
    );
    if args.method.eq_ignore_ascii_case("tcp") {
        return crate::l4::explain::route(&config, &snapshot, args);
    }
    let method = match Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            println!("error: invalid method {:?}", args.method);
            return ExitCode::FAILURE;
        }
    };
    let uri: http::Uri = match args.url.parse() {
        Ok(u) => u,
        Err(e) => {
            println!("error: invalid URL {:?}: {e}", args.url);
            return ExitCode::FAILURE;
        }
    };
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            println!("error: header {h:?} is not `Name: value`");
            return ExitCode::FAILURE;
        };
        match (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => {
                println!("error: invalid header {h:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    let raw_host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let listener = match &args.listener {
        Some(name) => config.listeners.iter().find(|l| &*l.name == name),
        None => uri
            .port_u16()
            .and_then(|port| config.listeners.iter().find(|l| l.address.port() == port))
            .or_else(|| config.listeners.first()),
    };
    let Some(listener) = listener else {
        println!("error: no such listener");
        return ExitCode::FAILURE;
    };
    let host = normalize_host(&raw_host);
    let raw_path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    // Routed, rewritten and forwarded as the gateway would: normalised first.
    let path = match normalize_path(raw_path) {
        Ok(path) => path,
        Err(e @ PathError::AboveRoot) => {
            println!("error: {e}: {raw_path:?} (the gateway answers 400)");
            return ExitCode::FAILURE;
        }
        Err(e @ PathError::Invalid) => {
            println!(
                "error: {e} {raw_path:?}: malformed percent-encoding (the gateway answers 400)"
            );
            return ExitCode::FAILURE;
        }
    };
    let path = &*path;
    let facts = RequestFacts {
        host: &host,
        path,
        query: uri.query(),
        method: &method,
        headers: &headers,
    };
    let Some(winner) = snapshot.router.route(&listener.name, &facts) else {
        println!("no route");
        return ExitCode::FAILURE;
    };
    println!("route: {}", winner.name);
    if winner.is_from_cluster() {
        println!("source: {}", winner.location.path.display());
    }
    if let Some(name) = &winner.auth {
        let kind = config.authenticator(name).map_or("", |a| match a.kind {
            crate::config::model::AuthKind::Basic(_) => "basic",
            crate::config::model::AuthKind::Jwt(_) => "jwt",
            crate::config::model::AuthKind::Forward(_) => "forward",
        });
        println!("auth: {name} ({kind})");
    }
    match &winner.action {
        Action::Upstream(name) => {
            let members = match config.upstream(name).map(|u| &u.members) {
                Some(Members::Kubernetes(k)) => format!(
                    "(members from Kubernetes service {}/{} at run time)",
                    k.namespace, k.service
                ),
                _ => snapshot
                    .pools
                    .get(name)
                    .map(|p| {
                        p.endpoints()
                            .map(|e| e.address.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
            };
            println!("upstream: {name} {members}");
        }
        Action::Redirect(redirect) => println!(
            "redirect: {} {}",
            crate::pipeline::answer::redirect_location(
                redirect,
                path,
                uri.query(),
                &raw_host,
                false
            ),
            redirect.status.as_u16()
        ),
        Action::Respond(respond) => println!("respond: {}", respond.status.as_u16()),
        Action::Weighted(backends) => {
            let shares: Vec<String> = backends
                .iter()
                .map(|b| match &b.upstream {
                    Some(name) => format!("{name}={}", b.weight),
                    None => format!("(unresolved: 500)={}", b.weight),
                })
                .collect();
            println!("upstreams (weighted): {}", shares.join(" "));
        }
    }
    let rewritten =
        rewritten_path(winner, path, uri.query()).unwrap_or_else(|| match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        });
    println!("path: {rewritten}");
    if let Some(policy) = &winner.policy {
        for line in policy_lines(policy) {
            println!("policy: {line}");
        }
    }
    if let Some(mirror) = &winner.mirror {
        println!(
            "mirror: {}% of requests copied to {} (answers discarded)",
            mirror.percent, mirror.upstream
        );
    }
    if path != raw_path {
        println!("raw-path: {raw_path} (normalised to {path} before routing)");
    }
    println!("listener: {}", listener.name);
    let mut others: Vec<_> = config
        .routes
        .iter()
        .filter(|r| r.applies_to_listener(&listener.name))
        .filter_map(|r| Some((matches_directly(r, &facts)?, r)))
        .collect();
    others.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
    let winner_rank = matches_directly(winner, &facts);
    let runner_up = others.iter().find(|(_, r)| r.name != winner.name);
    match (winner_rank, runner_up) {
        (Some(w), Some((other, r))) => println!(
            "reason: {} (over route {:?} at {})",
            w.deciding_rule(other),
            &*r.name,
            r.location
        ),
        _ => println!("reason: the only route that matches"),
    }
    for (_, r) in others.iter().filter(|(_, r)| r.name != winner.name) {
        println!("also-matched: {} {}", r.name, r.location);
    }
    ExitCode::SUCCESS
}

/// What a request on a route with traffic policy meets, one line each, in the order the
/// gateway checks them.
fn policy_lines(policy: &crate::config::model::RoutePolicy) -> Vec<String> {
    use crate::config::model::{RateLimitKey, RateLimitScope};
    let nets = |list: &[ipnet::IpNet]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = Vec::new();
    if !policy.deny.is_empty() {
        out.push(format!("deny {} (403)", nets(&policy.deny)));
    }
    if !policy.allow.is_empty() {
        out.push(format!("allow only {} (else 403)", nets(&policy.allow)));
    }
    if let Some(cors) = &policy.cors {
        out.push(format!(
            "cors for {} origin(s); preflights answered 204",
            cors.allow_origins.len()
        ));
    }
    if let Some(limit) = &policy.rate_limit {
        let key = match &limit.key {
            RateLimitKey::Client => "client address".to_string(),
            RateLimitKey::Route => "route".to_string(),
            RateLimitKey::Header(name) => format!("header {name}"),
        };
        let scope = match limit.scope {
            RateLimitScope::Local => "local",
            RateLimitScope::Global => "global (store)",
        };
        out.push(format!(
            "rate_limit {} per {} burst {} by {key}, {scope} (429)",
            limit.requests,
            humantime::format_duration(limit.per),
            limit.burst
        ));
    }
    out
}
