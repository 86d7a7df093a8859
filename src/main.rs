use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = edgegate::cli::Cli::parse();
    edgegate::commands::main(cli)
}
