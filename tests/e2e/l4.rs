//! Layer 4: tcp listeners, TLS passthrough by SNI, and the PROXY protocol, against real
//! TCP and TLS servers on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::http1::pattern;
use crate::support::pki::{self, ClientOptions, Pki};
use crate::support::{client, closed_port, Gateway, Upstream};
use crate::{config, listener_keys};

const WAIT: Duration = Duration::from_secs(10);

/// A TCP server on loopback; `serve` runs for each connection.
async fn tcp_server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Echoes every byte; at the client's end of stream, writes `got N bytes` and closes.
async fn echo_server() -> SocketAddr {
    tcp_server(|mut stream| async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stream
            .write_all(format!("got {total} bytes").as_bytes())
            .await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// Says its name and closes.
async fn named_server(name: &'static str) -> SocketAddr {
    tcp_server(move |mut stream| async move {
        let _ = stream.write_all(name.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await
}

async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("closed in time")
        .expect("read");
    out
}

fn tcp_config(endpoints: &[SocketAddr], pool_extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let base = config(
        &["db"],
        &format!(
            "[[tcp_routes]]\nname = \"pg\"\nlisteners = [\"db\"]\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [{}]\n{pool_extra}\n",
            endpoints.join(", ")
        ),
    );
    listener_keys(&base, "db", "protocol = \"tcp\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_echoes_byte_exact_and_a_half_close_is_passed_on() {
    let echo = echo_server().await;
    let gw = Gateway::start(&tcp_config(&[echo], ""));
    mebibyte_echo_with_half_close(&gw).await;
    let line = gw.wait_for_log("tcp relay mode", WAIT);
    assert!(line.contains("Splice"), "the default relay: {line}");
}

/// The same through the userspace copy relay (`EDGEGATE_TCP_RELAY=copy`); the default,
/// above, is the `splice(2)` relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_relay_echoes_a_mebibyte_byte_exact_and_passes_a_half_close_on() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, tcp_config(&[echo], "")).expect("write config");
    let gw = Gateway::spawn(dir, path, &[("EDGEGATE_TCP_RELAY", "copy")]);
    gw.wait_ready().await;
    mebibyte_echo_with_half_close(&gw).await;
    let line = gw.wait_for_log("tcp relay mode", WAIT);
    assert!(line.contains("Copy"), "{line}");
}

async fn mebibyte_echo_with_half_close(gw: &Gateway) {
    let payload = pattern(1 << 20, 7);
    let stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("send");
        // Half-close: the echo server sees the end and still answers after it.
        write.shutdown().await.expect("shutdown");
        write
    });
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, read.read_to_end(&mut received))
        .await
        .expect("in time")
        .expect("read");
    let _write = writer.await.expect("writer");
    let tail = format!("got {} bytes", payload.len());
    assert!(
        received.ends_with(tail.as_bytes()),
        "the answer sent after the client's half-close arrives"
    );
    let echoed = &received[..received.len() - tail.len()];
    assert!(
        echoed == payload.as_slice(),
        "echo differs: {}",
        crate::support::http1::first_difference(echoed, &payload)
    );
    let metrics = gw.metrics_text().await;
    let sample = |s: &str| crate::support::gateway::metric_value(&metrics, s);
    assert_eq!(
        sample("edgegate_tcp_connections_total{listener=\"db\",route=\"pg\",upstream=\"pool\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample("edgegate_tcp_bytes_total{direction=\"upstream\",route=\"pg\"}"),
        Some(payload.len() as f64)
    );
    assert_eq!(
        sample("edgegate_tcp_bytes_total{direction=\"downstream\",route=\"pg\"}"),
        Some(received.len() as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_take_turns_and_a_refusing_member_is_skipped() {
    let a = named_server("a").await;
    let b = named_server("b").await;
    let gw = Gateway::start(&tcp_config(&[a, b], ""));
    let mut answers = Vec::new();
    for _ in 0..6 {
        let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
        answers.push(String::from_utf8(read_all(&mut stream).await).expect("utf-8"));
    }
    let a_count = answers.iter().filter(|n| *n == "a").count();
    assert_eq!(a_count, 3, "round-robin per connection: {answers:?}");
    assert!(
        answers.windows(2).all(|w| w[0] != w[1]),
        "alternating: {answers:?}"
    );

    let refusing = closed_port();
    let gw = Gateway::start(&tcp_config(&[refusing, a], "retries = 1"));
    for _ in 0..4 {
        let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
        assert_eq!(read_all(&mut stream).await, b"a");
    }
    let failures = gw
        .metric(&format!(
            "edgegate_upstream_connect_failures_total{{endpoint=\"{refusing}\",upstream=\"pool\"}}"
        ))
        .await;
    assert!(failures.is_some_and(|n| n >= 2.0), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_is_closed_after_the_listener_idle_timeout() {
    let echo = echo_server().await;
    let text = listener_keys(&tcp_config(&[echo], ""), "db", "idle_timeout = \"300ms\"");
    let gw = Gateway::start(&text);
    let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
    stream.write_all(b"ping").await.expect("send");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");
    // Silent from here: the gateway closes both sides; the echo server then says its total.
    let rest = read_all(&mut stream).await;
    assert!(rest.is_empty() || rest == b"got 4 bytes", "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_open_relay_whose_route_remains() {
    let echo = echo_server().await;
    let gw = Gateway::start(&tcp_config(&[echo], ""));
    let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
    stream.write_all(b"before").await.expect("send");
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"before");
    // Another route and upstream appear; the relay's route stays.
    let other = named_server("other").await;
    let mut next = tcp_config(&[echo], "");
    next.push_str(&format!(
        "\n[upstreams.extra]\nendpoints = [\"{other}\"]\n\n[[routes]]\nname = \"hello\"\nrespond = {{ status = 200, body = \"hi\" }}\n"
    ));
    gw.write_config(&next);
    let deadline = std::time::Instant::now() + WAIT;
    while gw.metric("edgegate_config_generation").await != Some(2.0) {
        assert!(std::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream
        .write_all(b"after!")
        .await
        .expect("send after reload");
    stream
        .read_exact(&mut buf)
        .await
        .expect("echo after reload");
    assert_eq!(&buf, b"after!");
    stream.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut stream).await, b"got 12 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_relays_one_name_and_terminates_the_others() {
    let pki = Pki::new("edgegate test ca");
    let gateway_cert = pki.issue(&["gw.example.com"]);
    // The backend has its own CA: only a relayed handshake can present its certificate.
    let backend_pki = Pki::new("backend ca");
    let backend_cert = backend_pki.issue(&["secure.example.com"]);
    let backend =
        Upstream::start_tls("backend", &backend_cert.cert_pem, &backend_cert.key_pem).await;
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"gw.pem\", key = \"gw.key\" }}]\n\n\
         [[routes]]\nname = \"hello\"\nrespond = {{ status = 200, body = \"terminated here\" }}\n\n\
         [[tcp_routes]]\nname = \"passthrough\"\nlisteners = [\"secure\"]\nsni = [\"secure.example.com\", \"*.mtls.example.com\"]\nupstream = \"backends\"\n\n\
         [upstreams.backends]\nendpoints = [\"{}\"]\n",
        backend.addr
    );
    let gw = Gateway::start_with(&text, |dir| gateway_cert.write(dir, "gw"));
    let addr = gw.addr("secure");

    let relayed = pki::connect(
        addr,
        &ClientOptions::new("secure.example.com", &backend_pki.ca_pem),
    )
    .await
    .expect("handshake with the backend");
    assert_eq!(pki::served_certificate(&relayed), backend_cert.der());
    let answer = pki::get(relayed, "secure.example.com", "/through")
        .await
        .expect("request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("backend"), "{answer}");
    assert_eq!(backend.last().path, "/through");

    let terminated = pki::connect(addr, &ClientOptions::new("gw.example.com", &pki.ca_pem))
        .await
        .expect("handshake with the gateway");
    assert_eq!(pki::served_certificate(&terminated), gateway_cert.der());
    let answer = pki::get(terminated, "gw.example.com", "/")
        .await
        .expect("request");
    assert!(answer.ends_with("terminated here"), "{answer}");

    assert_eq!(
        gw.metric(
            "edgegate_tcp_connections_total{listener=\"secure\",route=\"passthrough\",upstream=\"backends\"}"
        )
        .await,
        Some(1.0)
    );
}

/// A config whose `web` listener requires a PROXY header from `trusted`.
fn proxied_http(upstream: SocketAddr, trusted: &str) -> String {
    let base = format!(
        "[gateway]\naccess_log = \"access.log\"\n\n{}",
        config(
            &["web"],
            &format!(
                "[[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{upstream}\"]\n"
            )
        )
    );
    listener_keys(
        &base,
        "web",
        &format!("proxy_protocol = true\ntrusted_proxies = [\"{trusted}\"]"),
    )
}

/// What came back before the gateway closed; a close by reset (the gateway closing
/// with our unread bytes in its buffer) counts as closed with nothing.
async fn request_after(gw: &Gateway, header: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(gw.addr("web")).await.expect("connect");
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"GET /who HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    if stream.write_all(&bytes).await.is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        other => panic!("not closed in time: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let upstream = Upstream::start("a").await;
    let gw = Gateway::start(&proxied_http(upstream.addr, "127.0.0.1/32"));
    let local = gw.addr("web");
    let v1 = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 40001 {}\r\n",
        local.port()
    );
    let answer = request_after(&gw, v1.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.last().headers["x-forwarded-for"], "203.0.113.7");

    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::9]:40002".parse::<SocketAddr>().expect("addr"),
            "[::1]:443".parse::<SocketAddr>().expect("addr"),
        ),
    )
    .build()
    .expect("v2 header");
    let answer = request_after(&gw, &v2).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.last().headers["x-forwarded-for"], "2001:db8::9");

    let path = gw.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + WAIT;
    let clients: Vec<String> = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let clients: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["client"].as_str().map(str::to_string))
            .collect();
        if clients.len() >= 2 {
            break clients;
        }
        assert!(std::time::Instant::now() < deadline, "no access log lines");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(clients[0], "203.0.113.7:40001");
    assert_eq!(clients[1], "[2001:db8::9]:40002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_closes_untrusted_peers_and_malformed_headers() {
    let upstream = Upstream::start("a").await;
    let gw = Gateway::start(&proxied_http(upstream.addr, "127.0.0.1/32"));
    let answer = request_after(&gw, b"PROXY TCP4 not-an-address\r\n").await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // No header at all: the request itself is not one.
    let answer = request_after(&gw, b"").await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let gw = Gateway::start(&proxied_http(upstream.addr, "10.0.0.0/8"));
    let answer = request_after(&gw, b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80\r\n").await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream");
    // A regular client still gets answers on a listener without proxy_protocol.
    let plain = client()
        .get(format!("http://{}/", upstream.addr))
        .send()
        .await
        .expect("direct");
    assert_eq!(plain.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_protocol_tells_the_member_who_connected() {
    for version in ["v1", "v2"] {
        // The member parses the header with ppp and answers with the source it names.
        let member = tcp_server(|mut stream| async move {
            let mut buf = vec![0u8; 512];
            let mut n = 0;
            let source = loop {
                match stream.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(m) => n += m,
                }
                match ppp::HeaderResult::parse(&buf[..n]) {
                    ppp::HeaderResult::V1(Ok(h)) => match h.addresses {
                        ppp::v1::Addresses::Tcp4(a) => {
                            break format!("v1 {}:{}", a.source_address, a.source_port)
                        }
                        other => break format!("v1 {other:?}"),
                    },
                    ppp::HeaderResult::V2(Ok(h)) => match h.addresses {
                        ppp::v2::Addresses::IPv4(a) => {
                            break format!("v2 {}:{}", a.source_address, a.source_port)
                        }
                        other => break format!("v2 {other:?}"),
                    },
                    r if ppp::PartialResult::is_incomplete(&r) => continue,
                    other => break format!("bad {other:?}"),
                }
            };
            let _ = stream.write_all(source.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        let gw = Gateway::start(&tcp_config(
            &[member],
            &format!("send_proxy_protocol = \"{version}\""),
        ));
        let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
        let me = stream.local_addr().expect("local");
        let answer = String::from_utf8(read_all(&mut stream).await).expect("utf-8");
        assert_eq!(answer, format!("{version} {me}"));
    }
}

#[test]
fn route_explains_tcp_and_passthrough_routes() {
    let pki = Pki::new("edgegate test ca");
    let dir = tempfile::tempdir().expect("tempdir");
    pki.issue(&["gw.example.com"]).write(dir.path(), "gw");
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"db\"\naddress = \"127.0.0.1:5432\"\nprotocol = \"tcp\"\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\ncertificates = [{ cert = \"gw.pem\", key = \"gw.key\" }]\n\n\
         [[tcp_routes]]\nname = \"pg\"\nlisteners = [\"db\"]\nupstream = \"pg\"\n\n\
         [[tcp_routes]]\nname = \"passthrough\"\nlisteners = [\"secure\"]\nsni = [\"*.mtls.example.com\", \"secure.example.com\"]\nupstream = \"secure\"\n\n\
         [upstreams.pg]\nendpoints = [\"127.0.0.1:15432\"]\nsend_proxy_protocol = \"v2\"\n\n\
         [upstreams.secure]\nendpoints = [\"127.0.0.1:9443\", \"127.0.0.1:9444\"]\n",
    )
    .expect("write");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::gateway::BIN)
            .arg("route")
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .expect("run route");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["TCP", "tls://a.mtls.example.com:8443"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "route: passthrough");
    assert!(
        lines.contains(&"upstream: secure 127.0.0.1:9443 127.0.0.1:9444"),
        "{out}"
    );
    assert!(lines.contains(&"listener: secure"), "{out}");
    assert!(
        out.contains("reason: sni \"*.mtls.example.com\" (wildcard)"),
        "{out}"
    );

    let (code, out) = run(&["tcp", "tcp://127.0.0.1:5432"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("route: pg\nupstream: pg 127.0.0.1:15432\nlistener: db\n"),
        "{out}"
    );
    assert!(out.contains("proxy-protocol: V2"), "{out}");

    let (code, out) = run(&["--listener", "secure", "TCP", "gw.example.com"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("no route\nterminated: listener secure terminates TLS"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_pool_checks_its_members_by_connecting() {
    let a = named_server("a").await;
    let down = closed_port();
    let gw = Gateway::start(&tcp_config(
        &[down, a],
        "[upstreams.pool.health_check]\ninterval = \"100ms\"\nunhealthy_threshold = 1\n",
    ));
    let sample = "edgegate_health_checks_total{result=\"fail\",upstream=\"pool\"}";
    let deadline = std::time::Instant::now() + WAIT;
    while gw.metric(sample).await.is_none() {
        assert!(std::time::Instant::now() < deadline, "no failed check");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without retries, only a pool that skips the unhealthy member answers every time.
    for _ in 0..4 {
        let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
        assert_eq!(read_all(&mut stream).await, b"a");
    }
    assert_eq!(
        gw.metric("edgegate_health_checks_total{result=\"pass\",upstream=\"pool\"}")
            .await
            .map(|n| n >= 1.0),
        Some(true),
        "the listening member passes a connect check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_further_relays_until_one_closes() {
    let echo = echo_server().await;
    let text = listener_keys(&tcp_config(&[echo], ""), "db", "max_connections = 1");
    // Two workers: the waiting connection sits on one of their sockets, whichever the
    // kernel picked, and the slot the first frees must reach that one.
    let gw = Gateway::start(&format!("[gateway]\nthreads = 2\n{text}"));
    let mut first = TcpStream::connect(gw.addr("db")).await.expect("connect");
    first.write_all(b"one").await.expect("send");
    let mut buf = [0u8; 3];
    tokio::time::timeout(WAIT, first.read_exact(&mut buf))
        .await
        .expect("the first relayed")
        .expect("echo");
    // The second waits in the backlog: its bytes are not relayed yet.
    let mut second = TcpStream::connect(gw.addr("db")).await.expect("connect");
    second.write_all(b"two").await.expect("send");
    assert_eq!(
        gw.metric("edgegate_tcp_connections_total{listener=\"db\",route=\"pg\",upstream=\"pool\"}")
            .await,
        Some(1.0)
    );
    first.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut first).await, b"got 3 bytes");
    tokio::time::timeout(WAIT, second.read_exact(&mut buf))
        .await
        .expect("relayed once the first closed")
        .expect("echo");
    assert_eq!(&buf, b"two");
}

/// Each worker accepts from its own socket of the `SO_REUSEPORT` group, and the kernel
/// picks the socket by the connection's addresses: a worker that took the one slot before
/// any connection arrived would hold it while a connection waits on the other's socket,
/// unserved for as long as no connection lands on the holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_with_two_workers_serves_each_connection_in_turn() {
    let echo = echo_server().await;
    let text = listener_keys(&tcp_config(&[echo], ""), "db", "max_connections = 1");
    let gw = Gateway::start(&format!("[gateway]\nthreads = 2\n{text}"));
    // Each from a new source port, so they spread over both workers' sockets; a stranded
    // slot stalls one of 12 with a chance of 1 - 2^-12.
    for i in 0..12u8 {
        let mut stream = TcpStream::connect(gw.addr("db")).await.expect("connect");
        stream.write_all(&[b'a' + i]).await.expect("send");
        let mut buf = [0u8; 1];
        tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {i} relayed within {WAIT:?}"))
            .expect("echo");
        assert_eq!(buf[0], b'a' + i);
        stream.shutdown().await.expect("shutdown");
        assert_eq!(read_all(&mut stream).await, b"got 1 bytes");
    }
    assert_eq!(
        gw.metric("edgegate_tcp_connections_total{listener=\"db\",route=\"pg\",upstream=\"pool\"}")
            .await,
        Some(12.0)
    );
}
