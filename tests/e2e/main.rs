//! End-to-end tests: the real binary, real sockets on loopback, real upstream servers.

mod support;

mod acme;
mod admin;
mod auth;
mod cli;
mod cluster_routes;
mod consistency;
mod framing;
mod grpc;
mod h1_loop;
mod h2_loop;
mod hardening;
mod ingress_auth;
mod kube;
mod kube_double;
mod l4;
mod limits;
mod mirror;
mod policy;
mod proxying;
mod reload;
mod request_core;
mod routing;
mod signals;
mod smuggling;
mod status_page;
mod systemd;
mod tls;
mod tracing;
mod upgrade;
mod upstream_metrics;

/// A config with the admin listener and the named plain listeners on ephemeral ports,
/// followed by `rest`.
pub fn config(listeners: &[&str], rest: &str) -> String {
    let mut out = String::from("[admin]\naddress = \"127.0.0.1:0\"\n\n");
    for name in listeners {
        out.push_str(&format!(
            "[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\n\n"
        ));
    }
    out.push_str(rest);
    out
}

/// A config with one plain listener `web` whose every request goes to one pool of
/// `endpoints`; `route_extra` and `pool_extra` add keys to the route and to the pool.
pub fn proxy_config(
    endpoints: &[std::net::SocketAddr],
    route_extra: &str,
    pool_extra: &str,
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"main\"\nupstream = \"pool\"\n{route_extra}\n\n[upstreams.pool]\nendpoints = [{}]\n{pool_extra}",
            endpoints.join(", ")
        ),
    )
}

/// Adds `keys` (TOML lines) to the `[[listeners]]` table named `name` in a config made
/// by [`config`].
pub fn listener_keys(config: &str, name: &str, keys: &str) -> String {
    let table = format!("name = \"{name}\"\naddress = \"127.0.0.1:0\"\n");
    assert!(config.contains(&table), "no listener {name} in {config}");
    config.replacen(&table, &format!("{table}{keys}\n"), 1)
}

/// A route that answers with its own name, for precedence tests.
pub fn named(name: &str, matchers: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\n{matchers}\nrespond = {{ status = 200, body = \"{name}\" }}\n\n"
    )
}
