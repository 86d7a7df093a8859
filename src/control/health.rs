//! Active health checks. One task per upstream with a `health_check`; it reads the
//! current snapshot each round, so members added by a reload or by discovery are checked
//! without restarting it, and it ends itself when its upstream or check changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::config::model::{HealthCheck, Name};

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;

pub struct HealthChecks {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<Name, (HealthCheck, JoinHandle<()>)>>,
}

impl HealthChecks {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        Self {
            snapshot,
            metrics,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts checks for upstreams that gained one and stops those that lost or changed it.
    pub fn reconcile(&self, snapshot: &Snapshot) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashMap<Name, HealthCheck> = snapshot
            .config
            .upstreams
            .iter()
            .filter_map(|u| Some((u.name.clone(), u.health_check.clone()?)))
            .collect();
        running.retain(|name, (check, task)| {
            let keep = wanted.get(name) == Some(check);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, check) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(run_checks(
                self.snapshot.clone(),
                self.metrics.clone(),
                name.clone(),
                check.clone(),
            ));
            running.insert(name, (check, task));
        }
    }
}

async fn run_checks(
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    upstream: Name,
    check: HealthCheck,
) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let current = snapshot.load_full();
        let Some(pool) = current.pools.get(&upstream).cloned() else {
            return;
        };
        // A pool behind tcp routes speaks whatever its members speak (a database, TLS to
        // its own certificate): a completed TCP connect is the check.
        let connect_only = current
            .config
            .tcp_routes
            .iter()
            .any(|r| r.upstream == upstream);
        let host = pool.upstream.tls.as_ref().and_then(|t| t.sni.clone());
        let tls = pool.upstream.tls.as_ref().map(|_| tls_connector(&pool));
        let probes = pool.members.iter().map(|member| {
            let address = member.endpoint.address;
            let host = host.clone();
            let path = check.path.clone();
            let tls = tls.clone();
            async move {
                let check_once = async {
                    if connect_only {
                        TcpStream::connect(address)
                            .await
                            .map(drop)
                            .map_err(|e| format!("connect: {e}"))
                    } else {
                        probe(address, host, &path, tls).await
                    }
                };
                let passed = tokio::time::timeout(check.timeout, check_once)
                    .await
                    .unwrap_or(Err("timed out".to_string()));
                (address, passed)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        for (member, (address, result)) in pool.members.iter().zip(results) {
            let passed = result.is_ok();
            metrics
                .health_checks
                .with_label_values(&[&*upstream, if passed { "pass" } else { "fail" }])
                .inc();
            if let Some(healthy) = member.state.record_check(
                passed,
                check.healthy_threshold,
                check.unhealthy_threshold,
            ) {
                if healthy {
                    tracing::info!(upstream = %upstream, endpoint = %address, "endpoint healthy again");
                } else {
                    tracing::warn!(
                        upstream = %upstream,
                        endpoint = %address,
                        reason = %result.err().unwrap_or_default(),
                        "endpoint unhealthy, taken out of rotation"
                    );
                }
            }
        }
    }
}

/// Checks of a TLS upstream speak TLS with the same trust as its requests: the `ca`
/// (else the system roots), or no verification when `verify = false` was written.
fn tls_connector(pool: &crate::snapshot::pool::Pool) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions");
    let verify = pool.upstream.tls.as_ref().is_none_or(|t| t.verify);
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match &pool.tls_ca {
            Some(ca) => {
                for cert in ca.iter() {
                    let _ = roots.add(rustls::pki_types::CertificateDer::from(
                        cert.borrow_raw_cert().as_slice().to_owned(),
                    ));
                }
            }
            None => roots.roots.extend(system_roots().roots.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                crate::snapshot::tls::AcceptAnyCertificate::new(),
            ))
            .with_no_client_auth()
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The system's trust store, read from disk once per process rather than at every
/// check round.
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in pingora::tls::load_native_certs().unwrap_or_default() {
            let _ = roots.add(cert);
        }
        roots
    })
}

/// One HTTP/1.1 GET; a 2xx or 3xx status passes.
async fn probe(
    address: SocketAddr,
    host: Option<String>,
    path: &str,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<(), String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let sni = host.clone().unwrap_or_else(|| address.ip().to_string());
    let mut stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(sni)
                .map_err(|e| format!("invalid TLS name: {e}"))?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?,
            )
        }
    };
    let host = host.unwrap_or_else(|| address.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgegate-health-check/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".to_string());
        }
        read += n;
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "malformed status line".to_string())?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
