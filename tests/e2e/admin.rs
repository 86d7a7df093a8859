//! The admin listener and the metrics contract, spec section 7 and 7a.

use std::time::Duration;

use crate::config;
use crate::support::{client, gateway::metric_value, request_id, Gateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_config() {
    let gw = Gateway::start(&config(&["web"], ""));
    assert_eq!(gw.admin_status("/healthz").await, 200);
    assert_eq!(gw.admin_status("/readyz").await, 200);
    let body = gw.config_json().await;
    assert_eq!(body["generation"], 1);
    assert_eq!(body["source"], gw.config_path.display().to_string());
    assert!(body["hash"].as_str().expect("hash").len() > 32);
    assert!(body["loaded_at"].as_str().expect("time").contains('T'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_have_every_label() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"main\"\npath_prefix = \"/app\"\nupstream = \"pool\"\n\n\
             [[routes]]\nname = \"ping\"\npath = \"/ping\"\nrespond = {{ status = 200 }}\n\n\
             [upstreams.pool]\nendpoints = [\"{}\"]\n",
            a.addr
        ),
    ));
    let c = client();
    for path in ["/app/x", "/app/y", "/ping", "/missing"] {
        c.get(gw.url("web", path)).send().await.expect("request");
    }
    // Requests are counted when their exchange is logged, just after the response is
    // sent, so wait until all four are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = gw.metrics_text().await;
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("edgegate_requests_total{") && l.contains("listener=\"web\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if counted >= 4.0 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let value = |s: &str| metric_value(&text, s);
    assert_eq!(value("edgegate_requests_total{code=\"200\",listener=\"web\",route=\"main\",upstream=\"pool\"}"), Some(2.0), "{text}");
    assert_eq!(
        value(
            "edgegate_requests_total{code=\"200\",listener=\"web\",route=\"ping\",upstream=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value("edgegate_requests_total{code=\"404\",listener=\"web\",route=\"\",upstream=\"\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("edgegate_request_duration_seconds_count{route=\"main\"}"),
        Some(2.0)
    );
    assert_eq!(
        value("edgegate_request_duration_seconds_count{route=\"\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("edgegate_upstream_endpoints{state=\"healthy\",upstream=\"pool\"}"),
        Some(1.0)
    );
    assert_eq!(value("edgegate_config_generation"), Some(1.0));
    assert_eq!(
        value("edgegate_config_reloads_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert!(!text.contains("/app/x"), "paths must never become labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_have_the_contract_fields() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start_with(
        &format!(
            "[gateway]\naccess_log = \"access.log\"\n\n{}",
            config(
                &["web"],
                &format!(
                    "[[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{}\"]\n",
                    a.addr
                )
            )
        ),
        |_| {},
    );
    let resp = client()
        .get(gw.url("web", "/logged?secret=1"))
        .header("host", "shop.example")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body("abc")
        .send()
        .await
        .expect("request");
    let id = request_id(&resp);
    let body_len = resp.bytes().await.expect("body").len();
    let path = gw.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line within 2s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(v["listener"], "web");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "shop.example");
    assert_eq!(v["path"], "/logged");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "main");
    assert_eq!(v["upstream"], "pool");
    assert_eq!(v["endpoint"], a.addr.to_string());
    assert_eq!(v["bytes_sent"], body_len as u64);
    assert!(v["duration_ms"].as_f64().expect("duration") >= 0.0);
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(v["client"]
        .as_str()
        .expect("client")
        .starts_with("127.0.0.1:"));
    assert!(v["time"].as_str().expect("time").contains('T'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_can_go_to_stderr() {
    let gw = Gateway::start(&format!(
        "[gateway]\naccess_log = \"stderr\"\n\n{}",
        config(&["web"], "[[routes]]\nname = \"ping\"\npath = \"/ping\"\nrespond = { status = 200, body = \"pong\" }\n")
    ));
    let resp = client()
        .get(gw.url("web", "/ping?x=1"))
        .send()
        .await
        .expect("request");
    let id = request_id(&resp);
    let line = gw.wait_for_log(&format!("\"request_id\":\"{id}\""), Duration::from_secs(2));
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["path"], "/ping");
    assert_eq!(v["route"], "ping");
    assert_eq!(v["upstream"], "");
    assert_eq!(v["endpoint"], "");
    assert_eq!(v["bytes_sent"], 4);
    assert_eq!(v["status"], 200);
}
