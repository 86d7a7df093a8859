//! Where a reload, a discovery event and a request meet: each test here failed before
//! the fault it names was fixed.

use std::time::{Duration, Instant};

use crate::support::pki::Pki;
use crate::support::{client, Gateway, Upstream};
use crate::{config, named};

async fn generation(gw: &Gateway) -> u64 {
    gw.config_json().await["generation"]
        .as_u64()
        .expect("generation")
}

async fn reload_failures(gw: &Gateway) -> f64 {
    gw.metric("edgegate_config_reloads_total{result=\"failure\"}")
        .await
        .unwrap_or(0.0)
}

/// Polls `probe` until it returns true, failing after `limit`; returns the time taken.
async fn within<F, Fut>(limit: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

async fn body_of(url: &str) -> String {
    let resp = client().get(url).send().await.expect("request");
    resp.text().await.expect("body")
}

fn ca_config(backend: std::net::SocketAddr) -> String {
    config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"x\"\nupstream = \"x\"\n\n\
             [upstreams.x]\nendpoints = [\"{backend}\"]\ntls = {{ ca = \"ca.pem\", sni = \"backend.internal\" }}\n"
        ),
    )
}

fn check(dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(crate::support::gateway::BIN)
        .args(["check", "--config"])
        .arg(dir.join("edgegate.toml"))
        .output()
        .expect("check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&dir.display().to_string(), "D"),
    )
}

/// Fault 3: an upstream CA that fails to load was logged and replaced by the system
/// roots; `check` never read it; a changed CA was never re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_ca_is_part_of_the_config() {
    let internal = Pki::new("internal ca");
    let issued = internal.issue(&["backend.internal"]);
    let backend = Upstream::start_tls("tls-backend", &issued.cert_pem, &issued.key_pem).await;
    let text = ca_config(backend.addr);

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("edgegate.toml"), &text).expect("write");
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("error: D/edgegate.toml:14:14: cannot read upstream CA D/ca.pem"),
        "{out}"
    );
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("write");
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            "error: D/edgegate.toml:14:14: upstream CA: no certificate found in D/ca.pem"
        ),
        "{out}"
    );

    // Running with a CA that does not sign the backend: 502, never the system roots.
    let other = Pki::new("some other ca");
    let gw = Gateway::start_with(&text, |dir| {
        std::fs::write(dir.join("ca.pem"), &other.ca_pem).expect("write");
    });
    let get = || async {
        client()
            .get(gw.url("web", "/"))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(get().await, 502);

    // Garbage in its place is refused; the last good trust stays.
    let failures = reload_failures(&gw).await;
    std::fs::write(gw.dir.path().join("ca.pem"), "garbage\n").expect("write");
    within(Duration::from_secs(3), "garbage CA refused", || async {
        reload_failures(&gw).await > failures
    })
    .await;
    assert_eq!(get().await, 502);
    assert_eq!(generation(&gw).await, 1);

    // The right CA, written in place with no SIGHUP, is applied like a certificate.
    std::fs::write(gw.dir.path().join("ca.pem"), &internal.ca_pem).expect("write");
    within(Duration::from_secs(3), "changed CA applied", || async {
        get().await == 200
    })
    .await;
    assert_eq!(generation(&gw).await, 2);
}

/// Fault 2: the publisher read files on the runtime that serves requests; with one
/// worker, a reload stuck on a slow file stalled every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stuck_on_a_slow_file_does_not_stall_requests() {
    let text = config(&["web"], &named("ok", "path_prefix = \"/\"")).replacen(
        "[admin]",
        "[gateway]\nthreads = 1\n\n[admin]",
        1,
    );
    let gw = Gateway::start(&text);
    let url = gw.url("web", "/");
    assert_eq!(
        client().get(&url).send().await.expect("request").status(),
        200
    );

    // The config path becomes a FIFO: reading it blocks until a writer shows up.
    let fifo = gw.dir.path().join("slow.toml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    std::fs::rename(&fifo, &gw.config_path).expect("swap in the fifo");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // While the reload waits, requests and the admin listener are served promptly.
    for _ in 0..20 {
        let started = Instant::now();
        let resp = client().get(&url).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "request stalled {:?}",
            started.elapsed()
        );
    }
    assert_eq!(generation(&gw).await, 1);

    // The slow file answers; the reload completes.
    let path = gw.config_path.clone();
    let next = text.replace("body = \"ok\"", "body = \"ok2\"");
    std::thread::spawn(move || std::fs::write(path, next).expect("feed the fifo"));
    within(
        Duration::from_secs(3),
        "reload after the slow read",
        || async { generation(&gw).await == 2 },
    )
    .await;
    assert_eq!(body_of(&url).await, "ok2");
}

/// Fault 5: any event in the config's directory restarted the quiet period, so a log
/// written steadily beside the config postponed every reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_beside_the_config_does_not_delay_a_reload() {
    let v1 = config(&["web"], &named("v1", "path_prefix = \"/\""));
    let gw = Gateway::start(&v1);
    let noise = gw.dir.path().join("access.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(noise).expect("log");
            // Bounded: at most 10 s of writes every 20 ms.
            for _ in 0..500 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = writeln!(file, "{{\"line\": 1}}");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.write_config(&v1.replace("\"v1\"", "\"v2\""));
    let took = within(
        Duration::from_secs(2),
        "reload despite the noise",
        || async { generation(&gw).await == 2 },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The noise itself never caused a reload or a re-read that changed anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(generation(&gw).await, 2);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe")
        .port()
}

fn renamed_config(port: u16, listener: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"{listener}\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[routes]]\nname = \"only\"\nlisteners = [\"{listener}\"]\nrespond = {{ status = 200, body = \"{listener}\" }}\n"
    )
}

/// Fault 6: the listener directory was swapped after the snapshot (and a renamed
/// listener rebound its own address); a request could pair new routes with the old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_listener_serves_every_request_through_the_reload() {
    let port = free_port();
    let gw = Gateway::start(&renamed_config(port, "alpha"));
    let url = format!("http://127.0.0.1:{port}/");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for fresh in [false, true, false, true] {
        let (url, done) = (url.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let keepalive = client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded: at most 20,000 requests or until told to stop.
            for _ in 0..20_000 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let c = if fresh { client() } else { keepalive.clone() };
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.write_config(&renamed_config(port, "beta"));
    within(Duration::from_secs(3), "renamed", || async {
        generation(&gw).await == 2
    })
    .await;
    within(
        Duration::from_secs(3),
        "served under the new name",
        || async { body_of(&url).await == "beta" },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.expect("client");
        assert!(
            failed.is_empty(),
            "failed requests: {:?}",
            &failed[..failed.len().min(5)]
        );
        total += ok;
    }
    assert!(total > 100, "too little load: {total}");
    gw.wait_for_log("listener renamed", Duration::from_secs(1));
}

/// Fault 7: the HTTP/2 checkout lock was per upstream and held across connect and TLS,
/// so a blackholed endpoint stalled new connections to its healthy sibling too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_http2_endpoint_does_not_delay_its_healthy_sibling() {
    let internal = Pki::new("internal ca");
    let issued = internal.issue(&["backend.internal"]);
    let healthy = Upstream::start_tls("healthy", &issued.cert_pem, &issued.key_pem).await;
    // Accepted by the kernel, never answered: the TLS handshake waits forever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let text = config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"x\"\nupstream = \"x\"\n\n\
             [upstreams.x]\nendpoints = [\"{silent_addr}\", \"{}\"]\nhttp2 = true\nconnect_timeout = \"3s\"\n\
             tls = {{ ca = \"ca.pem\", sni = \"backend.internal\" }}\n",
            healthy.addr
        ),
    );
    let gw = Gateway::start_with(&text, |dir| {
        std::fs::write(dir.join("ca.pem"), &internal.ca_pem).expect("write");
    });
    let url = gw.url("web", "/");
    // Round robin starts with the silent member: this request waits on its handshake.
    let stuck = tokio::spawn({
        let url = url.clone();
        async move { client().get(&url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let resp = client().get(&url).send().await.expect("request");
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "healthy");
    assert!(
        took < Duration::from_secs(1),
        "the healthy sibling waited {took:?}"
    );
    assert!(
        !stuck.is_finished(),
        "the first request was meant to be held by the blackhole"
    );
    drop(silent);
    let _ = stuck.await;
}

/// Fault 8: `[admin]` changes in a reloaded file were ignored; the admin address moves
/// live (and the old one closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_moves_on_reload() {
    let text = config(&["web"], &named("ok", "path_prefix = \"/\""));
    let gw = Gateway::start(&text);
    let old = gw.admin_url("/healthz");
    let port = free_port();
    gw.write_config(&text.replacen(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"127.0.0.1:{port}\""),
        1,
    ));
    let new = format!("http://127.0.0.1:{port}/healthz");
    within(
        Duration::from_secs(3),
        "admin on its new address",
        || async { matches!(client().get(&new).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    within(
        Duration::from_secs(3),
        "old admin address closed",
        || async { client().get(&old).send().await.is_err() },
    )
    .await;
    let resp = client()
        .get(format!("http://127.0.0.1:{port}/config"))
        .send()
        .await
        .expect("config");
    let config: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(config["generation"], 2);
}
