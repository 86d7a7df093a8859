//! Zero-downtime binary upgrade: the old process hands its listening sockets to a new one
//! under continuous keep-alive load, not one request fails, and the old process exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config;
use crate::support::gateway::BIN;
use crate::support::http1::RawClient;
use crate::support::Gateway;
use crate::systemd::NotifySocket;

/// Kills the new process (not a child of the test) however the test ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Load {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().expect("lock").get_or_insert(why);
    }
}

/// One keep-alive client: requests back to back, a new connection only when the gateway
/// says `connection: close`. Anything else (a reset, a close without that header, an
/// error status) is a failed request.
async fn client_loop(addr: SocketAddr, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let mut client: Option<RawClient> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match &mut client {
            Some(c) => c,
            None => client.insert(RawClient::connect(addr).await),
        };
        if let Err(e) = c
            .try_send(b"GET /ping HTTP/1.1\r\nhost: upgrade.test\r\n\r\n")
            .await
        {
            load.fail(format!("write: {e}"));
            client = None;
            continue;
        }
        match c.try_response(false, Duration::from_secs(5)).await {
            Ok(r) if r.status == 200 && r.body == b"pong\n" => {
                load.ok.fetch_add(1, Ordering::Relaxed);
                if r.head.has_token("connection", "close") {
                    client = None;
                }
            }
            Ok(r) => {
                load.fail(format!("status {} body {:?}", r.status, r.text()));
                client = None;
            }
            Err(e) => {
                load.fail(format!("read: {e}"));
                client = None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_keepalive_load_fails_no_request_and_the_old_process_exits() {
    let notify = NotifySocket::bind();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    // Two workers: each listener has two SO_REUSEPORT sockets, and both must be handed
    // over, or connections queued on the one left behind would be reset.
    let text = format!(
        "[gateway]\nthreads = 2\ngrace_period = \"5s\"\n\n{}",
        config(
            &["web"],
            "[[routes]]\nname = \"ping\"\npath = \"/ping\"\nrespond = { status = 200, body = \"pong\\n\" }\n",
        )
    );
    std::fs::write(&path, &text).expect("write config");
    let mut gw = Gateway::spawn(dir, path, &[("NOTIFY_SOCKET", &notify.path)]);
    let old_pid = gw.child.id();
    assert!(notify.next().iter().any(|l| l == "READY=1"));
    let addr = gw.addr("web");
    let admin = gw.admin;

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client_loop(addr, load.clone(), stop.clone())))
        .collect();
    while load.ok.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let log_before = gw.log_len();
    let upgrade = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["upgrade", "--pid", &old_pid.to_string(), "--timeout", "20s"])
            .output()
            .expect("run edgegate upgrade")
    })
    .await
    .expect("join");
    assert!(
        upgrade.status.success(),
        "edgegate upgrade: {}{}",
        String::from_utf8_lossy(&upgrade.stdout),
        String::from_utf8_lossy(&upgrade.stderr)
    );
    // The old process has exited (and exited cleanly).
    let code = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(5));
        (gw, code)
    })
    .await
    .expect("join");
    let (gw, code) = code;
    assert_eq!(code, Some(0), "the old process did not exit cleanly");

    let line = gw.wait_for_log_after(
        "the previous process drains",
        log_before,
        Duration::from_secs(5),
    );
    let new_pid = serde_json::from_str::<serde_json::Value>(&line).expect("JSON log")["pid"]
        .as_u64()
        .expect("pid") as u32;
    let _new = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    // systemd learns the new main process.
    let took_over = notify.next();
    assert!(
        took_over.contains(&format!("MAINPID={new_pid}"))
            && took_over.iter().any(|l| l == "READY=1"),
        "{took_over:?}"
    );

    // The new process serves the same sockets, data and admin alike.
    let served_after = load.ok.load(Ordering::Relaxed);
    while load.ok.load(Ordering::Relaxed) < served_after + 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client loop");
    }
    assert_eq!(
        load.failed.load(Ordering::Relaxed),
        0,
        "failed requests during the upgrade; first: {:?} ({} ok)",
        load.first_failure.lock().expect("lock"),
        load.ok.load(Ordering::Relaxed)
    );
    let ready = crate::support::client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("admin after the upgrade");
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_fails_leaves_the_old_one_serving() {
    let mut gw = Gateway::start(&config(
        &["web"],
        "[[routes]]\nname = \"ping\"\nrespond = { status = 200, body = \"pong\\n\" }\n",
    ));
    let old_pid = gw.child.id();
    // The new process reads the file afresh and refuses it. (The running gateway
    // refuses the same edit as a reload and keeps its config.)
    let before = gw.log_len();
    gw.write_config("[[listeners]]\nname = 1\n");
    gw.wait_for_log_after("config reload refused", before, Duration::from_secs(10));
    let before = gw.log_len();
    let upgrade = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["upgrade", "--pid", &old_pid.to_string(), "--timeout", "2s"])
            .output()
            .expect("run edgegate upgrade")
    })
    .await
    .expect("join");
    assert_eq!(upgrade.status.code(), Some(1), "edgegate upgrade must fail");
    assert!(
        String::from_utf8_lossy(&upgrade.stderr).contains("still running"),
        "{}",
        String::from_utf8_lossy(&upgrade.stderr)
    );
    gw.wait_for_log_after(
        "binary upgrade failed; still serving",
        before,
        Duration::from_secs(10),
    );
    assert_eq!(gw.wait_exit(Duration::from_millis(100)), None);
    let answer = crate::support::client()
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("the old process still serves");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("body"), "pong\n");
}

/// One client opening a new connection per request (so the new process gets its share
/// as soon as it accepts), cycling through `hosts`; anything but a 200 is a failure.
async fn fresh_connection_loop(
    addr: SocketAddr,
    hosts: &'static [&'static str],
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) {
    for i in 0..100_000usize {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let host = hosts[i % hosts.len()];
        let mut c = RawClient::connect(addr).await;
        let request = format!("GET /x HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        if let Err(e) = c.try_send(request.as_bytes()).await {
            load.fail(format!("{host}: write: {e}"));
            continue;
        }
        match c.try_response(false, Duration::from_secs(5)).await {
            Ok(r) if r.status == 200 => {
                load.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => load.fail(format!("{host}: status {} body {:?}", r.status, r.text())),
            Err(e) => load.fail(format!("{host}: read: {e}")),
        }
    }
}

/// The new process accepts nothing before it is ready as `/readyz` defines it: with the
/// API server answering slowly, its discovery and cluster watches take a while to sync,
/// and a process that accepted meanwhile answered cluster hosts 404 and discovered
/// upstreams 503 (issue 18, fault 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_discovered_and_cluster_routes_answers_no_404_or_503() {
    use crate::cluster_routes::{free_port, gateway_object, http_route};
    use crate::support::kube_api::{Endpoint, KubeApi, TargetPort};
    use crate::support::Upstream;

    let api = KubeApi::start().await;
    let pod = Upstream::start_on("127.0.21.1:0".parse().expect("addr"), "pod-0").await;
    let pod_port = pod.addr.port();
    for service in ["web", "app"] {
        api.apply_service(
            "shop",
            service,
            &[(Some("http"), 80, TargetPort::Number(pod_port))],
        );
        api.apply_endpoint_slice(
            "shop",
            &format!("{service}-a"),
            service,
            &[(Some("http"), pod_port)],
            &[Endpoint::ready("127.0.21.1")],
        );
    }
    let port = free_port();
    gateway_object(&api, "shop", "edge", "edgegate", port);
    http_route(
        &api,
        "shop",
        "storefront",
        serde_json::json!({"parentRefs": [{"name": "edge"}], "hostnames": ["cluster.test"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let text = format!(
        "[gateway]\nthreads = 2\ngrace_period = \"5s\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[routes]]\nname = \"static\"\nhosts = [\"static.test\"]\nrespond = {{ status = 200, body = \"static\" }}\n\n\
         [[routes]]\nname = \"discovered\"\nhosts = [\"discovered.test\"]\nupstream = \"app\"\n\n\
         [upstreams.app.kubernetes]\nnamespace = \"shop\"\nservice = \"app\"\nport = \"http\"\n\n\
         [kubernetes]\ngateway_class = \"edgegate\"\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write config");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let mut gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let old_pid = gw.child.id();
    let addr = gw.addr("web");

    // Every request the new process lists or watches with is answered late.
    api.set_delay(Duration::from_millis(300));
    static HOSTS: &[&str] = &["cluster.test", "discovered.test", "static.test"];
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(fresh_connection_loop(
                addr,
                HOSTS,
                load.clone(),
                stop.clone(),
            ))
        })
        .collect();
    while load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let log_before = gw.log_len();
    let upgrade = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["upgrade", "--pid", &old_pid.to_string(), "--timeout", "30s"])
            .output()
            .expect("run edgegate upgrade")
    })
    .await
    .expect("join");
    assert!(
        upgrade.status.success(),
        "edgegate upgrade: {}{}",
        String::from_utf8_lossy(&upgrade.stdout),
        String::from_utf8_lossy(&upgrade.stderr)
    );
    let (gw, code) = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(5));
        (gw, code)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "the old process did not exit cleanly");
    let line = gw.wait_for_log_after(
        "the previous process drains",
        log_before,
        Duration::from_secs(5),
    );
    let new_pid = serde_json::from_str::<serde_json::Value>(&line).expect("JSON log")["pid"]
        .as_u64()
        .expect("pid") as u32;
    let _new = KillOnDrop(new_pid);

    // The new process serves all three kinds of route.
    let served_after = load.ok.load(Ordering::Relaxed);
    while load.ok.load(Ordering::Relaxed) < served_after + 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client loop");
    }
    assert_eq!(
        load.failed.load(Ordering::Relaxed),
        0,
        "failed requests during the upgrade; first: {:?} ({} ok)",
        load.first_failure.lock().expect("lock"),
        load.ok.load(Ordering::Relaxed)
    );
}

/// A new process that cannot get ready (the API server went away) accepts no
/// connection: the old process serves everything meanwhile, and when the new one dies
/// no connection dies with it (issue 18, fault 1: it accepted at once, answered the
/// discovered upstream 503, and took its accepted connections down with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_never_gets_ready_accepts_nothing_and_drops_nothing() {
    use crate::support::kube_api::{Endpoint, KubeApi, TargetPort};
    use crate::support::Upstream;

    let api = KubeApi::start().await;
    let pod = Upstream::start_on("127.0.22.1:0".parse().expect("addr"), "pod-0").await;
    api.apply_service(
        "shop",
        "app",
        &[(Some("http"), 80, TargetPort::Number(pod.addr.port()))],
    );
    api.apply_endpoint_slice(
        "shop",
        "app-a",
        "app",
        &[(Some("http"), pod.addr.port())],
        &[Endpoint::ready("127.0.22.1")],
    );
    let text = config(
        &["web"],
        "[[routes]]\nname = \"static\"\nhosts = [\"static.test\"]\nrespond = { status = 200, body = \"static\" }\n\n\
         [[routes]]\nname = \"discovered\"\nhosts = [\"discovered.test\"]\nupstream = \"app\"\n\n\
         [upstreams.app.kubernetes]\nnamespace = \"shop\"\nservice = \"app\"\nport = \"http\"\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, format!("[gateway]\nthreads = 2\n\n{text}")).expect("write config");
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let gw = Gateway::spawn(dir, path, &[("KUBECONFIG", &kubeconfig)]);
    gw.wait_ready().await;
    let addr = gw.addr("web");

    static HOSTS: &[&str] = &["discovered.test", "static.test"];
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(fresh_connection_loop(
                addr,
                HOSTS,
                load.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let wait_for = |n: u64| {
        let load = load.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed) < n {
                assert!(std::time::Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(100).await;

    // The new process will never sync.
    api.stop().await;
    let before = gw.log_len();
    gw.signal("USR2");
    let line = gw.wait_for_log_after(
        "inherited the listening sockets",
        before,
        Duration::from_secs(10),
    );
    let child = serde_json::from_str::<serde_json::Value>(&line).expect("JSON log")["pid"]
        .as_u64()
        .expect("pid") as u32;
    let _child = KillOnDrop(child);
    // It has bound nothing of its own and listens on the shared sockets, not ready.
    gw.wait_for_log_after("edgegate ready", before, Duration::from_secs(10));
    let done = load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed);
    wait_for(done + 300).await;
    // The new process fails (as when the old one gives up on it): nothing is lost.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &child.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    gw.wait_for_log_after(
        "binary upgrade failed; still serving",
        before,
        Duration::from_secs(10),
    );
    let done = load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed);
    wait_for(done + 100).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client loop");
    }
    assert_eq!(
        load.failed.load(Ordering::Relaxed),
        0,
        "failed requests around the failed upgrade; first: {:?} ({} ok)",
        load.first_failure.lock().expect("lock"),
        load.ok.load(Ordering::Relaxed)
    );
}
