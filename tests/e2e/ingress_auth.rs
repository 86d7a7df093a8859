//! Basic auth on an Ingress (`auth-type: basic` with `auth-secret`), end to end: the real
//! binary watches the API server double, the users come from an Opaque Secret holding
//! bcrypt hashes made here, and the Secret is edited, broken and deleted while requests
//! run, over HTTP/1.1 and h2c.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::kube_api::{Endpoint, KubeApi, TargetPort};
use crate::support::{Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(10);

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(&format!("{user}:{password}")))
}

fn users_secret(api: &KubeApi, name: &str, htpasswd: &str) {
    api.apply_object(
        "Secret",
        "shop",
        name,
        json!({"type": "Opaque", "data": {"auth": b64(htpasswd)}}),
    );
}

fn ingress(api: &KubeApi, name: &str, host: &str, annotations: Value) {
    api.apply_object(
        "Ingress",
        "shop",
        name,
        json!({"metadata": {"annotations": annotations},
               "spec": {"ingressClassName": "edgegate", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}}),
    );
}

/// (status, `www-authenticate`, the upstream that answered or "-").
async fn get(
    gw: &Gateway,
    h2: bool,
    host: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    // The host is in the URL (resolved to the listener), so it is the request's Host on
    // HTTP/1.1 and its :authority on HTTP/2 alike.
    let builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .resolve(host, gw.addr("web"));
    let http = if h2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    }
    .build()
    .expect("client");
    let url = format!("http://{host}:{}/x", gw.addr("web").port());
    let mut request = http.get(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let expected = if h2 {
        reqwest::Version::HTTP_2
    } else {
        reqwest::Version::HTTP_11
    };
    assert_eq!(response.version(), expected);
    (
        response.status().as_u16(),
        header("www-authenticate"),
        header("x-upstream"),
    )
}

/// Polls until a request's status is `want` on both protocols, within [`WAIT`].
async fn until(gw: &Gateway, host: &str, authorization: Option<&str>, want: u16) {
    let deadline = Instant::now() + WAIT;
    for h2 in [false, true] {
        loop {
            let got = get(gw, h2, host, authorization).await;
            if got.0 == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{host} (h2: {h2}): still {got:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_basic_auth_follows_its_secret_and_fails_closed_without_it() {
    let api = KubeApi::start().await;
    let app = Upstream::start_on("127.0.41.1:0".parse().expect("addr"), "app").await;
    api.apply_service(
        "shop",
        "app",
        &[(Some("http"), 80, TargetPort::Number(app.addr.port()))],
    );
    api.apply_endpoint_slice(
        "shop",
        "app-a",
        "app",
        &[(Some("http"), app.addr.port())],
        &[Endpoint::ready("127.0.41.1")],
    );
    let alice = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let bob = bcrypt::hash("hunter2", 4).expect("bcrypt");
    users_secret(&api, "staff", &format!("# staff\nalice:{alice}\n"));
    let nginx = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    ingress(
        &api,
        "admin",
        "admin.example.com",
        json!({nginx("auth-type"): "basic", nginx("auth-secret"): "staff",
               nginx("auth-realm"): "Staff only"}),
    );
    // Names a Secret that does not exist (yet): never served open.
    ingress(
        &api,
        "orphan",
        "orphan.example.com",
        json!({nginx("auth-type"): "basic", nginx("auth-secret"): "shop/later"}),
    );
    ingress(&api, "open", "open.example.com", json!({}));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(
        &path,
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n\
         [kubernetes]\ningress_class = \"edgegate\"\n",
    )
    .expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;

    let (alice_ok, alice_wrong) = (basic("alice", "s3cret"), basic("alice", "wrong"));
    until(&gw, "open.example.com", None, 200).await;
    for h2 in [false, true] {
        let none = get(&gw, h2, "admin.example.com", None).await;
        assert_eq!(
            (none.0, none.1.as_str(), none.2.as_str()),
            (401, "Basic realm=\"Staff only\"", "-"),
            "h2: {h2}"
        );
        let accepted = get(&gw, h2, "admin.example.com", Some(&alice_ok)).await;
        assert_eq!((accepted.0, accepted.2.as_str()), (200, "app"), "h2: {h2}");
        for refused in [
            alice_wrong.clone(),
            basic("bob", "hunter2"),
            "Bearer abc".to_string(),
        ] {
            let got = get(&gw, h2, "admin.example.com", Some(&refused)).await;
            assert_eq!(
                (got.0, got.1.as_str(), got.2.as_str()),
                (401, "Basic realm=\"Staff only\"", "-"),
                "{refused} (h2: {h2})"
            );
        }
        let orphan = get(&gw, h2, "orphan.example.com", Some(&alice_ok)).await;
        assert_eq!((orphan.0, orphan.2.as_str()), (500, "-"), "h2: {h2}");
    }
    // The password reached no upstream.
    assert!(app
        .seen()
        .iter()
        .all(|s| !s.headers.contains_key("authorization")));
    gw.wait_for_log("secret shop/later not found", WAIT);

    // The Secret edited live: bob in, alice out (her cached credential goes with her).
    users_secret(&api, "staff", &format!("bob:{bob}\n"));
    until(
        &gw,
        "admin.example.com",
        Some(&basic("bob", "hunter2")),
        200,
    )
    .await;
    until(&gw, "admin.example.com", Some(&alice_ok), 401).await;

    // A weak hash closes the Ingress (never open, never the old users) and is logged.
    users_secret(
        &api,
        "staff",
        &format!("bob:{bob}\ncarol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"),
    );
    until(
        &gw,
        "admin.example.com",
        Some(&basic("bob", "hunter2")),
        500,
    )
    .await;
    until(&gw, "admin.example.com", None, 500).await;
    gw.wait_for_log(
        "line 2: user \\\"carol\\\": the password is stored as SHA1",
        WAIT,
    );

    // The missing Secret appears: that Ingress opens to its users.
    users_secret(&api, "later", &format!("alice:{alice}\n"));
    until(&gw, "orphan.example.com", Some(&alice_ok), 200).await;
    until(&gw, "orphan.example.com", Some(&alice_wrong), 401).await;

    // Deleted: closed again.
    assert!(api.delete_object("Secret", "shop", "later"));
    until(&gw, "orphan.example.com", Some(&alice_ok), 500).await;
    until(&gw, "open.example.com", None, 200).await;
}
