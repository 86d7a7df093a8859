//! `[[routes]]`: matchers, actions and header edits.

use super::*;

impl Checker<'_> {
    pub(super) fn header_name(&mut self, text: &raw::Text) -> Option<HeaderName> {
        match HeaderName::from_bytes(text.get_ref().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(
                    &text.span(),
                    format!("invalid header name {:?}", text.get_ref()),
                );
                None
            }
        }
    }

    pub(super) fn header_value(&mut self, text: &raw::Text) -> Option<HeaderValue> {
        match HeaderValue::from_str(text.get_ref()) {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(
                    &text.span(),
                    format!("invalid header value {:?}", text.get_ref()),
                );
                None
            }
        }
    }

    pub(super) fn header_edits(&mut self, raw: Option<raw::HeaderEdits>) -> HeaderEdits {
        let Some(raw) = raw else {
            return HeaderEdits::default();
        };
        let mut pairs = |map: &std::collections::BTreeMap<raw::Text, raw::Text>| {
            map.iter()
                .filter_map(|(k, v)| Some((self.header_name(k)?, self.header_value(v)?)))
                .collect::<Vec<_>>()
        };
        let set = pairs(&raw.set);
        let add = pairs(&raw.add);
        let remove = raw
            .remove
            .iter()
            .filter_map(|h| self.header_name(h))
            .collect();
        HeaderEdits { set, add, remove }
    }

    pub(super) fn routes(
        &mut self,
        raw: Vec<Spanned<raw::Route>>,
        listeners: &HashSet<&str>,
        upstreams: &HashSet<&str>,
        auth: &HashSet<&str>,
    ) -> Vec<Arc<Route>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (order, route) in raw.into_iter().enumerate() {
            let span = route.span();
            let route = route.into_inner();
            let name = self
                .unique_name(&mut seen, &route.name, "route")
                .unwrap_or_default()
                .to_string();
            let auth_name = route.auth.clone();
            if let Some(mut route) = self.route(order, name, span, route, listeners, upstreams) {
                route.auth = auth_name
                    .and_then(|a| self.auth_ref(&a, auth, &format!("route {:?}", &*route.name)));
                out.push(Arc::new(route));
            }
        }
        out
    }

    pub(super) fn route(
        &mut self,
        order: usize,
        name: String,
        span: Range<usize>,
        raw: raw::Route,
        listeners: &HashSet<&str>,
        upstreams: &HashSet<&str>,
    ) -> Option<Route> {
        let location = self.source.location(&raw.name.span());
        let route_listeners = raw.listeners.map(|names| {
            names
                .into_iter()
                .filter_map(|n| {
                    if listeners.contains(n.get_ref().as_str()) {
                        Some(Name::from(n.into_inner()))
                    } else {
                        self.error(
                            &n.span(),
                            format!("route {name:?} names unknown listener {:?}", n.get_ref()),
                        );
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let hosts = raw
            .hosts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| self.host(&h))
            .collect();
        let path = self.path_match(raw.path, raw.path_prefix, raw.path_regex);
        let methods = raw.methods.map(|methods| {
            methods
                .into_inner()
                .into_iter()
                .filter_map(|m| {
                    let upper = m.get_ref().to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(method) => Some(method),
                        Err(_) => {
                            self.error(&m.span(), format!("invalid method {:?}", m.get_ref()));
                            None
                        }
                    }
                })
                .collect()
        });
        let headers = raw
            .headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                let name = match HeaderName::from_bytes(k.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        self.error(&v.span(), format!("invalid header name {k:?}"));
                        return None;
                    }
                };
                Some((name, v.into_inner()))
            })
            .collect();
        let query = raw
            .query
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();
        let cookies = raw
            .cookies
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                if k.is_empty() || k.contains([';', '=', ' ']) {
                    self.error(&v.span(), format!("invalid cookie name {k:?}"));
                    return None;
                }
                Some((k, v.into_inner()))
            })
            .collect();
        let action = match raw.backends {
            Some(backends) => {
                if raw.upstream.is_some() || raw.redirect.is_some() || raw.respond.is_some() {
                    self.error(
                        &span,
                        format!("route {name:?} needs exactly one action: upstream, backends, redirect or respond"),
                    );
                    None
                } else {
                    self.backends(&name, backends, upstreams)
                }
            }
            None => self.action(
                &name,
                &span,
                raw.upstream,
                raw.redirect,
                raw.respond,
                upstreams,
            ),
        };
        let policy = self.policy(raw.allow, raw.deny, raw.rate_limit, raw.cors);
        let compress = raw.compress.and_then(|c| self.compress(c));
        let mirror = raw.mirror.and_then(|m| self.mirror(&name, m, upstreams));
        let rewrite_prefix = raw.rewrite_prefix.and_then(|r| {
            if !matches!(path, Some(PathMatch::Prefix(_))) {
                self.error(&r.span(), "rewrite_prefix needs path_prefix");
                None
            } else if !r.get_ref().starts_with('/') {
                self.error(&r.span(), "rewrite_prefix must start with '/'");
                None
            } else {
                Some(r.into_inner())
            }
        });
        let request_headers = self.header_edits(raw.request_headers);
        let response_headers = self.header_edits(raw.response_headers);
        let timeout = raw
            .timeout
            .as_ref()
            .map(|t| self.positive_duration(Some(t), Duration::from_secs(60), "timeout"));
        let max_body_size = raw
            .max_body_size
            .and_then(|size| self.size(&size, "max_body_size"));
        Some(Route {
            name: name.into(),
            order,
            listeners: route_listeners,
            hosts,
            path: path?,
            methods,
            headers,
            query,
            cookies,
            action: action?,
            rewrite_prefix,
            rewrite_path: None,
            request_headers,
            response_headers,
            timeout,
            max_body_size,
            auth: None,
            policy,
            compress,
            mirror,
            location,
        })
    }

    pub(super) fn host(&mut self, text: &raw::Text) -> Option<HostMatch> {
        let host = text.get_ref().trim().to_ascii_lowercase();
        let valid_label = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.split('.').all(valid_label) {
                return Some(HostMatch::Wildcard(format!(".{suffix}")));
            }
        } else if host.split('.').all(valid_label) || host.parse::<std::net::IpAddr>().is_ok() {
            return Some(HostMatch::Exact(host));
        }
        self.error(
            &text.span(),
            format!(
                "invalid host {:?}: expected a name like \"api.example.com\" or \"*.example.com\"",
                text.get_ref()
            ),
        );
        None
    }

    pub(super) fn path_match(
        &mut self,
        exact: Option<raw::Text>,
        prefix: Option<raw::Text>,
        regex: Option<raw::Text>,
    ) -> Option<PathMatch> {
        let given: Vec<_> = [&exact, &prefix, &regex].into_iter().flatten().collect();
        if given.len() > 1 {
            self.error(
                &given[1].span(),
                "a route has at most one of path, path_prefix and path_regex",
            );
            return None;
        }
        if let Some(p) = exact {
            if !p.get_ref().starts_with('/') {
                self.error(&p.span(), "path must start with '/'");
                return None;
            }
            return Some(PathMatch::Exact(p.into_inner()));
        }
        if let Some(r) = regex {
            return match regex::Regex::new(r.get_ref()) {
                Ok(compiled) => Some(PathMatch::Regex(PathRegex(compiled))),
                Err(e) => {
                    let first_line = e.to_string();
                    self.error(
                        &r.span(),
                        format!(
                            "invalid path_regex: {}",
                            first_line.lines().last().unwrap_or_default().trim()
                        ),
                    );
                    None
                }
            };
        }
        match prefix {
            // No path condition matches every path, as Gateway API's default `/` prefix.
            None => Some(PathMatch::Prefix("/".to_string())),
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(&p.span(), "path_prefix must start with '/'");
                None
            }
            Some(p) => {
                let trimmed = p.get_ref().trim_end_matches('/');
                Some(PathMatch::Prefix(if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                }))
            }
        }
    }

    pub(super) fn action(
        &mut self,
        name: &str,
        span: &Range<usize>,
        upstream: Option<raw::Text>,
        redirect: Option<Spanned<raw::Redirect>>,
        respond: Option<Spanned<raw::Respond>>,
        upstreams: &HashSet<&str>,
    ) -> Option<Action> {
        let count = upstream.is_some() as u8 + redirect.is_some() as u8 + respond.is_some() as u8;
        if count != 1 {
            self.error(
                span,
                format!(
                    "route {name:?} needs exactly one action: upstream, redirect or respond (found {count})"
                ),
            );
            return None;
        }
        if let Some(u) = upstream {
            if !upstreams.contains(u.get_ref().as_str()) {
                self.error(
                    &u.span(),
                    format!("route {name:?} names unknown upstream {:?}", u.get_ref()),
                );
                return None;
            }
            return Some(Action::Upstream(Arc::from(u.into_inner())));
        }
        if let Some(r) = redirect {
            let r = r.into_inner();
            let status = match r.status {
                None => StatusCode::FOUND,
                Some(s) if [301, 302, 303, 307, 308].contains(s.get_ref()) => {
                    StatusCode::from_u16(*s.get_ref() as u16).ok()?
                }
                Some(s) => {
                    self.error(
                        &s.span(),
                        "redirect status must be 301, 302, 303, 307 or 308",
                    );
                    return None;
                }
            };
            let scheme = match r.scheme {
                Some(s) if !matches!(s.get_ref().as_str(), "http" | "https") => {
                    self.error(&s.span(), "redirect scheme must be \"http\" or \"https\"");
                    return None;
                }
                s => s.map(Spanned::into_inner),
            };
            let port = match r.port {
                Some(p) if !(1..=65535).contains(p.get_ref()) => {
                    self.error(&p.span(), "redirect port must be between 1 and 65535");
                    return None;
                }
                p => p.map(|p| *p.get_ref() as u16),
            };
            return Some(Action::Redirect(Redirect {
                scheme,
                host: r.host.map(Spanned::into_inner),
                port,
                path: r.path.map(Spanned::into_inner),
                status,
            }));
        }
        let r = respond?.into_inner();
        let status = match StatusCode::from_u16(u16::try_from(*r.status.get_ref()).unwrap_or(0)) {
            Ok(s) if (100..=599).contains(&s.as_u16()) && s.as_u16() >= 200 => s,
            _ => {
                self.error(
                    &r.status.span(),
                    "respond status must be between 200 and 599",
                );
                return None;
            }
        };
        let body = r.body.unwrap_or_default();
        if matches!(status.as_u16(), 204 | 304) && !body.is_empty() {
            // The message ends after the head; a body would be read as the next response.
            self.error(
                &r.status.span(),
                format!("respond status {} cannot have a body", status.as_u16()),
            );
            return None;
        }
        let content_type = match r.content_type {
            None => HeaderValue::from_static("text/plain; charset=utf-8"),
            Some(ct) => self.header_value(&ct)?,
        };
        Some(Action::Respond(Respond {
            status,
            body: Bytes::from(body),
            content_type,
        }))
    }
}
