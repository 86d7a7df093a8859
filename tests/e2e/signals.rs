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
