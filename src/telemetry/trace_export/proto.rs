//! The few OTLP protobuf messages the exporter sends, encoded by hand.
//!
//! Field numbers are those of `opentelemetry/proto/collector/trace/v1` and
//! `opentelemetry/proto/trace/v1` (the e2e receiver and the unit test below decode this
//! output with the official generated types). Encoding a span is a few dozen lines;
//! a protobuf runtime and generated code would add dependencies for no gain.

use super::SpanRecord;

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

/// `Span.SpanKind.SPAN_KIND_SERVER`.
const KIND_SERVER: u64 = 2;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: the parent's remoteness is known (bit 8), and it is remote (bit 9).
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from((field << 3) | wire));
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(out, field, WIRE_LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A length-delimited sub-message: written in place, then its length is inserted before
/// it (messages here are small, so the shift is cheap).
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, WIRE_LEN);
    let start = out.len();
    body(out);
    let len = out.len() - start;
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut value = len as u64;
    while value >= 0x80 {
        prefix[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    prefix[n] = value as u8;
    n += 1;
    out.splice(start..start, prefix[..n].iter().copied());
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// The encoded size of a length-delimited field with a one-byte tag and `len` bytes.
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// `KeyValue { key = 1; AnyValue value = 2 }` with `AnyValue.string_value = 1`; sizes
/// known up front, so nothing is shifted (the most frequent message by far).
fn string_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    let any = delimited_len(value.len());
    let kv = delimited_len(key.len()) + delimited_len(any);
    tag(out, field, WIRE_LEN);
    varint(out, kv as u64);
    bytes(out, 1, key.as_bytes());
    tag(out, 2, WIRE_LEN);
    varint(out, any as u64);
    bytes(out, 1, value.as_bytes());
}

/// A string attribute formatted straight into the message (an address), with no
/// intermediate `String`.
fn display_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: &dyn std::fmt::Display) {
    use std::io::Write;
    message(out, field, |kv| {
        bytes(kv, 1, key.as_bytes());
        message(kv, 2, |any| {
            // A string field is length-delimited like a message.
            message(any, 1, |text| {
                let _ = write!(text, "{value}");
            })
        });
    });
}

/// `AnyValue.int_value = 3`.
fn int_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    message(out, field, |kv| {
        bytes(kv, 1, key.as_bytes());
        message(kv, 2, |any| {
            tag(any, 3, WIRE_VARINT);
            varint(any, value as u64);
        });
    });
}

/// An `ExportTraceServiceRequest` with one resource and one scope holding `spans`.
pub fn export_request(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + spans.len() * 400);
    // ExportTraceServiceRequest.resource_spans = 1
    message(&mut out, 1, |rs| {
        // ResourceSpans.resource = 1 { attributes = 1 }
        message(rs, 1, |resource| {
            string_attribute(resource, 1, "service.name", service_name);
        });
        // ResourceSpans.scope_spans = 2
        message(rs, 2, |ss| {
            // ScopeSpans.scope = 1 { name = 1; version = 2 }
            message(ss, 1, |scope| {
                bytes(scope, 1, b"edgegate");
                bytes(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for span in spans {
                // ScopeSpans.spans = 2
                message(ss, 2, |s| encode_span(s, span));
            }
        });
    });
    out
}

fn encode_span(out: &mut Vec<u8>, span: &SpanRecord) {
    let trace = &span.trace;
    bytes(out, 1, &trace.trace_id.to_be_bytes());
    bytes(out, 2, &trace.span_id.to_be_bytes());
    if trace.parent_id != 0 {
        bytes(out, 4, &trace.parent_id.to_be_bytes());
    }
    // Name: the method and the route name, or the method alone.
    let method = span.method.as_str();
    match &span.route {
        Some(route) => {
            tag(out, 5, WIRE_LEN);
            varint(out, (method.len() + 1 + route.len()) as u64);
            out.extend_from_slice(method.as_bytes());
            out.push(b' ');
            out.extend_from_slice(route.as_bytes());
        }
        None => bytes(out, 5, method.as_bytes()),
    }
    tag(out, 6, WIRE_VARINT);
    varint(out, KIND_SERVER);
    tag(out, 7, WIRE_FIXED64);
    out.extend_from_slice(&span.start_unix_nanos.to_le_bytes());
    tag(out, 8, WIRE_FIXED64);
    out.extend_from_slice(&span.end_unix_nanos.to_le_bytes());
    // Span.attributes = 9, by the OpenTelemetry HTTP semantic conventions.
    string_attribute(out, 9, "http.request.method", method);
    string_attribute(out, 9, "url.path", &span.path);
    if span.status != 0 {
        int_attribute(out, 9, "http.response.status_code", i64::from(span.status));
    }
    if let Some(route) = &span.route {
        string_attribute(out, 9, "http.route", route);
    }
    if !span.host.is_empty() {
        string_attribute(out, 9, "server.address", &span.host);
    }
    if let Some(client) = span.client {
        display_attribute(out, 9, "client.address", &client.ip());
        int_attribute(out, 9, "client.port", i64::from(client.port()));
    }
    string_attribute(out, 9, "edgegate.listener", &span.listener);
    if let Some(upstream) = &span.upstream {
        string_attribute(out, 9, "edgegate.upstream", upstream);
    }
    if let Some(endpoint) = span.endpoint {
        display_attribute(out, 9, "edgegate.endpoint", &endpoint);
    }
    if !span.request_id.is_empty() {
        string_attribute(out, 9, "edgegate.request_id", &span.request_id);
    }
    // Span.status = 15 { code = 3 }: ERROR for 5xx; otherwise left unset, as the HTTP
    // conventions ask of a server span.
    if span.status >= 500 {
        message(out, 15, |status| {
            tag(status, 3, WIRE_VARINT);
            varint(status, STATUS_ERROR);
        });
    }
    // Span.flags = 16: the W3C trace flags and whether the parent came from the client.
    let mut flags = u32::from(trace.flags) | FLAG_HAS_IS_REMOTE;
    if trace.parent_id != 0 {
        flags |= FLAG_IS_REMOTE;
    }
    tag(out, 16, WIRE_FIXED32);
    out.extend_from_slice(&flags.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::request_record::RequestRecord;
    use crate::telemetry::trace::TraceContext;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    fn request(status: u16, parent_id: u64) -> RequestRecord {
        RequestRecord {
            trace: TraceContext {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x1122334455667788,
                parent_id,
                flags: 1,
            },
            method: http::Method::GET,
            path: "/api/x".into(),
            status,
            route: Some("api".into()),
            host: "example.test".into(),
            client: Some("127.0.0.1:5000".parse().expect("address")),
            listener: "web".into(),
            upstream: Some("backend".into()),
            endpoint: Some("127.0.0.1:8080".parse().expect("address")),
            bytes_sent: 0,
            duration: std::time::Duration::from_millis(2),
            request_id: "r-1".into(),
            auth: None,
        }
    }

    fn span(request: RequestRecord) -> SpanRecord {
        SpanRecord {
            request: std::sync::Arc::new(request),
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_002_000_000,
        }
    }

    fn record(status: u16, parent_id: u64) -> SpanRecord {
        span(request(status, parent_id))
    }

    #[test]
    fn official_definitions_decode_what_is_sent() {
        let body = export_request("edge", &[record(200, 0x00f067aa0ba902b7), record(503, 0)]);
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("valid protobuf");
        let rs = &request.resource_spans[0];
        let resource = rs.resource.as_ref().expect("resource");
        assert_eq!(resource.attributes[0].key, "service.name");
        assert_eq!(
            resource.attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone()),
            Some(Value::StringValue("edge".into()))
        );
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        let span = &spans[0];
        assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&span.span_id), "1122334455667788");
        assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(span.name, "GET api");
        assert_eq!(span.kind, 2);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            2_000_000
        );
        assert_eq!(span.flags, 0x301);
        let attr = |name: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == name)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            attr("http.response.status_code"),
            Some(Value::IntValue(200))
        );
        assert_eq!(attr("http.route"), Some(Value::StringValue("api".into())));
        assert_eq!(attr("url.path"), Some(Value::StringValue("/api/x".into())));
        assert_eq!(
            attr("edgegate.endpoint"),
            Some(Value::StringValue("127.0.0.1:8080".into()))
        );
        assert_eq!(
            attr("client.address"),
            Some(Value::StringValue("127.0.0.1".into()))
        );
        assert!(span.status.as_ref().is_none_or(|s| s.code == 0));
        let failed = &spans[1];
        assert!(failed.parent_span_id.is_empty());
        assert_eq!(failed.status.as_ref().map(|s| s.code), Some(2));
    }

    #[test]
    fn varint_lengths() {
        for value in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(varint_len(value), out.len(), "{value}");
        }
    }

    #[test]
    fn long_values_decode() {
        let long = span(RequestRecord {
            path: "/".repeat(300),
            host: "h".repeat(20_000),
            ..request(200, 1)
        });
        let body = export_request("edge", &[long]);
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("valid protobuf");
        let decoded = &request.resource_spans[0].scope_spans[0].spans[0];
        let host = decoded
            .attributes
            .iter()
            .find(|a| a.key == "server.address")
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value);
        assert_eq!(host, Some(Value::StringValue("h".repeat(20_000))));
    }

    #[test]
    fn long_messages_get_multi_byte_lengths() {
        let mut many = Vec::new();
        for _ in 0..300 {
            many.push(record(200, 1));
        }
        let body = export_request("edge", &many);
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("valid protobuf");
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 300);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
