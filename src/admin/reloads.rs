//! The outcome of the last config reload, kept for the status page.
//!
//! Logs say why a reload was refused, but an operator looking at the status page should
//! not need the logs to learn that the file on disk is not what runs. The publisher
//! records each reload attempt here; the admin side only reads it.

use std::sync::Mutex;
use std::time::SystemTime;

/// One reload attempt that read a changed config (an unchanged file is no attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub at: SystemTime,
    /// What started it: `file change`, `SIGHUP`, ...
    pub cause: String,
    /// `None` when it was applied; otherwise every problem, one per line, as logged.
    pub error: Option<String>,
}

impl ReloadOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// The last reload's outcome, shared by the publisher (writer) and the admin listener.
#[derive(Debug, Default)]
pub struct ReloadLog {
    last: Mutex<Option<ReloadOutcome>>,
}

impl ReloadLog {
    /// Records an attempt; `error` is `None` for a reload that was applied.
    pub fn record(&self, cause: &str, error: Option<String>) {
        let outcome = ReloadOutcome {
            at: SystemTime::now(),
            cause: cause.to_string(),
            error,
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }

    /// `None` until the first reload after start.
    pub fn last(&self) -> Option<ReloadOutcome> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_latest_attempt() {
        let log = ReloadLog::default();
        assert_eq!(log.last(), None);
        log.record("SIGHUP", Some("edgegate.toml:3:1: error: bad".into()));
        assert!(!log.last().expect("recorded").succeeded());
        log.record("file change", None);
        let last = log.last().expect("recorded");
        assert!(last.succeeded());
        assert_eq!(last.cause, "file change");
    }
}
