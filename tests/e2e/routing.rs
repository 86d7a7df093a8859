//! Routing precedence, spec section 3: one test per rule.

use crate::support::{client, Gateway};
use crate::{config, named};

async fn get(gw: &Gateway, path: &str, host: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut req = client().get(gw.url("web", path)).header("host", host);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn body(gw: &Gateway, path: &str, host: &str) -> String {
    get(gw, path, host, &[]).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_beats_no_host() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("any", ""),
            named("wild", "hosts = [\"*.example.com\"]"),
            named("exact", "hosts = [\"api.example.com\"]"),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/", "api.example.com").await, "exact");
    assert_eq!(body(&gw, "/", "www.example.com").await, "wild");
    assert_eq!(body(&gw, "/", "other.org").await, "any");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longer_wildcard_beats_shorter_and_wildcards_skip_the_apex() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("short", "hosts = [\"*.example.com\"]"),
            named("long", "hosts = [\"*.b.example.com\"]"),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/", "a.b.example.com").await, "long");
    assert_eq!(body(&gw, "/", "a.c.example.com").await, "short");
    assert_eq!(body(&gw, "/", "x.y.z.example.com").await, "short");
    let (status, _) = get(&gw, "/", "example.com", &[]).await;
    assert_eq!(status, 404, "a wildcard does not match its apex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_comparison_ignores_case_and_port() {
    let gw = Gateway::start(&config(
        &["web"],
        &named("exact", "hosts = [\"API.Example.com\"]"),
    ));
    assert_eq!(body(&gw, "/", "api.example.COM:8443").await, "exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_path_beats_regex_beats_prefix() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("prefix", "path_prefix = \"/v1\""),
            named("regex", "path_regex = \"^/v[0-9]+/items$\""),
            named("exact", "path = \"/v1/items\""),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/v1/items", "h").await, "exact");
    assert_eq!(body(&gw, "/v2/items", "h").await, "regex");
    assert_eq!(body(&gw, "/v1/other", "h").await, "prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_wins() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("root", "path_prefix = \"/\""),
            named("api", "path_prefix = \"/api\""),
            named("api-v1", "path_prefix = \"/api/v1/\""),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/api/v1/users", "h").await, "api-v1");
    assert_eq!(body(&gw, "/api/v2", "h").await, "api");
    assert_eq!(body(&gw, "/other", "h").await, "root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_match_whole_segments() {
    let gw = Gateway::start(&config(&["web"], &named("api", "path_prefix = \"/api\"")));
    for path in ["/api", "/api/", "/api/x", "/api?q=1"] {
        assert_eq!(
            get(&gw, path, "h", &[]).await,
            (200, "api".to_string()),
            "{path}"
        );
    }
    for path in ["/apix", "/ap", "/"] {
        assert_eq!(get(&gw, path, "h", &[]).await.0, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_methods_beats_one_without() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("any-method", "path_prefix = \"/\""),
            named("post-only", "path_prefix = \"/\"\nmethods = [\"POST\"]"),
        ]
        .concat(),
    ));
    let resp = client()
        .post(gw.url("web", "/"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.text().await.expect("body"), "post-only");
    assert_eq!(body(&gw, "/", "h").await, "any-method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_header_matches_win() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("one", "headers = { \"x-a\" = \"1\" }"),
            named("two", "headers = { \"x-a\" = \"1\", \"x-b\" = \"2\" }"),
            named("none", ""),
        ]
        .concat(),
    ));
    assert_eq!(
        get(&gw, "/", "h", &[("x-a", "1"), ("x-b", "2")]).await.1,
        "two"
    );
    assert_eq!(
        get(&gw, "/", "h", &[("x-a", "1"), ("x-b", "3")]).await.1,
        "one"
    );
    assert_eq!(get(&gw, "/", "h", &[("x-a", "2")]).await.1, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_query_matches_win() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("none", ""),
            named("one", "query = { \"v\" = \"2\" }"),
            named("two", "query = { \"v\" = \"2\", \"beta\" = \"1\" }"),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/?v=2&beta=1", "h").await, "two");
    assert_eq!(body(&gw, "/?beta=1&v=2", "h").await, "two");
    assert_eq!(body(&gw, "/?v=2", "h").await, "one");
    assert_eq!(body(&gw, "/?v=3", "h").await, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_outrank_headers_and_headers_outrank_query() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("query", "query = { \"q\" = \"1\" }"),
            named("header", "headers = { \"x-h\" = \"1\" }"),
            named("method", "methods = [\"GET\"]"),
        ]
        .concat(),
    ));
    assert_eq!(get(&gw, "/?q=1", "h", &[("x-h", "1")]).await.1, "method");
    let resp = client()
        .post(gw.url("web", "/?q=1"))
        .header("x-h", "1")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.text().await.expect("body"), "header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_go_to_the_route_written_first() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named(
                "first",
                "path_prefix = \"/x\"\nheaders = { \"x-a\" = \"1\" }",
            ),
            named(
                "second",
                "path_prefix = \"/x\"\nheaders = { \"x-b\" = \"1\" }",
            ),
        ]
        .concat(),
    ));
    assert_eq!(
        get(&gw, "/x", "h", &[("x-a", "1"), ("x-b", "1")]).await.1,
        "first"
    );
    assert_eq!(get(&gw, "/x", "h", &[("x-b", "1")]).await.1, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_outranks_path() {
    let gw = Gateway::start(&config(
        &["web"],
        &[
            named("long-path-any-host", "path = \"/a/b/c\""),
            named("host-root", "hosts = [\"h.example\"]"),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/a/b/c", "h.example").await, "host-root");
    assert_eq!(body(&gw, "/a/b/c", "other").await, "long-path-any-host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_apply_only_to_their_listeners() {
    let gw = Gateway::start(&config(
        &["web", "internal"],
        &[
            named("public", "listeners = [\"web\"]\npath_prefix = \"/\""),
            named("private", "listeners = [\"internal\"]\npath_prefix = \"/\""),
        ]
        .concat(),
    ));
    assert_eq!(body(&gw, "/", "h").await, "public");
    let resp = client()
        .get(gw.url("internal", "/"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.text().await.expect("body"), "private");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_is_404_with_a_plain_text_body_and_request_id() {
    let gw = Gateway::start(&config(&["web"], &named("only", "path = \"/only\"")));
    let resp = client()
        .get(gw.url("web", "/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/plain"));
    assert!(resp.headers().contains_key("x-request-id"));
    let text = resp.text().await.expect("body");
    assert!(!text.is_empty() && text.len() < 100, "{text:?}");
}
