//! The binary: its command line, its commands (`run`, `check`, `route`), the serving
//! process with its signals and drain, binary upgrades, and systemd readiness.

pub mod cli;
pub mod commands;
pub mod notify;
pub mod run;
pub mod upgrade;
