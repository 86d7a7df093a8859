//! A real headless Chromium, driven over WebDriver (Debian's `chromium-driver`), for the
//! status page tests. The test starts chromedriver on a free loopback port and a fresh
//! browser profile, and stops both when the [`Browser`] is dropped.
//!
//! The browser runs with background networking, component updates, sync and QUIC off,
//! so the only requests it makes are the page's own; the performance log shows every
//! one of them, and the browser log every console message.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian installs them (`scripts/setup.sh`).
const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// The browser's profile, removed when the test ends.
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Browser {
    /// Starts chromedriver and one browser session; panics (failing the test) when
    /// either is missing or does not come up within 30 s.
    pub async fn start() -> Browser {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        // A port picked this way can be taken before chromedriver binds it: try again.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {CHROMEDRIVER} (scripts/setup.sh installs it): {e}")
                });
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = driver.try_wait() {
                    break;
                }
                if let Ok(r) = http.get(format!("{base}/status")).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["value"]["ready"] == true {
                            ready = true;
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !ready {
                let _ = driver.kill();
                let _ = driver.wait();
                failures.push(format!("chromedriver on port {port} never became ready"));
                continue;
            }
            let profile = tempfile::tempdir().expect("profile dir");
            let capabilities = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
                "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
            }}});
            let created = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
                .expect("POST /session")
                .json::<Value>()
                .await
                .expect("session JSON");
            let Some(session) = created["value"]["sessionId"].as_str() else {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("no browser session: {created}");
            };
            return Browser {
                driver,
                base,
                session: session.to_string(),
                http,
                _profile: profile,
            };
        }
        panic!("cannot start chromedriver: {failures:?}");
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if reply["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", reply["value"]);
        }
        reply["value"].clone()
    }

    /// A DevTools command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`/`false`, for at most
    /// `timeout`; returns that value, or `None` when time ran out.
    pub async fn wait_for(&self, script: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(script, json!([])).await;
            if !(value.is_null() || value == false) {
                return Some(value);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lays the page out as a screen `width` pixels wide (a phone below 500).
    pub async fn viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}),
        )
        .await;
    }

    /// Follows (`None`), or overrides, the system's light or dark preference.
    pub async fn color_scheme(&self, scheme: Option<&str>) {
        let features = match scheme {
            Some(value) => json!([{"name": "prefers-color-scheme", "value": value}]),
            None => json!([]),
        };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": features }),
        )
        .await;
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// A PNG of the whole page (beyond the viewport), written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Console messages (and page errors) since the last call.
    pub async fn console(&self) -> Vec<Value> {
        let log = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        log.as_array().cloned().unwrap_or_default()
    }

    /// URLs of every network request the page made since the last call (`http`, `https`
    /// and `ws` only: the browser's own `chrome://` and `data:` pages are not traffic).
    pub async fn requests(&self) -> Vec<String> {
        let log = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "performance"})),
            )
            .await;
        log.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let message: Value = serde_json::from_str(entry["message"].as_str()?).ok()?;
                let message = &message["message"];
                let url = match message["method"].as_str()? {
                    "Network.requestWillBeSent" => message["params"]["request"]["url"].as_str(),
                    "Network.webSocketCreated" => message["params"]["url"].as_str(),
                    _ => None,
                }?;
                let scheme = url.split(':').next().unwrap_or_default();
                matches!(scheme, "http" | "https" | "ws" | "wss").then(|| url.to_string())
            })
            .collect()
    }
}

/// The `host:port` of an `http(s)://` or `ws(s)://` URL.
pub fn authority(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    authority.parse().ok()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session ends the browser; then chromedriver has no other work. The
        // request is plain blocking HTTP: a drop cannot await.
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            // chromedriver answers once the browser has quit, and may keep the
            // connection open: read one response, not to the end of the stream.
            let mut reply = Vec::new();
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                if Instant::now() > deadline {
                    break;
                }
                reply.extend_from_slice(&buf[..n]);
                if response_complete(&reply) {
                    break;
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether `bytes` hold a whole HTTP response with a `Content-Length` body.
fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}
