//! edgegate: an edge gateway and reverse proxy on pingora.
//!
//! # Data flows one way
//!
//! ```text
//! edgegate.toml ─read─▶ SourceFile ─serde─▶ config::raw ─validate─▶ config::Config
//!                                                                      │
//!   file watcher / SIGHUP ── Update::Reload ──┐                        │ (startup: same path)
//!   discovery ─────────────── Update::Endpoints┤                        ▼
//!   cluster routes ─── Update::ClusterRoutes ──┤   file config + cluster routes, merged
//!                                              ▼                 Snapshot::compile
//!                                         Publisher ───────────▶ (router, pools)
//!                                     (the only writer)              │ ArcSwap::store
//!                                                                    ▼
//!   request ─▶ ctx.snapshot = handle.load_full()  (once per request; never mixed)
//!              router.route(listener, host, path, …) ─▶ pool.select() ─▶ HttpPeer
//! ```
//!
//! # Listeners are part of the config
//!
//! pingora's `Server` fixes its listeners once it runs, so edgegate owns its accept loops
//! ([`listeners`]) and hands each accepted stream to pingora's `HttpProxy` through
//! `ServerApp::process_new` (HTTP/1.1, h2c by preface, h2 by ALPN). A reload binds new or
//! moved listeners first (any failure refuses the whole reload), publishes the snapshot,
//! then starts the new accept loops and stops the removed ones. Listeners that did not
//! change keep their socket and accept loop: no connection on them is refused or dropped.
//! Each connection records the address of the listener that accepted it, which is how a
//! request finds its listener's routes. A zero-downtime *binary* upgrade (a new process)
//! would need descriptor hand-over (systemd socket activation); config changes never do.
//!
//! # Modules
//!
//! - [`config`]: text -> validated model, with `file:line:col` diagnostics.
//! - [`snapshot`]: model -> immutable router and pools (pure, no sockets).
//! - [`publish`]: the single writer; [`sources`]: producers of updates (the file, SIGHUP,
//!   discovery, and routes from Gateway API and Ingress objects: `sources::cluster`).
//! - [`proxy`]: the pingora `ProxyHttp` implementation; [`listeners`]: accept loops;
//!   [`tls`]: rustls acceptors.
//! - [`http_path`]: request-path normalisation before routing (pure).
//! - [`health`], [`admin`], [`metrics`], [`access_log`]: operations.
//! - [`cli`], [`commands`], [`run`]: the binary's commands.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod buffered_io;
pub mod cli;
pub mod commands;
pub mod config;
pub mod h1;
pub mod health;
pub mod http_path;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod publish;
pub mod run;
pub mod snapshot;
pub mod sources;
pub mod tls;
pub mod update;
