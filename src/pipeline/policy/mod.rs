//! Traffic policy on routes, one gate for both renderers: access lists, rate limits
//! (local buckets, or shared through the store) and CORS. A route without a policy
//! returns at the first check and allocates nothing.
//!
//! Order: `deny`, then `allow` (403); the CORS headers for an allowed origin (so a 429
//! carries them too and a browser can read it); the rate limit (429, and the
//! `ratelimit-*` fields on every answer); a preflight is then answered (204) and never
//! forwarded.

pub mod bucket;
pub mod client;
pub mod cors;
pub mod store;

use std::hash::Hash;
use std::net::IpAddr;

use http::HeaderValue;

use crate::config::model::{OnStoreError, RateLimit, RateLimitKey, RateLimitScope, RoutePolicy};

use super::answer::LocalAnswer;
use super::context::RequestContext;
use super::fields::Fields;
use super::Incoming;
use bucket::Verdict;

/// Why policy refused a request, counted when the request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AccessDenied,
    RateLimited,
}

/// What a rate limit counts separately, hashed for the local buckets.
#[derive(Hash)]
enum Key<'a> {
    Client(IpAddr),
    Route,
    Header(&'a [u8]),
}

/// Runs the routed request's policy; the first refusal ends the request.
pub async fn run<F: Fields + Sync>(
    request: &Incoming<'_, F>,
    ctx: &mut RequestContext,
) -> Option<LocalAnswer> {
    let policy = ctx.route.as_ref()?.policy.clone()?;
    let client = client::client_address(request.peer, ctx.listener_spec(), request.fields);
    if !admitted(&policy, client) {
        tracing::debug!(route = %ctx.route_name(), request_id = %ctx.request_id, %client, "access denied");
        ctx.refusal = Some(Refusal::AccessDenied);
        return Some(LocalAnswer::forbidden());
    }
    let mut preflight = false;
    let mut origin_allowed = false;
    if let Some(cors) = &policy.cors {
        let origin = request.fields.first("origin");
        if let Some(origin) = origin.and_then(|o| cors::allowed_origin(cors, o)) {
            cors::actual_headers(cors, origin, &mut ctx.response_additions);
            origin_allowed = true;
        }
        preflight = cors::is_preflight(
            request.method,
            origin,
            request
                .fields
                .first("access-control-request-method")
                .is_some(),
        );
    }
    if let Some(limit) = &policy.rate_limit {
        if let Some(answer) = rate_limit(request, ctx, limit, client).await {
            return Some(answer);
        }
    }
    if preflight {
        if let (Some(cors), true) = (&policy.cors, origin_allowed) {
            cors::preflight_headers(cors, &mut ctx.response_additions);
        }
        return Some(LocalAnswer::preflight());
    }
    None
}

/// `deny` first, then `allow` (when it has entries).
pub fn admitted(policy: &RoutePolicy, client: IpAddr) -> bool {
    let client = client.to_canonical();
    if policy.deny.iter().any(|net| net.contains(&client)) {
        return false;
    }
    policy.allow.is_empty() || policy.allow.iter().any(|net| net.contains(&client))
}

async fn rate_limit<F: Fields>(
    request: &Incoming<'_, F>,
    ctx: &mut RequestContext,
    limit: &RateLimit,
    client: IpAddr,
) -> Option<LocalAnswer> {
    let key = match &limit.key {
        RateLimitKey::Client => Key::Client(client),
        RateLimitKey::Route => Key::Route,
        RateLimitKey::Header(name) => {
            Key::Header(request.fields.first(name.as_str()).unwrap_or(b""))
        }
    };
    let verdict = match limit.scope {
        RateLimitScope::Local => {
            // Compiled with the snapshot for every route with a local limit.
            let limiter = ctx.snapshot.limiters.get(ctx.route_name())?;
            limiter.check(&key)
        }
        RateLimitScope::Global => {
            let store = ctx.snapshot.rate_limit_store.clone()?;
            let name = store_key(ctx.route_name(), &key);
            match store
                .check(&name, limit.interval_micros(), limit.burst)
                .await
            {
                Ok(verdict) => verdict,
                Err(error) => {
                    ctx.store_error = true;
                    tracing::warn!(route = %ctx.route_name(), request_id = %ctx.request_id, error = %error.0, "rate limit store failed");
                    return match store.settings.on_error {
                        OnStoreError::Allow => None,
                        OnStoreError::Deny => Some(LocalAnswer::store_unavailable()),
                    };
                }
            }
        }
    };
    write_headers(limit, &verdict, &mut ctx.response_additions);
    if verdict.admitted {
        return None;
    }
    tracing::debug!(route = %ctx.route_name(), request_id = %ctx.request_id, %client, "rate limited");
    ctx.refusal = Some(Refusal::RateLimited);
    Some(LocalAnswer::too_many_requests())
}

/// Whole seconds, rounded up.
fn seconds(micros: u64) -> u64 {
    micros.div_ceil(1_000_000)
}

/// `ratelimit-limit` (the bucket's size), `-remaining` and `-reset` (seconds until the
/// bucket is full again); a refusal adds `retry-after` (seconds until one token is back).
pub fn write_headers(
    limit: &RateLimit,
    verdict: &Verdict,
    out: &mut Vec<(http::HeaderName, HeaderValue)>,
) {
    let name = http::HeaderName::from_static;
    out.push((name("ratelimit-limit"), HeaderValue::from(limit.burst)));
    out.push((
        name("ratelimit-remaining"),
        HeaderValue::from(verdict.remaining),
    ));
    out.push((
        name("ratelimit-reset"),
        HeaderValue::from(seconds(verdict.reset)),
    ));
    if !verdict.admitted {
        out.push((
            http::header::RETRY_AFTER,
            HeaderValue::from(seconds(verdict.retry_after).max(1)),
        ));
    }
}

/// The store's name for a bucket: the same in every gateway process. Header values are
/// hashed, so a long or odd value never makes a long or odd key.
fn store_key(route: &str, key: &Key<'_>) -> String {
    match key {
        Key::Client(ip) => format!("edgegate:rl:{route}:c:{ip}"),
        Key::Route => format!("edgegate:rl:{route}:r"),
        Key::Header(value) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(value);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("edgegate:rl:{route}:h:{hex}")
        }
    }
}
