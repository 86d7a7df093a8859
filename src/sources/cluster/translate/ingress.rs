//! Ingresses of our class -> routes on every listener, and their TLS Secrets ->
//! certificates on every TLS listener. Of the annotations, only `ssl-passthrough` is read
//! here: its hosts are relayed unterminated to the backend on every TLS listener
//! (docs/kubernetes-routes.md).

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::hostnames::host_match;
use super::{empty_route, prefix, respond_500, ClusterCertificate, Key, Translation};
use crate::config::model::{Action, PathMatch, ServicePort};

pub fn translate(out: &mut Translation<'_>, key: &Key, ingress: &Ingress) {
    let (namespace, name) = key;
    let Some(spec) = &ingress.spec else {
        return;
    };
    let source = format!("ingress/{namespace}/{name}");
    let passthrough = is_passthrough(ingress);
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
                // ImplementationSpecific is read as Prefix (spec section 10).
                _ => prefix(value),
            };
            let mut route = empty_route(rule_name.clone(), &source, out.next_order());
            route.hosts = hosts.clone();
            route.path = path_match;
            route.action = backend_action(out, namespace, name, &path.backend);
            out.routes.push(Arc::new(route));
        }
    }
    if let Some(backend) = &spec.default_backend {
        let rule_name = format!("ingress/{namespace}/{name}/default");
        let mut route = empty_route(rule_name, &source, out.next_order());
        route.action = backend_action(out, namespace, name, backend);
        out.routes.push(Arc::new(route));
    }
    for tls in spec.tls.iter().flatten() {
        let Some(secret_name) = &tls.secret_name else {
            continue;
        };
        match out
            .objects
            .secrets
            .get(&(namespace.clone(), secret_name.clone()))
        {
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
