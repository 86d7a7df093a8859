//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "edgegate",
    version,
    about = "An edge gateway and reverse proxy",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run(RunArgs),
    /// Validate a config file without binding anything.
    Check(ConfigArg),
    /// Explain which route a request would take, without sending it.
    Route(RouteArgs),
    /// Replace a running gateway with the binary now on disk, without refusing or
    /// dropping a connection: sends it SIGUSR2 and waits until it has handed its listening
    /// sockets to the new process and drained.
    Upgrade(UpgradeArgs),
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The running gateway's process id (under systemd:
    /// `systemctl show -p MainPID --value edgegate`).
    #[arg(long)]
    pub pid: i32,
    /// How long to wait for the old process to exit: the new one's start plus the old
    /// one's `grace_period`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArg {
    /// Config file; defaults to $EDGEGATE_CONFIG, then /etc/edgegate/edgegate.toml, then
    /// the embedded default.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format; overrides `log_format` under `[gateway]`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Listener the request arrives on; defaults to the one whose port the URL names, else
    /// the first.
    #[arg(long, value_name = "NAME")]
    pub listener: Option<String>,
    /// Request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// An HTTP method, or `TCP` to explain a tcp route (URL: `tls://SNI[:PORT]` for TLS
    /// passthrough, `tcp://[HOST]:PORT` for a tcp listener).
    pub method: String,
    /// `http://host[:port]/path?query` or just `/path?query`.
    pub url: String,
}
