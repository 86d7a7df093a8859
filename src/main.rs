use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: the proxy allocates and frees many short-lived
/// buffers per request, and glibc's consolidation showed up at ~10% of CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = edgegate::process::cli::Cli::parse();
    edgegate::process::commands::main(cli)
}
