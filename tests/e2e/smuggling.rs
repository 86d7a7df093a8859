//! Request smuggling (issue 9, spec section 4): request bodies whose framing a lenient
//! parser and a strict RFC 9112 reader could read differently. A raw recording upstream
//! stands behind the gateway; for each payload, either
//! - the client gets 400 and no whole request reached the upstream, or
//! - the upstream got exactly one request, with clean framing, whose body is what the
//!   reference reader reads from what the client sent,
//!
//! and never a second request the client did not send as one. Where a lenient reading
//! differs, the payload hides `GET /admin` where that reading would find a request.
//!
//! The reference reader is [`http1`]'s: RFC 9112's grammar, plus the normalisations
//! spec section 4 names as having one safe reading (a bare LF ending a line, an obs-fold);
//! a payload it cannot read at all may only be refused.

use std::time::Duration;

use crate::proxy_config;
use crate::support::http1::{self, first_difference, Mode, Parse};
use crate::support::raw_upstream::{describe, Conn};
use crate::support::{Gateway, RawClient, RawUpstream};

/// The request everything is smuggled in: `POST /p`, with `framing` header lines.
fn request(framing: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("POST /p HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

const CHUNKED: &str = "Transfer-Encoding: chunked\r\n";

/// The one body a strict or normalising reader reads from the whole of `request`, if
/// it is exactly one request.
fn reference_body(request: &[u8]) -> Option<Vec<u8>> {
    [Mode::Strict, Mode::Normalising]
        .into_iter()
        .find_map(|mode| match http1::parse_request(request, mode) {
            Parse::Complete(r, used) if used == request.len() => Some(r.body),
            _ => None,
        })
}

/// Request targets the upstream saw on a connection: the whole requests, and request
/// lines in what follows them when the strict reader refuses it (a request smuggled
/// after broken framing). A request still arriving with valid framing so far is not
/// scanned: lines in its body are data.
fn targets_seen(conn: &Conn) -> Vec<String> {
    let (requests, used, stop) = http1::parse_requests(&conn.received, Mode::Strict);
    let mut targets: Vec<String> = requests.into_iter().map(|r| r.target).collect();
    if matches!(stop, Some(Parse::Invalid(_))) {
        let rest = String::from_utf8_lossy(&conn.received[used..]).into_owned();
        for line in rest.split('\n').skip(1) {
            let parts: Vec<&str> = line.trim_end_matches('\r').split(' ').collect();
            if parts.len() == 3 && parts[2].starts_with("HTTP/1.") {
                targets.push(format!(
                    "{} (a request line after invalid framing)",
                    parts[1]
                ));
            }
        }
    }
    targets
}

/// Sends each payload through a gateway of its own, all at once, and checks every
/// outcome is one of the two allowed; a failure names every payload that failed.
async fn check(cases: Vec<(&str, Vec<u8>)>) {
    let outcomes =
        futures_util::future::join_all(cases.iter().map(|(name, r)| outcome(name, r))).await;
    for passed in outcomes.iter().flatten() {
        eprintln!("{passed}");
    }
    let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "{} of {} payloads failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// One payload: `Ok` with what happened, `Err` with why that is not allowed.
async fn outcome(name: &str, request: &[u8]) -> Result<String, String> {
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let reference = reference_body(request);
    let mut client = RawClient::connect(gw.addr("web")).await;
    client.send(request).await;
    let first = client.try_response(false, Duration::from_secs(3)).await;
    // A smuggled request would be answered right after the first.
    let after = client.drain_for(Duration::from_millis(300)).await;
    let conns = upstream.conns();
    let fail = |why: String| {
        Err(format!(
            "payload {name}: {why}\n  sent: {:?}\n  reference body: {:?}\n  client got: {:?}\n  then: {:?}\n  upstream: {}",
            String::from_utf8_lossy(request),
            reference.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            first.as_ref().map(|r| (r.status, r.text())),
            String::from_utf8_lossy(&after),
            describe(&conns)
        ))
    };
    let whole: Vec<http1::Request> = conns.iter().flat_map(|c| c.requests.clone()).collect();
    let targets: Vec<String> = conns.iter().flat_map(targets_seen).collect();
    if targets.iter().any(|t| t != "/p") {
        return fail(format!(
            "a request the client did not send reached the upstream: {targets:?}"
        ));
    }
    if String::from_utf8_lossy(&after).contains("HTTP/1.") {
        return fail("a second response came back".to_string());
    }
    let response = match &first {
        Ok(r) => r,
        Err(e) => return fail(format!("no response: {e}")),
    };
    match (response.status, &reference) {
        (400, _) if whole.is_empty() => Ok(format!(
            "{name}: 400 (the upstream got {} bytes on {} connections)",
            conns.iter().map(|c| c.received.len()).sum::<usize>(),
            conns.len()
        )),
        (400, _) => fail("refused with 400, but a whole request reached the upstream".into()),
        (200, None) => {
            fail("forwarded, but the reference reader refuses this payload: it must get 400".into())
        }
        (200, Some(expected)) => {
            if whole.len() != 1 {
                return fail(format!("forwarded as {} requests", whole.len()));
            }
            if whole[0].body != *expected {
                return fail(format!(
                    "the upstream read a different body ({})",
                    first_difference(&whole[0].body, expected)
                ));
            }
            if let Some(e) = conns.iter().find_map(|c| c.error.as_ref()) {
                return fail(format!(
                    "the upstream could not read what the gateway sent: {e}"
                ));
            }
            if response.text() != format!("POST /p {}", expected.len()) {
                return fail("the client got another request's answer".into());
            }
            Ok(format!("{name}: forwarded"))
        }
        (other, _) => fail(format!(
            "status {other}: expected 400 or the request forwarded"
        )),
    }
}

/// The request a payload hides, where a reading that differs from the reference finds it.
const ADMIN: &str = "GET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n";
/// [`ADMIN`] after a last chunk: what a chunked reader that ended early reads next.
const HIDDEN: &str = "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// A chunk extension ended by a bare LF (the case issue 9 found): the reference ends
/// the line at the LF (data `xx`); a parser that takes the LF into the extension reads
/// the next size line as data, ends the body early and finds `GET /admin` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extension_ending_in_a_bare_lf() {
    assert!((16..256).contains(&HIDDEN.len()), "two hex digits");
    let body = format!("2;a\nxx\r\n{:x}\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len());
    check(vec![
        ("ext-bare-lf", request(CHUNKED, body.as_bytes())),
        (
            "ext-value-bare-lf",
            request(CHUNKED, body.replacen("2;a\n", "2;a=b\n", 1).as_bytes()),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_in_chunk_lines() {
    check(vec![
        ("size-bare-lf", request(CHUNKED, b"5\nhello\r\n0\r\n\r\n")),
        ("data-bare-lf", request(CHUNKED, b"5\r\nhello\n0\r\n\r\n")),
        (
            "last-chunk-bare-lf",
            request(CHUNKED, b"5\r\nhello\r\n0\n\r\n"),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_in_the_trailer_section() {
    check(vec![
        (
            "trailer-line-bare-lf",
            request(CHUNKED, b"5\r\nhello\r\n0\r\nX-Trailer: y\n\r\n"),
        ),
        (
            "trailer-end-bare-lf",
            request(CHUNKED, b"5\r\nhello\r\n0\r\n\n"),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_size_overflow() {
    check(vec![
        (
            "size-overflow",
            request(CHUNKED, b"ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
        ),
        // 2^64 + 5: a parser that wraps reads a 5-byte chunk.
        (
            "size-wraps-to-5",
            request(CHUNKED, b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
        ),
        // Leading zeros are valid (`1*HEXDIG`): refused or read as 5, nothing else.
        (
            "size-leading-zeros",
            request(CHUNKED, b"0000000000000000005\r\nhello\r\n0\r\n\r\n"),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_sign_or_prefix_before_the_chunk_size() {
    check(vec![
        (
            "space-before-size",
            request(CHUNKED, b" 5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "tab-before-size",
            request(CHUNKED, b"\t5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "plus-before-size",
            request(CHUNKED, b"+5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "0x-before-size",
            request(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extension_bytes_outside_token_and_quoted_string() {
    check(vec![
        (
            "ext-ctl",
            request(CHUNKED, b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "ext-del",
            request(CHUNKED, b"5;a=b\x7fc\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "ext-bare-cr",
            request(CHUNKED, b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "ext-unterminated-quote",
            request(CHUNKED, b"5;a=\"b\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "ext-no-name",
            request(CHUNKED, b"5;=b\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "ext-nul",
            request(CHUNKED, b"5;a\x00\r\nhello\r\n0\r\n\r\n"),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_data_not_followed_by_crlf() {
    // A parser that skips two bytes after the data without looking finds the request.
    let junk = format!("5\r\nhelloXX{HIDDEN}");
    check(vec![
        (
            "data-longer-than-size",
            request(CHUNKED, b"3\r\nhello\r\n0\r\n\r\n"),
        ),
        ("data-then-junk", request(CHUNKED, junk.as_bytes())),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_and_transfer_encoding_together() {
    let cl = format!("Content-Length: {}\r\n", HIDDEN.len());
    check(vec![
        (
            "cl-and-te",
            request(&format!("{cl}{CHUNKED}"), HIDDEN.as_bytes()),
        ),
        (
            "te-and-cl",
            request(&format!("{CHUNKED}{cl}"), HIDDEN.as_bytes()),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_exactly_chunked() {
    let body = format!("5\r\nhello\r\n{HIDDEN}");
    check(vec![
        (
            "te-chunked-identity",
            request("Transfer-Encoding: chunked, identity\r\n", body.as_bytes()),
        ),
        (
            "te-chunked-twice",
            request("Transfer-Encoding: chunked, chunked\r\n", body.as_bytes()),
        ),
        (
            "te-in-two-fields",
            request(
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                body.as_bytes(),
            ),
        ),
    ])
    .await;
}

/// An obs-fold has one safe reading: refused, or read as unfolded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_in_transfer_encoding() {
    // A reader that drops the folded field has no body, and `5` starts a second request.
    check(vec![
        (
            "te-obs-fold",
            request(
                "Transfer-Encoding:\r\n chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        // Folded into another field, `Transfer-Encoding` is not a field at all: no body.
        (
            "te-folded-into-another-field",
            request("X-Note: a\r\n Transfer-Encoding: chunked\r\n", b""),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_content_length() {
    let body = format!("hello{ADMIN}");
    check(vec![
        (
            "cl-plus",
            request("Content-Length: +5\r\n", body.as_bytes()),
        ),
        (
            "cl-minus",
            request("Content-Length: -5\r\n", body.as_bytes()),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths() {
    let body = format!("hello{ADMIN}");
    check(vec![
        (
            "two-cl",
            request(
                &format!("Content-Length: 5\r\nContent-Length: {}\r\n", body.len()),
                body.as_bytes(),
            ),
        ),
        (
            "cl-list",
            request(
                &format!("Content-Length: 5, {}\r\n", body.len()),
                body.as_bytes(),
            ),
        ),
    ])
    .await;
}

/// Well-formed requests that look unusual: the gateway must forward them, with the body
/// the client sent (a 400 here would be a false refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_framings_are_forwarded_exactly() {
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let cases: [(&str, &str, &[u8], &[u8]); 5] = [
        (
            "extensions",
            CHUNKED,
            b"5;a=b;c=\"d;\\\"e\\\"\" ; f = g\r\nhello\r\n0;last\r\n\r\n",
            b"hello",
        ),
        (
            "upper-case-hex-and-trailers",
            CHUNKED,
            b"A\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n",
            b"0123456789",
        ),
        (
            "hidden-request-inside-a-chunk",
            CHUNKED,
            b"2C\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n\r\n0\r\n\r\n",
            HIDDEN.as_bytes(),
        ),
        (
            "identical-content-lengths",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            b"hello",
            b"hello",
        ),
        (
            "te-case-insensitive",
            "Transfer-Encoding: Chunked\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
    ];
    for (name, framing, body, expected) in cases {
        let before = upstream.requests().len();
        let mut client = RawClient::connect(gw.addr("web")).await;
        client.send(&request(framing, body)).await;
        let response = client.response(false, Duration::from_secs(3)).await;
        assert_eq!(
            (response.status, response.text()),
            (200, format!("POST /p {}", expected.len())),
            "{name}: upstream: {}",
            describe(&upstream.conns())
        );
        let requests = upstream.requests();
        assert_eq!(
            requests.len(),
            before + 1,
            "{name}: {}",
            describe(&upstream.conns())
        );
        let seen = &requests[before].1;
        assert!(
            seen.body == expected,
            "{name}: {}",
            first_difference(&seen.body, expected)
        );
        assert_eq!(seen.target, "/p", "{name}");
    }
}
