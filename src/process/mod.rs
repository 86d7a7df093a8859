//! The binary: its command line, its commands (`run`, `check`, `route`), and the serving
//! process with its signals and drain.

pub mod cli;
pub mod commands;
pub mod run;
