//! Authentication at the edge, on HTTP/1.1 (the own loop), h2c and HTTP/2 over TLS
//! (pingora's path): basic (htpasswd), JWT against a JWKS, forward auth. Hashes, keys and
//! tokens are made here with real libraries; the auth service and the JWKS endpoint are
//! real servers on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::request_core::{start_with_files, Edge, Proto, EVERY};
use crate::support::Upstream;

const WAIT: Duration = Duration::from_secs(10);

/// The protocol matrix of the request-core tests, with the authenticators' files (users,
/// JWKS) written beside the config.
fn start(rest: &str, files: &[(&str, String)]) -> Edge {
    start_with_files("", rest, files)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_on_every_protocol_and_a_users_file_edited_live() {
    let upstream = Upstream::start("app").await;
    let alice = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let edge = start(
        &format!(
            "[auth.staff]\ntype = \"basic\"\nusers_file = \"staff.htpasswd\"\nrealm = \"staff\"\n\n\
             [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\nauth = \"staff\"\n\n\
             [[routes]]\nname = \"hello\"\npath_prefix = \"/hello\"\nrespond = {{ status = 200, body = \"hi\" }}\nauth = \"staff\"\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
        &[("staff.htpasswd", format!("# staff\nalice:{alice}\n"))],
    );
    for proto in EVERY {
        let none = edge.get(proto, "/admin/x", &[]).await;
        assert_eq!(none.status(), 401, "{proto:?}");
        assert_eq!(challenge(&none), "Basic realm=\"staff\"", "{proto:?}");
        let wrong = edge
            .get(
                proto,
                "/admin/x",
                &[("authorization", &basic("alice", "nope"))],
            )
            .await;
        assert_eq!(wrong.status(), 401, "{proto:?}");
        assert_eq!(challenge(&wrong), "Basic realm=\"staff\"", "{proto:?}");
        let unknown = edge
            .get(
                proto,
                "/admin/x",
                &[("authorization", &basic("mallory", "s3cret"))],
            )
            .await;
        assert_eq!(unknown.status(), 401, "{proto:?}");
        let hits = upstream.hits();
        let right = edge
            .get(
                proto,
                "/admin/x",
                &[("authorization", &basic("alice", "s3cret"))],
            )
            .await;
        assert_eq!(right.status(), 200, "{proto:?}");
        assert_eq!(upstream.hits(), hits + 1, "{proto:?}");
        let seen = upstream.last();
        assert!(
            !seen.headers.contains_key("authorization"),
            "{proto:?}: the password reached the upstream"
        );
        // A request with a body is refused before the body is read, and the client
        // sees the 401, not a reset.
        let post = edge
            .client(proto)
            .post(edge.url(proto, "/admin/upload"))
            .body(vec![b'x'; 256 * 1024])
            .send()
            .await
            .expect("post");
        assert_eq!(post.status(), 401, "{proto:?}");
        // A respond route is guarded too.

        let hello = edge.get(proto, "/hello", &[]).await;
        assert_eq!(hello.status(), 401, "{proto:?}");
        let hello = edge
            .get(
                proto,
                "/hello",
                &[("authorization", &basic("alice", "s3cret"))],
            )
            .await;
        assert_eq!(hello.status(), 200, "{proto:?}");
        assert_eq!(hello.text().await.expect("body"), "hi");
    }
    let allowed = edge
        .gw
        .metric("edgegate_auth_total{result=\"allowed\",route=\"admin\"}")
        .await;
    assert!(allowed.is_some_and(|v| v >= 3.0), "{allowed:?}");

    // The users file is edited: bob is added, alice removed; the watcher reloads it.
    let bob = bcrypt::hash("hunter2", 4).expect("bcrypt");
    let skip = edge.gw.log_len();
    std::fs::write(
        edge.gw.dir.path().join("staff.htpasswd"),
        format!("bob:{bob}\n"),
    )
    .expect("rewrite users");
    edge.gw
        .wait_for_log_after("config reloaded", skip, Duration::from_secs(10));
    for proto in EVERY {
        let bob = edge
            .get(
                proto,
                "/admin/x",
                &[("authorization", &basic("bob", "hunter2"))],
            )
            .await;
        assert_eq!(bob.status(), 200, "{proto:?}");
        let alice = edge
            .get(
                proto,
                "/admin/x",
                &[("authorization", &basic("alice", "s3cret"))],
            )
            .await;
        assert_eq!(alice.status(), 401, "{proto:?}");
    }
}

#[test]
fn a_weak_hash_in_a_users_file_is_refused_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = bcrypt::hash("pw", 4).expect("bcrypt");
    std::fs::write(
        dir.path().join("users"),
        format!("# comment\nok:{ok}\nbad:$apr1$x$y\n"),
    )
    .expect("users");
    let config = dir.path().join("edgegate.toml");
    std::fs::write(
        &config,
        "[auth.staff]\ntype = \"basic\"\nusers_file = \"users\"\n\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"a\"\nrespond = { status = 200 }\nauth = \"staff\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(crate::support::gateway::BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("users:3:5: user \"bad\": the password is stored as MD5"),
        "{text}"
    );
}

/// An ES256 key made here, with its JWK.
struct Key {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

impl Key {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        });
        Self {
            kid: kid.to_string(),
            encoding: jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
                .expect("pem"),
            jwk,
        }
    }

    fn token(&self, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("token")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn jwks(keys: &[&Key]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
        .to_string()
}

fn claims(sub: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "email": format!("{sub}@example.test"), "iss": "https://idp.test/",
        "aud": "api", "exp": exp,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_on_every_protocol_with_claims_upstream_and_forged_identities_stripped() {
    let upstream = Upstream::start("app").await;
    let key = Key::new("k1");
    let other = Key::new("k1");
    let edge = start(
        &format!(
            "[gateway]\naccess_log = \"access.log\"\n\n\
             [auth.api]\ntype = \"jwt\"\njwks_file = \"jwks.json\"\nissuer = \"https://idp.test/\"\n\
             audiences = [\"api\"]\nclock_skew = \"5s\"\n\
             claims_to_headers = {{ sub = \"x-user\", email = \"x-user-email\" }}\n\n\
             [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"app\"\nauth = \"api\"\n\n\
             [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"app\"\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
        &[("jwks.json", jwks(&[&key]))],
    );
    let good = key.token(claims("u-1", now() + 600));
    let expired = key.token(claims("u-1", now() - 600));
    let forged = other.token(claims("u-1", now() + 600));
    let wrong_aud = key.token(serde_json::json!({
        "sub": "u-1", "iss": "https://idp.test/", "aud": "other", "exp": now() + 600
    }));
    let no_iss = key.token(serde_json::json!({"sub": "u-1", "aud": "api", "exp": now() + 600}));
    let no_aud = key.token(serde_json::json!({
        "sub": "u-1", "iss": "https://idp.test/", "exp": now() + 600
    }));
    let no_exp = key.token(serde_json::json!({
        "sub": "u-1", "iss": "https://idp.test/", "aud": "api"
    }));
    let not_yet = key.token(serde_json::json!({
        "sub": "u-1", "iss": "https://idp.test/", "aud": "api", "exp": now() + 600,
        "nbf": now() + 300
    }));
    // alg "none": a header and claims with no signature.
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        b64(&claims("u-1", now() + 600).to_string())
    );
    let hs = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims("u-1", now() + 600),
            &jsonwebtoken::EncodingKey::from_secret(key.jwk.to_string().as_bytes()),
        )
        .expect("hs token")
    };
    for proto in EVERY {
        let missing = edge.get(proto, "/api/x", &[("x-user", "root")]).await;
        assert_eq!(missing.status(), 401, "{proto:?}");
        assert_eq!(challenge(&missing), "Bearer", "{proto:?}");
        for (what, token) in [
            ("expired", &expired),
            ("signed by another key", &forged),
            ("another audience", &wrong_aud),
            ("no issuer", &no_iss),
            ("no audience", &no_aud),
            ("no expiry", &no_exp),
            ("not yet valid", &not_yet),
            ("alg none", &none),
            ("HS256", &hs),
            ("garbage", &"a.b.c".to_string()),
        ] {
            let refused = edge
                .get(
                    proto,
                    "/api/x",
                    &[("authorization", &format!("Bearer {token}"))],
                )
                .await;
            assert_eq!(refused.status(), 401, "{proto:?} {what}");
            assert_eq!(
                challenge(&refused),
                "Bearer error=\"invalid_token\"",
                "{proto:?} {what}"
            );
        }
        let hits = upstream.hits();
        let ok = edge
            .get(
                proto,
                "/api/x",
                &[
                    ("authorization", &format!("Bearer {good}")),
                    ("x-user", "root"),
                    ("x-user-email", "root@evil.test"),
                ],
            )
            .await;
        assert_eq!(ok.status(), 200, "{proto:?}");
        assert_eq!(upstream.hits(), hits + 1, "{proto:?}");
        let seen = upstream.last();
        assert_eq!(
            seen.headers.get_all("x-user").iter().collect::<Vec<_>>(),
            ["u-1"],
            "{proto:?}"
        );
        assert_eq!(
            seen.headers["x-user-email"], "u-1@example.test",
            "{proto:?}"
        );
        // On a route without auth the claimed identity is stripped as well.
        let open = edge
            .get(proto, "/open", &[("x-user", "root"), ("x-user-email", "x")])
            .await;
        assert_eq!(open.status(), 200, "{proto:?}");
        let seen = upstream.last();
        assert!(!seen.headers.contains_key("x-user"), "{proto:?}");
        assert!(!seen.headers.contains_key("x-user-email"), "{proto:?}");
    }
    // The access log names the verdict, and the subject of an accepted token.
    let path = edge.gw.dir.path().join("access.log");
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect::<Vec<_>>();
        if lines.iter().filter(|v| v["route"] == "open").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = lines
        .iter()
        .find(|v| v["route"] == "api" && v["status"] == 200)
        .expect("an accepted request logged");
    assert_eq!(accepted["auth"]["result"], "allowed");
    assert_eq!(accepted["auth"]["user"], "u-1");
    let refused = lines
        .iter()
        .find(|v| v["route"] == "api" && v["status"] == 401)
        .expect("a refused request logged");
    assert_eq!(refused["auth"]["result"], "denied");
    let open = lines
        .iter()
        .find(|v| v["route"] == "open")
        .expect("an open request logged");
    assert!(open.get("auth").is_none(), "{open}");
}

/// A tiny HTTP/1.1 server on loopback answering with `handler`; the counter counts the
/// connections it accepted.
async fn serve<H>(handler: H) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>)
where
    H: Fn(http::Request<hyper::body::Incoming>) -> (u16, Vec<(&'static str, String)>, String)
        + Send
        + Sync
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handler = Arc::new(handler);
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move {
                        let delay = req
                            .headers()
                            .get("x-delay-ms")
                            .and_then(|v| v.to_str().ok()?.parse().ok());
                        if let Some(ms) = delay {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let (status, headers, body) = handler(req);
                        let mut response = http::Response::builder().status(status);
                        for (name, value) in headers {
                            response = response.header(name, value);
                        }
                        Ok::<_, Infallible>(
                            response
                                .body(Full::new(Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_a_url_follows_rotation_and_survives_an_outage() {
    let upstream = Upstream::start("app").await;
    let first = Key::new("k1");
    let second = Key::new("k2");
    let served = Arc::new(Mutex::new((200u16, jwks(&[&first]))));
    let jwks_state = served.clone();
    let (jwks_addr, _) = serve(move |_| {
        let (status, body) = jwks_state.lock().expect("lock").clone();
        (
            status,
            vec![("content-type", "application/json".into())],
            body,
        )
    })
    .await;
    let edge = start(
        &format!(
            "[auth.api]\ntype = \"jwt\"\njwks_url = \"http://{jwks_addr}/jwks.json\"\n\n\
             [[routes]]\nname = \"api\"\nupstream = \"app\"\nauth = \"api\"\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
        &[],
    );
    let bearer = |key: &Key| format!("Bearer {}", key.token(claims("u", now() + 600)));
    for proto in EVERY {
        let ok = edge
            .get(proto, "/x", &[("authorization", &bearer(&first))])
            .await;
        assert_eq!(ok.status(), 200, "{proto:?}");
    }
    // The provider rotates to k2: a token with the unknown kid makes the gateway fetch
    // again (the first such fetch is allowed at once, 10 s after start at most).
    *served.lock().expect("lock") = (200, jwks(&[&first, &second]));
    let mut passed = false;
    for _ in 0..60 {
        let response = edge
            .get(Proto::H1, "/x", &[("authorization", &bearer(&second))])
            .await;
        if response.status() == 200 {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(passed, "the rotated key was never fetched");
    // The endpoint goes down: the last good set keeps serving.
    *served.lock().expect("lock") = (500, "down".into());
    for proto in EVERY {
        for key in [&first, &second] {
            let ok = edge
                .get(proto, "/x", &[("authorization", &bearer(key))])
                .await;
            assert_eq!(ok.status(), 200, "{proto:?}");
        }
    }
}

/// A verified token is remembered, but only with the key set that verified it: once the
/// provider drops its key (and the gateway has fetched the new set), the same token,
/// accepted a moment ago, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_is_refused_once_its_key_leaves_the_set() {
    let upstream = Upstream::start("app").await;
    let first = Key::new("k1");
    let second = Key::new("k2");
    let served = Arc::new(Mutex::new(jwks(&[&first])));
    let jwks_state = served.clone();
    let (jwks_addr, _) = serve(move |_| {
        let body = jwks_state.lock().expect("lock").clone();
        (200, vec![("content-type", "application/json".into())], body)
    })
    .await;
    let edge = start(
        &format!(
            "[auth.api]\ntype = \"jwt\"\njwks_url = \"http://{jwks_addr}/jwks.json\"\n\n\
             [[routes]]\nname = \"api\"\nupstream = \"app\"\nauth = \"api\"\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
        &[],
    );
    let old_token = format!("Bearer {}", first.token(claims("u", now() + 600)));
    let new_token = format!("Bearer {}", second.token(claims("u", now() + 600)));
    for _ in 0..3 {
        let ok = edge
            .get(Proto::H1, "/x", &[("authorization", &old_token)])
            .await;
        assert_eq!(ok.status(), 200);
    }
    *served.lock().expect("lock") = jwks(&[&second]);
    let mut fetched = false;
    for _ in 0..60 {
        let response = edge
            .get(Proto::H1, "/x", &[("authorization", &new_token)])
            .await;
        if response.status() == 200 {
            fetched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(fetched, "the rotated key was never fetched");
    for proto in EVERY {
        let refused = edge
            .get(proto, "/x", &[("authorization", &old_token)])
            .await;
        assert_eq!(
            refused.status(),
            401,
            "{proto:?}: a dropped key's token passed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_passes_refuses_as_the_service_answers_and_fails_closed() {
    let upstream = Upstream::start("app").await;
    let seen_by_service = Arc::new(Mutex::new(Vec::<http::HeaderMap>::new()));
    let record = seen_by_service.clone();
    let (service, connections) = serve(move |req| {
        record.lock().expect("lock").push(req.headers().clone());
        let cookie = req
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        match cookie.as_str() {
            "sid=good" => (
                200,
                vec![("x-user", "alice".into()), ("x-groups", "staff".into())],
                String::new(),
            ),
            "sid=browser" => (
                302,
                vec![("location", "https://login.test/?rd=x".into())],
                "to the login page".into(),
            ),
            _ => (
                401,
                vec![
                    ("www-authenticate", "Bearer realm=\"sso\"".into()),
                    ("content-type", "text/plain".into()),
                ],
                "who are you?".into(),
            ),
        }
    })
    .await;
    // A port nothing listens on.
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("addr")
    };
    let edge = start(
        &format!(
            "[auth.sso]\ntype = \"forward\"\naddress = \"http://{service}/verify\"\n\
             request_headers = [\"cookie\", \"x-delay-ms\"]\nresponse_headers = [\"x-user\", \"x-groups\"]\ntimeout = \"500ms\"\n\n\
             [auth.down]\ntype = \"forward\"\naddress = \"http://{closed}/verify\"\n\n\
             [[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"app\"\nauth = \"sso\"\n\n\
             [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = \"app\"\nauth = \"down\"\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ),
        &[],
    );
    for proto in EVERY {
        let hits = upstream.hits();
        let ok = edge
            .get(
                proto,
                "/app/page?q=1",
                &[
                    ("cookie", "sid=good"),
                    ("x-user", "root"),
                    ("x-groups", "admin"),
                ],
            )
            .await;
        assert_eq!(ok.status(), 200, "{proto:?}");
        assert_eq!(upstream.hits(), hits + 1, "{proto:?}");
        let seen = upstream.last();
        assert_eq!(
            seen.headers.get_all("x-user").iter().collect::<Vec<_>>(),
            ["alice"],
            "{proto:?}"
        );
        assert_eq!(
            seen.headers.get_all("x-groups").iter().collect::<Vec<_>>(),
            ["staff"],
            "{proto:?}"
        );
        let asked = seen_by_service
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("asked");
        assert_eq!(asked["x-forwarded-method"], "GET", "{proto:?}");
        assert_eq!(asked["x-forwarded-uri"], "/app/page?q=1", "{proto:?}");
        assert_eq!(asked["x-forwarded-for"], "127.0.0.1", "{proto:?}");
        let scheme = if proto == Proto::H2Tls {
            "https"
        } else {
            "http"
        };
        assert_eq!(asked["x-forwarded-proto"], scheme, "{proto:?}");
        assert!(asked["x-forwarded-host"]
            .to_str()
            .expect("host")
            .starts_with("app.test"));

        let redirect = edge
            .get(proto, "/app/page", &[("cookie", "sid=browser")])
            .await;
        assert_eq!(redirect.status(), 302, "{proto:?}");
        assert_eq!(redirect.headers()["location"], "https://login.test/?rd=x");
        assert_eq!(redirect.text().await.expect("body"), "to the login page");

        let refused = edge.get(proto, "/app/page", &[]).await;
        assert_eq!(refused.status(), 401, "{proto:?}");
        assert_eq!(challenge(&refused), "Bearer realm=\"sso\"", "{proto:?}");
        assert_eq!(refused.headers()["content-type"], "text/plain");
        assert_eq!(refused.text().await.expect("body"), "who are you?");

        let slow = edge
            .get(
                proto,
                "/app/page",
                &[("cookie", "sid=good"), ("x-delay-ms", "3000")],
            )
            .await;
        assert_eq!(slow.status(), 503, "{proto:?}");
        let down = edge.get(proto, "/down", &[("cookie", "sid=good")]).await;
        assert_eq!(down.status(), 503, "{proto:?}");
        assert_eq!(
            upstream.hits(),
            hits + 1,
            "{proto:?}: a refused request was forwarded"
        );
    }
    let errors = edge
        .gw
        .metric("edgegate_auth_total{result=\"error\",route=\"down\"}")
        .await;
    assert_eq!(errors, Some(3.0));
    // Subrequests reuse pooled connections (a timed-out one is closed, so a few are new).
    let asked = seen_by_service.lock().expect("lock").len();
    let opened = connections.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        opened * 2 <= asked,
        "{opened} connections for {asked} subrequests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_behind_basic_auth() {
    let hash = bcrypt::hash("scrape", 4).expect("bcrypt");
    let edge = start(
        "[auth.ops]\ntype = \"basic\"\nusers_file = \"ops.htpasswd\"\n\n\
         [[routes]]\nname = \"r\"\nrespond = { status = 200 }\n",
        &[("ops.htpasswd", format!("prom:{hash}\n"))],
    );
    // The admin section is written by `start`; auth is added to it by a reload.
    let text = std::fs::read_to_string(&edge.gw.config_path).expect("config");
    let skip = edge.gw.log_len();
    edge.gw.write_config(&text.replacen(
        "[admin]\naddress = \"127.0.0.1:0\"",
        "[admin]\naddress = \"127.0.0.1:0\"\nauth = \"ops\"",
        1,
    ));
    edge.gw
        .wait_for_log_after("config reloaded", skip, Duration::from_secs(10));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client");
    let metrics = client
        .get(edge.gw.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 401);
    assert_eq!(challenge(&metrics), "Basic realm=\"ops\"");
    let metrics = client
        .get(edge.gw.admin_url("/metrics"))
        .header("authorization", basic("prom", "scrape"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let probe = client
        .get(edge.gw.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(probe.status(), 200);
}

#[test]
fn edgegate_route_names_the_authenticator() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys":[]}"#).expect("jwks");
    let config = dir.path().join("edgegate.toml");
    std::fs::write(
        &config,
        "[auth.api]\ntype = \"jwt\"\njwks_file = \"jwks.json\"\n\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:8080\"\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nrespond = { status = 200 }\nauth = \"api\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(crate::support::gateway::BIN)
        .args(["route", "--config"])
        .arg(&config)
        .args(["GET", "http://app.test/api/x"])
        .output()
        .expect("route");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l == "auth: api (jwt)"), "{text}");
}
