//! Ingresses of our class -> routes on every listener, and their TLS Secrets ->
//! certificates on every TLS listener. The ingress-nginx annotations edgegate serves
//! (access lists, rate limits, CORS, body size, compression, forward auth, basic auth
//! from a Secret, upstream settings, the redirect to https) apply to every route of the
//! Ingress; a canary Ingress joins the routes of its main Ingress; the others are
//! reported. An Ingress asking for an authentication edgegate cannot give it (a bad
//! `auth-url`, a missing Secret or one with weak hashes) has its routes answer 500 rather
//! than serve them open.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};

use super::annotations::{Canary, IngressPolicy, SslRedirect};
use super::hostnames::host_match;
use super::{empty_route, prefix, respond_500, ClusterCertificate, Key, Translation};
use crate::config::model::{
    Action, AuthKind, Authenticator, ForwardAuth, Name, PathMatch, Redirect, Route, ServicePort,
    WeightedUpstream,
};
use crate::config::Location;

/// The annotation prefixes read: ingress-nginx's, and edgegate's own.
const PREFIXES: [&str; 2] = ["nginx.ingress.kubernetes.io/", "edgegate.dev/"];

pub(super) fn annotation<'a>(ingress: &'a Ingress, name: &str) -> Option<&'a str> {
    let annotations = ingress.metadata.annotations.as_ref()?;
    PREFIXES
        .iter()
        .find_map(|prefix| annotations.get(&format!("{prefix}{name}")))
        .map(|v| v.trim())
}

/// The Ingress's authenticator: `Ok(None)` when it asks for none, `Err` with the problem
/// when it asks for one that cannot be given.
fn ingress_auth(
    objects: &super::ClusterObjects,
    namespace: &str,
    ingress: &Ingress,
    source: &str,
) -> Result<Option<std::sync::Arc<Authenticator>>, String> {
    if annotation(ingress, "auth-type").is_some() {
        return super::ingress_basic::authenticator(objects, namespace, ingress, source).map(Some);
    }
    let Some(url) = annotation(ingress, "auth-url") else {
        return Ok(None);
    };
    let address = url
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme_str() == Some("http") && u.host().is_some())
        .ok_or_else(|| {
            format!("annotation auth-url {url:?} is not an http:// URL; its routes answer 500")
        })?;
    let mut response_headers = Vec::new();
    for name in annotation(ingress, "auth-response-headers")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header)
                if !crate::config::validate::auth::GATEWAY_OWNED.contains(&header.as_str()) =>
            {
                response_headers.push(header)
            }
            _ => {
                return Err(format!(
                    "annotation auth-response-headers names {name:?}, not a header an auth service may fill; its routes answer 500"
                ))
            }
        }
    }
    Ok(Some(std::sync::Arc::new(Authenticator {
        name: Name::from(source),
        kind: AuthKind::Forward(ForwardAuth {
            address,
            // What ingress-nginx's auth subrequest carries that an auth service reads.
            request_headers: vec![http::header::AUTHORIZATION, http::header::COOKIE],
            response_headers,
            timeout: std::time::Duration::from_secs(5),
            signin: annotation(ingress, "auth-signin").map(str::to_string),
        }),
        location: Location {
            path: source.into(),
            line: 0,
            column: 0,
        },
    })))
}

/// A canary Ingress's path, waiting for the main Ingress of the same host and path.
pub struct CanaryRoute {
    pub source: Key,
    pub host: Option<String>,
    pub path: PathMatch,
    /// The canary's backend (with the canary Ingress's own upstream settings).
    pub action: Action,
    pub canary: Canary,
    pub used: bool,
}

fn path_match(path: &HTTPIngressPath) -> PathMatch {
    let value = path.path.as_deref().unwrap_or("/");
    match path.path_type.as_str() {
        "Exact" => PathMatch::Exact(value.to_string()),
        // ImplementationSpecific is read as Prefix.
        _ => prefix(value),
    }
}

/// Reads every canary Ingress first: its paths join the main Ingress's routes, whatever
/// the order the two were created in.
pub fn collect_canaries(out: &mut Translation<'_>, ingresses: &[(&Key, &Ingress)]) {
    for (key, ingress) in ingresses {
        let annotations = super::annotations::read(ingress.metadata.annotations.as_ref());
        let (Some(canary), true) = (&annotations.canary, annotations.invalid.is_empty()) else {
            continue;
        };
        let (namespace, name) = key;
        for rule in ingress.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            for path in rule.http.iter().flat_map(|h| &h.paths) {
                let action = backend_action(out, namespace, name, &path.backend, &annotations);
                out.canaries.push(CanaryRoute {
                    source: (*key).clone(),
                    host: rule.host.clone(),
                    path: path_match(path),
                    action,
                    canary: canary.clone(),
                    used: false,
                });
            }
        }
    }
}

/// Canary Ingresses that found no main Ingress: reported on each.
pub fn report_unused_canaries(out: &mut Translation<'_>) {
    let unused: Vec<(Key, String)> = out
        .canaries
        .iter()
        .filter(|c| !c.used)
        .map(|c| {
            let host = c.host.as_deref().unwrap_or("*");
            (
                c.source.clone(),
                format!(
                    "canary for host {host} path {:?} has no main Ingress with the same host and path; not served",
                    c.path
                ),
            )
        })
        .collect();
    for ((namespace, name), problem) in unused {
        out.problems
            .push(format!("ingress {namespace}/{name}: {problem}"));
        out.status
            .ingress_warnings
            .entry((namespace, name))
            .or_default()
            .push(problem);
    }
}

pub fn translate(out: &mut Translation<'_>, key: &Key, ingress: &Ingress) {
    let (namespace, name) = key;
    let Some(spec) = &ingress.spec else {
        return;
    };
    let source = format!("ingress/{namespace}/{name}");
    let auth = match ingress_auth(out.objects, namespace, ingress, &source) {
        Ok(auth) => auth,
        Err(problem) => {
            out.problems
                .push(format!("ingress {namespace}/{name}: {problem}"));
            out.status
                .ingress_warnings
                .entry(key.clone())
                .or_default()
                .push(problem);
            // Never served open: every route of it answers 500.
            return refuse_all(out, key, ingress, &source);
        }
    };
    let auth_name = auth.as_ref().map(|a| a.name.clone());
    out.auth.extend(auth);
    let annotations = super::annotations::read(ingress.metadata.annotations.as_ref());
    for problem in annotations.unserved.iter().chain(&annotations.invalid) {
        out.problems
            .push(format!("ingress {namespace}/{name}: {problem}"));
    }
    if !(annotations.unserved.is_empty() && annotations.invalid.is_empty()) {
        out.status
            .ingress_warnings
            .entry(key.clone())
            .or_default()
            .extend(
                annotations
                    .unserved
                    .iter()
                    .chain(&annotations.invalid)
                    .cloned(),
            );
    }
    if annotations.is_canary {
        // Served through the main Ingress's routes (`collect_canaries`), or, when its
        // annotations cannot be read, not at all (reported above).
        out.status.ingresses.insert(key.clone());
        return;
    }
    let passthrough = is_passthrough(ingress);
    let policy = annotations.policy.clone().map(Arc::new);
    let apply = |route: &mut crate::config::model::Route| {
        route.policy = policy.clone();
        route.max_body_size = annotations.max_body_size;
        route.compress = annotations.compress.clone();
        if !annotations.invalid.is_empty() {
            route.action = respond_500("invalid annotation\n");
        }
    };
    let redirect = match annotations.ssl_redirect {
        SslRedirect::Off => false,
        SslRedirect::WithTls => spec.tls.as_ref().is_some_and(|t| !t.is_empty()),
        SslRedirect::Always => true,
    };
    let mut routes = Vec::new();
    for (index, rule) in spec.rules.iter().flatten().enumerate() {
        let rule_name = format!("ingress/{namespace}/{name}/{index}");
        let hosts: Vec<_> = rule.host.iter().map(|h| host_match(h)).collect();
        if passthrough {
            passthrough_rule(out, key, rule_name, &source, hosts, rule);
            continue;
        }
        for path in rule.http.iter().flat_map(|h| &h.paths) {
            let mut route = empty_route(rule_name.clone(), &source, out.next_order());
            route.hosts = hosts.clone();
            route.path = path_match(path);
            route.action = backend_action(out, namespace, name, &path.backend, &annotations);
            route.auth = auth_name.clone();
            apply(&mut route);
            let canary = out
                .canaries
                .iter_mut()
                .find(|c| !c.used && c.host == rule.host && c.path == route.path);
            match canary {
                Some(canary) if annotations.invalid.is_empty() => {
                    canary.used = true;
                    let (action, canary) = (canary.action.clone(), canary.canary.clone());
                    routes.extend(split_with_canary(out, route, action, &canary));
                }
                _ => routes.push(route),
            }
        }
    }
    if let Some(backend) = &spec.default_backend {
        let rule_name = format!("ingress/{namespace}/{name}/default");
        let mut route = empty_route(rule_name, &source, out.next_order());
        route.action = backend_action(out, namespace, name, backend, &annotations);
        route.auth = auth_name.clone();
        apply(&mut route);
        routes.push(route);
    }
    if redirect {
        routes = redirect_plain_http(out, routes);
    }
    out.routes.extend(routes.into_iter().map(Arc::new));
    for tls in spec.tls.iter().flatten() {
        let Some(secret_name) = &tls.secret_name else {
            continue;
        };
        match out.secret(namespace, secret_name) {
            Some(secret) => {
                let listeners = out.tls_listeners();
                out.certificates.push(ClusterCertificate {
                    listeners,
                    source: format!("secret/{namespace}/{secret_name}"),
                    cert: secret.cert.clone(),
                    key: secret.key.clone(),
                });
            }
            None => out.problems.push(format!(
                "ingress {namespace}/{name}: secret {namespace}/{secret_name} not found (or not of type kubernetes.io/tls)"
            )),
        }
    }
    out.status.ingresses.insert(key.clone());
}

/// A main Ingress's route joined by its canary: requests with the canary's header or
/// cookie (`always`, or the header's configured value) go to the canary, with `never`
/// to the main backend; the rest split by `canary-weight`. The header and cookie routes
/// win over the plain one by their extra match, as any route with more matches does.
fn split_with_canary(
    out: &mut Translation<'_>,
    mut route: Route,
    canary_action: Action,
    canary: &Canary,
) -> Vec<Route> {
    let main_action = route.action.clone();
    let mut routes = Vec::new();
    let to = |out: &mut Translation<'_>, route: &Route, action: &Action, suffix: &str| {
        let mut extra = route.clone();
        extra.name = format!("{}{suffix}", route.name).into();
        extra.order = out.next_order();
        extra.action = action.clone();
        extra
    };
    if let Some((header, value)) = &canary.by_header {
        let mut chosen = to(out, &route, &canary_action, "/canary");
        chosen.headers.push((
            header.clone(),
            value.clone().unwrap_or_else(|| "always".to_string()),
        ));
        routes.push(chosen);
        if value.is_none() {
            let mut never = to(out, &route, &main_action, "");
            never.headers.push((header.clone(), "never".to_string()));
            routes.push(never);
        }
    }
    if let Some(cookie) = &canary.by_cookie {
        let mut chosen = to(out, &route, &canary_action, "/canary");
        chosen.cookies.push((cookie.clone(), "always".to_string()));
        routes.push(chosen);
        let mut never = to(out, &route, &main_action, "");
        never.cookies.push((cookie.clone(), "never".to_string()));
        routes.push(never);
    }
    if canary.weight > 0 {
        let upstream = |action: &Action| match action {
            Action::Upstream(name) => Some(name.clone()),
            _ => None,
        };
        if let Some(main) = upstream(&main_action) {
            route.action = Action::Weighted(vec![
                WeightedUpstream {
                    upstream: Some(main),
                    weight: canary.total - canary.weight,
                },
                // A canary backend that does not resolve answers 500 for its share.
                WeightedUpstream {
                    upstream: upstream(&canary_action),
                    weight: canary.weight,
                },
            ]);
        }
    }
    routes.push(route);
    routes
}

/// `ssl-redirect` / `force-ssl-redirect`: the Ingress's routes serve its TLS listeners,
/// and on plain listeners each host and path answers 308 to https.
fn redirect_plain_http(out: &mut Translation<'_>, routes: Vec<Route>) -> Vec<Route> {
    let tls = out.tls_listeners();
    let plain: Vec<Name> = out
        .listeners
        .iter()
        .filter(|l| !l.tls && !l.tcp)
        .map(|l| l.name.clone())
        .collect();
    let mut out_routes = Vec::with_capacity(routes.len() * 2);
    let mut redirected: Vec<(Vec<crate::config::model::HostMatch>, PathMatch)> = Vec::new();
    for mut route in routes {
        let place = (route.hosts.clone(), route.path.clone());
        if !redirected.contains(&place) {
            let mut redirect = empty_route(route.name.to_string(), "", out.next_order());
            redirect.location = route.location.clone();
            redirect.hosts = route.hosts.clone();
            redirect.path = route.path.clone();
            redirect.listeners = Some(plain.clone());
            redirect.policy = route.policy.clone();
            redirect.action = Action::Redirect(Redirect {
                scheme: Some("https".to_string()),
                host: None,
                port: None,
                path: None,
                status: http::StatusCode::PERMANENT_REDIRECT,
            });
            out_routes.push(redirect);
            redirected.push(place);
        }
        route.listeners = Some(tls.clone());
        out_routes.push(route);
    }
    out_routes
}

/// The Ingress's hosts and paths, each answering 500: its authentication could not be
/// set up, and it is never served without it.
fn refuse_all(out: &mut Translation<'_>, key: &Key, ingress: &Ingress, source: &str) {
    let Some(spec) = &ingress.spec else {
        return;
    };
    let (namespace, name) = key;
    for (index, rule) in spec.rules.iter().flatten().enumerate() {
        let hosts: Vec<_> = rule.host.iter().map(|h| host_match(h)).collect();
        for path in rule.http.iter().flat_map(|h| &h.paths) {
            let value = path.path.as_deref().unwrap_or("/");
            let mut route = empty_route(
                format!("ingress/{namespace}/{name}/{index}"),
                source,
                out.next_order(),
            );
            route.hosts = hosts.clone();
            route.path = match path.path_type.as_str() {
                "Exact" => PathMatch::Exact(value.to_string()),
                _ => prefix(value),
            };
            route.action = respond_500("authentication not configured\n");
            out.routes.push(Arc::new(route));
        }
    }
    if spec.default_backend.is_some() {
        let mut route = empty_route(
            format!("ingress/{namespace}/{name}/default"),
            source,
            out.next_order(),
        );
        route.action = respond_500("authentication not configured\n");
        out.routes.push(Arc::new(route));
    }
    out.status.ingresses.insert(key.clone());
}

fn backend_action(
    out: &mut Translation<'_>,
    namespace: &str,
    name: &str,
    backend: &IngressBackend,
    annotations: &IngressPolicy,
) -> Action {
    let Some(service) = &backend.service else {
        out.problems.push(format!(
            "ingress {namespace}/{name}: only Service backends are served"
        ));
        return respond_500("backend not resolved\n");
    };
    let port = service
        .port
        .as_ref()
        .and_then(|p| match (&p.number, &p.name) {
            (Some(n), _) => u16::try_from(*n).ok().map(ServicePort::Number),
            (None, Some(name)) => Some(ServicePort::Name(name.clone())),
            (None, None) => None,
        });
    let Some(port) = port else {
        out.problems.push(format!(
            "ingress {namespace}/{name}: backend {} has no port",
            service.name
        ));
        return respond_500("backend not resolved\n");
    };
    match out.backends.service(namespace, &service.name, port) {
        Ok(upstream) if annotations.upstream.is_default() => Action::Upstream(upstream),
        // The Ingress's own copy of the Service port's upstream, so its settings never
        // change what other routes of the same Service get.
        Ok(upstream) => Action::Upstream(out.backends.tuned(
            &upstream,
            &format!("ingress/{namespace}/{name}"),
            |u| annotations.upstream.apply(u),
        )),
        Err(unresolved) => {
            out.problems.push(format!(
                "ingress {namespace}/{name}: {}",
                unresolved.message
            ));
            respond_500("backend not resolved\n")
        }
    }
}

/// The annotation, under ingress-nginx's prefix or edgegate's own.
const PASSTHROUGH: [&str; 2] = [
    "nginx.ingress.kubernetes.io/ssl-passthrough",
    "edgegate.dev/ssl-passthrough",
];

fn is_passthrough(ingress: &Ingress) -> bool {
    ingress.metadata.annotations.as_ref().is_some_and(|a| {
        PASSTHROUGH
            .iter()
            .any(|key| a.get(*key).is_some_and(|v| v.trim() == "true"))
    })
}

/// A rule of a passthrough Ingress: its host's TLS connections go whole to the backend of
/// its first path (ingress-nginx's reading), on every TLS listener; no HTTP route.
fn passthrough_rule(
    out: &mut Translation<'_>,
    key: &Key,
    rule_name: String,
    source: &str,
    sni: Vec<crate::config::model::HostMatch>,
    rule: &k8s_openapi::api::networking::v1::IngressRule,
) {
    let (namespace, name) = key;
    if sni.is_empty() {
        out.problems.push(format!(
            "ingress {namespace}/{name}: ssl-passthrough needs a host on every rule"
        ));
        return;
    }
    let Some(path) = rule.http.iter().flat_map(|h| &h.paths).next() else {
        return;
    };
    let plain = IngressPolicy::default();
    let Action::Upstream(upstream) = backend_action(out, namespace, name, &path.backend, &plain)
    else {
        return;
    };
    let order = out.next_order();
    let listeners = out.tls_listeners();
    out.tcp_routes
        .push(Arc::new(crate::config::model::TcpRoute {
            name: rule_name.into(),
            order,
            listeners: Some(listeners),
            sni,
            upstream,
            location: crate::config::Location {
                path: source.into(),
                line: 0,
                column: 0,
            },
        }));
}
