//! What ACME keeps on disk: the account's credentials and the certificate with its key,
//! every file mode 0600, and a lock file so replicas sharing the directory (a volume) do
//! not order the same certificate at once.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::model::Acme;
use crate::config::tls_files::{self, LoadedCertificate, TlsFile};

/// A lock older than this belongs to a replica that died mid-order.
const STALE_LOCK: Duration = Duration::from_secs(10 * 60);

pub struct Storage {
    dir: PathBuf,
    /// The first domain names the files.
    stem: String,
}

/// A stored certificate with its validity.
pub struct Stored {
    pub certificate: LoadedCertificate,
    pub not_before: i64,
    pub not_after: i64,
}

impl Storage {
    pub fn new(settings: &Acme) -> Self {
        Self {
            dir: settings.storage.clone(),
            stem: settings.domains.first().cloned().unwrap_or_default(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn account_path(&self) -> PathBuf {
        self.path("account.json")
    }

    fn cert_path(&self) -> PathBuf {
        self.path(&format!("{}.crt.pem", self.stem))
    }

    fn key_path(&self) -> PathBuf {
        self.path(&format!("{}.key.pem", self.stem))
    }

    /// Writes a file readable by its owner only, atomically (a rename), so a reader never
    /// sees half a key.
    pub fn write_private(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    pub fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> std::io::Result<()> {
        // Key first: a certificate is only ever read next to its own key.
        self.write_private(&self.key_path(), key_pem.as_bytes())?;
        self.write_private(&self.cert_path(), chain_pem.as_bytes())
    }

    /// The stored certificate, when there is one that covers every domain.
    pub fn load_certificate(&self, domains: &[String]) -> Option<Stored> {
        let cert = TlsFile::read(self.cert_path()).ok()?;
        let key = TlsFile::read(self.key_path()).ok()?;
        let certificate = match tls_files::certificate(&cert, &key) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "stored ACME certificate unusable; ordering a new one");
                return None;
            }
        };
        if !domains.iter().all(|d| certificate.names.contains(d)) {
            return None;
        }
        let leaf = certificate.key.cert.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let validity = parsed.validity();
        Some(Stored {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            certificate,
        })
    }

    /// Takes the directory's order lock; `None` while another process holds a fresh one.
    pub fn lock(&self) -> std::io::Result<Option<OrderLock>> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&format!("{}.lock", self.stem));
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(Some(OrderLock(path)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|a| a > STALE_LOCK) {
                        tracing::warn!(lock = %path.display(), "removing a stale ACME order lock");
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Held while ordering; removed when dropped.
pub struct OrderLock(PathBuf);

impl Drop for OrderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
