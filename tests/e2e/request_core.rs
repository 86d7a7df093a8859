//! The request core's rules, held on every protocol: each behaviour runs over HTTP/1.1
//! (the own loop), h2c and HTTP/2 over TLS (pingora's path), so the two renderers cannot
//! drift apart again. Rules only one protocol can express (a raw `#` in a target, a
//! `Connection` field, a lingering close) run over raw HTTP/1.1 bytes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::pki::{Issued, Pki};
use crate::support::{raw_exchange, status_of, Gateway, RawClient, RawUpstream, Upstream};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    H1,
    H2c,
    H2Tls,
}

pub(crate) const EVERY: [Proto; 3] = [Proto::H1, Proto::H2c, Proto::H2Tls];

/// A gateway with a plain listener `web` and a TLS listener `secure` for `app.test`
/// (which asks for client certificates and passes their identity in `x-client-cert`),
/// both serving `rest`.
pub(crate) struct Edge {
    pub(crate) gw: Gateway,
    pki: Pki,
    _cert: Issued,
}

pub(crate) fn start(rest: &str) -> Edge {
    start_with_listener_keys("", rest)
}

/// [`start`] with `keys` (TOML lines) on both listeners.
pub(crate) fn start_with_listener_keys(keys: &str, rest: &str) -> Edge {
    start_with_files(keys, rest, &[])
}

/// [`start_with_listener_keys`] with `files` (name, text) written beside the config.
pub(crate) fn start_with_files(keys: &str, rest: &str, files: &[(&str, String)]) -> Edge {
    let pki = Pki::new("request core ca");
    let cert = pki.issue(&["app.test"]);
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n{keys}\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n{keys}\n\
         [listeners.tls]\ncertificates = [{{ cert = \"app.pem\", key = \"app.key\" }}]\n\
         client_ca = \"clients.pem\"\nclient_auth = \"request\"\nclient_identity_header = \"x-client-cert\"\n\n{rest}"
    );
    let gw = Gateway::start_with(&config, |dir| {
        cert.write(dir, "app");
        std::fs::write(dir.join("clients.pem"), &pki.ca_pem).expect("client ca");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write file");
        }
    });
    Edge {
        gw,
        pki,
        _cert: cert,
    }
}

impl Edge {
    pub(crate) fn client(&self, proto: Proto) -> reqwest::Client {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WAIT);
        match proto {
            Proto::H1 => builder
                .http1_only()
                .resolve("app.test", self.gw.addr("web")),
            Proto::H2c => builder
                .http2_prior_knowledge()
                .resolve("app.test", self.gw.addr("web")),
            Proto::H2Tls => builder
                .add_root_certificate(
                    reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).expect("ca"),
                )
                .resolve("app.test", self.gw.addr("secure")),
        }
        .build()
        .expect("client")
    }

    pub(crate) fn url(&self, proto: Proto, path: &str) -> String {
        match proto {
            Proto::H1 | Proto::H2c => {
                format!("http://app.test:{}{path}", self.gw.addr("web").port())
            }
            Proto::H2Tls => format!("https://app.test:{}{path}", self.gw.addr("secure").port()),
        }
    }

    pub(crate) async fn get(
        &self,
        proto: Proto,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client(proto).get(self.url(proto, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let expected = if proto == Proto::H1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(response.version(), expected, "{proto:?}");
        response
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_clients_cannot_claim_an_address_prefix_or_identity_on_any_protocol() {
    let upstream = Upstream::start("app").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"app\"\nupstream = \"app\"\n\
         request_headers = {{ set = {{ \"x-env\" = \"test\" }}, remove = [\"x-debug\"] }}\n\
         response_headers = {{ set = {{ \"x-served-by\" = \"edge\" }} }}\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    for proto in EVERY {
        let response = edge
            .get(
                proto,
                "/who",
                &[
                    ("forwarded", "for=198.51.100.1;proto=https"),
                    ("x-real-ip", "198.51.100.1"),
                    ("x-forwarded-for", "198.51.100.1"),
                    ("x-forwarded-port", "443"),
                    ("x-forwarded-prefix", "/admin"),
                    ("x_forwarded_for", "198.51.100.1"),
                    ("x-debug", "1"),
                    // The secure listener vouches for client certificates with this
                    // header; no client may send it, on that listener or any other.
                    ("x-client-cert", "Hash=forged"),
                ],
            )
            .await;
        assert_eq!(response.status(), 200, "{proto:?}");
        assert_eq!(response.headers()["x-served-by"], "edge", "{proto:?}");
        let seen = upstream.last();
        for gone in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x_forwarded_for",
            "x-debug",
            "x-client-cert",
        ] {
            assert!(
                !seen.headers.contains_key(gone),
                "{proto:?}: {gone} reached the upstream: {:?}",
                seen.headers
            );
        }
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1", "{proto:?}");
        let scheme = if proto == Proto::H2Tls {
            "https"
        } else {
            "http"
        };
        assert_eq!(seen.headers["x-forwarded-proto"], scheme, "{proto:?}");
        assert_eq!(seen.headers["x-env"], "test", "{proto:?}");
        assert!(
            seen.headers["host"]
                .to_str()
                .expect("host")
                .starts_with("app.test:"),
            "{proto:?}: the upstream gets the client's authority"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_are_the_same_on_every_protocol() {
    let upstream = Upstream::start("app").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"ping\"\npath = \"/ping\"\nrespond = {{ status = 200, body = \"pong\" }}\n\
         response_headers = {{ set = {{ \"x-route\" = \"ping\" }} }}\n\n\
         [[routes]]\nname = \"old\"\npath = \"/old\"\nredirect = {{ path = \"/new\", status = 308 }}\n\n\
         [[routes]]\nname = \"upload\"\npath_prefix = \"/upload\"\nupstream = \"app\"\nmax_body_size = \"16B\"\n\n\
         [[routes]]\nname = \"empty\"\npath_prefix = \"/empty\"\nupstream = \"none\"\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n\n\
         [upstreams.none]\nendpoints = [\"{}\"]\n[upstreams.none.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\n",
        upstream.addr,
        crate::support::closed_port(),
    ));
    for proto in EVERY {
        let ping = edge.get(proto, "/ping", &[]).await;
        assert_eq!(ping.status(), 200);
        assert_eq!(ping.headers()["x-route"], "ping", "{proto:?}");
        assert!(ping.headers().contains_key("x-request-id"), "{proto:?}");
        assert_eq!(ping.text().await.expect("body"), "pong");

        let missing = edge.get(proto, "/nowhere", &[]).await;
        assert_eq!(missing.status(), 404, "{proto:?}");
        assert_eq!(
            missing.text().await.expect("body"),
            "no route\n",
            "{proto:?}"
        );

        let moved = edge.get(proto, "/old?q=1", &[]).await;
        assert_eq!(moved.status(), 308, "{proto:?}");
        assert!(
            moved.headers()["location"]
                .to_str()
                .expect("location")
                .ends_with("/new?q=1"),
            "{proto:?}"
        );

        let big = edge
            .client(proto)
            .post(edge.url(proto, "/upload"))
            .body(vec![b'x'; 64])
            .send()
            .await
            .expect("upload");
        assert_eq!(big.status(), 413, "{proto:?}");
        assert_eq!(big.text().await.expect("body"), "request body too large\n");

        let nul = edge.get(proto, "/ping%00", &[]).await;
        assert_eq!(nul.status(), 400, "{proto:?}: %00 in the target");
    }
    // The dead pool leaves the rotation after two failed checks.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = edge.get(Proto::H1, "/empty", &[]).await.status();
        if status == 503 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for proto in EVERY {
        let none = edge.get(proto, "/empty", &[]).await;
        assert_eq!(none.status(), 503, "{proto:?}");
        assert_eq!(
            none.text().await.expect("body"),
            "no healthy endpoint\n",
            "{proto:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_and_logged_on_every_protocol() {
    let upstream = Upstream::start("app").await;
    let dead = crate::support::closed_port();
    let edge = start(&format!(
        "[[routes]]\nname = \"app\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nendpoints = [\"{dead}\", \"{}\"]\nretries = 1\n",
        upstream.addr
    ));
    let retries = || async {
        edge.gw
            .metric("edgegate_upstream_retries_total{upstream=\"app\"}")
            .await
            .unwrap_or(0.0)
    };
    for proto in EVERY {
        let before = edge.gw.log_len();
        let counted = retries().await;
        // Round-robin: of two requests, at least one goes to the dead endpoint first.
        for _ in 0..2 {
            let response = edge.get(proto, "/x", &[]).await;
            assert_eq!(response.status(), 200, "{proto:?}");
        }
        edge.gw
            .wait_for_log_after("retrying on another endpoint", before, WAIT);
        assert!(retries().await > counted, "{proto:?}: the retry is counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_never_carries_a_length_on_any_protocol() {
    let upstream = RawUpstream::start(|_| {
        vec![crate::support::raw_upstream::Step::Send(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\n".to_vec(),
        )]
    })
    .await;
    let edge = start(&format!(
        "[[routes]]\nname = \"app\"\nupstream = \"app\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    for proto in EVERY {
        let response = edge.get(proto, "/x", &[]).await;
        assert_eq!(response.status(), 204, "{proto:?}");
        assert_eq!(response.headers()["x-up"], "1", "{proto:?}");
        assert!(
            !response.headers().contains_key("content-length"),
            "{proto:?}: {:?}",
            response.headers()
        );
    }
    let mut raw = RawClient::connect(edge.gw.addr("web")).await;
    raw.send(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\nGET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    for _ in 0..2 {
        let response = raw.response(false, WAIT).await;
        assert_eq!(response.status, 204);
        assert!(response.head.list("content-length").is_empty());
    }
}

async fn raw_status(edge: &Edge, request: &str) -> u16 {
    status_of(
        &raw_exchange(
            edge.gw.addr("web"),
            request.as_bytes(),
            Duration::from_secs(3),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_and_hosts_that_upstreams_read_differently_are_refused() {
    let upstream = RawUpstream::start_default().await;
    let edge = start(&format!(
        "[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nrespond = {{ status = 403, body = \"closed\" }}\n\n\
         [[routes]]\nname = \"wild\"\nhosts = [\"*.example.com\"]\nupstream = \"app\"\n\n\
         [[routes]]\nname = \"rest\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    for target in ["/admin#x", "/x#/admin", "/a\\admin", "/admin%00"] {
        let status = raw_status(
            &edge,
            &format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{target}");
    }
    assert_eq!(
        raw_status(&edge, "GET /x HTTP/1.1\r\nHost: x@a.example.com\r\n\r\n").await,
        400,
        "userinfo in Host"
    );
    assert_eq!(
        raw_status(&edge, "GET /x HTTP/1.1\r\n\r\n").await,
        400,
        "HTTP/1.1 without Host"
    );
    assert_eq!(
        raw_status(&edge, "GET /x HTTP/1.0\r\n\r\n").await,
        200,
        "HTTP/1.0 may omit Host"
    );
    // An absolute-form target routes by its authority, and the upstream sees it as Host.
    assert_eq!(
        raw_status(
            &edge,
            "GET http://a.example.com/y HTTP/1.1\r\nHost: other.test\r\n\r\n"
        )
        .await,
        200
    );
    let (_, last) = upstream.requests().pop().expect("forwarded");
    assert_eq!(last.head.list("host"), vec!["a.example.com".to_string()]);
    assert!(
        upstream
            .requests()
            .iter()
            .all(|(_, r)| !r.target.contains('#')),
        "nothing with a fragment was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_names_hop_by_hop_fields_but_never_host() {
    let upstream = RawUpstream::start_default().await;
    let edge = start(&format!(
        "[[routes]]\nname = \"rest\"\nupstream = \"app\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    let status = raw_status(
        &edge,
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: host, x-secret\r\nX-Secret: 1\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let (_, seen) = upstream.requests().pop().expect("forwarded");
    assert_eq!(seen.head.list("host"), vec!["app.test".to_string()]);
    assert!(seen.head.list("x-secret").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_is_not_a_websocket_stays_on_the_loop_and_its_timers() {
    let upstream = RawUpstream::start_default().await;
    let edge = start(&format!(
        "[[routes]]\nname = \"rest\"\nupstream = \"app\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    let mut client = RawClient::connect(edge.gw.addr("web")).await;
    client
        .send(b"GET /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n")
        .await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 200, "served, not upgraded");
    let (_, seen) = upstream.requests().pop().expect("forwarded");
    assert!(
        seen.head.list("upgrade").is_empty(),
        "Upgrade is hop-by-hop"
    );
    // Still the loop's connection: a slow head gets the listener's 408, not pingora's
    // silence for 60 s.
    client.send(b"GET /y HTTP/1.1\r\nHost: app").await;
    let late = client.response(false, Duration::from_secs(15)).await;
    assert_eq!(late.status, 408);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interim_response_while_the_body_streams_keeps_the_body_flowing() {
    // An origin that sends 103 Early Hints as soon as the head arrives, then reads the
    // whole body before its answer.
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = origin.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = origin.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let _ = stream
                    .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
                    .await;
                let mut got = buf.len() - head_end;
                while got < length {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got += n;
                }
                let body = got.to_string();
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    let edge = start(&format!(
        "[[routes]]\nname = \"rest\"\nupstream = \"app\"\n\n[upstreams.app]\nendpoints = [\"{addr}\"]\nread_timeout = \"3s\"\n"
    ));
    let mut client = RawClient::connect(edge.gw.addr("web")).await;
    let body = vec![b'x'; 200_000];
    client
        .send(
            format!(
                "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    client.send(&body[..1000]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(&body[1000..]).await;
    let mut response = client.response(false, WAIT).await;
    while response.status < 200 {
        response = client.response(false, WAIT).await;
    }
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text(),
        body.len().to_string(),
        "the whole body arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_answers_504_during_a_slow_upload() {
    let upstream = RawUpstream::start_default().await;
    let edge = start(&format!(
        "[[routes]]\nname = \"rest\"\nupstream = \"app\"\ntimeout = \"1s\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    let mut client = RawClient::connect(edge.gw.addr("web")).await;
    client
        .send(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n")
        .await;
    client.send(&[b'x'; 70_000]).await;
    let response = client.response(false, WAIT).await;
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "route timeout exceeded\n");
}

/// The same over HTTP/2 (pingora's path), with a body that keeps trickling in: the
/// route's budget ends the exchange with a 504, not a silent reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_answers_504_during_a_slow_http2_upload() {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    let upstream = RawUpstream::start_default().await;
    let edge = start(&format!(
        "[[routes]]\nname = \"rest\"\nupstream = \"app\"\ntimeout = \"1s\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    let tcp = tokio::net::TcpStream::connect(edge.gw.addr("web"))
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(connection);
    // One piece every 300 ms, 20 at most: the body outlives the route's 1 s.
    let pieces = futures_util::stream::iter(0..20).then(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(
            b"xxxxxxxx",
        )))
    });
    let request = http::Request::post("http://app.test/up")
        .body(StreamBody::new(Box::pin(pieces)))
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answered within the wait")
        .expect("a response");
    assert_eq!(response.status(), 504);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"route timeout exceeded\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_reaches_a_client_still_sending_its_body() {
    let upstream = RawUpstream::start_default().await;
    let edge = start(&format!(
        "[[routes]]\nname = \"rest\"\nupstream = \"app\"\nmax_body_size = \"1KiB\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    let chunk = vec![b'x'; 65536];
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let plain = vec![b'x'; 4 << 20];
    for (head, body) in [
        (
            "POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            &chunked,
        ),
        (
            format!(
                "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
                plain.len()
            ),
            &plain,
        ),
    ] {
        // A client that uploads first and reads after, as curl and browsers do: if the
        // gateway closed with its upload unread, the kernel would reset the connection
        // and the upload would fail before the answer is read.
        let mut stream = tokio::net::TcpStream::connect(edge.gw.addr("web"))
            .await
            .expect("connect");
        let wrote = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await
        }
        .await;
        assert!(wrote.is_ok(), "the upload was cut: {wrote:?}");
        let mut received = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut received)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 413"), "got {text:?} ({read:?})");
    }
}
