//! Responses the loop writes itself (direct responses, redirects, errors), serialized
//! straight into the connection's output buffer.

use std::io::Write;

use crate::config::model::HeaderEdits;

use super::exchange::{Next, Outcome};
use super::{body, ClientIo};

pub struct LocalReply<'a> {
    pub status: u16,
    pub content_type: &'a [u8],
    pub body: &'a [u8],
    pub location: Option<&'a str>,
    pub request_id: &'a str,
    pub edits: Option<&'a HeaderEdits>,
    pub head_only: bool,
    pub close: bool,
}

impl LocalReply<'_> {
    pub fn plain<'a>(status: u16, body: &'a [u8], request_id: &'a str) -> LocalReply<'a> {
        LocalReply {
            status,
            content_type: b"text/plain; charset=utf-8",
            body,
            location: None,
            request_id,
            edits: None,
            head_only: false,
            close: false,
        }
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_status_line(out, self.status, reason(self.status));
        let edits = self.edits;
        let removed = |name: &str| {
            edits.is_some_and(|e| {
                e.remove.iter().any(|n| n.as_str() == name)
                    || e.set.iter().any(|(n, _)| n.as_str() == name)
            })
        };
        if !removed("content-type") {
            field(out, b"content-type", self.content_type);
        }
        let _ = write!(out, "content-length: {}\r\n", self.body.len());
        if !self.request_id.is_empty() && !removed("x-request-id") {
            field(out, b"x-request-id", self.request_id.as_bytes());
        }
        if let Some(location) = self.location {
            if !removed("location") {
                field(out, b"location", location.as_bytes());
            }
        }
        if let Some(edits) = edits {
            for (name, value) in edits.set.iter().chain(&edits.add) {
                field(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(self.body);
        }
    }
}

pub fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    let _ = write!(out, "HTTP/1.1 {status} ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
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
pub(super) async fn send_reply<C: ClientIo>(
    client: &mut C,
    out: &mut Vec<u8>,
    reply: &LocalReply<'_>,
) -> Outcome {
    out.clear();
    reply.write_to(out);
    let written = body::send_in_time(client, out).await.is_ok();
    Outcome {
        status: reply.status,
        bytes_sent: if reply.head_only || !written {
            0
        } else {
            reply.body.len() as u64
        },
        next: if reply.close || !written {
            Next::Close
        } else {
            Next::KeepAlive
        },
    }
}
