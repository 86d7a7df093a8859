//! Edge hardening against the real binary: path normalisation, forwarded headers, body
//! limits, the connection cap, passive health, the retry budget and hash keys.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::raw_upstream::Step;
use crate::support::{client, Gateway, RawClient, RawUpstream, Upstream};
use crate::{config, listener_keys, proxy_config};

const WAIT: Duration = Duration::from_secs(5);

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

async fn metric_eventually(gw: &Gateway, sample: &str, want: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = gw.metric(sample).await.unwrap_or(0.0);
        if value == want || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_escapes_are_normalised_before_routing_and_forwarding() {
    let upstream = RawUpstream::start_default().await;
    let endpoint = upstream.addr;
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nrespond = {{ status = 403, body = \"admin is closed\" }}\n\n\
             [[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nrespond = {{ status = 200, body = \"public\" }}\n\n\
             [[routes]]\nname = \"up\"\npath_prefix = \"/up\"\nupstream = \"pool\"\n\n\
             [upstreams.pool]\nendpoints = [\"{endpoint}\"]\n"
        ),
    ));
    let mut client = RawClient::connect(gw.addr("web")).await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/./admin",
        "//admin",
        "/%61dmin",
    ] {
        client.send(&get(path)).await;
        let response = client.response(false, WAIT).await;
        assert_eq!(response.status, 403, "{path} must reach the /admin route");
    }
    client.send(&get("/up/a/./b/../c//d?x=%2e")).await;
    assert_eq!(client.response(false, WAIT).await.status, 200);
    let seen = upstream.requests();
    assert_eq!(
        seen.last().map(|(_, r)| r.target.as_str()),
        Some("/up/a/c/d?x=%2e"),
        "the upstream gets the normalised path, the query untouched"
    );
    client.send(&get("/up/a%2Fb")).await;
    assert_eq!(client.response(false, WAIT).await.status, 200);
    assert_eq!(
        upstream.requests().last().map(|(_, r)| r.target.clone()),
        Some("/up/a%2Fb".to_string()),
        "an encoded slash stays encoded"
    );
    let mut climbing = RawClient::connect(gw.addr("web")).await;
    climbing.send(&get("/../admin")).await;
    assert_eq!(climbing.response(false, WAIT).await.status, 400);
}

async fn forwarded_seen(trusted: bool) -> http::HeaderMap {
    let upstream = Upstream::start("a").await;
    let mut text = proxy_config(&[upstream.addr], "", "");
    if trusted {
        text = listener_keys(&text, "web", "trusted_proxies = [\"127.0.0.0/8\"]");
    }
    let gw = Gateway::start(&text);
    let response = client()
        .get(gw.url("web", "/"))
        .header("host", "app.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    upstream.last().headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let seen = forwarded_seen(false).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "app.example.com");
    assert_eq!(seen.get_all("x-forwarded-for").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_a_trusted_proxy_are_kept_and_extended() {
    let seen = forwarded_seen(true).await;
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "evil.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_size_get_413_and_never_reach_the_upstream() {
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(
        &[upstream.addr],
        "max_body_size = \"1KiB\"",
        "",
    ));
    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n")
        .await;
    assert_eq!(client.response(false, WAIT).await.status, 413);
    assert!(
        upstream.conns().is_empty(),
        "no upstream was contacted for a declared length over the limit"
    );

    // A chunked body is cut when it grows past the limit.
    let mut client = RawClient::connect(gw.addr("web")).await;
    let chunk = vec![b'x'; 600];
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        request.extend_from_slice(b"258\r\n");
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    client.send(&request).await;
    assert_eq!(client.response(false, WAIT).await.status, 413);
    assert!(
        upstream.requests().is_empty(),
        "no whole request reached the upstream"
    );

    // Within the limit, it passes.
    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n")
        .await;
    client.send(&[b'y'; 1024]).await;
    assert_eq!(client.response(false, WAIT).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_the_open_connection_gauge_at_the_cap() {
    let upstream = Upstream::start("a").await;
    let text = listener_keys(
        &proxy_config(&[upstream.addr], "", ""),
        "web",
        "max_connections = 4",
    );
    let gw = Gateway::start(&text);
    let gauge = "edgegate_connections_active{listener=\"web\"}";
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut c = RawClient::connect(gw.addr("web")).await;
        c.send(&get("/")).await;
        clients.push(c);
    }
    assert_eq!(metric_eventually(&gw, gauge, 4.0).await, 4.0);
    for _ in 0..10 {
        let open = gw.metric(gauge).await.unwrap_or(0.0);
        assert!(open <= 4.0, "{open} connections open over a cap of 4");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Four were accepted and answered (which four depends on how the kernel spread them
    // over the workers' sockets); the others wait in the backlog, unanswered.
    let answers = futures_util::future::join_all(
        clients
            .iter_mut()
            .map(|c| c.try_response(false, Duration::from_secs(4))),
    )
    .await;
    let answered = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    assert_eq!(answered, 4);
    drop(clients);
    // Every slot comes back: a new client is served.
    let mut late = RawClient::connect(gw.addr("web")).await;
    late.send(&get("/")).await;
    assert_eq!(late.response(false, WAIT).await.status, 200);
    let open = metric_eventually(&gw, gauge, 1.0).await;
    assert!(open <= 4.0, "{open}");
}

fn status_reply(status: u16) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nno").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answering_503_is_ejected_and_the_healthy_one_takes_the_traffic() {
    let healthy = Upstream::start("healthy").await;
    let failing = RawUpstream::start(|_| vec![Step::Send(status_reply(503))]).await;
    let gw = Gateway::start(&proxy_config(
        &[healthy.addr, failing.addr],
        "",
        "[upstreams.pool.passive_health]\nconsecutive_failures = 2\nejection_time = \"30s\"\nmax_ejected = \"50%\"\n",
    ));
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = http.get(gw.url("web", "/")).send().await.expect("request");
        statuses.push(response.status().as_u16());
    }
    let failures = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(failures, 2, "two 503s eject the member: {statuses:?}");
    assert!(
        statuses[6..].iter().all(|&s| s == 200),
        "after the ejection only the healthy member answers: {statuses:?}"
    );
    assert_eq!(
        gw.metric("edgegate_upstream_endpoints{state=\"ejected\",upstream=\"pool\"}")
            .await,
        Some(1.0)
    );
    let config = gw.config_json().await;
    let endpoints = config["upstreams"]["pool"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    let ejected: Vec<_> = endpoints
        .iter()
        .filter(|e| e["ejected"] == true)
        .map(|e| e["address"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ejected, vec![failing.addr.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejected_keeps_traffic_flowing_when_every_member_fails() {
    let a = RawUpstream::start(|_| vec![Step::Send(status_reply(503))]).await;
    let b = RawUpstream::start(|_| vec![Step::Send(status_reply(503))]).await;
    let gw = Gateway::start(&proxy_config(
        &[a.addr, b.addr],
        "",
        "[upstreams.pool.passive_health]\nconsecutive_failures = 1\nmax_ejected = \"50%\"\n",
    ));
    let http = client();
    for _ in 0..10 {
        let response = http.get(gw.url("web", "/")).send().await.expect("request");
        assert_eq!(response.status(), 503);
        let body = response.text().await.expect("body");
        assert_eq!(body, "no", "the member's own answer, not the gateway's");
    }
    assert_eq!(
        a.requests().len() + b.requests().len(),
        10,
        "every request reached a member"
    );
    assert_eq!(
        gw.metric("edgegate_upstream_endpoints{state=\"ejected\",upstream=\"pool\"}")
            .await,
        Some(1.0),
        "only half the pool may be ejected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_when_every_member_resets() {
    // Members that take a request, wait, then close without answering.
    let script = |_: &crate::support::http1::Request| {
        vec![Step::Pause(Duration::from_millis(300)), Step::Close]
    };
    let members = [
        RawUpstream::start(script).await,
        RawUpstream::start(script).await,
        RawUpstream::start(script).await,
    ];
    let endpoints: Vec<_> = members.iter().map(|m| m.addr).collect();
    let gw = Gateway::start(&proxy_config(
        &endpoints,
        "",
        "retries = 2\nretry_budget = \"10%\"\n",
    ));
    let http = client();
    let requests = 20;
    let calls = (0..requests).map(|_| {
        let http = http.clone();
        let url = gw.url("web", "/");
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(502))),
        "{statuses:?}"
    );
    let retries = gw
        .metric("edgegate_upstream_retries_total{upstream=\"pool\"}")
        .await
        .unwrap_or(0.0);
    let refused = gw
        .metric("edgegate_upstream_retry_budget_exhausted_total{upstream=\"pool\"}")
        .await
        .unwrap_or(0.0);
    // Without a budget, 20 requests with 2 retries each would send 40 retries.
    assert!(retries <= 12.0, "{retries} retries sent");
    assert!(refused >= 8.0, "{refused} retries refused by the budget");
}

async fn sticky_choice(gw: &Gateway, header: (&str, String)) -> String {
    let response = client()
        .get(gw.url("web", "/"))
        .header(header.0, header.1)
        .send()
        .await
        .expect("request");
    response.headers()["x-upstream"]
        .to_str()
        .expect("header")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_by_header_is_sticky_and_moves_only_the_keys_of_a_member_that_left() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let pool = "balance = \"hash\"\nhash_on = { header = \"x-user\" }\n";
    let gw = Gateway::start(&proxy_config(&[a.addr, b.addr, c.addr], "", pool));
    let mut before = HashMap::new();
    for user in 0..60 {
        let chosen = sticky_choice(&gw, ("x-user", format!("user-{user}"))).await;
        for _ in 0..2 {
            assert_eq!(
                sticky_choice(&gw, ("x-user", format!("user-{user}"))).await,
                chosen,
                "user-{user} moved between requests"
            );
        }
        before.insert(user, chosen);
    }
    let distinct: std::collections::HashSet<_> = before.values().collect();
    assert_eq!(distinct.len(), 3, "keys spread over every member");

    gw.write_config(&proxy_config(&[a.addr, b.addr], "", pool));
    assert_eq!(
        metric_eventually(&gw, "edgegate_config_generation", 2.0).await,
        2.0
    );
    let mut moved = 0;
    for (user, was) in &before {
        let now = sticky_choice(&gw, ("x-user", format!("user-{user}"))).await;
        if now != *was {
            assert_eq!(was, "c", "user-{user} moved from {was}, which stayed");
            moved += 1;
        }
    }
    let on_c = before.values().filter(|v| *v == "c").count();
    assert_eq!(
        moved, on_c,
        "exactly the keys of the member that left moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_by_cookie_is_sticky() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&proxy_config(
        &[a.addr, b.addr],
        "",
        "balance = \"hash\"\nhash_on = { cookie = \"session\" }\n",
    ));
    let mut chosen = std::collections::HashSet::new();
    for session in 0..20 {
        let cookie = format!("theme=dark; session=s{session}");
        let first = sticky_choice(&gw, ("cookie", cookie.clone())).await;
        for _ in 0..3 {
            assert_eq!(sticky_choice(&gw, ("cookie", cookie.clone())).await, first);
        }
        chosen.insert(first);
    }
    assert_eq!(chosen.len(), 2, "sessions spread over both members");
}

/// HTTP/2 requests are served by pingora's path; the same rules hold there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_get_the_same_normalisation_forwarding_and_limits() {
    let upstream = Upstream::start("a").await;
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nrespond = {{ status = 403, body = \"admin is closed\" }}\n\n\
             [[routes]]\nname = \"up\"\npath_prefix = \"/\"\nupstream = \"pool\"\nmax_body_size = \"1KiB\"\n\n\
             [upstreams.pool]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
    ));
    let h2 = crate::support::h2c_client();
    let response = h2
        .get(gw.url("web", "/%61dmin"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.status(),
        403,
        "an escaped unreserved byte is decoded"
    );
    let response = h2
        .get(gw.url("web", "/x//y"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.path, "/x/y");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_ne!(seen.headers["x-forwarded-host"], "evil.example");
    let response = h2
        .post(gw.url("web", "/upload"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
}

/// An HTTP/2 connection that never opens a stream is closed at the listener's
/// `idle_timeout`, as an idle HTTP/1.1 one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_streams_is_closed_when_idle() {
    let upstream = Upstream::start("a").await;
    let text = listener_keys(
        &proxy_config(&[upstream.addr], "", ""),
        "web",
        "idle_timeout = \"1s\"",
    );
    let gw = Gateway::start(&text);
    let mut client = RawClient::connect(gw.addr("web")).await;
    let since = std::time::Instant::now();
    // The h2c preface and an empty SETTINGS frame, then nothing.
    client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    client.send(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    let closed = client.closed_within(Duration::from_secs(4)).await;
    assert!(closed.is_ok(), "still open after {:?}", since.elapsed());
    assert!(
        since.elapsed() >= Duration::from_millis(800),
        "closed too early: {:?}",
        since.elapsed()
    );
}

/// A POST sent on a pooled connection that then dies without an answer may have been
/// acted on: it is not sent again (only a request that never left, or an idempotent one,
/// is resent on a fresh connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_on_a_dying_pooled_connection_is_not_sent_twice() {
    let upstream = RawUpstream::start(|r| {
        if r.method == "POST" {
            vec![Step::Pause(Duration::from_millis(50)), Step::Close]
        } else {
            vec![Step::Send(crate::support::raw_upstream::ok_for(r))]
        }
    })
    .await;
    // One worker, so the second request finds the first one's pooled connection.
    let text = proxy_config(&[upstream.addr], "", "");
    let gw = Gateway::start(&format!("[gateway]\nthreads = 1\n{text}"));
    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(&get("/warm")).await;
    assert_eq!(client.response(false, WAIT).await.status, 200);
    client
        .send(b"POST /charge HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    assert_eq!(client.response(false, WAIT).await.status, 502);
    let posts = upstream
        .requests()
        .iter()
        .filter(|(_, r)| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "the POST reached the upstream {posts} times");
}

/// Bytes that begin like the HTTP/2 preface but are an HTTP/1.1 request arriving in
/// pieces are kept, not thrown away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_line_arriving_in_pieces_is_not_mistaken_for_h2c() {
    let gw = Gateway::start(&config(
        &["web"],
        "[[routes]]\nname = \"post\"\nmethods = [\"POST\"]\nrespond = { status = 200, body = \"posted\" }\n",
    ));
    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(b"P").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .send(b"OST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        .await;
    let response = client.response(false, WAIT).await;
    assert_eq!(
        (response.status, response.text()),
        (200, "posted".to_string())
    );
}

/// The upstream sees the host a request was routed by: an absolute-form target's
/// authority replaces the Host field, and two Host fields are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_host_the_request_was_routed_by() {
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(
        &[upstream.addr],
        "hosts = [\"public.example\"]",
        "",
    ));
    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(b"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\n\r\n")
        .await;
    assert_eq!(client.response(false, WAIT).await.status, 200);
    let seen = upstream.requests();
    let head = &seen.last().expect("a request").1.head;
    assert_eq!(head.list("host"), vec!["public.example".to_string()]);
    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n")
        .await;
    assert_eq!(client.response(false, WAIT).await.status, 400);
    assert_eq!(upstream.requests().len(), 1);
}
