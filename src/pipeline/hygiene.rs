//! Request hygiene before routing: what the request target and Host may contain, and the
//! one normalised path that routing and the upstream both see.

use std::borrow::Cow;

use crate::pipeline::http_path::{normalize_path, PathError};

/// The request target split into what routing and forwarding need.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Normalised: dot segments removed, unreserved escapes decoded, `//` merged.
    pub path: Cow<'a, str>,
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target; it replaces Host (RFC 9112 3.2.2).
    pub authority: Option<&'a str>,
}

/// Splits and checks a request target (origin form, absolute form or `*`).
///
/// A fragment, a backslash, a control character or a NUL (raw or `%00`) gets 400: an
/// upstream framework may cut the path at `#` or read `\` as `/`, and then serve a path
/// other than the one routing matched (Envoy's CVE-2021-32779).
pub fn split_target(target: &str) -> Result<Target<'_>, &'static str> {
    if let Some(bad) = target
        .bytes()
        .find(|&b| b == b'#' || b == b'\\' || b < 0x21 || b == 0x7f)
    {
        return Err(match bad {
            b'#' => "fragment in request target",
            b'\\' => "backslash in request target",
            _ => "control character in request target",
        });
    }
    if contains_nul_escape(target) {
        return Err("NUL in request target");
    }
    if target == "*" {
        return Ok(Target {
            path: Cow::Borrowed("*"),
            query: None,
            authority: None,
        });
    }
    let (path, query, authority) = if target.starts_with('/') {
        match target.split_once('?') {
            Some((p, q)) => (p, Some(q), None),
            None => (target, None, None),
        }
    } else {
        // Absolute form: rare (proxies talking to proxies).
        let (scheme, rest) = target.split_once("://").ok_or("invalid request target")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("invalid request target");
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        (path, query, Some(authority))
    };
    let path = normalize_path(path).map_err(|e| match e {
        PathError::AboveRoot => "path climbs above the root",
        PathError::Invalid => "invalid path",
    })?;
    Ok(Target {
        path,
        query,
        authority,
    })
}

fn contains_nul_escape(target: &str) -> bool {
    target
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// Whether a Host (or `:authority`) is a host name, an IPv4 address or a bracketed IPv6
/// address, with an optional port: `x@a.example.com` is not, so it cannot match a route
/// for `*.example.com` while an upstream reads another host out of it.
pub fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_backslashes_and_nuls_are_refused() {
        for target in ["/admin#x", "/a\\b", "/a%00b", "/a\x01b", "/a\x7f", "/x?a=#"] {
            assert!(split_target(target).is_err(), "{target:?}");
        }
        assert!(split_target("/a%20b").is_ok());
        assert!(
            split_target("/a%2500").is_ok(),
            "an escaped % followed by 00"
        );
    }

    #[test]
    fn absolute_form_gives_its_authority() {
        let target = split_target("http://app.test:8080/a/../b?q=1").expect("valid");
        assert_eq!(target.authority, Some("app.test:8080"));
        assert_eq!(target.path, "/b");
        assert_eq!(target.query, Some("q=1"));
        assert_eq!(
            split_target("http://app.test").expect("valid").path,
            "/",
            "an empty path is /"
        );
        assert!(split_target("ftp://app.test/").is_err());
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        for good in [
            "a.example.com",
            "a.example.com:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "localhost",
        ] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "x@a.example.com",
            "a b",
            "a/b",
            "[::1",
            "[zz]",
            "a:",
            "a:123456",
            "",
            "a.example.com:80:80",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
