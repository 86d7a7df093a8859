//! edgegate: an edge gateway and reverse proxy on pingora.
//!
//! # Data flows one way
//!
//! ```text
//! edgegate.toml ─read─▶ SourceFile ─serde─▶ config::raw ─validate─▶ config::Config
//!   (+ the TLS files it names, read and checked here)                  │
//!                                                                      │ (startup: same path)
//!   file watcher / SIGHUP ── Update::Reload ──┐                        ▼
//!   discovery ─────────────── Update::Endpoints┤ ─▶ Publisher ─▶ Snapshot::compile
//!   cluster routes ─── Update::ClusterRoutes ──┤    (merges file config + cluster routes)
//!                                              │  (the only writer;   (router, pools, edges:
//!   producers follow applied configs ◀─ watch ─┘   control runtime)    listeners, TLS, log)
//!                                                                    │ ArcSwap::store (once)
//!                                                                    ▼
//!   request ─▶ ctx.snapshot = handle.load_full()  (once per request; never mixed)
//!              router.route(listener, host, path, …) ─▶ pool.select() ─▶ HttpPeer
//! ```
//!
//! Producers only send [`update::Update`]s; the publisher never calls them (they follow
//! the configs it applies on a `watch` channel). It runs with reloads, discovery, health
//! checks and admin on a control runtime of its own, apart from the workers that serve,
//! and reads files off that runtime too.
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
//! request finds its listener's routes. A zero-downtime *binary* upgrade hands the
//! listening sockets to a new process ([`upgrade`]); config changes never need one.
//!
//! # Modules
//!
//! - [`config`]: text -> validated model, with `file:line:col` diagnostics.
//! - [`snapshot`]: model -> immutable router and pools (pure, no sockets).
//! - [`publish`]: the single writer; [`update`]: its messages; [`sources`]: producers (the file,
//!   SIGHUP, discovery, and routes from Gateway API and Ingress objects: `sources::cluster`).
//! - [`proxy`]: the pingora `ProxyHttp` implementation; [`listeners`]: accept loops;
//!   [`tls`]: rustls acceptors.
//! - [`acme`]: certificates obtained and renewed from an ACME directory.
//! - [`http_path`]: request-path normalisation before routing (pure).
//! - [`l4`]: connections relayed whole (tcp listeners, TLS passthrough by SNI) and the
//!   PROXY protocol.
//! - [`health`], [`admin`], [`metrics`], [`access_log`]: operations; [`notify`]: systemd
//!   readiness; [`upgrade`]: binary upgrades.
//! - [`cli`], [`commands`], [`run`]: the binary's commands.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod buffered_io;
pub mod cli;
pub mod commands;
pub mod config;
pub mod h1;
pub mod health;
pub mod http_path;
pub mod l4;
pub mod listeners;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod publish;
#[cfg(test)]
mod reference_docs;
pub mod request_record;
pub mod run;
pub mod snapshot;
pub mod sources;
pub mod tls;
pub mod trace_export;
pub mod update;
pub mod upgrade;

#[cfg(test)]
mod properties;
