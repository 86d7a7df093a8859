//! The access log (spec section 7a): one JSON object per line, written by a background
//! task so a slow disk or pipe never stalls a request. When the writer falls behind,
//! lines are dropped and counted rather than queued without bound.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::model::{AccessLogTarget, Name};
use crate::metrics::Metrics;
use prometheus::IntCounter;

/// Lines buffered between requests and the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

pub struct AccessRecord {
    pub listener: Name,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub route: String,
    pub upstream: String,
    pub endpoint: String,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub request_id: String,
    pub trace_id: String,
}

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
/// flushing whenever the queue runs empty so a line appears well within a second.
fn drain(mut receiver: mpsc::Receiver<(SystemTime, AccessRecord)>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(sink);
    while let Some((time, record)) = receiver.blocking_recv() {
        let mut next = Some((time, record));
        while let Some((time, record)) = next {
            let time = time::OffsetDateTime::from(time)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let line = Line {
                time,
                listener: &record.listener,
                client: &record.client,
                method: &record.method,
                host: &record.host,
                path: &record.path,
                status: record.status,
                route: &record.route,
                upstream: &record.upstream,
                endpoint: &record.endpoint,
                bytes_sent: record.bytes_sent,
                duration_ms: record.duration.as_secs_f64() * 1000.0,
                request_id: &record.request_id,
                trace_id: &record.trace_id,
            };
            if serde_json::to_writer(&mut out, &line).is_ok() {
                let _ = out.write_all(b"\n");
            }
            next = receiver.try_recv().ok();
        }
        let _ = out.flush();
    }
}
