//! Ingresses of our class -> routes on every listener, and their TLS Secrets ->
//! certificates on every TLS listener. The ingress-nginx annotations edgegate serves
//! (access lists, rate limits, CORS, body size, compression, forward auth) apply to every
//! route of the Ingress; the others are reported. An Ingress asking for an
//! authentication edgegate cannot give it (`auth-type`, a bad `auth-url`) has its routes
//! answer 500 rather than serve them open.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::hostnames::host_match;
use super::{empty_route, prefix, respond_500, ClusterCertificate, Key, Translation};
use crate::config::model::{
    Action, AuthKind, Authenticator, ForwardAuth, Name, PathMatch, ServicePort,
};
use crate::config::Location;

/// The annotation prefixes read: ingress-nginx's, and edgegate's own.
const PREFIXES: [&str; 2] = ["nginx.ingress.kubernetes.io/", "edgegate.dev/"];

fn annotation<'a>(ingress: &'a Ingress, name: &str) -> Option<&'a str> {
    let annotations = ingress.metadata.annotations.as_ref()?;
    PREFIXES
        .iter()
        .find_map(|prefix| annotations.get(&format!("{prefix}{name}")))
        .map(|v| v.trim())
}

/// The Ingress's authenticator: `Ok(None)` when it asks for none, `Err` with the problem
/// when it asks for one that cannot be given.
fn ingress_auth(
    ingress: &Ingress,
    source: &str,
) -> Result<Option<std::sync::Arc<Authenticator>>, String> {
    if let Some(kind) = annotation(ingress, "auth-type") {
        return Err(format!(
            "annotation auth-type {kind:?} is not served (users from a Secret); use auth-url, or a file route with [auth.NAME]; its routes answer 500"
        ));
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

pub fn translate(out: &mut Translation<'_>, key: &Key, ingress: &Ingress) {
    let (namespace, name) = key;
    let Some(spec) = &ingress.spec else {
        return;
    };
    let source = format!("ingress/{namespace}/{name}");
    let auth = match ingress_auth(ingress, &source) {
        Ok(auth) => auth,
        Err(problem) => {
            out.problems
                .push(format!("ingress {namespace}/{name}: {problem}"));
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
    let passthrough = is_passthrough(ingress);
    let policy = annotations.policy.map(Arc::new);
    let apply = |route: &mut crate::config::model::Route| {
        route.policy = policy.clone();
        route.max_body_size = annotations.max_body_size;
        route.compress = annotations.compress.clone();
        if !annotations.invalid.is_empty() {
            route.action = respond_500("invalid annotation\n");
        }
    };
    for (index, rule) in spec.rules.iter().flatten().enumerate() {
        let rule_name = format!("ingress/{namespace}/{name}/{index}");
        let hosts: Vec<_> = rule.host.iter().map(|h| host_match(h)).collect();
        if passthrough {
            passthrough_rule(out, key, rule_name, &source, hosts, rule);
            continue;
        }
        for path in rule.http.iter().flat_map(|h| &h.paths) {
            let value = path.path.as_deref().unwrap_or("/");
            let path_match = match path.path_type.as_str() {
                "Exact" => PathMatch::Exact(value.to_string()),
                // ImplementationSpecific is read as Prefix.
                _ => prefix(value),
            };
            let mut route = empty_route(rule_name.clone(), &source, out.next_order());
            route.hosts = hosts.clone();
            route.path = path_match;
            route.action = backend_action(out, namespace, name, &path.backend);
            route.auth = auth_name.clone();
            apply(&mut route);
            out.routes.push(Arc::new(route));
        }
    }
    if let Some(backend) = &spec.default_backend {
        let rule_name = format!("ingress/{namespace}/{name}/default");
        let mut route = empty_route(rule_name, &source, out.next_order());
        route.action = backend_action(out, namespace, name, backend);
        route.auth = auth_name.clone();
        apply(&mut route);
        out.routes.push(Arc::new(route));
    }
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
        Ok(upstream) => Action::Upstream(upstream),
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
    let Action::Upstream(upstream) = backend_action(out, namespace, name, &path.backend) else {
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
