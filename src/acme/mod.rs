//! Certificates from ACME (`[listeners.tls.acme]`): obtained at start, renewed when a
//! third of their lifetime is left, kept in `storage` so a restart serves them at once.
//!
//! One manager task per ACME block (keyed by its settings, so two listeners with the
//! same block share one certificate and one order). The TLS resolver reads the
//! certificate it publishes in an [`AcmeCertificate`]: a self-signed placeholder until
//! issuance, then the issued one, swapped for new handshakes without a reload. A failed
//! order is logged, counted and retried with backoff; the certificate being served stays
//! until a new one is issued.
//!
//! A reload that changes a block makes a new block: its manager starts (ordering for its
//! domains) when the config goes live, and the manager of a block no config names any
//! more is stopped, so a removed name is no longer renewed and two managers never take
//! turns rewriting one storage.

pub mod challenge;
mod order;
mod storage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::config::model::Acme;
use crate::telemetry::metrics::Metrics;

/// The certificate an ACME block serves now.
#[derive(Debug)]
pub struct AcmeCertificate {
    pub domains: Vec<String>,
    key: ArcSwap<CertifiedKey>,
    /// Not-after of the issued certificate; 0 while the placeholder is served.
    not_after: AtomicI64,
}

impl AcmeCertificate {
    pub fn key(&self) -> Arc<CertifiedKey> {
        self.key.load_full()
    }

    pub fn covers(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.domains.contains(&name)
    }

    /// `(first domain, not-after)` once a certificate was issued.
    pub fn expiry(&self) -> Option<(String, i64)> {
        let at = self.not_after.load(Ordering::Relaxed);
        (at > 0).then(|| (self.domains.first().cloned().unwrap_or_default(), at))
    }

    fn serve(&self, key: Arc<CertifiedKey>, not_after: i64) {
        self.key.store(key);
        self.not_after.store(not_after, Ordering::Relaxed);
    }
}

struct Entry {
    certificate: Arc<AcmeCertificate>,
    /// The manager, once the block went live.
    manager: Option<tokio::task::AbortHandle>,
}

fn registry() -> &'static Mutex<HashMap<Acme, Entry>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Acme, Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The certificate for an ACME block: what is in storage if it covers the domains, else
/// a placeholder. Never blocks on the network.
pub fn certificate_for(settings: &Acme) -> Result<Arc<AcmeCertificate>, String> {
    let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = registry.get(settings) {
        return Ok(entry.certificate.clone());
    }
    let stored = storage::Storage::new(settings)
        .load_certificate(&settings.domains)
        .filter(|stored| stored.not_after > now());
    let (key, not_after) = match stored {
        Some(stored) => (stored.certificate.key, stored.not_after),
        // A block changed by a reload (a name added): until its order completes, the
        // names it shares with a block already issued keep that block's certificate
        // rather than falling back to a placeholder.
        None => match issued_for_some_of(&registry, &settings.domains) {
            Some(key) => (key, 0),
            None => (challenge::self_signed(&settings.domains, None)?, 0),
        },
    };
    let certificate = Arc::new(AcmeCertificate {
        domains: settings.domains.clone(),
        key: ArcSwap::new(key),
        not_after: AtomicI64::new(not_after),
    });
    registry.insert(
        settings.clone(),
        Entry {
            certificate: certificate.clone(),
            manager: None,
        },
    );
    Ok(certificate)
}

fn issued_for_some_of(
    registry: &HashMap<Acme, Entry>,
    domains: &[String],
) -> Option<Arc<CertifiedKey>> {
    registry
        .values()
        .map(|entry| &entry.certificate)
        .find(|c| {
            c.not_after.load(Ordering::Relaxed) > now()
                && c.domains.iter().any(|d| domains.contains(d))
        })
        .map(|c| c.key())
}

/// Makes the running managers exactly those of the ACME blocks of `listeners` (the
/// config that just went live): new blocks start ordering, blocks no longer named stop.
/// Needs a Tokio runtime.
pub fn apply(listeners: &[crate::config::model::Listener], metrics: &Arc<Metrics>) {
    let blocks: Vec<(&Acme, &str)> = listeners
        .iter()
        .filter_map(|l| Some((l.tls.as_ref()?.acme.as_ref()?, &*l.name)))
        .collect();
    for (settings, listener) in &blocks {
        ensure_running(settings, listener, metrics);
    }
    let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    registry.retain(|settings, entry| {
        if blocks.iter().any(|(s, _)| *s == settings) {
            return true;
        }
        if let Some(manager) = entry.manager.take() {
            // An order in flight is abandoned: its lock and challenges are released as
            // the task is dropped.
            manager.abort();
            tracing::info!(domains = ?settings.domains, directory = %settings.directory, "ACME block no longer in the config: its certificate is no longer ordered or renewed");
        }
        false
    });
}

/// Starts the manager of an ACME block unless it runs already. Needs a Tokio runtime.
fn ensure_running(settings: &Acme, listener: &str, metrics: &Arc<Metrics>) {
    let certificate = match certificate_for(settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(listener, error = %e, "cannot make an ACME placeholder certificate");
            return;
        }
    };
    let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = registry.get_mut(settings) {
        if entry.manager.is_none() {
            let task = tokio::spawn(manage(
                settings.clone(),
                listener.to_string(),
                certificate,
                metrics.clone(),
            ));
            entry.manager = Some(task.abort_handle());
        }
    }
}

/// When a certificate valid from `not_before` to `not_after` is renewed: with a third of
/// its lifetime left.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before) / 3
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

async fn manage(
    settings: Acme,
    listener: String,
    certificate: Arc<AcmeCertificate>,
    metrics: Arc<Metrics>,
) {
    let storage = storage::Storage::new(&settings);
    let challenges = challenge::challenges().clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(stored) = storage.load_certificate(&settings.domains) {
            if stored.not_after > now() {
                certificate.serve(stored.certificate.key.clone(), stored.not_after);
                metrics
                    .certificate_expiry
                    .with_label_values(&[&listener, &settings.domains[0]])
                    .set(stored.not_after);
            }
            let renew = renew_at(stored.not_before, stored.not_after);
            if renew > now() {
                tracing::info!(listener = %listener, domains = ?settings.domains, not_after = stored.not_after, renew_at = renew, "ACME certificate in use");
                tokio::time::sleep(Duration::from_secs((renew - now()).max(1) as u64)).await;
                continue;
            }
        }
        let lock = match storage.lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                // Another replica is ordering into the same storage: use what it stores.
                tracing::info!(listener = %listener, "another process holds the ACME order lock; waiting for its certificate");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(listener = %listener, error = %e, "cannot use the ACME storage");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tracing::info!(listener = %listener, domains = ?settings.domains, directory = %settings.directory, "ordering a certificate");
        let result = order::order(&settings, &storage, &challenges).await;
        drop(lock);
        match result {
            Ok(()) => {
                metrics.acme_orders.with_label_values(&["success"]).inc();
                tracing::info!(listener = %listener, domains = ?settings.domains, "certificate issued");
                backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                metrics.acme_orders.with_label_values(&["failure"]).inc();
                tracing::warn!(listener = %listener, error = %e, retry_in = ?backoff, "ACME order failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::renew_at;

    #[test]
    fn renewal_starts_with_a_third_left() {
        assert_eq!(renew_at(0, 90), 60);
        assert_eq!(renew_at(1_000, 1_300), 1_200);
    }
}
