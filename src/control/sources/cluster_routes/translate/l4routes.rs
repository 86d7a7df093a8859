//! TLSRoutes (passthrough by SNI) and TCPRoutes attached to our Gateways -> tcp routes.
//!
//! A TLSRoute attaches to Gateway listeners of protocol `TLS` with `tls.mode:
//! Passthrough` (edgegate TLS listeners on the same port), its `hostnames` (narrowed by
//! the listener's `hostname`) becoming the SNI names relayed; a TCPRoute attaches to
//! `TCP` listeners (edgegate `protocol = "tcp"` listeners on that port). A connection goes
//! to one upstream, so a rule's first backendRef with a weight above zero is used (the
//! others are reported). Their `status.parents` gets `Accepted` and `ResolvedRefs` per
//! parent of ours, as an HTTPRoute's does: whoever applied the route sees why it is not
//! served without reading the gateway's log.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::httproute::{attach, resolve_for, ServedGateway};
use super::{condition, Key, RouteStatus, Translation};
use crate::config::model::{HostMatch, Name, TcpRoute};
use crate::control::sources::cluster_routes::objects::{TlsRoute as L4Route, GATEWAY_GROUP};

pub fn translate_all(out: &mut Translation<'_>, gateways: &mut BTreeMap<Key, ServedGateway>) {
    let objects = out.objects;
    let mut all: Vec<(&'static str, &Key, &L4Route)> = Vec::new();
    for (key, route) in &objects.tls_routes {
        all.push(("TLSRoute", key, route));
    }
    for (key, route) in &objects.tcp_routes {
        all.push(("TCPRoute", key, route));
    }
    // Older objects first, as for HTTP routes: among equal SNI matches the first wins.
    let created = |route: &L4Route| route.metadata.creation_timestamp.clone();
    all.sort_by(|a, b| (created(a.2), a.1, a.0).cmp(&(created(b.2), b.1, b.0)));
    for (kind, key, route) in all {
        translate(out, gateways, kind, key, route);
    }
}

fn translate(
    out: &mut Translation<'_>,
    gateways: &mut BTreeMap<Key, ServedGateway>,
    kind: &'static str,
    key: &Key,
    route: &L4Route,
) {
    let (namespace, name) = key;
    let spec = &route.spec;
    let generation = route.metadata.generation;
    let label = kind.to_ascii_lowercase();
    let mut status = RouteStatus::default();
    let mut listeners: Vec<Name> = Vec::new();
    let mut hosts: Vec<String> = Vec::new();
    for parent in &spec.parent_refs {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        if group != GATEWAY_GROUP || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway" {
            continue;
        }
        let gateway_ns = parent
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let Some(gateway) = gateways.get_mut(&(gateway_ns.clone(), parent.name.clone())) else {
            // Not ours (another class, or not there): another controller's to report.
            continue;
        };
        let mut resolved_parent = parent.clone();
        resolved_parent.namespace = Some(gateway_ns);
        let accepted = match attach(gateway, kind, namespace, parent, &spec.hostnames) {
            Ok(found) => {
                for attachment in found {
                    listeners.extend(attachment.listeners);
                    hosts.extend(attachment.hosts);
                }
                condition("Accepted", true, "Accepted", "attached", generation)
            }
            Err((reason, message)) => {
                out.problems
                    .push(format!("{label} {namespace}/{name}: {message}"));
                condition("Accepted", false, reason, message, generation)
            }
        };
        status.parents.push((resolved_parent, vec![accepted]));
    }
    if status.parents.is_empty() {
        return; // no parent of ours: not ours to serve or report
    }
    listeners.sort();
    listeners.dedup();
    hosts.sort();
    hosts.dedup();
    let sni: Vec<HostMatch> = hosts
        .iter()
        .map(|h| super::hostnames::host_match(h))
        .collect();
    if !listeners.is_empty() && kind == "TLSRoute" && sni.is_empty() {
        let message = "a TLSRoute needs hostnames (the SNI names it relays)";
        out.problems
            .push(format!("{label} {namespace}/{name}: {message}"));
        for (_, conditions) in &mut status.parents {
            conditions[0] = condition("Accepted", false, "UnsupportedValue", message, generation);
        }
        listeners.clear();
    }
    let source = format!("{label}/{namespace}/{name}");
    let mut unresolved: Vec<String> = Vec::new();
    let mut first_reason = None;
    // Backends are resolved only for a route that is served: resolving one registers its
    // upstream.
    let rules = if listeners.is_empty() {
        &[][..]
    } else {
        &spec.rules[..]
    };
    for (index, rule) in rules.iter().enumerate() {
        let mut backends = rule
            .backend_refs
            .iter()
            .filter(|b| b.weight.unwrap_or(1) > 0);
        let Some(backend) = backends.next() else {
            continue;
        };
        if backends.next().is_some() {
            out.problems.push(format!(
                "{label} {namespace}/{name} rule {index}: a connection goes to one backend; only {} is used",
                backend.name
            ));
        }
        let upstream = match resolve_for(out, kind, namespace, backend) {
            Ok(upstream) => upstream,
            Err(problem) => {
                out.problems
                    .push(format!("{label} {namespace}/{name}: {}", problem.message));
                first_reason.get_or_insert(problem.reason);
                unresolved.push(problem.message);
                continue;
            }
        };
        let order = out.next_order();
        out.tcp_routes.push(Arc::new(TcpRoute {
            name: format!("{source}/{index}").into(),
            order,
            listeners: Some(listeners.clone()),
            sni: if kind == "TLSRoute" {
                sni.clone()
            } else {
                Vec::new()
            },
            upstream,
            location: crate::config::Location {
                path: source.clone().into(),
                line: 0,
                column: 0,
            },
        }));
    }
    if !listeners.is_empty() {
        let resolved = match first_reason {
            None => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "all backends resolved",
                generation,
            ),
            Some(reason) => condition(
                "ResolvedRefs",
                false,
                reason,
                unresolved.join("; "),
                generation,
            ),
        };
        for (_, conditions) in &mut status.parents {
            conditions.push(resolved.clone());
        }
    }
    out.status.l4_routes.insert((kind, key.clone()), status);
}
