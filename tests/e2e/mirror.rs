//! Route mirrors: a copy of the request (head and body) reaches the shadow upstream
//! while the client gets the primary's answer, on HTTP/1.1, h2c and HTTP/2 over TLS; a
//! shadow that hangs or is down never delays or fails the real request, and past the
//! bound on copies in flight the copies are dropped and counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::request_core::{start, Proto, EVERY};
use crate::support::gateway::metric_value;
use crate::support::{closed_port, Upstream};

/// The gateway's bound on copies in flight per process (`pipeline::mirror::IN_FLIGHT`).
const IN_FLIGHT: usize = 128;

/// Waits until `upstream` has seen `n` requests, or panics after a while.
async fn wait_for_hits(upstream: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.hits() < n {
        assert!(
            Instant::now() < deadline,
            "the shadow saw {} requests, not {n}",
            upstream.hits()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn mirror_count(edge: &crate::request_core::Edge, route: &str, result: &str) -> f64 {
    let text = edge.gw.metrics_text().await;
    metric_value(
        &text,
        &format!("edgegate_mirror_requests_total{{result=\"{result}\",route=\"{route}\"}}"),
    )
    .unwrap_or(0.0)
}

/// A body whose bytes say where they are, so a copy cut or shuffled anywhere shows.
fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"0123456789abcdef"[i % 16]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_gets_a_copy_and_the_client_the_primarys_answer_on_every_protocol() {
    let app = Upstream::start("app").await;
    let shadow = Upstream::start("shadow").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"m\"\npath_prefix = \"/m\"\nupstream = \"app\"\n\
         rewrite_prefix = \"/v1\"\nrequest_headers = {{ set = {{ \"x-env\" = \"prod\" }} }}\n\
         mirror = {{ upstream = \"shadow\", percent = 100 }}\n\n\
         [[routes]]\nname = \"never\"\npath_prefix = \"/never\"\nupstream = \"app\"\n\
         mirror = {{ upstream = \"shadow\", percent = 0 }}\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n\n[upstreams.shadow]\nendpoints = [\"{}\"]\n",
        app.addr, shadow.addr
    ));
    // Small bodies ride with the head; 40 KiB streams on HTTP/1.1 (past what the loop
    // gathers) and in several frames on HTTP/2; 100 KiB is past the copy limit.
    let small = body_of(3000);
    let large = body_of(40 * 1024);
    let huge = body_of(100 * 1024);
    let mut copies = 0;
    for proto in EVERY {
        let client = edge.client(proto);
        let got = edge.get(proto, "/m/get?x=1", &[("x-trace-me", "1")]).await;
        assert_eq!(got.status(), 200, "{proto:?}");
        let answer: serde_json::Value = got.json().await.expect("json");
        assert_eq!(answer["upstream"], "app", "{proto:?}: the primary answers");
        for body in [&small, &large] {
            let posted = client
                .post(edge.url(proto, "/m/post"))
                .body(body.clone())
                .send()
                .await
                .expect("post");
            assert_eq!(posted.status(), 200, "{proto:?}");
            let answer: serde_json::Value = posted.json().await.expect("json");
            assert_eq!(answer["upstream"], "app", "{proto:?}");
            assert_eq!(answer["body_len"], body.len(), "{proto:?}");
        }
        copies += 3;
        wait_for_hits(&shadow, copies).await;
        let seen = shadow.seen();
        let [get, small_copy, large_copy] = &seen[copies - 3..] else {
            unreachable!()
        };
        assert_eq!(
            (get.method.as_str(), get.path.as_str()),
            ("GET", "/v1/get?x=1")
        );
        assert_eq!(
            get.headers["x-trace-me"], "1",
            "{proto:?}: the client's fields"
        );
        assert_eq!(get.headers["x-env"], "prod", "{proto:?}: the route's edits");
        assert_eq!(get.headers["x-forwarded-for"], "127.0.0.1", "{proto:?}");
        // The very request the primary got: the same id.
        let primary = &app.seen()[app.hits() - 3];
        assert_eq!(primary.path, "/v1/get?x=1");
        assert_eq!(
            get.headers["x-request-id"], primary.headers["x-request-id"],
            "{proto:?}"
        );
        for (copy, body) in [(small_copy, &small), (large_copy, &large)] {
            assert_eq!(copy.method, "POST", "{proto:?}");
            assert_eq!(copy.path, "/v1/post", "{proto:?}");
            assert!(
                copy.body == body.as_slice(),
                "{proto:?}: the body byte-exact"
            );
        }
        // Too large to copy: the primary gets all of it, the shadow nothing.
        let posted = client
            .post(edge.url(proto, "/m/huge"))
            .body(huge.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 200, "{proto:?}");
        let answer: serde_json::Value = posted.json().await.expect("json");
        assert_eq!(answer["body_len"], huge.len(), "{proto:?}");
        // A route mirroring 0 percent copies nothing.
        assert_eq!(edge.get(proto, "/never", &[]).await.status(), 200);
    }
    assert_eq!(mirror_count(&edge, "m", "too_large").await, 3.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirror_count(&edge, "m", "sent").await < copies as f64 {
        assert!(Instant::now() < deadline, "every copy is counted as sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mirror_count(&edge, "m", "sent").await, copies as f64);
    assert_eq!(shadow.hits(), copies, "nothing else reached the shadow");
    assert_eq!(mirror_count(&edge, "never", "sent").await, 0.0);
}

/// A primary spoken to over HTTP/2 is served by pingora's path on every protocol: its
/// copies are fed and sent there the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_forwarded_by_pingoras_path_are_mirrored_alike() {
    let app = Upstream::start("app").await;
    let shadow = Upstream::start("shadow").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"h2\"\npath_prefix = \"/\"\nupstream = \"app\"\n\
         mirror = {{ upstream = \"shadow\" }}\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\nhttp2 = true\n\n\
         [upstreams.shadow]\nendpoints = [\"{}\"]\n",
        app.addr, shadow.addr
    ));
    let large = body_of(40 * 1024);
    let mut copies = 0;
    for proto in EVERY {
        let got = edge.get(proto, "/get", &[]).await;
        assert_eq!(got.status(), 200, "{proto:?}");
        let posted = edge
            .client(proto)
            .post(edge.url(proto, "/post"))
            .body(large.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 200, "{proto:?}");
        copies += 2;
        wait_for_hits(&shadow, copies).await;
        let seen = shadow.seen();
        let [get, post] = &seen[copies - 2..] else {
            unreachable!()
        };
        assert_eq!((get.method.as_str(), get.path.as_str()), ("GET", "/get"));
        assert!(get.body.is_empty(), "{proto:?}");
        assert_eq!(
            (post.method.as_str(), post.path.as_str()),
            ("POST", "/post")
        );
        assert!(
            post.body == large.as_slice(),
            "{proto:?}: the body byte-exact"
        );
    }
    assert!(
        app.seen()
            .iter()
            .all(|s| s.version == http::Version::HTTP_2),
        "the primary got every request over HTTP/2 (pingora's path)"
    );
    assert_eq!(app.hits(), copies);
}

/// A shadow that accepts connections and never answers; counts them.
struct HangingShadow {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingShadow {
    async fn start() -> HangingShadow {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        HangingShadow {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for HangingShadow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_down_shadow_never_delays_the_primary_and_copies_are_dropped_under_pressure() {
    let app = Upstream::start("app").await;
    let hanging = HangingShadow::start().await;
    // The shadows' timeouts are far longer than the client's patience: a primary that
    // waited on its copy would fail.
    let edge = start(&format!(
        "[[routes]]\nname = \"hang\"\npath_prefix = \"/hang\"\nupstream = \"app\"\n\
         mirror = {{ upstream = \"hanging\" }}\n\n\
         [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = \"app\"\n\
         mirror = {{ upstream = \"down\" }}\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n\n\
         [upstreams.hanging]\nendpoints = [\"{}\"]\nread_timeout = \"60s\"\n\n\
         [upstreams.down]\nendpoints = [\"{}\"]\nconnect_timeout = \"60s\"\n",
        app.addr,
        hanging.addr,
        closed_port()
    ));
    let patient = Duration::from_secs(5);
    let mut sent = 0;
    for proto in [Proto::H1, Proto::H2c, Proto::H2Tls] {
        let client = edge.client(proto);
        for path in ["/hang/a", "/down/a"] {
            let began = Instant::now();
            let posted = client
                .post(edge.url(proto, path))
                .body("payload")
                .timeout(patient)
                .send()
                .await
                .expect("the primary answers while the shadow hangs or is down");
            assert_eq!(posted.status(), 200, "{proto:?} {path}");
            let answer: serde_json::Value = posted.json().await.expect("json");
            assert_eq!(answer["upstream"], "app");
            assert!(began.elapsed() < patient, "{proto:?} {path}");
        }
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirror_count(&edge, "down", "failed").await < sent as f64 {
        assert!(Instant::now() < deadline, "copies to a closed port fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Pressure: the hanging shadow holds every copy it gets; past the bound the rest are
    // dropped at once, and the primaries still answer.
    let extra = IN_FLIGHT + 40;
    let client = edge.client(Proto::H1);
    for i in 0..extra {
        let got = client
            .get(edge.url(Proto::H1, &format!("/hang/{i}")))
            .timeout(patient)
            .send()
            .await
            .expect("primary");
        assert_eq!(got.status(), 200);
    }
    let total = sent + extra;
    let dropped = mirror_count(&edge, "hang", "dropped").await;
    assert_eq!(dropped, (total - IN_FLIGHT) as f64, "copies past the bound");
    assert_eq!(mirror_count(&edge, "hang", "sent").await, 0.0);
    assert!(
        hanging.accepted.load(Ordering::SeqCst) <= IN_FLIGHT,
        "the shadow never holds more than the bound: {}",
        hanging.accepted.load(Ordering::SeqCst)
    );
    assert_eq!(app.hits(), 2 * sent + extra, "every primary went through");
}
