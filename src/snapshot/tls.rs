//! TLS termination with rustls: certificates chosen by SNI, minimum version, ALPN and
//! client certificates. The one place that touches pingora's TLS types.
//!
//! Every reload builds fresh acceptors from the files the config loaded; they are part of
//! the snapshot, so new handshakes get the new certificates while established connections
//! keep the ones they negotiated.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::model::{ListenerTls, TlsVersion};
use crate::config::tls_files;

pub type TlsAcceptor = pingora::listeners::tls::Acceptor;

pub use crate::config::tls_files::LoadedCertificate;

/// Picks the certificate for a handshake by SNI: an exact name, then the longest
/// wildcard, then the listener's first certificate.
#[derive(Debug)]
pub struct SniResolver {
    certificates: Vec<LoadedCertificate>,
    /// Certificates from cluster Secrets for this listener, after the
    /// file's by name. A renewed Secret builds a new acceptor into the next snapshot.
    cluster: Vec<LoadedCertificate>,
    /// The listener's ACME certificate: served for its domains (and as the default when
    /// the listener has no file certificate); its challenges answered for `acme-tls/1`.
    acme: Option<Arc<crate::acme::AcmeCertificate>>,
}

impl SniResolver {
    pub fn new(certificates: Vec<LoadedCertificate>) -> Self {
        Self::with_cluster(certificates, Vec::new())
    }

    pub fn with_cluster(
        certificates: Vec<LoadedCertificate>,
        cluster: Vec<LoadedCertificate>,
    ) -> Self {
        Self {
            certificates,
            cluster,
            acme: None,
        }
    }

    pub fn choose(&self, server_name: Option<&str>) -> Option<&LoadedCertificate> {
        by_name(&self.certificates, server_name).or_else(|| self.certificates.first())
    }
}

/// An exact name, then the longest wildcard.
fn by_name<'a>(
    certificates: &'a [LoadedCertificate],
    server_name: Option<&str>,
) -> Option<&'a LoadedCertificate> {
    {
        server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            certificates
                .iter()
                .find(|c| c.names.contains(&name))
                .or_else(|| {
                    certificates
                        .iter()
                        .filter_map(|c| {
                            c.names
                                .iter()
                                .filter_map(|n| n.strip_prefix('*'))
                                .filter(|suffix| {
                                    name.ends_with(suffix)
                                        && !name[..name.len() - suffix.len()].contains('.')
                                })
                                .map(|suffix| (suffix.len(), c))
                                .max_by_key(|(len, _)| *len)
                        })
                        .max_by_key(|(len, _)| *len)
                        .map(|(_, c)| c)
                })
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        if let Some(acme) = &self.acme {
            let challenge = hello
                .alpn()
                .is_some_and(|mut p| p.any(|p| p == crate::acme::challenge::ACME_TLS_ALPN));
            if challenge {
                // A validation handshake: only the challenge certificate answers it.
                return name.and_then(|n| crate::acme::challenge::challenges().tls_alpn(n));
            }
            if name.is_some_and(|n| acme.covers(n)) || self.certificates.is_empty() {
                return Some(acme.key());
            }
        }
        if let Some(own) = by_name(&self.certificates, name) {
            return Some(own.key.clone());
        }
        by_name(&self.cluster, name)
            .or_else(|| self.certificates.first())
            .or_else(|| self.cluster.first())
            .map(|c| c.key.clone())
    }
}

/// Checks a certificate chain and its key given as PEM from a Secret; `source` names it
/// in errors (`secret/NS/NAME`).
pub fn certificate_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
    source: &str,
) -> Result<LoadedCertificate, String> {
    let file = |key: &str, pem: &[u8]| tls_files::TlsFile {
        path: format!("{source} {key}").into(),
        pem: pem.into(),
    };
    tls_files::certificate(&file("tls.crt", chain_pem), &file("tls.key", key_pem))
}

/// Builds a listener's acceptor from the files its config loaded (no disk access); every
/// failure names the file.
pub fn build_acceptor(
    settings: &ListenerTls,
    cluster: Vec<LoadedCertificate>,
) -> Result<(TlsAcceptor, Vec<(String, i64)>), String> {
    let certificates = settings
        .certificates
        .iter()
        .map(|files| tls_files::certificate(&files.cert, &files.key))
        .collect::<Result<Vec<_>, _>>()?;
    // File and Secret certificates alike: an expiry alert must cover both.
    let mut expiries: Vec<(String, i64)> = certificates
        .iter()
        .chain(&cluster)
        .map(|c| (c.names.first().cloned().unwrap_or_default(), c.not_after))
        .collect();
    let acme = match &settings.acme {
        Some(acme) => Some(crate::acme::certificate_for(acme)?),
        None => None,
    };
    expiries.extend(acme.as_ref().and_then(|a| a.expiry()));
    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &settings.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let roots = tls_files::trust_anchors(&auth.ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca {}: {e}", auth.ca.display()))?,
            )
        }
    };
    let mut resolver = SniResolver::with_cluster(certificates, cluster);
    resolver.acme = acme;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = settings
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    if settings
        .acme
        .as_ref()
        .is_some_and(|a| a.challenge == crate::config::model::AcmeChallenge::TlsAlpn01)
    {
        // Offered last: a client only gets it by offering nothing else (RFC 8737).
        config
            .alpn_protocols
            .push(crate::acme::challenge::ACME_TLS_ALPN.to_vec());
    }
    // Every suite rustls offers is AEAD with forward secrecy; choosing by our order (which
    // puts the strongest first) is what scanners and operators expect.
    config.ignore_client_order = true;
    Ok((TlsAcceptor::from_server_config(Arc::new(config)), expiries))
}

/// A client-side verifier that accepts any certificate: for upstreams written with
/// `verify = false` (health checks must trust what requests trust), and for tests that
/// observe which certificate a server chose.
#[derive(Debug)]
pub struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyCertificate {
    pub fn new() -> Self {
        Self(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl Default for AcceptAnyCertificate {
    fn default() -> Self {
        Self::new()
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
