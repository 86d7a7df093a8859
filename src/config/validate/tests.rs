use super::*;

fn errors(text: &str) -> Vec<String> {
    let src = SourceFile::new("t.toml", text);
    match load(&src) {
        Ok(_) => vec![],
        Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
    }
}

fn loaded(text: &str) -> Loaded {
    match load(&SourceFile::new("t.toml", text)) {
        Ok(loaded) => loaded,
        Err(d) => panic!("{d}"),
    }
}

fn warnings(text: &str) -> Vec<String> {
    loaded(text)
        .warnings
        .iter()
        .map(|d| d.to_string())
        .collect()
}

const LISTENER: &str = "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n";

fn listener(extra: &str) -> String {
    format!("{LISTENER}{extra}")
}

fn one_listener(extra: &str) -> Listener {
    loaded(&listener(extra)).config.listeners.remove(0)
}

/// One upstream `u` with the given lines added to its table.
fn upstream_text(extra: &str) -> String {
    format!("[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n{extra}")
}

fn one_upstream(extra: &str) -> Upstream {
    loaded(&upstream_text(extra)).config.upstreams.remove(0)
}

fn route_text(extra: &str) -> String {
    format!("[[routes]]\nname = \"r\"\nrespond = {{ status = 200 }}\n{extra}")
}

#[test]
fn listener_limits_have_safe_defaults() {
    let l = one_listener("");
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.max_connections, 10_000);
    assert!(l.trusted_proxies.is_empty());
    assert!(!l.is_trusted(std::net::IpAddr::from([127, 0, 0, 1])));
}

#[test]
fn listener_limits_are_read() {
    let l = one_listener(
        "header_timeout = \"2s\"\nidle_timeout = \"250ms\"\nmax_connections = 3\n\
         trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\", \"::1\"]\n",
    );
    assert_eq!(l.header_timeout, Duration::from_secs(2));
    assert_eq!(l.idle_timeout, Duration::from_millis(250));
    assert_eq!(l.max_connections, 3);
    let nets: Vec<String> = l.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
    );
    let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
    for (addr, trusted) in [
        ("10.1.2.3", true),
        ("11.0.0.1", false),
        ("192.0.2.7", true),
        ("192.0.2.8", false),
        ("2001:db8::5", true),
        ("::1", true),
        // An IPv4 peer on a dual-stack socket.
        ("::ffff:10.9.9.9", true),
        ("::ffff:11.0.0.1", false),
    ] {
        let Some(addr_ip) = ip(addr) else {
            panic!("bad test address {addr}")
        };
        assert_eq!(l.is_trusted(addr_ip), trusted, "{addr}");
    }
}

#[test]
fn bad_listener_limits_are_reported_at_their_values() {
    let e = errors(&listener(
        "header_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\n\
         trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"proxy.local\"]\n",
    ));
    assert_eq!(
        e,
        [
            "error: t.toml:4:18: header_timeout must be greater than zero",
            "error: t.toml:5:16: invalid duration \"soon\": expected number at 0 (write e.g. \"250ms\", \"5s\", \"1m\")",
            "error: t.toml:6:19: max_connections must be at least 1",
            "error: t.toml:7:34: invalid trusted_proxies entry \"10.0.0.0/33\": expected a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.1\"",
            "error: t.toml:7:49: invalid trusted_proxies entry \"proxy.local\": expected a CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.1\"",
        ],
    );
    // Reported even when the listener's address is bad too.
    let e = errors("[[listeners]]\nname = \"a\"\naddress = \"nowhere\"\nmax_connections = -1\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .any(|e| e.starts_with("error: t.toml:4:19: max_connections")),
        "{e:?}"
    );
}

#[test]
fn trusted_proxy_with_host_bits_is_a_warning_and_truncated() {
    let text = listener("trusted_proxies = [\"10.1.2.3/8\"]\n");
    assert_eq!(
        warnings(&text),
        ["warning: t.toml:4:20: trusted_proxies entry \"10.1.2.3/8\" has host bits set; it means 10.0.0.0/8"]
    );
    let l = loaded(&text).config.listeners.remove(0);
    assert_eq!(l.trusted_proxies[0].to_string(), "10.0.0.0/8");
}

#[test]
fn max_body_size_is_read_in_bytes() {
    let route = |extra: &str| loaded(&route_text(extra)).config.routes[0].max_body_size;
    assert_eq!(route(""), None);
    assert_eq!(route("max_body_size = \"10MiB\"\n"), Some(10 * 1024 * 1024));
    assert_eq!(route("max_body_size = \"512KiB\"\n"), Some(512 * 1024));
    assert_eq!(route("max_body_size = \"1GB\"\n"), Some(1_000_000_000));
    assert_eq!(route("max_body_size = \"1024\"\n"), Some(1024));
    assert_eq!(route("max_body_size = \"0\"\n"), Some(0));
}

#[test]
fn bad_max_body_size_is_reported_at_its_value() {
    let e = errors(&route_text("max_body_size = \"10M\"\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("error: t.toml:4:17: invalid max_body_size \"10M\": unknown unit \"M\""),
        "{e:?}"
    );
    let e = errors(&route_text("max_body_size = 1024\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("error: t.toml:4:17: "), "{e:?}");
}

#[test]
fn sizes_parse_exactly() {
    for (text, bytes) in [
        ("0", 0),
        ("1024", 1024),
        ("1024B", 1024),
        ("1KB", 1000),
        ("1kb", 1000),
        ("3 MB", 3_000_000),
        ("2GB", 2_000_000_000),
        ("1TB", 1_000_000_000_000),
        ("1KiB", 1024),
        ("10MiB", 10 << 20),
        ("10mib", 10 << 20),
        ("4GiB", 4 << 30),
        ("2TiB", 2 << 40),
        (" 7 KiB ", 7 * 1024),
        ("16777215TiB", 16_777_215 << 40),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
    }
    for text in [
        "",
        "MiB",
        "-1",
        "1.5MiB",
        "10M",
        "10 K",
        "1 KiBs",
        "1e3",
        "16777216TiB",
        "99999999999999999999",
    ] {
        assert!(parse_size(text).is_err(), "{text:?}");
    }
}

#[test]
fn shares_parse_as_fractions() {
    for (text, share) in [
        ("0%", 0.0),
        ("20%", 0.2),
        ("50%", 0.5),
        ("100%", 1.0),
        ("12.5%", 0.125),
    ] {
        assert_eq!(parse_share(text), Ok(share), "{text:?}");
    }
    for text in [
        "", "%", "50", "0.5", "-5%", "101%", "1e2%", "inf%", "NaN%", "5 0%",
    ] {
        assert!(parse_share(text).is_err(), "{text:?}");
    }
}

#[test]
fn upstream_hardening_defaults() {
    let u = one_upstream("");
    assert_eq!(u.passive_health, None);
    assert_eq!(u.retry_budget, 0.2);
    assert_eq!(u.hash_on, HashOn::ClientAddress);
    assert!(warnings(&upstream_text("")).is_empty());
}

#[test]
fn passive_health_is_read_with_defaults_for_missing_keys() {
    let u = one_upstream("[upstreams.u.passive_health]\n");
    assert_eq!(u.passive_health, Some(PassiveHealth::default()));
    let defaults = PassiveHealth::default();
    assert_eq!(defaults.consecutive_failures, 5);
    assert_eq!(defaults.ejection_time, Duration::from_secs(30));
    assert_eq!(defaults.max_ejected, 0.5);
    let u = one_upstream(
        "[upstreams.u.passive_health]\nconsecutive_failures = 3\nejection_time = \"10s\"\nmax_ejected = \"25%\"\n",
    );
    assert_eq!(
        u.passive_health,
        Some(PassiveHealth {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejected: 0.25,
        })
    );
}

#[test]
fn bad_passive_health_is_reported_at_its_values() {
    let e = errors(&upstream_text(
        "[upstreams.u.passive_health]\nconsecutive_failures = 0\nejection_time = \"0s\"\nmax_ejected = \"150%\"\n",
    ));
    assert_eq!(
        e,
        [
            "error: t.toml:4:24: consecutive_failures must be between 1 and 1000",
            "error: t.toml:5:17: ejection_time must be greater than zero",
            "error: t.toml:6:15: invalid max_ejected \"150%\": expected a percentage between \"0%\" and \"100%\", e.g. \"20%\"",
        ]
    );
    let e = errors(&upstream_text(
        "[upstreams.u.passive_health]\nfailures = 3\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("error: t.toml:4:1: unknown field `failures`"),
        "{e:?}"
    );
}

#[test]
fn retry_budget_is_a_share() {
    assert_eq!(one_upstream("retry_budget = \"5%\"\n").retry_budget, 0.05);
    let e = errors(&upstream_text("retry_budget = \"0.2\"\n"));
    assert_eq!(
        e,
        ["error: t.toml:3:16: invalid retry_budget \"0.2\": expected a percentage between \"0%\" and \"100%\", e.g. \"20%\""]
    );
}

#[test]
fn hash_on_takes_the_client_address_a_header_or_a_cookie() {
    let hash_on =
        |value: &str| one_upstream(&format!("balance = \"hash\"\nhash_on = {value}\n")).hash_on;
    assert_eq!(hash_on("\"client_address\""), HashOn::ClientAddress);
    assert_eq!(
        hash_on("{ header = \"X-User\" }"),
        HashOn::Header(HeaderName::from_static("x-user"))
    );
    assert_eq!(
        hash_on("{ cookie = \"session\" }"),
        HashOn::Cookie("session".to_string())
    );
    assert!(warnings(&upstream_text(
        "balance = \"hash\"\nhash_on = { cookie = \"s\" }\n"
    ))
    .is_empty());
}

#[test]
fn bad_hash_on_is_reported_at_its_value() {
    for value in [
        "\"client_ip\"",
        "{ header = \"x user\" }",
        "{ cookie = \"a;b\" }",
        "{ header = \"x\", cookie = \"y\" }",
        "{ query = \"x\" }",
        "{}",
        "3",
    ] {
        let e = errors(&upstream_text(&format!(
            "balance = \"hash\"\nhash_on = {value}\n"
        )));
        assert_eq!(e.len(), 1, "{value}: {e:?}");
        assert!(e[0].starts_with("error: t.toml:4:11: "), "{value}: {e:?}");
    }
}

#[test]
fn hash_on_without_hash_balance_is_a_warning() {
    let text = upstream_text("hash_on = { header = \"x-user\" }\n");
    assert_eq!(
        warnings(&text),
        ["warning: t.toml:3:11: upstream \"u\": hash_on has no effect unless balance = \"hash\""]
    );
}

#[test]
fn minimal_config_is_valid() {
    assert!(errors("[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n").is_empty());
}

#[test]
fn unknown_key_is_reported_at_its_location() {
    let e = errors("[gateway]\nthreadz = 1\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("error: t.toml:2:1: unknown field `threadz`"),
        "{e:?}"
    );
}

#[test]
fn every_problem_is_collected() {
    let e = errors(
        "[[routes]]\nname = \"a\"\nupstream = \"nope\"\n[[routes]]\nname = \"a\"\ntimeout = \"soon\"\nrespond = { status = 200 }\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
}

/// Issue 18: a dotted sub-table where a value belongs got toml 0.8's "expected a
/// borrowed string"; it now says what is expected, where.
#[test]
fn a_dotted_sub_table_of_an_upstream_is_named_plainly() {
    let base = "[[routes]]\nname = \"r\"\nupstream = \"api\"\n[upstreams.api]\n";
    let cases = [
        (
            "endpoints = [\"127.0.0.1:1\"]\ntls.ca.x = \"a\"\n",
            "error: t.toml:9:5: invalid type: map, expected a string",
        ),
        (
            "kubernetes.service = \"web\"\nkubernetes.port.x = 1\n",
            "error: t.toml:9:12: invalid port: expected a Service port's name (\"http\") or number (80)",
        ),
    ];
    for (upstream, want) in cases {
        let got = errors(&listener(&format!("{base}{upstream}")));
        assert_eq!(got, [want], "{upstream}");
        assert!(!got[0].contains("borrowed"));
    }
}

#[test]
fn a_bodyless_respond_status_with_a_body_is_refused_at_its_status() {
    let text = listener(
        "[[routes]]\nname = \"r\"\nrespond = { status = 204, body = \"x\" }\n\n[[routes]]\nname = \"s\"\nrespond = { status = 304 }\n",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("t.toml:6:22:") && errors[0].contains("204 cannot have a body"),
        "{errors:?}"
    );
}

#[test]
fn authenticators_are_checked_at_their_place() {
    let errs = errors(&route_text("auth = \"nope\"\n"));
    assert!(
        errs.iter().any(|e| e
            .starts_with("error: t.toml:4:8: route \"r\" names unknown authenticator \"nope\"")),
        "{errs:?}"
    );
    let errs = errors("[auth.a]\ntype = \"jwt\"\njwks_url = \"http://idp/keys\"\nalgorithms = [\"RS256\", \"HS256\", \"none\"]\n");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("error: t.toml:4:24: algorithm \"HS256\" is refused")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("error: t.toml:4:33: algorithm \"none\" is refused")),
        "{errs:?}"
    );
    let errs =
        errors("[auth.a]\ntype = \"forward\"\naddress = \"http://x/\"\nusers_file = \"u\"\n");
    assert!(
        errs.iter().any(|e| e.starts_with(
            "error: t.toml:4:14: users_file does not apply to a \"forward\" authenticator"
        )),
        "{errs:?}"
    );
    let errs = errors("[auth.a]\ntype = \"ldap\"\n");
    assert!(
        errs.iter()
            .any(|e| e.contains("unknown auth type \"ldap\"")),
        "{errs:?}"
    );
    let errs = errors("[auth.a]\ntype = \"forward\"\naddress = \"https://x/\"\n");
    assert!(
        errs.iter()
            .any(|e| e.contains("address must be an http:// URL")),
        "{errs:?}"
    );
    let errs = errors("[auth.a]\ntype = \"jwt\"\n");
    assert!(
        errs.iter()
            .any(|e| e.contains("needs jwks_url or jwks_file")),
        "{errs:?}"
    );
}

#[test]
fn a_jwt_authenticator_has_safe_defaults_and_routes_name_it() {
    let config = loaded(&format!(
        "[auth.api]\ntype = \"jwt\"\njwks_url = \"https://idp.test/keys\"\n\
         claims_to_headers = {{ sub = \"x-user\" }}\n\n[admin]\nauth = \"api\"\n\n{}",
        route_text("auth = \"api\"\n")
    ))
    .config;
    let AuthKind::Jwt(jwt) = &config.auth[0].kind else {
        panic!("not jwt")
    };
    assert_eq!(jwt.clock_skew, Duration::from_secs(30));
    assert!(jwt.algorithms.contains(&jsonwebtoken::Algorithm::ES256));
    assert!(!jwt.algorithms.contains(&jsonwebtoken::Algorithm::HS256));
    assert_eq!(config.routes[0].auth.as_deref(), Some("api"));
    assert_eq!(config.admin.auth.as_deref(), Some("api"));
}

#[test]
fn htpasswd_lines_are_checked_one_by_one() {
    let bcrypt = bcrypt::hash("pw", 4).expect("bcrypt");
    let text = format!(
        "# staff\n\nalice:{bcrypt}\nbob:plain\ncarol:{{SHA}}abc=\ndave:$apr1$s$h\nnocolon\n"
    );
    let (users, problems) = auth::parse_users(Path::new("u"), &text);
    assert_eq!(users.len(), 1);
    let lines: Vec<String> = problems.iter().map(|(l, m)| format!("{l}: {m}")).collect();
    assert!(
        lines[0].starts_with("u:4:5: user \"bob\": the password is stored as plain text"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("u:5:7: user \"carol\": the password is stored as SHA1"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("u:6:6: user \"dave\": the password is stored as MD5"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("u:7:1: expected USER:HASH"),
        "{lines:?}"
    );
}

#[test]
fn traffic_policy_is_read_and_an_unused_one_is_none() {
    let route = |extra: &str| loaded(&route_text(extra)).config.routes[0].clone();
    assert!(
        route("").policy.is_none(),
        "a route without policy pays nothing"
    );
    let r = route(
        "allow = [\"10.0.0.0/8\", \"192.0.2.1\"]\ndeny = [\"10.9.0.0/16\"]\n\
         rate_limit = { requests = 100, per = \"1m\", key = { header = \"x-user\" } }\n\
         cors = { allow_origins = [\"https://*.example.com\"], allow_credentials = true }\n\
         cookies = { \"canary\" = \"always\" }\n",
    );
    let policy = r.policy.clone().expect("policy");
    assert_eq!(policy.allow.len(), 2);
    let limit = policy.rate_limit.as_ref().expect("limit");
    assert_eq!(
        (limit.requests, limit.burst),
        (100, 100),
        "burst defaults to requests"
    );
    assert_eq!(limit.per, Duration::from_secs(60));
    assert_eq!(limit.scope, RateLimitScope::Local);
    assert!(policy.cors.as_ref().expect("cors").allow_origins[0].matches("https://a.example.com"));
    assert_eq!(
        r.cookies,
        vec![("canary".to_string(), "always".to_string())]
    );
}

#[test]
fn bad_traffic_policy_is_reported_at_its_location() {
    let e = errors(&route_text(
        "cors = { allow_origins = [\"*\"], allow_credentials = true }\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("error: t.toml:4:"), "{e:?}");
    assert!(e[0].contains("allow_credentials"), "{e:?}");
    let e = errors(&route_text(
        "rate_limit = { requests = 5, scope = \"global\" }\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("[gateway.rate_limit_store]"), "{e:?}");
    let e = errors(&route_text("allow = [\"10.0.0.0/33\"]\n"));
    assert!(
        e[0].starts_with("error: t.toml:4:10: invalid allow entry"),
        "{e:?}"
    );
    let e = errors(&route_text("rate_limit = { requests = 0 }\n"));
    assert!(e[0].contains("between 1 and"), "{e:?}");
    let e = errors(&route_text("rate_limit = { requests = 1, key = \"ip\" }\n"));
    assert!(e[0].contains("invalid rate_limit key"), "{e:?}");
    let e = errors(&route_text(
        "cors = { allow_origins = [\"example.com\"] }\n",
    ));
    assert!(e[0].contains("invalid cors origin"), "{e:?}");
    let store = "[gateway.rate_limit_store]\nurl = \"http://x\"\n";
    let e = errors(&format!("{store}{}", route_text("")));
    assert!(
        e[0].starts_with("error: t.toml:2:7: invalid rate_limit_store url"),
        "{e:?}"
    );
}

const TCP: &str = "[[listeners]]\nname = \"db\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\n\
    [[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:0\"\n\n\
    [upstreams.pg]\nendpoints = [\"127.0.0.1:1\"]\n\n";

#[test]
fn tcp_routes_are_read() {
    let config = loaded(&format!(
        "{TCP}[[tcp_routes]]\nname = \"pg\"\nlisteners = [\"db\"]\nupstream = \"pg\"\n"
    ))
    .config;
    let route = &config.tcp_routes[0];
    assert_eq!(&*route.name, "pg");
    assert_eq!(&*route.upstream, "pg");
    assert!(route.sni.is_empty());
    assert!(route.applies_to_listener("db"));
    assert_eq!(route.location.line, 14);
}

#[test]
fn tcp_routes_refuse_what_could_never_serve() {
    let text = format!(
        "{TCP}[[tcp_routes]]\nname = \"a\"\nlisteners = [\"db\"]\nsni = [\"x.example.com\"]\nupstream = \"pg\"\n\n\
         [[tcp_routes]]\nname = \"b\"\nlisteners = [\"plain\"]\nupstream = \"pg\"\n\n\
         [[tcp_routes]]\nname = \"c\"\nlisteners = [\"plain\"]\nsni = [\"x.example.com\"]\nupstream = \"pg\"\n\n\
         [[tcp_routes]]\nname = \"d\"\nlisteners = [\"nope\"]\nupstream = \"missing\"\n\n\
         [[routes]]\nname = \"d\"\nlisteners = [\"db\"]\nrespond = {{ status = 200 }}\n"
    );
    let errors = errors(&text);
    let expect = [
        "error: t.toml:15:14: tcp route \"a\": listener \"db\" is a tcp listener",
        "error: t.toml:21:14: tcp route \"b\": listener \"plain\" is an HTTP listener",
        "error: t.toml:26:14: tcp route \"c\": listener \"plain\" has no [listeners.tls]",
        "error: t.toml:32:14: tcp route \"d\" names unknown listener \"nope\"",
        "error: t.toml:33:12: tcp route \"d\" names unknown upstream \"missing\"",
        "error: t.toml:36:8: route \"d\" names listener \"db\", a tcp listener",
        "error: t.toml:31:8: duplicate route name \"d\"",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
}

#[test]
fn layer4_listener_and_upstream_keys_are_checked() {
    let errors = errors(
        "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\nprotocol = \"udp\"\nproxy_protocol = true\n\n\
         [upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\nsend_proxy_protocol = \"v3\"\n",
    );
    let expect = [
        "error: t.toml:4:12: unknown protocol \"udp\": expected \"http\" or \"tcp\"",
        "error: t.toml:5:18: listener \"a\": proxy_protocol needs trusted_proxies",
        "error: t.toml:9:23: unknown send_proxy_protocol \"v3\": expected \"v1\" or \"v2\"",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    let l = one_listener(
        "protocol = \"tcp\"\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    );
    assert_eq!(l.protocol, ListenerProtocol::Tcp);
    assert!(l.proxy_protocol);
    assert_eq!(
        one_upstream("send_proxy_protocol = \"v2\"").send_proxy_protocol,
        Some(ProxyProtocolVersion::V2)
    );
}

#[test]
fn a_proxy_protocol_upstream_serves_no_http_route() {
    let errors = errors(&format!(
        "{}\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        upstream_text("send_proxy_protocol = \"v1\"")
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("error: t.toml:5:8: route \"r\" sends HTTP to upstream \"u\", which has send_proxy_protocol")),
        "{errors:#?}"
    );
}

#[test]
fn a_tcp_listener_without_a_route_is_worth_a_warning() {
    let warnings = warnings(TCP);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tcp listener \"db\" has no tcp route")),
        "{warnings:#?}"
    );
}

#[test]
fn acme_settings_are_read_and_checked() {
    let base = "[[listeners]]\nname = \"s\"\naddress = \"127.0.0.1:0\"\n[listeners.tls.acme]\n";
    let config = loaded(&format!(
        "{base}directory = \"https://acme.example/dir\"\ndomains = [\"Example.com\", \"www.example.com\"]\nstorage = \"/var/lib/edgegate/acme\"\nchallenge = \"http-01\"\n"
    ))
    .config;
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    assert!(tls.certificates.is_empty(), "acme alone is enough");
    let acme = tls.acme.as_ref().expect("acme");
    assert_eq!(acme.domains, ["example.com", "www.example.com"]);
    assert_eq!(acme.challenge, AcmeChallenge::Http01);
    assert_eq!(acme.storage, PathBuf::from("/var/lib/edgegate/acme"));

    let problems = errors(&format!(
        "{base}directory = \"http://acme.example/dir\"\ndomains = [\"*.example.com\"]\nstorage = \"acme\"\nchallenge = \"dns-01\"\n"
    ));
    for want in [
        "error: t.toml:5:13: invalid ACME directory",
        "error: t.toml:6:12: ACME wildcard names need the dns-01 challenge",
        "error: t.toml:6:11: acme needs at least one domain",
        "error: t.toml:8:13: unknown challenge \"dns-01\"",
    ] {
        assert!(
            problems.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {problems:#?}"
        );
    }
    let errors =
        errors("[[listeners]]\nname = \"s\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\n");
    assert!(
        errors.iter().any(|e| e
            .contains("a TLS listener needs at least one certificate (or [listeners.tls.acme])")),
        "{errors:#?}"
    );
}
