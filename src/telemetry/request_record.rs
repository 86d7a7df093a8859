//! What the access log and span export both need of a finished request, filled once on
//! the request path and shared (`Arc`) by every sink that is on, so a request logged and
//! traced copies its path, host and id once, not once per sink.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::model::Name;
use crate::telemetry::trace::TraceContext;

#[derive(Debug)]
pub struct RequestRecord {
    pub listener: Name,
    pub client: Option<SocketAddr>,
    pub method: http::Method,
    pub host: String,
    /// Without the query string.
    pub path: String,
    /// What the client received; 0 when it went away first.
    pub status: u16,
    pub route: Option<Name>,
    pub upstream: Option<Name>,
    pub endpoint: Option<SocketAddr>,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    pub duration: Duration,
    pub request_id: String,
    pub trace: TraceContext,
    /// The route's authenticator's verdict, and the user it names.
    pub auth: Option<crate::pipeline::auth::AuthNote>,
}
