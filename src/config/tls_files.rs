//! TLS files are part of the config: a certificate, key or CA that cannot be read or
//! parsed is an error at the place in the config that names it, refusing the load or
//! reload like any other mistake. They are read once here, while loading; later stages
//! (acceptors, upstream pools, `check`) work from these bytes and never touch the disk,
//! and a reload compares them by content, so a rewritten file is a change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// One file a config names, with the bytes read when the config was loaded.
#[derive(Clone)]
pub struct TlsFile {
    pub path: PathBuf,
    pub pem: Arc<[u8]>,
}

impl TlsFile {
    pub fn read(path: PathBuf) -> std::io::Result<Self> {
        let pem = std::fs::read(&path)?;
        Ok(Self {
            path,
            pem: pem.into(),
        })
    }

    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

impl PartialEq for TlsFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.pem == other.pem
    }
}

impl std::fmt::Debug for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.path.display(), self.pem.len())
    }
}

impl AsRef<Path> for TlsFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// One certificate chain with its key, checked to belong together, and the names it
/// answers for.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// Lowercased SAN DNS names (wildcards kept as `*.example.com`), or the subject CN.
    pub names: Vec<String>,
    /// Unix time of `notAfter`.
    pub not_after: i64,
}

/// Every certificate in a PEM file; none is an error (an empty or garbage file must
/// never quietly mean "no trust" or "trust the system").
pub fn certificates(file: &TlsFile) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&file.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", file.display()));
    }
    Ok(certs)
}

/// A CA bundle: every certificate must also be a usable trust anchor.
pub fn trust_anchors(file: &TlsFile) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(file)? {
        roots
            .add(cert)
            .map_err(|e| format!("invalid CA certificate in {}: {e}", file.display()))?;
    }
    Ok(roots)
}

/// Parses and checks a certificate chain and its key.
pub fn certificate(cert: &TlsFile, key: &TlsFile) -> Result<LoadedCertificate, String> {
    let chain = certificates(cert)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key.pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("no private key found in {}", key.display())
        }
        e => format!("invalid key PEM {}: {e}", key.display()),
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .map_err(|e| format!("unsupported private key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(format!(
                "key {} does not match certificate {}",
                key.display(),
                cert.display()
            ))
        }
        // Key types whose public half rustls cannot extract are checked by the handshake.
        Err(_) => {}
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map_err(|e| format!("cannot parse certificate {}: {e}", cert.display()))?;
    let mut names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        names,
        not_after: parsed.validity().not_after.timestamp(),
    })
}
