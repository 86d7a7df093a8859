//! OTLP span export: one SERVER span per request, sent in batches by a
//! background task so a collector that is down, slow or refusing never touches a request.
//!
//! The request path only fills a [`SpanRecord`] (ids are integers, names are shared
//! `Arc`s) and `try_send`s it into a bounded queue; when the queue is full the span is
//! dropped and counted. The exporter task batches, encodes (`proto`), and POSTs with a
//! small HTTP/1.1 client of its own over one kept-alive connection; a batch that cannot be
//! delivered is dropped and counted too. A batch is sent again on a fresh connection only
//! when the kept-alive one closed before the collector answered a byte (its idle close
//! racing our write), never after a timeout, which may follow a batch the collector took:
//! no span is stored twice, and one batch takes at most [`EXPORT_TIMEOUT`].
//!
//! The handle lives in the snapshot: a reload that keeps the same `[gateway.tracing]`
//! keeps the same queue; one that changes or removes it drops the old handle, and the old
//! exporter sends what it still holds and ends once the last request on the old snapshot
//! is done.

mod proto;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::model::Tracing;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_record::RequestRecord;

/// Spans waiting for the exporter before new ones are dropped: several flush intervals
/// worth at a single worker's full rate.
const QUEUE: usize = 32 * 1024;
/// Spans per export request: small enough that encoding one never holds the thread it
/// runs on for long (at 1,024, HTTP/1.1 p99 rose to 4.6 ms), large enough that the
/// requests stay few (a few hundred a second at a worker's full rate).
const BATCH: usize = 256;
/// After the first span of a quiet period, the exporter lets spans gather this long, then
/// sends everything queued (spec: spans arrive within 5 s). Sleeping instead of waiting
/// on the queue means a request's `try_send` never has a task to wake.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Connect, send and answer of one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest collector response read (OTLP answers are a few bytes of protobuf).
const MAX_RESPONSE: usize = 64 * 1024;

/// What a finished request leaves for its span; formatting waits for the exporter.
#[derive(Debug)]
pub struct SpanRecord {
    /// The request, shared with the access log when both are on.
    pub request: Arc<RequestRecord>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl std::ops::Deref for SpanRecord {
    type Target = RequestRecord;

    fn deref(&self) -> &RequestRecord {
        &self.request
    }
}

/// The request path's handle on span export: the settings it was built from and the
/// queue into the exporter.
pub struct TraceExport {
    pub settings: Tracing,
    queue: mpsc::Sender<SpanRecord>,
    /// Taken by [`start`] when the exporter task is spawned.
    receiver: Mutex<Option<mpsc::Receiver<SpanRecord>>>,
}

impl std::fmt::Debug for TraceExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceExport")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TraceExport {
    /// A queue with no exporter yet: pure, so compiling a snapshot stays free of tasks and
    /// sockets. Spans queue (up to the bound) until [`start`] runs the exporter.
    pub fn new(settings: Tracing) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Self {
            settings,
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    pub fn sample_ratio(&self) -> f64 {
        self.settings.sample_ratio
    }

    /// Hands a span to the exporter without waiting; `false` when it was dropped.
    pub fn submit(&self, span: SpanRecord) -> bool {
        self.queue.try_send(span).is_ok()
    }
}

/// The wall-clock time `elapsed` before now, in Unix nanoseconds, with now's.
pub fn span_times(elapsed: Duration) -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let start = now.saturating_sub(elapsed);
    (start.as_nanos() as u64, now.as_nanos() as u64)
}

/// Runs the exporter of a snapshot's tracing settings (its `trace_export`), unless it
/// already runs. Called wherever a snapshot is published; must be called inside a tokio
/// runtime.
pub fn start(export: Option<&TraceExport>, metrics: &Arc<Metrics>) {
    let Some(export) = export else {
        return;
    };
    let receiver = match export.receiver.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(receiver) = receiver {
        let exporter = Exporter {
            settings: export.settings.clone(),
            metrics: metrics.clone(),
            connection: None,
        };
        tracing::info!(endpoint = %export.settings.endpoint.url, sample_ratio = export.settings.sample_ratio, "exporting spans");
        tokio::spawn(exporter.run(receiver));
    }
}

struct Exporter {
    settings: Tracing,
    metrics: Arc<Metrics>,
    /// Kept alive between batches.
    connection: Option<TcpStream>,
}

#[derive(Debug)]
enum ExportError {
    Io(std::io::Error),
    /// The connection closed (or reset) before the collector answered a byte.
    Closed,
    Timeout,
    Status(u16),
    BadResponse,
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Io(e) => write!(f, "{e}"),
            ExportError::Closed => write!(f, "the collector closed the connection"),
            ExportError::Timeout => write!(f, "timed out"),
            ExportError::Status(s) => write!(f, "collector answered {s}"),
            ExportError::BadResponse => write!(f, "invalid response from the collector"),
        }
    }
}

impl Exporter {
    /// Sends batches until every sender is gone (tracing was reconfigured or removed and
    /// the last request on the old snapshot finished), then sends what is left and ends.
    async fn run(mut self, mut receiver: mpsc::Receiver<SpanRecord>) {
        let mut batch = Vec::with_capacity(BATCH);
        // Logged once per run of failures, not once per batch.
        let mut failing = false;
        let mut closed = false;
        while !closed {
            // The only wait on the queue itself: for the first span after a quiet spell.
            let Some(first) = receiver.recv().await else {
                break;
            };
            batch.push(first);
            tokio::time::sleep(FLUSH_INTERVAL).await;
            // Everything queued now goes out, a batch at a time.
            loop {
                while batch.len() < BATCH {
                    match receiver.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let full = batch.len() == BATCH;
                self.send(&mut batch, &mut failing).await;
                if !full {
                    break;
                }
            }
        }
        tracing::debug!(endpoint = %self.settings.endpoint.url, "span exporter stopped");
    }

    /// Exports `batch` and empties it, counting the spans as exported or dropped.
    async fn send(&mut self, batch: &mut Vec<SpanRecord>, failing: &mut bool) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        match self.export(batch).await {
            Ok(()) => {
                self.metrics.tracing_spans_exported.inc_by(count);
                if *failing {
                    tracing::info!(endpoint = %self.settings.endpoint.url, "span export recovered");
                    *failing = false;
                }
            }
            Err(e) => {
                self.metrics
                    .tracing_spans_dropped
                    .with_label_values(&["export_failed"])
                    .inc_by(count);
                if !*failing {
                    tracing::warn!(endpoint = %self.settings.endpoint.url, error = %e, spans = count, "span export failed; dropping spans until the collector answers");
                    *failing = true;
                }
            }
        }
        batch.clear();
    }

    async fn export(&mut self, batch: &[SpanRecord]) -> Result<(), ExportError> {
        let body = proto::export_request(&self.settings.service_name, batch);
        let mut request = Vec::with_capacity(body.len() + 256);
        let endpoint = &self.settings.endpoint;
        let host = if endpoint.host.contains(':') {
            format!("[{}]:{}", endpoint.host, endpoint.port)
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        use std::io::Write;
        let _ = write!(
            request,
            "POST {} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nuser-agent: edgegate/{}\r\n\r\n",
            endpoint.path,
            body.len(),
            env!("CARGO_PKG_VERSION"),
        );
        request.extend_from_slice(&body);
        // One deadline for the whole export, a fresh connection included.
        let deadline = tokio::time::Instant::now() + EXPORT_TIMEOUT;
        // A kept-alive connection the collector has closed meanwhile reads as ready
        // (EOF); such a one is not tried at all.
        if let Some(stream) = self.connection.take().filter(still_open) {
            match tokio::time::timeout_at(deadline, post(stream, &request)).await {
                Ok(Ok(keep)) => {
                    self.connection = keep;
                    return Ok(());
                }
                // Closed before it answered a byte (the collector's idle close racing
                // our write): the batch was not taken, so a fresh connection may send
                // it. Anything else (no answer in time, an error status) may have been
                // taken: sending it again could store every span twice.
                Ok(Err(ExportError::Closed)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ExportError::Timeout),
            }
        }
        let attempt = async {
            let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(ExportError::Io)?;
            let _ = stream.set_nodelay(true);
            post(stream, &request).await
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => Err(ExportError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(keep)) => {
                self.connection = keep;
                Ok(())
            }
        }
    }
}

/// Whether an idle kept-alive connection can still carry a request: nothing to read
/// (no EOF, no stray bytes) right now.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Sends one request and reads its answer; returns the connection when it may be reused.
/// [`ExportError::Closed`] when the connection failed before any answer byte arrived.
async fn post(mut stream: TcpStream, request: &[u8]) -> Result<Option<TcpStream>, ExportError> {
    if stream.write_all(request).await.is_err() {
        return Err(ExportError::Closed);
    }
    let mut buf = Vec::with_capacity(1024);
    match read_more(&mut stream, &mut buf).await {
        Ok(0) | Err(_) => return Err(ExportError::Closed),
        Ok(_) => {}
    }
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.unwrap_or(0);
                if (100..200).contains(&status) {
                    buf.drain(..head_len);
                    continue;
                }
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let close = response.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
                if !(200..300).contains(&status) {
                    return Err(ExportError::Status(status));
                }
                // Without a length the body runs to the close: the connection is spent.
                let Some(length) = length.filter(|n| *n <= MAX_RESPONSE) else {
                    return Ok(None);
                };
                while buf.len() < head_len + length {
                    if read_more(&mut stream, &mut buf).await? == 0 {
                        return Ok(None);
                    }
                }
                let reusable = !close && buf.len() == head_len + length;
                return Ok(reusable.then_some(stream));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => {
                if read_more(&mut stream, &mut buf).await? == 0 {
                    return Err(ExportError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
            _ => return Err(ExportError::BadResponse),
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, ExportError> {
    buf.reserve(4096);
    stream.read_buf(buf).await.map_err(ExportError::Io)
}
