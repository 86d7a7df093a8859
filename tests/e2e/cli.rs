//! `check`, `route`, `--version`, and the embedded default config.

use std::process::Command;

use crate::support::gateway::BIN;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "F");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgegate.toml"),
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 3 listeners, 4 routes, 1 upstreams\n"
    );
}

#[test]
fn check_reads_the_hardening_keys() {
    let (code, out) = check(
        "[[listeners]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\nheader_timeout = \"5s\"\n\
         idle_timeout = \"30s\"\nmax_connections = 100\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         [[routes]]\nname = \"r\"\nupstream = \"u\"\nmax_body_size = \"10MiB\"\n\
         [upstreams.u]\nendpoints = [\"127.0.0.1:2\"]\nbalance = \"hash\"\n\
         hash_on = { header = \"x-user\" }\nretry_budget = \"10%\"\n\
         [upstreams.u.passive_health]\nconsecutive_failures = 3\nejection_time = \"10s\"\nmax_ejected = \"50%\"\n",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "ok: 1 listeners, 1 routes, 1 upstreams\n")
    );
    let (code, out) = check(
        "[[listeners]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n\
         [[routes]]\nname = \"r\"\nrespond = { status = 200 }\nmax_body_size = \"ten\"\n",
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("error: F:4:34: invalid trusted_proxies entry \"nope\""),
        "{out}"
    );
    assert!(
        lines[1].starts_with("error: F:8:17: invalid max_body_size \"ten\""),
        "{out}"
    );
}

#[test]
fn check_reports_an_unknown_key_with_its_location() {
    let (code, out) = check("[gateway]\nthreads = 2\ngrace = \"5s\"\n");
    assert_eq!(code, 1);
    assert!(
        out.starts_with("error: F:3:1: unknown field `grace`"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn check_reports_a_missing_upstream_at_the_reference() {
    let (code, out) = check("[[routes]]\nname = \"r\"\nupstream = \"nope\"\n");
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "error: F:3:12: route \"r\" names unknown upstream \"nope\"\n"
    );
}

#[test]
fn check_reports_a_duplicate_name_at_the_later_definition() {
    let (code, out) = check(
        "[[routes]]\nname = \"dup\"\nrespond = { status = 200 }\n\n[[routes]]\nname = \"dup\"\nrespond = { status = 204 }\n",
    );
    assert_eq!(code, 1);
    assert_eq!(out, "error: F:6:8: duplicate route name \"dup\"\n");
}

#[test]
fn check_reports_a_bad_duration() {
    let (code, out) = check("[gateway]\ngrace_period = \"ten seconds\"\n");
    assert_eq!(code, 1);
    assert!(
        out.starts_with("error: F:2:16: invalid duration \"ten seconds\""),
        "{out}"
    );
}

#[test]
fn check_reports_endpoints_and_kubernetes_both_set() {
    let (code, out) = check(
        "[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.u.kubernetes]\nservice = \"web\"\nport = \"http\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.starts_with("error: F:3:1: upstream \"u\" has both `endpoints` and `kubernetes`"),
        "{out}"
    );
}

#[test]
fn check_collects_every_problem() {
    let (code, out) = check(
        "[[listeners]]\nname = \"a\"\naddress = \"nowhere\"\n\n[[routes]]\nname = \"r\"\nlisteners = [\"b\"]\nupstream = \"u\"\ntimeout = \"x\"\n",
    );
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().all(|l| l.starts_with("error: F:")), "{out}");
}

#[test]
fn check_warns_about_a_shadowed_route_without_failing() {
    let (code, out) = check(
        "[[routes]]\nname = \"first\"\npath_prefix = \"/a\"\nrespond = { status = 200 }\n\n[[routes]]\nname = \"second\"\npath_prefix = \"/a/\"\nrespond = { status = 201 }\n",
    );
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    let warning = lines.next().expect("warning");
    assert!(
        warning.starts_with("warning: F:7:8: route \"second\" can never match"),
        "{warning}"
    );
    assert_eq!(lines.next(), Some("ok: 0 listeners, 2 routes, 0 upstreams"));
}

fn route(config: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(BIN)
        .arg("route")
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .expect("run route");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const ROUTE_CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1:8080"

[[routes]]
name = "catch-all"
respond = { status = 200, body = "x" }

[[routes]]
name = "api"
hosts = ["api.example.com"]
path_prefix = "/api"
rewrite_prefix = "/v2"
upstream = "api"

[[routes]]
name = "old"
path = "/old"
redirect = { scheme = "https", status = 301 }

[upstreams.api]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9002"]
"#;

#[test]
fn route_explains_the_winner() {
    let (code, out) = route(
        ROUTE_CONFIG,
        &["GET", "http://api.example.com/api/users?x=1"],
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "route: api");
    assert_eq!(lines[1], "upstream: api 127.0.0.1:9001 127.0.0.1:9002");
    assert!(lines.contains(&"path: /v2/users?x=1"), "{out}");
    let reason = lines
        .iter()
        .find(|l| l.starts_with("reason: "))
        .expect("reason");
    assert!(
        reason.contains("host") && reason.contains("catch-all"),
        "{reason}"
    );
}

#[test]
fn route_shows_redirects_respond_and_headers() {
    let (code, out) = route(ROUTE_CONFIG, &["GET", "/old", "-H", "Host: example.com"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("route: old\nredirect: https://example.com/old"),
        "{out}"
    );
    let (_, out) = route(ROUTE_CONFIG, &["GET", "/else"]);
    assert!(
        out.starts_with("route: catch-all\nrespond: 200\npath: /else\n"),
        "{out}"
    );
}

#[test]
fn route_without_a_match_exits_1() {
    let (code, out) = route(
        "[[listeners]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\n[[routes]]\nname = \"a\"\npath = \"/a\"\nrespond = { status = 200 }\n",
        &["GET", "/b"],
    );
    assert_eq!(code, 1);
    assert_eq!(out, "no route\n");
}

#[test]
fn route_explains_the_normalised_path() {
    let config = "[[listeners]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\n\
        [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nrespond = { status = 403 }\n\
        [[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nrespond = { status = 200 }\n";
    for (url, path) in [
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin?x=1", "/admin?x=1"),
        ("/./admin", "/admin"),
        ("//admin///users", "/admin/users"),
    ] {
        let (code, out) = route(config, &["GET", url]);
        assert_eq!(code, 0, "{url}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "route: admin", "{url}: {out}");
        assert!(
            lines.contains(&format!("path: {path}").as_str()),
            "{url}: {out}"
        );
    }
    let (code, out) = route(config, &["GET", "/public/x"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("route: public\nrespond: 200\npath: /public/x\n"),
        "{out}"
    );
    assert!(!out.contains("raw-path"), "{out}");
    for above_root in ["/../admin", "/%2e%2e/admin", "/public/../../admin"] {
        let (code, out) = route(config, &["GET", above_root]);
        assert_eq!(code, 1, "{above_root}: {out}");
        assert!(out.contains("above the root"), "{above_root}: {out}");
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("edgegate "));
    let out = Command::new(BIN).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check", "route"] {
        assert!(help.contains(word), "{help}");
    }
}

/// The embedded default binds fixed ports (8080-8082, 9901), so this is the one test
/// that does; it runs with no config file and no $EDGEGATE_CONFIG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_shows_round_robin() {
    use crate::support::client;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .arg("run")
        .env_remove("EDGEGATE_CONFIG")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let first = lines.next().expect("a first log line").expect("line");
    assert!(first.contains("default"), "{first}");
    for line in lines.by_ref() {
        if line.expect("line").contains("edgegate ready") {
            break;
        }
    }
    let c = client();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        bodies.push(
            c.get("http://127.0.0.1:8080/")
                .send()
                .await
                .expect("request")
                .text()
                .await
                .expect("body"),
        );
    }
    bodies.sort();
    assert_eq!(
        bodies,
        vec!["hello from backend 1\n", "hello from backend 2\n"]
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn edgegate_config_names_the_default_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("from-env.toml");
    std::fs::write(
        &path,
        "[[routes]]\nname = \"only\"\nrespond = { status = 204 }\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("check")
        .env("EDGEGATE_CONFIG", &path)
        .output()
        .expect("run check");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 0 listeners, 1 routes, 0 upstreams\n"
    );
    // --config wins over the environment.
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgegate.toml"),
        ])
        .env("EDGEGATE_CONFIG", &path)
        .output()
        .expect("run check");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 3 listeners, 4 routes, 1 upstreams\n"
    );
}

#[test]
fn run_refuses_an_invalid_config_with_its_location_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nport = 1\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:4:1: unknown field `port`"),
        "{stderr}"
    );
}

#[test]
fn log_format_json_in_the_config_gives_json_lines() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[gateway]\nlog_format = \"json\"\n[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let first = std::io::BufReader::new(stderr)
        .lines()
        .next()
        .expect("a line")
        .expect("line");
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&first).expect("JSON log line");
    assert_eq!(v["message"], "loaded config");
}

/// Workers share a port with SO_REUSEPORT; a second process must still be refused the
/// address, not quietly given half of its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_take_a_listening_address() {
    let first = crate::support::Gateway::start(&crate::config(&["web"], ""));
    let taken = first.addr("web");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("second.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nthreads = 2\n[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\naddress = \"{taken}\"\n"
        ),
    )
    .expect("write");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::process::Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .output(),
    )
    .await
    .expect("the second process gave up in time")
    .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot bind"), "{stderr}");
}

const EDGE_HEAD: &str =
    "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"a\"\nupstream = \"api\"\n";

/// Issue 10, fault 8: each config edge as a golden `check` output.
#[test]
fn check_golden_config_edges() {
    let cases: &[(&str, &str)] = &[
        // A misspelt key in an endpoint table was read as weight 1.
        (
            "[upstreams.api]\nendpoints = [{ address = \"127.0.0.1:1\", wieght = 3 }]\n",
            "error: F:8:14: unknown key \"wieght\" in endpoint: expected `address` and optionally `weight`\n",
        ),
        // An inline upstream table's problems were reported at 1:1.
        (
            "[upstreams]\napi = { retries = 1 }\n",
            "error: F:6:12: route \"a\" names unknown upstream \"api\"\n\
             error: F:8:1: upstream \"api\" needs `endpoints` or a `kubernetes` block\n",
        ),
        // So were a dotted one's.
        (
            "[upstreams]\napi.retries = 1\n",
            "error: F:6:12: route \"a\" names unknown upstream \"api\"\n\
             error: F:8:1: upstream \"api\" needs `endpoints` or a `kubernetes` block\n",
        ),
        // An empty list was only reported when nothing else was wrong.
        (
            "[upstreams.api]\nendpoints = []\nretries = 99\n",
            "error: F:8:13: endpoints must list at least one address\n\
             error: F:9:11: retries must be between 0 and 10\n",
        ),
        // A zero route timeout made every request a 504.
        (
            "timeout = \"0s\"\n[upstreams.api]\nendpoints = [\"127.0.0.1:1\"]\nconnect_timeout = \"0ms\"\n",
            "error: F:7:11: timeout must be greater than zero\n\
             error: F:10:19: connect_timeout must be greater than zero\n",
        ),
        // A dotted sub-table where an upstream's value belongs (toml 0.8 said "expected
        // a borrowed string", at no place): what was expected, at the key.
        (
            "[upstreams.api]\nendpoints = [\"127.0.0.1:1\"]\nhealth_check.path.x = \"/\"\n",
            "error: F:9:14: invalid type: map, expected a string\n",
        ),
        (
            "[upstreams.api]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.api.tls.ca]\nfile = \"x\"\n",
            "error: F:9:1: invalid type: map, expected a string\n",
        ),
    ];
    for (rest, expected) in cases {
        let (code, out) = check(&format!("{EDGE_HEAD}{rest}"));
        assert_eq!(code, 1, "{rest}");
        assert_eq!(out, *expected, "{rest}");
    }
}

#[test]
fn route_shows_the_policy_a_request_meets() {
    let config = r#"
[[listeners]]
name = "web"
address = "127.0.0.1:8080"

[[routes]]
name = "guarded"
allow = ["10.0.0.0/8"]
deny = ["10.9.0.0/16"]
rate_limit = { requests = 5, per = "1m", key = { header = "x-user" } }
cors = { allow_origins = ["https://app.example.com"] }
respond = { status = 200, body = "x" }
"#;
    let (code, out) = route(config, &["GET", "/"]);
    assert_eq!(code, 0, "{out}");
    let policy: Vec<&str> = out.lines().filter(|l| l.starts_with("policy: ")).collect();
    assert_eq!(
        policy,
        [
            "policy: deny 10.9.0.0/16 (403)",
            "policy: allow only 10.0.0.0/8 (else 403)",
            "policy: cors for 1 origin(s); preflights answered 204",
            "policy: rate_limit 5 per 1m burst 5 by header x-user, local (429)",
        ],
        "{out}"
    );
}

#[test]
fn route_shows_the_mirror_and_check_refuses_mirrors_it_cannot_send() {
    let upstreams = "[upstreams.api]\nendpoints = [\"127.0.0.1:1\"]\n\
                     [upstreams.shadow]\nendpoints = [\"127.0.0.1:2\"]\n\
                     [upstreams.secure]\nendpoints = [\"127.0.0.1:3\"]\ntls = {}\n";
    let config = format!(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:8080\"\n\
         [[routes]]\nname = \"a\"\nupstream = \"api\"\nmirror = {{ upstream = \"shadow\", percent = 12.5 }}\n{upstreams}"
    );
    let (code, out) = route(&config, &["GET", "/"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l == "mirror: 12.5% of requests copied to shadow (answers discarded)"),
        "{out}"
    );
    let cases = [
        (
            "{ upstream = \"nope\" }",
            "mirrors to unknown upstream \"nope\"",
        ),
        ("{ upstream = \"secure\" }", "which uses tls"),
        (
            "{ upstream = \"shadow\", percent = 101 }",
            "mirror percent must be a number from 0 to 100",
        ),
        (
            "{ upstream = \"shadow\", share = 1 }",
            "unknown field `share`",
        ),
    ];
    for (mirror, expected) in cases {
        let (code, out) = check(&format!("{EDGE_HEAD}mirror = {mirror}\n{upstreams}"));
        assert_eq!(code, 1, "{mirror}: {out}");
        assert!(out.contains(expected), "{mirror}: {out}");
    }
}
