//! The documentation and packaging that name metrics, held against the registry the
//! binary exports (`Metrics::describe`), so none of them can drift from the code:
//! - the README's metric table lists every metric with its labels, and nothing else;
//! - the Grafana dashboard parses and queries only metrics that exist;
//! - the Prometheus alert rules use only metrics that exist.

use std::collections::BTreeSet;

use edgegate::telemetry::metrics::{MetricDescription, Metrics};

const BEGIN: &str = "<!-- metrics-table:begin (checked by tests/metric_names.rs) -->";
const END: &str = "<!-- metrics-table:end -->";

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The table as it should read, from the registry.
fn table(metrics: &[MetricDescription]) -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n");
    for m in metrics {
        let mut labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
        if labels.is_empty() {
            labels.push("none".to_string());
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            m.kind,
            labels.join(", "),
            m.help
        ));
    }
    out
}

#[test]
fn readme_metric_table_matches_the_registry() {
    let readme = read("README.md");
    let start = readme
        .find(BEGIN)
        .expect("README has the metrics table markers")
        + BEGIN.len();
    let end = readme[start..].find(END).expect("end marker") + start;
    let documented = readme[start..end].trim();
    let expected = table(&Metrics::new().describe());
    assert_eq!(
        documented,
        expected.trim(),
        "README metric table differs from the registry; the table should read:\n{expected}"
    );
}

/// Every `edgegate_*` name in `text`, a histogram's series names mapped to the family.
fn names_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("edgegate_") {
        let start = i + found;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

fn unknown_names(text: &str) -> Vec<String> {
    let known: Vec<MetricDescription> = Metrics::new().describe();
    names_in(text)
        .into_iter()
        .filter(|name| {
            !known.iter().any(|m| {
                *name == m.name
                    || (m.kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| *name == format!("{}{suffix}", m.name)))
            })
        })
        .collect()
}

#[test]
fn the_dashboard_parses_and_queries_only_exported_metrics() {
    let text = read("packaging/grafana/edgegate.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            queried.extend(names_in(expr));
        }
    }
    assert_eq!(
        unknown_names(&text),
        Vec::<String>::new(),
        "not exported by the binary"
    );
    // What the issue asks the dashboard to show.
    for needed in [
        "edgegate_requests_total",
        "edgegate_request_duration_seconds_bucket",
        "edgegate_upstream_endpoints",
        "edgegate_upstream_ejections_total",
        "edgegate_config_reloads_total",
        "edgegate_tls_certificate_expiry_timestamp_seconds",
        "edgegate_discovery_last_sync_timestamp_seconds",
    ] {
        assert!(
            queried.contains(needed),
            "dashboard does not query {needed}"
        );
    }
}

#[test]
fn the_alert_rules_use_only_exported_metrics() {
    let text = read("packaging/prometheus/alerts.yaml");
    assert_eq!(
        unknown_names(&text),
        Vec::<String>::new(),
        "not exported by the binary"
    );
    for alert in [
        "EdgegateConfigReloadFailing",
        "EdgegateCertificateExpiringSoon",
        "EdgegateUpstreamNoHealthyEndpoint",
        "EdgegateDiscoveryStale",
        "EdgegateHigh5xxRatio",
    ] {
        assert!(text.contains(&format!("alert: {alert}\n")), "no {alert}");
    }
    assert!(
        text.contains("< 14 * 86400"),
        "certificate alert at 14 days"
    );
}

#[test]
fn names_are_found_in_expressions() {
    let found = names_in("rate(edgegate_requests_total{x=\"y\"}[5m]) / my_edgegate_other");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec!["edgegate_requests_total"]
    );
    assert_eq!(
        unknown_names("edgegate_nonexistent_total"),
        vec!["edgegate_nonexistent_total"]
    );
    assert!(unknown_names("edgegate_upstream_duration_seconds_bucket").is_empty());
}
