//! TLS termination (issue 3): SNI, ALPN, versions, mutual TLS, TLS to upstreams, live
//! certificate replacement. Every handshake is a real one against certificates made here.

use std::time::Duration;

use crate::support::pki::{self, ClientOptions, Pki};
use crate::support::{client, Gateway, Upstream};

fn tls_listener(extra: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\n\
         certificates = [\n  {{ cert = \"default.pem\", key = \"default.key\" }},\n  {{ cert = \"api.pem\", key = \"api.key\" }},\n  {{ cert = \"wild.pem\", key = \"wild.key\" }},\n]\n{extra}\n\n\
         [[routes]]\nname = \"hello\"\nrespond = {{ status = 200, body = \"hello over tls\" }}\n"
    )
}

struct Certs {
    pki: Pki,
    default: pki::Issued,
    api: pki::Issued,
    wild: pki::Issued,
}

fn start(extra: &str) -> (Gateway, Certs) {
    let pki = Pki::new("edgegate test ca");
    let certs = Certs {
        default: pki.issue(&["default.example.com"]),
        api: pki.issue(&["api.example.com"]),
        wild: pki.issue(&["*.wild.example.com"]),
        pki,
    };
    let gw = Gateway::start_with(&tls_listener(extra), |dir| {
        certs.default.write(dir, "default");
        certs.api.write(dir, "api");
        certs.wild.write(dir, "wild");
        std::fs::write(dir.join("ca.pem"), &certs.pki.ca_pem).expect("ca");
    });
    (gw, certs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_by_name_wildcard_and_falls_back_to_the_first() {
    let (gw, certs) = start("");
    let addr = gw.addr("secure");
    for (sni, expected) in [
        ("api.example.com", &certs.api),
        ("x.wild.example.com", &certs.wild),
        ("default.example.com", &certs.default),
        ("unknown.example.org", &certs.default),
        ("a.b.wild.example.com", &certs.default),
    ] {
        // Observe, not verify: a verifying client would abort on a name the served
        // certificate lacks, and which certificate was served is the point here.
        let mut options = ClientOptions::new(sni, &certs.pki.ca_pem);
        options.observe_only = true;
        let stream = pki::connect(addr, &options).await.expect("handshake");
        let served = pki::served_certificate(&stream);
        assert_eq!(served, expected.der(), "SNI {sni}");
    }
    let stream = pki::connect(
        addr,
        &ClientOptions::new("api.example.com", &certs.pki.ca_pem),
    )
    .await
    .expect("handshake");
    let response = pki::get(stream, "api.example.com", "/")
        .await
        .expect("request");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello over tls"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_sni_gets_the_first_certificate() {
    let (gw, certs) = start("");
    // rustls sends no SNI for an IP address.
    let mut options = ClientOptions::new("127.0.0.1", &certs.pki.ca_pem);
    options.observe_only = true;
    let stream = pki::connect(gw.addr("secure"), &options)
        .await
        .expect("handshake");
    assert_eq!(pki::served_certificate(&stream), certs.default.der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn_and_served() {
    let (gw, certs) = start("");
    let mut options = ClientOptions::new("api.example.com", &certs.pki.ca_pem);
    options.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let stream = pki::connect(gw.addr("secure"), &options)
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certs.pki.ca_pem.as_bytes()).expect("ca"),
        )
        .resolve("api.example.com", gw.addr("secure"))
        .build()
        .expect("client");
    let resp = https
        .get(format!(
            "https://api.example.com:{}/",
            gw.addr("secure").port()
        ))
        .send()
        .await
        .expect("https request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.expect("body"), "hello over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_clients_are_refused_when_min_version_is_13() {
    let (gw, certs) = start("min_version = \"1.3\"");
    let mut options = ClientOptions::new("api.example.com", &certs.pki.ca_pem);
    options.tls12_only = true;
    assert!(pki::connect(gw.addr("secure"), &options).await.is_err());
    options.tls12_only = false;
    let stream = pki::connect(gw.addr("secure"), &options)
        .await
        .expect("TLS 1.3");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    let (gw, certs) = start("");
    let mut options = ClientOptions::new("api.example.com", &certs.pki.ca_pem);
    options.tls12_only = true;
    let stream = pki::connect(gw.addr("secure"), &options)
        .await
        .expect("TLS 1.2 by default");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_signed_by_client_ca() {
    let a = Upstream::start("a").await;
    let clients = Pki::new("client ca");
    let good = clients.issue(&["client-1"]);
    let stranger = Pki::new("other ca").issue(&["client-2"]);
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"api.pem\", key = \"api.key\" }}]\nclient_ca = \"clients.pem\"\nclient_identity_header = \"x-client-cert\"\n\n\
         [[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{}\"]\n",
        a.addr
    );
    let server = Pki::new("server ca");
    let api = server.issue(&["api.example.com"]);
    let gw = Gateway::start_with(&config, |dir| {
        api.write(dir, "api");
        std::fs::write(dir.join("clients.pem"), &clients.ca_pem).expect("write");
    });
    let addr = gw.addr("secure");

    let mut options = ClientOptions::new("api.example.com", &server.ca_pem);
    options.client_cert = Some(&good);
    let stream = pki::connect(addr, &options)
        .await
        .expect("handshake with a good cert");
    let response = pki::get(stream, "api.example.com", "/")
        .await
        .expect("request");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let identity = a.last().headers["x-client-cert"]
        .to_str()
        .expect("identity")
        .to_string();
    assert!(
        identity.starts_with("Hash=") && identity.contains("edgegate tests"),
        "{identity}"
    );

    for client_cert in [None, Some(&stranger)] {
        let mut options = ClientOptions::new("api.example.com", &server.ca_pem);
        options.client_cert = client_cert;
        // TLS 1.3 may finish the client side before the server's alert arrives; either
        // the handshake or the first exchange must fail, and nothing reaches upstream.
        let hits = a.hits();
        let outcome = match pki::connect(addr, &options).await {
            Err(_) => None,
            Ok(stream) => pki::get(stream, "api.example.com", "/")
                .await
                .ok()
                .filter(|r| !r.is_empty()),
        };
        assert!(
            outcome.is_none(),
            "served without a valid client certificate: {outcome:?}"
        );
        assert_eq!(a.hits(), hits);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_request_mode_lets_anonymous_clients_in_without_identity() {
    let a = Upstream::start("a").await;
    let clients = Pki::new("client ca");
    let server = Pki::new("server ca");
    let api = server.issue(&["api.example.com"]);
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"api.pem\", key = \"api.key\" }}]\nclient_ca = \"clients.pem\"\nclient_auth = \"request\"\nclient_identity_header = \"x-client-cert\"\n\n\
         [[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{}\"]\n",
        a.addr
    );
    let gw = Gateway::start_with(&config, |dir| {
        api.write(dir, "api");
        std::fs::write(dir.join("clients.pem"), &clients.ca_pem).expect("write");
    });
    let options = ClientOptions::new("api.example.com", &server.ca_pem);
    let stream = pki::connect(gw.addr("secure"), &options)
        .await
        .expect("anonymous handshake");
    // A forged identity header from the client never reaches the upstream.
    let mut stream = stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\nX-Client-Cert: Hash=forged\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(a.last().headers.get("x-client-cert").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_upstreams_is_verified_against_the_configured_ca() {
    let internal = Pki::new("internal ca");
    let issued = internal.issue(&["backend.internal"]);
    let backend = Upstream::start_tls("tls-backend", &issued.cert_pem, &issued.key_pem).await;
    let other = Pki::new("some other ca");
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"good\"\npath_prefix = \"/good\"\nupstream = \"good\"\n\n\
         [[routes]]\nname = \"bad\"\npath_prefix = \"/bad\"\nupstream = \"bad\"\n\n\
         [[routes]]\nname = \"unverified\"\npath_prefix = \"/unverified\"\nupstream = \"unverified\"\n\n\
         [upstreams.good]\nendpoints = [\"{a}\"]\ntls = {{ ca = \"internal.pem\", sni = \"backend.internal\" }}\n\n\
         [upstreams.bad]\nendpoints = [\"{a}\"]\ntls = {{ ca = \"other.pem\", sni = \"backend.internal\" }}\n\n\
         [upstreams.unverified]\nendpoints = [\"{a}\"]\ntls = {{ sni = \"backend.internal\", verify = false }}\n",
        a = backend.addr
    );
    let gw = Gateway::start_with(&config, |dir| {
        std::fs::write(dir.join("internal.pem"), &internal.ca_pem).expect("write");
        std::fs::write(dir.join("other.pem"), &other.ca_pem).expect("write");
    });
    let c = client();
    let resp = c.get(gw.url("web", "/good")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "tls-backend");
    let resp = c.get(gw.url("web", "/bad")).send().await.expect("request");
    assert_eq!(
        resp.status(),
        502,
        "an unverifiable upstream certificate must fail"
    );
    let resp = c
        .get(gw.url("web", "/unverified"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    gw.wait_for_log("does not verify", Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_handshakes_and_a_broken_one_is_refused() {
    let (gw, certs) = start("");
    let addr = gw.addr("secure");
    let options = ClientOptions::new("api.example.com", &certs.pki.ca_pem);
    let established = pki::connect(addr, &options).await.expect("handshake");
    assert_eq!(pki::served_certificate(&established), certs.api.der());

    let renewed = certs.pki.issue(&["api.example.com"]);
    // Key first, then certificate: the pair is inconsistent for a moment, as with any
    // real renewal; the gateway must not serve (or crash on) the half-written state.
    renewed.write(gw.dir.path(), "api");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let stream = pki::connect(addr, &options).await.expect("handshake");
        if pki::served_certificate(&stream) == renewed.der() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = gw.wait_for_log("config reloaded", Duration::from_secs(3));
    assert!(line.contains("certificates changed"), "{line}");
    // The connection made before the change still works, with its original certificate.
    assert_eq!(pki::served_certificate(&established), certs.api.der());
    let response = pki::get(established, "api.example.com", "/")
        .await
        .expect("old connection");
    assert!(response.starts_with("HTTP/1.1 200"));

    let failures = gw
        .metric("edgegate_config_reloads_total{result=\"failure\"}")
        .await
        .unwrap_or(0.0);
    std::fs::write(
        gw.dir.path().join("api.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("write broken");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while gw
        .metric("edgegate_config_reloads_total{result=\"failure\"}")
        .await
        .unwrap_or(0.0)
        <= failures
    {
        assert!(
            std::time::Instant::now() < deadline,
            "broken certificate was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = pki::connect(addr, &options)
        .await
        .expect("handshake after broken replacement");
    assert_eq!(
        pki::served_certificate(&stream),
        renewed.der(),
        "the last good certificate stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_listener_redirects_to_the_tls_listener() {
    let pki = Pki::new("ca");
    let api = pki.issue(&["api.example.com"]);
    let config = "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{ cert = \"api.pem\", key = \"api.key\" }]\n\n\
         [[routes]]\nname = \"to-https\"\nlisteners = [\"web\"]\nredirect = { scheme = \"https\", status = 301 }\n\n\
         [[routes]]\nname = \"app\"\nlisteners = [\"secure\"]\nrespond = { status = 200, body = \"secure app\" }\n";
    let gw = Gateway::start_with(config, |dir| api.write(dir, "api"));
    let resp = client()
        .get(gw.url("web", "/path?q=1"))
        .header("host", "api.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        "https://api.example.com/path?q=1"
    );
    let stream = pki::connect(
        gw.addr("secure"),
        &ClientOptions::new("api.example.com", &pki.ca_pem),
    )
    .await
    .expect("handshake");
    let response = pki::get(stream, "api.example.com", "/path?q=1")
        .await
        .expect("request");
    assert!(response.ends_with("secure app"), "{response}");
    let expiry = gw
        .metric("edgegate_tls_certificate_expiry_timestamp_seconds{listener=\"secure\",name=\"api.example.com\"}")
        .await
        .expect("expiry metric");
    assert!(expiry > 1.7e9, "{expiry}");
    assert!(
        gw.metric("edgegate_tls_handshakes_total{listener=\"secure\",result=\"success\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

fn check_dir(config: &str, files: impl FnOnce(&std::path::Path)) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    files(dir.path());
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(crate::support::gateway::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&dir.path().display().to_string(), "D"),
    )
}

const ONE_CERT: &str = "[[listeners]]\nname = \"s\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [\n  { cert = \"a.pem\", key = \"a.key\" },\n  { cert = \"b.pem\", key = \"b.key\" },\n]\n";

#[test]
fn check_refuses_unreadable_files_and_mismatched_keys() {
    let pki = Pki::new("ca");
    let (code, out) = check_dir(ONE_CERT, |dir| {
        pki.issue(&["a.example.com"]).write(dir, "a")
    });
    assert_eq!(code, 1);
    assert!(
        out.starts_with("error: D/gw.toml:7:12: cannot read certificate D/b.pem"),
        "{out}"
    );

    let (code, out) = check_dir(ONE_CERT, |dir| {
        pki.issue(&["a.example.com"]).write(dir, "a");
        let b = pki.issue(&["b.example.com"]);
        let other = pki.issue(&["c.example.com"]);
        std::fs::write(dir.join("b.pem"), &b.cert_pem).expect("write");
        std::fs::write(dir.join("b.key"), &other.key_pem).expect("write");
    });
    assert_eq!(code, 1);
    assert!(
        out.contains("error: D/gw.toml:7:3: key D/b.key does not match certificate D/b.pem"),
        "{out}"
    );
}

#[test]
fn check_warns_about_expired_and_overlapping_certificates() {
    let pki = Pki::new("ca");
    let (code, out) = check_dir(ONE_CERT, |dir| {
        pki.issue_with(&["a.example.com"], |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
        .write(dir, "a");
        pki.issue(&["a.example.com", "b.example.com"])
            .write(dir, "b");
    });
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: D/gw.toml:6:3: certificate D/a.pem expired at 2021-01-01"),
        "{out}"
    );
    assert!(
        out.contains("warning: D/gw.toml:7:3: name \"a.example.com\""),
        "{out}"
    );
    assert!(
        out.ends_with("ok: 1 listeners, 0 routes, 0 upstreams\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_tls_upstreams_speak_tls_with_the_same_trust() {
    let internal = Pki::new("internal ca");
    let issued = internal.issue(&["backend.internal"]);
    let backend = Upstream::start_tls("tls-backend", &issued.cert_pem, &issued.key_pem).await;
    let other = Pki::new("other ca");
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"good\"\npath_prefix = \"/good\"\nupstream = \"good\"\n\n\
         [upstreams.good]\nendpoints = [\"{a}\"]\ntls = {{ ca = \"internal.pem\", sni = \"backend.internal\" }}\n\
         [upstreams.good.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\n\n\
         [upstreams.distrusted]\nendpoints = [\"{a}\"]\ntls = {{ ca = \"other.pem\", sni = \"backend.internal\" }}\n\
         [upstreams.distrusted.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\n",
        a = backend.addr
    );
    let gw = Gateway::start_with(&config, |dir| {
        std::fs::write(dir.join("internal.pem"), &internal.ca_pem).expect("write");
        std::fs::write(dir.join("other.pem"), &other.ca_pem).expect("write");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw
        .metric("edgegate_health_checks_total{result=\"pass\",upstream=\"good\"}")
        .await
        .unwrap_or(0.0)
        < 3.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS health checks never passed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.wait_for_log("endpoint unhealthy", Duration::from_secs(5));
    assert_eq!(
        gw.metric("edgegate_upstream_endpoints{state=\"healthy\",upstream=\"good\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        gw.metric("edgegate_upstream_endpoints{state=\"unhealthy\",upstream=\"distrusted\"}")
            .await,
        Some(1.0)
    );
    let resp = client()
        .get(gw.url("web", "/good"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
}

/// HTTP/1.1 over TLS with keepalive: each response must leave at once (nothing held in a
/// write buffer until the connection closes), and several requests share a connection,
/// both for direct responses and for proxied ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_keepalive_over_tls_answers_each_request_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Upstream::start("a").await;
    let (gw, certs) = start(&format!(
        "\n[[routes]]\nname = \"up\"\npath_prefix = \"/up\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{}\"]\n",
        a.addr
    ));
    let mut stream = pki::connect(
        gw.addr("secure"),
        &ClientOptions::new("api.example.com", &certs.pki.ca_pem),
    )
    .await
    .expect("handshake");
    for path in ["/", "/up/1", "/", "/up/2"] {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut got = Vec::new();
        let complete = |got: &[u8]| {
            let text = String::from_utf8_lossy(got);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                return false;
            };
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|n| n.trim().parse::<usize>().ok());
            length.is_some_and(|n| body.len() >= n)
        };
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            let mut buf = [0u8; 4096];
            while !complete(&got) {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "connection closed after {path}");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "no whole response to {path} within 3 s: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(a.hits(), 2);
}
