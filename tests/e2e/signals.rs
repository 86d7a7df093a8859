//! SIGTERM drains (spec section 8).

use std::time::Duration;

use crate::config;
use crate::support::{client, Gateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_first_finishes_in_flight_requests_and_exits_0() {
    let a = Upstream::start("a").await;
    let mut gw = Gateway::start(&format!(
        "[gateway]\nshutdown_delay = \"600ms\"\ngrace_period = \"5s\"\n\n{}",
        config(
            &["web"],
            &format!(
                "[[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{}\"]\n",
                a.addr
            )
        )
    ));
    let c = client();
    // A connection made before the signal, with a request that outlives the delay.
    let in_flight = tokio::spawn({
        let c = c.clone();
        let url = gw.url("web", "/slow/1200");
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    while a.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.signal("TERM");
    gw.wait_for_log("/readyz now 503", Duration::from_secs(5));
    let ready = c.get(gw.admin_url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    // Still accepting during the delay, so load balancers have time to notice.
    let during = c
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("request during delay");
    assert_eq!(during.status(), 200);
    assert_eq!(
        in_flight.await.expect("join").expect("in-flight request"),
        200
    );
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

/// A config change that arrives after the listeners closed for a drain is not applied:
/// no listener is bound again, so no port reopens after the load balancer was told the
/// instance is going away (issue 18, fault 5: the reload found no running listener and
/// bound every one afresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_while_draining_reopens_no_port() {
    let a = Upstream::start("a").await;
    let port = crate::cluster_routes::free_port();
    let text = |body: &str| {
        format!(
            "[gateway]\nshutdown_delay = \"0s\"\ngrace_period = \"10s\"\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\n\
             [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n\
             [[routes]]\nname = \"hello\"\npath = \"/hello\"\nrespond = {{ status = 200, body = \"{body}\" }}\n\n\
             [upstreams.pool]\nendpoints = [\"{}\"]\n",
            a.addr
        )
    };
    let mut gw = Gateway::start(&text("one"));
    let web = gw.addr("web");
    let c = client();
    // A request that keeps the process draining for a while.
    let in_flight = tokio::spawn({
        let c = c.clone();
        let url = gw.url("web", "/slow/2500");
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    while a.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.signal("TERM");
    gw.wait_for_log(
        "listeners closed; draining connections",
        Duration::from_secs(5),
    );
    assert!(
        tokio::net::TcpStream::connect(web).await.is_err(),
        "the listener is closed once draining"
    );

    let before = gw.log_len();
    gw.write_config(&text("two"));
    // Either outcome is logged: applied (the fault) or not applied.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        let lines = gw.lines();
        if let Some(line) = lines.iter().skip(before).find(|l| {
            l.contains("config reloaded") || l.contains("not applied: the process is draining")
        }) {
            break line.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change was never considered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        tokio::net::TcpStream::connect(web).await.is_err(),
        "the port reopened while draining: {outcome}"
    );
    assert!(outcome.contains("not applied"), "{outcome}");
    assert_eq!(
        in_flight.await.expect("join").expect("in-flight request"),
        200
    );
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}
