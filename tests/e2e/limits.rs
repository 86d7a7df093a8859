//! Limits for clients on the public internet (issue 9, spec section 4a).

/// Slow and idle clients: per-listener `header_timeout` and `idle_timeout`. These keys
/// do not exist before issue 9 is built, so until then every test here fails at start
/// (the config is refused as having unknown keys).
mod slow_clients {
    use std::time::{Duration, Instant};

    use crate::support::http1::{self, Parse};
    use crate::support::{Gateway, RawClient, Upstream};
    use crate::{listener_keys, proxy_config};

    const WAIT: Duration = Duration::from_secs(5);

    fn gateway(upstream: &Upstream, keys: &str) -> Gateway {
        Gateway::start(&listener_keys(
            &proxy_config(&[upstream.addr], "", ""),
            "web",
            keys,
        ))
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
    }

    /// Waits for the gateway to end the connection and checks when: not before `min`
    /// after `since`, and by `max`. Before closing it may answer 408 and nothing else.
    async fn cut_between(
        client: &mut RawClient,
        since: Instant,
        min: Duration,
        max: Duration,
        what: &str,
    ) {
        let left = max.saturating_sub(since.elapsed());
        let outcome = client.closed_within(left).await;
        let elapsed = since.elapsed();
        let bytes = match outcome {
            Ok(bytes) => bytes,
            Err(bytes) => panic!(
                "{what}: still open after {elapsed:?} (got {:?})",
                String::from_utf8_lossy(&bytes)
            ),
        };
        assert!(elapsed >= min, "{what}: closed after only {elapsed:?}");
        if !bytes.is_empty() {
            match http1::parse_response(&bytes, false, true) {
                Parse::Complete(r, _) if r.status == 408 => {}
                _ => panic!(
                    "{what}: only a 408 may come before the close, got {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_half_head_on_a_keepalive_connection_is_cut_while_others_are_served() {
        let upstream = Upstream::start("a").await;
        let gw = gateway(&upstream, "header_timeout = \"1s\"\nidle_timeout = \"30s\"");
        let mut slow = RawClient::connect(gw.addr("web")).await;
        slow.send(&get("/first")).await;
        assert_eq!(slow.response(false, WAIT).await.status, 200);
        slow.send(b"GET /second HTTP/1.1\r\nHost: app.test\r\n")
            .await;
        let since = Instant::now();

        // Meanwhile another client is served, on one connection, several times.
        let mut other = RawClient::connect(gw.addr("web")).await;
        for i in 0..5 {
            other.send(&get(&format!("/other-{i}"))).await;
            assert_eq!(other.response(false, WAIT).await.status, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cut_between(
            &mut slow,
            since,
            Duration::from_millis(800),
            Duration::from_secs(3),
            "a half head after header_timeout = 1s",
        )
        .await;
        other.send(&get("/other-last")).await;
        assert_eq!(other.response(false, WAIT).await.status, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_head_trickled_one_byte_at_a_time_is_cut_by_the_same_timer() {
        let upstream = Upstream::start("a").await;
        let gw = gateway(&upstream, "header_timeout = \"1s\"\nidle_timeout = \"30s\"");
        let mut client = RawClient::connect(gw.addr("web")).await;
        let head = b"GET /trickle HTTP/1.1\r\nHost: app.test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let since = Instant::now();
        let mut closed = false;
        // One byte every 100 ms would take about 8 s for the whole head.
        for byte in head.iter() {
            if client.try_send(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            if client
                .closed_within(Duration::from_millis(100))
                .await
                .is_ok()
            {
                closed = true;
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(3),
                "a trickled head outlived header_timeout = 1s"
            );
        }
        let elapsed = since.elapsed();
        assert!(closed, "the whole head went through in {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(800),
            "closed after only {elapsed:?}"
        );
        assert_eq!(
            upstream.hits(),
            0,
            "the trickled request reached the upstream"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_closed_at_idle_timeout() {
        let upstream = Upstream::start("a").await;
        let gw = gateway(&upstream, "idle_timeout = \"1s\"\nheader_timeout = \"10s\"");
        // A fresh connection that never sends a byte.
        let mut silent = RawClient::connect(gw.addr("web")).await;
        let since = Instant::now();
        // A connection kept alive after a response.
        let mut kept = RawClient::connect(gw.addr("web")).await;
        kept.send(&get("/once")).await;
        assert_eq!(kept.response(false, WAIT).await.status, 200);
        let kept_since = Instant::now();
        cut_between(
            &mut silent,
            since,
            Duration::from_millis(800),
            Duration::from_secs(3),
            "a silent fresh connection with idle_timeout = 1s",
        )
        .await;
        cut_between(
            &mut kept,
            kept_since,
            Duration::from_millis(800),
            Duration::from_secs(3),
            "an idle kept-alive connection with idle_timeout = 1s",
        )
        .await;
    }

    /// Neither timer runs while a request is being proxied: not while the upstream
    /// takes 3 s to answer, nor while the client sends its body slowly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_upstream_or_a_slow_body_is_not_cut_by_either_timer() {
        let upstream = Upstream::start("a").await;
        let gw = gateway(&upstream, "header_timeout = \"1s\"\nidle_timeout = \"1s\"");
        let mut client = RawClient::connect(gw.addr("web")).await;
        client.send(&get("/slow/3000")).await;
        let response = client.response(false, WAIT).await;
        assert_eq!(response.status, 200, "{response:?}");

        let mut client = RawClient::connect(gw.addr("web")).await;
        client
            .send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 8\r\n\r\n")
            .await;
        for byte in b"01234567" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.send(&[*byte]).await;
        }
        let response = client.response(false, WAIT).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "01234567")
        );
    }
}
