//! The core's decisions and header plans, driven without sockets: request facts in,
//! decisions and header lines out, the way both renderers use them.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use super::*;
use crate::config::{load, SourceFile};
use crate::snapshot::pool::MemberStates;
use crate::snapshot::{Discovered, Snapshot, SourceInfo};

const CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1:0"
trusted_proxies = ["10.0.0.0/8"]

[[routes]]
name = "admin"
path_prefix = "/admin"
respond = { status = 403, body = "closed" }

[[routes]]
name = "api"
hosts = ["*.example.com"]
path_prefix = "/"
upstream = "api"
max_body_size = "1KiB"
request_headers = { remove = ["x-debug"], set = { "x-env" = "test" } }

[[routes]]
name = "moved"
path = "/old"
redirect = { path = "/new", status = 308 }

[[routes]]
name = "guarded"
path_prefix = "/guarded"
upstream = "api"
deny = ["192.0.2.0/24"]
rate_limit = { requests = 1, per = "1h", burst = 2, key = "route" }
cors = { allow_origins = ["https://a.test"], allow_methods = ["GET", "PUT"] }

[[routes]]
name = "rest"
path_prefix = "/"
upstream = "api"

[upstreams.api]
endpoints = ["127.0.0.1:9"]
"#;

fn snapshot() -> Arc<Snapshot> {
    let loaded = load(&SourceFile::new("t.toml", CONFIG)).expect("valid config");
    let mut snapshot = Snapshot::compile(
        Arc::new(loaded.config),
        SourceInfo::new("t.toml", CONFIG),
        1,
        &Discovered::new(),
        None,
        &MemberStates::default(),
        Default::default(),
    );
    // As if another listener vouched for client certificates with this header.
    snapshot.identity_headers = Arc::from(vec![HeaderName::from_static("x-client-cert")]);
    Arc::new(snapshot)
}

fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

struct Facts {
    method: Method,
    version: Version,
    target: &'static str,
    authority: Option<&'static str>,
    fields: HeaderMap,
    length: Option<u64>,
    peer: IpAddr,
}

fn get(target: &'static str, pairs: &[(&str, &str)]) -> Facts {
    Facts {
        method: Method::GET,
        version: Version::HTTP_11,
        target,
        authority: None,
        fields: fields(pairs),
        length: None,
        peer: "192.0.2.1".parse().expect("ip"),
    }
}

/// Runs the core; returns the decision's outcome as a status (200 for a forward) and
/// the context it left.
fn run(facts: &Facts) -> (u16, Option<String>, RequestContext) {
    run_on(snapshot(), facts)
}

/// [`run`] on a given snapshot (its rate-limit buckets carry over between requests).
fn run_on(snapshot: Arc<Snapshot>, facts: &Facts) -> (u16, Option<String>, RequestContext) {
    let mut ctx = RequestContext::new(snapshot, "web".into());
    let request = Incoming {
        method: &facts.method,
        version: facts.version,
        target: facts.target,
        authority: facts.authority,
        fields: &facts.fields,
        raw_head: None,
        declared_length: facts.length,
        peer: facts.peer,
    };
    let decision = block_on(decide(&request, &mut ctx));
    let (status, detail) = match decision {
        Decision::Answer(answer) => (
            answer.status,
            Some(String::from_utf8_lossy(&answer.body).into_owned()),
        ),
        Decision::Forward(forward) => (200, Some(forward.path.into_owned())),
    };
    (status, detail, ctx)
}

#[test]
fn fragments_backslashes_and_nuls_are_refused_before_routing() {
    for target in ["/admin#x", "/admin%00", "/a\\admin"] {
        let (status, _, ctx) = run(&get(target, &[("host", "a.test")]));
        assert_eq!(status, 400, "{target}");
        assert!(ctx.route.is_none(), "{target} must not reach a route");
    }
}

#[test]
fn host_rules_hold_on_every_version() {
    assert_eq!(run(&get("/x", &[])).0, 400, "HTTP/1.1 without Host");
    let mut old = get("/x", &[]);
    old.version = Version::HTTP_10;
    assert_eq!(run(&old).0, 200, "HTTP/1.0 may omit Host");
    let (status, _, ctx) = run(&get("/x", &[("host", "x@a.example.com")]));
    assert_eq!(status, 400, "userinfo in Host");
    assert!(ctx.route.is_none());
    assert_eq!(
        run(&get("/x", &[("host", "a.test"), ("host", "b.test")])).0,
        400
    );
}

#[test]
fn the_authority_routes_on_every_path() {
    // Absolute form on HTTP/1.1, `:authority` on HTTP/2: both beat Host.
    let (_, _, ctx) = run(&get("http://a.example.com/x", &[("host", "other.test")]));
    assert_eq!(ctx.route_name(), "api");
    assert_eq!(ctx.host, "a.example.com");
    let mut h2 = get("/x", &[("host", "other.test")]);
    h2.version = Version::HTTP_2;
    h2.authority = Some("a.example.com");
    let (_, _, ctx) = run(&h2);
    assert_eq!(ctx.route_name(), "api");
}

#[test]
fn steps_answer_in_order() {
    let (status, body, _) = run(&get("/public/../admin/x", &[("host", "a.test")]));
    assert_eq!((status, body.as_deref()), (403, Some("closed")));
    let (status, _, _) = run(&get("/old", &[("host", "a.test")]));
    assert_eq!(status, 308);
    let mut big = get("/up", &[("host", "a.example.com")]);
    big.length = Some(4096);
    big.method = Method::POST;
    let (status, _, ctx) = run(&big);
    assert_eq!(status, 413, "declared length over max_body_size");
    assert_eq!(ctx.route_name(), "api");
    let (status, path, ctx) = run(&get("/a/./b//c", &[("host", "a.test")]));
    assert_eq!((status, path.as_deref()), (200, Some("/a/b/c")));
    assert_eq!(ctx.route_name(), "rest");
    assert!(!ctx.trusted);
    let mut connect = get("a.test:443", &[("host", "a.test:443")]);
    connect.method = Method::CONNECT;
    assert_eq!(run(&connect).0, 405);
}

fn upstream_lines(facts: &Facts, identity: Option<&str>) -> Vec<String> {
    let (status, _, ctx) = run(facts);
    assert_eq!(status, 200);
    let plan = UpstreamHeaders {
        ctx: &ctx,
        peer: facts.peer,
        host: facts
            .fields
            .first("host")
            .and_then(|h| std::str::from_utf8(h).ok()),
        identity,
        tunnel: false,
        keep_framing: false,
    };
    let mut out = Vec::new();
    plan.write(&facts.fields, &mut out);
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_ascii_lowercase)
        .collect()
}

#[test]
fn untrusted_clients_cannot_claim_an_address_scheme_prefix_or_identity() {
    let facts = get(
        "/x",
        &[
            ("host", "a.example.com"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x-client-cert", "Hash=forged"),
            ("x-debug", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("accept", "*/*"),
        ],
    );
    let lines = upstream_lines(&facts, None);
    for gone in [
        "forwarded:",
        "x-real-ip:",
        "x-forwarded-port:",
        "x-forwarded-prefix:",
        "x_forwarded_for:",
        "x-client-cert:",
        "x-debug:",
        "keep-alive:",
    ] {
        assert!(
            !lines.iter().any(|l| l.starts_with(gone)),
            "{gone} reached the upstream: {lines:?}"
        );
    }
    for kept in [
        "host: a.example.com",
        "x-forwarded-for: 192.0.2.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: a.example.com",
        "accept: */*",
        "x-env: test",
        "te: trailers",
    ] {
        assert!(lines.iter().any(|l| l == kept), "{kept} missing: {lines:?}");
    }
}

#[test]
fn trusted_proxies_pass_their_claims_on() {
    let mut facts = get(
        "/x",
        &[
            ("host", "a.test"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "203.0.113.9"),
            ("x-client-cert", "Hash=forged"),
        ],
    );
    facts.peer = "10.1.2.3".parse().expect("ip");
    let lines = upstream_lines(&facts, None);
    assert!(lines.contains(&"x-forwarded-for: 203.0.113.9, 10.1.2.3".to_string()));
    assert!(lines.contains(&"x-forwarded-proto: https".to_string()));
    assert!(lines.contains(&"x-real-ip: 203.0.113.9".to_string()));
    assert!(
        !lines.iter().any(|l| l.starts_with("x-client-cert")),
        "an identity is never taken from a client, trusted or not"
    );
}

#[test]
fn connection_cannot_remove_host_but_removes_what_it_names() {
    let facts = get(
        "/x",
        &[
            ("host", "a.test"),
            ("connection", "host, x-secret, close"),
            ("x-secret", "1"),
        ],
    );
    let lines = upstream_lines(&facts, None);
    assert!(lines.contains(&"host: a.test".to_string()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("x-secret")));
    assert!(!lines.iter().any(|l| l.starts_with("connection")));
}

#[test]
fn a_bodyless_response_carries_no_length() {
    let (_, _, ctx) = run(&get("/x", &[("host", "a.test")]));
    let upstream = fields(&[
        ("content-length", "5"),
        ("x-request-id", "theirs"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("etag", "\"a\""),
    ]);
    let render = |status: u16, keep_framing: bool| {
        let mut out = Vec::new();
        ResponseHeaders {
            ctx: &ctx,
            status,
            encoding: None,
            keep_framing,
        }
        .write(&upstream, &mut out);
        String::from_utf8(out).expect("utf-8")
    };
    let no_content = render(204, true);
    assert!(!no_content.contains("content-length"), "{no_content}");
    assert!(render(200, true).contains("content-length: 5"));
    assert!(
        !render(200, false).contains("content-length"),
        "the loop writes its own"
    );
    let ok = render(200, true);
    assert!(ok.contains(&format!("x-request-id: {}", ctx.request_id)));
    assert!(!ok.contains("theirs") && !ok.contains("x-hop"));
    assert!(ok.contains("etag"));
}

#[test]
fn a_failure_the_budget_refuses_to_retry_counts_once_toward_passive_health() {
    let text = r#"
[[listeners]]
name = "web"
address = "127.0.0.1:0"

[[routes]]
name = "app"
upstream = "app"

[upstreams.app]
endpoints = ["127.0.0.1:9", "127.0.0.1:10"]
retries = 1
[upstreams.app.passive_health]
consecutive_failures = 2
"#;
    let loaded = load(&SourceFile::new("t.toml", text)).expect("valid config");
    let snapshot = Arc::new(Snapshot::compile(
        Arc::new(loaded.config),
        SourceInfo::new("t.toml", text),
        1,
        &Discovered::new(),
        None,
        &MemberStates::default(),
        Default::default(),
    ));
    let core = Core {
        snapshot: Arc::new(arc_swap::ArcSwap::from(snapshot.clone())),
        metrics: Arc::new(crate::telemetry::metrics::Metrics::new()),
    };
    let pool = snapshot.pools.values().next().expect("pool").clone();
    // Every retry the budget allows is already in flight.
    let _busy: Vec<_> = std::iter::from_fn(|| pool.try_retry()).take(10).collect();
    let mut ctx = RequestContext::new(snapshot, "web".into());
    ctx.pool = Some(pool.clone());
    ctx.retries_left = 1;
    ctx.begin_attempt("127.0.0.1:9".parse().expect("addr"));
    assert!(!core.retry_after(&mut ctx, Failure::Reset, true, &"reset"));
    // The request then ends in a 502, which the renderer settles again.
    core.settle_attempt(&mut ctx, false);
    assert_eq!(
        pool.available_count(),
        2,
        "one failed attempt is one failure: not ejected at a threshold of two"
    );
    // A second failed request does reach the threshold.
    ctx.begin_attempt("127.0.0.1:9".parse().expect("addr"));
    core.settle_attempt(&mut ctx, false);
    assert_eq!(pool.available_count(), 1);
}

/// Drives a decision that never waits (no gates configured here) to completion.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn policy_refuses_before_the_action_and_adds_its_fields() {
    let shared = snapshot();
    let addition = |ctx: &RequestContext, name: &str| {
        ctx.response_additions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().expect("text").to_string())
    };
    // The peer is in a denied network: 403, and no bucket is spent.
    let (status, _, ctx) = run_on(shared.clone(), &get("/guarded", &[("host", "a.test")]));
    assert_eq!(status, 403);
    assert_eq!(ctx.refusal, Some(policy::Refusal::AccessDenied));
    // Through a trusted proxy the client is the forwarded address.
    let mut proxied = get(
        "/guarded",
        &[
            ("host", "a.test"),
            ("x-forwarded-for", "198.51.100.7"),
            ("origin", "https://a.test"),
        ],
    );
    proxied.peer = "10.0.0.1".parse().expect("ip");
    let (status, _, ctx) = run_on(shared.clone(), &proxied);
    assert_eq!(status, 200);
    assert_eq!(addition(&ctx, "ratelimit-remaining").as_deref(), Some("1"));
    assert_eq!(
        addition(&ctx, "access-control-allow-origin").as_deref(),
        Some("https://a.test")
    );
    // A preflight spends a token too, and is answered here.
    let mut preflight = get(
        "/guarded",
        &[
            ("host", "a.test"),
            ("origin", "https://a.test"),
            ("access-control-request-method", "PUT"),
        ],
    );
    preflight.method = Method::OPTIONS;
    preflight.peer = "10.0.0.1".parse().expect("ip");
    let (status, _, ctx) = run_on(shared.clone(), &preflight);
    assert_eq!(status, 204);
    assert_eq!(
        addition(&ctx, "access-control-allow-methods").as_deref(),
        Some("GET, PUT")
    );
    // The bucket (burst 2) is empty now: 429 with the wait.
    let (status, _, ctx) = run_on(shared.clone(), &proxied);
    assert_eq!(status, 429);
    assert_eq!(ctx.refusal, Some(policy::Refusal::RateLimited));
    assert_eq!(addition(&ctx, "retry-after").as_deref(), Some("3600"));
    // A route without policy meets none of it.
    let (status, _, ctx) = run_on(shared, &get("/elsewhere", &[("host", "a.test")]));
    assert_eq!(status, 200);
    assert!(ctx.response_additions.is_empty() && ctx.refusal.is_none());
}
