//! systemd `Type=notify`: the messages a real NOTIFY_SOCKET receives, in order.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::config;
use crate::support::Gateway;

/// The service manager's end: a datagram socket the gateway finds in NOTIFY_SOCKET.
pub struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    pub path: String,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        NotifySocket {
            socket,
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// The next datagram, as its `KEY=VALUE` lines; panics after 10 s without one.
    pub fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn nothing_within(&self, wait: Duration) -> Option<Vec<String>> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 4096];
        let got = self.socket.recv(&mut buf).ok().map(|n| {
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect()
        });
        self.socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        got
    }
}

fn has(message: &[String], line: &str) -> bool {
    message.iter().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_ready_on_sighup_even_when_refused_and_stopping_on_sigterm() {
    let notify = NotifySocket::bind();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgegate.toml");
    let text = config(
        &["web"],
        "[[routes]]\nname = \"ping\"\nrespond = { status = 200, body = \"pong\\n\" }\n",
    );
    std::fs::write(&path, &text).expect("write config");
    let mut gw = Gateway::spawn(dir, path, &[("NOTIFY_SOCKET", &notify.path)]);

    let ready = notify.next();
    assert!(has(&ready, "READY=1"), "first message: {ready:?}");
    // Listeners accept by the time READY=1 is sent.
    let answer = crate::support::client()
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("request after READY=1");
    assert_eq!(answer.status(), 200);

    // A reload that is applied.
    gw.signal("HUP");
    let reloading = notify.next();
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    let usec: u64 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0);
    let reloaded = notify.next();
    assert!(has(&reloaded, "READY=1"), "{reloaded:?}");
    assert_eq!(
        gw.metric("edgegate_config_reloads_total{result=\"success\"}")
            .await,
        Some(1.0),
        "READY=1 came before the reload was applied"
    );

    // A reload that is refused: systemd still hears READY=1 (the old config serves).
    // The file watcher sees the edit too; wait for its refusal before SIGHUP so the
    // pair of messages belongs to the signal.
    gw.write_config("[[listeners]]\nname = 1\n");
    let before = gw.log_len();
    gw.wait_for_log_after("config reload refused", before, Duration::from_secs(10));
    assert_eq!(notify.nothing_within(Duration::from_millis(300)), None);
    gw.signal("HUP");
    let reloading = notify.next();
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    let reloaded = notify.next();
    assert!(has(&reloaded, "READY=1"), "{reloaded:?}");
    assert_eq!(
        gw.metric("edgegate_config_reloads_total{result=\"failure\"}")
            .await,
        Some(2.0)
    );

    gw.signal("TERM");
    let stopping = notify.next();
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}
