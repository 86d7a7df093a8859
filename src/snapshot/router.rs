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

/// The routes of one listener, indexed.
#[derive(Debug, Default)]
pub struct ListenerRouter {
    exact_hosts: HashMap<String, PathTable>,
    wildcard_hosts: HashMap<String, PathTable>,
    any_host: PathTable,
}

#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<String, Vec<Arc<Route>>>,
    regex: Vec<(Regex, Arc<Route>)>,
    prefix: HashMap<String, Vec<Arc<Route>>>,
}

/// Every listener's routes. Routes are shared (`Arc`) between listeners that both apply.
#[derive(Debug, Default)]
pub struct Router {
    listeners: HashMap<Arc<str>, ListenerRouter>,
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
                (name.clone(), ListenerRouter::compile(applicable))
            })
            .collect();
        Router { listeners }
    }

    pub fn route(&self, listener: &str, request: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        self.listeners.get(listener)?.route(request)
    }
}

impl ListenerRouter {
    fn compile<'a>(routes: impl Iterator<Item = &'a Arc<Route>>) -> Self {
        let mut router = ListenerRouter::default();
        for route in routes {
            if route.hosts.is_empty() {
                router.any_host.insert(route);
            }
            for host in &route.hosts {
                let table = match host {
                    HostMatch::Exact(h) => router.exact_hosts.entry(h.clone()).or_default(),
                    HostMatch::Wildcard(s) => router.wildcard_hosts.entry(s.clone()).or_default(),
                };
                table.insert(route);
            }
        }
        router.any_host.finish();
        router.exact_hosts.values_mut().for_each(PathTable::finish);
        router
            .wildcard_hosts
            .values_mut()
            .for_each(PathTable::finish);
        router
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
