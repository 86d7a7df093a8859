//! Malformed and ambiguous requests, spec section 4: refused, never forwarded.

use std::time::Duration;

use crate::proxy_config;
use crate::support::{raw_exchange, status_of, Gateway, Upstream};

async fn gateway_with_upstream() -> (Gateway, Upstream) {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&proxy_config(&[a.addr], "", ""));
    (gw, a)
}

async fn refused(request: &str, expected: u16) {
    let (gw, a) = gateway_with_upstream().await;
    let response = raw_exchange(gw.addr("web"), request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&response),
        expected,
        "{request:?} -> {response:?}"
    );
    assert_eq!(a.hits(), 0, "refused request reached the upstream");
    // One response only, and the connection is closed after it (the read ended early).
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_400() {
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_content_lengths_are_400() {
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello12",
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_content_length_is_400() {
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_coding_other_than_final_chunked_is_400() {
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_transfer_coding_is_501() {
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: zstd-custom, chunked\r\n\r\n0\r\n\r\n",
        501,
    )
    .await;
}

/// An unknown final coding is refused with 501, as the spec asks (pingora's parser
/// answered 400 before edgegate saw the request; the HTTP/1.1 loop reads heads itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_final_transfer_coding_is_refused_with_501() {
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: zstd-custom\r\n\r\n0\r\n\r\n",
        501,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() {
    let big = "a".repeat(70 * 1024);
    refused(
        &format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
        431,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_400() {
    refused("GET / HTTP/1.1\r\nHost a\r\nBro ken\r\n\r\n", 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (gw, a) = gateway_with_upstream().await;
    let request = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(gw.addr("web"), request.as_bytes(), Duration::from_secs(5)).await;
    let one = response
        .find("\"/one\"")
        .unwrap_or_else(|| panic!("{response}"));
    let two = response.find("\"/two\"").expect("two");
    let three = response.find("\"/three\"").expect("three");
    assert!(one < two && two < three, "{response}");
    assert_eq!(a.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_is_forwarded_with_clean_framing() {
    let (gw, a) = gateway_with_upstream().await;
    let request = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = raw_exchange(gw.addr("web"), request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("hello world"), "{response}");
    let seen = a.last();
    assert_eq!(seen.body_len, 11);
    assert!(
        seen.headers.get("content-length").is_none()
            || seen.headers.get("transfer-encoding").is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_requests_are_answered_at_once_and_http10_gets_a_host_upstream() {
    let (gw, a) = gateway_with_upstream().await;
    // Shorter than the 24-byte HTTP/2 preface: must not wait for more bytes.
    let started = std::time::Instant::now();
    let response = raw_exchange(
        gw.addr("web"),
        b"GET / HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let host = a
        .last()
        .headers
        .get("host")
        .map(|h| h.to_str().expect("host").to_string());
    assert_eq!(
        host,
        Some(a.addr.to_string()),
        "HTTP/1.1 upstream requests need a Host"
    );
    // HTTP/0.9 is not served: answered or closed promptly, never left hanging.
    let started = std::time::Instant::now();
    let response = raw_exchange(gw.addr("web"), b"GET /\r\n", Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "HTTP/0.9 hung: {response:?}"
    );
}
