//! Traffic policy on routes (access lists, rate limits, CORS, cookie matches, weighted
//! backends), on HTTP/1.1, h2c and HTTP/2 over TLS; the upstream's view shows that a
//! refused or preflight request never reaches it. Global limits run against a real
//! `redis-server` this test starts on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::request_core::{start, start_with_listener_keys, Proto, EVERY};
use crate::support::{Gateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_refuse_before_the_upstream_on_every_protocol() {
    let upstream = Upstream::start("app").await;
    let edge = start_with_listener_keys(
        "trusted_proxies = [\"127.0.0.1\"]",
        &format!(
            "[[routes]]\nname = \"denied\"\npath_prefix = \"/denied\"\nupstream = \"app\"\ndeny = [\"127.0.0.0/8\"]\n\n\
             [[routes]]\nname = \"office\"\npath_prefix = \"/office\"\nupstream = \"app\"\n\
             allow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.9\"]\n\n\
             [[routes]]\nname = \"page\"\npath_prefix = \"/page\"\nallow = [\"10.0.0.0/8\"]\n\
             respond = {{ status = 200, body = \"page\" }}\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
    );
    let mut refused = 0;
    for proto in EVERY {
        let denied = edge.get(proto, "/denied", &[]).await;
        assert_eq!(denied.status(), 403, "{proto:?}");
        // The peer (a trusted proxy) vouches for the hop before it.
        let office = edge
            .get(proto, "/office", &[("x-forwarded-for", "203.0.113.5")])
            .await;
        assert_eq!(office.status(), 200, "{proto:?}");
        let outsider = edge
            .get(proto, "/office", &[("x-forwarded-for", "198.51.100.1")])
            .await;
        assert_eq!(outsider.status(), 403, "{proto:?}");
        // deny wins over allow; the nearest untrusted hop is the client.
        let banned = edge
            .get(
                proto,
                "/office",
                &[("x-forwarded-for", "203.0.113.5, 203.0.113.9")],
            )
            .await;
        assert_eq!(banned.status(), 403, "{proto:?}");
        // A direct response is guarded too.
        let page = edge.get(proto, "/page", &[]).await;
        assert_eq!(page.status(), 403, "{proto:?}");
        refused += 4;
    }
    assert_eq!(
        upstream.hits(),
        EVERY.len(),
        "only the admitted requests arrive"
    );
    assert!(upstream.seen().iter().all(|s| s.path == "/office"));
    let metrics = edge.gw.metrics_text().await;
    let count = |route: &str| {
        crate::support::gateway::metric_value(
            &metrics,
            &format!("edgegate_access_denied_total{{route=\"{route}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        count("denied") + count("office") + count("page"),
        refused as f64,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limits_answer_429_with_the_wait_on_every_protocol() {
    let upstream = Upstream::start("app").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"api\"\nupstream = \"app\"\n\
         rate_limit = {{ requests = 1, per = \"1h\", burst = 3, key = {{ header = \"x-user\" }} }}\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    for proto in EVERY {
        let user = format!("{proto:?}");
        for remaining in ["2", "1", "0"] {
            let ok = edge.get(proto, "/", &[("x-user", &user)]).await;
            assert_eq!(ok.status(), 200, "{proto:?}");
            assert_eq!(ok.headers()["ratelimit-limit"], "3", "{proto:?}");
            assert_eq!(ok.headers()["ratelimit-remaining"], remaining, "{proto:?}");
            assert!(ok.headers().contains_key("ratelimit-reset"), "{proto:?}");
        }
        let refused = edge.get(proto, "/", &[("x-user", &user)]).await;
        assert_eq!(refused.status(), 429, "{proto:?}");
        assert_eq!(refused.headers()["ratelimit-remaining"], "0", "{proto:?}");
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .expect("text")
            .parse()
            .expect("whole seconds");
        assert!(
            (3590..=3600).contains(&retry),
            "{proto:?}: one token an hour, {retry}"
        );
    }
    assert_eq!(
        upstream.hits(),
        3 * EVERY.len(),
        "a refused request is never forwarded"
    );
    let limited = edge
        .gw
        .metric("edgegate_rate_limited_total{route=\"api\"}")
        .await;
    assert_eq!(limited, Some(EVERY.len() as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_allowed_origins_get_headers_on_every_protocol() {
    let upstream = Upstream::start("app").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"api\"\nupstream = \"app\"\n\
         cors = {{ allow_origins = [\"https://app.example.com\", \"https://*.example.org\"], \
         allow_methods = [\"GET\", \"POST\"], allow_headers = [\"content-type\"], \
         expose_headers = [\"x-request-id\"], allow_credentials = true, max_age = \"10m\" }}\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    for proto in EVERY {
        let preflight = edge
            .client(proto)
            .request(http::Method::OPTIONS, edge.url(proto, "/items"))
            .header("origin", "https://a.b.example.org")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert_eq!(preflight.status(), 204, "{proto:?}");
        let h = preflight.headers();
        assert_eq!(h["access-control-allow-origin"], "https://a.b.example.org");
        assert_eq!(h["access-control-allow-methods"], "GET, POST", "{proto:?}");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");

        let actual = edge
            .get(proto, "/items", &[("origin", "https://app.example.com")])
            .await;
        assert_eq!(actual.status(), 200, "{proto:?}");
        let h = actual.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(
            h.get_all("vary").iter().any(|v| v == "origin"),
            "{proto:?}: {h:?}"
        );
        assert!(!h.contains_key("access-control-allow-methods"), "{proto:?}");

        let other = edge
            .get(proto, "/items", &[("origin", "https://evil.example.com")])
            .await;
        assert_eq!(other.status(), 200, "{proto:?}");
        assert!(
            !other
                .headers()
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{proto:?}: {:?}",
            other.headers()
        );
    }
    assert_eq!(
        upstream.hits(),
        2 * EVERY.len(),
        "no preflight was forwarded"
    );
    assert!(upstream.seen().iter().all(|s| s.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_matches_and_weighted_backends_route_on_every_protocol() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"split\"\npath_prefix = \"/checkout\"\n\
         backends = [{{ upstream = \"v1\", weight = 1 }}, {{ upstream = \"v2\", weight = 1 }}]\n\n\
         [[routes]]\nname = \"canary\"\npath_prefix = \"/checkout\"\ncookies = {{ \"canary\" = \"always\" }}\n\
         upstream = \"v2\"\n\n\
         [upstreams.v1]\nendpoints = [\"{}\"]\n\n[upstreams.v2]\nendpoints = [\"{}\"]\n",
        v1.addr, v2.addr
    ));
    for proto in EVERY {
        let before = v2.hits();
        for _ in 0..3 {
            let r = edge
                .get(proto, "/checkout", &[("cookie", "a=1; canary=always")])
                .await;
            assert_eq!(r.status(), 200, "{proto:?}");
        }
        assert_eq!(v2.hits(), before + 3, "{proto:?}: the cookie route wins");
        let r = edge
            .get(proto, "/checkout", &[("cookie", "canary=never")])
            .await;
        assert_eq!(r.status(), 200, "{proto:?}");
    }
    // An even split over many requests reaches both (the chance one gets none of 60 is
    // 2^-59).
    for _ in 0..60 {
        let r = edge.get(Proto::H1, "/checkout", &[]).await;
        assert_eq!(r.status(), 200);
    }
    assert!(v1.hits() > 0 && v2.hits() > 3 * EVERY.len());
}

/// A `redis-server` on a free loopback port, stopped by its pid when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = crate::support::closed_port().port();
        let redis = Self::spawn(&["--port", &port.to_string()], port);
        for _ in 0..200 {
            if redis.ping().await {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not answer PING on port {port}");
    }

    /// TLS only (`rediss://`), with the certificate and key `dir/redis.pem`,
    /// `dir/redis.key`; clients need no certificate. Ready once it accepts connections.
    async fn start_tls(dir: &std::path::Path) -> Redis {
        let port = crate::support::closed_port().port();
        let file = |name: &str| dir.join(name).display().to_string();
        let redis = Self::spawn(
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &file("redis.pem"),
                "--tls-key-file",
                &file("redis.key"),
                "--tls-ca-cert-file",
                &file("ca.pem"),
                "--tls-auth-clients",
                "no",
            ],
            port,
        );
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not accept TLS connections on port {port}");
    }

    fn spawn(args: &[&str], port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        Redis { child, port }
    }

    async fn ping(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
        )
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn global_gateway(upstream: &Upstream, port: u16, on_error: &str) -> Gateway {
    Gateway::start(&crate::config(
        &["web"],
        &format!(
            "[gateway.rate_limit_store]\nurl = \"redis://127.0.0.1:{port}/0\"\non_error = \"{on_error}\"\ntimeout = \"2s\"\n\n\
             [[routes]]\nname = \"api\"\nupstream = \"app\"\n\
             rate_limit = {{ requests = 1, per = \"1h\", burst = 4, key = \"route\", scope = \"global\" }}\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_global_limit_and_follow_on_error_when_the_store_is_gone() {
    let mut redis = Redis::start().await;
    let upstream = Upstream::start("app").await;
    let lenient = global_gateway(&upstream, redis.port, "allow");
    let strict = global_gateway(&upstream, redis.port, "deny");
    lenient.wait_ready().await;
    strict.wait_ready().await;
    let h1 = crate::support::client();
    let h2 = crate::support::h2c_client();
    let mut admitted = 0;
    let mut limited = 0;
    for i in 0..10 {
        // Alternating gateways and protocols: HTTP/1.1 to one, h2c to the other.
        let response = if i % 2 == 0 {
            h1.get(lenient.url("web", "/")).send().await
        } else {
            h2.get(strict.url("web", "/")).send().await
        }
        .expect("response");
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((admitted, limited), (4, 6), "the two share one bucket of 4");
    assert_eq!(upstream.hits(), 4);

    redis.stop();
    let allowed = h1.get(lenient.url("web", "/")).send().await.expect("allow");
    assert_eq!(allowed.status(), 200, "on_error = allow admits");
    let denied = h2.get(strict.url("web", "/")).send().await.expect("deny");
    assert_eq!(denied.status(), 503, "on_error = deny refuses");
    assert_eq!(upstream.hits(), 5);
    for gw in [&lenient, &strict] {
        let errors = gw.metric("edgegate_rate_limit_store_errors_total").await;
        assert!(errors.unwrap_or(0.0) >= 1.0, "{errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_limit_reaches_redis_over_tls_and_verifies_its_certificate() {
    let pki = crate::support::pki::Pki::new("redis ca");
    let certs = tempfile::tempdir().expect("tempdir");
    pki.issue(&["127.0.0.1"]).write(certs.path(), "redis");
    std::fs::write(certs.path().join("ca.pem"), &pki.ca_pem).expect("ca");
    let stranger = crate::support::pki::Pki::new("another ca");
    std::fs::write(certs.path().join("other.pem"), &stranger.ca_pem).expect("other ca");
    let redis = Redis::start_tls(certs.path()).await;
    let upstream = Upstream::start("app").await;
    // on_error = "deny": a store that cannot be reached answers 503, never a pass.
    let gateway = |trust: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgegate.toml");
        let text = crate::config(
            &["web"],
            &format!(
                "[gateway.rate_limit_store]\nurl = \"rediss://127.0.0.1:{}/0\"\non_error = \"deny\"\ntimeout = \"2s\"\n\n\
                 [[routes]]\nname = \"api\"\nupstream = \"app\"\n\
                 rate_limit = {{ requests = 1, per = \"1h\", burst = 2, key = \"route\", scope = \"global\" }}\n\n\
                 [upstreams.app]\nendpoints = [\"{}\"]\n",
                redis.port, upstream.addr
            ),
        );
        std::fs::write(&path, text).expect("config");
        // The store's roots are the system's; SSL_CERT_FILE names them.
        let roots = certs.path().join(trust).display().to_string();
        Gateway::spawn(dir, path, &[("SSL_CERT_FILE", &roots)])
    };
    let trusting = gateway("ca.pem");
    let wary = gateway("other.pem");
    trusting.wait_ready().await;
    wary.wait_ready().await;
    let client = crate::support::client();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(trusting.url("web", "/"))
            .send()
            .await
            .expect("response");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the bucket of 2 lives in the TLS store"
    );
    let refused = client
        .get(wary.url("web", "/"))
        .send()
        .await
        .expect("response");
    assert_eq!(
        refused.status(),
        503,
        "a store whose certificate is not trusted is not used"
    );
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_cookies_return_clients_to_their_member_on_every_protocol() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"app\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nendpoints = [\"{}\", \"{}\"]\n\
         affinity = {{ cookie = \"edge-app\", max_age = \"1h\" }}\n",
        a.addr, b.addr
    ));
    for proto in EVERY {
        let first = edge.get(proto, "/", &[]).await;
        assert_eq!(first.status(), 200, "{proto:?}");
        let member = first.headers()["x-upstream"]
            .to_str()
            .expect("name")
            .to_string();
        let cookie = first.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .to_string();
        assert!(cookie.starts_with("edge-app="), "{proto:?}: {cookie}");
        for attribute in ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"] {
            assert!(cookie.contains(attribute), "{proto:?}: {cookie}");
        }
        let pair = cookie.split(';').next().expect("pair").to_string();
        // Round robin alone would alternate; the cookie keeps the member.
        for _ in 0..4 {
            let again = edge.get(proto, "/", &[("cookie", &pair)]).await;
            assert_eq!(again.headers()["x-upstream"], member.as_str(), "{proto:?}");
            assert!(
                !again.headers().contains_key("set-cookie"),
                "{proto:?}: the cookie is set once"
            );
        }
        // A cookie naming no member in rotation is replaced.
        let stale = edge.get(proto, "/", &[("cookie", "edge-app=gone")]).await;
        assert_eq!(stale.status(), 200, "{proto:?}");
        assert!(
            stale.headers()["set-cookie"]
                .to_str()
                .expect("cookie")
                .starts_with("edge-app="),
            "{proto:?}"
        );
    }
}

/// Decodes a body in `encoding` (`zstd`, `br` or `gzip`).
fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(bytes)
            .expect("decoder")
            .read_to_end(&mut out),
        other => panic!("unexpected encoding {other}"),
    }
    .expect("decodes");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_answers_decode_byte_exact_for_every_codec_on_every_protocol() {
    let upstream = Upstream::start("app").await;
    let edge = start(&format!(
        "[[routes]]\nname = \"app\"\nupstream = \"app\"\ncompress = true\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ));
    let body: Vec<u8> = (0..2_000u32)
        .flat_map(|i| format!("{{\"item\":{i},\"name\":\"thing\"}},").into_bytes())
        .collect();
    let post = |proto: Proto, accept: &str, extra: Option<(&str, &str)>, body: Vec<u8>| {
        let mut request = edge
            .client(proto)
            .post(edge.url(proto, "/echo"))
            .header("accept-encoding", accept)
            .body(body);
        if let Some((k, v)) = extra {
            request = request.header(k, v);
        }
        request.send()
    };
    for proto in EVERY {
        for (accept, expected) in [
            ("gzip, br, zstd", "zstd"),
            ("gzip, br", "br"),
            ("br;q=0.5, gzip", "gzip"),
        ] {
            let response = post(proto, accept, None, body.clone()).await.expect("post");
            assert_eq!(response.status(), 200, "{proto:?}");
            let h = response.headers().clone();
            assert_eq!(h["content-encoding"], expected, "{proto:?} {accept}");
            assert!(!h.contains_key("content-length"), "{proto:?}: {h:?}");
            assert!(
                h.get_all("vary").iter().any(|v| v == "accept-encoding"),
                "{proto:?}"
            );
            let encoded = response.bytes().await.expect("body");
            assert!(encoded.len() < body.len() / 4, "{proto:?} {expected}");
            assert!(decode(expected, &encoded) == body, "{proto:?} {expected}");
        }
        // Never for a range, a client that accepts none, or a small body.
        let ranged = post(proto, "gzip", Some(("range", "bytes=0-9")), body.clone())
            .await
            .expect("post");
        assert!(
            !ranged.headers().contains_key("content-encoding"),
            "{proto:?}"
        );
        let identity = post(proto, "identity", None, body.clone())
            .await
            .expect("post");
        assert!(!identity.headers().contains_key("content-encoding"));
        assert!(identity.bytes().await.expect("body") == body);
        let small = post(proto, "gzip", None, b"{}".to_vec())
            .await
            .expect("post");
        assert!(
            !small.headers().contains_key("content-encoding"),
            "{proto:?}"
        );
        assert_eq!(small.bytes().await.expect("body"), &b"{}"[..]);
    }
    let metrics = edge.gw.metrics_text().await;
    for encoding in ["zstd", "br", "gzip"] {
        let sample =
            format!("edgegate_compressed_responses_total{{encoding=\"{encoding}\",route=\"app\"}}");
        assert_eq!(
            crate::support::gateway::metric_value(&metrics, &sample),
            Some(EVERY.len() as f64),
            "{sample}: {metrics}"
        );
    }
    // An encoded answer is chunked anew: the HTTP/1.1 connection stays open for the next
    // request (it closed after every compressed answer once).
    let mut raw = crate::support::RawClient::connect(edge.gw.addr("web")).await;
    let request = format!(
        "POST /echo HTTP/1.1\r\nhost: app.test\r\naccept-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    for round in 0..2 {
        raw.send(request.as_bytes()).await;
        raw.send(&body).await;
        let response = raw.response(false, Duration::from_secs(5)).await;
        assert_eq!(response.status, 200, "request {round} on one connection");
        assert!(
            !response.head.has_token("connection", "close"),
            "a compressed answer closed the connection: {:?}",
            response.head.fields
        );
        assert!(response.head.has_token("content-encoding", "gzip"));
    }
}
