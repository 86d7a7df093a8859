//! The core's local answers (direct responses, redirects, refusals, errors), serialized
//! straight into the connection's output buffer.

use std::io::Write;

use crate::pipeline::{LocalAnswer, RequestContext};

use super::exchange::{Next, Outcome};
use super::{body, ClientIo};

/// Writes `answer` as HTTP/1.1 bytes; `close` adds `connection: close`.
pub fn write_answer(
    out: &mut Vec<u8>,
    answer: &LocalAnswer,
    ctx: &RequestContext,
    method: &http::Method,
    close: bool,
) {
    write_status_line(out, answer.status, reason(answer.status));
    answer.write_fields(ctx, out);
    if answer.sends_length() {
        let _ = write!(out, "content-length: {}\r\n", answer.body.len());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if answer.has_body(method) {
        out.extend_from_slice(&answer.body);
    }
}

pub fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    let _ = write!(out, "HTTP/1.1 {status} ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

pub fn reason(status: u16) -> &'static [u8] {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
        .as_bytes()
}

/// Writes a response the gateway makes itself and says what the connection does next:
/// one writer for direct answers, refusals and upstream errors alike.
pub(super) async fn send_answer<C: ClientIo>(
    client: &mut C,
    out: &mut Vec<u8>,
    answer: &LocalAnswer,
    ctx: &RequestContext,
    method: &http::Method,
    close: bool,
) -> Outcome {
    out.clear();
    write_answer(out, answer, ctx, method, close);
    let written = body::send_in_time(client, out).await.is_ok();
    Outcome {
        status: answer.status,
        bytes_sent: if !answer.has_body(method) || !written {
            0
        } else {
            answer.body.len() as u64
        },
        next: if close || !written {
            Next::Close
        } else {
            Next::KeepAlive
        },
    }
}
