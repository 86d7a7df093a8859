//! Certificates made at test time (rcgen), and a TLS client that reports what it got.

use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Pki {
    pub ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("one cert")
    }

    pub fn write(&self, dir: &std::path::Path, stem: &str) {
        std::fs::write(dir.join(format!("{stem}.pem")), &self.cert_pem).expect("write cert");
        std::fs::write(dir.join(format!("{stem}.key")), &self.key_pem).expect("write key");
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("ca");
        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |_| {})
    }

    pub fn issue_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "edgegate tests");
        edit(&mut params);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

pub struct ClientOptions<'a> {
    pub sni: &'a str,
    pub ca_pem: &'a str,
    pub tls12_only: bool,
    pub alpn: Vec<Vec<u8>>,
    pub client_cert: Option<&'a Issued>,
    /// Accept whatever certificate is served, to observe which one the server chose for
    /// an SNI no certificate matches (a verifying client would abort the handshake).
    pub observe_only: bool,
}

impl<'a> ClientOptions<'a> {
    pub fn new(sni: &'a str, ca_pem: &'a str) -> Self {
        Self {
            sni,
            ca_pem,
            tls12_only: false,
            alpn: vec![b"http/1.1".to_vec()],
            client_cert: None,
            observe_only: false,
        }
    }
}

pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

pub async fn connect(
    addr: SocketAddr,
    options: &ClientOptions<'_>,
) -> std::io::Result<ClientStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(options.ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if options.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let builder = if options.observe_only {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            edgegate::serving::tls::AcceptAnyCertificate::new(),
        ))
    } else {
        builder
    };
    let mut config = match options.client_cert {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                .expect("a key");
            builder
                .with_client_auth_cert(vec![issued.der()], key)
                .expect("client cert")
        }
    };
    config.alpn_protocols = options.alpn.clone();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(options.sni.to_string()).expect("server name");
    connector.connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub fn served_certificate(stream: &ClientStream) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate")
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request with `Connection: close`; the whole response as text.
pub async fn get(mut stream: ClientStream, host: &str, path: &str) -> std::io::Result<String> {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
