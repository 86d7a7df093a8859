//! Request-path normalisation, applied before routing so that a route sees the same path
//! the upstream will: `/public/../admin` is `/admin` for both.
//!
//! Pure and socket-free. The rules, in the order they apply (RFC 3986 section 6.2.2, plus
//! slash merging as nginx does it):
//! 1. percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded, so `%2e`
//!    is `.` and `%41` is `A`; every other escape is kept, with its hex in upper case
//!    (`%2f` becomes `%2F`, and stays encoded: it is data, not a separator);
//! 2. runs of `/` are merged into one;
//! 3. dot segments are removed (RFC 3986 section 5.2.4), except that a `..` which would
//!    climb above the root is an error rather than being dropped silently.

use std::borrow::Cow;
use std::fmt;

/// Why a request path cannot be normalised; either way the request gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`/...`) nor `*`, or a `%` not followed by two hex digits.
    Invalid,
    /// A `..` segment climbs above the root, as in `/../x` or `/%2e%2e/x`.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Invalid => "invalid request path",
            PathError::AboveRoot => "request path climbs above the root",
        })
    }
}

impl std::error::Error for PathError {}

/// Normalises a request-target path, given without its query. `*` (for `OPTIONS *`) is
/// returned unchanged. A path that is already normal, the common case, is borrowed, not
/// copied.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw == "*" {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathError::Invalid);
    }
    if is_normal(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// True when normalising would return the path unchanged: every escape is valid, upper
/// case and not of an unreserved character, no `//`, no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => match escape_at(path, i) {
                Some(byte) if !is_unreserved(byte) && is_upper_hex(path, i) => i += 3,
                _ => return false,
            },
            b'/' => {
                let rest = &path[i + 1..];
                let dot_segment = |len: usize| {
                    rest.len() >= len
                        && rest[..len].iter().all(|&b| b == b'.')
                        && rest.get(len).is_none_or(|&b| b == b'/')
                };
                if rest.first() == Some(&b'/') || dot_segment(1) || dot_segment(2) {
                    return false;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    true
}

/// Step 1: decodes escapes of unreserved characters and upper-cases the others' hex.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let byte = escape_at(bytes, i).ok_or(PathError::Invalid)?;
        // Everything before the `%` is copied as it is; it ends on a char boundary since
        // `%` is ASCII.
        out.push_str(&raw[copied..i]);
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
        }
        i += 3;
        copied = i;
    }
    out.push_str(&raw[copied..]);
    Ok(out)
}

/// Steps 2 and 3 on a decoded path that starts with `/`.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    // Whether the result ends in `/`: a path ending in `/`, `/.` or `/..` names a
    // directory (RFC 3986 keeps the slash: `/a/b/..` is `/a/`).
    let mut trailing_slash = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            // An empty segment is a `//` run (merged) or the end of a path ending in `/`.
            "" | "." => trailing_slash = last,
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The byte that the escape `%XY` starting at `i` stands for; `None` when it is not two
/// hex digits (`%zz`, a truncated `%4`).
fn escape_at(path: &[u8], i: usize) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let high = hex(*path.get(i + 1)?)?;
    let low = hex(*path.get(i + 2)?)?;
    u8::try_from(high * 16 + low).ok()
}

/// Whether the escape at `i` (already known to be valid) is written in upper case.
fn is_upper_hex(path: &[u8], i: usize) -> bool {
    !path[i + 1..i + 3].iter().any(u8::is_ascii_lowercase)
}

/// RFC 3986 section 2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(raw: &str) -> String {
        match normalize_path(raw) {
            Ok(path) => path.into_owned(),
            Err(e) => panic!("{raw:?}: {e}"),
        }
    }

    #[test]
    fn already_normal_paths_are_borrowed() {
        for raw in [
            "/",
            "/admin",
            "/a/b/c",
            "/a/b/",
            "/a/%2F/b",
            "/caf%C3%A9",
            "/a/...",
            "/a/.b/..c/c..",
            "/.well-known/acme-challenge/x",
            "/a/%20b",
            "/ünïcode/ok",
            "*",
        ] {
            let got = normalize_path(raw);
            assert!(
                matches!(got, Ok(Cow::Borrowed(p)) if p == raw),
                "{raw:?}: {got:?}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        for (raw, want) in [
            ("/public/../admin", "/admin"),
            ("/./admin", "/admin"),
            ("/a/./b/./c", "/a/b/c"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/../..", "/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/a/../b/../c/", "/c/"),
        ] {
            assert_eq!(normal(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn slash_runs_are_merged() {
        assert_eq!(normal("//a///b"), "/a/b");
        assert_eq!(normal("//"), "/");
        assert_eq!(normal("/a//"), "/a/");
        // Merged before dot segments are removed, as nginx does: `..` drops `a`.
        assert_eq!(normal("/a//../b"), "/b");
        assert_eq!(normalize_path("//../x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normal("/%41bc"), "/Abc");
        assert_eq!(normal("/%7euser/%2D%5F%2E%30"), "/~user/-_.0");
        assert_eq!(normal("/a%2fb"), "/a%2Fb");
        assert_eq!(normal("/a/%2f/b"), "/a/%2F/b");
        assert_eq!(normal("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(normal("/%3f%23"), "/%3F%23");
        assert_eq!(normal("/%25"), "/%25");
        assert_eq!(normal("/%2541"), "/%2541", "decoded once, not twice");
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(normal("/public/%2e%2e/admin"), "/admin");
        assert_eq!(normal("/public/%2E%2E/admin"), "/admin");
        assert_eq!(normal("/public/.%2e/admin"), "/admin");
        assert_eq!(normal("/%2e/admin"), "/admin");
        assert_eq!(normal("/a/%2e"), "/a/");
        // An encoded slash is not a separator, so this is one segment.
        assert_eq!(normal("/a/..%2F/b"), "/a/..%2F/b");
    }

    #[test]
    fn climbing_above_the_root_is_an_error() {
        for raw in [
            "/..",
            "/../x",
            "/../",
            "/a/../../x",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/x",
            "/./../x",
            "/a/b/../../../c",
        ] {
            assert_eq!(normalize_path(raw), Err(PathError::AboveRoot), "{raw:?}");
        }
    }

    #[test]
    fn malformed_paths_are_invalid() {
        for raw in [
            "",
            "admin",
            "../x",
            "http://h/x",
            "/%zz",
            "/%4",
            "/a%",
            "/%g0",
            "/%0g",
            "/%%41",
            "**",
        ] {
            assert_eq!(normalize_path(raw), Err(PathError::Invalid), "{raw:?}");
        }
        // Invalid escapes are refused even where nothing else would change.
        assert_eq!(normalize_path("/a/%zz/b"), Err(PathError::Invalid));
        // And where something would.
        assert_eq!(normalize_path("/a/../%zz"), Err(PathError::Invalid));
    }

    #[test]
    fn options_star_is_kept() {
        assert!(matches!(normalize_path("*"), Ok(Cow::Borrowed("*"))));
    }

    /// Over every short path from an alphabet rich in the characters that matter: no
    /// panic; a result is normal (normalising it again borrows it), starts with `/`, has
    /// no `//` and no dot segment; and the result is borrowed exactly when unchanged.
    #[test]
    fn results_are_normal_and_borrowed_only_when_unchanged() {
        const ALPHABET: &[&str] = &["/", ".", "%2e", "%2E", "%2f", "%41", "a", "%", "%4"];
        let mut paths = vec![String::from("/")];
        let mut frontier = paths.clone();
        for _ in 0..5 {
            let mut next = Vec::new();
            for path in &frontier {
                for piece in ALPHABET {
                    next.push(format!("{path}{piece}"));
                }
            }
            paths.extend(next.iter().cloned());
            frontier = next;
        }
        assert!(paths.len() > 60_000);
        for raw in &paths {
            match normalize_path(raw) {
                Ok(Cow::Borrowed(p)) => assert_eq!(p, raw),
                Ok(Cow::Owned(p)) => {
                    assert_ne!(&p, raw, "{raw:?} was copied though unchanged");
                    assert!(
                        matches!(normalize_path(&p), Ok(Cow::Borrowed(_))),
                        "{raw:?} -> {p:?} is not normal"
                    );
                    assert!(p.starts_with('/') && !p.contains("//"), "{raw:?} -> {p:?}");
                    for dot in ["/./", "/../"] {
                        assert!(!format!("{p}/").contains(dot), "{raw:?} -> {p:?}");
                    }
                }
                Err(_) => {}
            }
        }
    }
}
