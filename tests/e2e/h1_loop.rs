//! The HTTP/1.1 proxy loop (issue 8): large and chunked bodies, `Expect`, connections
//! that end on either side, responses without bodies, clients that leave, pipelining.
//! Clients write exact bytes on raw sockets; where what the upstream saw matters, a raw
//! recording upstream stands behind the gateway.

use std::time::Duration;

use crate::proxy_config;
use crate::support::http1::{self, first_difference, pattern, Request};
use crate::support::raw_upstream::{describe, ok_for, Event, Step};
use crate::support::{Gateway, RawClient, RawUpstream, Upstream};

/// How long a response may take before a test fails.
const WAIT: Duration = Duration::from_secs(5);

fn gateway(upstream: &RawUpstream) -> Gateway {
    Gateway::start(&proxy_config(&[upstream.addr], "", ""))
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The connection for the client's next request: the same one, unless the gateway said
/// it closes it (then it must really close, and the client opens another).
async fn next_connection(gw: &Gateway, client: RawClient, last: &http1::Response) -> RawClient {
    if !last.close_delimited && !last.head.has_token("connection", "close") {
        return client;
    }
    let mut client = client;
    let rest = client.closed_within(Duration::from_secs(2)).await;
    assert!(
        matches!(&rest, Ok(extra) if extra.is_empty()),
        "the gateway said Connection: close but did not close cleanly: {rest:?}"
    );
    RawClient::connect(gw.addr("web")).await
}

/// The body [`ok_for`] answers a request with.
fn ok_body(method: &str, target: &str, body_len: usize) -> String {
    format!("{method} {target} {body_len}")
}

/// Answers `/echo` with the request body, anything else with [`ok_for`].
fn echo(r: &Request) -> Vec<Step> {
    if r.target == "/echo" {
        vec![Step::Send(http1::response(200, &[], &r.body))]
    } else {
        vec![Step::Send(ok_for(r))]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_a_mebibyte_passes_intact_both_ways() {
    let big_response = pattern(3 * 1024 * 1024 + 5, 7);
    let chunks_source = big_response.clone();
    let upstream = RawUpstream::start(move |r| {
        if r.target == "/big-chunked" {
            // Chunks of uneven sizes, one larger than any plausible buffer.
            let (a, rest) = chunks_source.split_at(100_000);
            let (b, c) = rest.split_at(2 * 1024 * 1024);
            vec![Step::Send(http1::chunked_response(
                200,
                &[],
                &[a, b, c],
                &[],
            ))]
        } else {
            echo(r)
        }
    })
    .await;
    let gw = gateway(&upstream);
    let body = pattern(3 * 1024 * 1024 + 17, 3);
    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(&post("/echo", &body)).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(
        response.status, 200,
        "echo of a 3 MiB body: {:?}",
        response.head
    );
    assert!(
        response.body == body,
        "the echoed body changed in transit: {}",
        first_difference(&response.body, &body)
    );
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        1,
        "upstream: {}",
        describe(&upstream.conns())
    );
    assert!(
        requests[0].1.body == body,
        "the upstream got a different body: {}",
        first_difference(&requests[0].1.body, &body)
    );

    // A large chunked response on the same client connection.
    client.send(&get("/big-chunked")).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200);
    assert!(
        response.body == big_response,
        "the chunked response changed in transit: {}",
        first_difference(&response.body, &big_response)
    );
    client.send(&get("/after")).await;
    assert_eq!(
        client.response(false, WAIT).await.text(),
        ok_body("GET", "/after", 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_and_chunked_response_with_trailers() {
    let response_chunks = [b"first|".to_vec(), pattern(100_000, 1), b"|last".to_vec()];
    let expected_response: Vec<u8> = response_chunks.concat();
    let upstream = RawUpstream::start(move |r| {
        if r.target == "/upload" {
            let chunks: Vec<&[u8]> = response_chunks.iter().map(Vec::as_slice).collect();
            vec![Step::Send(http1::chunked_response(
                200,
                &[("Trailer", "X-Response-Check")],
                &chunks,
                &[("X-Response-Check", "r1")],
            ))]
        } else {
            vec![Step::Send(ok_for(r))]
        }
    })
    .await;
    let gw = gateway(&upstream);

    let big = pattern(70_000, 9);
    let mut request = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n".to_vec();
    request.extend_from_slice(b"5\r\nhello\r\n");
    request.extend_from_slice(format!("{:X}\r\n", big.len()).as_bytes());
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\n6;name=value;q=\"quoted; \\\"ok\\\"\"\r\n world\r\n");
    request.extend_from_slice(b"0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n");
    let sent_body = [b"hello".as_slice(), &big, b" world"].concat();

    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(&request).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200, "{:?}", response.head);
    assert!(
        response.body == expected_response,
        "the chunked response body changed: {}",
        first_difference(&response.body, &expected_response)
    );
    upstream.assert_read_cleanly();
    let conns = upstream.conns();
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "upstream: {}", describe(&conns));
    let seen = &requests[0].1;
    assert!(
        seen.body == sent_body,
        "the upstream decoded a different body: {}",
        first_difference(&seen.body, &sent_body)
    );

    // The trailer sections did not leak into the next exchange on either connection.
    client.send(&get("/after")).await;
    assert_eq!(
        client.response(false, WAIT).await.text(),
        ok_body("GET", "/after", 0)
    );
    upstream.assert_read_cleanly();
}

/// The upstream is hyper, which sends `100 Continue` when the body is first read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_100_then_the_final_response() {
    let upstream = Upstream::start("a").await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = client
        .try_response(false, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("no 100 Continue before the body was sent: {e}"));
    assert_eq!(interim.status, 100, "{interim:?}");
    client.send(b"hello world").await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "hello world");
    // The connection stays in step (or is closed, as announced).
    let mut client = next_connection(&gw, client, &response).await;
    client.send(&get("/after")).await;
    assert_eq!(client.response(false, WAIT).await.status, 200);
}

/// An upstream that never sends `100 Continue` (it just reads the body, as many do): a
/// client that waits a while for it and then sends the body anyway gets its answer, and
/// nothing but at most one `100` comes before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_with_a_silent_upstream_still_completes() {
    let upstream = RawUpstream::start(echo).await;
    let gw = gateway(&upstream);
    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = client.try_response(false, Duration::from_secs(1)).await;
    if let Ok(r) = &interim {
        assert_eq!(
            r.status, 100,
            "a final response before the body was sent: {r:?}"
        );
    }
    client.send(b"hello world").await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "hello world");
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        1,
        "upstream: {}",
        describe(&upstream.conns())
    );
    assert_eq!(requests[0].1.body, b"hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_an_idle_pooled_connection_does_not_fail_the_next_request() {
    // Every answer is kept alive (no `Connection: close`), and the upstream then closes
    // the idle connection shortly after, as a keepalive timeout does.
    let upstream = RawUpstream::start(|r| {
        vec![
            Step::Send(ok_for(r)),
            Step::Pause(Duration::from_millis(50)),
            Step::Close,
        ]
    })
    .await;
    let gw = gateway(&upstream);
    let mut client = RawClient::connect(gw.addr("web")).await;
    let requests: [(&str, Vec<u8>, String); 3] = [
        ("/first", get("/first"), ok_body("GET", "/first", 0)),
        ("/second", get("/second"), ok_body("GET", "/second", 0)),
        // Not idempotent: the gateway may not send it twice.
        (
            "/third",
            post("/third", b"data"),
            ok_body("POST", "/third", 4),
        ),
    ];
    for (i, (path, bytes, expected)) in requests.iter().enumerate() {
        client.send(bytes).await;
        let response = client.response(false, WAIT).await;
        assert_eq!(
            (response.status, response.text()),
            (200, expected.clone()),
            "{path}: upstream: {}",
            describe(&upstream.conns())
        );
        // The connection that served it is closed by the upstream before the next one.
        upstream
            .wait_until("closing the idle connection", WAIT, |conns| {
                conns.len() > i && conns.iter().filter(|c| c.write_closed).count() > i
            })
            .await;
    }
    let thirds = upstream
        .requests()
        .iter()
        .filter(|(_, r)| r.target == "/third")
        .count();
    assert_eq!(
        thirds,
        1,
        "the POST reached the upstream {thirds} times: {}",
        describe(&upstream.conns())
    );
}

/// An upstream that answers on the request head: `/too-large` with 413 and a close,
/// anything else with 200 (then it reads the body).
async fn early_upstream() -> RawUpstream {
    RawUpstream::start_early(|r| {
        if r.target == "/too-large" {
            vec![
                Step::Send(http1::response(
                    413,
                    &[("Connection", "close")],
                    b"too large",
                )),
                Step::Close,
            ]
        } else {
            vec![Step::Send(http1::response(200, &[], b"accepted early"))]
        }
    })
    .await
}

/// Sends the head of a 4 MiB upload and 64 KiB of its body, and stops.
async fn start_large_upload(client: &mut RawClient) {
    client
        .send(b"POST /too-large HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4194304\r\n\r\n")
        .await;
    client.send(&pattern(64 * 1024, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_before_reading_the_body_is_heard() {
    let upstream = early_upstream().await;
    let gw = gateway(&upstream);

    // 413 while the client has sent 64 KiB of a 4 MiB body and waits.
    let mut client = RawClient::connect(gw.addr("web")).await;
    start_large_upload(&mut client).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (413, "too large"),
        "{response:?}"
    );

    // 200 before the body, then the client finishes sending it; the connection goes on.
    let mut client = RawClient::connect(gw.addr("web")).await;
    let body = pattern(1024 * 1024, 1);
    client.send(&post("/early", &body)).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "accepted early"),
        "{response:?}"
    );
    let mut client = next_connection(&gw, client, &response).await;
    client.send(&get("/after")).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200, "the next request: {response:?}");
    assert_eq!(response.text(), "accepted early");
}

/// After an early answer the gateway either keeps reading the body (the client sends
/// the rest, then its next request) or says `Connection: close` and then really closes
/// (RFC 9112 section 9.6), rather than leave a client that waits for the end hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_is_followed_by_the_announced_close_or_by_more_requests() {
    let upstream = early_upstream().await;
    let gw = gateway(&upstream);
    let mut client = RawClient::connect(gw.addr("web")).await;
    start_large_upload(&mut client).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 413, "{response:?}");
    if response.head.has_token("connection", "close") {
        let rest = client.closed_within(Duration::from_secs(3)).await;
        assert!(
            matches!(&rest, Ok(extra) if extra.is_empty()),
            "the gateway announced Connection: close after the 413 but the connection was still open 3 s later ({:?})",
            rest.map_err(|b| b.len())
        );
    } else {
        client.send(&pattern(4 * 1024 * 1024 - 64 * 1024, 0)).await;
        client.send(&get("/after")).await;
        let response = client.response(false, WAIT).await;
        assert_eq!(response.text(), "accepted early", "{response:?}");
    }
}

/// Bodyless responses on one keepalive connection, one at a time and then pipelined:
/// each is read by its own framing, and the request after them gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_without_bodies_keep_the_connection_in_step() {
    let upstream = RawUpstream::start(|r| {
        let bytes = match (r.method.as_str(), r.target.as_str()) {
            ("HEAD", "/head") => {
                http1::response(200, &[("Content-Length", "1234"), ("X-Kind", "head")], b"")
            }
            ("HEAD", "/head-chunked") => {
                http1::response(200, &[("Transfer-Encoding", "chunked")], b"")
            }
            (_, "/204") => http1::response(204, &[("X-Kind", "no-content")], b""),
            (_, "/304") => {
                http1::response(304, &[("ETag", "\"v1\""), ("Content-Length", "42")], b"")
            }
            _ => ok_for(r),
        };
        vec![Step::Send(bytes)]
    })
    .await;
    let gw = gateway(&upstream);
    let exchanges: [(&[u8], bool, u16); 5] = [
        (b"HEAD /head HTTP/1.1\r\nHost: app.test\r\n\r\n", true, 200),
        (
            b"HEAD /head-chunked HTTP/1.1\r\nHost: app.test\r\n\r\n",
            true,
            200,
        ),
        (b"GET /204 HTTP/1.1\r\nHost: app.test\r\n\r\n", false, 204),
        (
            b"GET /304 HTTP/1.1\r\nHost: app.test\r\nIf-None-Match: \"v1\"\r\n\r\n",
            false,
            304,
        ),
        (b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n", false, 200),
    ];

    let mut client = RawClient::connect(gw.addr("web")).await;
    for (request, head, status) in exchanges {
        client.send(request).await;
        let response = client.response(head, WAIT).await;
        assert_eq!(
            response.status,
            status,
            "{}: {response:?}",
            String::from_utf8_lossy(request)
        );
        // A HEAD answer's length is the representation's: kept, or dropped, never changed.
        if request.starts_with(b"HEAD /head ") {
            let lengths = response.head.list("content-length");
            assert!(
                lengths.iter().all(|l| l == "1234"),
                "HEAD changed Content-Length: {lengths:?}"
            );
        }
    }
    assert!(
        client.pending().is_empty(),
        "bytes after the last response: {:?}",
        client.pending()
    );

    let mut client = RawClient::connect(gw.addr("web")).await;
    client
        .send(
            &exchanges
                .iter()
                .flat_map(|e| e.0.to_vec())
                .collect::<Vec<u8>>(),
        )
        .await;
    for (request, head, status) in exchanges {
        let response = client.response(head, WAIT).await;
        assert_eq!(
            response.status,
            status,
            "pipelined {}: {response:?}",
            String::from_utf8_lossy(request)
        );
    }
    let last = client.drain_for(Duration::from_millis(200)).await;
    assert!(
        last.is_empty(),
        "bytes after the last response: {:?}",
        String::from_utf8_lossy(&last)
    );
    upstream.assert_read_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_from_the_client_ends_the_connection_after_the_response() {
    let upstream = RawUpstream::start_default().await;
    let gw = gateway(&upstream);
    for request in [
        b"GET /one HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".as_slice(),
        b"GET /one HTTP/1.0\r\nHost: app.test\r\n\r\n",
    ] {
        let mut client = RawClient::connect(gw.addr("web")).await;
        client.send(request).await;
        let response = client.response(false, WAIT).await;
        assert_eq!(response.text(), ok_body("GET", "/one", 0));
        let rest = client.closed_within(Duration::from_secs(2)).await;
        assert!(
            matches!(&rest, Ok(extra) if extra.is_empty()),
            "{}: the gateway did not close the connection after the response: {:?}",
            String::from_utf8_lossy(request),
            rest.map_err(|b| String::from_utf8_lossy(&b).into_owned())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_from_the_upstream_still_delivers_the_whole_response() {
    let until_close = pattern(100_000, 5);
    let until_close_body = until_close.clone();
    let upstream = RawUpstream::start(move |r| match r.target.as_str() {
        "/close" => vec![
            Step::Send(http1::response(200, &[("Connection", "close")], b"closing")),
            Step::Close,
        ],
        // HTTP/1.0 style: no length, the body ends where the connection does.
        "/until-close" => {
            let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            bytes.extend_from_slice(&until_close_body);
            vec![Step::Send(bytes), Step::Close]
        }
        _ => vec![Step::Send(ok_for(r))],
    })
    .await;
    let gw = gateway(&upstream);
    let mut client = RawClient::connect(gw.addr("web")).await;

    client.send(&get("/close")).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "closing")
    );
    client.send(&get("/next")).await;
    let response = client.try_response(false, WAIT).await.unwrap_or_else(|e| {
        panic!("the client connection did not survive the upstream's Connection: close: {e}")
    });
    assert_eq!(response.text(), ok_body("GET", "/next", 0));

    client.send(&get("/until-close")).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200);
    assert!(
        response.body == until_close,
        "the close-delimited body changed: {}",
        first_difference(&response.body, &until_close)
    );
    let mut client = next_connection(&gw, client, &response).await;
    client.send(&get("/after")).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.text(), ok_body("GET", "/after", 0));

    let requests = upstream.requests();
    let conn_of = |target: &str| {
        requests
            .iter()
            .find(|(_, r)| r.target == target)
            .map(|(c, _)| *c)
            .unwrap_or_else(|| panic!("{target} never reached the upstream"))
    };
    assert_ne!(
        conn_of("/close"),
        conn_of("/next"),
        "a request went on a connection the upstream closed: {}",
        describe(&upstream.conns())
    );
    assert_ne!(
        conn_of("/until-close"),
        conn_of("/after"),
        "upstream: {}",
        describe(&upstream.conns())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_response_leaves_no_dirty_upstream_connection() {
    const SLOW_LEN: usize = 300_000;
    let slow = pattern(SLOW_LEN, 2);
    let upstream = RawUpstream::start(move |r| {
        if r.target == "/slow" {
            let mut first =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {SLOW_LEN}\r\n\r\n").into_bytes();
            first.extend_from_slice(&slow[..64 * 1024]);
            vec![
                Step::Send(first),
                Step::Pause(Duration::from_millis(400)),
                Step::Send(slow[64 * 1024..].to_vec()),
            ]
        } else {
            vec![Step::Send(ok_for(r))]
        }
    })
    .await;
    let gw = gateway(&upstream);

    let mut leaving = RawClient::connect(gw.addr("web")).await;
    leaving.send(&get("/slow")).await;
    let got = leaving.read_at_least(1000, WAIT).await;
    assert!(got >= 1000, "the slow response never started");
    drop(leaving);

    // At once, while the old response is still on its way...
    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(&get("/next-1")).await;
    assert_eq!(
        client.response(false, WAIT).await.text(),
        ok_body("GET", "/next-1", 0)
    );
    // ...and once the upstream has sent all of it (or the gateway closed that connection).
    upstream
        .wait_until("the slow response to end", WAIT, |conns| {
            conns.first().is_some_and(|c| {
                c.peer_closed || c.events.iter().filter(|e| **e == Event::ReplyEnd).count() >= 1
            })
        })
        .await;
    for path in ["/next-2", "/next-3"] {
        client.send(&get(path)).await;
        let response = client.response(false, WAIT).await;
        assert_eq!(response.text(), ok_body("GET", path, 0), "{response:?}");
    }
    let mut fresh = RawClient::connect(gw.addr("web")).await;
    fresh.send(&get("/next-4")).await;
    assert_eq!(
        fresh.response(false, WAIT).await.text(),
        ok_body("GET", "/next-4", 0)
    );

    let conns = upstream.conns();
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(
            c.received_mid_reply(),
            0,
            "the gateway wrote into upstream connection #{i} while a response was still arriving there: {}",
            describe(&conns)
        );
        assert!(c.error.is_none(), "upstream: {}", describe(&conns));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    // The first answer is the slowest, so answers that overtake each other would show.
    let upstream = RawUpstream::start(|r| {
        let delay = match r.target.as_str() {
            "/p1" => 300,
            "/p2" => 100,
            _ => 0,
        };
        vec![
            Step::Pause(Duration::from_millis(delay)),
            Step::Send(ok_for(r)),
        ]
    })
    .await;
    let gw = gateway(&upstream);
    let mut pipeline = get("/p1");
    pipeline.extend_from_slice(&post("/p2", b"hello"));
    pipeline.extend_from_slice(
        b"POST /p3 HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    );
    pipeline.extend_from_slice(b"HEAD /p4 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    pipeline.extend_from_slice(&get("/p5"));
    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(&pipeline).await;
    let expected = [
        ("GET", "/p1", 0, false),
        ("POST", "/p2", 5, false),
        ("POST", "/p3", 7, false),
        ("HEAD", "/p4", 0, true),
        ("GET", "/p5", 0, false),
    ];
    for (method, path, len, head) in expected {
        let response = client.response(head, WAIT).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        if !head {
            assert_eq!(response.text(), ok_body(method, path, len), "out of order");
        }
    }
    let targets: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|(_, r)| r.target)
        .collect();
    assert_eq!(
        targets.len(),
        5,
        "upstream: {}",
        describe(&upstream.conns())
    );
}
