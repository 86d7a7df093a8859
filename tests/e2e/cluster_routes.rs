//! Routes from the cluster (spec section 10) end to end: the real binary watches the API
//! server double through kube-rs; pods are real servers on loopback addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::kube_api::{Endpoint, KubeApi, TargetPort};
use crate::support::{client, Gateway, Upstream};

/// Pods of one Service: servers on distinct loopback addresses sharing a port.
struct Pods {
    port: u16,
    servers: Vec<Upstream>,
}

impl Pods {
    /// `count` pods named `NAME-0`.. on 127.0.`net`.1, .2, ...
    async fn start(name: &str, net: u8, count: u8) -> Pods {
        let first = Upstream::start_on(
            format!("127.0.{net}.1:0").parse().expect("addr"),
            &format!("{name}-0"),
        )
        .await;
        let port = first.addr.port();
        let mut servers = vec![first];
        for i in 1..count {
            let addr: SocketAddr = format!("127.0.{net}.{}:{port}", i + 1)
                .parse()
                .expect("addr");
            servers.push(Upstream::start_on(addr, &format!("{name}-{i}")).await);
        }
        Pods { port, servers }
    }

    async fn add(&mut self, name: &str, net: u8) {
        let i = self.servers.len();
        let addr: SocketAddr = format!("127.0.{net}.{}:{}", i + 1, self.port)
            .parse()
            .expect("addr");
        self.servers
            .push(Upstream::start_on(addr, &format!("{name}-{i}")).await);
    }

    /// Publishes the Service (port 80 named `http`) and one EndpointSlice of every pod.
    fn publish(&self, api: &KubeApi, namespace: &str, service: &str) {
        api.apply_service(
            namespace,
            service,
            &[(Some("http"), 80, TargetPort::Number(self.port))],
        );
        let endpoints: Vec<Endpoint> = self
            .servers
            .iter()
            .map(|s| Endpoint::ready(&s.addr.ip().to_string()))
            .collect();
        api.apply_endpoint_slice(
            namespace,
            &format!("{service}-a"),
            service,
            &[(Some("http"), self.port)],
            &endpoints,
        );
    }
}

/// A port free right now, for listeners Gateway listeners attach to by number.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A gateway with listener `web` on `port`, one file route (`/file`) and `[kubernetes]`.
fn start_gateway(api: &KubeApi, port: u16, extra: &str) -> Gateway {
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[routes]]\nname = \"from-file\"\npath = \"/file\"\nrespond = {{ status = 200, body = \"file\" }}\n\n\
         [kubernetes]\ngateway_class = \"edgegate\"\ningress_class = \"edgegate\"\n{extra}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)])
}

pub(crate) fn gateway_object(api: &KubeApi, namespace: &str, name: &str, class: &str, port: u16) {
    api.apply_object(
        "Gateway",
        namespace,
        name,
        json!({"spec": {"gatewayClassName": class, "listeners": [
            {"name": "http", "port": port, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]}}),
    );
}

pub(crate) fn http_route(api: &KubeApi, namespace: &str, name: &str, spec: Value) {
    api.apply_object("HTTPRoute", namespace, name, json!({ "spec": spec }));
}

/// One request: (status, the pod that answered or "-", the body).
async fn get(
    gw: &Gateway,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut request = client().get(gw.url("web", path)).header("host", host);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let who = response
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().await.unwrap_or_default();
    (status, who, location.unwrap_or(body))
}

/// Polls until `check` holds for a request, within `limit`; returns how long it took.
async fn within(
    limit: Duration,
    gw: &Gateway,
    host: &str,
    path: &str,
    check: impl Fn(&(u16, String, String)) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = get(gw, host, path, &[]).await;
        if check(&got) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{host}{path}: still {got:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn generation(gw: &Gateway) -> u64 {
    gw.config_json().await["generation"]
        .as_u64()
        .expect("generation")
}

/// The condition `kind` of the route's first parent status, as (status, reason).
fn route_condition(
    api: &KubeApi,
    namespace: &str,
    name: &str,
    kind: &str,
) -> Option<(String, String)> {
    let route = api.object("HTTPRoute", namespace, name)?;
    let conditions = route["status"]["parents"][0]["conditions"]
        .as_array()?
        .clone();
    conditions.iter().find(|c| c["type"] == kind).map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
        )
    })
}

async fn wait_condition(
    api: &KubeApi,
    namespace: &str,
    name: &str,
    kind: &str,
    want: (&str, &str),
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = route_condition(api, namespace, name, kind);
        if got.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} of {namespace}/{name}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_serve_their_hosts_edit_and_delete_live_and_report_status() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 11, 1).await;
    web.publish(&api, "shop", "web");
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    gateway_object(&api, "shop", "theirs", "nginx", port);
    http_route(
        &api,
        "shop",
        "storefront",
        json!({"parentRefs": [{"name": "edge"}], "hostnames": ["shop.example.com"],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/cart"}}],
                          "backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    http_route(
        &api,
        "shop",
        "foreign",
        json!({"parentRefs": [{"name": "theirs"}], "hostnames": ["foreign.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let gw = start_gateway(&api, port, "");
    // Ready means the cluster's routes are served, as it means discovery has synced.
    gw.wait_ready().await;
    let first = get(&gw, "shop.example.com", "/cart/1", &[]).await;
    assert_eq!((first.0, first.1.as_str()), (200, "web-0"));
    assert_eq!(get(&gw, "shop.example.com", "/cartx", &[]).await.0, 404);
    assert_eq!(get(&gw, "other.example.com", "/cart", &[]).await.0, 404);
    assert_eq!(
        get(&gw, "foreign.example.com", "/", &[]).await.0,
        404,
        "another class's route"
    );
    assert_eq!(
        get(&gw, "x", "/file", &[]).await.2,
        "file",
        "file routes stay"
    );
    wait_condition(&api, "shop", "storefront", "Accepted", ("True", "Accepted")).await;
    wait_condition(
        &api,
        "shop",
        "storefront",
        "ResolvedRefs",
        ("True", "ResolvedRefs"),
    )
    .await;
    assert!(api.object("HTTPRoute", "shop", "foreign").expect("foreign")["status"].is_null());
    let gateway = api.object("Gateway", "shop", "edge").expect("gateway");
    let programmed = gateway["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Programmed")
        .expect("programmed")
        .clone();
    assert_eq!(programmed["status"], "True");
    let names: Vec<String> = gw.config_json().await["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    assert!(
        names.contains(&"httproute/shop/storefront/0".to_string()),
        "{names:?}"
    );

    // `edgegate route` explains cluster routes too, given the kubeconfig.
    let explained = std::process::Command::new(crate::support::gateway::BIN)
        .arg("route")
        .arg("--config")
        .arg(&gw.config_path)
        .arg("GET")
        .arg(format!("http://shop.example.com:{port}/cart/1"))
        .env("KUBECONFIG", api.kubeconfig_path())
        .output()
        .expect("edgegate route");
    let explained = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.contains("route: httproute/shop/storefront/0"),
        "{explained}"
    );
    assert!(
        explained.contains("source: httproute/shop/storefront"),
        "{explained}"
    );
    assert!(
        explained.contains("upstream: service/shop/web/80"),
        "{explained}"
    );

    // An edit is served within 2 s, a deletion 404s within 2 s; the file's generation
    // stays what it was (no reload).
    let before = generation(&gw).await;
    http_route(
        &api,
        "shop",
        "storefront",
        json!({"parentRefs": [{"name": "edge"}], "hostnames": ["shop.example.com"],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/basket"}}],
                          "backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let took = within(
        Duration::from_secs(2),
        &gw,
        "shop.example.com",
        "/basket",
        |r| r.0 == 200,
    )
    .await;
    eprintln!("edit served after {took:?}");
    assert_eq!(get(&gw, "shop.example.com", "/cart", &[]).await.0, 404);
    api.delete_object("HTTPRoute", "shop", "storefront");
    let took = within(
        Duration::from_secs(2),
        &gw,
        "shop.example.com",
        "/basket",
        |r| r.0 == 404,
    )
    .await;
    eprintln!("deletion applied after {took:?}");
    assert_eq!(generation(&gw).await, before);
    assert_eq!(
        gw.metric("edgegate_config_reloads_total{result=\"success\"}")
            .await
            .unwrap_or(0.0),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_backends_split_about_one_to_three_and_filters_apply() {
    let api = KubeApi::start().await;
    let blue = Pods::start("blue", 12, 1).await;
    let green = Pods::start("green", 13, 1).await;
    blue.publish(&api, "app", "blue");
    green.publish(&api, "app", "green");
    let port = free_port();
    gateway_object(&api, "app", "edge", "edgegate", port);
    http_route(
        &api,
        "app",
        "split",
        json!({"parentRefs": [{"name": "edge"}],
        "rules": [
          {"matches": [{"path": {"value": "/split"}}],
           "backendRefs": [{"name": "blue", "port": 80, "weight": 1},
                           {"name": "green", "port": 80, "weight": 3}]},
          {"matches": [{"path": {"value": "/api"}, "headers": [{"name": "x-canary", "value": "yes"}]}],
           "filters": [
             {"type": "RequestHeaderModifier",
              "requestHeaderModifier": {"set": [{"name": "x-env", "value": "canary"}]}},
             {"type": "URLRewrite",
              "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}],
           "backendRefs": [{"name": "green", "port": 80}]},
          {"matches": [{"path": {"value": "/api"}}],
           "backendRefs": [{"name": "blue", "port": 80}]},
          {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
           "filters": [{"type": "RequestRedirect",
                        "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
        ]}),
    );
    // Exact over PathPrefix across two routes.
    http_route(
        &api,
        "app",
        "exact",
        json!({"parentRefs": [{"name": "edge"}],
               "rules": [{"matches": [{"path": {"type": "Exact", "value": "/split/exact"}}],
                          "backendRefs": [{"name": "blue", "port": 80}]}]}),
    );
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    within(Duration::from_secs(5), &gw, "x", "/split", |r| r.0 == 200).await;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..400 {
        *seen
            .entry(get(&gw, "x", "/split", &[]).await.1)
            .or_default() += 1;
    }
    let blue_share = f64::from(seen.get("blue-0").copied().unwrap_or(0)) / 400.0;
    assert!(
        (0.17..=0.33).contains(&blue_share),
        "1:3 split, got {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");

    let (status, who, _) = get(&gw, "x", "/api/users", &[("x-canary", "yes")]).await;
    assert_eq!((status, who.as_str()), (200, "green-0"));
    let seen = green.servers[0].last();
    assert_eq!(seen.path, "/v2/users");
    assert_eq!(
        seen.headers.get("x-env").map(|v| v.as_bytes()),
        Some(&b"canary"[..])
    );
    assert_eq!(get(&gw, "x", "/api/users", &[]).await.1, "blue-0");

    let (status, _, location) = get(&gw, "x.example.com", "/old", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(location, "https://x.example.com/old");

    assert_eq!(get(&gw, "x", "/split/exact", &[]).await.1, "blue-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_request_mirror_copies_requests_to_its_service() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 41, 1).await;
    let shadow = Pods::start("shadow", 42, 1).await;
    web.publish(&api, "app", "web");
    shadow.publish(&api, "app", "shadow");
    let port = free_port();
    gateway_object(&api, "app", "edge", "edgegate", port);
    let mirror = |service: &str| {
        json!([{"type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": service, "port": 80}, "percent": 100}}])
    };
    http_route(
        &api,
        "app",
        "mirrored",
        json!({"parentRefs": [{"name": "edge"}],
        "rules": [
          {"matches": [{"path": {"value": "/m"}}], "filters": mirror("shadow"),
           "backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    // A mirror whose Service does not exist: reported, and the rule still serves.
    http_route(
        &api,
        "app",
        "lost",
        json!({"parentRefs": [{"name": "edge"}],
        "rules": [
          {"matches": [{"path": {"value": "/lost"}}], "filters": mirror("nowhere"),
           "backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    within(Duration::from_secs(5), &gw, "x", "/m/a", |r| {
        r.0 == 200 && r.1 == "web-0"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.servers[0].hits() == 0 {
        assert!(Instant::now() < deadline, "the shadow Service got no copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = shadow.servers[0].last();
    assert_eq!((copy.method.as_str(), copy.path.as_str()), ("GET", "/m/a"));
    assert_eq!(
        copy.headers["x-request-id"],
        web.servers[0].last().headers["x-request-id"],
        "the copy is of the request the primary got"
    );
    let (status, who, _) = get(&gw, "x", "/lost", &[]).await;
    assert_eq!((status, who.as_str()), (200, "web-0"));
    wait_condition(
        &api,
        "app",
        "lost",
        "ResolvedRefs",
        ("False", "BackendNotFound"),
    )
    .await;
    wait_condition(
        &api,
        "app",
        "mirrored",
        "ResolvedRefs",
        ("True", "ResolvedRefs"),
    )
    .await;
    let sample =
        "edgegate_mirror_requests_total{result=\"sent\",route=\"httproute/app/mirrored/0\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric(sample).await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the copy is counted as sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_of_our_class_are_served_and_new_pods_get_traffic() {
    let api = KubeApi::start().await;
    let mut web = Pods::start("web", 14, 1).await;
    web.publish(&api, "shop", "web");
    let ingress = |class: &str, host: &str| {
        json!({"spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}})
    };
    api.apply_object(
        "Ingress",
        "shop",
        "ours",
        ingress("edgegate", "ours.example.com"),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "theirs",
        ingress("nginx", "theirs.example.com"),
    );
    let gw = start_gateway(&api, free_port(), "");
    gw.wait_ready().await;
    within(Duration::from_secs(5), &gw, "ours.example.com", "/a", |r| {
        r.0 == 200
    })
    .await;
    assert_eq!(get(&gw, "theirs.example.com", "/a", &[]).await.0, 404);
    // status.loadBalancer names the listener's address; the other class's is untouched.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ours = api.object("Ingress", "shop", "ours").expect("ours");
        if ours["status"]["loadBalancer"]["ingress"] == json!([{"ip": "127.0.0.1"}]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Ingress status: {}",
            ours["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(api.object("Ingress", "shop", "theirs").expect("theirs")["status"].is_null());

    web.add("web", 14).await;
    web.publish(&api, "shop", "web");
    let start = Instant::now();
    loop {
        let who = get(&gw, "ours.example.com", "/", &[]).await.1;
        if who == "web-1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "new pod never served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("new pod served after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_backends_need_a_reference_grant() {
    let api = KubeApi::start().await;
    let db = Pods::start("db", 15, 1).await;
    db.publish(&api, "data", "db");
    let port = free_port();
    gateway_object(&api, "app", "edge", "edgegate", port);
    http_route(
        &api,
        "app",
        "reach",
        json!({"parentRefs": [{"name": "edge"}],
               "rules": [{"backendRefs": [{"name": "db", "namespace": "data", "port": 80}]}]}),
    );
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    within(Duration::from_secs(5), &gw, "x", "/", |r| r.0 == 500).await;
    wait_condition(
        &api,
        "app",
        "reach",
        "ResolvedRefs",
        ("False", "RefNotPermitted"),
    )
    .await;
    api.apply_object(
        "ReferenceGrant",
        "data",
        "allow-app",
        json!({"spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "app"}],
            "to": [{"group": "", "kind": "Service"}]}}),
    );
    within(Duration::from_secs(3), &gw, "x", "/", |r| {
        r.0 == 200 && r.1 == "db-0"
    })
    .await;
    wait_condition(
        &api,
        "app",
        "reach",
        "ResolvedRefs",
        ("True", "ResolvedRefs"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_status_writes_and_a_lost_api_server_keep_routes_serving() {
    let api = KubeApi::start().await;
    api.refuse_status_writes(true);
    let web = Pods::start("web", 16, 1).await;
    web.publish(&api, "shop", "web");
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    http_route(
        &api,
        "shop",
        "r",
        json!({"parentRefs": [{"name": "edge"}],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    within(Duration::from_secs(5), &gw, "x", "/", |r| r.0 == 200).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !api.status_patches().iter().any(|p| p == "HTTPRoute shop/r") {
        assert!(Instant::now() < deadline, "no status write attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.wait_for_log("cannot write status", Duration::from_secs(5));
    assert!(api.object("HTTPRoute", "shop", "r").expect("r")["status"].is_null());
    assert_eq!(
        get(&gw, "x", "/", &[]).await.0,
        200,
        "a refused write changes nothing"
    );

    api.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        assert_eq!(
            get(&gw, "x", "/", &[]).await.1,
            "web-0",
            "last known routes stay"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_serve_secret_certificates_by_sni_and_renewals_live() {
    use crate::support::pki::{self, ClientOptions, Pki};
    let api = KubeApi::start().await;
    let web = Pods::start("web", 17, 1).await;
    web.publish(&api, "shop", "web");
    let ca = Pki::new("cluster test ca");
    let file_cert = ca.issue(&["default.example.com"]);
    let first = ca.issue(&["secure.example.com"]);
    api.apply_tls_secret("shop", "site-tls", &first.cert_pem, &first.key_pem);
    let (web_port, tls_port) = (free_port(), free_port());
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "https", "port": tls_port, "protocol": "HTTPS", "hostname": "secure.example.com",
             "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "site-tls"}]}}]}}),
    );
    http_route(
        &api,
        "shop",
        "secure",
        json!({"parentRefs": [{"name": "edge", "sectionName": "https"}],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let extra = format!(
        "\n[[listeners]]\nname = \"websecure\"\naddress = \"127.0.0.1:{tls_port}\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"default.pem\", key = \"default.key\" }}]\n"
    );
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{web_port}\"\n{extra}\n\
         [kubernetes]\ngateway_class = \"edgegate\"\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    file_cert.write(dir.path(), "default");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let served = |sni: &'static str| {
        let ca_pem = ca.ca_pem.clone();
        async move {
            let mut options = ClientOptions::new(sni, &ca_pem);
            options.observe_only = true;
            let stream = pki::connect(addr, &options).await.expect("handshake");
            let cert = pki::served_certificate(&stream);
            (cert, pki::get(stream, sni, "/").await.unwrap_or_default())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (cert, response) = served("secure.example.com").await;
        if cert == first.der() && response.contains("x-upstream: web-0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Secret certificate not served: {response}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Other names get the file's certificate; the route serves only its listener's host.
    let (cert, response) = served("default.example.com").await;
    assert_eq!(cert, file_cert.der());
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    // A renewed Secret is served to new handshakes without a restart or reload.
    let renewed = ca.issue(&["secure.example.com"]);
    api.apply_tls_secret("shop", "site-tls", &renewed.cert_pem, &renewed.key_pem);
    let start = Instant::now();
    while served("secure.example.com").await.0 != renewed.der() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "renewal not served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("renewed certificate served after {:?}", start.elapsed());
}

async fn kubectl(api: &KubeApi, args: &[&str]) -> String {
    String::from_utf8_lossy(&api.kubectl_stdout(args).await).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_projects_http_routing_example_applied_with_kubectl_is_served() {
    let api = KubeApi::start().await;
    let foo = Pods::start("foo", 18, 1).await;
    let bar = Pods::start("bar", 19, 1).await;
    let canary = Pods::start("canary", 20, 1).await;
    let example = Pods::start("example", 21, 1).await;
    for (pods, service) in [
        (&foo, "foo-svc"),
        (&bar, "bar-svc"),
        (&canary, "bar-svc-canary"),
        (&example, "example-svc"),
    ] {
        api.apply_service(
            "default",
            service,
            &[(Some("http"), 8080, TargetPort::Number(pods.port))],
        );
        api.apply_endpoint_slice(
            "default",
            &format!("{service}-a"),
            service,
            &[(Some("http"), pods.port)],
            &[Endpoint::ready(&pods.servers[0].addr.ip().to_string())],
        );
    }
    // example-svc is named with port 80 by the example.
    api.apply_service(
        "default",
        "example-svc",
        &[(Some("http"), 80, TargetPort::Number(example.port))],
    );
    let port = free_port();
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/fixtures/gateway-api/http-routing"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The one change: the Gateway listener's port 80 becomes the test's free port.
    let gateway = std::fs::read_to_string(format!("{fixtures}/gateway.yaml")).expect("fixture");
    let gateway = gateway.replacen(
        "protocol: HTTP\n    port: 80",
        &format!("protocol: HTTP\n    port: {port}"),
        1,
    );
    std::fs::write(dir.path().join("gateway.yaml"), gateway).expect("write");
    let gateway_file = dir.path().join("gateway.yaml").display().to_string();
    for file in [
        gateway_file,
        format!("{fixtures}/foo-httproute.yaml"),
        format!("{fixtures}/bar-httproute.yaml"),
    ] {
        kubectl(
            &api,
            &["create", "--validate=false", "-n", "default", "-f", &file],
        )
        .await;
    }
    let listed = kubectl(&api, &["get", "httproutes", "-n", "default", "-o", "name"]).await;
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        vec![
            "httproute.gateway.networking.k8s.io/bar-route",
            "httproute.gateway.networking.k8s.io/example-route",
            "httproute.gateway.networking.k8s.io/foo-route"
        ]
    );
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [kubernetes]\ngateway_class = \"example-gateway-class\"\n"
    );
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let path = gw_dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(gw_dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    within(
        Duration::from_secs(5),
        &gw,
        "foo.example.com",
        "/login/x",
        |r| r.1 == "foo-0",
    )
    .await;
    assert_eq!(get(&gw, "foo.example.com", "/logout", &[]).await.0, 404);
    assert_eq!(
        get(&gw, "bar.example.com", "/", &[("env", "canary")])
            .await
            .1,
        "canary-0"
    );
    assert_eq!(get(&gw, "bar.example.com", "/", &[]).await.1, "bar-0");
    assert_eq!(get(&gw, "example.com", "/", &[]).await.1, "example-0");
    // The status kubectl shows is the one edgegate wrote.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = kubectl(
            &api,
            &[
                "get",
                "httproute",
                "foo-route",
                "-n",
                "default",
                "-o",
                "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status}",
            ],
        )
        .await;
        if out == "True" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Accepted not shown by kubectl: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `edgegate`'s `controllerName` (packaging/kubernetes/gatewayclass.yaml).
const OURS: &str = "edgegate.dev/gateway-controller";

/// The `status.parents` entries of a route of any kind.
fn kind_parent_entries(api: &KubeApi, kind: &str, namespace: &str, name: &str) -> Vec<Value> {
    api.object(kind, namespace, name)
        .and_then(|r| r["status"]["parents"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits until `check` holds for the route's `status.parents`.
async fn wait_parents(
    api: &KubeApi,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    wait_kind_parents(api, "HTTPRoute", namespace, name, what, check).await
}

async fn wait_kind_parents(
    api: &KubeApi,
    kind: &str,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let parents = kind_parent_entries(api, kind, namespace, name);
        if check(&parents) {
            return parents;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {namespace}/{name}: {what}; status.parents: {parents:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn accepted_by_us(parents: &[Value]) -> bool {
    parents.iter().any(|p| {
        p["controllerName"] == OURS
            && p["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
            })
    })
}

/// A route attached to an edgegate Gateway and to another implementation's: edgegate's
/// status writes keep the other controller's `status.parents` entry as it is, and
/// remove only edgegate's own when the route leaves its Gateway (issue 18, fault 2: a
/// merge patch replaced the array whole, and a stale `Accepted` stayed forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_route_keeps_other_controllers_status_and_loses_ours_when_detached() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 31, 1).await;
    web.publish(&api, "shop", "web");
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    gateway_object(&api, "shop", "theirs", "nginx", port);
    let spec = |parents: Value| {
        json!({"parentRefs": parents, "hostnames": ["shared.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]})
    };
    http_route(
        &api,
        "shop",
        "shared",
        spec(json!([{"name": "edge"}, {"name": "theirs"}])),
    );
    let theirs = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "namespace": "shop", "name": "theirs"},
        "controllerName": "example.com/other-gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "theirs", "observedGeneration": 1,
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    api.set_status("HTTPRoute", "shop", "shared", json!({"parents": [theirs]}));

    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    assert_eq!(get(&gw, "shared.example.com", "/", &[]).await.0, 200);
    let parents = wait_parents(&api, "shop", "shared", "edgegate's Accepted entry", |p| {
        accepted_by_us(p)
    })
    .await;
    assert!(
        parents.contains(&theirs),
        "the other controller's entry was changed or removed: {parents:#?}"
    );
    assert_eq!(parents.len(), 2, "{parents:#?}");

    // The route leaves edgegate's Gateway: edgegate's entry goes, theirs stays.
    http_route(&api, "shop", "shared", spec(json!([{"name": "theirs"}])));
    within(
        Duration::from_secs(5),
        &gw,
        "shared.example.com",
        "/",
        |r| r.0 == 404,
    )
    .await;
    let parents = wait_parents(&api, "shop", "shared", "edgegate's entry removed", |p| {
        !p.iter().any(|p| p["controllerName"] == OURS)
    })
    .await;
    assert_eq!(parents, vec![theirs]);
    // Each write read the status from the watch's copy of the route (its version as the
    // patch's precondition), not with a request of its own.
    let status_path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/shared/status";
    let requests = api
        .requests()
        .iter()
        .filter(|r| r.starts_with(status_path))
        .count();
    let patches = api
        .status_patches()
        .iter()
        .filter(|p| *p == "HTTPRoute shop/shared")
        .count();
    assert_eq!(requests, patches, "status requests other than patches");
}

/// A status write that fails for a passing reason (a 500 from an API server under
/// etcd trouble) is retried with backoff, and a route deleted and created again gets
/// its status written again (issue 18, fault 3: a failure was remembered like an RBAC
/// refusal, and what was written was never forgotten for deleted objects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_status_writes_are_retried_and_a_recreated_route_gets_status_again() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 32, 1).await;
    web.publish(&api, "shop", "web");
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    let spec = json!({"parentRefs": [{"name": "edge"}], "hostnames": ["retry.example.com"],
                      "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]});
    http_route(&api, "shop", "flaky", spec.clone());
    api.fail_status_writes(4);
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    wait_condition(&api, "shop", "flaky", "Accepted", ("True", "Accepted")).await;

    assert!(api.delete_object("HTTPRoute", "shop", "flaky"));
    within(Duration::from_secs(5), &gw, "retry.example.com", "/", |r| {
        r.0 == 404
    })
    .await;
    http_route(&api, "shop", "flaky", spec);
    within(Duration::from_secs(5), &gw, "retry.example.com", "/", |r| {
        r.0 == 200
    })
    .await;
    wait_condition(&api, "shop", "flaky", "Accepted", ("True", "Accepted")).await;
}

/// A kind RBAC does not let edgegate list (403) counts as empty and is reported; the
/// other kinds' routes are served and `/readyz` turns ready (issue 18, fault 9: only a
/// 404 counted as "not served", so a 403 held every cluster route and `/readyz`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_rbac_forbids_counts_as_empty_and_holds_nothing_else() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 33, 1).await;
    web.publish(&api, "shop", "web");
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    http_route(
        &api,
        "shop",
        "storefront",
        json!({"parentRefs": [{"name": "edge"}], "hostnames": ["shop.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    api.forbid_kind("ReferenceGrant", true);
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    let served = get(&gw, "shop.example.com", "/", &[]).await;
    assert_eq!((served.0, served.1.as_str()), (200, "web-0"));
    gw.wait_for_log("not allowed to list this kind", Duration::from_secs(5));

    // Once allowed, the kind is read like any other (a grant now lets a route in
    // another namespace reach the Service).
    api.forbid_kind("ReferenceGrant", false);
    http_route(
        &api,
        "other",
        "cross",
        json!({"parentRefs": [{"name": "edge", "namespace": "shop"}], "hostnames": ["cross.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "namespace": "shop", "port": 80}]}]}),
    );
    api.apply_object(
        "ReferenceGrant",
        "shop",
        "let-other-in",
        json!({"spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "other"}],
                        "to": [{"group": "", "kind": "Service"}]}}),
    );
    within(
        Duration::from_secs(10),
        &gw,
        "cross.example.com",
        "/",
        |r| r.0 == 200,
    )
    .await;
}

/// Renaming listeners in the file (same addresses) keeps their cluster routes and
/// Secret certificates served through the reload, under load, with the API server slow
/// to answer the watches' relist (issue 18, fault 7: routes carried the old listener
/// name and certificates were keyed by it until a full relist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_listeners_keeps_their_cluster_routes_and_certificates_under_load() {
    use crate::support::http1::RawClient;
    use crate::support::pki::{self, ClientOptions, Pki};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let api = KubeApi::start().await;
    let web = Pods::start("web", 34, 1).await;
    web.publish(&api, "shop", "web");
    let ca = Pki::new("rename test ca");
    let file_cert = ca.issue(&["default.example.com"]);
    let secret_cert = ca.issue(&["secure.example.com"]);
    api.apply_tls_secret(
        "shop",
        "site-tls",
        &secret_cert.cert_pem,
        &secret_cert.key_pem,
    );
    let (web_port, tls_port) = (free_port(), free_port());
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "http", "port": web_port, "protocol": "HTTP"},
            {"name": "https", "port": tls_port, "protocol": "HTTPS", "hostname": "secure.example.com",
             "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "site-tls"}]}}]}}),
    );
    http_route(
        &api,
        "shop",
        "plain",
        json!({"parentRefs": [{"name": "edge", "sectionName": "http"}], "hostnames": ["shop.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    http_route(
        &api,
        "shop",
        "secure",
        json!({"parentRefs": [{"name": "edge", "sectionName": "https"}],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let text = |plain: &str, secure: &str| {
        format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n\n\
             [[listeners]]\nname = \"{plain}\"\naddress = \"127.0.0.1:{web_port}\"\n\n\
             [[listeners]]\nname = \"{secure}\"\naddress = \"127.0.0.1:{tls_port}\"\n[listeners.tls]\n\
             certificates = [{{ cert = \"default.pem\", key = \"default.key\" }}]\n\n\
             [kubernetes]\ngateway_class = \"edgegate\"\n"
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    file_cert.write(dir.path(), "default");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text("web", "websecure")).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let served_certificate = || {
        let ca_pem = ca.ca_pem.clone();
        async move {
            let mut options = ClientOptions::new("secure.example.com", &ca_pem);
            options.observe_only = true;
            let stream = pki::connect(tls_addr, &options).await.expect("handshake");
            pki::served_certificate(&stream)
        }
    };
    assert_eq!(served_certificate().await, secret_cert.der());

    // Keep-alive load on the plain listener's cluster route.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = gw.addr("web");
    let load = tokio::spawn({
        let (ok, failed, first_failure, stop) = (
            ok.clone(),
            failed.clone(),
            first_failure.clone(),
            stop.clone(),
        );
        async move {
            let mut client = RawClient::connect(addr).await;
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                client
                    .send(b"GET /x HTTP/1.1\r\nhost: shop.example.com\r\n\r\n")
                    .await;
                let r = client.response(false, Duration::from_secs(5)).await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_failure.lock().expect("lock").get_or_insert(format!(
                        "status {}: {}",
                        r.status,
                        r.text()
                    ));
                }
                if r.head.has_token("connection", "close") {
                    client = RawClient::connect(addr).await;
                }
            }
        }
    });
    while ok.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The watches relist slowly after the rename, if they relist at all.
    api.set_delay(Duration::from_millis(1500));
    gw.write_config(&text("front", "secure"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while generation(&gw).await != 2 {
        assert!(Instant::now() < deadline, "the rename was never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        served_certificate().await,
        secret_cert.der(),
        "the Secret's certificate is served on the renamed listener"
    );
    let after = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < after + 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the rename; first: {:?}",
        first_failure.lock().expect("lock")
    );
}

/// Certificates from Secrets appear in the expiry metric like file certificates, and
/// follow a renewal that changes their name (issue 18, fault 10: they never appeared,
/// so cert-manager users got no expiry alert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_certificates_appear_in_the_expiry_metric() {
    use crate::support::pki::Pki;
    let api = KubeApi::start().await;
    let web = Pods::start("web", 35, 1).await;
    web.publish(&api, "shop", "web");
    let ca = Pki::new("expiry test ca");
    let file_cert = ca.issue(&["default.example.com"]);
    let first = ca.issue(&["secure.example.com"]);
    api.apply_tls_secret("shop", "site-tls", &first.cert_pem, &first.key_pem);
    let tls_port = free_port();
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "https", "port": tls_port, "protocol": "HTTPS",
             "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "site-tls"}]}}]}}),
    );
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"websecure\"\naddress = \"127.0.0.1:{tls_port}\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"default.pem\", key = \"default.key\" }}]\n\n\
         [kubernetes]\ngateway_class = \"edgegate\"\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    file_cert.write(dir.path(), "default");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let series = |name: &str| {
        format!("edgegate_tls_certificate_expiry_timestamp_seconds{{listener=\"websecure\",name=\"{name}\"}}")
    };
    let wait_series = |name: &'static str, present: bool| {
        let series = series(name);
        let gw = &gw;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while gw.metric(&series).await.is_some() != present {
                assert!(
                    Instant::now() < deadline,
                    "{series} present: {}, want {present}",
                    !present
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(gw.metric(&series("default.example.com")).await.is_some());
    wait_series("secure.example.com", true).await;
    // The Secret now holds a certificate for another name: the old series goes.
    let renewed = ca.issue(&["shop.example.com"]);
    api.apply_tls_secret("shop", "site-tls", &renewed.cert_pem, &renewed.key_pem);
    wait_series("shop.example.com", true).await;
    wait_series("secure.example.com", false).await;
}

/// A reload that adds a listener re-translates what the watches already hold: the
/// Gateway listener on its port gets its routes without the cluster's objects being
/// listed again (a listener change used to restart every watch, relisting everything
/// and rewriting every status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_by_reload_serves_its_gateway_routes_without_a_relist() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 36, 1).await;
    web.publish(&api, "shop", "web");
    let (port, late_port) = (free_port(), free_port());
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "http", "port": port, "protocol": "HTTP"},
            {"name": "late", "port": late_port, "protocol": "HTTP"}]}}),
    );
    http_route(
        &api,
        "shop",
        "late",
        json!({"parentRefs": [{"name": "edge", "sectionName": "late"}], "hostnames": ["late.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let text = |extra: &str| {
        format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n\n\
             [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\
             [kubernetes]\ngateway_class = \"edgegate\"\n"
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text("")).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let since = api.requests().len();
    gw.write_config(&text(&format!(
        "[[listeners]]\nname = \"late\"\naddress = \"127.0.0.1:{late_port}\"\n\n"
    )));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = client()
            .get(format!("http://127.0.0.1:{late_port}/"))
            .header("host", "late.example.com")
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(answer, Ok(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "the new listener: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lists: Vec<String> = api.requests()[since..]
        .iter()
        .filter(|r| !r.contains("watch=true") && !r.contains("/status"))
        .cloned()
        .collect();
    assert!(lists.is_empty(), "listed again: {lists:#?}");
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_annotations_apply_to_every_route_of_their_ingress() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 22, 1).await;
    web.publish(&api, "shop", "web");
    let ingress = |host: &str, annotations: Value| {
        json!({"metadata": {"annotations": annotations},
               "spec": {"ingressClassName": "edgegate", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}})
    };
    let nginx = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    api.apply_object(
        "Ingress",
        "shop",
        "limited",
        ingress(
            "limited.example.com",
            json!({nginx("limit-rpm"): "1", nginx("limit-burst-multiplier"): "2",
                   nginx("enable-cors"): "true",
                   nginx("cors-allow-origin"): "https://app.example.com"}),
        ),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "office",
        ingress(
            "office.example.com",
            json!({nginx("whitelist-source-range"): "10.0.0.0/8",
                   nginx("rewrite-target"): "/$1"}),
        ),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "broken",
        ingress(
            "broken.example.com",
            json!({"edgegate.dev/whitelist-source-range": "not-a-cidr"}),
        ),
    );
    let gw = start_gateway(&api, free_port(), "");
    gw.wait_ready().await;
    within(
        Duration::from_secs(5),
        &gw,
        "office.example.com",
        "/",
        |r| r.0 == 403,
    )
    .await;
    let origin = [("origin", "https://app.example.com")];
    let first = get(&gw, "limited.example.com", "/", &origin).await;
    let second = get(&gw, "limited.example.com", "/", &origin).await;
    let third = get(&gw, "limited.example.com", "/", &origin).await;
    assert_eq!(
        (first.0, second.0, third.0),
        (200, 200, 429),
        "burst = 1 x 2"
    );
    let answer = client()
        .get(gw.url("web", "/"))
        .header("host", "limited.example.com")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(get(&gw, "broken.example.com", "/", &[]).await.0, 500);
    gw.wait_for_log(
        "annotation rewrite-target is not served",
        Duration::from_secs(5),
    );
    gw.wait_for_log(
        "annotation whitelist-source-range: invalid value",
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_upstream_redirect_and_canary_annotations_are_served_and_the_rest_warned() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 43, 1).await;
    let beta = Pods::start("beta", 44, 1).await;
    web.publish(&api, "shop", "web");
    beta.publish(&api, "shop", "beta");
    let ingress = |host: &str, service: &str, annotations: Value| {
        json!({"metadata": {"annotations": annotations},
               "spec": {"ingressClassName": "edgegate", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": service, "port": {"name": "http"}}}}]}}]}})
    };
    let nginx = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    // Upstream settings: HTTP/2 to the pods, a 1 s read timeout, cookie affinity.
    api.apply_object(
        "Ingress",
        "shop",
        "tuned",
        ingress(
            "tuned.example.com",
            "web",
            json!({nginx("backend-protocol"): "GRPC", nginx("proxy-read-timeout"): "1",
                   nginx("affinity"): "cookie", nginx("session-cookie-name"): "sticky",
                   nginx("session-cookie-max-age"): "600"}),
        ),
    );
    // The same Service without annotations keeps the plain upstream.
    api.apply_object(
        "Ingress",
        "shop",
        "plain",
        ingress("plain.example.com", "web", json!({})),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "secure",
        ingress(
            "secure.example.com",
            "web",
            json!({nginx("force-ssl-redirect"): "true"}),
        ),
    );
    // A canary by header and cookie (weight 0), and one taking every other request.
    api.apply_object(
        "Ingress",
        "shop",
        "main",
        ingress("main.example.com", "web", json!({})),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "main-canary",
        ingress(
            "main.example.com",
            "beta",
            json!({nginx("canary"): "true", nginx("canary-by-header"): "x-canary",
                   nginx("canary-by-cookie"): "beta", nginx("canary-weight"): "0"}),
        ),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "all",
        ingress("all.example.com", "web", json!({})),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "all-canary",
        ingress(
            "all.example.com",
            "beta",
            json!({nginx("canary"): "true", nginx("canary-weight"): "100",
                   nginx("canary-by-header"): "x-version", nginx("canary-by-header-value"): "v1"}),
        ),
    );
    api.apply_object(
        "Ingress",
        "shop",
        "odd",
        ingress(
            "odd.example.com",
            "web",
            json!({nginx("rewrite-target"): "/$1", nginx("session-cookie-name"): "x"}),
        ),
    );
    let gw = start_gateway(&api, free_port(), "");
    gw.wait_ready().await;
    within(Duration::from_secs(5), &gw, "tuned.example.com", "/", |r| {
        r.0 == 200 && r.1 == "web-0"
    })
    .await;
    assert_eq!(web.servers[0].last().version, http::Version::HTTP_2);
    let answer = client()
        .get(gw.url("web", "/"))
        .header("host", "tuned.example.com")
        .send()
        .await
        .expect("request");
    let cookie = answer.headers()["set-cookie"].to_str().expect("ascii");
    assert!(
        cookie.starts_with("sticky=") && cookie.contains("Max-Age=600"),
        "{cookie}"
    );
    let (status, _, _) = get(&gw, "tuned.example.com", "/slow/3000", &[]).await;
    assert_eq!(status, 504, "proxy-read-timeout: 1");
    let (status, who, _) = get(&gw, "plain.example.com", "/slow/1500", &[]).await;
    assert_eq!(
        (status, who.as_str()),
        (200, "web-0"),
        "other Ingresses keep the defaults"
    );
    assert_eq!(web.servers[0].last().version, http::Version::HTTP_11);

    let (status, _, location) = get(&gw, "secure.example.com", "/a?b=1", &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (308, "https://secure.example.com/a?b=1")
    );

    let hits = |headers: &[(&str, &str)]| {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let gw = &gw;
        async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            get(gw, "main.example.com", "/", &pairs).await.1
        }
    };
    assert_eq!(hits(&[]).await, "web-0");
    assert_eq!(hits(&[("x-canary", "always")]).await, "beta-0");
    assert_eq!(hits(&[("x-canary", "never")]).await, "web-0");
    assert_eq!(hits(&[("cookie", "beta=always")]).await, "beta-0");
    assert_eq!(hits(&[("cookie", "beta=never")]).await, "web-0");
    for _ in 0..5 {
        assert_eq!(get(&gw, "all.example.com", "/", &[]).await.1, "beta-0");
    }
    assert_eq!(
        get(&gw, "all.example.com", "/", &[("x-version", "v1")])
            .await
            .1,
        "beta-0"
    );

    gw.wait_for_log(
        "annotation rewrite-target is not served",
        Duration::from_secs(5),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = api.objects_of("Event", "shop");
        let messages: Vec<&str> = events
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "odd" && e["type"] == "Warning")
            .filter_map(|e| e["message"].as_str())
            .collect();
        if messages.len() == 2 {
            assert!(messages.contains(&"annotation rewrite-target is not served"));
            assert!(messages
                .iter()
                .any(|m| m.contains("session-cookie-name without affinity")));
            assert!(
                events.iter().all(|e| e["involvedObject"]["name"] == "odd"),
                "served annotations raise no warning: {events:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "warning events: {events:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_pass_through_and_tcp_routes_relay() {
    use crate::support::pki::{self, ClientOptions, Pki};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = KubeApi::start().await;
    // A TLS backend with its own certificate, as a Service's only pod.
    let backend_pki = Pki::new("backend ca");
    let backend_cert = backend_pki.issue(&["secure.example.com"]);
    let backend =
        Upstream::start_tls("secure-0", &backend_cert.cert_pem, &backend_cert.key_pem).await;
    api.apply_service(
        "shop",
        "secure",
        &[(Some("https"), 443, TargetPort::Number(backend.addr.port()))],
    );
    api.apply_endpoint_slice(
        "shop",
        "secure-a",
        "secure",
        &[(Some("https"), backend.addr.port())],
        &[Endpoint::ready("127.0.0.1")],
    );
    let gateway_pki = Pki::new("gateway ca");
    let gateway_cert = gateway_pki.issue(&["gw.example.com"]);
    let (tls_port, tcp_port) = (free_port(), free_port());
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "passthrough", "port": tls_port, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
            {"name": "tcp", "port": tcp_port, "protocol": "TCP"}]}}),
    );
    api.apply_object(
        "TLSRoute",
        "shop",
        "secure",
        json!({"spec": {"parentRefs": [{"name": "edge", "sectionName": "passthrough"}],
               "hostnames": ["secure.example.com"],
               "rules": [{"backendRefs": [{"name": "secure", "port": 443}]}]}}),
    );
    api.apply_object(
        "TCPRoute",
        "shop",
        "raw",
        json!({"spec": {"parentRefs": [{"name": "edge", "sectionName": "tcp"}],
               "rules": [{"backendRefs": [{"name": "secure", "port": 443}]}]}}),
    );
    // Another implementation also serves the TLSRoute and has written its entry.
    let theirs = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "namespace": "shop", "name": "theirs"},
        "controllerName": "example.com/other-gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "theirs", "observedGeneration": 1,
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    api.set_status("TLSRoute", "shop", "secure", json!({"parents": [theirs]}));
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"websecure\"\naddress = \"127.0.0.1:{tls_port}\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"gw.pem\", key = \"gw.key\" }}]\n\n\
         [[listeners]]\nname = \"raw\"\naddress = \"127.0.0.1:{tcp_port}\"\nprotocol = \"tcp\"\n\n\
         [[routes]]\nname = \"hello\"\nrespond = {{ status = 200, body = \"terminated\" }}\n\n\
         [kubernetes]\ngateway_class = \"edgegate\"\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    gateway_cert.write(dir.path(), "gw");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        match pki::connect(
            tls_addr,
            &ClientOptions::new("secure.example.com", &backend_pki.ca_pem),
        )
        .await
        {
            Ok(stream) => break stream,
            Err(e) => assert!(Instant::now() < deadline, "TLSRoute not served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pki::served_certificate(&stream), backend_cert.der());
    let answer = pki::get(stream, "secure.example.com", "/through")
        .await
        .expect("request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Other names on the listener are terminated by the gateway.
    let stream = pki::connect(
        tls_addr,
        &ClientOptions::new("gw.example.com", &gateway_pki.ca_pem),
    )
    .await
    .expect("terminated handshake");
    assert!(pki::get(stream, "gw.example.com", "/")
        .await
        .expect("request")
        .ends_with("terminated"));
    // The TCPRoute relays whole connections: a TLS handshake through it reaches the backend.
    let tcp_addr: SocketAddr = format!("127.0.0.1:{tcp_port}").parse().expect("addr");
    let stream = pki::connect(
        tcp_addr,
        &ClientOptions::new("secure.example.com", &backend_pki.ca_pem),
    )
    .await
    .expect("handshake through the TCPRoute");
    let mut stream = stream;
    stream
        .write_all(b"GET /raw HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        gw.metric("edgegate_tcp_connections_total{listener=\"raw\",route=\"tcproute/shop/raw/0\",upstream=\"service/shop/secure/443\"}")
            .await,
        Some(1.0)
    );

    // Both report, per parent of ours, Accepted and ResolvedRefs; the other
    // controller's entry on the TLSRoute stays as it was.
    let served = |p: &[Value]| {
        p.iter().any(|p| {
            p["controllerName"] == OURS
                && p["parentRef"]["name"] == "edge"
                && ["Accepted", "ResolvedRefs"].iter().all(|kind| {
                    p["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == *kind && c["status"] == "True")
                    })
                })
        })
    };
    let parents =
        wait_kind_parents(&api, "TLSRoute", "shop", "secure", "ours served", served).await;
    assert!(parents.contains(&theirs), "{parents:#?}");
    assert_eq!(parents.len(), 2, "{parents:#?}");
    let parents = wait_kind_parents(&api, "TCPRoute", "shop", "raw", "ours served", served).await;
    assert_eq!(parents.len(), 1, "{parents:#?}");
    assert_eq!(parents[0]["parentRef"]["sectionName"], "tcp");
    // The Gateway's listeners say which kind they take, and that one route attached.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let gateway = api.object("Gateway", "shop", "edge").expect("gateway");
        let listeners = &gateway["status"]["listeners"];
        let shows = |name: &str, kind: &str| {
            listeners.as_array().is_some_and(|l| {
                l.iter().any(|l| {
                    l["name"] == name
                        && l["supportedKinds"][0]["kind"] == kind
                        && l["attachedRoutes"] == 1
                })
            })
        };
        if shows("passthrough", "TLSRoute") && shows("tcp", "TCPRoute") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway listener status: {listeners:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A backend that does not resolve is reported, and the entry updated in place.
    api.apply_object(
        "TCPRoute",
        "shop",
        "raw",
        json!({"spec": {"parentRefs": [{"name": "edge", "sectionName": "tcp"}],
               "rules": [{"backendRefs": [{"name": "secure", "namespace": "vault", "port": 443}]}]}}),
    );
    let parents = wait_kind_parents(&api, "TCPRoute", "shop", "raw", "RefNotPermitted", |p| {
        p.iter().any(|p| {
            p["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "ResolvedRefs"
                        && c["status"] == "False"
                        && c["reason"] == "RefNotPermitted"
                })
            })
        })
    })
    .await;
    assert_eq!(parents.len(), 1, "{parents:#?}");

    // The TLSRoute leaves edgegate's Gateway: our entry goes, theirs stays.
    api.apply_object(
        "TLSRoute",
        "shop",
        "secure",
        json!({"spec": {"parentRefs": [{"name": "theirs"}],
               "hostnames": ["secure.example.com"],
               "rules": [{"backendRefs": [{"name": "secure", "port": 443}]}]}}),
    );
    let parents = wait_kind_parents(&api, "TLSRoute", "shop", "secure", "ours removed", |p| {
        !p.iter().any(|p| p["controllerName"] == OURS)
    })
    .await;
    assert_eq!(parents, vec![theirs]);
}

/// The translation cache end to end, many routes at once: an edit, a deletion, a
/// Service's port and a Gateway listener's hostname each change what they touch, and
/// every route they do not touch keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn among_many_routes_each_change_reaches_exactly_its_dependents() {
    let api = KubeApi::start().await;
    let web = Pods::start("web", 41, 1).await;
    web.publish(&api, "shop", "web");
    let other = Pods::start("api", 42, 1).await;
    other.publish(&api, "shop", "api");
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    let route = |i: usize, prefix: &str| {
        let service = if i % 2 == 0 { "web" } else { "api" };
        json!({"parentRefs": [{"name": "edge"}], "hostnames": [format!("r{i}.example.com")],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": format!("/{prefix}")}}],
                          "backendRefs": [{"name": service, "port": 80}]}]})
    };
    for i in 0..30 {
        http_route(&api, "shop", &format!("r{i}"), route(i, "p"));
    }
    let gw = start_gateway(&api, port, "");
    gw.wait_ready().await;
    for i in 0..30 {
        let (status, pod, _) = get(&gw, &format!("r{i}.example.com"), "/p", &[]).await;
        let want = if i % 2 == 0 { "web-0" } else { "api-0" };
        assert_eq!((status, pod.as_str()), (200, want), "r{i}");
    }
    let limit = Duration::from_secs(5);
    let served = |got: &(u16, String, String)| got.0 == 200;
    let absent = |got: &(u16, String, String)| got.0 == 404;

    // An edit: the new prefix answers, the old one no longer does, a neighbour still does.
    http_route(&api, "shop", "r7", route(7, "moved"));
    within(limit, &gw, "r7.example.com", "/moved/x", served).await;
    assert_eq!(get(&gw, "r7.example.com", "/p", &[]).await.0, 404);
    assert_eq!(get(&gw, "r8.example.com", "/p", &[]).await.0, 200);

    // A deletion.
    assert!(api.delete_object("HTTPRoute", "shop", "r9"));
    within(limit, &gw, "r9.example.com", "/p", absent).await;
    assert_eq!(get(&gw, "r11.example.com", "/p", &[]).await.0, 200);

    // Service `api` loses port 80: the routes naming it answer 500 and say why; the
    // routes to `web` are untouched. Then it comes back.
    api.apply_service(
        "shop",
        "api",
        &[(Some("http"), 8080, TargetPort::Number(other.port))],
    );
    within(limit, &gw, "r1.example.com", "/p", |got| got.0 == 500).await;
    assert_eq!(get(&gw, "r13.example.com", "/p", &[]).await.0, 500);
    assert_eq!(get(&gw, "r2.example.com", "/p", &[]).await.0, 200);
    wait_condition(
        &api,
        "shop",
        "r13",
        "ResolvedRefs",
        ("False", "BackendNotFound"),
    )
    .await;
    other.publish(&api, "shop", "api");
    within(limit, &gw, "r13.example.com", "/p", served).await;

    // The Gateway's listener narrows to one host: only that route stays attached.
    api.apply_object(
        "Gateway",
        "shop",
        "edge",
        json!({"spec": {"gatewayClassName": "edgegate", "listeners": [
            {"name": "http", "port": port, "protocol": "HTTP", "hostname": "r4.example.com",
             "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]}}),
    );
    within(limit, &gw, "r6.example.com", "/p", absent).await;
    assert_eq!(get(&gw, "r4.example.com", "/p", &[]).await.0, 200);
    wait_condition(
        &api,
        "shop",
        "r6",
        "Accepted",
        ("False", "NoMatchingListenerHostname"),
    )
    .await;
    gateway_object(&api, "shop", "edge", "edgegate", port);
    within(limit, &gw, "r6.example.com", "/p", served).await;
    // And every route is as it should be at the end.
    for i in (0..30).filter(|i| *i != 9) {
        let path = if i == 7 { "/moved" } else { "/p" };
        assert_eq!(
            get(&gw, &format!("r{i}.example.com"), path, &[]).await.0,
            200,
            "r{i}"
        );
    }
}
