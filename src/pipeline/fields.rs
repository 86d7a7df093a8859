//! Header fields as the core reads them, whatever holds them: the HTTP/1.1 loop's ranges
//! into its read buffer, or a `HeaderMap` on pingora's path. The core's steps and header
//! plans are written once against this, so the two renderers cannot read a request
//! differently.

use crate::snapshot::router::RequestHeaders;

/// Read access to a message's fields, names and values as bytes.
pub trait Fields {
    /// Every field in order; names as sent (compared case-insensitively).
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_;

    fn first(&self, name: &str) -> Option<&[u8]> {
        self.each()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    fn count(&self, name: &str) -> usize {
        self.each()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .count()
    }

    /// Whether a comma-separated field (`Connection`, `Upgrade`, `TE`) lists `token`.
    fn has_token(&self, name: &str, token: &[u8]) -> bool {
        self.each()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .any(|(_, v)| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
            })
    }
}

impl Fields for http::HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn first(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// Route conditions read the same fields the rest of the core does.
impl<T: Fields> RequestHeaders for T {
    fn has_value(&self, name: &http::HeaderName, value: &[u8]) -> bool {
        self.each()
            .any(|(n, v)| n.eq_ignore_ascii_case(name.as_str().as_bytes()) && v == value)
    }

    fn has_cookie(&self, name: &str, value: &[u8]) -> bool {
        self.each()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .any(|(_, field)| super::forwarded::cookie(field, name) == Some(value))
    }
}

/// Where a header plan writes: the HTTP/1.1 loop's output bytes, or a list of typed
/// pairs that pingora's adapter inserts into its header map.
pub trait HeaderSink {
    fn put(&mut self, name: &[u8], value: &[u8]);
}

/// HTTP/1.1 wire form: `name: value\r\n`.
impl HeaderSink for Vec<u8> {
    fn put(&mut self, name: &[u8], value: &[u8]) {
        self.extend_from_slice(name);
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }
}

/// Typed pairs; a pair that is not a valid field is left out (every value the plans
/// write comes from a valid field or from the gateway itself).
impl HeaderSink for Vec<(http::HeaderName, http::HeaderValue)> {
    fn put(&mut self, name: &[u8], value: &[u8]) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            self.push((name, value));
        }
    }
}
