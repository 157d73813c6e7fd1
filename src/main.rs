use std::process::ExitCode;

use approval_gate::cli::{Cli, Command, approvals, check_config, hook, mcp, request, serve};
use clap::Parser;

/// mimalloc instead of glibc malloc: the service allocates many small, short-lived buffers
/// across threads (HTTP workers, sled's IO pool, the group-commit thread), where glibc's arenas
/// cost about a fifth of the service's CPU under load (measured with perf in `scripts/bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => serve::run(config),
        Command::CheckConfig { config } => check_config::run(config),
        Command::Approvals {
            command,
            url,
            token_file,
        } => approvals::run(command, url, token_file),
        Command::Hook(args) => hook::run(args),
        Command::Request(args) => request::run(args),
        Command::Mcp(args) => mcp::run(args),
    }
}
