//! The access log: one JSON object per line, written by a background
//! task so a slow disk or pipe never stalls a request. When the writer falls behind,
//! lines are dropped and counted rather than queued without bound.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::model::AccessLogTarget;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_record::RequestRecord;
use prometheus::IntCounter;

/// Lines buffered between requests and the writer before new ones are dropped: several
/// gathering intervals' worth at a single worker's full rate.
const QUEUE: usize = 32 * 1024;

/// After the first line of a quiet spell, the writer lets lines gather this long before
/// writing them all (spec: a line within a second of its response). A writer that went
/// back to waiting on the queue after every line would be woken by every request: a
/// futex call and two context switches per line, on the CPU the workers need.
const GATHER: Duration = Duration::from_millis(100);

/// One request's line, as the request path hands it over: names are shared `Arc`s and
/// addresses and ids stay binary, so a request pays for three strings (host, path, request
/// id) and the writer formats the rest.
/// One finished request, shared with span export when both are on.
pub type AccessRecord = Arc<RequestRecord>;

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    listener: &'a str,
    client: &'a str,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    route: &'a str,
    upstream: &'a str,
    endpoint: &'a str,
    bytes_sent: u64,
    duration_ms: f64,
    request_id: &'a str,
    trace_id: &'a str,
    /// Only on a route with an authenticator.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<AuthField<'a>>,
}

#[derive(Serialize)]
struct AuthField<'a> {
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

/// An open access log: the queue into its writer task. It lives in the snapshot, so a
/// request logs to the log of the config it was served by, and a reload that changes the
/// target swaps it with everything else in one store.
pub struct AccessLog {
    pub target: AccessLogTarget,
    queue: mpsc::Sender<(SystemTime, AccessRecord)>,
    dropped: IntCounter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessLog({:?})", self.target)
    }
}

impl AccessLog {
    /// The log for `target`: `previous` itself when it already writes there, else a
    /// newly opened one (`None` when off). Must be called inside a tokio runtime.
    pub fn open(
        target: &AccessLogTarget,
        previous: Option<&Arc<AccessLog>>,
        metrics: &Metrics,
    ) -> std::io::Result<Option<Arc<AccessLog>>> {
        if let Some(current) = previous.filter(|p| p.target == *target) {
            return Ok(Some(current.clone()));
        }
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::task::spawn_blocking(move || drain(receiver, sink));
        Ok(Some(Arc::new(AccessLog {
            target: target.clone(),
            queue,
            dropped: metrics.access_log_dropped.clone(),
        })))
    }

    pub fn write(&self, record: AccessRecord) {
        if self.queue.try_send((SystemTime::now(), record)).is_err() {
            self.dropped.inc();
        }
    }
}

/// Writes lines until every sender is gone (the log was reconfigured or the process ends),
/// in gathered bursts ([`GATHER`]), flushing whenever the queue runs empty.
fn drain(mut receiver: mpsc::Receiver<(SystemTime, AccessRecord)>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(sink);
    // Reused for every line's formatted fields.
    let (mut client, mut endpoint, mut trace_id) = (String::new(), String::new(), String::new());
    let fill = |buf: &mut String, value: Option<&dyn std::fmt::Display>| {
        buf.clear();
        if let Some(value) = value {
            let _ = write!(buf, "{value}");
        }
    };
    while let Some((time, record)) = receiver.blocking_recv() {
        std::thread::sleep(GATHER);
        let mut next = Some((time, record));
        while let Some((time, record)) = next {
            let time = time::OffsetDateTime::from(time)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            fill(&mut client, record.client.as_ref().map(|a| a as _));
            fill(&mut endpoint, record.endpoint.as_ref().map(|a| a as _));
            trace_id.clear();
            let _ = write!(trace_id, "{:032x}", record.trace.trace_id);
            let line = Line {
                time,
                listener: &record.listener,
                client: &client,
                method: record.method.as_str(),
                host: &record.host,
                path: &record.path,
                status: record.status,
                route: record.route.as_deref().unwrap_or_default(),
                upstream: record.upstream.as_deref().unwrap_or_default(),
                endpoint: &endpoint,
                bytes_sent: record.bytes_sent,
                duration_ms: record.duration.as_secs_f64() * 1000.0,
                request_id: &record.request_id,
                trace_id: &trace_id,
                auth: record.auth.as_ref().map(|note| AuthField {
                    result: note.result.as_str(),
                    user: note.user.as_deref(),
                }),
            };
            if serde_json::to_writer(&mut out, &line).is_ok() {
                let _ = out.write_all(b"\n");
            }
            next = receiver.try_recv().ok();
        }
        let _ = out.flush();
    }
}
