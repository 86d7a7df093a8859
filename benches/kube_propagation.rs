//! Kubernetes discovery, measured end to end with the real gateway binary and the API
//! server double of the tests (spec section 6; issue 5's benchmark):
//! 1. propagation: from the API server emitting an EndpointSlice change to the gateway
//!    routing a request to the new member, p50/p99 over many changes (bar: p99 < 100 ms);
//! 2. scale: memory and CPU of the gateway with 10,000 endpoints across 100 Services.
//!
//! Loopback only: members live on 127.0.0.0/8, and only the propagation run sends them
//! traffic (to servers it started itself).
//!
//!   cargo bench --bench kube_propagation            (CHANGES=200 by default)

#[path = "../tests/e2e/support/kube_api.rs"]
#[allow(dead_code)]
mod kube_api;
#[path = "support/process.rs"]
#[allow(dead_code)]
mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube_api::{Endpoint, KubeApi};
use process::{cpu_seconds, percentile, rss_kib, GatewayProcess};

struct Gateway {
    process: GatewayProcess,
    web: SocketAddr,
    admin: SocketAddr,
}

fn start_gateway(api: &KubeApi, config: &str) -> Gateway {
    let (process, log) = GatewayProcess::spawn(
        config,
        api.kubeconfig_path(),
        "info,edgegate::control::publish=warn",
    );
    let found = GatewayProcess::addresses(log);
    Gateway {
        process,
        web: found.web.expect("web address"),
        admin: found.admin.expect("admin address"),
    }
}

fn header() -> String {
    "[gateway]\nthreads = 1\n[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n".to_string()
}

async fn wait_ready(client: &reqwest::Client, gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("http://{}/readyz", gw.admin))
            .send()
            .await
        {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gateway never became ready");
}

/// Tiny HTTP servers that answer with their own port, the members of the propagation run.
async fn start_members(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        ports.push(port);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let body = port.to_string();
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    ports
}

async fn propagation(changes: usize) {
    let api = KubeApi::start().await;
    let members = start_members(8).await;
    let slice = |port: u16| {
        api.apply_endpoint_slice(
            "bench",
            "web-a",
            "web",
            &[(Some("http"), port)],
            &[Endpoint::ready("127.0.0.1")],
        );
    };
    slice(members[0]);
    let config = format!(
        "{}[[routes]]\nname = \"app\"\nupstream = \"web\"\n[upstreams.web.kubernetes]\nnamespace = \"bench\"\nservice = \"web\"\nport = \"http\"\n",
        header()
    );
    let gw = start_gateway(&api, &config);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    wait_ready(&client, &gw).await;
    let url = format!("http://{}/", gw.web);
    let mut samples = Vec::with_capacity(changes);
    for i in 1..=changes {
        let port = members[i % members.len()];
        let started = Instant::now();
        slice(port);
        let deadline = started + Duration::from_secs(10);
        loop {
            let body = client
                .get(&url)
                .send()
                .await
                .expect("request")
                .text()
                .await
                .unwrap_or_default();
            if body == port.to_string() {
                break;
            }
            assert!(Instant::now() < deadline, "change {i} never propagated");
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "propagation over {changes} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (event sent -> first request routed to the new member)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().expect("samples").as_secs_f64() * 1e3,
    );
}

async fn scale(services: usize, per_service: usize) {
    let api = KubeApi::start().await;
    let mut config = header();
    for s in 0..services {
        let endpoints: Vec<Endpoint> = (0..per_service)
            .map(|e| Endpoint::ready(&format!("127.{}.{}.{}", 1 + s / 250, s % 250, 1 + e)))
            .collect();
        api.apply_endpoint_slice(
            "bench",
            &format!("svc{s}-a"),
            &format!("svc{s}"),
            &[(Some("http"), 8080)],
            &endpoints,
        );
        config.push_str(&format!(
            "[[routes]]\nname = \"r{s}\"\npath_prefix = \"/svc{s}\"\nupstream = \"u{s}\"\n[upstreams.u{s}.kubernetes]\nnamespace = \"bench\"\nservice = \"svc{s}\"\nport = \"http\"\n"
        ));
    }
    let rss_idle_base = {
        let gw = start_gateway(&api, &header());
        std::thread::sleep(Duration::from_millis(300));
        rss_kib(gw.process.child.id())
    };
    let started = Instant::now();
    let gw = start_gateway(&api, &config);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    wait_ready(&client, &gw).await;
    let sync = started.elapsed();
    let pid = gw.process.child.id();
    let (cpu_synced, rss_synced) = (cpu_seconds(pid), rss_kib(pid));
    // One change per Service: a member replaced in each.
    let cpu_before = cpu_seconds(pid);
    let changed = Instant::now();
    for s in 0..services {
        let mut endpoints: Vec<Endpoint> = (1..per_service)
            .map(|e| Endpoint::ready(&format!("127.{}.{}.{}", 1 + s / 250, s % 250, 1 + e)))
            .collect();
        endpoints.push(Endpoint::ready(&format!(
            "127.{}.{}.250",
            1 + s / 250,
            s % 250
        )));
        api.apply_endpoint_slice(
            "bench",
            &format!("svc{s}-a"),
            &format!("svc{s}"),
            &[(Some("http"), 8080)],
            &endpoints,
        );
    }
    // Wait until the last Service's change is visible in /config.
    let needle = format!(
        "127.{}.{}.250:8080",
        1 + (services - 1) / 250,
        (services - 1) % 250
    );
    loop {
        let text = client
            .get(format!("http://{}/config", gw.admin))
            .send()
            .await
            .expect("config")
            .text()
            .await
            .expect("body");
        if text.contains(&needle) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(60),
            "changes never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = changed.elapsed();
    let cpu_changes = cpu_seconds(pid) - cpu_before;
    println!(
        "scale: {services} services x {per_service} endpoints = {} endpoints: initial sync {:.0} ms, CPU {cpu_synced:.2} s to start and sync, RSS {} MiB (an idle gateway: {} MiB); \
         {services} changes (one per service) applied in {:.0} ms using {cpu_changes:.2} CPU s",
        services * per_service,
        sync.as_secs_f64() * 1e3,
        rss_synced / 1024,
        rss_idle_base / 1024,
        applied.as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent; keep that run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let changes = std::env::var("CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5 } else { 200 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        propagation(changes).await;
        if quick {
            scale(2, 5).await;
        } else {
            scale(100, 100).await;
        }
    });
}
