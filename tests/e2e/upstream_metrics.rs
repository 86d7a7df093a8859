//! Upstream, in-flight and byte metrics against known traffic: exact values.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config;
use crate::support::{client, closed_port, Gateway, Upstream};

/// `main` (everything) to `pool` of `endpoints`, `dead` (/dead) to `gone` at `dead`,
/// `down` (/down) answering 11 bytes itself.
fn metrics_config(endpoints: &[SocketAddr], dead: SocketAddr) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"dead\"\npath_prefix = \"/dead\"\nupstream = \"gone\"\n\n\
             [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\nrespond = {{ status = 503, body = \"maintenance\" }}\n\n\
             [[routes]]\nname = \"main\"\npath_prefix = \"/\"\nupstream = \"pool\"\n\n\
             [upstreams.pool]\nendpoints = [{}]\n\n\
             [upstreams.gone]\nendpoints = [\"{dead}\"]\nretries = 0\n",
            list.join(", ")
        ),
    )
}

/// Waits until `sample` reads `want` (metrics are counted as a request finishes, which
/// may be a moment after the client has its response).
async fn expect_metric(gw: &Gateway, sample: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = gw.metric(sample).await;
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {now:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn upstream_requests(upstream: &str, endpoint: SocketAddr, code: &str) -> String {
    format!("edgegate_upstream_requests_total{{code=\"{code}\",endpoint=\"{endpoint}\",upstream=\"{upstream}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_counters_per_endpoint_and_connect_failures() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dead = closed_port();
    let gw = Gateway::start(&metrics_config(&[a.addr, b.addr], dead));
    let http = client();
    for i in 0..10 {
        let resp = http
            .get(gw.url("web", &format!("/x/{i}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
    }
    for _ in 0..2 {
        let resp = http
            .get(gw.url("web", "/status/418"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 418);
    }
    for _ in 0..3 {
        let resp = http
            .get(gw.url("web", "/dead"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 502);
    }
    assert_eq!((a.hits(), b.hits()), (6, 6), "round robin");
    for up in [&a, &b] {
        expect_metric(&gw, &upstream_requests("pool", up.addr, "200"), 5.0).await;
        expect_metric(&gw, &upstream_requests("pool", up.addr, "418"), 1.0).await;
    }
    expect_metric(&gw, &upstream_requests("gone", dead, "error"), 3.0).await;
    expect_metric(
        &gw,
        &format!(
            "edgegate_upstream_connect_failures_total{{endpoint=\"{dead}\",upstream=\"gone\"}}"
        ),
        3.0,
    )
    .await;
    expect_metric(
        &gw,
        "edgegate_upstream_duration_seconds_count{upstream=\"pool\"}",
        12.0,
    )
    .await;
    // Connect failures never reach the response-head histogram.
    assert_eq!(
        gw.metric("edgegate_upstream_duration_seconds_count{upstream=\"gone\"}")
            .await,
        None
    );
    // The finest bucket is 100 µs, the widest finite one 30 s.
    let text = gw.metrics_text().await;
    assert!(
        text.contains("edgegate_upstream_duration_seconds_bucket{upstream=\"pool\",le=\"0.0001\"}")
    );
    assert!(text.contains("edgegate_upstream_duration_seconds_bucket{upstream=\"pool\",le=\"30\"}"));

    // HTTP/2 requests (pingora's path) count the same way.
    let h2 = crate::support::h2c_client();
    for _ in 0..2 {
        let resp = h2
            .get(gw.url("web", "/h2"))
            .send()
            .await
            .expect("h2 request");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    }
    let resp = h2
        .get(gw.url("web", "/dead"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.status(), 502);
    for up in [&a, &b] {
        expect_metric(&gw, &upstream_requests("pool", up.addr, "200"), 6.0).await;
    }
    expect_metric(&gw, &upstream_requests("gone", dead, "error"), 4.0).await;
    expect_metric(
        &gw,
        &format!(
            "edgegate_upstream_connect_failures_total{{endpoint=\"{dead}\",upstream=\"gone\"}}"
        ),
        4.0,
    )
    .await;

    // An endpoint a reload removes takes its series with it.
    gw.write_config(&metrics_config(&[a.addr], dead));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.config_json().await["generation"] != 2 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.metric(&upstream_requests("pool", b.addr, "200")).await,
        None
    );
    assert_eq!(
        gw.metric(&upstream_requests("pool", a.addr, "200")).await,
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_rise_and_return_to_zero() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&metrics_config(&[a.addr], closed_port()));
    let in_flight = "edgegate_requests_in_flight{listener=\"web\"}";
    let h2 = crate::support::h2c_client();
    for http in [client(), h2] {
        let url = gw.url("web", "/slow/800");
        let slow = tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) });
        expect_metric(&gw, in_flight, 1.0).await;
        assert_eq!(slow.await.expect("task").expect("request"), 200);
        expect_metric(&gw, in_flight, 0.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counters_match_the_bodies() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&metrics_config(&[a.addr], closed_port()));
    let body = vec![b'x'; 1000];
    let resp = client()
        .post(gw.url("web", "/echo"))
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.bytes().await.expect("body").len(), 1000);
    let h2 = crate::support::h2c_client();
    let resp = h2
        .post(gw.url("web", "/echo"))
        .body(vec![b'y'; 3000])
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.bytes().await.expect("body").len(), 3000);
    expect_metric(&gw, "edgegate_request_bytes_total{route=\"main\"}", 4000.0).await;
    expect_metric(&gw, "edgegate_response_bytes_total{route=\"main\"}", 4000.0).await;
    let resp = client()
        .get(gw.url("web", "/down"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.text().await.expect("body"), "maintenance");
    expect_metric(&gw, "edgegate_response_bytes_total{route=\"down\"}", 11.0).await;
    assert_eq!(
        gw.metric("edgegate_request_bytes_total{route=\"down\"}")
            .await,
        None
    );
}
