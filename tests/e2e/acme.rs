//! Certificates from ACME against pebble, the Let's Encrypt project's ACME test server,
//! started here on free loopback ports with its validation pointed at the gateway's
//! listeners: every order is real, with real challenge validation. pebble-challtestsrv
//! answers pebble's DNS lookups with 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::pki::{self, ClientOptions, Pki};
use crate::support::{closed_port, Gateway};

const WAIT: Duration = Duration::from_secs(30);

struct Pebble {
    pebble: Child,
    dns: Child,
    management: SocketAddr,
    pki: Pki,
}

impl Pebble {
    /// pebble validating http-01 on `http_port` and tls-alpn-01 on `tls_port`, issuing
    /// certificates valid for `validity` seconds.
    fn start(
        dir: &Path,
        address: SocketAddr,
        http_port: u16,
        tls_port: u16,
        validity: u64,
    ) -> Pebble {
        let pki = Pki::new("pebble api ca");
        pki.issue(&["127.0.0.1", "localhost"])
            .write(dir, "pebble-api");
        let api_ca = dir.join("pebble-api-ca.pem");
        std::fs::write(&api_ca, &pki.ca_pem).expect("ca");
        let (management, dns) = (closed_port(), closed_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": address.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("pebble-api.pem"),
                "privateKey": dir.join("pebble-api.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity,
            }
        });
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        let dns_child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &dns.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &closed_port().to_string()])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (scripts/setup.sh installs pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (scripts/setup.sh installs it)");
        let pebble = Pebble {
            pebble,
            dns: dns_child,
            management,
            pki,
        };
        for addr in [address, management] {
            let deadline = Instant::now() + WAIT;
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "pebble did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        pebble
    }

    /// The root pebble signs with (made at its start), to verify what it issued.
    async fn issuing_root(&self) -> String {
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).expect("ca"),
            )
            .build()
            .expect("client");
        client
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .expect("roots")
            .text()
            .await
            .expect("root pem")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn acme_config(
    secure: SocketAddr,
    web: SocketAddr,
    directory: &str,
    api_ca: &Path,
    storage: &Path,
) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"web\"\naddress = \"{web}\"\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"{secure}\"\n\
         [listeners.tls.acme]\ndirectory = \"{directory}\"\nemail = \"ops@example.com\"\n\
         domains = [\"alpn.test\"]\nchallenge = \"tls-alpn-01\"\nstorage = \"{}\"\nca = \"{}\"\n\n\
         [[listeners]]\nname = \"other\"\naddress = \"127.0.0.1:0\"\n\
         [listeners.tls.acme]\ndirectory = \"{directory}\"\n\
         domains = [\"http.test\"]\nchallenge = \"http-01\"\nstorage = \"{}\"\nca = \"{}\"\n\n\
         [[routes]]\nname = \"hello\"\nrespond = {{ status = 200, body = \"hello over acme\" }}\n",
        storage.display(),
        api_ca.display(),
        storage.display(),
        api_ca.display(),
    )
}

/// Handshakes verified against pebble's root succeed for every name, once issued.
async fn wait_issued(gw: &Gateway, root: &str) {
    let deadline = Instant::now() + WAIT;
    for (listener, name) in [("secure", "alpn.test"), ("other", "http.test")] {
        loop {
            match pki::connect(gw.addr(listener), &ClientOptions::new(name, root)).await {
                Ok(stream) => {
                    let answer = pki::get(stream, name, "/").await.expect("request");
                    assert!(answer.ends_with("hello over acme"), "{answer}");
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{name} not issued: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn serial(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.raw_serial().to_vec()
}

fn issuer_is_subject(der: &[u8]) -> bool {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.issuer() == cert.subject()
}

async fn served(addr: SocketAddr, name: &str) -> Vec<u8> {
    let mut options = ClientOptions::new(name, "");
    options.observe_only = true;
    let stream = pki::connect(addr, &options).await.expect("handshake");
    pki::served_certificate(&stream).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_by_both_challenges_renewed_and_reused_from_storage() {
    let shared = tempfile::tempdir().expect("tempdir");
    let storage = shared.path().join("acme");
    let (secure, web) = (closed_port(), closed_port());
    // The directory's address must be in the config before pebble runs: choose it, start
    // the gateway (placeholders), then pebble on it.
    let api = tempfile::tempdir().expect("tempdir");
    let pebble_address = closed_port();
    let directory = format!("https://{pebble_address}/dir");
    // pebble's API certificate and CA are made when it starts; the gateway reads the CA
    // file when it loads its config, so the file is there (and rewritten) before.
    let api_ca = api.path().join("pebble-api-ca.pem");
    let placeholder_ca = Pki::new("not yet");
    std::fs::write(&api_ca, &placeholder_ca.ca_pem).expect("ca");

    let gw = Gateway::start(&acme_config(secure, web, &directory, &api_ca, &storage));
    // Before issuance: a self-signed placeholder for the name, and the listener answers.
    let placeholder = served(gw.addr("secure"), "alpn.test").await;
    assert!(issuer_is_subject(&placeholder), "a placeholder first");
    let pebble = Pebble::start(api.path(), pebble_address, web.port(), secure.port(), 12);
    let root = pebble.issuing_root().await;
    wait_issued(&gw, &root).await;
    let first = served(gw.addr("secure"), "alpn.test").await;
    for file in [
        "account.json",
        "alpn.test.crt.pem",
        "alpn.test.key.pem",
        "http.test.key.pem",
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(storage.join(file))
                .expect("stored")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // Renewal: a 12 s certificate is renewed with 4 s left and served without a restart.
    let deadline = Instant::now() + WAIT;
    loop {
        let now = served(gw.addr("secure"), "alpn.test").await;
        if serial(&now) != serial(&first) {
            assert!(!issuer_is_subject(&now));
            break;
        }
        assert!(Instant::now() < deadline, "not renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders = gw
        .metric("edgegate_acme_orders_total{result=\"success\"}")
        .await;
    assert!(orders.is_some_and(|n| n >= 3.0), "{orders:?}");
    drop(gw);

    // A restart with pebble gone serves the stored certificate at once, without an order.
    drop(pebble);
    let gw = Gateway::start(&acme_config(
        closed_port(),
        closed_port(),
        &directory,
        &api_ca,
        &storage,
    ));
    let stream = pki::connect(gw.addr("secure"), &ClientOptions::new("alpn.test", &root))
        .await
        .expect("the stored certificate, verified against pebble's root");
    drop(stream);
    assert!(
        !gw.lines()
            .iter()
            .any(|l| l.contains("ordering a certificate")),
        "no order on a restart with a valid stored certificate"
    );
}

fn one_block_config(
    secure: SocketAddr,
    directory: &str,
    api_ca: &Path,
    storage: &Path,
    domains: &str,
) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"{secure}\"\n\
         [listeners.tls.acme]\ndirectory = \"{directory}\"\n\
         domains = {domains}\nchallenge = \"tls-alpn-01\"\nstorage = \"{}\"\nca = \"{}\"\n\n\
         [[routes]]\nname = \"hello\"\nrespond = {{ status = 200, body = \"hello over acme\" }}\n",
        storage.display(),
        api_ca.display(),
    )
}

/// Waits until a handshake for `name` verifies against pebble's root; the served leaf.
async fn wait_verified(gw: &Gateway, name: &str, root: &str) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    loop {
        match pki::connect(gw.addr("secure"), &ClientOptions::new(name, root)).await {
            Ok(stream) => return pki::served_certificate(&stream).to_vec(),
            Err(e) => {
                assert!(Instant::now() < deadline, "{name} not issued: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A reload that changes the ACME block applies it: the new name is ordered and served
/// without a restart, a name kept is served by the certificate it had until the new
/// order completes, and the old block's manager stops (it would otherwise go on renewing
/// the old certificate into the shared storage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_orders_a_changed_acme_block_and_stops_the_old_one() {
    let shared = tempfile::tempdir().expect("tempdir");
    let storage = shared.path().join("acme");
    // The gateway's listener on a port of its own choosing (no window for another test to
    // take it), then pebble validating against that port.
    let secure: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let api = tempfile::tempdir().expect("tempdir");
    let pebble_address = closed_port();
    let directory = format!("https://{pebble_address}/dir");
    let api_ca = api.path().join("pebble-api-ca.pem");
    std::fs::write(&api_ca, Pki::new("not yet").ca_pem).expect("ca");
    let gw = Gateway::start(&one_block_config(
        secure,
        &directory,
        &api_ca,
        &storage,
        "[\"alpn.test\"]",
    ));
    // 12 s certificates: the old block's renewal falls within the test.
    let pebble = Pebble::start(
        api.path(),
        pebble_address,
        closed_port().port(),
        gw.addr("secure").port(),
        12,
    );
    let root = pebble.issuing_root().await;
    let first = wait_verified(&gw, "alpn.test", &root).await;

    let skip = gw.log_len();
    gw.write_config(&one_block_config(
        secure,
        &directory,
        &api_ca,
        &storage,
        "[\"next.test\", \"alpn.test\"]",
    ));
    let deadline = Instant::now() + WAIT;
    while gw.metric("edgegate_config_generation").await != Some(2.0) {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No placeholder for the kept name while the changed block orders.
    pki::connect(gw.addr("secure"), &ClientOptions::new("alpn.test", &root))
        .await
        .expect("alpn.test still verifies right after the reload");
    let issued = wait_verified(&gw, "next.test", &root).await;
    assert_ne!(serial(&issued), serial(&first));
    assert_eq!(
        serial(&wait_verified(&gw, "alpn.test", &root).await),
        serial(&issued),
        "one certificate for the block's names"
    );
    gw.wait_for_log_after("ACME block no longer in the config", skip, WAIT);

    // Past the moment the old certificate was due for renewal: no order for the old block.
    let (_, old) = x509_parser::parse_x509_certificate(&first).expect("certificate");
    let (from, to) = (
        old.validity().not_before.timestamp(),
        old.validity().not_after.timestamp(),
    );
    let due = to - (to - from) / 3 + 3;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        if now >= due {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old_orders: Vec<String> = gw
        .lines()
        .into_iter()
        .skip(skip)
        .filter(|l| {
            l.contains("ordering a certificate")
                && l.contains("alpn.test")
                && !l.contains("next.test")
        })
        .collect();
    assert!(
        old_orders.is_empty(),
        "the old block still orders: {old_orders:#?}"
    );
}
