//! The access log: one JSON object per line, written by a background
//! task so a slow disk or pipe never stalls a request. When the writer falls behind,
//! lines are dropped and counted rather than queued without bound.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// futex call and two context switches per line, on the CPU the workers need. Short
/// enough that one burst of formatting (a few hundred lines at a worker's full rate)
/// never holds a worker off its CPU for long: at 100 ms, HTTP/1.1 p99 rose to 5 ms.
const GATHER: Duration = Duration::from_millis(10);

/// Bytes of lines per `write(2)`: a whole gathered burst (a few hundred lines at a
/// worker's full rate) in one call. Each call into a journaling file system costs some
/// microseconds whatever its size (the inode's times are updated through the journal);
/// with the standard 8 KiB buffer a file log cost more system time than formatting.
const WRITE_BUFFER: usize = 256 * 1024;

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
    /// Lines, and `None` to wake the writer for a [`Self::reopen`].
    queue: mpsc::Sender<Option<(SystemTime, AccessRecord)>>,
    /// Set by [`Self::reopen`], taken by the writer before its next write.
    reopen: Arc<AtomicBool>,
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
        if *target == AccessLogTarget::Off {
            return Ok(None);
        }
        let sink = open_sink(target)?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            target: target.clone(),
            reopen: reopen.clone(),
        };
        tokio::task::spawn_blocking(move || writer.drain(receiver, sink));
        Ok(Some(Arc::new(AccessLog {
            target: target.clone(),
            queue,
            reopen,
            dropped: metrics.access_log_dropped.clone(),
        })))
    }

    pub fn write(&self, record: AccessRecord) {
        if self
            .queue
            .try_send(Some((SystemTime::now(), record)))
            .is_err()
        {
            self.dropped.inc();
        }
    }

    /// Opens the file again by its path (logrotate moved the old one away): lines from
    /// now on go to the new file, created if need be, and nothing queued is lost.
    pub fn reopen(&self) {
        if !matches!(self.target, AccessLogTarget::File(_)) {
            return;
        }
        self.reopen.store(true, Ordering::Release);
        // Wakes an idle writer so the file appears now; with the queue full, the writer
        // is busy and sees the flag before its next write anyway.
        let _ = self.queue.try_send(None);
    }
}

fn open_sink(target: &AccessLogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Off | AccessLogTarget::Stderr => Box::new(std::io::stderr()),
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    })
}

/// The writer thread's side of one open log.
struct Writer {
    target: AccessLogTarget,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Flushes what went to the old file and opens the path again; a failure keeps
    /// writing to the old one (logged, never lost).
    fn reopen_if_asked(&self, out: &mut std::io::BufWriter<Box<dyn Write + Send>>) {
        if !self.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        let _ = out.flush();
        match open_sink(&self.target) {
            Ok(sink) => *out = std::io::BufWriter::with_capacity(WRITE_BUFFER, sink),
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the access log; writing to the open file")
            }
        }
    }

    /// Writes lines until every sender is gone (the log was reconfigured or the process ends),
    /// in gathered bursts ([`GATHER`]), flushing whenever the queue runs empty.
    fn drain(
        self,
        mut receiver: mpsc::Receiver<Option<(SystemTime, AccessRecord)>>,
        sink: Box<dyn Write + Send>,
    ) {
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, sink);
        let mut clock = SecondClock::default();
        // Reused for every line's formatted fields.
        let (mut client, mut endpoint, mut trace_id) =
            (String::new(), String::new(), String::new());
        let fill = |buf: &mut String, value: Option<&dyn std::fmt::Display>| {
            buf.clear();
            if let Some(value) = value {
                let _ = write!(buf, "{value}");
            }
        };
        while let Some(first) = receiver.blocking_recv() {
            self.reopen_if_asked(&mut out);
            let Some(first) = first else {
                continue;
            };
            std::thread::sleep(GATHER);
            self.reopen_if_asked(&mut out);
            let mut next = Some(Some(first));
            while let Some(entry) = next {
                let Some((time, record)) = entry else {
                    self.reopen_if_asked(&mut out);
                    next = receiver.try_recv().ok();
                    continue;
                };
                let time = clock.format(time);
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
}

/// RFC 3339 UTC timestamps with the date and time of day formatted once per second: a
/// busy log writes thousands of lines a second, and formatting a calendar date is most
/// of a line's cost.
#[derive(Default)]
struct SecondClock {
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: String,
}

impl SecondClock {
    fn format(&mut self, at: SystemTime) -> String {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if self.prefix.is_empty() || since.as_secs() != self.second {
            self.second = since.as_secs();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(self.second);
            let formatted = time::OffsetDateTime::from(whole)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            // Whole seconds format as `...:SSZ`.
            self.prefix = formatted.trim_end_matches('Z').to_string();
        }
        let mut line = String::with_capacity(self.prefix.len() + 11);
        line.push_str(&self.prefix);
        let _ = write!(line, ".{:06}Z", since.subsec_micros());
        line
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn timestamps_match_a_full_format_to_the_microsecond() {
        let mut clock = SecondClock::default();
        for offset_micros in [0u64, 1, 999_999, 1_000_000, 86_400_000_123] {
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_micros(1_765_000_000_000_000 + offset_micros);
            let full = time::OffsetDateTime::from(at)
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format");
            let ours = clock.format(at);
            let parsed =
                time::OffsetDateTime::parse(&ours, &time::format_description::well_known::Rfc3339)
                    .expect("ours parses as RFC 3339");
            let reference =
                time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
                    .expect("reference parses");
            assert_eq!(parsed, reference, "{ours} vs {full}");
        }
    }
}
