//! `jwt`: a bearer token (or a cookie) whose signature is checked against the JWKS key
//! named by its `kid`, then `exp`, `nbf`, `iss` and `aud`.
//!
//! Only the configured public-key algorithms verify: the token's `alg` must be in the
//! list, and it is the only algorithm the check accepts for that token, against a key of
//! the same family (so `none`, HS256 signed with a public key, or an RS key used for ES
//! never verify). Keys from a URL are fetched at start, refreshed every
//! [`REFRESH_EVERY`] and when an unknown `kid` arrives (at most once per
//! [`REFETCH_AT_MOST`]); a failed fetch keeps the last good set.
//!
//! A verified token is remembered until it expires, for at most [`CACHE_FOR`], and only
//! while the key set it was verified against is the current one: a signature check costs
//! tens of microseconds (RS256) and a client sends the same token with every request.
//! The cache holds the token itself (as Envoy's JWT cache does) and finds it by a fast
//! seeded hash: a hit then costs a pass over the token's bytes and one comparison, where
//! a SHA-256 of it was most of a cached request's authentication cost. A bearer token is
//! no password (it is in every request's buffers anyway), and an entry only ever matches
//! the exact token that verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::model::{JwksSource, JwtAuth};

use super::super::answer::LocalAnswer;
use super::super::fields::Fields;
use super::client::{fetch, new_client, AuthClient};
use super::Outcome;

pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
pub const REFETCH_AT_MOST: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_LIMIT: usize = 1 << 20;
/// How long a verified token is believed without checking its signature again (never
/// past its `exp`).
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// Entries at most; a full cache drops its expired entries, then everything.
const CACHE_LIMIT: usize = 10_000;

/// What a verified token let through, and until when.
struct Verified {
    until: Instant,
    /// The key set it was verified against: a rotation (or a refetch) ends the entry.
    keys: Arc<KeySet>,
    user: Option<String>,
    upstream: Vec<(HeaderName, HeaderValue)>,
}

/// Keys by `kid`, with the algorithm a key declares for itself, if any.
#[derive(Default)]
struct KeySet {
    keys: Vec<(Option<String>, DecodingKey, Option<String>)>,
    fetched: Option<Instant>,
}

impl KeySet {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                // Keys of a kind we cannot use (symmetric ones included) and encryption
                // keys are skipped.
                if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
                    return None;
                }
                let key = DecodingKey::from_jwk(jwk).ok()?;
                if matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                ) {
                    return None;
                }
                let alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
                Some((jwk.common.key_id.clone(), key, alg))
            })
            .collect();
        Ok(Self {
            keys,
            fetched: Some(Instant::now()),
        })
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        let alg_name = format!("{alg:?}");
        let fits = |declared: &Option<String>| declared.as_ref().is_none_or(|d| *d == alg_name);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _, declared)| k.as_deref() == Some(kid) && fits(declared))
                .map(|(_, key, _)| key),
            // No `kid`: only a set with one key says which key is meant.
            None if self.keys.len() == 1 => Some(&self.keys[0].1).filter(|_| fits(&self.keys[0].2)),
            None => None,
        }
    }
}

struct State {
    spec: JwtAuth,
    keys: ArcSwap<KeySet>,
    /// When a fetch was last started; fetches are serialised here.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    client: Option<AuthClient>,
    verified: Mutex<HashMap<Box<str>, Verified, foldhash::fast::RandomState>>,
}

pub struct Jwt {
    state: Arc<State>,
}

impl Jwt {
    pub fn new(spec: &JwtAuth) -> Self {
        let (keys, client) = match &spec.jwks {
            // Checked at load to parse.
            JwksSource::File(file) => (KeySet::parse(&file.pem).unwrap_or_default(), None),
            JwksSource::Url(_) => (KeySet::default(), Some(new_client())),
        };
        let state = Arc::new(State {
            spec: spec.clone(),
            keys: ArcSwap::from_pointee(keys),
            last_fetch: tokio::sync::Mutex::new(None),
            client,
            verified: Mutex::new(HashMap::default()),
        });
        if state.client.is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let state = state.clone();
                runtime.spawn(async move { state.refresh(Duration::ZERO).await });
            }
        }
        Self { state }
    }

    pub async fn check<F: Fields>(&self, fields: &F) -> Outcome {
        let state = &self.state;
        let Some(token) = token(fields, state.spec.cookie.as_deref()) else {
            return Outcome::Denied(LocalAnswer::unauthorized("Bearer".to_string()));
        };
        if let Some(allowed) = state.remembered(token) {
            return allowed;
        }
        let invalid = |why: &str| {
            tracing::debug!(reason = why, "token refused");
            Outcome::Denied(LocalAnswer::unauthorized(
                "Bearer error=\"invalid_token\"".to_string(),
            ))
        };
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            Err(e) => return invalid(&e.to_string()),
        };
        if !state.spec.algorithms.contains(&header.alg) {
            return invalid("algorithm not allowed");
        }
        state.refresh_when_stale();
        let kid = header.kid.as_deref();
        let mut keys = state.keys.load_full();
        if keys.find(kid, header.alg).is_none() && state.client.is_some() {
            state.refresh(REFETCH_AT_MOST).await;
            keys = state.keys.load_full();
            if keys.fetched.is_none() {
                return Outcome::Error(LocalAnswer::auth_unavailable(
                    b"signing keys unavailable\n",
                ));
            }
        }
        let Some(key) = keys.find(kid, header.alg) else {
            return invalid("no key for the token's kid");
        };
        let claims = match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &state.validation(header.alg),
        ) {
            Ok(data) => data.claims,
            Err(e) => return invalid(&e.to_string()),
        };
        let upstream = claim_headers(&state.spec.claims_to_headers, &claims);
        let user = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .map(str::to_string);
        if let Some(exp) = claims.get("exp").and_then(|e| e.as_u64()) {
            state.remember(token, exp, &keys, &user, &upstream);
        }
        Outcome::Allowed {
            user,
            upstream,
            drop_authorization: false,
        }
    }
}

impl State {
    fn remembered(&self, token: &str) -> Option<Outcome> {
        let current = self.keys.load();
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(token)?;
        (Arc::ptr_eq(&entry.keys, &current) && Instant::now() < entry.until).then(|| {
            Outcome::Allowed {
                user: entry.user.clone(),
                upstream: entry.upstream.clone(),
                drop_authorization: false,
            }
        })
    }

    fn remember(
        &self,
        token: &str,
        exp: u64,
        keys: &Arc<KeySet>,
        user: &Option<String>,
        upstream: &[(HeaderName, HeaderValue)],
    ) {
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Believed until `exp` itself: the clock skew allowance is for the first check.
        let left = Duration::from_secs(exp.saturating_sub(now_unix)).min(CACHE_FOR);
        if left.is_zero() {
            return;
        }
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            let now = Instant::now();
            cache.retain(|_, v| v.until > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(
            token.into(),
            Verified {
                until: Instant::now() + left,
                keys: keys.clone(),
                user: user.clone(),
                upstream: upstream.to_vec(),
            },
        );
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        // The token's own algorithm, already checked against the list: the key must be
        // of its family.
        validation.algorithms = vec![alg];
        validation.leeway = self.spec.clock_skew.as_secs();
        validation.validate_nbf = true;
        // The library checks `iss` and `aud` only when a token has them: a configured
        // issuer or audience makes the claim required, so leaving it out never passes.
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.spec.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.spec.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.spec.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// A set older than [`REFRESH_EVERY`] is fetched again in the background; the
    /// request goes on with the keys it has.
    fn refresh_when_stale(self: &Arc<Self>) {
        if self.client.is_none() {
            return;
        }
        let stale = self
            .keys
            .load()
            .fetched
            .is_some_and(|at| at.elapsed() >= REFRESH_EVERY);
        // One background fetch at a time, and none while the last attempt is recent
        // (a JWKS endpoint that is down is not asked on every request).
        let due = self
            .last_fetch
            .try_lock()
            .is_ok_and(|last| last.is_none_or(|at| at.elapsed() >= REFRESH_EVERY));
        if stale && due {
            let state = self.clone();
            tokio::spawn(async move { state.refresh(REFRESH_EVERY).await });
        }
    }

    /// Fetches the key set unless a fetch started less than `at_most` ago; concurrent
    /// callers wait for the one fetch. A failure keeps the last good set.
    async fn refresh(&self, at_most: Duration) {
        let (Some(client), JwksSource::Url(url)) = (&self.client, &self.spec.jwks) else {
            return;
        };
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < at_most.max(Duration::from_millis(1))) {
            return;
        }
        *last = Some(Instant::now());
        let mut request = http::Request::new(http_body_util::Empty::<Bytes>::new());
        *request.uri_mut() = url.clone();
        request.headers_mut().insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let result = fetch(client, request, FETCH_TIMEOUT, JWKS_LIMIT)
            .await
            .and_then(|answer| match answer.status {
                200 => KeySet::parse(&answer.body),
                status => Err(format!("status {status}")),
            });
        match result {
            Ok(keys) => {
                tracing::debug!(url = %url, keys = keys.keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
            }
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "JWKS fetch failed; keeping the last good keys")
            }
        }
    }
}

/// The token: from the named cookie when one is configured, else `Authorization: Bearer`.
fn token<'a, F: Fields>(fields: &'a F, cookie: Option<&str>) -> Option<&'a str> {
    if let Some(name) = cookie {
        return fields
            .each()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .flat_map(|(_, v)| v.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = std::str::from_utf8(pair).ok()?.trim();
                let (n, v) = pair.split_once('=')?;
                (n == name && !v.is_empty()).then_some(v)
            });
    }
    let value = std::str::from_utf8(fields.first("authorization")?)
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured claims as header values: strings as they are, anything else as JSON.
fn claim_headers(
    wanted: &[(String, HeaderName)],
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(HeaderName, HeaderValue)> {
    wanted
        .iter()
        .filter_map(|(claim, header)| {
            let value = match claims.get(claim)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some((header.clone(), HeaderValue::from_str(&value).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_bearer_or_the_named_cookie() {
        let mut fields = http::HeaderMap::new();
        fields.insert(
            "authorization",
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        fields.insert("cookie", HeaderValue::from_static("a=1; session=tok.en.x"));
        assert_eq!(token(&fields, None), Some("abc.def.ghi"));
        assert_eq!(token(&fields, Some("session")), Some("tok.en.x"));
        assert_eq!(token(&fields, Some("other")), None);
        fields.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(token(&fields, None), None);
    }

    #[test]
    fn claims_become_header_values() {
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"sub":"u1","admin":true,"groups":["a","b"]}"#).expect("json");
        let wanted = vec![
            ("sub".to_string(), HeaderName::from_static("x-user")),
            ("admin".to_string(), HeaderName::from_static("x-admin")),
            ("groups".to_string(), HeaderName::from_static("x-groups")),
            ("missing".to_string(), HeaderName::from_static("x-missing")),
        ];
        let got = claim_headers(&wanted, &claims);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, "u1");
        assert_eq!(got[1].1, "true");
        assert_eq!(got[2].1, r#"["a","b"]"#);
    }
}
