//! TLSRoutes (passthrough by SNI) and TCPRoutes attached to our Gateways -> tcp routes.
//!
//! A TLSRoute attaches to Gateway listeners of protocol `TLS` with `tls.mode:
//! Passthrough` (edgegate TLS listeners on the same port), its `hostnames` (narrowed by
//! the listener's `hostname`) becoming the SNI names relayed; a TCPRoute attaches to
//! `TCP` listeners (edgegate `protocol = "tcp"` listeners on that port). A connection goes
//! to one upstream, so a rule's first backendRef with a weight above zero is used (the
//! others are reported). Their status is not written back (only HTTPRoute status is).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::httproute::{attach, resolve, ServedGateway};
use super::{Key, Translation};
use crate::config::model::{HostMatch, Name, TcpRoute};
use crate::control::sources::cluster_routes::objects::{L4RouteSpec, GATEWAY_GROUP};

pub fn translate_all(out: &mut Translation<'_>, gateways: &mut BTreeMap<Key, ServedGateway>) {
    let objects = out.objects;
    let mut all: Vec<(
        &str,
        &Key,
        &L4RouteSpec,
        Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    )> = Vec::new();
    for (key, route) in &objects.tls_routes {
        all.push((
            "TLSRoute",
            key,
            &route.spec,
            route.metadata.creation_timestamp.as_ref(),
        ));
    }
    for (key, route) in &objects.tcp_routes {
        all.push((
            "TCPRoute",
            key,
            &route.spec,
            route.metadata.creation_timestamp.as_ref(),
        ));
    }
    // Older objects first, as for HTTP routes: among equal SNI matches the first wins.
    all.sort_by(|a, b| (a.3, a.1, a.0).cmp(&(b.3, b.1, b.0)));
    for (kind, key, spec, _) in all {
        translate(out, gateways, kind, key, spec);
    }
}

fn translate(
    out: &mut Translation<'_>,
    gateways: &mut BTreeMap<Key, ServedGateway>,
    kind: &str,
    key: &Key,
    spec: &L4RouteSpec,
) {
    let (namespace, name) = key;
    let label = kind.to_ascii_lowercase();
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
        let Some(gateway) = gateways.get_mut(&(gateway_ns, parent.name.clone())) else {
            continue;
        };
        match attach(gateway, kind, namespace, parent, &spec.hostnames) {
            Ok(found) => {
                for attachment in found {
                    listeners.extend(attachment.listeners);
                    hosts.extend(attachment.hosts);
                }
            }
            Err((_, message)) => out
                .problems
                .push(format!("{label} {namespace}/{name}: {message}")),
        }
    }
    listeners.sort();
    listeners.dedup();
    hosts.sort();
    hosts.dedup();
    if listeners.is_empty() {
        return;
    }
    let sni: Vec<HostMatch> = hosts
        .iter()
        .map(|h| super::hostnames::host_match(h))
        .collect();
    if kind == "TLSRoute" && sni.is_empty() {
        out.problems.push(format!(
            "{label} {namespace}/{name}: a TLSRoute needs hostnames (the SNI names it relays)"
        ));
        return;
    }
    let source = format!("{label}/{namespace}/{name}");
    for (index, rule) in spec.rules.iter().enumerate() {
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
        let upstream = match resolve(out, namespace, backend) {
            Ok(upstream) => upstream,
            Err(unresolved) => {
                out.problems.push(format!(
                    "{label} {namespace}/{name}: {}",
                    unresolved.message
                ));
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
}
