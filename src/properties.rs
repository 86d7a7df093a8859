//! Property tests where the input space is too large for examples: the compiled router
//! against the naive reference matcher, config text against `check`, and path
//! normalisation against a plain RFC 3986 implementation.

use std::sync::Arc;

use proptest::prelude::*;

use crate::config::{load, SourceFile};
use crate::pipeline::http_path::{normalize_path, PathError};
use crate::snapshot::router::{matches_directly, RequestFacts, Router};

const HOSTS: &[&str] = &["a.example.com", "b.example.com", "x.a.example.com"];
const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/v1",
    "/apix",
    "/api/v1/users",
    "/static",
    "/s",
];

/// One `[[routes]]` table from generated choices.
fn route_toml(
    i: usize,
    host: Option<usize>,
    path_kind: u8,
    path: usize,
    method: Option<bool>,
    header: bool,
) -> String {
    let mut out = format!("[[routes]]\nname = \"r{i}\"\n");
    match host {
        Some(0) => out.push_str("hosts = [\"a.example.com\"]\n"),
        Some(1) => out.push_str("hosts = [\"*.example.com\"]\n"),
        Some(_) => out.push_str("hosts = [\"*.a.example.com\", \"b.example.com\"]\n"),
        None => {}
    }
    let p = PATHS[path % PATHS.len()];
    match path_kind % 3 {
        0 => out.push_str(&format!("path = \"{p}\"\n")),
        1 => out.push_str(&format!("path_prefix = \"{p}\"\n")),
        _ => out.push_str(&format!("path_regex = \"^{p}(/[0-9]+)?$\"\n")),
    }
    match method {
        Some(true) => out.push_str("methods = [\"GET\"]\n"),
        Some(false) => out.push_str("methods = [\"POST\", \"PUT\"]\n"),
        None => {}
    }
    if header {
        out.push_str("headers = { \"x-env\" = \"prod\" }\n");
    }
    out.push_str(&format!("respond = {{ status = 200, body = \"r{i}\" }}\n"));
    out
}

fn route_strategy() -> impl Strategy<Value = (Option<usize>, u8, usize, Option<bool>, bool)> {
    (
        proptest::option::of(0usize..3),
        0u8..3,
        0usize..PATHS.len(),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The compiled router picks exactly what checking every route by the precedence
    /// rules picks.
    #[test]
    fn compiled_router_agrees_with_the_reference_matcher(
        routes in proptest::collection::vec(route_strategy(), 1..12),
        requests in proptest::collection::vec((0usize..HOSTS.len(), 0usize..PATHS.len(), any::<bool>(), any::<bool>(), 0u8..3), 1..20),
    ) {
        let mut text = String::from("[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n");
        for (i, (host, kind, path, method, header)) in routes.into_iter().enumerate() {
            text.push_str(&route_toml(i, host, kind, path, method, header));
        }
        let loaded = load(&SourceFile::new("p.toml", text.as_str())).expect("generated config is valid");
        let config = loaded.config;
        let names: Vec<Arc<str>> = vec!["web".into()];
        let router = Router::compile(&config.routes, &names);
        for (host, path, post, prod, suffix) in requests {
            let mut headers = http::HeaderMap::new();
            if prod {
                headers.insert("x-env", http::HeaderValue::from_static("prod"));
            }
            let method = if post { http::Method::POST } else { http::Method::GET };
            let path = match suffix {
                0 => PATHS[path].to_string(),
                1 => format!("{}/7", PATHS[path].trim_end_matches('/')),
                _ => format!("{}/", PATHS[path].trim_end_matches('/')),
            };
            let facts = RequestFacts { host: HOSTS[host], path: &path, query: None, method: &method, headers: &headers };
            let compiled = router.route("web", &facts).map(|r| r.name.to_string());
            let reference = config
                .routes
                .iter()
                .filter_map(|r| Some((matches_directly(r, &facts)?, r)))
                .max_by_key(|(precedence, _)| *precedence)
                .map(|(_, r)| r.name.to_string());
            prop_assert_eq!(compiled, reference, "{} {}{}\n{}", method, HOSTS[host], path, text);
        }
    }

    /// A router rebuilt from the previous one after routes came and went indexes
    /// exactly what compiling the new routes from nothing does, on every listener.
    #[test]
    fn a_patched_router_equals_a_compiled_one(
        before in proptest::collection::vec(route_strategy(), 1..12),
        after in proptest::collection::vec(route_strategy(), 0..6),
        kept in proptest::collection::vec(any::<bool>(), 12),
        only_on in proptest::collection::vec(0u8..3, 18),
    ) {
        let routes_of = |routes: Vec<_>, first: usize| {
            let mut text = String::from("[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n");
            for (i, (host, kind, path, method, header)) in routes.into_iter().enumerate() {
                text.push_str(&route_toml(first + i, host, kind, path, method, header));
            }
            load(&SourceFile::new("p.toml", text.as_str())).expect("generated config is valid").config.routes
        };
        // Some routes on one listener only, as cluster routes are.
        let place = |routes: Vec<Arc<crate::config::model::Route>>, offset: usize| -> Vec<Arc<crate::config::model::Route>> {
            routes.into_iter().enumerate().map(|(i, r)| {
                let mut r = (*r).clone();
                // Orders are unique, as the config's and the cluster's are.
                r.order = offset * 100 + i;
                r.listeners = match only_on[offset + i] {
                    0 => None,
                    1 => Some(vec!["web".into()]),
                    _ => Some(vec!["api".into()]),
                };
                Arc::new(r)
            }).collect()
        };
        let old = place(routes_of(before, 0), 0);
        let new_ones = place(routes_of(after, 100), 12);
        let names: Vec<Arc<str>> = vec!["web".into(), "api".into()];
        let previous = Router::compile(&old, &names);
        let mut routes: Vec<_> = old.iter().zip(&kept).filter(|(_, k)| **k).map(|(r, _)| r.clone()).collect();
        routes.extend(new_ones.iter().cloned());
        let removed: Vec<_> = old.iter().zip(&kept).filter(|(_, k)| !**k).map(|(r, _)| r).collect();
        let added: Vec<_> = new_ones.iter().collect();
        let patched = Router::patched(&previous, &removed, &added, &names);
        prop_assert_eq!(patched.layout(), Router::compile(&routes, &names).layout());
        let via_diff = Router::compile_from(&previous, &old, &routes, &names);
        prop_assert_eq!(via_diff.layout(), Router::compile(&routes, &names).layout());
    }

    /// Whatever the text, loading a config returns a result: it never panics.
    #[test]
    fn config_text_never_panics(
        fragments in proptest::collection::vec(prop_oneof![
            Just("[[listeners]]\n"), Just("name = \"w\"\n"), Just("address = \"127.0.0.1:0\"\n"),
            Just("[[routes]]\n"), Just("upstream = \"u\"\n"), Just("path_regex = \"(\"\n"),
            Just("[upstreams.u]\n"), Just("endpoints = [{ address = \"x\", weight = -1 }]\n"),
            Just("[upstreams.u.kubernetes]\n"), Just("service = \"s\"\n"), Just("port = 0\n"),
            Just("timeout = \"0s\"\n"), Just("[gateway]\n"), Just("threads = -3\n"),
            Just("u.endpoints = []\n"), Just("tls = { ca = \"/nonexistent\" }\n"),
            Just("hosts = [\"*.\", \"\"]\n"), Just("= = =\n"), Just("\u{feff}\u{0}"),
            Just("path = \"relative\"\n"), Just("max_body_size = \"999999999999999TB\"\n"),
        ], 0..24),
        noise in "[ -~\n]{0,40}",
    ) {
        let mut text: String = fragments.concat();
        text.push_str(&noise);
        let _ = load(&SourceFile::new("p.toml", text.as_str()));
    }

    /// Normalisation agrees with a plain RFC 3986 reading: decode unreserved escapes,
    /// merge slashes, remove dot segments (with `..` above the root an error).
    #[test]
    fn normalisation_agrees_with_rfc_3986(
        segments in proptest::collection::vec(prop_oneof![
            Just("a"), Just("b"), Just("."), Just(".."), Just(""), Just("%2e"), Just("%2E%2e"),
            Just("%2f"), Just("%41"), Just("%7e"), Just("x%20y"), Just("~"),
        ], 0..8),
        trailing_slash in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing_slash {
            path.push('/');
        }
        let got = normalize_path(&path).map(|p| p.into_owned());
        prop_assert_eq!(got, reference_normalize(&path), "{}", path);
    }
}

/// The straightforward reading of RFC 3986 sections 6.2.2 and 5.2.4, written for clarity
/// rather than speed, with slash merging and the above-root error added.
fn reference_normalize(path: &str) -> Result<String, PathError> {
    // 6.2.2.1 and 6.2.2.2: upper-case escapes; decode unreserved ones.
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3).ok_or(PathError::Invalid)?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| PathError::Invalid)?;
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                decoded.push(byte as char);
            } else {
                decoded.push_str(&format!("%{byte:02X}"));
            }
            i += 3;
        } else {
            decoded.push(bytes[i] as char);
            i += 1;
        }
    }
    // Slash merging: empty segments go.
    let ends_open = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        match segment {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut normal = format!("/{}", out.join("/"));
    if ends_open && !out.is_empty() {
        normal.push('/');
    }
    Ok(normal)
}
