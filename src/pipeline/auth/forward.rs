//! `forward`: each request is first asked about at an auth service (a GET, no body, with
//! the configured request headers and `X-Forwarded-Method/-Proto/-Host/-Uri/-For`). A 2xx
//! lets it through with the service's `response_headers` copied to the upstream
//! request; any other answer goes back to the client as the service sent it; a service
//! that cannot be reached or is slower than `timeout` gives 503, never a pass.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::Empty;

use crate::config::model::ForwardAuth;

use super::super::answer::LocalAnswer;
use super::super::fields::Fields;
use super::client::{fetch, new_client, AuthClient};
use super::{Outcome, Probe};

/// The largest answer body taken from the auth service (a login page, an error).
const BODY_LIMIT: usize = 1 << 20;

/// Fields of the auth service's answer that are its connection's, not the client's.
const NOT_PASSED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "content-type",
    "upgrade",
    "te",
    "trailer",
    "x-request-id",
];

pub struct Forward {
    spec: ForwardAuth,
    client: AuthClient,
}

impl Forward {
    pub fn new(spec: &ForwardAuth) -> Self {
        Self {
            spec: spec.clone(),
            client: new_client(),
        }
    }

    /// The subrequest for a client request.
    pub fn subrequest<F: Fields>(&self, probe: &Probe<'_, F>) -> http::Request<Empty<Bytes>> {
        let mut request = http::Request::new(Empty::new());
        *request.uri_mut() = self.spec.address.clone();
        let headers = request.headers_mut();
        for name in &self.spec.request_headers {
            for (n, v) in probe.fields.each() {
                if n.eq_ignore_ascii_case(name.as_str().as_bytes()) {
                    if let Ok(value) = HeaderValue::from_bytes(v) {
                        headers.append(name.clone(), value);
                    }
                }
            }
        }
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        put("x-forwarded-method", probe.method.as_str());
        put(
            "x-forwarded-proto",
            if probe.tls { "https" } else { "http" },
        );
        put("x-forwarded-host", probe.host);
        put("x-forwarded-uri", probe.uri);
        put("x-forwarded-for", &probe.peer.to_canonical().to_string());
        if let Some(authority) = self.spec.address.authority() {
            put("host", authority.as_str());
        }
        request
    }

    pub async fn check<F: Fields>(&self, probe: &Probe<'_, F>) -> Outcome {
        let request = self.subrequest(probe);
        let answer = match fetch(&self.client, request, self.spec.timeout, BODY_LIMIT).await {
            Ok(answer) => answer,
            Err(reason) => {
                tracing::warn!(address = %self.spec.address, error = %reason, "auth service unavailable");
                return Outcome::Error(LocalAnswer::auth_unavailable(
                    b"authentication service unavailable\n",
                ));
            }
        };
        if (200..300).contains(&answer.status) {
            let upstream = self
                .spec
                .response_headers
                .iter()
                .flat_map(|name| {
                    answer
                        .headers
                        .get_all(name)
                        .iter()
                        .map(|v| (name.clone(), v.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            return Outcome::Allowed {
                user: None,
                upstream,
                drop_authorization: false,
            };
        }
        if let (401, Some(signin)) = (answer.status, &self.spec.signin) {
            return Outcome::Denied(signin_redirect(signin, probe));
        }
        let headers = answer
            .headers
            .iter()
            .filter(|(name, _)| !NOT_PASSED.contains(&name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let content_type = answer.headers.get(http::header::CONTENT_TYPE).cloned();
        Outcome::Denied(LocalAnswer::passed_through(
            answer.status,
            headers,
            content_type,
            answer.body,
        ))
    }
}

/// A 302 to the sign-in page, with the original URL in `rd` (as ingress-nginx does).
fn signin_redirect<F: Fields>(signin: &str, probe: &Probe<'_, F>) -> LocalAnswer {
    let scheme = if probe.tls { "https" } else { "http" };
    let original = format!("{scheme}://{}{}", probe.host, probe.uri);
    let escaped: String = original
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let separator = if signin.contains('?') { '&' } else { '?' };
    let mut answer = LocalAnswer::plain(302, b"");
    answer.location = Some(format!("{signin}{separator}rd={escaped}"));
    answer.head_only = true;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_subrequest_carries_the_configured_headers_and_the_request_it_is_about() {
        let forward = Forward::new(&ForwardAuth {
            address: "http://127.0.0.1:9/verify".parse().expect("uri"),
            request_headers: vec![HeaderName::from_static("cookie")],
            response_headers: vec![],
            timeout: std::time::Duration::from_secs(1),
            signin: None,
        });
        let mut fields = http::HeaderMap::new();
        fields.insert("cookie", HeaderValue::from_static("sid=1"));
        fields.insert("x-other", HeaderValue::from_static("no"));
        let probe = Probe {
            method: &http::Method::POST,
            uri: "/admin?x=1",
            host: "app.test",
            peer: "10.0.0.9".parse().expect("ip"),
            tls: true,
            fields: &fields,
        };
        let request = forward.subrequest(&probe);
        assert_eq!(request.method(), http::Method::GET);
        let h = request.headers();
        assert_eq!(h["cookie"], "sid=1");
        assert!(!h.contains_key("x-other"));
        assert_eq!(h["x-forwarded-method"], "POST");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.test");
        assert_eq!(h["x-forwarded-uri"], "/admin?x=1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        let redirect = signin_redirect("https://login.test/start?a=1", &probe);
        assert_eq!(redirect.status, 302);
        assert_eq!(
            redirect.location.as_deref(),
            Some("https://login.test/start?a=1&rd=https%3A%2F%2Fapp.test%2Fadmin%3Fx%3D1")
        );
    }
}
