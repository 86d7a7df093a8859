//! Compiled routing table: host index -> path index -> candidates in precedence order.
//!
//! Matching never scans every route: a request costs one hash lookup per host tier
//! (exact, each wildcard suffix of the host, any) and one per path segment, so the cost
//! stays flat from ten routes to tens of thousands (see `benches/router.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use regex::Regex;

use crate::config::model::{HostMatch, PathMatch, Route};

/// What the router needs to know about a request. Host is already lowercased and without
/// a port ([`normalize_host`]); path excludes the query.
pub struct RequestFacts<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a (dyn RequestHeaders + Sync),
}

/// Header lookup for route conditions, so the HTTP/1.1 loop can match on its in-place
/// parsed fields without building a `HeaderMap` per request.
pub trait RequestHeaders {
    /// Whether some field `name` has exactly `value`.
    fn has_value(&self, name: &http::HeaderName, value: &[u8]) -> bool;
    /// Whether some `Cookie` field carries cookie `name` with exactly `value`.
    fn has_cookie(&self, name: &str, value: &[u8]) -> bool;
}

/// The routes of one listener, indexed. Each host's table is shared, so a router
/// compiled after an edit shares every table the edit did not touch.
#[derive(Debug, Default, Clone)]
pub struct ListenerRouter {
    exact_hosts: HashMap<Arc<str>, Arc<PathTable>>,
    wildcard_hosts: HashMap<Arc<str>, Arc<PathTable>>,
    any_host: Arc<PathTable>,
}

#[derive(Debug, Default, Clone)]
struct PathTable {
    exact: HashMap<String, Vec<Arc<Route>>>,
    regex: Vec<(Regex, Arc<Route>)>,
    prefix: HashMap<String, Vec<Arc<Route>>>,
}

/// Every listener's routes. Routes are shared (`Arc`) between listeners that both apply.
#[derive(Debug, Default)]
pub struct Router {
    listeners: HashMap<Arc<str>, Arc<ListenerRouter>>,
}

/// Where a route sits in a listener's index: one table per host, or the any-host table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TableKey {
    Exact(String),
    Wildcard(String),
    Any,
}

fn table_keys(route: &Route) -> impl Iterator<Item = TableKey> + '_ {
    let any = route.hosts.is_empty().then_some(TableKey::Any);
    route
        .hosts
        .iter()
        .map(|host| match host {
            HostMatch::Exact(h) => TableKey::Exact(h.clone()),
            HostMatch::Wildcard(s) => TableKey::Wildcard(s.clone()),
        })
        .chain(any)
}

impl Router {
    /// `routes` must be valid (regexes compile); `listeners` are the names routes may use.
    pub fn compile<'a>(
        routes: &[Arc<Route>],
        listeners: impl IntoIterator<Item = &'a Arc<str>>,
    ) -> Router {
        let listeners = listeners
            .into_iter()
            .map(|name| {
                let applicable = routes.iter().filter(|r| r.applies_to_listener(name));
                (name.clone(), Arc::new(ListenerRouter::compile(applicable)))
            })
            .collect();
        Router { listeners }
    }

    /// The router for `routes`, built from `previous` (compiled from `previous_routes`
    /// for the same listeners): only the host tables holding a route that came or went
    /// are rebuilt, every other table is shared. Routes are told apart by allocation, so
    /// an edit of one cluster object among ten thousand routes touches a few tables
    /// instead of compiling them all. Falls back to [`Router::compile`] when the
    /// listeners differ or much changed. Routes the same as [`Router::compile`] would.
    pub fn compile_from(
        previous: &Router,
        previous_routes: &[Arc<Route>],
        routes: &[Arc<Route>],
        listeners: &[Arc<str>],
    ) -> Router {
        let same_listeners = listeners.len() == previous.listeners.len()
            && listeners.iter().all(|l| previous.listeners.contains_key(l));
        if !same_listeners {
            return Router::compile(routes, listeners);
        }
        // Routes that stayed keep their places: only the stretch between the common
        // head and tail can differ, and only it is looked at.
        let head = previous_routes
            .iter()
            .zip(routes)
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let tail = previous_routes[head..]
            .iter()
            .rev()
            .zip(routes[head..].iter().rev())
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let (old_middle, new_middle) = (
            &previous_routes[head..previous_routes.len() - tail],
            &routes[head..routes.len() - tail],
        );
        let address = |r: &Arc<Route>| Arc::as_ptr(r) as usize;
        let before: std::collections::HashSet<usize> = old_middle.iter().map(address).collect();
        let now: std::collections::HashSet<usize> = new_middle.iter().map(address).collect();
        let removed: Vec<&Arc<Route>> = old_middle
            .iter()
            .filter(|r| !now.contains(&address(r)))
            .collect();
        let added: Vec<&Arc<Route>> = new_middle
            .iter()
            .filter(|r| !before.contains(&address(r)))
            .collect();
        if removed.is_empty() && added.is_empty() {
            return Router {
                listeners: previous.listeners.clone(),
            };
        }
        // Rebuilding many tables costs more than one compile.
        if (removed.len() + added.len()) * 8 > routes.len() {
            return Router::compile(routes, listeners);
        }
        Router::patched(previous, &removed, &added, listeners)
    }

    /// `previous` with the tables of `removed` and `added` routes rebuilt.
    pub(crate) fn patched(
        previous: &Router,
        removed: &[&Arc<Route>],
        added: &[&Arc<Route>],
        listeners: &[Arc<str>],
    ) -> Router {
        let address = |r: &Arc<Route>| Arc::as_ptr(r) as usize;
        let gone: std::collections::HashSet<usize> = removed.iter().map(|r| address(r)).collect();
        let listeners = listeners
            .iter()
            .map(|name| {
                let old = &previous.listeners[name];
                let mut touched: HashMap<TableKey, Vec<&Arc<Route>>> = HashMap::new();
                for route in removed.iter().filter(|r| r.applies_to_listener(name)) {
                    for key in table_keys(route) {
                        touched.entry(key).or_default();
                    }
                }
                for route in added.iter().filter(|r| r.applies_to_listener(name)) {
                    for key in table_keys(route) {
                        touched.entry(key).or_default().push(route);
                    }
                }
                if touched.is_empty() {
                    return (name.clone(), old.clone());
                }
                let mut router = (**old).clone();
                for (key, new_routes) in touched {
                    let slot = match &key {
                        TableKey::Exact(h) => {
                            router.exact_hosts.entry(h.as_str().into()).or_default()
                        }
                        TableKey::Wildcard(s) => {
                            router.wildcard_hosts.entry(s.as_str().into()).or_default()
                        }
                        TableKey::Any => &mut router.any_host,
                    };
                    let table = Arc::make_mut(slot);
                    table.remove(&gone, address);
                    for route in new_routes {
                        table.insert(route);
                    }
                    table.finish();
                    if table.is_empty() {
                        match &key {
                            TableKey::Exact(h) => {
                                router.exact_hosts.remove(h.as_str());
                            }
                            TableKey::Wildcard(s) => {
                                router.wildcard_hosts.remove(s.as_str());
                            }
                            TableKey::Any => {}
                        }
                    }
                }
                (name.clone(), Arc::new(router))
            })
            .collect();
        Router { listeners }
    }

    pub fn route(&self, listener: &str, request: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        self.listeners.get(listener)?.route(request)
    }

    /// Every listener's index as names, in a fixed order: what two routers route alike
    /// must show alike.
    #[cfg(test)]
    pub fn layout(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (listener, router) in &self.listeners {
            let tables = router
                .exact_hosts
                .iter()
                .map(|(h, t)| (format!("={h}"), t))
                .chain(
                    router
                        .wildcard_hosts
                        .iter()
                        .map(|(h, t)| (format!("*{h}"), t)),
                )
                .chain([("any".to_string(), &router.any_host)]);
            for (host, table) in tables {
                let names = |routes: &[Arc<Route>]| {
                    routes
                        .iter()
                        .map(|r| format!("{}#{}", r.name, r.order))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                for (path, routes) in &table.exact {
                    out.push(format!("{listener} {host} ={path} {}", names(routes)));
                }
                for (path, routes) in &table.prefix {
                    out.push(format!("{listener} {host} ^{path} {}", names(routes)));
                }
                let regex: Vec<Arc<Route>> = table.regex.iter().map(|(_, r)| r.clone()).collect();
                if !regex.is_empty() {
                    out.push(format!("{listener} {host} ~ {}", names(&regex)));
                }
            }
        }
        out.sort();
        out
    }
}

impl ListenerRouter {
    fn compile<'a>(routes: impl Iterator<Item = &'a Arc<Route>>) -> Self {
        let mut exact_hosts: HashMap<String, PathTable> = HashMap::new();
        let mut wildcard_hosts: HashMap<String, PathTable> = HashMap::new();
        let mut any_host = PathTable::default();
        for route in routes {
            if route.hosts.is_empty() {
                any_host.insert(route);
            }
            for host in &route.hosts {
                let table = match host {
                    HostMatch::Exact(h) => exact_hosts.entry(h.clone()).or_default(),
                    HostMatch::Wildcard(s) => wildcard_hosts.entry(s.clone()).or_default(),
                };
                table.insert(route);
            }
        }
        let finished = |mut table: PathTable| {
            table.finish();
            Arc::new(table)
        };
        ListenerRouter {
            exact_hosts: exact_hosts
                .into_iter()
                .map(|(h, t)| (h.into(), finished(t)))
                .collect(),
            wildcard_hosts: wildcard_hosts
                .into_iter()
                .map(|(h, t)| (h.into(), finished(t)))
                .collect(),
            any_host: finished(any_host),
        }
    }

    fn route(&self, request: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        if let Some(found) = self
            .exact_hosts
            .get(request.host)
            .and_then(|t| t.route(request))
        {
            return Some(found);
        }
        if !self.wildcard_hosts.is_empty() {
            // Longest suffix first: ".b.example.com" before ".example.com".
            for (i, _) in request.host.match_indices('.') {
                if let Some(found) = self
                    .wildcard_hosts
                    .get(&request.host[i..])
                    .and_then(|t| t.route(request))
                {
                    return Some(found);
                }
            }
        }
        self.any_host.route(request)
    }
}

impl PathTable {
    fn insert(&mut self, route: &Arc<Route>) {
        match &route.path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(route.clone()),
            PathMatch::Prefix(p) => self
                .prefix
                .entry(p.clone())
                .or_default()
                .push(route.clone()),
            PathMatch::Regex(r) => self.regex.push((r.0.clone(), route.clone())),
        }
    }

    /// Takes out the routes whose address is in `gone`.
    fn remove(
        &mut self,
        gone: &std::collections::HashSet<usize>,
        address: impl Fn(&Arc<Route>) -> usize,
    ) {
        let keep = |r: &Arc<Route>| !gone.contains(&address(r));
        self.exact.retain(|_, routes| {
            routes.retain(keep);
            !routes.is_empty()
        });
        self.prefix.retain(|_, routes| {
            routes.retain(keep);
            !routes.is_empty()
        });
        self.regex.retain(|(_, r)| keep(r));
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }

    /// Orders every bucket by the tie-breakers that follow host and path.
    fn finish(&mut self) {
        let key = |r: &Arc<Route>| tie_break_key(r);
        self.exact.values_mut().for_each(|v| v.sort_by_key(key));
        self.prefix.values_mut().for_each(|v| v.sort_by_key(key));
        self.regex.sort_by_key(|(_, r)| tie_break_key(r));
    }

    fn route(&self, request: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        if let Some(found) = self
            .exact
            .get(request.path)
            .and_then(|c| first_match(c, request))
        {
            return Some(found);
        }
        for (regex, route) in &self.regex {
            if regex.is_match(request.path) && conditions_match(route, request) {
                return Some(route);
            }
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut candidate = request.path.trim_end_matches('/');
        loop {
            if candidate.is_empty() {
                return self.prefix.get("/").and_then(|c| first_match(c, request));
            }
            if let Some(found) = self
                .prefix
                .get(candidate)
                .and_then(|c| first_match(c, request))
            {
                return Some(found);
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => candidate = "",
            }
        }
    }
}

/// Sort key after host and path: methods first, then more headers and cookies, then more query
/// parameters, then file order.
fn tie_break_key(
    route: &Route,
) -> (
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    usize,
) {
    (
        route.methods.is_none(),
        std::cmp::Reverse(route.headers.len() + route.cookies.len()),
        std::cmp::Reverse(route.query.len()),
        route.order,
    )
}

fn first_match<'r>(
    candidates: &'r [Arc<Route>],
    request: &RequestFacts<'_>,
) -> Option<&'r Arc<Route>> {
    candidates.iter().find(|r| conditions_match(r, request))
}

/// Methods, headers and query; host and path were matched by the index.
pub fn conditions_match(route: &Route, request: &RequestFacts<'_>) -> bool {
    if let Some(methods) = &route.methods {
        if !methods.contains(request.method) {
            return false;
        }
    }
    let headers_ok = route
        .headers
        .iter()
        .all(|(name, value)| request.headers.has_value(name, value.as_bytes()));
    headers_ok
        && route
            .cookies
            .iter()
            .all(|(name, value)| request.headers.has_cookie(name, value.as_bytes()))
        && route
            .query
            .iter()
            .all(|(name, value)| query_has(request.query, name, value))
}

fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == name && v == value
        })
    })
}

/// Lowercases and strips the port, so `API.example.com:8443` matches `api.example.com`.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split_once(']').map_or(host, |(ip, _)| ip)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    let without_dot = without_port.strip_suffix('.').unwrap_or(without_port);
    if without_dot.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_dot.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_dot)
    }
}

/// Whether a route's host and path match, without the index: the reference the index is
/// tested against, and what `edgegate route` uses to list every route that matched.
pub fn matches_directly(route: &Route, request: &RequestFacts<'_>) -> Option<Precedence> {
    let host_rank = if route.hosts.is_empty() {
        Some((0, 0))
    } else {
        route
            .hosts
            .iter()
            .filter_map(|h| match h {
                HostMatch::Exact(e) if e == request.host => Some((2, e.len())),
                HostMatch::Wildcard(s)
                    if request.host.len() > s.len() && request.host.ends_with(s.as_str()) =>
                {
                    Some((1, s.len()))
                }
                _ => None,
            })
            .max()
    }?;
    let path_rank = match &route.path {
        PathMatch::Exact(p) => (p == request.path).then_some((3, 0)),
        PathMatch::Regex(r) => r.is_match(request.path).then_some((2, 0)),
        PathMatch::Prefix(p) => prefix_matches(p, request.path).then_some((1, p.len())),
    }?;
    conditions_match(route, request).then(|| Precedence {
        host: host_rank,
        path: path_rank,
        methods: route.methods.is_some(),
        headers: route.headers.len() + route.cookies.len(),
        query: route.query.len(),
        order: std::cmp::Reverse(route.order),
    })
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// Ranks a match; greater wins. Field order is the precedence order: host, path, method, headers, query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    pub host: (u8, usize),
    pub path: (u8, usize),
    pub methods: bool,
    pub headers: usize,
    pub query: usize,
    pub order: std::cmp::Reverse<usize>,
}

impl Precedence {
    /// The first rule on which `self` beats `other`, for `edgegate route`.
    pub fn deciding_rule(&self, other: &Precedence) -> &'static str {
        if self.host != other.host {
            if self.host.0 != other.host.0 {
                return "host: an exact host beats a wildcard, a wildcard beats no host";
            }
            return "host: the longer wildcard wins";
        }
        if self.path.0 != other.path.0 {
            return "path: exact beats regex beats prefix";
        }
        if self.path != other.path {
            return "path: the longest prefix wins";
        }
        if self.methods != other.methods {
            return "methods: a route with methods wins";
        }
        if self.headers != other.headers {
            return "headers: the route with more header matches wins";
        }
        if self.query != other.query {
            return "query: the route with more query matches wins";
        }
        "order: the route written first wins"
    }
}

/// The path sent upstream after `rewrite_prefix`, query included; `None` when the route
/// does not rewrite. `/api/x` with prefix `/api` rewritten to `/` becomes `/x`.
pub fn rewritten_path(route: &Route, path: &str, query: Option<&str>) -> Option<String> {
    if let Some(full) = &route.rewrite_path {
        return Some(match query {
            Some(q) => format!("{full}?{q}"),
            None => full.clone(),
        });
    }
    let (Some(rewrite), PathMatch::Prefix(prefix)) = (&route.rewrite_prefix, &route.path) else {
        return None;
    };
    let rest = if prefix == "/" {
        path
    } else {
        path.get(prefix.len()..).unwrap_or("")
    };
    let base = rewrite.trim_end_matches('/');
    let mut out = String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 2));
    out.push_str(base);
    if rest.is_empty() {
        // `/api` itself maps onto the rewrite target as written.
        if rewrite.ends_with('/') || base.is_empty() {
            out.push('/');
        }
    } else {
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, SourceFile};

    fn routes(n: usize) -> Vec<Arc<Route>> {
        let mut text = String::from("[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n");
        for i in 0..n {
            text.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\nhosts = [\"h{}.example.com\"]\npath_prefix = \"/p{i}\"\nrespond = {{ status = 204 }}\n",
                i / 4
            ));
        }
        load(&SourceFile::new("r.toml", text.as_str()))
            .expect("valid")
            .config
            .routes
    }

    #[test]
    fn an_edit_rebuilds_its_host_table_and_shares_the_others() {
        let names: Vec<Arc<str>> = vec!["web".into()];
        let old = routes(200);
        let previous = Router::compile(&old, &names);
        let mut edited = old.clone();
        let mut moved = (*edited[101]).clone();
        moved.path = PathMatch::Prefix("/moved".into());
        edited[101] = Arc::new(moved);
        // And one route gone from another host.
        edited.remove(9);
        let next = Router::compile_from(&previous, &old, &edited, &names);
        assert_eq!(next.layout(), Router::compile(&edited, &names).layout());
        let (before, after) = (&previous.listeners["web"], &next.listeners["web"]);
        let table = |r: &ListenerRouter, host: &str| r.exact_hosts[host].clone();
        assert!(Arc::ptr_eq(
            &table(before, "h0.example.com"),
            &table(after, "h0.example.com")
        ));
        assert!(!Arc::ptr_eq(
            &table(before, "h25.example.com"),
            &table(after, "h25.example.com")
        ));
        assert!(!Arc::ptr_eq(
            &table(before, "h2.example.com"),
            &table(after, "h2.example.com")
        ));
        // Nothing changed: the same tables; everything changed: compiled afresh.
        let same = Router::compile_from(&next, &edited, &edited, &names);
        assert!(Arc::ptr_eq(&same.listeners["web"], &next.listeners["web"]));
        let fresh = routes(200);
        let all = Router::compile_from(&next, &edited, &fresh, &names);
        assert_eq!(all.layout(), Router::compile(&fresh, &names).layout());
    }
}
