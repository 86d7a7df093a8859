//! CORS: which origin a route admits, what a preflight is answered with, and the headers
//! an actual response carries. Pure, so every rule is tested without a socket.

use http::{HeaderName, HeaderValue};

use crate::config::model::Cors;

/// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &http::Method, origin: Option<&[u8]>, request_method: bool) -> bool {
    method == http::Method::OPTIONS && origin.is_some() && request_method
}

/// The origin, as sent, when the route admits it.
pub fn allowed_origin<'a>(cors: &Cors, origin: &'a [u8]) -> Option<&'a str> {
    let origin = std::str::from_utf8(origin).ok()?;
    cors.allow_origins
        .iter()
        .any(|o| o.matches(origin))
        .then_some(origin)
}

fn join<T: AsRef<str>>(items: &[T]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    let text = items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).ok()
}

/// The fields every answer to an allowed origin carries.
pub fn actual_headers(cors: &Cors, origin: &str, out: &mut Vec<(HeaderName, HeaderValue)>) {
    let Ok(origin) = HeaderValue::from_str(origin) else {
        return;
    };
    out.push((http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
    out.push((http::header::VARY, HeaderValue::from_static("origin")));
    if cors.allow_credentials {
        out.push((
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    if let Some(expose) = join(&cors.expose_headers) {
        out.push((http::header::ACCESS_CONTROL_EXPOSE_HEADERS, expose));
    }
}

/// The fields a preflight's 204 adds to the actual ones: exactly the configured methods
/// and headers, and how long a browser may cache them.
pub fn preflight_headers(cors: &Cors, out: &mut Vec<(HeaderName, HeaderValue)>) {
    if let Some(methods) = join(&cors.allow_methods) {
        out.push((http::header::ACCESS_CONTROL_ALLOW_METHODS, methods));
    }
    if let Some(headers) = join(&cors.allow_headers) {
        out.push((http::header::ACCESS_CONTROL_ALLOW_HEADERS, headers));
    }
    if let Some(max_age) = cors.max_age {
        out.push((
            http::header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(max_age.as_secs()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::OriginMatch;

    fn cors(origins: Vec<OriginMatch>) -> Cors {
        Cors {
            allow_origins: origins,
            allow_methods: vec![http::Method::GET, http::Method::POST],
            allow_headers: vec![HeaderName::from_static("content-type")],
            expose_headers: vec![HeaderName::from_static("x-request-id")],
            allow_credentials: true,
            max_age: Some(std::time::Duration::from_secs(600)),
        }
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let c = cors(vec![
            OriginMatch::Exact("https://app.example.com".into()),
            OriginMatch::Subdomains {
                scheme: "https://".into(),
                suffix: ".example.org".into(),
            },
        ]);
        assert!(allowed_origin(&c, b"https://app.example.com").is_some());
        assert!(allowed_origin(&c, b"https://APP.example.com").is_some());
        assert!(allowed_origin(&c, b"http://app.example.com").is_none());
        assert!(allowed_origin(&c, b"https://a.b.example.org").is_some());
        assert!(allowed_origin(&c, b"https://example.org").is_none());
        assert!(allowed_origin(&c, b"https://evil-example.org").is_none());
        assert!(allowed_origin(&c, b"http://a.example.org").is_none());
        assert!(allowed_origin(&c, b"https://evil.com/.example.org").is_none());
    }

    #[test]
    fn preflights_list_exactly_what_is_configured() {
        let c = cors(vec![OriginMatch::Exact("https://a.test".into())]);
        let mut out = Vec::new();
        actual_headers(&c, "https://a.test", &mut out);
        preflight_headers(&c, &mut out);
        let get = |n: &str| out.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("access-control-allow-origin").expect("origin"),
            "https://a.test"
        );
        assert_eq!(get("access-control-allow-methods").expect("m"), "GET, POST");
        assert_eq!(
            get("access-control-allow-headers").expect("h"),
            "content-type"
        );
        assert_eq!(get("access-control-allow-credentials").expect("c"), "true");
        assert_eq!(get("access-control-max-age").expect("age"), "600");
        assert_eq!(get("vary").expect("vary"), "origin");
    }
}
