//! Runs the real `edgegate` binary with a config written to a temporary directory.
//! Listeners use port 0; the addresses actually bound are read from the gateway's JSON
//! log lines, so tests never guess ports and never sleep waiting for readiness.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_edgegate");

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

pub struct Gateway {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log: Arc<(Mutex<Log>, Condvar)>,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
}

impl Gateway {
    /// Starts the gateway on `config` (TOML). `admin` and listener addresses in it should
    /// use port 0.
    pub fn start(config: &str) -> Gateway {
        Self::start_with(config, |_| {})
    }

    /// Like [`Self::start`], with a hook to add files (certificates, …) to the config
    /// directory before the gateway starts.
    pub fn start_with(config: &str, prepare: impl FnOnce(&Path)) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path());
        let config_path = dir.path().join("edgegate.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn(dir, config_path, &[])
    }

    pub fn spawn(dir: tempfile::TempDir, config_path: PathBuf, env: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(BIN);
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn edgegate");
        let stderr = child.stderr.take().expect("stderr");
        let log: Arc<(Mutex<Log>, Condvar)> = Arc::default();
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("EDGEGATE_TEST_LOG").is_some() {
                    eprintln!("[gateway] {line}");
                }
                let (lock, cvar) = &*writer;
                lock.lock().expect("log").lines.push(line);
                cvar.notify_all();
            }
            let (lock, cvar) = &*writer;
            lock.lock().expect("log").closed = true;
            cvar.notify_all();
        });
        let mut gateway = Gateway {
            child,
            dir,
            config_path,
            log,
            listeners: HashMap::new(),
            admin: "127.0.0.1:0".parse().expect("addr"),
        };
        gateway.wait_for_log("edgegate ready", Duration::from_secs(30));
        gateway.refresh_addresses();
        gateway
    }

    /// Re-reads bound addresses from the log (after a reload adds or moves listeners).
    pub fn refresh_addresses(&mut self) {
        for line in self.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = v["message"].as_str().unwrap_or_default();
            let address = v["address"].as_str().and_then(|a| a.parse().ok());
            match (message, address) {
                ("listening", Some(addr)) => {
                    let name = v["listener"].as_str().unwrap_or_default().to_string();
                    self.listeners.insert(name, addr);
                }
                ("admin listening", Some(addr)) => self.admin = addr,
                _ => {}
            }
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.listeners))
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(listener), path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().expect("log").lines.clone()
    }

    /// Waits until a log line contains `needle`; panics with the log on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_after(needle, 0, timeout)
    }

    /// Like [`Self::wait_for_log`], ignoring the first `skip` lines.
    pub fn wait_for_log_after(&self, needle: &str, skip: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.log;
        let mut log = lock.lock().expect("log");
        loop {
            if let Some(line) = log.lines.iter().skip(skip).find(|l| l.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline || log.closed {
                panic!(
                    "no log line containing {needle:?} (closed: {}); log:\n{}",
                    log.closed,
                    log.lines.join("\n")
                );
            }
            log = cvar.wait_timeout(log, deadline - now).expect("log").0;
        }
    }

    pub fn log_len(&self) -> usize {
        self.log.0.lock().expect("log").lines.len()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status of an admin endpoint (`/healthz`, `/readyz`, ...).
    pub async fn admin_status(&self, path: &str) -> u16 {
        super::client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .status()
            .as_u16()
    }

    /// The admin `/config` document.
    pub async fn config_json(&self) -> serde_json::Value {
        super::client()
            .get(self.admin_url("/config"))
            .send()
            .await
            .expect("GET /config")
            .json()
            .await
            .expect("/config is JSON")
    }

    /// Waits until `/readyz` answers 200 (discovery synced, listeners bound).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = super::client().get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The whole `/metrics` exposition; `None` when the admin listener does not answer.
    async fn try_metrics_text(&self) -> Option<String> {
        let response = super::client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }

    /// The whole `/metrics` exposition.
    pub async fn metrics_text(&self) -> String {
        self.try_metrics_text().await.expect("GET /metrics")
    }

    /// Fetches a metric sample's value from `/metrics`, e.g.
    /// `edgegate_config_reloads_total{result="failure"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.try_metrics_text().await?, sample)
    }

    /// Replaces the config file in place and waits until the gateway has applied it
    /// (generation `expected`) or refused it.
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }
}

/// Finds `sample` (name with its labels exactly as rendered, labels sorted) in a
/// Prometheus text body.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
