//! The gateway binary as a benchmark runs it, and what `/proc` says about it: shared by
//! the benchmarks that measure a running gateway against the API server double.

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgegate");

/// A running gateway; killed when dropped.
pub struct GatewayProcess {
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the gateway said it listens, read from its JSON log until "edgegate ready".
pub struct Addresses {
    pub web: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl GatewayProcess {
    /// Starts the gateway on `config` with discovery pointed at `kubeconfig`.
    pub fn spawn(
        config: &str,
        kubeconfig: &Path,
        rust_log: &str,
    ) -> (Self, Lines<BufReader<ChildStderr>>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgegate.toml");
        std::fs::write(&path, config).expect("write");
        let mut child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(&path)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", rust_log)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgegate");
        let stderr = child.stderr.take().expect("stderr");
        (Self { child, _dir: dir }, BufReader::new(stderr).lines())
    }

    /// Reads the log up to "edgegate ready", noting the listening addresses, then keeps
    /// draining it so the gateway never blocks on a full pipe.
    pub fn addresses(mut log: Lines<BufReader<ChildStderr>>) -> Addresses {
        let mut found = Addresses {
            web: None,
            admin: None,
        };
        let field = |line: &str| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            v["address"].as_str()?.parse::<SocketAddr>().ok()
        };
        for line in log.by_ref() {
            let line = line.expect("line");
            if line.contains("\"listening\"") {
                found.web = field(&line);
            } else if line.contains("\"admin listening\"") {
                found.admin = field(&line);
            } else if line.contains("edgegate ready") {
                break;
            }
        }
        drain(log);
        found
    }
}

/// Keeps reading the log in the background so the gateway never blocks on a full pipe.
pub fn drain(log: Lines<BufReader<ChildStderr>>) {
    std::thread::spawn(move || for _ in log {});
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// User plus system CPU seconds of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
