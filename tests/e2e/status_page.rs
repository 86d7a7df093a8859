//! The status page on the admin listener (`/`, `/status`): the document against its
//! documentation, the numbers against real traffic, and the page in a real headless
//! Chromium (console, requests, layout at 375 px, live updates, screenshots).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config;
use crate::support::browser::{authority, Browser};
use crate::support::pki::Pki;
use crate::support::{client, closed_port, Gateway, Upstream};

async fn status(gw: &Gateway) -> Value {
    let response = client()
        .get(gw.admin_url("/status"))
        .send()
        .await
        .expect("GET /status");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("text"),
        "application/json"
    );
    response.json().await.expect("/status is JSON")
}

/// Polls `/status` until `done` holds, for at most `timeout`.
async fn status_when(gw: &Gateway, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let document = status(gw).await;
        if done(&document) {
            return document;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached: {document:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member<'a>(document: &'a Value, upstream: &str, address: &str) -> Option<&'a Value> {
    document["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == upstream)?["members"]
        .as_array()?
        .iter()
        .find(|m| m["address"] == address)
}

fn route<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no route {name} in {document:#}"))
}

/// The field table of `docs/status.md`: path -> allowed JSON types.
fn documented_fields() -> BTreeMap<String, BTreeSet<String>> {
    let path = format!("{}/docs/status.md", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("docs/status.md");
    let table = text
        .split_once("<!-- status-fields:begin")
        .and_then(|(_, rest)| rest.split_once("<!-- status-fields:end -->"))
        .map(|(table, _)| table)
        .expect("the status field table in docs/status.md");
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let field = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let types = cells
                .get(2)?
                .split(" or ")
                .map(|t| t.trim().to_string())
                .collect();
            Some((field.to_string(), types))
        })
        .collect()
}

/// Every path in `value` (arrays as `name[]`) with the JSON types seen there.
fn fields(value: &Value, path: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !path.is_empty() {
        out.entry(path.to_string())
            .or_default()
            .insert(kind.to_string());
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                fields(child, &child_path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                fields(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// A config with something in every part of the document: two listeners (one TLS with
/// a certificate), routes limited by host and listener, each kind of action, and an
/// upstream with active checks.
fn full_config(pool: &[std::net::SocketAddr]) -> String {
    let endpoints: Vec<String> = pool.iter().map(|a| format!("\"{a}\"")).collect();
    let mut text = config(&["web"], "");
    text.push_str(
        "[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n\
         [listeners.tls]\ncertificates = [{ cert = \"later.pem\", key = \"later.key\" }, { cert = \"soon.pem\", key = \"soon.key\" }]\n\n",
    );
    text.push_str(&format!(
        "[[routes]]\nname = \"ping\"\npath = \"/ping\"\nrespond = {{ status = 200, body = \"pong\" }}\n\n\
         [[routes]]\nname = \"broken\"\npath = \"/broken\"\nrespond = {{ status = 503 }}\n\n\
         [[routes]]\nname = \"old-site\"\nhosts = [\"old.example.com\", \"*.old.example.com\"]\nlisteners = [\"web\"]\n\
         redirect = {{ host = \"new.example.com\", status = 301 }}\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"pool\"\n\n\
         [upstreams.pool]\nendpoints = [{}]\n\
         [upstreams.pool.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n",
        endpoints.join(", ")
    ));
    text
}

/// Writes `later` (a year left) and `soon` (5 days left) certificates into `dir`.
fn write_certificates(dir: &std::path::Path) {
    let pki = Pki::new("status ca");
    let now = time::OffsetDateTime::now_utc();
    pki.issue_with(&["later.example.com", "www.later.example.com"], |p| {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(365);
    })
    .write(dir, "later");
    pki.issue_with(&["soon.example.com"], |p| {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(5);
    })
    .write(dir, "soon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_document_matches_its_documentation() {
    let a = Upstream::start("a").await;
    let text = full_config(&[a.addr]);
    let gw = Gateway::start_with(&text, write_certificates);
    // A refused reload, so `last_reload` is filled in (with its error).
    gw.write_config(&format!("{text}\n[[routes]]\nname = \"ping\"\n"));
    let document = status_when(&gw, Duration::from_secs(10), |d| {
        !d["config"]["last_reload"].is_null()
    })
    .await;
    let mut seen = BTreeMap::new();
    fields(&document, "", &mut seen);
    let documented = documented_fields();
    for (path, kinds) in &seen {
        let allowed = documented
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in docs/status.md"));
        assert!(
            kinds.is_subset(allowed),
            "{path} is {kinds:?}, documented as {allowed:?}"
        );
    }
    let missing: Vec<&String> = documented
        .keys()
        .filter(|p| !seen.contains_key(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not in the document: {missing:?}\n{document:#}"
    );

    // The values, not only their types.
    assert_eq!(document["config"]["generation"], 1);
    assert_eq!(
        document["config"]["source"],
        gw.config_path.display().to_string()
    );
    let reload = &document["config"]["last_reload"];
    assert_eq!(reload["result"], "failure");
    assert_eq!(reload["cause"], "file change");
    assert!(
        reload["error"]
            .as_str()
            .expect("error")
            .contains("edgegate.toml:"),
        "{reload}"
    );
    assert_eq!(document["config"]["reloads_failed"], 1);
    let listeners: Vec<(&str, bool)> = document["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| (l["name"].as_str().expect("name"), l["tls"] == true))
        .collect();
    assert_eq!(listeners, [("web", false), ("secure", true)]);
    assert_eq!(
        document["listeners"][0]["address"],
        gw.addr("web").to_string()
    );
    let old = route(&document, "old-site");
    assert_eq!(old["origin"], "file");
    assert!(
        old["source"]
            .as_str()
            .expect("source")
            .starts_with(&format!("{}:", gw.config_path.display())),
        "{old}"
    );
    assert_eq!(
        old["hosts"],
        json!(["old.example.com", "*.old.example.com"])
    );
    assert_eq!(old["listeners"], json!(["web"]));
    assert_eq!(old["action"], "redirect 301");
    assert_eq!(route(&document, "api")["action"], "upstream pool");
    assert_eq!(route(&document, "api")["upstreams"], json!(["pool"]));
    assert_eq!(route(&document, "ping")["paths"], json!(["= /ping"]));
    let pool = &document["upstreams"][0];
    assert_eq!(
        (&pool["name"], &pool["source"], &pool["health_check"]),
        (&json!("pool"), &json!("static"), &json!(true))
    );
    let certificates: Vec<(&Value, &Value)> = document["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| (&c["names"], &c["listener"]))
        .collect();
    assert_eq!(
        certificates,
        [
            (&json!(["soon.example.com"]), &json!("secure")),
            (
                &json!(["later.example.com", "www.later.example.com"]),
                &json!("secure")
            ),
        ],
        "soonest expiry first"
    );
    let left = document["certificates"][0]["expires_in_seconds"]
        .as_i64()
        .expect("seconds");
    assert!((4 * 86400..=5 * 86400).contains(&left), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_each_routes_traffic_and_shows_draining_members() {
    let a = Upstream::start("a").await;
    let text = full_config(&[a.addr]);
    let gw = Gateway::start_with(&text, write_certificates);
    let c = client();
    for path in [
        "/x",
        "/y",
        "/status/500",
        "/ping",
        "/ping",
        "/broken",
        "/broken",
    ] {
        let response = c.get(gw.url("web", path)).send().await.expect("request");
        response.bytes().await.expect("body");
    }
    // Requests are counted just after their response is sent.
    let document = status_when(&gw, Duration::from_secs(5), |d| {
        ["api", "ping", "broken"]
            .iter()
            .map(|r| route(d, r)["requests"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 7
    })
    .await;
    let api = route(&document, "api");
    assert_eq!((&api["requests"], &api["errors"]), (&json!(3), &json!(1)));
    let ratio = api["error_ratio"].as_f64().expect("ratio");
    assert!((ratio - 1.0 / 3.0).abs() < 1e-9, "{api}");
    assert!(api["requests_per_second"].as_f64().expect("rate") > 0.0);
    let p99 = api["p99_seconds"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 <= 30.0, "{api}");
    let broken = route(&document, "broken");
    assert_eq!(
        (&broken["errors"], &broken["error_ratio"]),
        (&json!(2), &json!(1.0))
    );
    let ping = route(&document, "ping");
    assert_eq!((&ping["requests"], &ping["errors"]), (&json!(2), &json!(0)));
    let idle = route(&document, "old-site");
    assert_eq!(idle["requests"], 0);
    assert!(idle["error_ratio"].is_null() && idle["p99_seconds"].is_null());
    let window = document["window_seconds"].as_f64().expect("window");
    assert!(window > 0.0 && window <= 60.0, "{window}");

    // A request in flight to the member a reload removes: it drains, then leaves.
    let slow = tokio::spawn({
        let url = gw.url("web", "/slow/2500");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    status_when(&gw, Duration::from_secs(5), |d| {
        member(d, "pool", &a.addr.to_string()).is_some_and(|m| m["in_flight"] == 1)
    })
    .await;
    let other = closed_port();
    gw.write_config(&full_config(&[other]));
    let during = status_when(&gw, Duration::from_secs(5), |d| {
        d["config"]["generation"] == 2
    })
    .await;
    let leaving = member(&during, "pool", &a.addr.to_string()).expect("draining member");
    assert_eq!(
        (&leaving["state"], &leaving["in_flight"]),
        (&json!("draining"), &json!(1))
    );
    assert!(member(&during, "pool", &other.to_string()).is_some());
    assert_eq!(slow.await.expect("task").expect("slow request"), 200);
    status_when(&gw, Duration::from_secs(5), |d| {
        member(d, "pool", &a.addr.to_string()).is_none()
    })
    .await;
}

/// Where the screenshots go: kept after the test, for a person to look at.
fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Names of the rows the page shows for `selector`'s `data-NAME` attribute.
async fn shown(browser: &Browser, selector: &str, attribute: &str) -> Vec<String> {
    let names = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0])]\
               .filter(e => e.offsetParent !== null).map(e => e.getAttribute(arguments[1]));",
            json!([selector, attribute]),
        )
        .await;
    serde_json::from_value(names).expect("names")
}

async fn fits_width(browser: &Browser) -> Value {
    browser
        .execute(
            "const d = document.documentElement; \
             return {scroll: Math.max(d.scrollWidth, document.body.scrollWidth), width: window.innerWidth};",
            json!([]),
        )
        .await
}

/// Waits until the page has redrawn from `/status` at least `count` times.
async fn refreshed(browser: &Browser, count: u32) {
    let script = format!("return Number(document.body.dataset.refreshes || 0) >= {count};");
    assert!(
        browser
            .wait_for(&script, Duration::from_secs(10))
            .await
            .is_some(),
        "the page never loaded /status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_real_browser() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let text = full_config(&[a.addr, b.addr]);
    let gw = Gateway::start_with(&text, write_certificates);
    let c = client();
    for path in ["/x", "/status/502", "/ping", "/broken"] {
        let response = c.get(gw.url("web", path)).send().await.expect("request");
        response.bytes().await.expect("body");
    }
    let browser = Browser::start().await;
    browser.viewport(1280, 900).await;
    browser.goto(&gw.admin_url("/")).await;
    refreshed(&browser, 1).await;

    // Every route and every member, as /status has them.
    assert_eq!(
        shown(&browser, "#routes tr[data-route]", "data-route").await,
        ["ping", "broken", "old-site", "api"]
    );
    let members = shown(
        &browser,
        "[data-upstream=pool] tr[data-member]",
        "data-member",
    )
    .await;
    assert_eq!(members, [a.addr.to_string(), b.addr.to_string()]);
    let b_state = format!(
        "return document.querySelector('[data-upstream=pool] tr[data-member=\"{}\"]').dataset.state;",
        b.addr
    );
    assert_eq!(browser.execute(&b_state, json!([])).await, "healthy");
    assert_eq!(
        shown(
            &browser,
            "#certificates tr[data-certificate]",
            "data-expiry"
        )
        .await,
        ["warn", "ok"],
        "soonest first, under 14 days in the warning colour"
    );
    let colours = browser
        .execute(
            "const [soon, later] = document.querySelectorAll('#certificates tr[data-certificate] td:last-child span span');\
             return [getComputedStyle(soon).backgroundColor, getComputedStyle(later).backgroundColor];",
            json!([]),
        )
        .await;
    assert_ne!(colours[0], colours[1], "{colours}");

    // The filter narrows every section by name, typed as a user would.
    browser.type_into("#filter", "ping").await;
    assert_eq!(
        shown(&browser, "#routes tr[data-route]", "data-route").await,
        ["ping"]
    );
    assert!(shown(&browser, "[data-upstream]", "data-upstream")
        .await
        .is_empty());
    browser
        .type_into("#filter", "\u{E003}\u{E003}\u{E003}\u{E003}")
        .await;
    assert_eq!(
        shown(&browser, "#routes tr[data-route]", "data-route")
            .await
            .len(),
        4
    );

    // A member going down shows within 10 s, without reloading the page.
    b.set_health(503);
    let unhealthy = browser
        .wait_for(
            &format!(
                "{} return s === 'unhealthy' && s;",
                b_state.replacen("return", "const s =", 1)
            ),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        unhealthy.is_some(),
        "member {} never shown unhealthy",
        b.addr
    );

    // So does a refused reload, with its error.
    let generation_before = status(&gw).await["config"]["generation"].clone();
    gw.write_config(&text.replace("unhealthy_threshold = 1", "unhealthy_threshold = 0"));
    let error = browser
        .wait_for(
            "const box = document.getElementById('last-reload');\
             return box.dataset.result === 'failure' && !document.getElementById('problem').hidden \
               && document.getElementById('reload-error').textContent;",
            Duration::from_secs(10),
        )
        .await
        .expect("the refused reload never showed");
    let error = error.as_str().expect("text");
    assert!(
        error.contains("edgegate.toml:") && error.contains("threshold must be between 1 and 100"),
        "{error}"
    );
    assert_eq!(
        browser
            .execute(
                "return document.getElementById('generation').textContent;",
                json!([])
            )
            .await,
        generation_before.to_string()
    );

    // Screenshots of the page in that state, wide and on a phone, light and dark.
    let dir = screenshot_dir();
    browser.screenshot(&dir.join("status-1280.png")).await;
    browser.viewport(375, 800).await;
    refreshed(&browser, 1).await;
    let fit = fits_width(&browser).await;
    assert!(
        fit["scroll"].as_u64() <= fit["width"].as_u64() && fit["width"] == 375,
        "horizontal scroll at 375 px: {fit}"
    );
    browser.screenshot(&dir.join("status-375.png")).await;
    browser.color_scheme(Some("dark")).await;
    let dark = browser
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            json!([]),
        )
        .await;
    browser.screenshot(&dir.join("status-375-dark.png")).await;
    browser.color_scheme(Some("light")).await;
    let light = browser
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            json!([]),
        )
        .await;
    assert_ne!(dark, light, "dark mode changes the page");
    eprintln!("status page screenshots in {}", dir.display());

    // Nothing on the console, and no request to any other host.
    let console = browser.console().await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    let requests = browser.requests().await;
    assert!(
        requests.iter().any(|u| u.ends_with("/status")),
        "{requests:?}"
    );
    for url in &requests {
        assert_eq!(
            authority(url),
            Some(gw.admin),
            "request to another host: {url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_cluster_routes_with_their_object_and_discovered_members() {
    use crate::support::kube_api::{Endpoint, KubeApi, TargetPort};
    let api = KubeApi::start().await;
    let pod = Upstream::start_on("127.0.23.1:0".parse().expect("addr"), "web-0").await;
    api.apply_service(
        "shop",
        "web",
        &[(Some("http"), 80, TargetPort::Number(pod.addr.port()))],
    );
    api.apply_endpoint_slice(
        "shop",
        "web-a",
        "web",
        &[(Some("http"), pod.addr.port())],
        &[Endpoint::ready("127.0.23.1")],
    );
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let (port, tls_port) = (free_port(), free_port());
    // A certificate from a Secret, expiring before the listener's own from a file.
    let ca = Pki::new("status cluster ca");
    let now = time::OffsetDateTime::now_utc();
    let secret = ca.issue_with(&["secure.example.com"], |p| {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(3);
    });
    api.apply_tls_secret("shop", "site-tls", &secret.cert_pem, &secret.key_pem);
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "http", "port": port, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "https", "port": tls_port, "protocol": "HTTPS", "hostname": "secure.example.com",
             "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "site-tls"}]}}]}}),
    );
    api.apply_object(
        "HTTPRoute",
        "shop",
        "storefront",
        json!({"spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["shop.example.com"],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/cart"}},
                                      {"path": {"type": "Exact", "value": "/basket"}}],
                          "backendRefs": [{"name": "web", "port": 80}]}]}}),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    ca.issue(&["default.example.com"])
        .write(dir.path(), "default");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listeners]]\nname = \"websecure\"\naddress = \"127.0.0.1:{tls_port}\"\n[listeners.tls]\n\
             certificates = [{{ cert = \"default.pem\", key = \"default.key\" }}]\n\n\
             [[routes]]\nname = \"from-file\"\npath = \"/file\"\nrespond = {{ status = 200 }}\n\n\
             [kubernetes]\ngateway_class = \"edgegate\"\n"
        ),
    )
    .expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let response = client()
        .get(gw.url("web", "/cart/1"))
        .header("host", "shop.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("body");

    let document = status_when(&gw, Duration::from_secs(5), |d| {
        d["routes"]
            .as_array()
            .is_some_and(|routes| routes.iter().any(|r| r["requests"] == 1))
    })
    .await;
    let routes = document["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 2, "one entry per route name: {document:#}");
    assert_eq!(routes[0]["origin"], "file");
    let cluster = &routes[1];
    assert_eq!(
        (&cluster["origin"], &cluster["source"]),
        (&json!("cluster"), &json!("httproute/shop/storefront"))
    );
    assert_eq!(cluster["hosts"], json!(["shop.example.com"]));
    assert_eq!(cluster["paths"], json!(["/cart*", "= /basket"]));
    assert_eq!(cluster["requests"], 1);
    let upstream = cluster["upstreams"][0].as_str().expect("an upstream");
    let pool = document["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == upstream)
        .expect("the route's upstream");
    assert_eq!(pool["source"], "kubernetes shop/web:80");
    assert_eq!(
        pool["members"],
        json!([{"address": pod.addr.to_string(), "weight": 1, "state": "healthy", "in_flight": 0}])
    );
    let certificates: Vec<(&Value, &Value, &Value)> = document["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| (&c["names"], &c["listener"], &c["source"]))
        .collect();
    assert_eq!(
        certificates[0],
        (
            &json!(["secure.example.com"]),
            &json!("websecure"),
            &json!("secret/shop/site-tls")
        ),
        "{document:#}"
    );
    assert_eq!(certificates[1].0, &json!(["default.example.com"]));
    assert_eq!(certificates.len(), 2);
}
