//! Cluster objects -> the model's routes, upstreams and certificates, plus the status to
//! write back. Pure: the watches hand in what they know, this returns what to serve, so
//! every Gateway API rule is tested here without an API server.
//!
//! Routes join the file's in one router. Their `order` starts at [`CLUSTER_ORDER_BASE`],
//! so among otherwise equal routes the file's always come first, and
//! cluster objects follow one another by creation time, then namespace and name.

mod annotations;
mod backends;
mod hostnames;
mod httproute;
mod ingress;
mod ingress_basic;
mod l4routes;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::objects::{Gateway, HttpRoute, ParentRef, ReferenceGrant, TcpRoute, TlsRoute};
use crate::config::model::{
    self, Action, HeaderEdits, Listener, Name, PathMatch, Respond, Route, Upstream,
};
use crate::config::Location;

/// Where cluster routes' `order` starts: after every file route.
pub const CLUSTER_ORDER_BASE: usize = Route::CLUSTER_ORDER_BASE;

/// `(namespace, name)`.
pub type Key = (String, String);

/// What the watches know: every object of the kinds cluster routes read, by namespace and
/// name. Services and Secrets are reduced to the parts a route uses.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub gateways: BTreeMap<Key, Gateway>,
    pub routes: BTreeMap<Key, HttpRoute>,
    pub tls_routes: BTreeMap<Key, TlsRoute>,
    pub tcp_routes: BTreeMap<Key, TcpRoute>,
    pub grants: BTreeMap<Key, ReferenceGrant>,
    pub ingresses: BTreeMap<Key, Ingress>,
    pub services: BTreeMap<Key, ServicePorts>,
    pub secrets: BTreeMap<Key, TlsSecret>,
    /// `Opaque` Secrets: where an Ingress's `auth-secret` finds its users.
    pub opaque_secrets: BTreeMap<Key, OpaqueSecret>,
}

/// A Service's ports, `(name, port)`; an unnamed port has an empty name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePorts(pub Vec<(String, i32)>);

/// A `kubernetes.io/tls` Secret's `tls.crt` and `tls.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSecret {
    pub cert: Bytes,
    pub key: Bytes,
}

/// An `Opaque` Secret's data by key. Its values are credentials (hashes at best), so
/// `Debug` shows the keys only: a logged translation never carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OpaqueSecret(pub BTreeMap<String, Bytes>);

impl std::fmt::Debug for OpaqueSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What the cluster contributes to the next snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterRoutes {
    pub routes: Vec<Arc<Route>>,
    /// TLS passthrough by SNI (the Ingress `ssl-passthrough` annotation).
    pub tcp_routes: Vec<Arc<model::TcpRoute>>,
    /// One per (Service, port) named by any route, so one discovery watch per Service.
    pub upstreams: Vec<Upstream>,
    pub certificates: Vec<ClusterCertificate>,
    pub status: Status,
    /// Things a person should fix, each naming its object; logged when they change.
    pub problems: Vec<String>,
    /// The file's listeners this was translated against. Gateway listeners attach by
    /// port, so when a reload renames a listener, the names here say which listener
    /// each route and certificate meant until the watches translate again.
    pub listeners: Vec<ListenerFacts>,
    /// Authenticators from Ingress annotations (`auth-url`, or `auth-type: basic` with
    /// the users of its `auth-secret`), named `ingress/NS/NAME`.
    pub auth: Vec<Arc<model::Authenticator>>,
}

impl ClusterRoutes {
    /// Listener names this translation used that the file's `listeners` now call
    /// otherwise: the listener on the same port, with or without TLS alike. Empty when
    /// nothing was renamed (the common case).
    pub fn renamed_listeners(&self, listeners: &[Listener]) -> HashMap<Name, Name> {
        let mut renamed = HashMap::new();
        for fact in &self.listeners {
            let same = |l: &&Listener| l.address.port() == fact.port && l.tls.is_some() == fact.tls;
            if listeners.iter().filter(same).any(|l| l.name == fact.name) {
                continue;
            }
            let mut now = listeners
                .iter()
                .filter(same)
                .filter(|l| !self.listeners.iter().any(|f| f.name == l.name));
            if let (Some(one), None) = (now.next(), now.next()) {
                renamed.insert(fact.name.clone(), one.name.clone());
            }
        }
        renamed
    }

    /// The file's config with the cluster's routes after its own and the cluster's
    /// upstreams added. A file upstream of the same name wins (a file is explicit).
    pub fn merged_onto(&self, file: &model::Config) -> model::Config {
        let mut config = file.clone();
        let renamed = self.renamed_listeners(&file.listeners);
        if renamed.is_empty() {
            config.routes.extend(self.routes.iter().cloned());
        } else {
            config.routes.extend(self.routes.iter().map(|route| {
                let Some(names) = &route.listeners else {
                    return route.clone();
                };
                if !names.iter().any(|n| renamed.contains_key(n)) {
                    return route.clone();
                }
                let mut moved = (**route).clone();
                moved.listeners = Some(
                    names
                        .iter()
                        .map(|n| renamed.get(n).unwrap_or(n).clone())
                        .collect(),
                );
                Arc::new(moved)
            }));
        }
        config.tcp_routes.extend(self.tcp_routes.iter().cloned());
        for upstream in &self.upstreams {
            if config.upstream(&upstream.name).is_none() {
                config.upstreams.push(upstream.clone());
            }
        }
        for auth in &self.auth {
            if config.authenticator(&auth.name).is_none() {
                config.auth.push(auth.clone());
            }
        }
        config
    }
}

/// A certificate from a Secret, served on the named TLS listeners by SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCertificate {
    pub listeners: Vec<Name>,
    /// `secret/NS/NAME`.
    pub source: String,
    pub cert: Bytes,
    pub key: Bytes,
}

/// Status conditions to write back, by object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub routes: BTreeMap<Key, RouteStatus>,
    pub gateways: BTreeMap<Key, GatewayStatus>,
    /// Ingresses of our class, served.
    pub ingresses: BTreeSet<Key>,
    /// TLSRoutes and TCPRoutes, by kind (`"TLSRoute"`, `"TCPRoute"`) and object.
    pub l4_routes: BTreeMap<(&'static str, Key), RouteStatus>,
    /// What a person should know about an Ingress's annotations (not served, or not
    /// readable), written as Warning events on it.
    pub ingress_warnings: BTreeMap<Key, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    /// The object's `metadata.generation` the condition was computed from.
    pub observed_generation: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteStatus {
    /// One entry per parentRef naming a Gateway of our class.
    pub parents: Vec<(ParentRef, Vec<Condition>)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayStatus {
    pub conditions: Vec<Condition>,
    /// Per Gateway listener: name, routes attached, conditions.
    pub listeners: Vec<(String, i32, Vec<Condition>)>,
    /// Per Gateway listener by name, the route kind it admits (`supportedKinds`): a `TLS`
    /// listener takes TLSRoutes, a `TCP` one TCPRoutes, the others HTTPRoutes.
    pub route_kinds: BTreeMap<String, &'static str>,
}

/// The edgegate listeners a Gateway listener can attach to.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerFacts {
    pub name: Name,
    pub port: u16,
    pub tls: bool,
    /// `protocol = "tcp"`: where TCPRoutes attach.
    pub tcp: bool,
}

impl ListenerFacts {
    pub fn of(listeners: &[Listener]) -> Vec<ListenerFacts> {
        listeners
            .iter()
            .map(|l| ListenerFacts {
                name: l.name.clone(),
                port: l.address.port(),
                tls: l.tls.is_some(),
                tcp: l.protocol == model::ListenerProtocol::Tcp,
            })
            .collect()
    }
}

/// Translates everything the watches know. `settings` decides which classes are ours;
/// `listeners` are the file's, to which Gateway listeners attach by port.
pub fn translate(
    objects: &ClusterObjects,
    settings: &model::KubernetesSettings,
    listeners: &[ListenerFacts],
) -> ClusterRoutes {
    let mut out = Translation {
        objects,
        listeners,
        backends: backends::Backends::new(objects),
        routes: Vec::new(),
        tcp_routes: Vec::new(),
        certificates: Vec::new(),
        status: Status::default(),
        problems: Vec::new(),
        auth: Vec::new(),
        canaries: Vec::new(),
        order: CLUSTER_ORDER_BASE,
    };
    let gateways = match &settings.gateway_class {
        Some(class) => httproute::served_gateways(&mut out, class),
        None => BTreeMap::new(),
    };
    // Every served object in one order: creation time, then namespace and name.
    enum Item<'a> {
        Route(&'a Key, &'a HttpRoute),
        Ingress(&'a Key, &'a Ingress),
    }
    let mut items: Vec<(Option<&Time>, &Key, Item<'_>)> = Vec::new();
    if settings.gateway_class.is_some() {
        for (key, route) in &objects.routes {
            let created = route.metadata.creation_timestamp.as_ref();
            items.push((created, key, Item::Route(key, route)));
        }
    }
    if let Some(class) = &settings.ingress_class {
        for (key, ingress) in &objects.ingresses {
            let ours = ingress
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref())
                == Some(class.as_str());
            if ours {
                let created = ingress.metadata.creation_timestamp.as_ref();
                items.push((created, key, Item::Ingress(key, ingress)));
            }
        }
    }
    items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let ingresses: Vec<(&Key, &Ingress)> = items
        .iter()
        .filter_map(|(_, _, item)| match item {
            Item::Ingress(key, ingress) => Some((*key, *ingress)),
            Item::Route(..) => None,
        })
        .collect();
    ingress::collect_canaries(&mut out, &ingresses);
    let mut gateways = gateways;
    for (_, _, item) in items {
        match item {
            Item::Route(key, route) => httproute::translate(&mut out, &mut gateways, key, route),
            Item::Ingress(key, ingress) => ingress::translate(&mut out, key, ingress),
        }
    }
    ingress::report_unused_canaries(&mut out);
    if settings.gateway_class.is_some() {
        l4routes::translate_all(&mut out, &mut gateways);
    }
    for (key, gateway) in gateways {
        out.status.gateways.insert(key, gateway.status());
    }
    ClusterRoutes {
        routes: out.routes,
        tcp_routes: out.tcp_routes,
        upstreams: out.backends.into_upstreams(),
        certificates: out.certificates,
        status: out.status,
        problems: out.problems,
        listeners: listeners.to_vec(),
        auth: out.auth,
    }
}

/// Working state of one translation.
struct Translation<'a> {
    objects: &'a ClusterObjects,
    listeners: &'a [ListenerFacts],
    backends: backends::Backends<'a>,
    routes: Vec<Arc<Route>>,
    tcp_routes: Vec<Arc<model::TcpRoute>>,
    certificates: Vec<ClusterCertificate>,
    status: Status,
    problems: Vec<String>,
    auth: Vec<Arc<model::Authenticator>>,
    /// Paths of canary Ingresses, joined to their main Ingress's routes.
    canaries: Vec<ingress::CanaryRoute>,
    order: usize,
}

impl Translation<'_> {
    fn next_order(&mut self) -> usize {
        self.order += 1;
        self.order
    }

    fn tls_listeners(&self) -> Vec<Name> {
        self.listeners
            .iter()
            .filter(|l| l.tls)
            .map(|l| l.name.clone())
            .collect()
    }
}

/// A route with nothing but its name, source and order set; the caller fills the rest.
fn empty_route(name: String, source: &str, order: usize) -> Route {
    Route {
        name: name.into(),
        order,
        listeners: None,
        hosts: Vec::new(),
        path: PathMatch::Prefix("/".to_string()),
        methods: None,
        headers: Vec::new(),
        cookies: Vec::new(),
        query: Vec::new(),
        action: respond_500("no backend\n"),
        rewrite_prefix: None,
        rewrite_path: None,
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        timeout: None,
        max_body_size: None,
        auth: None,
        policy: None,
        compress: None,
        mirror: None,
        // The source object stands where a file route has its line, so `/config`, logs
        // and `route` name the object a person edits.
        location: Location {
            path: PathBuf::from(source),
            line: 0,
            column: 0,
        },
    }
}

/// What a rule whose backends all fail to resolve answers.
fn respond_500(body: &'static str) -> Action {
    Action::Respond(Respond {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: Bytes::from_static(body.as_bytes()),
        content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
    })
}

/// A path prefix as the model keeps it: no trailing slash, the root is `/`.
fn prefix(value: &str) -> PathMatch {
    let trimmed = value.trim_end_matches('/');
    PathMatch::Prefix(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

fn condition(
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        kind,
        status,
        reason,
        message: message.into(),
        observed_generation: generation,
    }
}
