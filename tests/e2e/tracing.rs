//! OTLP span export, spec section 7b, against a real OTLP/HTTP receiver that decodes with
//! the official OpenTelemetry definitions.

use std::time::{Duration, Instant};

use crate::config;
use crate::support::otlp::OtlpReceiver;
use crate::support::{client, closed_port, Gateway, Upstream};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
/// Spans must reach the collector within this (spec: 5 s).
const WITHIN: Duration = Duration::from_secs(5);

/// `web` with routes: `api` (/api) to `pool` at `upstream`, `dead` (/dead) to an endpoint
/// where nothing listens, `down` (/down) answering 503 itself; anything else is a 404.
fn traced_config(upstream: std::net::SocketAddr, tracing: &str) -> String {
    config(
        &["web"],
        &format!(
            "{tracing}\n\
             [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"pool\"\n\n\
             [[routes]]\nname = \"dead\"\npath_prefix = \"/dead\"\nupstream = \"gone\"\n\n\
             [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\nrespond = {{ status = 503, body = \"maintenance\" }}\n\n\
             [upstreams.pool]\nendpoints = [\"{upstream}\"]\n\n\
             [upstreams.gone]\nendpoints = [\"{}\"]\nretries = 0\n",
            closed_port()
        ),
    )
}

fn tracing_table(receiver: &OtlpReceiver, ratio: f64) -> String {
    format!(
        "[gateway.tracing]\notlp_endpoint = \"{}\"\nsample_ratio = {ratio:?}\nservice_name = \"edge-test\"\n",
        receiver.endpoint()
    )
}

/// The (trace id, parent id, flags) of a `traceparent` value.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3].to_string(),
    )
}

fn upstream_traceparent(upstream: &Upstream) -> String {
    upstream.last().headers["traceparent"]
        .to_str()
        .expect("text")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_server_span_in_the_trace_the_upstream_sees() {
    let receiver = OtlpReceiver::start().await;
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&traced_config(up.addr, &tracing_table(&receiver, 1.0)));
    let http = client();

    // A sampled incoming trace, on the HTTP/1.1 loop.
    let resp = http
        .get(gw.url("web", "/api/items?q=1"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("host", "shop.example")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let (trace, span_parent, flags) = parts(&upstream_traceparent(&up));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    let span = receiver.span_of_trace(TRACE, WITHIN).await;
    assert_eq!(
        span.span_id(),
        span_parent,
        "the span is the upstream's parent"
    );
    assert_eq!(span.parent_span_id(), PARENT, "the client's parent");
    assert_eq!(span.span.kind, 2, "SERVER");
    assert_eq!(span.span.name, "GET api");
    assert_eq!(span.service_name, "edge-test");
    assert_eq!(span.string("http.request.method").as_deref(), Some("GET"));
    assert_eq!(span.string("url.path").as_deref(), Some("/api/items"));
    assert_eq!(span.int("http.response.status_code"), Some(200));
    assert_eq!(span.string("http.route").as_deref(), Some("api"));
    assert_eq!(
        span.string("server.address").as_deref(),
        Some("shop.example")
    );
    assert_eq!(span.string("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(span.string("edgegate.listener").as_deref(), Some("web"));
    assert_eq!(span.string("edgegate.upstream").as_deref(), Some("pool"));
    assert_eq!(span.string("edgegate.endpoint"), Some(up.addr.to_string()));
    assert_eq!(span.status_code(), 0, "a 200 leaves the status unset");
    assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(
        now - span.span.start_time_unix_nano < 60_000_000_000,
        "start is wall-clock time"
    );

    // A new trace started by the gateway: no parent, the upstream sees the same ids.
    let resp = http
        .get(gw.url("web", "/api/new"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let (trace, span_parent, flags) = parts(&upstream_traceparent(&up));
    assert_eq!(flags, "01", "sample_ratio 1.0 samples every new trace");
    let span = receiver.span_of_trace(&trace, WITHIN).await;
    assert_eq!(span.span_id(), span_parent);
    assert_eq!(span.parent_span_id(), "", "the gateway started the trace");

    // HTTP/2 (pingora's path) records the same.
    let h2 = crate::support::h2c_client();
    let h2_trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = h2
        .get(gw.url("web", "/api/h2"))
        .header("traceparent", format!("00-{h2_trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let (trace, span_parent, _) = parts(&upstream_traceparent(&up));
    assert_eq!(trace, h2_trace);
    let span = receiver.span_of_trace(h2_trace, WITHIN).await;
    assert_eq!(span.span_id(), span_parent);
    assert_eq!(span.parent_span_id(), "b7ad6b7169203331");
    assert_eq!(span.string("url.path").as_deref(), Some("/api/h2"));
    assert_eq!(span.int("http.response.status_code"), Some(200));

    // A 404, a direct 503 and a failed upstream (502) are spans too.
    let cases = [
        (
            "/nowhere",
            404,
            "11111111111111111111111111111111",
            None,
            "GET",
        ),
        (
            "/down",
            503,
            "22222222222222222222222222222222",
            Some("down"),
            "GET down",
        ),
        (
            "/dead/x",
            502,
            "33333333333333333333333333333333",
            Some("dead"),
            "GET dead",
        ),
    ];
    for (path, status, trace, route, name) in cases {
        let resp = http
            .get(gw.url("web", path))
            .header("traceparent", format!("00-{trace}-{PARENT}-01"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), status, "{path}");
        let span = receiver.span_of_trace(trace, WITHIN).await;
        assert_eq!(
            span.int("http.response.status_code"),
            Some(i64::from(status))
        );
        assert_eq!(span.string("http.route").as_deref(), route, "{path}");
        assert_eq!(span.span.name, name);
        assert_eq!(span.parent_span_id(), PARENT);
        let error = if status >= 500 { 2 } else { 0 };
        assert_eq!(span.status_code(), error, "{path}: ERROR only for 5xx");
    }
    let dead = receiver
        .span_of_trace("33333333333333333333333333333333", WITHIN)
        .await;
    assert_eq!(dead.string("edgegate.upstream").as_deref(), Some("gone"));
    assert!(
        dead.string("edgegate.endpoint").is_some(),
        "the endpoint tried"
    );

    let requests = receiver.requests();
    assert!(
        requests
            .iter()
            .all(|r| r == "POST /v1/traces application/x-protobuf"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_parent_then_the_ratio() {
    let receiver = OtlpReceiver::start().await;
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&traced_config(up.addr, &tracing_table(&receiver, 0.0)));
    let http = client();
    let unsampled = "44444444444444444444444444444444";
    let resp = http
        .get(gw.url("web", "/api/unsampled"))
        .header("traceparent", format!("00-{unsampled}-{PARENT}-00"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(
        upstream_traceparent(&up).ends_with("-00"),
        "unsampled stays unsampled"
    );
    // New traces at ratio 0: not sampled, and the upstream is told so.
    let mut new_traces = Vec::new();
    for _ in 0..5 {
        http.get(gw.url("web", "/api/new"))
            .send()
            .await
            .expect("request");
        let (trace, _, flags) = parts(&upstream_traceparent(&up));
        assert_eq!(flags, "00");
        new_traces.push(trace);
    }
    // A sampled parent is exported even at ratio 0; it went last, so once it has arrived
    // everything before it would have too.
    let marker = "55555555555555555555555555555555";
    http.get(gw.url("web", "/api/sampled"))
        .header("traceparent", format!("00-{marker}-{PARENT}-01"))
        .send()
        .await
        .expect("request");
    receiver.span_of_trace(marker, WITHIN).await;
    let exported: Vec<String> = receiver.spans().iter().map(|s| s.trace_id()).collect();
    assert_eq!(exported, vec![marker.to_string()], "only the sampled trace");
    assert!(!new_traces.iter().any(|t| exported.contains(t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_touches_traffic_and_drops_are_counted() {
    let receiver = OtlpReceiver::start().await;
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&traced_config(up.addr, &tracing_table(&receiver, 1.0)));
    let http = client();
    http.get(gw.url("web", "/api/first"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .send()
        .await
        .expect("request");
    receiver.span_of_trace(TRACE, WITHIN).await;
    receiver.stop().await;

    let started = Instant::now();
    for i in 0..50 {
        let resp = http
            .get(gw.url("web", &format!("/api/{i}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "50 requests took {took:?}");
    let dropped = "edgegate_tracing_spans_dropped_total{reason=\"export_failed\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = gw.metric(dropped).await.unwrap_or(0.0);
        if n >= 50.0 {
            assert_eq!(n, 50.0, "each undelivered span counted once");
            break;
        }
        assert!(Instant::now() < deadline, "only {n} drops counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gw.metric("edgegate_tracing_spans_exported_total").await,
        Some(1.0)
    );
    assert_eq!(up.hits(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_tracing_stops_the_export() {
    let receiver = OtlpReceiver::start().await;
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&traced_config(up.addr, &tracing_table(&receiver, 1.0)));
    let http = client();
    http.get(gw.url("web", "/api/before"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .send()
        .await
        .expect("request");
    receiver.span_of_trace(TRACE, WITHIN).await;

    gw.write_config(&traced_config(up.addr, ""));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.config_json().await["generation"] != 2 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = receiver.spans().len();
    for i in 0..10 {
        let resp = http
            .get(gw.url("web", &format!("/api/after/{i}")))
            .header("traceparent", format!("00-{:032x}-{PARENT}-01", i + 1))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
    }
    // The exporter flushes within half a second; wait well past that.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.spans().len(),
        before,
        "no span after tracing was removed"
    );

    // Turned on again by another reload, export resumes.
    gw.write_config(&traced_config(up.addr, &tracing_table(&receiver, 1.0)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.config_json().await["generation"] != 3 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = "66666666666666666666666666666666";
    http.get(gw.url("web", "/api/again"))
        .header("traceparent", format!("00-{again}-{PARENT}-01"))
        .send()
        .await
        .expect("request");
    receiver.span_of_trace(again, WITHIN).await;
}

/// A collector that takes a batch and then answers too late gets that batch once: the
/// exporter gives up on it instead of posting it again on a fresh connection (issue 18,
/// fault 11: a timeout on the kept-alive connection was followed by a re-POST, so the
/// spans were stored twice and one batch could take twice the export timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_answers_late_gets_each_batch_once() {
    const SLOW: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
    let receiver = OtlpReceiver::start().await;
    let up = Upstream::start("a").await;
    let gw = Gateway::start(&traced_config(up.addr, &tracing_table(&receiver, 1.0)));
    let http = client();
    // The first batch opens the kept-alive connection.
    http.get(gw.url("web", "/api/first"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .send()
        .await
        .expect("request");
    receiver.span_of_trace(TRACE, WITHIN).await;

    receiver.set_answer_delay(Duration::from_secs(8));
    let before = gw.log_len();
    let resp = http
        .get(gw.url("web", "/api/slow"))
        .header("traceparent", format!("00-{SLOW}-{PARENT}-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    receiver.span_of_trace(SLOW, WITHIN).await;
    gw.wait_for_log_after("span export failed", before, Duration::from_secs(10));
    let copies = receiver
        .spans()
        .iter()
        .filter(|s| s.trace_id() == SLOW)
        .count();
    assert_eq!(copies, 1, "the collector was sent the batch {copies} times");
}
