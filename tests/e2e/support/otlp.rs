//! A real OTLP/HTTP trace receiver on loopback: accepts `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, decodes it with the official OpenTelemetry definitions
//! (`opentelemetry-proto`), and keeps every span for the tests to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// One received span with the resource it came with.
#[derive(Debug, Clone)]
pub struct Received {
    pub service_name: String,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    pub fn attribute(&self, key: &str) -> Option<Value> {
        self.span
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    }

    pub fn string(&self, key: &str) -> Option<String> {
        match self.attribute(key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key) {
            Some(Value::IntValue(i)) => Some(i),
            _ => None,
        }
    }

    /// `Status.code`: 0 unset, 1 ok, 2 error.
    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<Received>>,
    requests: Mutex<Vec<String>>,
    /// How long each answer waits after the spans are stored.
    delay: Mutex<Duration>,
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so stopping the receiver closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver { addr, state, task }
    }

    /// The `otlp_endpoint` value that reaches this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Closes the listener and every open connection: the collector is down.
    pub async fn stop(&self) {
        self.task.abort();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "receiver still accepting");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn spans(&self) -> Vec<Received> {
        self.state.spans.lock().expect("spans").clone()
    }

    /// From now on every export is stored at once but answered `delay` later: a
    /// collector that takes the batch and then stalls.
    pub fn set_answer_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("delay") = delay;
    }

    /// `method path content-type` of every export request.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().expect("requests").clone()
    }

    /// Waits (at most `within`) for a span of `trace_id` and returns it.
    pub async fn span_of_trace(&self, trace_id: &str, within: Duration) -> Received {
        let deadline = Instant::now() + within;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| s.trace_id() == trace_id) {
                return span;
            }
            assert!(
                Instant::now() < deadline,
                "no span of trace {trace_id} within {within:?}; have {:?}",
                self.spans()
                    .iter()
                    .map(Received::trace_id)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    state.requests.lock().expect("requests").push(format!(
        "{} {} {content_type}",
        req.method(),
        req.uri().path()
    ));
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(status(400)),
    };
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return Ok(status(400));
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .map(|v| match v {
                Value::StringValue(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service_name: service_name.clone(),
                    span,
                });
            }
        }
    }
    state.spans.lock().expect("spans").extend(received);
    let delay = *state.delay.lock().expect("delay");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .expect("response"))
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .expect("response")
}
