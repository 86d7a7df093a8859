//! A bare pingora reverse proxy: the floor of the engine edgegate is built on.
//!
//! pingora's own [`Server`] hosting one `http_proxy_service` whose [`ProxyHttp`] implements
//! only `new_ctx` and `upstream_peer`: every request goes to one origin over plain HTTP,
//! with pingora's default upstream keepalive pool. No routing, no header edits, no
//! logging, no metrics. `benches/load.sh` runs it as the `bare_pingora` row, next to
//! edgegate, nginx and HAProxy, to show what pingora-proxy's per-request machinery costs
//! on its own.
//!
//! ```sh
//! cargo build --release --example bare_pingora
//! target/release/examples/bare_pingora --listen 127.0.0.1:8080 --origin 127.0.0.1:8000
//! # or: BARE_PINGORA_LISTEN=... BARE_PINGORA_ORIGIN=... BARE_PINGORA_THREADS=2 bare_pingora
//! ```
//!
//! With `--tls-cert FILE --tls-key FILE` the listener terminates TLS instead (pingora's
//! rustls `TlsSettings::intermediate`, TLS 1.2 and 1.3, ALPN h2 and http/1.1); the origin
//! stays plain HTTP.
//!
//! SIGTERM or SIGINT stops it within about a second (grace period 0 s, runtimes get 1 s).
//! It uses the same global allocator as the edgegate binary (mimalloc), so that the two
//! compare pingora's work rather than allocators.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{http_proxy_service, HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A bare pingora HTTP/1.1 reverse proxy to one plain-HTTP origin (a benchmark baseline).
#[derive(Parser, Debug)]
#[command(name = "bare_pingora")]
struct Args {
    /// Address to listen on (plain HTTP, or TLS with --tls-cert and --tls-key).
    #[arg(long, env = "BARE_PINGORA_LISTEN", default_value = "127.0.0.1:6188")]
    listen: SocketAddr,
    /// The origin every request is forwarded to (plain HTTP, keepalive).
    #[arg(long, env = "BARE_PINGORA_ORIGIN")]
    origin: SocketAddr,
    /// Worker threads of the proxy service (pingora's `threads`).
    #[arg(long, env = "BARE_PINGORA_THREADS", default_value_t = 1)]
    threads: usize,
    /// Terminate TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "BARE_PINGORA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<String>,
    /// The certificate's private key (PEM); needs --tls-cert.
    #[arg(long, env = "BARE_PINGORA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<String>,
}

/// Sends everything to one origin.
struct Bare {
    origin: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.origin.clone()))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.threads == 0 {
        eprintln!("bare_pingora: --threads must be at least 1");
        return ExitCode::from(2);
    }

    let conf = ServerConf {
        threads: args.threads,
        // Stop promptly on SIGTERM: no grace period for in-flight requests (pingora's
        // default is 5 minutes), 1 s for the runtimes to wind down.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let bare = Bare {
        origin: HttpPeer::new(args.origin, false, String::new()),
    };
    let mut service = http_proxy_service(&server.configuration, bare);
    let scheme = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            // pingora loads the files when the listener starts and panics if it cannot.
            for file in [cert, key] {
                if let Err(e) = std::fs::metadata(file) {
                    eprintln!("bare_pingora: {file}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let mut tls = match TlsSettings::intermediate(cert, key) {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("bare_pingora: TLS settings: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tls.enable_h2();
            service.add_tls_with_settings(&args.listen.to_string(), None, tls);
            "https"
        }
        _ => {
            service.add_tcp(&args.listen.to_string());
            "http"
        }
    };
    server.add_service(service);

    eprintln!(
        "bare_pingora: listening on {scheme}://{}, forwarding to http://{}, {} thread(s)",
        args.listen, args.origin, args.threads
    );
    server.run_forever()
}
