//! Proxying to upstream pools: balancing, rewrites, headers, errors, bodies, upgrades.

use std::time::Duration;

use crate::support::{client, closed_port, request_id, Gateway, Upstream};
use crate::{config, proxy_config};

/// A gateway whose every request goes to one pool of `upstreams`; `route_extra` and
/// `pool_extra` add keys to the route and to the pool.
fn proxy_to(upstreams: &[&Upstream], route_extra: &str, pool_extra: &str) -> Gateway {
    let endpoints: Vec<_> = upstreams.iter().map(|u| u.addr).collect();
    Gateway::start(&proxy_config(&endpoints, route_extra, pool_extra))
}

fn upstream_route(extra: &str) -> String {
    format!("[[routes]]\nname = \"main\"\nupstream = \"pool\"\n{extra}\n\n")
}

async fn who(gw: &Gateway, path: &str) -> String {
    let resp = client()
        .get(gw.url("web", path))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-upstream"]
        .to_str()
        .expect("header")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_exactly() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = proxy_to(&[&a, &b], "", "");
    let mut order = Vec::new();
    for _ in 0..10 {
        order.push(who(&gw, "/").await);
    }
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {order:?}");
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_the_ratio() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "{}[upstreams.pool]\nendpoints = [\"{}\", {{ address = \"{}\", weight = 3 }}]\n",
            upstream_route(""),
            a.addr,
            b.addr
        ),
    ));
    for _ in 0..40 {
        who(&gw, "/").await;
    }
    assert_eq!((a.hits(), b.hits()), (10, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_avoids_the_busy_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = proxy_to(&[&a, &b], "", "balance = \"least_requests\"\n");
    // Occupy one endpoint with a slow request, then every quick one goes to the other
    // (slow enough that a loaded machine still sends all six while it runs).
    let slow = tokio::spawn({
        let url = gw.url("web", "/slow/4000");
        async move { client().get(url).send().await.expect("slow") }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.hits() + b.hits() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = if a.hits() == 1 { "a" } else { "b" };
    for _ in 0..6 {
        assert_ne!(who(&gw, "/").await, busy);
    }
    assert_eq!(slow.await.expect("join").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_balancing_keeps_a_client_on_one_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let gw = proxy_to(&[&a, &b, &c], "", "balance = \"hash\"\n");
    let first = who(&gw, "/").await;
    for _ in 0..8 {
        assert_eq!(who(&gw, "/").await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_request_id_and_host_are_set() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "", "");
    let resp = client()
        .get(gw.url("web", "/p?q=1"))
        .header("host", "app.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("request");
    let id = request_id(&resp);
    assert_eq!(resp.status(), 200);
    let seen = a.last();
    assert_eq!(seen.path, "/p?q=1");
    assert_eq!(seen.headers["host"], "app.example.com");
    // The client is not a trusted proxy: its own X-Forwarded-For is replaced.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example.com");
    assert_eq!(seen.headers["x-request-id"], id.as_str());

    // A request that brings an id keeps it, upstream and back.
    let resp = client()
        .get(gw.url("web", "/"))
        .header("x-request-id", "given-id-123")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-request-id"], "given-id-123");
    assert_eq!(a.last().headers["x-request-id"], "given-id-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_continued_or_started() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "", "");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    client()
        .get(gw.url("web", "/"))
        .header("traceparent", incoming)
        .header("tracestate", "vendor=abc")
        .send()
        .await
        .expect("request");
    let seen = a.last();
    let sent = seen.headers["traceparent"].to_str().expect("tp");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(parts[3], "01");
    assert_eq!(seen.headers["tracestate"], "vendor=abc");

    client()
        .get(gw.url("web", "/"))
        .header(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .expect("request");
    let sent = a.last().headers["traceparent"]
        .to_str()
        .expect("tp")
        .to_string();
    assert!(sent.starts_with("00-"), "{sent}");
    assert!(!sent.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{sent}");
    assert_eq!(sent.len(), 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_rewrite_replaces_the_matched_prefix() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "{}{}[upstreams.pool]\nendpoints = [\"{}\"]\n",
            "[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nrewrite_prefix = \"/\"\nupstream = \"pool\"\n\n",
            "[[routes]]\nname = \"v2\"\npath_prefix = \"/old\"\nrewrite_prefix = \"/new/v2\"\nupstream = \"pool\"\n\n",
            a.addr
        ),
    ));
    for (sent, expected) in [
        ("/api/users?x=1", "/users?x=1"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/old/thing", "/new/v2/thing"),
        ("/old", "/new/v2"),
    ] {
        who(&gw, sent).await;
        assert_eq!(a.last().path, expected, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_apply_both_ways() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "{}[upstreams.pool]\nendpoints = [\"{}\"]\n",
            upstream_route(
                "request_headers = { set = { \"x-env\" = \"prod\" }, add = { \"x-tag\" = \"gw\" }, remove = [\"x-debug\"] }\n\
                 response_headers = { set = { \"strict-transport-security\" = \"max-age=31536000\" }, remove = [\"x-upstream\"] }"
            ),
            a.addr
        ),
    ));
    let resp = client()
        .get(gw.url("web", "/"))
        .header("x-debug", "1")
        .header("x-env", "dev")
        .header("x-tag", "client")
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert!(!resp.headers().contains_key("x-upstream"));
    let seen = a.last();
    assert_eq!(seen.headers["x-env"], "prod");
    assert!(!seen.headers.contains_key("x-debug"));
    let tags: Vec<_> = seen
        .headers
        .get_all("x-tag")
        .iter()
        .map(|v| v.to_str().expect("v").to_string())
        .collect();
    assert_eq!(tags, vec!["client", "gw"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_keeps_host_path_and_query() {
    let gw = Gateway::start(&config(
        &["web"],
        "[[routes]]\nname = \"to-https\"\nredirect = { scheme = \"https\", status = 301 }\n\n\
         [[routes]]\nname = \"moved\"\npath = \"/old\"\nredirect = { path = \"/new\", status = 308 }\n",
    ));
    let resp = client()
        .get(gw.url("web", "/a/b?x=1"))
        .header("host", "example.com:8080")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://example.com/a/b?x=1");
    let resp = client()
        .get(gw.url("web", "/old?y=2"))
        .header("host", "example.com:8080")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "http://example.com:8080/new?y=2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_routes_answer_directly_and_discard_bodies() {
    let gw = Gateway::start(&config(
        &["web"],
        "[[routes]]\nname = \"ping\"\npath = \"/ping\"\nrespond = { status = 200, body = \"pong\\n\" }\n\n\
         [[routes]]\nname = \"gone\"\npath = \"/gone\"\nrespond = { status = 410 }\n",
    ));
    let c = client();
    let resp = c.get(gw.url("web", "/ping")).send().await.expect("ping");
    assert_eq!(resp.status(), 200);
    assert!(
        !request_id(&resp).is_empty(),
        "direct responses carry x-request-id too"
    );
    assert_eq!(resp.text().await.expect("body"), "pong\n");
    // A body sent to a respond route does not disturb the next request on the connection.
    let resp = c
        .post(gw.url("web", "/ping"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.text().await.expect("body"), "pong\n");
    let resp = c.get(gw.url("web", "/gone")).send().await.expect("gone");
    assert_eq!(resp.status(), 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_is_502_with_the_reason_logged() {
    let dead = closed_port();
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "{}[upstreams.pool]\nendpoints = [\"{dead}\"]\n",
            upstream_route("")
        ),
    ));
    let resp = client()
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().contains_key("x-request-id"));
    let line = gw.wait_for_log("request failed", Duration::from_secs(5));
    assert!(line.contains(&dead.to_string()), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_goes_to_another_endpoint_and_the_client_sees_no_error() {
    let live = Upstream::start("live").await;
    let dead = closed_port();
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "{}[upstreams.pool]\nendpoints = [\"{dead}\", \"{}\"]\nretries = 1\n",
            upstream_route(""),
            live.addr
        ),
    ));
    for _ in 0..10 {
        assert_eq!(who(&gw, "/").await, "live");
    }
    assert_eq!(live.hits(), 10);
    assert!(
        gw.metric("edgegate_upstream_retries_total{upstream=\"pool\"}")
            .await
            .unwrap_or(0.0)
            >= 4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_take_endpoints_out_and_an_empty_pool_is_503() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = proxy_to(
        &[&a, &b],
        "",
        "[upstreams.pool.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\n",
    );
    a.set_health(500);
    gw.wait_for_log("endpoint unhealthy", Duration::from_secs(5));
    for _ in 0..6 {
        assert_eq!(who(&gw, "/").await, "b");
    }
    assert_eq!(
        gw.metric("edgegate_upstream_endpoints{state=\"unhealthy\",upstream=\"pool\"}")
            .await,
        Some(1.0)
    );
    b.set_health(503);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client()
            .get(gw.url("web", "/"))
            .send()
            .await
            .expect("request");
        if resp.status() == 503 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.set_health(200);
    gw.wait_for_log("endpoint healthy again", Duration::from_secs(5));
    assert_eq!(who(&gw, "/").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "timeout = \"200ms\"", "");
    let started = std::time::Instant::now();
    let resp = client()
        .get(gw.url("web", "/slow/3000"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_bounds_a_trickling_response() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "timeout = \"500ms\"", "");
    let started = std::time::Instant::now();
    // Each chunk arrives well within any per-read timeout; the whole would take 3 s.
    let outcome = client().get(gw.url("web", "/drip/30/100")).send().await;
    let complete = match outcome {
        Ok(resp) => resp
            .bytes()
            .await
            .map(|b| b.len() == 30 * 5)
            .unwrap_or(false),
        Err(_) => false,
    };
    assert!(!complete, "the response outlived the route timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_body_passes_intact_both_ways() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "", "");
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let resp = client()
        .post(gw.url("web", "/echo"))
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let echoed = resp.bytes().await.expect("body");
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "body changed in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_passes_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "", "");
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr("web")))
            .await
            .expect("websocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    for text in ["hello", "world", &"x".repeat(70_000)] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = ws.next().await.expect("frame").expect("message");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "", "");
    let h2 = crate::support::h2c_client();
    let resp = h2
        .get(gw.url("web", "/h2"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(a.last().path, "/h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let a = Upstream::start("a").await;
    let gw = proxy_to(&[&a], "", "");
    for _ in 0..20 {
        who(&gw, "/").await;
    }
    assert_eq!(a.hits(), 20);
    assert!(
        a.connections() <= 2,
        "{} upstream connections for 20 sequential requests",
        a.connections()
    );
}
