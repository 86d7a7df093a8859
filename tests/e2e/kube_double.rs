//! The Kubernetes API server double (support/kube_api.rs) checked against independent
//! clients: kubectl (client-go), kube-rs, and raw HTTP. If these pass, discovery tests
//! built on the double exercise the same protocol a real cluster speaks.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::support::kube_api::{Endpoint, EndpointSubset, KubeApi, TargetPort};

const WEB: &str = "kubernetes.io/service-name=web";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// kubectl

async fn kubectl_json(api: &KubeApi, args: &[&str]) -> Value {
    serde_json::from_slice(&api.kubectl_stdout(args).await).expect("kubectl prints JSON")
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_what_was_applied() {
    let api = KubeApi::start().await;
    let kubeconfig = std::fs::read_to_string(api.kubeconfig_path()).expect("kubeconfig");
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{}", api.addr().port())));
    api.apply_service(
        "default",
        "web",
        &[
            (Some("http"), 80, TargetPort::Name("http")),
            (Some("metrics"), 9090, TargetPort::Number(9100)),
        ],
    );
    let http = [(Some("http"), 8080)];
    api.apply_endpoint_slice(
        "default",
        "web-abc12",
        "web",
        &http,
        &[
            Endpoint::ready("127.0.10.1"),
            Endpoint::not_ready("127.0.10.2"),
            Endpoint::terminating("127.0.10.3", true),
        ],
    );
    api.apply_endpoint_slice(
        "default",
        "web-v6",
        "web",
        &http,
        &[Endpoint::ready("fd00::1")],
    );
    api.apply_endpoint_slice("default", "other-1", "other", &http, &[]);
    api.apply_endpoint_slice("kube-system", "web-elsewhere", "web", &http, &[]);
    api.apply_endpoints(
        "default",
        "web",
        &[EndpointSubset {
            addresses: vec!["127.0.10.1".into()],
            not_ready_addresses: vec!["127.0.10.2".into()],
            ports: vec![(Some("http".into()), 8080)],
        }],
    );

    let slices = kubectl_json(
        &api,
        &[
            "get",
            "endpointslices",
            "-n",
            "default",
            "-l",
            WEB,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(names(&slices), ["web-abc12", "web-v6"]);
    let first = &slices["items"][0];
    assert_eq!(first["kind"], "EndpointSlice");
    assert_eq!(first["addressType"], "IPv4");
    assert_eq!(
        first["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(first["ports"][0]["name"], "http");
    assert_eq!(first["ports"][0]["port"], 8080);
    let conditions: Vec<&Value> = first["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| &e["conditions"])
        .collect();
    assert_eq!(conditions[0]["ready"], true);
    assert_eq!(conditions[1]["ready"], false);
    assert_eq!(conditions[2]["terminating"], true);
    assert_eq!(conditions[2]["serving"], true);
    assert_eq!(slices["items"][1]["addressType"], "IPv6");

    let service = kubectl_json(
        &api,
        &["get", "service", "web", "-n", "default", "-o", "json"],
    )
    .await;
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(service["spec"]["ports"][1]["targetPort"], 9100);

    let endpoints = kubectl_json(
        &api,
        &["get", "endpoints", "web", "-n", "default", "-o", "json"],
    )
    .await;
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.10.1");
    assert_eq!(
        endpoints["subsets"][0]["notReadyAddresses"][0]["ip"],
        "127.0.10.2"
    );

    let requests = api.requests();
    eprintln!("kubectl requests: {requests:#?}");
    assert!(
        requests.iter().any(|r| r.starts_with(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb"
        )),
        "kubectl listed with the label selector: {requests:#?}"
    );
}

/// Documents kubectl has printed so far; a trailing incomplete one is left for later.
fn documents(output: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(output)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// Reads kubectl's output until a watch event `kind` for object `name` shows up.
async fn read_event(
    stdout: &mut tokio::process::ChildStdout,
    output: &mut Vec<u8>,
    kind: &str,
    name: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 8192];
    loop {
        let seen = documents(output)
            .iter()
            .any(|d| d["type"] == kind && d["object"]["metadata"]["name"] == name);
        if seen {
            return;
        }
        let n = tokio::time::timeout_at(deadline, stdout.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {kind} {name} from kubectl; output so far:\n{}",
                    String::from_utf8_lossy(output)
                )
            })
            .expect("read kubectl output");
        assert!(n > 0, "kubectl exited: {}", String::from_utf8_lossy(output));
        output.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_changes_made_after_it_started() {
    let api = KubeApi::start().await;
    let http = [(Some("http"), 8080)];
    seed_web_slice(&api, &http);

    let listed = api.resource_version();
    let cache = tempfile::tempdir().expect("cache dir");
    let mut child = api
        .kubectl(
            &cache,
            &[
                "get",
                "endpointslices",
                "-n",
                "default",
                "-l",
                WEB,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
                "--request-timeout=60s",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kubectl watch");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut output = Vec::new();

    read_event(&mut stdout, &mut output, "ADDED", "web-a").await;
    api.wait_for_watchers(1, WAIT).await;
    api.apply_endpoint_slice(
        "default",
        "web-late",
        "web",
        &http,
        &[Endpoint::ready("127.0.10.9")],
    );
    api.apply_endpoint_slice("default", "other-late", "other", &http, &[]);
    read_event(&mut stdout, &mut output, "ADDED", "web-late").await;
    api.apply_endpoint_slice(
        "default",
        "web-a",
        "web",
        &http,
        &[Endpoint::not_ready("127.0.10.1")],
    );
    read_event(&mut stdout, &mut output, "MODIFIED", "web-a").await;
    assert!(api.delete_endpoint_slice("default", "web-late"));
    read_event(&mut stdout, &mut output, "DELETED", "web-late").await;
    child.kill().await.expect("stop kubectl");
    api.wait_for_watchers_at_most(0, WAIT).await;

    let events = documents(&output);
    assert!(
        events
            .iter()
            .all(|e| e["object"]["metadata"]["name"] != "other-late"),
        "the label selector is honoured: {events:#?}"
    );
    let requests = api.requests();
    eprintln!("kubectl watch requests: {requests:#?}");
    let list = requests
        .iter()
        .find(|r| r.contains("/endpointslices?") && !r.contains("watch="))
        .expect("kubectl listed first");
    let watch = requests
        .iter()
        .find(|r| r.contains("/endpointslices?") && r.contains("watch=true"))
        .expect("then watched");
    assert!(list.contains("labelSelector=") && watch.contains("labelSelector="));
    assert!(
        watch.contains(&format!("resourceVersion={listed}")),
        "watch from the list's version: {watch}"
    );
    assert!(api.user_agents().iter().all(|ua| ua.starts_with("kubectl")));
}

// ---------------------------------------------------------------------------------------
// Raw protocol

fn raw_client(api: &KubeApi) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(api.ca_pem().as_bytes()).expect("CA");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client")
}

async fn raw_get(api: &KubeApi, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = raw_client(api).get(format!("{}{path}", api.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_statuses_watch_streams_and_expiry() {
    let api = KubeApi::start().await;
    let token = Some(api.token());

    for bad in [None, Some("wrong")] {
        let (code, body) = raw_get(&api, "/api/v1/namespaces/default/services", bad).await;
        assert_eq!(code, 401);
        let status: Value = serde_json::from_str(&body).expect("Status JSON");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
        assert_eq!(status["code"], 401);
    }
    let (code, body) = raw_get(&api, "/api/v1/namespaces/default/services/web", token).await;
    assert_eq!(code, 404);
    let status: Value = serde_json::from_str(&body).expect("Status JSON");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "services \"web\" not found");
    let (code, _) = raw_get(
        &api,
        "/api/v1/namespaces/default/services?labelSelector=a%3D%3D%3Db",
        token,
    )
    .await;
    assert_eq!(code, 400, "a malformed selector is a bad request");

    let start = api.resource_version();
    let http = [(Some("http"), 8080)];
    seed_web_slice(&api, &http);
    api.apply_endpoint_slice("default", "other-a", "other", &http, &[]);
    api.apply_endpoint_slice(
        "default",
        "web-a",
        "web",
        &http,
        &[Endpoint::ready("127.0.10.2")],
    );
    let unchanged = api.resource_version();
    api.apply_endpoint_slice(
        "default",
        "web-a",
        "web",
        &http,
        &[Endpoint::ready("127.0.10.2")],
    );
    assert_eq!(
        api.resource_version(),
        unchanged,
        "a no-op update writes nothing"
    );

    // A watch from an old version replays what happened since, then ends at its timeout.
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let began = std::time::Instant::now();
    let (code, body) = raw_get(
        &api,
        &format!("{slices}?watch=1&labelSelector=kubernetes.io%2Fservice-name%3Dweb&resourceVersion={start}&timeoutSeconds=1"),
        token,
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "timeoutSeconds ends the stream"
    );
    let events = lines(&body);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED"]);
    assert_eq!(events[1]["object"]["kind"], "EndpointSlice");
    assert_eq!(
        events[1]["object"]["metadata"]["resourceVersion"],
        unchanged.as_str()
    );

    // A streaming list: current objects, then the bookmark that ends the initial events.
    let (code, body) = raw_get(
        &api,
        &format!("{slices}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"),
        token,
    )
    .await;
    assert_eq!(code, 200);
    let events = lines(&body);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(events[2]["type"], "BOOKMARK");
    assert_eq!(
        events[2]["object"]["metadata"]["resourceVersion"],
        unchanged.as_str()
    );
    assert_eq!(
        events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // Older than the retained history: 200 and one in-stream 410, then the end.
    api.set_history_limit(1);
    let (code, body) = raw_get(
        &api,
        &format!("{slices}?watch=true&resourceVersion={start}"),
        token,
    )
    .await;
    assert_eq!(code, 200);
    let events = lines(&body);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "ERROR");
    let status = &events[0]["object"];
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert!(status["message"]
        .as_str()
        .expect("message")
        .starts_with(&format!("too old resource version: {start} (")));

    // Deletions reach lists.
    api.apply_service("default", "web", &[(None, 80, TargetPort::Number(8080))]);
    assert!(api.delete_service("default", "web"));
    assert!(!api.delete_service("default", "web"));
    let (code, _) = raw_get(&api, "/api/v1/namespaces/default/services/web", token).await;
    assert_eq!(code, 404);
}

/// Issue 18's cluster-route tail: the double wrote watch events with Nagle on, so an
/// event written while the previous one was not yet acknowledged waited for the
/// client's delayed ACK (about 40 ms), which a real API server (Go: TCP_NODELAY on
/// every connection) never makes a client wait. The client here delays its ACKs on
/// purpose (TCP_QUICKACK off) after each first event; the second, written as soon as
/// the first is in, must arrive at once all the same.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_event_is_never_held_for_the_clients_delayed_ack() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::AsyncWriteExt;

    let api = KubeApi::start().await;
    let port = |p: u16| [(Some("http"), p, TargetPort::Number(p))];
    api.apply_service("default", "web", &port(1000));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(api.ca_pem().as_bytes()).expect("CA"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(api.addr())
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS");
    let request = format!(
        "GET /api/v1/namespaces/default/services?watch=true&resourceVersion={} HTTP/1.1\r\n\
         Host: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        api.resource_version(),
        api.addr(),
        api.token()
    );
    tls.write_all(request.as_bytes()).await.expect("request");
    // Reads until the stream holds the response head and `events` events (one JSON
    // document a line).
    async fn read_until(
        tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        received: &mut Vec<u8>,
        events: usize,
    ) {
        let mut buf = [0u8; 16 * 1024];
        while received.is_empty() || received.windows(2).filter(|w| w == b"}\n").count() < events {
            let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
                .await
                .expect("an event in time")
                .expect("read");
            assert!(n > 0, "the watch ended");
            received.extend_from_slice(&buf[..n]);
        }
    }
    let mut received = Vec::new();
    read_until(&mut tls, &mut received, 0).await;
    let mut waits = Vec::new();
    for round in 0..6u16 {
        // Delayed ACKs from here (the kernel leaves this mode by itself when its
        // delayed-ACK timer fires, so it is set again each round).
        rustix::net::sockopt::set_tcp_quickack(tls.get_ref().0, false).expect("TCP_QUICKACK");
        api.apply_service("default", "web", &port(2000 + round));
        read_until(&mut tls, &mut received, 2 * usize::from(round) + 1).await;
        let written = std::time::Instant::now();
        api.apply_service("default", "web", &port(3000 + round));
        read_until(&mut tls, &mut received, 2 * usize::from(round) + 2).await;
        // The first round is not counted: so soon after the handshake the client's
        // kernel still acknowledged at once (observed), so it proves nothing.
        if round > 0 {
            waits.push(written.elapsed());
        }
    }
    // With Nagle every one waits about 40 ms; the median of five is immune to a slow
    // moment of the machine.
    waits.sort();
    assert!(
        waits[waits.len() / 2] < Duration::from_millis(20),
        "the second event waited for the first one's ACK: {waits:?}"
    );
}

// ---------------------------------------------------------------------------------------
// kube-rs

async fn kube_client(api: &KubeApi) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(api.kubeconfig_path()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_paginates_consistently_and_reads_services_and_endpoints() {
    let api = KubeApi::start().await;
    let http = [(Some("http"), 8080)];
    for i in 0..7 {
        let address = format!("10.0.1.{i}");
        api.apply_endpoint_slice(
            "default",
            &format!("web-{i}"),
            "web",
            &http,
            &[Endpoint::ready(&address)],
        );
    }
    api.apply_endpoint_slice("default", "other-0", "other", &http, &[]);
    let client = kube_client(&api).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let params = ListParams::default().labels(WEB).limit(3);
    let mut page = slices.list(&params).await.expect("first page");
    let version = page
        .metadata
        .resource_version
        .clone()
        .expect("list version");
    // Written between pages: a consistent snapshot must not show it.
    api.apply_endpoint_slice("default", "web-late", "web", &http, &[]);
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(page.items.len() <= 3);
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(version.as_str())
        );
        seen.extend(page.items.iter().map(|s| s.name_any()));
        let Some(token) = page.metadata.continue_.clone().filter(|t| !t.is_empty()) else {
            break;
        };
        page = slices
            .list(&params.clone().continue_token(&token))
            .await
            .expect("next page");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("web-{i}")).collect::<Vec<_>>());
    assert!(api.requests().iter().any(|r| r.contains("continue=")));

    let all = slices
        .list(&ListParams::default().labels(WEB))
        .await
        .expect("list");
    assert_eq!(all.items.len(), 8);

    // A continue token from before a compaction is refused like the real server does.
    let first = slices.list(&params).await.expect("first page");
    api.expire_history();
    let token = first.metadata.continue_.expect("continue");
    match slices.list(&params.clone().continue_token(&token)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    api.apply_service(
        "default",
        "web",
        &[
            (Some("http"), 80, TargetPort::Name("http")),
            (None, 81, TargetPort::Number(8081)),
        ],
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web = services.get("web").await.expect("get service");
    let ports = web.spec.expect("spec").ports.expect("ports");
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("http".into()))
    );
    assert_eq!(ports[1].name, None);
    assert_eq!(ports[1].target_port, Some(IntOrString::Int(8081)));
    match services.get("missing").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }
    assert!(services
        .get_opt("missing")
        .await
        .expect("get_opt")
        .is_none());

    let subset = EndpointSubset {
        addresses: vec!["10.0.2.1".into(), "10.0.2.2".into()],
        not_ready_addresses: vec!["10.0.2.3".into()],
        ports: vec![(None, 8080)],
    };
    api.apply_endpoints("default", "web", &[subset]);
    api.apply_endpoints("default", "other", &[]);
    let endpoints: Api<Endpoints> = Api::namespaced(client, "default");
    let list = endpoints
        .list(&ListParams::default().fields("metadata.name=web"))
        .await
        .expect("list endpoints");
    assert_eq!(list.items.len(), 1);
    let subsets = list.items[0].subsets.clone().expect("subsets");
    assert_eq!(subsets[0].addresses.as_ref().expect("addresses").len(), 2);
    assert_eq!(
        subsets[0].not_ready_addresses.as_ref().expect("not ready")[0].ip,
        "10.0.2.3"
    );
    assert_eq!(subsets[0].ports.as_ref().expect("ports")[0].port, 8080);
    assert!(api.delete_endpoints("default", "web"));
    let list = endpoints
        .list(&ListParams::default().fields("metadata.name=web"))
        .await
        .expect("list endpoints");
    assert!(list.items.is_empty());
}

/// Retries quickly so the tests see recovery within their deadlines (kube-runtime's
/// default backoff starts at 800 ms and grows to 30 s).
struct Quick;

impl Iterator for Quick {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}

impl Backoff for Quick {
    fn reset(&mut self) {}
}

/// Runs a kube-runtime watcher, reporting each event as a short description.
fn spawn_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (mpsc::UnboundedReceiver<String>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).backoff(Quick).boxed();
        while let Some(event) = stream.next().await {
            let text = match event {
                Ok(Event::Init) => "init".to_owned(),
                Ok(Event::InitApply(o)) => format!("init-apply {}", o.name_any()),
                Ok(Event::InitDone) => "init-done".to_owned(),
                Ok(Event::Apply(o)) => format!("apply {}", o.name_any()),
                Ok(Event::Delete(o)) => format!("delete {}", o.name_any()),
                Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
                Err(e) => format!("error {e}"),
            };
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    (rx, task)
}

async fn expect_events(events: &mut mpsc::UnboundedReceiver<String>, want: &[&str]) {
    for want in want {
        let got = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no watcher event, want {want:?}"))
            .expect("watcher running");
        assert_eq!(&got, want);
    }
}

/// Skips events until one starting with `prefix`; returns it.
async fn expect_event_starting(
    events: &mut mpsc::UnboundedReceiver<String>,
    prefix: &str,
) -> String {
    loop {
        let got = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no watcher event starting with {prefix:?}"))
            .expect("watcher running");
        if got.starts_with(prefix) {
            return got;
        }
    }
}

fn is_slice_list(request: &str) -> bool {
    request.contains("/endpointslices?") && !request.contains("watch=")
}

/// The slice most tests start from: service `web`, one ready endpoint.
fn seed_web_slice(api: &KubeApi, ports: &[(Option<&str>, u16)]) {
    api.apply_endpoint_slice(
        "default",
        "web-a",
        "web",
        ports,
        &[Endpoint::ready("127.0.10.1")],
    );
}

fn is_slice_watch(request: &str) -> bool {
    request.contains("/endpointslices?") && request.contains("watch=true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_follows_changes_bookmarks_expiry_and_restart() {
    let api = KubeApi::start().await;
    let http = [(Some("http"), 8080)];
    seed_web_slice(&api, &http);
    let listed = api.resource_version();
    let client = kube_client(&api).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let config = watcher::Config::default().labels(WEB).timeout(30);
    let (mut events, task) = spawn_watcher(slices, config);

    expect_events(&mut events, &["init", "init-apply web-a", "init-done"]).await;
    api.wait_for_watchers(1, WAIT).await;
    let requests = api.requests();
    let list = requests.iter().find(|r| is_slice_list(r)).expect("listed");
    let watch = requests
        .iter()
        .find(|r| is_slice_watch(r))
        .expect("watched");
    eprintln!("kube-runtime list: {list}\nkube-runtime watch: {watch}");
    assert!(
        list.contains("labelSelector=kubernetes.io%2Fservice-name%3Dweb")
            && list.contains("limit=500")
    );
    for part in [
        "allowWatchBookmarks=true".to_owned(),
        "timeoutSeconds=30".to_owned(),
        format!("resourceVersion={listed}"),
    ] {
        assert!(watch.contains(&part), "{part} in {watch}");
    }

    api.apply_endpoint_slice(
        "default",
        "web-b",
        "web",
        &http,
        &[Endpoint::ready("127.0.10.2")],
    );
    api.apply_endpoint_slice("default", "other-a", "other", &http, &[]);
    api.apply_endpoint_slice(
        "default",
        "web-a",
        "web",
        &http,
        &[Endpoint::not_ready("127.0.10.1")],
    );
    api.delete_endpoint_slice("default", "web-b");
    expect_events(&mut events, &["apply web-b", "apply web-a", "delete web-b"]).await;

    // A bookmark moves the watcher's version forward without an event; a cleanly closed
    // stream is resumed from it, without a new list.
    api.apply_service(
        "default",
        "web",
        &[(Some("http"), 80, TargetPort::Name("http"))],
    );
    let bookmark = api.resource_version();
    api.send_bookmarks();
    let mark = api.requests().len();
    api.close_watches();
    let rewatch = api.wait_for_request(mark, WAIT, is_slice_watch).await;
    assert!(
        rewatch.contains(&format!("resourceVersion={bookmark}")),
        "{rewatch}"
    );
    assert!(!api.requests()[mark..].iter().any(|r| is_slice_list(r)));

    // An expired version: the in-stream 410 makes the watcher list afresh.
    api.wait_for_watchers(1, WAIT).await;
    let mark = api.requests().len();
    api.expire_history();
    expect_events(
        &mut events,
        &["error 410", "init", "init-apply web-a", "init-done"],
    )
    .await;
    let relist = api
        .wait_for_request(mark, WAIT, |r| r.contains("/endpointslices?"))
        .await;
    assert!(
        is_slice_list(&relist),
        "the first request after the 410 is a list: {relist}"
    );

    // The API server goes away and comes back on the same port: the watcher resumes
    // from its version and gets what changed meanwhile, again without a list.
    api.wait_for_watchers(1, WAIT).await;
    let mark = api.requests().len();
    api.stop().await;
    api.apply_endpoint_slice(
        "default",
        "web-c",
        "web",
        &http,
        &[Endpoint::ready("127.0.10.3")],
    );
    expect_event_starting(&mut events, "error").await;
    api.restart().await;
    let resumed = expect_event_starting(&mut events, "apply").await;
    assert_eq!(resumed, "apply web-c");
    assert!(
        !api.requests()[mark..].iter().any(|r| is_slice_list(r)),
        "resumed, not relisted: {:#?}",
        &api.requests()[mark..]
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_streaming_list_and_legacy_endpoints() {
    let api = KubeApi::start().await;
    let http = [(Some("http"), 8080)];
    seed_web_slice(&api, &http);
    let subset = |ip: &str| EndpointSubset {
        addresses: vec![ip.to_owned()],
        not_ready_addresses: Vec::new(),
        ports: vec![(Some("http".into()), 8080)],
    };
    api.apply_endpoints("default", "web", &[subset("127.0.10.1")]);
    let client = kube_client(&api).await;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let (mut slice_events, slice_task) = spawn_watcher(
        slices,
        watcher::Config::default().labels(WEB).streaming_lists(),
    );
    expect_events(
        &mut slice_events,
        &["init", "init-apply web-a", "init-done"],
    )
    .await;

    let endpoints: Api<Endpoints> = Api::namespaced(client, "default");
    let (mut endpoint_events, endpoint_task) = spawn_watcher(
        endpoints,
        watcher::Config::default().fields("metadata.name=web"),
    );
    expect_events(
        &mut endpoint_events,
        &["init", "init-apply web", "init-done"],
    )
    .await;

    api.wait_for_watchers(2, WAIT).await;
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| is_slice_watch(r) && r.contains("sendInitialEvents=true")),
        "streaming list: {requests:#?}"
    );
    assert!(
        !requests.iter().any(|r| is_slice_list(r)),
        "no list for a streaming list"
    );
    assert!(requests
        .iter()
        .any(|r| r.contains("/endpoints?") && r.contains("fieldSelector=metadata.name%3Dweb")));

    api.apply_endpoints("default", "other", &[subset("127.0.10.9")]);
    api.apply_endpoints("default", "web", &[subset("127.0.10.2")]);
    api.apply_endpoint_slice("default", "web-b", "web", &http, &[]);
    expect_events(&mut endpoint_events, &["apply web"]).await;
    expect_events(&mut slice_events, &["apply web-b"]).await;
    // Dropping the watchers closes their streams, and the double notices.
    slice_task.abort();
    endpoint_task.abort();
    api.wait_for_watchers_at_most(0, WAIT).await;
}
