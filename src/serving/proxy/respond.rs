//! The core's local answers rendered into pingora's session, and pingora's errors mapped
//! onto the core's failure table.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::pipeline::{Failure, LocalAnswer, RequestContext};

/// Writes one of the gateway's own answers.
pub async fn send(session: &mut Session, ctx: &RequestContext, answer: &LocalAnswer) -> Result<()> {
    if answer.close {
        session.set_keepalive(None);
    }
    let mut header = ResponseHeader::build(answer.status, Some(6))?;
    let mut fields: Vec<(http::HeaderName, http::HeaderValue)> = Vec::with_capacity(6);
    answer.write_fields(ctx, &mut fields);
    for (name, value) in fields {
        header.append_header(name, value)?;
    }
    if answer.sends_length() {
        header.insert_header(http::header::CONTENT_LENGTH, answer.body.len().to_string())?;
    }
    let with_body = answer.has_body(&session.req_header().method);
    session
        .write_response_header(Box::new(header), !with_body)
        .await?;
    if with_body {
        session
            .write_response_body(Some(answer.body.clone()), true)
            .await?;
    }
    Ok(())
}

/// What a pingora error means in the core's terms; `None` when the client is gone and
/// nothing is to be written.
pub fn failure_of(e: &Error) -> Option<Failure> {
    use ErrorType::*;
    if super::is_downstream_gone(e) {
        return None;
    }
    Some(match e.etype() {
        HTTPStatus(503) => Failure::NoHealthyEndpoint,
        ConnectTimedout => Failure::ConnectTimeout,
        etype if *etype == super::ROUTE_TIMEOUT => Failure::RouteTimeout,
        ReadTimedout | TLSHandshakeTimedout => Failure::ResponseTimeout,
        WriteTimedout => Failure::WriteTimeout,
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => {
            Failure::Connect
        }
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => {
            Failure::TlsHandshake
        }
        ConnectionClosed | ReadError | WriteError => Failure::Reset,
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => Failure::InvalidResponse,
        _ if matches!(e.esource(), ErrorSource::Upstream) => Failure::InvalidResponse,
        _ => Failure::Internal,
    })
}

/// The answer for a pingora error: the failure table, or a client-side refusal.
pub fn error_answer(e: &Error) -> Option<LocalAnswer> {
    if let ErrorType::HTTPStatus(413) = e.etype() {
        return Some(LocalAnswer::body_too_large());
    }
    if matches!(e.esource(), ErrorSource::Downstream) && !super::is_downstream_gone(e) {
        return Some(LocalAnswer::refusal(400, "bad request"));
    }
    failure_of(e).map(LocalAnswer::failure)
}
