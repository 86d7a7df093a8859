//! What the publisher did that the running snapshot does not show, kept for the status
//! page: the last reload's outcome, and the certificates the cluster's Secrets provide.
//!
//! Logs say why a reload was refused, but an operator looking at the status page should
//! not need the logs to learn that the file on disk is not what runs. Certificates from
//! Secrets live inside the TLS acceptors, where nothing can list them. The publisher
//! records both here; the admin side only reads them.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::control::sources::cluster_routes::translate::ClusterRoutes;

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

/// Shared by the publisher (writer) and the admin listener (reader).
#[derive(Debug, Default)]
pub struct PublishLog {
    last: Mutex<Option<ReloadOutcome>>,
    /// The cluster's routes as last applied, for their certificates.
    cluster: Mutex<Arc<ClusterRoutes>>,
}

impl PublishLog {
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

    /// Records the cluster's routes (and so its certificates) just applied.
    pub fn cluster_applied(&self, cluster: Arc<ClusterRoutes>) {
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = cluster;
    }

    /// The cluster's routes as last applied; empty without `[kubernetes]`.
    pub fn cluster(&self) -> Arc<ClusterRoutes> {
        self.cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_latest_attempt() {
        let log = PublishLog::default();
        assert_eq!(log.last(), None);
        log.record("SIGHUP", Some("edgegate.toml:3:1: error: bad".into()));
        assert!(!log.last().expect("recorded").succeeded());
        log.record("file change", None);
        let last = log.last().expect("recorded");
        assert!(last.succeeded());
        assert_eq!(last.cause, "file change");
    }
}
