//! Gateways of our class and the HTTPRoutes attached to them -> routes.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::backends::Unresolved;
use super::hostnames::{host_match, on_listener};
use super::{condition, empty_route, prefix, respond_500, Key, Translation};
use super::{ClusterCertificate, GatewayStatus, RouteStatus};
use crate::config::model::{
    Action, HeaderEdits, Mirror, Name, PathMatch, PathRegex, Redirect, Route, ServicePort,
    WeightedUpstream,
};
use crate::control::sources::cluster_routes::objects::{
    GatewayListener, HeaderModifier, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRule,
    ParentRef, GATEWAY_GROUP,
};

/// A Gateway of our class as translation goes: which edgegate listeners each of its
/// listeners attaches to, and how many routes attached.
pub struct ServedGateway {
    namespace: String,
    generation: Option<i64>,
    listeners: Vec<ServedListener>,
}

struct ServedListener {
    spec: GatewayListener,
    /// Edgegate listeners on the same port with the matching protocol.
    attached_to: Vec<Name>,
    /// Why the listener cannot serve, if it cannot (reason, message).
    invalid: Option<(&'static str, String)>,
    unresolved_certificate: Option<String>,
    routes: i32,
}

impl ServedGateway {
    /// Counts a route attached to listener `index`, as [`attach`] did when the route was
    /// translated (for a route whose translation is kept).
    pub(super) fn count_attached(&mut self, index: usize) {
        if let Some(listener) = self.listeners.get_mut(index) {
            listener.routes += 1;
        }
    }

    pub fn status(&self) -> GatewayStatus {
        let g = self.generation;
        let broken: Vec<String> = self
            .listeners
            .iter()
            .filter_map(|l| l.invalid.as_ref().map(|(_, m)| m.clone()))
            .collect();
        let programmed = if broken.is_empty() {
            condition("Programmed", true, "Programmed", "served by edgegate", g)
        } else {
            condition("Programmed", false, "Invalid", broken.join("; "), g)
        };
        GatewayStatus {
            conditions: vec![
                condition("Accepted", true, "Accepted", "accepted by edgegate", g),
                programmed,
            ],
            listeners: self
                .listeners
                .iter()
                .map(|l| {
                    let mut conditions = vec![match &l.invalid {
                        None => condition("Programmed", true, "Programmed", "", g),
                        Some((reason, message)) => {
                            condition("Programmed", false, reason, message.clone(), g)
                        }
                    }];
                    conditions.push(match &l.invalid {
                        Some(("UnsupportedProtocol", message)) => {
                            condition("Accepted", false, "UnsupportedProtocol", message.clone(), g)
                        }
                        _ => condition("Accepted", true, "Accepted", "", g),
                    });
                    conditions.push(match &l.unresolved_certificate {
                        None => condition("ResolvedRefs", true, "ResolvedRefs", "", g),
                        Some(message) => condition(
                            "ResolvedRefs",
                            false,
                            "InvalidCertificateRef",
                            message.clone(),
                            g,
                        ),
                    });
                    (l.spec.name.clone(), l.routes, conditions)
                })
                .collect(),
            route_kinds: self
                .listeners
                .iter()
                .map(|l| {
                    let kind = match l.spec.protocol.as_str() {
                        "TLS" => "TLSRoute",
                        "TCP" => "TCPRoute",
                        _ => "HTTPRoute",
                    };
                    (l.spec.name.clone(), kind)
                })
                .collect(),
        }
    }
}

/// Gateways of `class`, each listener matched to the edgegate listeners on its port, and
/// the certificates their HTTPS listeners name.
pub fn served_gateways(out: &mut Translation<'_>, class: &str) -> BTreeMap<Key, ServedGateway> {
    let mut served = BTreeMap::new();
    for (key, gateway) in &out.objects.gateways {
        if gateway.spec.gateway_class_name != class {
            continue;
        }
        let listeners = gateway
            .spec
            .listeners
            .iter()
            .map(|spec| serve_listener(out, key, spec))
            .collect();
        served.insert(
            key.clone(),
            ServedGateway {
                namespace: key.0.clone(),
                generation: gateway.metadata.generation,
                listeners,
            },
        );
    }
    served
}

fn serve_listener(out: &mut Translation<'_>, key: &Key, spec: &GatewayListener) -> ServedListener {
    let (namespace, name) = key;
    let mut served = ServedListener {
        spec: spec.clone(),
        attached_to: Vec::new(),
        invalid: None,
        unresolved_certificate: None,
        routes: 0,
    };
    let passthrough = spec
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_deref())
        .is_some_and(|m| m == "Passthrough");
    let (tls, tcp) = match spec.protocol.as_str() {
        "HTTP" => (false, false),
        "HTTPS" => (true, false),
        // TLSRoutes relay by SNI without terminating.
        "TLS" if passthrough => (true, false),
        "TCP" => (false, true),
        other => {
            served.invalid = Some((
                "UnsupportedProtocol",
                format!(
                    "listener {}: protocol {other} is not served (HTTP, HTTPS, TLS with mode Passthrough and TCP are)",
                    spec.name
                ),
            ));
            return served;
        }
    };
    served.attached_to = out
        .listeners
        .iter()
        .filter(|l| i32::from(l.port) == spec.port && l.tls == tls && l.tcp == tcp)
        .map(|l| l.name.clone())
        .collect();
    if served.attached_to.is_empty() {
        let kind = match (tls, tcp) {
            (true, _) => "TLS",
            (false, true) => "tcp",
            (false, false) => "plain HTTP",
        };
        let message = format!(
            "listener {}: no edgegate {kind} listener on port {}",
            spec.name, spec.port
        );
        out.problems
            .push(format!("gateway {namespace}/{name} {message}"));
        served.invalid = Some(("Invalid", message));
        return served;
    }
    let refs = spec
        .tls
        .as_ref()
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or_default();
    for cert in refs {
        let kind = cert.kind.as_deref().unwrap_or("Secret");
        let group = cert.group.as_deref().unwrap_or("");
        let secret_ns = cert.namespace.as_deref().unwrap_or(namespace);
        let problem = if kind != "Secret" || !group.is_empty() {
            Some(format!(
                "certificateRef {kind} {}: only Secrets are read",
                cert.name
            ))
        } else if secret_ns != namespace
            && !out
                .backends
                .granted("Gateway", namespace, secret_ns, "Secret", &cert.name)
        {
            Some(format!(
                "secret {secret_ns}/{} is in another namespace and no ReferenceGrant there permits it",
                cert.name
            ))
        } else if let Some(secret) = out.secret(secret_ns, &cert.name) {
            out.certificates.push(ClusterCertificate {
                listeners: served.attached_to.clone(),
                source: format!("secret/{secret_ns}/{}", cert.name),
                cert: secret.cert.clone(),
                key: secret.key.clone(),
            });
            None
        } else {
            Some(format!(
                "secret {secret_ns}/{} not found (or not of type kubernetes.io/tls)",
                cert.name
            ))
        };
        if let Some(problem) = problem {
            out.problems.push(format!(
                "gateway {namespace}/{name} listener {}: {problem}",
                spec.name
            ));
            served.unresolved_certificate = Some(problem);
        }
    }
    served
}

/// Where one route attaches: edgegate listeners and the hosts served there.
pub(super) struct Attachment {
    pub(super) listeners: Vec<Name>,
    pub(super) hosts: Vec<String>,
    /// The Gateway listener's index, whose `attachedRoutes` counts the route.
    pub(super) index: usize,
}

pub fn translate(
    out: &mut Translation<'_>,
    gateways: &mut BTreeMap<Key, ServedGateway>,
    key: &Key,
    route: &HttpRoute,
) {
    let (namespace, name) = key;
    let generation = route.metadata.generation;
    let mut status = RouteStatus::default();
    let mut attachments: Vec<Attachment> = Vec::new();
    for parent in &route.spec.parent_refs {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            continue;
        }
        let gateway_ns = parent
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let gateway_key = (gateway_ns.clone(), parent.name.clone());
        // Noted found or not: a Gateway of our class appearing there changes this route.
        out.gateway_reads.push(gateway_key.clone());
        let Some(gateway) = gateways.get_mut(&gateway_key) else {
            // Not ours (another class, or not there): another controller's to report.
            continue;
        };
        let mut resolved_parent = parent.clone();
        resolved_parent.namespace = Some(gateway_ns);
        let accepted = attach(
            gateway,
            "HTTPRoute",
            namespace,
            parent,
            &route.spec.hostnames,
        );
        let accepted = match accepted {
            Ok(found) => {
                out.attached
                    .extend(found.iter().map(|a| (gateway_key.clone(), a.index)));
                attachments.extend(found);
                condition("Accepted", true, "Accepted", "attached", generation)
            }
            Err((reason, message)) => {
                out.problems
                    .push(format!("httproute {namespace}/{name}: {message}"));
                condition("Accepted", false, reason, message, generation)
            }
        };
        status.parents.push((resolved_parent, vec![accepted]));
    }
    if status.parents.is_empty() {
        return; // no parent of ours: not ours to serve or report
    }
    let groups = group_by_hosts(attachments);
    let source = format!("httproute/{namespace}/{name}");
    let mut unresolved: Vec<Unresolved> = Vec::new();
    let mut invalid_rules: Vec<String> = Vec::new();
    for (index, rule) in route.spec.rules.iter().enumerate() {
        let rule_name = format!("httproute/{namespace}/{name}/{index}");
        match rule_routes(out, namespace, rule, &rule_name, &source, &groups) {
            Ok((routes, problems)) => {
                unresolved.extend(problems);
                out.routes.extend(routes.into_iter().map(Arc::new));
            }
            Err(message) => invalid_rules.push(format!("rule {index}: {message}")),
        }
    }
    for u in &unresolved {
        out.problems
            .push(format!("httproute {namespace}/{name}: {}", u.message));
    }
    // The first problem's reason; every message, so one status shows all there is to fix.
    let resolved = match unresolved.first() {
        None => condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all backends resolved",
            generation,
        ),
        Some(u) => {
            let messages: Vec<&str> = unresolved.iter().map(|u| u.message.as_str()).collect();
            condition(
                "ResolvedRefs",
                false,
                u.reason,
                messages.join("; "),
                generation,
            )
        }
    };
    let partially = (!invalid_rules.is_empty()).then(|| {
        let message = format!("ignored: {}", invalid_rules.join("; "));
        out.problems
            .push(format!("httproute {namespace}/{name}: {message}"));
        condition(
            "PartiallyInvalid",
            true,
            "UnsupportedValue",
            message,
            generation,
        )
    });
    for (_, conditions) in &mut status.parents {
        conditions.push(resolved.clone());
        conditions.extend(partially.clone());
    }
    out.status.routes.insert(key.clone(), Arc::new(status));
}

/// The kind of route a Gateway listener of `protocol` admits.
fn admits(protocol: &str, route_kind: &str) -> bool {
    match protocol {
        "HTTP" | "HTTPS" => route_kind == "HTTPRoute",
        "TLS" => route_kind == "TLSRoute",
        "TCP" => route_kind == "TCPRoute",
        _ => false,
    }
}

/// The listeners of `gateway` a parentRef selects and admits (listeners of the protocol
/// `route_kind` attaches to), or why none does.
pub(super) fn attach(
    gateway: &mut ServedGateway,
    route_kind: &str,
    route_namespace: &str,
    parent: &ParentRef,
    route_hosts: &[String],
) -> Result<Vec<Attachment>, (&'static str, String)> {
    let mut selected = 0;
    let mut allowed = 0;
    let mut found = Vec::new();
    for (index, listener) in gateway.listeners.iter_mut().enumerate() {
        let spec = &listener.spec;
        if parent
            .section_name
            .as_ref()
            .is_some_and(|s| *s != spec.name)
            || parent.port.is_some_and(|p| p != spec.port)
        {
            continue;
        }
        selected += 1;
        let from = spec
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.as_deref())
            .unwrap_or("Same");
        let admitted = admits(&spec.protocol, route_kind)
            && match from {
                "All" => true,
                "Same" => route_namespace == gateway.namespace,
                _ => false, // Selector needs namespace labels, which are not watched
            };
        if !admitted {
            continue;
        }
        allowed += 1;
        if listener.invalid.is_some() {
            continue;
        }
        let Some(hosts) = on_listener(route_hosts, spec.hostname.as_deref()) else {
            continue;
        };
        listener.routes += 1;
        found.push(Attachment {
            listeners: listener.attached_to.clone(),
            hosts,
            index,
        });
    }
    if selected == 0 {
        return Err((
            "NoMatchingParent",
            format!(
                "gateway {} has no listener matching sectionName {:?} / port {:?}",
                parent.name, parent.section_name, parent.port
            ),
        ));
    }
    if allowed == 0 {
        return Err((
            "NotAllowedByListeners",
            format!(
                "gateway {} listeners do not allow routes from namespace {route_namespace} (allowedRoutes)",
                parent.name
            ),
        ));
    }
    if found.is_empty() {
        return Err((
            "NoMatchingListenerHostname",
            format!(
                "no listener of gateway {} serves any of the hostnames {route_hosts:?}, or none is programmed",
                parent.name
            ),
        ));
    }
    Ok(found)
}

/// Attachments with the same hosts become one route per match, on their listeners together.
fn group_by_hosts(attachments: Vec<Attachment>) -> Vec<Attachment> {
    let mut groups: Vec<Attachment> = Vec::new();
    for mut a in attachments {
        a.hosts.sort();
        a.hosts.dedup();
        match groups.iter_mut().find(|g| g.hosts == a.hosts) {
            Some(group) => {
                for l in a.listeners {
                    if !group.listeners.contains(&l) {
                        group.listeners.push(l);
                    }
                }
            }
            None => groups.push(a),
        }
    }
    groups
}

/// One rule -> one route per (match, host group), with its backends' problems.
/// `Err` when the rule uses something edgegate does not serve.
fn rule_routes(
    out: &mut Translation<'_>,
    namespace: &str,
    rule: &HttpRouteRule,
    rule_name: &str,
    source: &str,
    groups: &[Attachment],
) -> Result<(Vec<Route>, Vec<Unresolved>), String> {
    let default_match = [HttpRouteMatch::default()];
    let matches = if rule.matches.is_empty() {
        &default_match[..]
    } else {
        &rule.matches
    };
    let mut template = empty_route(rule_name.to_string(), source, 0);
    let mut redirect = None;
    let mut rewrite = None;
    let mut mirror_problems = Vec::new();
    for filter in &rule.filters {
        if filter.kind == "RequestMirror" {
            if template.mirror.is_some() {
                return Err("more than one RequestMirror in a rule is not served".to_string());
            }
            match request_mirror(out, namespace, filter)? {
                Ok(mirror) => template.mirror = Some(mirror),
                // Reported; the rule is served without its mirror, which must never
                // fail the real requests.
                Err(unresolved) => mirror_problems.push(unresolved),
            }
            continue;
        }
        apply_filter(filter, &mut template, &mut redirect, &mut rewrite)?;
    }
    let (action, mut problem) = match redirect {
        Some(redirect) => (Action::Redirect(redirect), Vec::new()),
        None => backend_action(out, namespace, rule),
    };
    problem.extend(mirror_problems);
    template.action = action;
    let mut routes = Vec::new();
    for m in matches {
        let mut matched = template.clone();
        match_conditions(m, &mut matched)?;
        if let Some(rewrite) = &rewrite {
            apply_rewrite(rewrite, &mut matched)?;
        }
        for group in groups {
            let mut route = matched.clone();
            route.order = out.next_order();
            route.listeners = Some(group.listeners.clone());
            route.hosts = group.hosts.iter().map(|h| host_match(h)).collect();
            routes.push(route);
        }
    }
    Ok((routes, problem))
}

/// The path part of a URLRewrite, applied once the match's path is known.
#[derive(Clone)]
enum Rewrite {
    Prefix(String),
    Full(String),
}

fn apply_rewrite(rewrite: &Rewrite, route: &mut Route) -> Result<(), String> {
    match (rewrite, &route.path) {
        (Rewrite::Full(path), _) => route.rewrite_path = Some(path.clone()),
        (Rewrite::Prefix(to), PathMatch::Prefix(_)) => route.rewrite_prefix = Some(to.clone()),
        (Rewrite::Prefix(to), PathMatch::Exact(_)) => route.rewrite_path = Some(to.clone()),
        (Rewrite::Prefix(_), PathMatch::Regex(_)) => {
            return Err("ReplacePrefixMatch needs a PathPrefix match".to_string())
        }
    }
    Ok(())
}

fn apply_filter(
    filter: &HttpRouteFilter,
    route: &mut Route,
    redirect: &mut Option<Redirect>,
    rewrite: &mut Option<Rewrite>,
) -> Result<(), String> {
    match filter.kind.as_str() {
        "RequestHeaderModifier" => {
            let m = filter
                .request_header_modifier
                .as_ref()
                .ok_or("RequestHeaderModifier without its settings")?;
            merge_edits(&mut route.request_headers, m)?;
        }
        "ResponseHeaderModifier" => {
            let m = filter
                .response_header_modifier
                .as_ref()
                .ok_or("ResponseHeaderModifier without its settings")?;
            merge_edits(&mut route.response_headers, m)?;
        }
        "RequestRedirect" => {
            let r = filter
                .request_redirect
                .as_ref()
                .ok_or("RequestRedirect without its settings")?;
            let status = StatusCode::from_u16(r.status_code.unwrap_or(302) as u16)
                .ok()
                .filter(|s| s.is_redirection())
                .ok_or("redirect statusCode must be 3xx")?;
            let path = match &r.path {
                None => None,
                Some(p) if p.kind == "ReplaceFullPath" => p.replace_full_path.clone(),
                Some(p) => return Err(format!("redirect path {} is not served", p.kind)),
            };
            *redirect = Some(Redirect {
                scheme: r.scheme.clone(),
                host: r.hostname.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path,
                status,
            });
        }
        "URLRewrite" => {
            let r = filter
                .url_rewrite
                .as_ref()
                .ok_or("URLRewrite without its settings")?;
            if let Some(host) = &r.hostname {
                let value = HeaderValue::from_str(host).map_err(|e| e.to_string())?;
                route.request_headers.set.push((http::header::HOST, value));
            }
            *rewrite = match &r.path {
                None => None,
                Some(p) => match (
                    p.kind.as_str(),
                    &p.replace_full_path,
                    &p.replace_prefix_match,
                ) {
                    ("ReplaceFullPath", Some(full), _) => Some(Rewrite::Full(full.clone())),
                    ("ReplacePrefixMatch", _, Some(to)) => Some(Rewrite::Prefix(to.clone())),
                    (kind, _, _) => {
                        return Err(format!("URLRewrite path {kind} without its value"))
                    }
                },
            };
        }
        other => return Err(format!("filter {other} is not served")),
    }
    Ok(())
}

/// `RequestMirror` -> the route's `mirror`: `Err` for settings edgegate cannot read,
/// `Ok(Err)` for a backend that does not resolve (reported in ResolvedRefs).
fn request_mirror(
    out: &mut Translation<'_>,
    namespace: &str,
    filter: &HttpRouteFilter,
) -> Result<Result<Mirror, Unresolved>, String> {
    let m = filter
        .request_mirror
        .as_ref()
        .ok_or("RequestMirror without its settings")?;
    let percent = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => return Err("RequestMirror with both percent and fraction".into()),
        (Some(p), None) if (0..=100).contains(&p) => f64::from(p),
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            if denominator < 1 || f.numerator < 0 || f.numerator > denominator {
                return Err("RequestMirror fraction must be between 0 and 1".into());
            }
            100.0 * f64::from(f.numerator) / f64::from(denominator)
        }
        (None, None) => 100.0,
        (Some(_), None) => return Err("RequestMirror percent must be from 0 to 100".into()),
    };
    let backend = m
        .backend_ref
        .as_ref()
        .ok_or("RequestMirror without a backendRef")?;
    Ok(resolve(out, namespace, backend).map(|upstream| Mirror { upstream, percent }))
}

fn merge_edits(edits: &mut HeaderEdits, m: &HeaderModifier) -> Result<(), String> {
    let header = |name: &str| {
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))
    };
    let value =
        |v: &str| HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}"));
    for nv in &m.set {
        edits.set.push((header(&nv.name)?, value(&nv.value)?));
    }
    for nv in &m.add {
        edits.add.push((header(&nv.name)?, value(&nv.value)?));
    }
    for name in &m.remove {
        edits.remove.push(header(name)?);
    }
    Ok(())
}

fn match_conditions(m: &HttpRouteMatch, route: &mut Route) -> Result<(), String> {
    if let Some(path) = &m.path {
        let value = path.value.as_deref().unwrap_or("/");
        route.path = match path.kind.as_deref().unwrap_or("PathPrefix") {
            "PathPrefix" => prefix(value),
            "Exact" => PathMatch::Exact(value.to_string()),
            "RegularExpression" => {
                // Whole-path match, as the Gateway API's conformance tests expect.
                let anchored = format!("^(?:{value})$");
                let regex =
                    Regex::new(&anchored).map_err(|e| format!("invalid path regex: {e}"))?;
                PathMatch::Regex(PathRegex(regex))
            }
            other => return Err(format!("path match type {other} is not served")),
        };
    }
    for h in &m.headers {
        if h.kind.as_deref().is_some_and(|k| k != "Exact") {
            return Err("only Exact header matches are served".to_string());
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", h.name))?;
        route.headers.push((name, h.value.clone()));
    }
    for q in &m.query_params {
        if q.kind.as_deref().is_some_and(|k| k != "Exact") {
            return Err("only Exact query parameter matches are served".to_string());
        }
        route.query.push((q.name.clone(), q.value.clone()));
    }
    if let Some(method) = &m.method {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("invalid method {method:?}"))?;
        route.methods = Some(vec![method]);
    }
    Ok(())
}

/// The rule's backendRefs as an action: one upstream, a weighted split, or 500 when none
/// resolves. Unresolved backends keep their share of a split and answer 500 for it.
fn backend_action(
    out: &mut Translation<'_>,
    namespace: &str,
    rule: &HttpRouteRule,
) -> (Action, Vec<Unresolved>) {
    let mut backends = Vec::new();
    let mut problems = Vec::new();
    for backend in &rule.backend_refs {
        let weight = backend.weight.unwrap_or(1).clamp(0, 1_000_000) as u32;
        let resolved = resolve(out, namespace, backend);
        if let Err(u) = &resolved {
            problems.push(u.clone());
        }
        if weight > 0 {
            backends.push(WeightedUpstream {
                upstream: resolved.ok(),
                weight,
            });
        }
    }
    let action = match backends.as_slice() {
        [] => respond_500("no backend\n"),
        _ if backends.iter().all(|b| b.upstream.is_none()) => respond_500("backend not resolved\n"),
        [WeightedUpstream {
            upstream: Some(name),
            ..
        }] => Action::Upstream(name.clone()),
        _ => Action::Weighted(backends),
    };
    (action, problems)
}

pub(super) fn resolve(
    out: &mut Translation<'_>,
    namespace: &str,
    backend: &crate::control::sources::cluster_routes::objects::BackendRef,
) -> Result<Name, Unresolved> {
    resolve_for(out, "HTTPRoute", namespace, backend)
}

/// [`resolve`] for a route of `route_kind`: a ReferenceGrant permits one kind of route
/// (`from.kind`), so a grant to HTTPRoutes does not open a namespace to TLSRoutes.
pub(super) fn resolve_for(
    out: &mut Translation<'_>,
    route_kind: &str,
    namespace: &str,
    backend: &crate::control::sources::cluster_routes::objects::BackendRef,
) -> Result<Name, Unresolved> {
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(Unresolved {
            reason: "InvalidKind",
            message: format!(
                "backendRef {kind} {}: only Services are served",
                backend.name
            ),
        });
    }
    let target_ns = backend.namespace.as_deref().unwrap_or(namespace);
    if target_ns != namespace
        && !out
            .backends
            .granted(route_kind, namespace, target_ns, "Service", &backend.name)
    {
        return Err(Unresolved {
            reason: "RefNotPermitted",
            message: format!(
                "backend {target_ns}/{} is in another namespace: a ReferenceGrant in {target_ns} must permit {route_kind}s from {namespace}",
                backend.name
            ),
        });
    }
    let Some(port) = backend.port.and_then(|p| u16::try_from(p).ok()) else {
        return Err(Unresolved {
            reason: "UnsupportedValue",
            message: format!(
                "backend {target_ns}/{}: a Service backend needs a port",
                backend.name
            ),
        });
    };
    out.backends
        .service(target_ns, &backend.name, ServicePort::Number(port))
}
