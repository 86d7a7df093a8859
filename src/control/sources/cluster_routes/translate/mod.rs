//! Cluster objects -> the model's routes, upstreams and certificates, plus the status to
//! write back. Pure: the watches hand in what they know, this returns what to serve, so
//! every Gateway API rule is tested here without an API server.
//!
//! Routes join the file's in one router. Their `order` starts at [`CLUSTER_ORDER_BASE`],
//! so among otherwise equal routes the file's always come first, and
//! cluster objects follow one another by creation time, then namespace and name.
//!
//! A [`Translator`] keeps what each HTTPRoute and Ingress translated to, with what that
//! result read (Gateways, Services, Secrets, ReferenceGrants), so an edit translates
//! only the objects it touches: at a thousand routes, re-translating all of them was
//! most of an edit's time. Its result always equals [`translate`] of the same objects
//! (the tests hold it to that through random edit sequences).

mod annotations;
mod backends;
mod hostnames;
mod httproute;
#[cfg(test)]
mod incremental_tests;
mod ingress;
mod ingress_basic;
mod l4routes;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
///
/// Objects are shared: a copy of the whole store for each translation costs pointer
/// copies, and an object that did not change since the last translation is the same
/// allocation, which is how the [`Translator`] tells it apart cheaply.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub gateways: BTreeMap<Key, Arc<Gateway>>,
    pub routes: BTreeMap<Key, Arc<HttpRoute>>,
    pub tls_routes: BTreeMap<Key, Arc<TlsRoute>>,
    pub tcp_routes: BTreeMap<Key, Arc<TcpRoute>>,
    pub grants: BTreeMap<Key, Arc<ReferenceGrant>>,
    pub ingresses: BTreeMap<Key, Arc<Ingress>>,
    pub services: BTreeMap<Key, Arc<ServicePorts>>,
    pub secrets: BTreeMap<Key, Arc<TlsSecret>>,
    /// `Opaque` Secrets: where an Ingress's `auth-secret` finds its users.
    pub opaque_secrets: BTreeMap<Key, Arc<OpaqueSecret>>,
}

/// Whether two versions of an HTTPRoute translate the same: what translation reads of
/// it (a status, a resourceVersion or a label changes nothing).
pub fn route_translates_same(a: &HttpRoute, b: &HttpRoute) -> bool {
    a.spec == b.spec && same_meta(&a.metadata, &b.metadata)
}

/// Whether two versions of an Ingress translate the same. Its annotations are read (they
/// carry policies) and, unlike its spec, editing them does not bump its generation.
pub fn ingress_translates_same(a: &Ingress, b: &Ingress) -> bool {
    a.spec == b.spec
        && a.metadata.annotations == b.metadata.annotations
        && same_meta(&a.metadata, &b.metadata)
}

/// The metadata translation reads besides namespace and name (the generation goes into
/// status conditions, the creation time orders routes).
pub fn same_meta(
    a: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    b: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    a.generation == b.generation && a.creation_timestamp == b.creation_timestamp
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
#[derive(Debug, Clone, Default)]
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

/// Shared parts compare by pointer first: after an edit nearly every route is the same
/// allocation as before, and the watch and the publisher each compare a result with the
/// last one (ten thousand routes compared field by field cost more than the edit).
impl PartialEq for ClusterRoutes {
    fn eq(&self, other: &Self) -> bool {
        same_arcs(&self.routes, &other.routes)
            && same_arcs(&self.tcp_routes, &other.tcp_routes)
            && self.upstreams == other.upstreams
            && self.certificates == other.certificates
            && self.status == other.status
            && self.problems == other.problems
            && self.listeners == other.listeners
            && same_arcs(&self.auth, &other.auth)
    }
}

fn same_arcs<T: PartialEq>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(x, y) || **x == **y)
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
    /// Shared with the translation cache: an unchanged route's status is the same
    /// allocation from one translation to the next.
    pub routes: BTreeMap<Key, Arc<RouteStatus>>,
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
    Translator::default().translate(objects, settings, listeners)
}

/// Translation across changes: the watches keep one and hand it every new state of the
/// objects. Each HTTPRoute and Ingress is translated on its own and its result kept
/// with what it read; the next call translates again only the objects that changed and
/// those whose reads did (a Gateway, a Service, a Secret, the ReferenceGrants of a
/// namespace, added, removed or edited). Gateways themselves, TLSRoutes and TCPRoutes
/// are few and translated every time. New settings or listeners start from nothing.
#[derive(Default)]
pub struct Translator {
    inputs: Option<(model::KubernetesSettings, Vec<ListenerFacts>)>,
    /// The objects of the last call that pieces read: what `pieces` are valid for (the
    /// HTTPRoutes and Ingresses themselves are in the pieces).
    previous: Reread,
    /// In the order of the last call's objects (creation time, key, kind), so the next
    /// call pairs them with its objects in one walk.
    pieces: Vec<Piece>,
    /// The upstreams the pieces name, with how many pieces name each.
    upstreams: BTreeMap<Name, (Upstream, usize)>,
    translated: usize,
}

impl Translator {
    /// How many HTTPRoutes and Ingresses the last call translated; the others' results
    /// were kept.
    pub fn translated(&self) -> usize {
        self.translated
    }

    pub fn translate(
        &mut self,
        objects: &ClusterObjects,
        settings: &model::KubernetesSettings,
        listeners: &[ListenerFacts],
    ) -> ClusterRoutes {
        let same_inputs = self
            .inputs
            .as_ref()
            .is_some_and(|(s, l)| s == settings && l.as_slice() == listeners);
        let changed = if same_inputs {
            self.previous.changes(objects)
        } else {
            // Other classes or listeners: any object may read differently.
            self.pieces.clear();
            self.upstreams.clear();
            self.inputs = Some((settings.clone(), listeners.to_vec()));
            Changed::default()
        };
        self.previous = Reread::of(objects);
        self.translated = 0;

        let mut head = Translation::new(objects, listeners, CLUSTER_ORDER_BASE);
        let mut gateways = match &settings.gateway_class {
            Some(class) => httproute::served_gateways(&mut head, class),
            None => BTreeMap::new(),
        };
        // Every served object in one order: creation time, then namespace and name.
        let mut items: Vec<(Option<&Time>, &Key, Item<'_>)> = Vec::new();
        if settings.gateway_class.is_some() {
            for (key, route) in &objects.routes {
                let created = route.metadata.creation_timestamp.as_ref();
                items.push((created, key, Item::Route(route)));
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
                    items.push((created, key, Item::Ingress(ingress)));
                }
            }
        }
        items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        // Canary Ingresses first: their paths join whichever main Ingress comes first
        // with the same host and path. While there are any, every Ingress is translated
        // afresh (which main takes which canary depends on all of them); they are few.
        let ingresses: Vec<(&Key, &Ingress)> = items
            .iter()
            .filter_map(|(_, key, item)| match item {
                Item::Ingress(ingress) => Some((*key, &***ingress)),
                Item::Route(_) => None,
            })
            .collect();
        ingress::collect_canaries(&mut head, &ingresses);
        let mut canaries = std::mem::take(&mut head.canaries);
        let with_canaries = !canaries.is_empty();

        let mut out = ClusterRoutes {
            certificates: std::mem::take(&mut head.certificates),
            problems: std::mem::take(&mut head.problems),
            routes: Vec::with_capacity(self.pieces.iter().map(|p| p.routes.len()).sum()),
            ..ClusterRoutes::default()
        };
        let mut previous = std::mem::take(&mut self.pieces).into_iter().peekable();
        self.pieces.reserve(items.len());
        let mut orders = 0;
        for (created, key, item) in items {
            // Both in the same order: pieces before this object are of objects gone (or
            // created again), one equal to it is its last translation.
            let mut last = None;
            while let Some(piece) = previous.peek() {
                let order = (piece.created.as_ref(), &piece.key, piece.kind).cmp(&(
                    created,
                    key,
                    item.kind(),
                ));
                match order {
                    std::cmp::Ordering::Less => {
                        if let Some(gone) = previous.next() {
                            self.release(&gone);
                        }
                    }
                    std::cmp::Ordering::Equal => {
                        last = previous.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let ingress_kept = |piece: &Piece| {
                piece.kind != ItemKind::Ingress
                    || !(with_canaries || piece.with_canaries || changed.opaque_secrets)
            };
            let kept = match last {
                Some(piece)
                    if piece.source.matches(item)
                        && !changed.touches(&piece.reads)
                        && ingress_kept(&piece) =>
                {
                    Some(piece)
                }
                Some(stale) => {
                    self.release(&stale);
                    None
                }
                None => None,
            };
            let piece = match kept {
                Some(mut piece) => {
                    piece.source = item.source();
                    for (gateway, listener) in &piece.attached {
                        if let Some(gateway) = gateways.get_mut(gateway) {
                            gateway.count_attached(*listener);
                        }
                    }
                    piece.place(CLUSTER_ORDER_BASE + orders);
                    piece
                }
                None => {
                    self.translated += 1;
                    let base = CLUSTER_ORDER_BASE + orders;
                    let piece = Piece::translate(
                        objects,
                        listeners,
                        (&mut gateways, &mut canaries),
                        (created, key),
                        item,
                        base,
                    );
                    self.acquire(&piece);
                    piece
                }
            };
            orders += piece.orders;
            piece.emit(&mut out);
            self.pieces.push(piece);
        }
        for gone in previous {
            self.release(&gone);
        }

        let mut tail = Translation::new(objects, listeners, CLUSTER_ORDER_BASE + orders);
        tail.canaries = canaries;
        ingress::report_unused_canaries(&mut tail);
        if settings.gateway_class.is_some() {
            l4routes::translate_all(&mut tail, &mut gateways);
        }
        out.tcp_routes.append(&mut tail.tcp_routes);
        out.problems.append(&mut tail.problems);
        out.status.l4_routes.append(&mut tail.status.l4_routes);
        for (key, warnings) in std::mem::take(&mut tail.status.ingress_warnings) {
            out.status
                .ingress_warnings
                .entry(key)
                .or_default()
                .extend(warnings);
        }
        for (key, gateway) in gateways {
            out.status.gateways.insert(key, gateway.status());
        }
        let mut upstreams: BTreeMap<Name, Upstream> = self
            .upstreams
            .iter()
            .map(|(name, (upstream, _))| (name.clone(), upstream.clone()))
            .collect();
        for upstream in [head.backends, tail.backends]
            .into_iter()
            .flat_map(|b| b.into_parts().0)
        {
            upstreams.entry(upstream.name.clone()).or_insert(upstream);
        }
        out.upstreams = upstreams.into_values().collect();
        out.listeners = listeners.to_vec();
        out
    }

    fn acquire(&mut self, piece: &Piece) {
        for upstream in &piece.upstreams {
            self.upstreams
                .entry(upstream.name.clone())
                .or_insert_with(|| (upstream.clone(), 0))
                .1 += 1;
        }
    }

    fn release(&mut self, piece: &Piece) {
        for upstream in &piece.upstreams {
            if let Some((_, uses)) = self.upstreams.get_mut(&upstream.name) {
                *uses -= 1;
                if *uses == 0 {
                    self.upstreams.remove(&upstream.name);
                }
            }
        }
    }
}

/// The kinds translated one object at a time (in this order where creation time and
/// key are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ItemKind {
    Route,
    Ingress,
}

#[derive(Clone, Copy)]
enum Item<'a> {
    Route(&'a Arc<HttpRoute>),
    Ingress(&'a Arc<Ingress>),
}

impl Item<'_> {
    fn kind(self) -> ItemKind {
        match self {
            Item::Route(_) => ItemKind::Route,
            Item::Ingress(_) => ItemKind::Ingress,
        }
    }

    fn source(self) -> Source {
        match self {
            Item::Route(route) => Source::Route(route.clone()),
            Item::Ingress(ingress) => Source::Ingress(ingress.clone()),
        }
    }
}

/// The object a piece was translated from.
enum Source {
    Route(Arc<HttpRoute>),
    Ingress(Arc<Ingress>),
}

impl Source {
    /// Whether `item` translates as this did: the same allocation (untouched since), or
    /// a new version that differs only in what translation does not read.
    fn matches(&self, item: Item<'_>) -> bool {
        match (self, item) {
            (Source::Route(a), Item::Route(b)) => Arc::ptr_eq(a, b) || route_translates_same(a, b),
            (Source::Ingress(a), Item::Ingress(b)) => {
                Arc::ptr_eq(a, b) || ingress_translates_same(a, b)
            }
            _ => false,
        }
    }
}

/// What one HTTPRoute or Ingress translated to, and what it read to get there.
struct Piece {
    created: Option<Time>,
    key: Key,
    kind: ItemKind,
    source: Source,
    routes: Vec<Arc<Route>>,
    tcp_routes: Vec<Arc<model::TcpRoute>>,
    /// How many `order` numbers it takes, and the number before its first one as its
    /// routes carry them now: when objects before it grow or shrink, its routes are
    /// renumbered (copied), so every route keeps the order a full translation gives.
    orders: usize,
    base: usize,
    upstreams: Vec<Upstream>,
    certificates: Vec<ClusterCertificate>,
    problems: Vec<String>,
    auth: Vec<Arc<model::Authenticator>>,
    route_status: Option<Arc<RouteStatus>>,
    ingress_status: bool,
    ingress_warnings: BTreeMap<Key, Vec<String>>,
    /// Translated while canary Ingresses were around (and maybe joined by one).
    with_canaries: bool,
    /// The Gateway listeners it attached to (Gateway, listener index): their
    /// `attachedRoutes` count it.
    attached: Vec<(Key, usize)>,
    reads: Reads,
}

impl Piece {
    fn translate(
        objects: &ClusterObjects,
        listeners: &[ListenerFacts],
        (gateways, canaries): (
            &mut BTreeMap<Key, httproute::ServedGateway>,
            &mut Vec<ingress::CanaryRoute>,
        ),
        (created, key): (Option<&Time>, &Key),
        item: Item<'_>,
        base: usize,
    ) -> Piece {
        let mut one = Translation::new(objects, listeners, base);
        let with_canaries = !canaries.is_empty();
        match item {
            Item::Route(route) => httproute::translate(&mut one, gateways, key, route),
            Item::Ingress(ingress) => {
                one.canaries = std::mem::take(canaries);
                ingress::translate(&mut one, key, ingress);
                *canaries = std::mem::take(&mut one.canaries);
            }
        }
        let (upstreams, services, grants) = one.backends.into_parts();
        Piece {
            created: created.cloned(),
            key: key.clone(),
            kind: item.kind(),
            source: item.source(),
            routes: one.routes,
            tcp_routes: one.tcp_routes,
            orders: one.order - base,
            base,
            upstreams,
            certificates: one.certificates,
            problems: one.problems,
            auth: one.auth,
            route_status: one.status.routes.into_values().next(),
            ingress_status: !one.status.ingresses.is_empty(),
            ingress_warnings: one.status.ingress_warnings,
            with_canaries,
            attached: one.attached,
            reads: Reads {
                gateways: one.gateway_reads,
                services,
                secrets: one.secret_reads,
                grants,
            },
        }
    }

    /// Renumbers its routes to start after `base`.
    fn place(&mut self, base: usize) {
        if base == self.base {
            return;
        }
        let moved = |order: usize| order - self.base + base;
        for route in &mut self.routes {
            let mut copy = (**route).clone();
            copy.order = moved(copy.order);
            *route = Arc::new(copy);
        }
        for route in &mut self.tcp_routes {
            let mut copy = (**route).clone();
            copy.order = moved(copy.order);
            *route = Arc::new(copy);
        }
        self.base = base;
    }

    fn emit(&self, out: &mut ClusterRoutes) {
        out.routes.extend(self.routes.iter().cloned());
        out.tcp_routes.extend(self.tcp_routes.iter().cloned());
        out.certificates.extend(self.certificates.iter().cloned());
        out.problems.extend(self.problems.iter().cloned());
        out.auth.extend(self.auth.iter().cloned());
        if let Some(status) = &self.route_status {
            out.status.routes.insert(self.key.clone(), status.clone());
        }
        if self.ingress_status {
            out.status.ingresses.insert(self.key.clone());
        }
        for (key, warnings) in &self.ingress_warnings {
            out.status
                .ingress_warnings
                .entry(key.clone())
                .or_default()
                .extend(warnings.iter().cloned());
        }
    }
}

/// The objects a translation looked up, found or not: when one of them changes, appears
/// or goes, the piece is translated again.
#[derive(Debug, Default)]
struct Reads {
    gateways: Vec<Key>,
    services: Vec<Key>,
    secrets: Vec<Key>,
    /// Namespaces whose ReferenceGrants were consulted.
    grants: Vec<String>,
}

/// The kinds pieces read, as a call found them: the next call compares its objects
/// with these (pointers first) to know what changed.
#[derive(Default)]
struct Reread {
    gateways: BTreeMap<Key, Arc<Gateway>>,
    services: BTreeMap<Key, Arc<ServicePorts>>,
    secrets: BTreeMap<Key, Arc<TlsSecret>>,
    grants: BTreeMap<Key, Arc<ReferenceGrant>>,
    opaque_secrets: BTreeMap<Key, Arc<OpaqueSecret>>,
}

impl Reread {
    fn of(objects: &ClusterObjects) -> Reread {
        Reread {
            gateways: objects.gateways.clone(),
            services: objects.services.clone(),
            secrets: objects.secrets.clone(),
            grants: objects.grants.clone(),
            opaque_secrets: objects.opaque_secrets.clone(),
        }
    }

    fn changes(&self, now: &ClusterObjects) -> Changed {
        let grants = changed_keys(&self.grants, &now.grants, |a, b| a.spec == b.spec);
        Changed {
            gateways: changed_keys(&self.gateways, &now.gateways, |a, b| a.spec == b.spec),
            services: changed_keys(&self.services, &now.services, |a, b| a == b),
            secrets: changed_keys(&self.secrets, &now.secrets, |a, b| a == b),
            grant_namespaces: grants.into_iter().map(|(namespace, _)| namespace).collect(),
            opaque_secrets: !changed_keys(&self.opaque_secrets, &now.opaque_secrets, |a, b| a == b)
                .is_empty(),
        }
    }
}

/// What differs between the objects of two calls, as translation reads them.
#[derive(Default)]
struct Changed {
    gateways: HashSet<Key>,
    services: HashSet<Key>,
    secrets: HashSet<Key>,
    grant_namespaces: HashSet<String>,
    /// Any `Opaque` Secret (Ingress basic auth users): every Ingress is translated again.
    opaque_secrets: bool,
}

impl Changed {
    fn touches(&self, reads: &Reads) -> bool {
        reads.gateways.iter().any(|k| self.gateways.contains(k))
            || reads.services.iter().any(|k| self.services.contains(k))
            || reads.secrets.iter().any(|k| self.secrets.contains(k))
            || reads
                .grants
                .iter()
                .any(|n| self.grant_namespaces.contains(n))
    }
}

/// Keys in one map and not the other, or whose objects differ by `same`; a walk of both
/// in key order, comparing pointers first.
fn changed_keys<T>(
    old: &BTreeMap<Key, Arc<T>>,
    new: &BTreeMap<Key, Arc<T>>,
    same: impl Fn(&T, &T) -> bool,
) -> HashSet<Key> {
    use std::cmp::Ordering;
    let mut changed = HashSet::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return changed,
            (Some((k, _)), None) => {
                changed.insert(k.clone());
                a.next();
            }
            (None, Some((k, _))) => {
                changed.insert(k.clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                Ordering::Less => {
                    changed.insert(ka.clone());
                    a.next();
                }
                Ordering::Greater => {
                    changed.insert(kb.clone());
                    b.next();
                }
                Ordering::Equal => {
                    if !Arc::ptr_eq(va, vb) && !same(va, vb) {
                        changed.insert(ka.clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// Working state of one translation: of one HTTPRoute or Ingress, or of the Gateways and
/// layer-4 routes around them.
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
    /// Gateway listeners routes attached to: (Gateway, listener index).
    attached: Vec<(Key, usize)>,
    gateway_reads: Vec<Key>,
    secret_reads: Vec<Key>,
}

impl<'a> Translation<'a> {
    /// `order` is the number before the first one this translation gives out.
    fn new(objects: &'a ClusterObjects, listeners: &'a [ListenerFacts], order: usize) -> Self {
        Translation {
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
            order,
            attached: Vec::new(),
            gateway_reads: Vec::new(),
            secret_reads: Vec::new(),
        }
    }

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

    /// A TLS Secret by namespace and name, noted as read.
    fn secret(&mut self, namespace: &str, name: &str) -> Option<&'a TlsSecret> {
        let key = (namespace.to_string(), name.to_string());
        let found = self.objects.secrets.get(&key).map(|s| &**s);
        self.secret_reads.push(key);
        found
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
