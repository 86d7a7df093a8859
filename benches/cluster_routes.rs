//! Routes from the cluster at size (issue 13's benchmark), with the real gateway binary
//! and the API server double of the tests:
//! 1. 1,000 HTTPRoutes of 10 rules each (10,000 rules) on one Gateway, 100 Ingresses and
//!    100 Services: time from the gateway's start (its watches' first list) to every
//!    route served, and the gateway's RSS then;
//! 2. the cost of one route edit: from the API server emitting the watch event to the
//!    edited route being served, p50/p99 over EDITS edits;
//! 3. route matching in the router compiled from those objects against 10 routes
//!    (in process, the same `translate` and `Router` the gateway runs).
//!
//! Loopback only.   cargo bench --bench cluster_routes      (EDITS=50 by default; ROUTES
//! overrides the 1,000 HTTPRoutes)

#[path = "../tests/e2e/support/kube_api.rs"]
#[allow(dead_code)]
mod kube_api;
#[path = "support/process.rs"]
#[allow(dead_code)]
mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgegate::config::model::{KubernetesSettings as Settings, Name};
use edgegate::control::sources::cluster_routes::translate::{
    translate, ClusterObjects, ListenerFacts, ServicePorts, Translator,
};
use edgegate::snapshot::router::{RequestFacts, Router};
use kube_api::{Endpoint, KubeApi, TargetPort};
use process::{drain, percentile, rss_kib, GatewayProcess};
use serde_json::{json, Value};

const RULES: usize = 10;
const SERVICES: usize = 100;

/// How many objects: 1,000 HTTPRoutes and 100 Ingresses for `cargo bench`, a few for
/// `cargo test --benches` (which passes no `--bench`).
#[derive(Clone, Copy)]
struct Size {
    routes: usize,
    ingresses: usize,
}

fn route_spec(i: usize, prefix: &str) -> Value {
    let rules: Vec<Value> = (0..RULES)
        .map(|j| {
            json!({"matches": [{"path": {"type": "PathPrefix", "value": format!("/{prefix}{j}")}}],
                   "backendRefs": [{"name": format!("svc-{}", (i * RULES + j) % SERVICES), "port": 80}]})
        })
        .collect();
    json!({"parentRefs": [{"name": "edge"}], "hostnames": [format!("r{i}.example.com")], "rules": rules})
}

fn ingress_spec(k: usize) -> Value {
    json!({"ingressClassName": "edgegate", "rules": [{"host": format!("ing{k}.example.com"),
        "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": format!("svc-{}", k % SERVICES), "port": {"number": 80}}}}]}}]})
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_gateway(api: &KubeApi, port: u16) -> GatewayProcess {
    let config = format!(
        "[gateway]\nthreads = 1\n[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\
         [kubernetes]\ngateway_class = \"edgegate\"\ningress_class = \"edgegate\"\n"
    );
    let (gateway, log) = GatewayProcess::spawn(&config, api.kubeconfig_path(), "warn");
    drain(log);
    gateway
}

async fn status(client: &reqwest::Client, addr: SocketAddr, host: &str, path: &str) -> u16 {
    client
        .get(format!("http://{addr}{path}"))
        .header("host", host)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn end_to_end(size: Size, edits: usize) {
    let Size { routes, ingresses } = size;
    // One real backend: every Service's single endpoint is it.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("backend");
    let backend_port = backend.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = backend.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0
                        || socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let api = KubeApi::start().await;
    for s in 0..SERVICES {
        let name = format!("svc-{s}");
        api.apply_service(
            "bench",
            &name,
            &[(Some("http"), 80, TargetPort::Number(backend_port))],
        );
        api.apply_endpoint_slice(
            "bench",
            &format!("{name}-a"),
            &name,
            &[(Some("http"), backend_port)],
            &[Endpoint::ready("127.0.0.1")],
        );
    }
    let port = free_port();
    api.apply_object(
        "Gateway",
        "bench",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate",
                        "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}}),
    );
    for i in 0..routes {
        api.apply_object(
            "HTTPRoute",
            "bench",
            &format!("route-{i:04}"),
            json!({"spec": route_spec(i, "p")}),
        );
    }
    for k in 0..ingresses {
        api.apply_object(
            "Ingress",
            "bench",
            &format!("ing-{k:03}"),
            json!({"spec": ingress_spec(k)}),
        );
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let started = Instant::now();
    let gw = start_gateway(&api, port);
    // Served when the last route's last rule, the last Ingress and one rule of every 10th
    // route answer from the backend: each Service's members arrive on their own watch,
    // so the last route being served does not mean every route is.
    let last_route = format!("r{}.example.com", routes - 1);
    let last_ingress = format!("ing{}.example.com", ingresses - 1);
    let mut unserved: Vec<String> = (0..routes)
        .step_by(10)
        .map(|i| format!("r{i}.example.com"))
        .collect();
    loop {
        let route = status(&client, addr, &last_route, &format!("/p{}/x", RULES - 1)).await;
        let ingress = status(&client, addr, &last_ingress, "/").await;
        let mut still = Vec::new();
        for host in unserved {
            if status(&client, addr, &host, "/p3").await != 200 {
                still.push(host);
            }
        }
        unserved = still;
        if route == 200 && ingress == 200 && unserved.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not served: {route} {ingress}, routes {unserved:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_served = started.elapsed();
    let rss = rss_kib(gw.child.id());
    println!(
        "{routes} HTTPRoutes ({} rules) + {ingresses} Ingresses, {SERVICES} Services: all served {:.0} ms after the gateway started; RSS {:.1} MiB",
        routes * RULES,
        all_served.as_secs_f64() * 1000.0,
        rss as f64 / 1024.0
    );

    // Edits are measured once the start's work is done: the gateway writes every
    // route's status after it serves them (a thousand patches), in key order, then the
    // Gateway's and every Ingress's (`status.loadBalancer`), each of which comes back
    // as a watch event; until the last Ingress has its status, edits would compete
    // with that.
    let last_name = format!("route-{:04}", routes - 1);
    let last_ingress_name = format!("ing-{:03}", ingresses - 1);
    let status_written = loop {
        let routes_written = api
            .object("HTTPRoute", "bench", &last_name)
            .and_then(|route| route["status"]["parents"].as_array().cloned())
            .is_some_and(|parents| {
                parents
                    .iter()
                    .any(|p| p["controllerName"] == "edgegate.dev/gateway-controller")
            });
        let ingresses_written = api
            .object("Ingress", "bench", &last_ingress_name)
            .and_then(|ingress| {
                ingress["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .cloned()
            })
            .is_some_and(|addresses| !addresses.is_empty());
        if routes_written && ingresses_written {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "status never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "every route's and Ingress's status written {:.0} ms after the gateway started",
        status_written.as_secs_f64() * 1000.0
    );

    // One edit at a time: the middle route's prefixes move from /pN to /eK-N; the time from the
    // write (the double emits the watch event as it stores) to the new prefix answering.
    let edited = routes / 2;
    let edited_host = format!("r{edited}.example.com");
    let mut samples = Vec::with_capacity(edits);
    for k in 0..edits {
        let prefix = format!("e{k}-");
        api.apply_object(
            "HTTPRoute",
            "bench",
            &format!("route-{edited:04}"),
            json!({"spec": route_spec(edited, &prefix)}),
        );
        let written = Instant::now();
        let path = format!("/{prefix}0");
        while status(&client, addr, &edited_host, &path).await != 200 {
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "edit {k} never served"
            );
        }
        samples.push(written.elapsed());
    }
    samples.sort();
    println!(
        "one route edit, watch event to served: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {edits} edits",
        percentile(&samples, 0.5).as_secs_f64() * 1000.0,
        percentile(&samples, 0.99).as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0,
    );
    println!(
        "RSS after the edits: {:.1} MiB",
        rss_kib(gw.child.id()) as f64 / 1024.0
    );
}

/// Objects as the watches would hold them, built in process.
fn objects(routes: usize, rules: usize, ingresses: usize) -> ClusterObjects {
    let mut objects = ClusterObjects::default();
    for s in 0..SERVICES {
        objects.services.insert(
            ("bench".into(), format!("svc-{s}")),
            ServicePorts(vec![("http".into(), 80)]).into(),
        );
    }
    let created = "2026-01-01T00:00:00Z";
    objects.gateways.insert(
        ("bench".into(), "edge".into()),
        serde_json::from_value(json!({"metadata": {"namespace": "bench", "name": "edge"},
            "spec": {"gatewayClassName": "edgegate",
                     "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}}))
        .map(std::sync::Arc::new)
        .expect("gateway"),
    );
    for i in 0..routes {
        let mut spec = route_spec(i, "p");
        spec["rules"] = Value::Array(spec["rules"].as_array().expect("rules")[..rules].to_vec());
        let name = format!("route-{i:04}");
        objects.routes.insert(
            ("bench".into(), name.clone()),
            serde_json::from_value(json!({"metadata": {"namespace": "bench", "name": name,
                "creationTimestamp": created}, "spec": spec}))
            .map(std::sync::Arc::new)
            .expect("route"),
        );
    }
    for k in 0..ingresses {
        let name = format!("ing-{k:03}");
        objects.ingresses.insert(
            ("bench".into(), name.clone()),
            serde_json::from_value(json!({"metadata": {"namespace": "bench", "name": name,
                "creationTimestamp": created}, "spec": ingress_spec(k)}))
            .map(std::sync::Arc::new)
            .expect("ingress"),
        );
    }
    objects
}

fn matching(size: Size) {
    let settings = Settings {
        gateway_class: Some("edgegate".into()),
        ingress_class: Some("edgegate".into()),
        namespaces: Vec::new(),
    };
    let listeners = vec![ListenerFacts {
        name: "web".into(),
        port: 8080,
        tls: false,
        tcp: false,
    }];
    let names: Vec<Name> = vec!["web".into()];
    let headers = http::HeaderMap::new();
    let method = http::Method::GET;
    for (label, routes, rules, ingresses) in [
        ("10 routes", 10, 1, 0),
        (
            "HTTPRoutes x 10 rules + Ingresses",
            size.routes,
            RULES,
            size.ingresses,
        ),
    ] {
        let objects = objects(routes, rules, ingresses);
        let t = Instant::now();
        let translated = translate(&objects, &settings, &listeners);
        let translate_time = t.elapsed();
        let t = Instant::now();
        let router = Router::compile(&translated.routes, &names);
        let compile_time = t.elapsed();
        // Requests spread over the routes: hosts and prefixes that exist, one that 404s.
        let requests: Vec<(String, String)> = (0..1000)
            .map(|n| {
                let i = (n * 7919) % routes;
                (format!("r{i}.example.com"), format!("/p{}/item", n % rules))
            })
            .chain([("nowhere.example.org".to_string(), "/x".to_string())])
            .collect();
        let rounds = 200;
        let t = Instant::now();
        let mut found = 0usize;
        for _ in 0..rounds {
            for (host, path) in &requests {
                let facts = RequestFacts {
                    host,
                    path,
                    query: None,
                    method: &method,
                    headers: &headers,
                };
                found += usize::from(router.route("web", &facts).is_some());
            }
        }
        let per = t.elapsed().as_nanos() as f64 / (rounds * requests.len()) as f64;
        assert_eq!(found, rounds * (requests.len() - 1), "{label}");
        println!(
            "{label}: {} routes; translate {:.1} ms, router compile {:.1} ms, match {per:.0} ns per request",
            translated.routes.len(),
            translate_time.as_secs_f64() * 1000.0,
            compile_time.as_secs_f64() * 1000.0,
        );
    }
    incremental(size, &settings, &listeners);
}

/// What the watch does per edit, in process: the cache's translation of one edited
/// HTTPRoute among all the others, and the router compiled from the result.
fn incremental(size: Size, settings: &Settings, listeners: &[ListenerFacts]) {
    let mut objects = objects(size.routes, RULES, size.ingresses);
    let names: Vec<Name> = vec!["web".into()];
    let mut translator = Translator::default();
    let mut last = translator.translate(&objects, settings, listeners);
    let mut router = Router::compile(&last.routes, &names);
    let edited = size.routes / 2;
    let key = ("bench".to_string(), format!("route-{edited:04}"));
    let rounds = 30;
    let (mut translate_times, mut compile_times) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        let mut route = (**objects.routes.get(&key).expect("route")).clone();
        route.spec = serde_json::from_value(route_spec(edited, &format!("e{k}-"))).expect("spec");
        objects.routes.insert(key.clone(), route.into());
        let t = Instant::now();
        let translated = translator.translate(&objects, settings, listeners);
        translate_times.push(t.elapsed());
        assert_eq!(translator.translated(), 1);
        // As the publisher does: from the previous router, rebuilding what changed.
        let t = Instant::now();
        router = Router::compile_from(&router, &last.routes, &translated.routes, &names);
        compile_times.push(t.elapsed());
        last = translated;
    }
    let host = format!("r{edited}.example.com");
    let path = format!("/e{}-0", rounds - 1);
    let facts = RequestFacts {
        host: &host,
        path: &path,
        query: None,
        method: &http::Method::GET,
        headers: &http::HeaderMap::new(),
    };
    assert!(
        router.route("web", &facts).is_some(),
        "the last edit is routed"
    );
    translate_times.sort();
    compile_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "one HTTPRoute edited among {} routes, in process: translate p50 {:.2} ms p99 {:.2} ms (1 object translated), router rebuilt from the previous p50 {:.2} ms p99 {:.2} ms",
        size.routes * RULES + size.ingresses,
        ms(percentile(&translate_times, 0.5)),
        ms(percentile(&translate_times, 0.99)),
        ms(percentile(&compile_times, 0.5)),
        ms(percentile(&compile_times, 0.99)),
    );
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent; keep that run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let size = if quick {
        Size {
            routes: 20,
            ingresses: 5,
        }
    } else {
        Size {
            routes: 1_000,
            ingresses: 100,
        }
    };
    // ROUTES=100 makes a debug build's edit about as quick as a release build's at
    // 1,000 (for looking into the edit path without a release build).
    let size = match std::env::var("ROUTES").ok().and_then(|v| v.parse().ok()) {
        Some(routes) => Size { routes, ..size },
        None => size,
    };
    let edits: usize = std::env::var("EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 3 } else { 50 });
    matching(size);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(end_to_end(size, edits));
}
