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
//! Producers only send [`control::update::Update`]s; the publisher never calls them (they follow
//! the configs it applies on a `watch` channel). It runs with reloads, discovery, health
//! checks and admin on a control runtime of its own, apart from the workers that serve,
//! and reads files off that runtime too.
//!
//! # One request core, rendered per protocol
//!
//! ```text
//! accept loop (listeners) ─┬─ HTTP/1.1, plain or TLS ─▶ h1: edgegate's own loop ─┐
//!                          └─ h2 (ALPN), h2c (preface) ─▶ proxy: pingora-proxy ───┤
//!                             + what h1 hands over: WebSocket, TLS/HTTP/2 upstreams│
//!                                                                                ▼
//!        pipeline::decide (identify ▶ admit ▶ route ▶ act ▶ limits) ─▶ Answer | Forward
//!        + header plans, the failure table, the retry policy, one record per request
//! ```
//!
//! Every request decision lives in [`pipeline`], once; [`serving::h1`] renders it into bytes in
//! its reused buffers and [`serving::proxy`] into pingora's session and header maps. Neither
//! renderer imports the other.
//!
//! # Listeners are part of the config
//!
//! pingora's `Server` fixes its listeners once it runs, so edgegate owns its accept loops
//! ([`serving::listeners`]). A reload binds new or moved listeners first (any failure refuses the
//! whole reload), publishes the snapshot, then starts the new accept loops and stops the
//! removed ones. Listeners that did not change keep their socket and accept loop: no
//! connection on them is refused or dropped. Each connection records the address of the
//! listener that accepted it, which is how a request finds its listener's routes. A
//! zero-downtime *binary* upgrade hands the listening sockets to a new process
//! ([`serving::upgrade`]); config changes never need one.
//!
//! # Modules, by concern
//!
//! - [`config`]: text -> validated model, with `file:line:col` diagnostics.
//! - [`telemetry`]: metrics, the access log, span export and trace context, systemd
//!   readiness.
//! - [`snapshot`]: model -> immutable router, pools and TLS acceptors (pure, no sockets).
//! - [`control`]: the publisher (the single writer), its update messages, the producers
//!   (the file, SIGHUP, Kubernetes discovery, routes from Gateway API and Ingress
//!   objects) and active health checks.
//! - [`pipeline`]: the request core (hygiene, routing, answers, header plans, failures,
//!   retries), pure and tested without sockets.
//! - [`serving`]: accept loops, the core's two renderers (the HTTP/1.1 loop and the
//!   pingora adapter), the admin listener and its status page, and the hand-over of
//!   listening sockets to a new binary.
//! - [`l4`]: connections relayed whole (tcp listeners, TLS passthrough by SNI) and the
//!   PROXY protocol; [`acme`]: certificates obtained and renewed from an ACME directory.
//! - [`process`]: the command line, `run`/`check`/`route`, signals and drain.

#![forbid(unsafe_code)]

pub mod acme;
pub mod config;
pub mod control;
pub mod l4;
pub mod pipeline;
pub mod process;
#[cfg(test)]
mod reference_docs;
pub mod serving;
pub mod snapshot;
pub mod telemetry;

#[cfg(test)]
mod properties;
