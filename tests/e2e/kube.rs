//! Kubernetes discovery through the real client library against the API server double
//! (spec section 6): members, readiness, terminating fallback, ports, broken watches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::kube_api::{Endpoint, EndpointSubset, KubeApi, TargetPort};
use crate::support::{client, Gateway, Upstream};

/// Backends on distinct loopback addresses sharing one port, as pods of a Service do.
struct Pods {
    port: u16,
    servers: Vec<Upstream>,
}

impl Pods {
    async fn start(count: u8) -> Pods {
        let first = Upstream::start_on("127.0.0.2:0".parse().expect("addr"), "pod-2").await;
        let port = first.addr.port();
        let mut servers = vec![first];
        for i in 3..(2 + count) {
            let addr: SocketAddr = format!("127.0.0.{i}:{port}").parse().expect("addr");
            servers.push(Upstream::start_on(addr, &format!("pod-{i}")).await);
        }
        Pods { port, servers }
    }

    fn ip(&self, i: usize) -> String {
        self.servers[i].addr.ip().to_string()
    }
}

fn config(extra_upstream: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"static\"\npath = \"/static\"\nrespond = {{ status = 200, body = \"static\" }}\n\n\
         [[routes]]\nname = \"app\"\nupstream = \"web\"\n\n\
         [upstreams.web.kubernetes]\nnamespace = \"shop\"\nservice = \"web\"\nport = \"http\"\n{extra_upstream}"
    )
}

fn start_gateway(api: &KubeApi, text: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)])
}

/// Counts which pod answered, over `n` requests.
async fn spread(gw: &Gateway, n: usize) -> BTreeMap<String, usize> {
    let c = client();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let resp = c.get(gw.url("web", "/")).send().await.expect("request");
        let who = resp.headers().get("x-upstream").map_or_else(
            || format!("status {}", resp.status()),
            |v| v.to_str().expect("h").to_string(),
        );
        *seen.entry(who).or_default() += 1;
    }
    seen
}

/// Polls until the set of pods answering equals `expected` (status strings included).
async fn wait_spread(gw: &Gateway, expected: &[&str]) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = spread(gw, expected.len().max(1) * 4).await;
        let names: Vec<&str> = seen.keys().map(String::as_str).collect();
        if names == expected {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "still {seen:?}, want {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `api` Service's one slice, beside `web`'s.
fn api_slice(api: &KubeApi, port: u16, endpoints: &[Endpoint]) {
    api.apply_endpoint_slice("shop", "api-a", "api", &[(Some("http"), port)], endpoints);
}

fn http_slice(api: &KubeApi, name: &str, port: u16, endpoints: &[Endpoint]) {
    api.apply_endpoint_slice("shop", name, "web", &[(Some("http"), port)], endpoints);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_appear_and_share_traffic_round_robin() {
    let api = KubeApi::start().await;
    let pods = Pods::start(2).await;
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[Endpoint::ready(&pods.ip(0)), Endpoint::ready(&pods.ip(1))],
    );
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    let seen = spread(&gw, 10).await;
    assert_eq!(
        seen,
        BTreeMap::from([("pod-2".into(), 5), ("pod-3".into(), 5)])
    );
    assert_eq!(
        gw.metric("edgegate_upstream_endpoints{state=\"healthy\",upstream=\"web\"}")
            .await,
        Some(2.0)
    );
    let agents = api.user_agents();
    assert!(
        agents.iter().any(|a| a.starts_with("edgegate/")),
        "{agents:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_and_down_changes_members_without_a_reload() {
    let api = KubeApi::start().await;
    let pods = Pods::start(3).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2"]).await;
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[
            Endpoint::ready(&pods.ip(0)),
            Endpoint::ready(&pods.ip(1)),
            Endpoint::ready(&pods.ip(2)),
        ],
    );
    wait_spread(&gw, &["pod-2", "pod-3", "pod-4"]).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(2))]);
    wait_spread(&gw, &["pod-4"]).await;
    let config: serde_json::Value = client()
        .get(gw.admin_url("/config"))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("json");
    assert_eq!(
        config["generation"], 1,
        "discovery must not go through config reloads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_and_terminating_endpoints_are_the_fallback() {
    let api = KubeApi::start().await;
    let pods = Pods::start(2).await;
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[Endpoint::ready(&pods.ip(0)), Endpoint::ready(&pods.ip(1))],
    );
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2", "pod-3"]).await;
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[
            Endpoint::not_ready(&pods.ip(0)),
            Endpoint::ready(&pods.ip(1)),
        ],
    );
    wait_spread(&gw, &["pod-3"]).await;
    // A rollout's end: nothing ready, one pod still serving while terminating.
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[
            Endpoint::terminating(&pods.ip(0), true),
            Endpoint::terminating(&pods.ip(1), false),
        ],
    );
    wait_spread(&gw, &["pod-2"]).await;
    // An endpoint without conditions counts as ready.
    let bare = Endpoint {
        addresses: vec![pods.ip(1)],
        ..Endpoint::default()
    };
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[Endpoint::not_ready(&pods.ip(0)), bare],
    );
    wait_spread(&gw, &["pod-3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_are_merged_and_deduplicated() {
    let api = KubeApi::start().await;
    let pods = Pods::start(3).await;
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[Endpoint::ready(&pods.ip(0)), Endpoint::ready(&pods.ip(1))],
    );
    http_slice(
        &api,
        "web-b",
        pods.port,
        &[Endpoint::ready(&pods.ip(1)), Endpoint::ready(&pods.ip(2))],
    );
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    let seen = spread(&gw, 30).await;
    assert_eq!(
        seen,
        BTreeMap::from([
            ("pod-2".into(), 10),
            ("pod-3".into(), 10),
            ("pod-4".into(), 10)
        ])
    );
    api.delete_endpoint_slice("shop", "web-b");
    wait_spread(&gw, &["pod-2", "pod-3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ports_map_by_name_and_number_to_slice_ports() {
    let api = KubeApi::start().await;
    let pods = Pods::start(1).await;
    api.apply_service(
        "shop",
        "web",
        &[
            (Some("metrics"), 9090, TargetPort::Number(9090)),
            (Some("http"), 80, TargetPort::Name("web")),
        ],
    );
    // The slice names ports after the Service's ports; numbers are the pods' ports.
    api.apply_endpoint_slice(
        "shop",
        "web-a",
        "web",
        &[(Some("metrics"), 9), (Some("http"), pods.port)],
        &[Endpoint::ready(&pods.ip(0))],
    );
    for port in ["\"http\"", "80"] {
        let text = config("").replace("port = \"http\"", &format!("port = {port}"));
        let gw = start_gateway(&api, &text);
        gw.wait_ready().await;
        assert_eq!(
            spread(&gw, 3).await,
            BTreeMap::from([("pod-2".into(), 3)]),
            "port {port}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoints_can_be_watched_instead() {
    let api = KubeApi::start().await;
    let pods = Pods::start(2).await;
    api.apply_endpoints(
        "shop",
        "web",
        &[EndpointSubset {
            addresses: vec![pods.ip(0)],
            not_ready_addresses: vec![pods.ip(1)],
            ports: vec![(Some("http".into()), pods.port)],
        }],
    );
    let gw = start_gateway(&api, &config("api = \"endpoints\"\n"));
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2"]).await;
    api.apply_endpoints(
        "shop",
        "web",
        &[EndpointSubset {
            addresses: vec![pods.ip(0), pods.ip(1)],
            not_ready_addresses: vec![],
            ports: vec![(Some("http".into()), pods.port)],
        }],
    );
    wait_spread(&gw, &["pod-2", "pod-3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_is_503_not_a_hang() {
    let api = KubeApi::start().await;
    api.apply_endpoint_slice("shop", "web-a", "web", &[(Some("http"), 80)], &[]);
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    let started = Instant::now();
    let resp = client()
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_watches_keep_the_last_members_and_recover() {
    let api = KubeApi::start().await;
    let pods = Pods::start(3).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2"]).await;
    api.wait_for_watchers(2, Duration::from_secs(5)).await;

    // The server ends the stream: the client re-watches, nothing changes for traffic.
    api.close_watches();
    assert_eq!(spread(&gw, 4).await, BTreeMap::from([("pod-2".into(), 4)]));
    api.wait_for_watchers(2, Duration::from_secs(5)).await;

    // 410 Gone inside the stream: a fresh list follows, and a change made meanwhile lands.
    let since = api.requests().len();
    api.expire_history();
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(1))]);
    api.wait_for_request(since, Duration::from_secs(10), |r| {
        r.contains("endpointslices") && !r.contains("watch=")
    })
    .await;
    wait_spread(&gw, &["pod-3"]).await;

    // The API server goes away: the last known members keep serving; when it comes back,
    // changes made while it was gone arrive.
    api.stop().await;
    assert_eq!(spread(&gw, 4).await, BTreeMap::from([("pod-3".into(), 4)]));
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(2))]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spread(&gw, 4).await, BTreeMap::from([("pod-3".into(), 4)]));
    api.restart().await;
    wait_spread(&gw, &["pod-4"]).await;
    assert!(
        gw.metric("edgegate_discovery_errors_total{service=\"shop/web\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_with_the_api_server_down_serves_static_routes_and_is_not_ready() {
    let api = KubeApi::start().await;
    let pods = Pods::start(1).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    api.stop().await;
    let gw = start_gateway(&api, &config(""));
    let c = client();
    assert_eq!(gw.admin_status("/readyz").await, 503);
    let resp = c
        .get(gw.url("web", "/static"))
        .send()
        .await
        .expect("static");
    assert_eq!(resp.text().await.expect("body"), "static");
    assert_eq!(
        c.get(gw.url("web", "/"))
            .send()
            .await
            .expect("request")
            .status(),
        503
    );
    api.restart().await;
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_starts_and_stops_watches() {
    let api = KubeApi::start().await;
    let pods = Pods::start(1).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    api_slice(&api, pods.port, &[Endpoint::ready(&pods.ip(0))]);
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    // Two watch streams per Service: its endpoints, and the Service (its port list).
    api.wait_for_watchers(2, Duration::from_secs(5)).await;
    let with_api = format!(
        "{}\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"api\"\n\n[upstreams.api.kubernetes]\nnamespace = \"shop\"\nservice = \"api\"\nport = \"http\"\n",
        config("")
    );
    gw.write_config(&with_api);
    api.wait_for_watchers(4, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client()
            .get(gw.url("web", "/api/x"))
            .send()
            .await
            .expect("request");
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "api upstream never got members");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.write_config(&config(""));
    api.wait_for_watchers_at_most(2, Duration::from_secs(5))
        .await;
    assert_eq!(spread(&gw, 2).await, BTreeMap::from([("pod-2".into(), 2)]));
}

/// Issue 10, fault 1: while the publisher was busy, a reload request and a members update
/// queued behind it were merged by a loop that only understood reloads: the members
/// were dropped, and the pool stayed stale until the Service changed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_queued_behind_a_reload_are_applied() {
    let api = KubeApi::start().await;
    let pods = Pods::start(2).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    let text = config("");
    let gw = start_gateway(&api, &text);
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2"]).await;

    // Hold the publisher in a reload that reads a FIFO nobody writes yet.
    let fifo = gw.dir.path().join("slow.toml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    std::fs::rename(&fifo, &gw.config_path).expect("swap in the fifo");
    gw.signal("HUP");
    gw.wait_for_log("SIGHUP: reloading", Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Queued behind it: another reload, then the Service's new member.
    gw.signal("HUP");
    http_slice(
        &api,
        "web-a",
        pods.port,
        &[Endpoint::ready(&pods.ip(0)), Endpoint::ready(&pods.ip(1))],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Feed both reloads the same text; each open of the FIFO waits for its reader.
    let (path, feed) = (gw.config_path.clone(), text.clone());
    let feeder = std::thread::spawn(move || {
        for _ in 0..2 {
            std::fs::write(&path, &feed).expect("feed the fifo");
        }
    });
    wait_spread(&gw, &["pod-2", "pod-3"]).await;
    feeder.join().expect("feeder");
}

/// Fault 4: an upstream re-pointed to another Service kept the old Service's pods until
/// the new watch synced (forever while it could not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_repointed_to_another_service_never_reaches_the_old_pods() {
    let api = KubeApi::start().await;
    let pods = Pods::start(2).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    api_slice(&api, pods.port, &[Endpoint::ready(&pods.ip(1))]);
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    wait_spread(&gw, &["pod-2"]).await;

    // The API server goes away, then the upstream is re-pointed: the new Service's
    // members cannot be read yet, and the old Service's must not be used meanwhile.
    api.stop().await;
    gw.write_config(&config("").replace("service = \"web\"", "service = \"api\""));
    let deadline = Instant::now() + Duration::from_secs(3);
    while gw.config_json().await["generation"].as_u64() != Some(2) {
        assert!(Instant::now() < deadline, "re-pointing was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = spread(&gw, 20).await;
    assert_eq!(
        seen,
        BTreeMap::from([("status 503 Service Unavailable".into(), 20)]),
        "{seen:?}"
    );
    assert_eq!(
        gw.admin_status("/readyz").await,
        503,
        "not synced with its new Service"
    );

    api.restart().await;
    wait_spread(&gw, &["pod-3"]).await;
    assert_eq!(gw.admin_status("/readyz").await, 200);
}

/// Fault 4: a failed client was cached, so discovery stayed off until a restart when the
/// credentials appeared later (a kubeconfig mounted after start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_appear_after_start_are_picked_up() {
    let api = KubeApi::start().await;
    let pods = Pods::start(1).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, config("")).expect("write");
    let later = dir.path().join("later").join("kubeconfig");
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &later.display().to_string())]);
    gw.wait_for_log("no Kubernetes credentials", Duration::from_secs(3));
    assert_eq!(gw.admin_status("/readyz").await, 503);

    std::fs::create_dir_all(later.parent().expect("dir")).expect("mkdir");
    std::fs::copy(api.kubeconfig_path(), &later).expect("kubeconfig appears");
    wait_spread(&gw, &["pod-2"]).await;
    assert_eq!(gw.admin_status("/readyz").await, 200);
}

/// Waits until a request to `path` is answered by `pod`.
async fn wait_answered_by(gw: &Gateway, path: &str, pod: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client()
            .get(gw.url("web", path))
            .send()
            .await
            .expect("request");
        let who = resp.headers().get("x-upstream").map_or_else(
            || format!("status {}", resp.status()),
            |v| v.to_str().expect("h").to_string(),
        );
        if who == pod {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: still {who}, want {pod}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One Service named by port name by one upstream and by port number by another: each
/// gets its members, and an edit of the Service's port list re-maps them (issue 18,
/// fault 4: the second subscriber's members came from a port map filled only on a
/// later slice event, so it published none while `/readyz` said ready, and Service
/// edits were never followed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_by_port_name_and_by_number_gives_each_its_members_and_edits_follow() {
    let api = KubeApi::start().await;
    let ip = "127.0.36.1";
    let http = Upstream::start_on(format!("{ip}:0").parse().expect("addr"), "pod-http").await;
    let alt = Upstream::start_on(format!("{ip}:0").parse().expect("addr"), "pod-alt").await;
    let service = |http_number: u16, alt_number: u16| {
        api.apply_service(
            "shop",
            "web",
            &[
                (
                    Some("http"),
                    http_number,
                    TargetPort::Number(http.addr.port()),
                ),
                (Some("alt"), alt_number, TargetPort::Number(alt.addr.port())),
            ],
        );
    };
    service(80, 81);
    api.apply_endpoint_slice(
        "shop",
        "web-a",
        "web",
        &[
            (Some("http"), http.addr.port()),
            (Some("alt"), alt.addr.port()),
        ],
        &[Endpoint::ready(ip)],
    );
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    wait_answered_by(&gw, "/", "pod-http").await;

    // A second upstream on the same watch, naming the Service's port by number.
    let by_number = format!(
        "{}\n[[routes]]\nname = \"by-number\"\npath_prefix = \"/n\"\nupstream = \"by-number\"\n\n\
         [upstreams.by-number.kubernetes]\nnamespace = \"shop\"\nservice = \"web\"\nport = 81\n",
        config("")
    );
    gw.write_config(&by_number);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.config_json().await["generation"] != 2 {
        assert!(Instant::now() < deadline, "the config was never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.wait_ready().await;
    wait_answered_by(&gw, "/n/x", "pod-alt").await;

    // The Service's numbers swap: port 81 is now `http`.
    service(81, 80);
    wait_answered_by(&gw, "/n/x", "pod-http").await;
    wait_answered_by(&gw, "/", "pod-http").await;
}

/// The `edgegate_discovery_*{service}` series of a Service no upstream names any more
/// leave `/metrics` (issue 18, fault 10: they stayed for every Service ever named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_series_leave_with_the_last_upstream_naming_their_service() {
    let api = KubeApi::start().await;
    let pods = Pods::start(1).await;
    http_slice(&api, "web-a", pods.port, &[Endpoint::ready(&pods.ip(0))]);
    let gw = start_gateway(&api, &config(""));
    gw.wait_ready().await;
    let series = "edgegate_discovery_events_total{service=\"shop/web\"}";
    assert!(gw.metric(series).await.is_some_and(|v| v > 0.0));

    let without = config("").replace(
        "[upstreams.web.kubernetes]\nnamespace = \"shop\"\nservice = \"web\"\nport = \"http\"\n",
        &format!(
            "[upstreams.web]\nendpoints = [\"{}\"]\n",
            pods.servers[0].addr
        ),
    );
    assert_ne!(without, config(""));
    gw.write_config(&without);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.config_json().await["generation"] != 2 {
        assert!(Instant::now() < deadline, "the config was never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = gw.metrics_text().await;
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("edgegate_discovery_") && l.contains("shop/web"))
        .collect();
    assert!(
        left.is_empty(),
        "series of a Service no upstream names: {left:#?}"
    );
}
