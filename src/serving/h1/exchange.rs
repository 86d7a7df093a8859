//! What one exchange on a client connection shares with the loop around it: the
//! connection's reused buffers, an exchange's outcome, and what the connection does next.

use bytes::BytesMut;

use super::head::Field;

/// Buffers that live as long as the connection, reused by every request on it.
pub struct Buffers {
    /// Bytes read from the client: the current head, then body and pipelined requests.
    pub request: BytesMut,
    pub request_fields: Vec<Field>,
    /// Bytes read from the upstream.
    pub response: BytesMut,
    pub response_fields: Vec<Field>,
    /// Bytes due to the client.
    pub out: Vec<u8>,
    /// The head due to the upstream, kept until a response starts so a stale pooled
    /// connection or another endpoint can be tried.
    pub upstream_head: Vec<u8>,
    /// A small request body already read whole, kept for the same reason.
    pub upstream_body: Vec<u8>,
}

impl Buffers {
    pub fn new() -> Self {
        Self {
            request: BytesMut::with_capacity(4096),
            request_fields: Vec::with_capacity(32),
            response: BytesMut::with_capacity(4096),
            response_fields: Vec::with_capacity(32),
            out: Vec::with_capacity(4096),
            upstream_head: Vec::with_capacity(1024),
            upstream_body: Vec::new(),
        }
    }
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
    HandOver,
}

/// How an exchange ended, for the metrics, the access log and the loop.
pub struct Outcome {
    /// What the client received (0 when it went away before a response).
    pub status: u16,
    pub bytes_sent: u64,
    pub next: Next,
}
