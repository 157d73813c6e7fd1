use std::process::ExitCode;

use approval_gate::cli::{
    Cli, Command, approvals, backup, check_config, hook, mcp, request, serve,
};
use clap::Parser;

/// mimalloc instead of glibc malloc: the service allocates many small, short-lived buffers
/// across threads (HTTP workers, sled's IO pool, the group-commit thread), where glibc's arenas
/// cost about a fifth of the service's CPU under load (measured with perf in `scripts/bench`).
/// The `system-allocator` feature keeps glibc's, for heap profilers (heaptrack, valgrind) that
/// see only malloc.
#[cfg(not(feature = "system-allocator"))]
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
        Command::HashToken => hash_token(),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
    }
}

/// `approval-gate hash-token`: the token on stdin (first line) as `sha256:<hex>`.
fn hash_token() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("error: cannot read the token on stdin: {e}");
        return ExitCode::from(2);
    }
    let token = line.trim_end_matches(['\r', '\n']);
    if token.len() < 16 {
        eprintln!("error: a token must be at least 16 characters long");
        return ExitCode::from(2);
    }
    let digest = approval_gate::settings::sha256(token.as_bytes());
    println!(
        "{}{}",
        approval_gate::settings::TOKEN_HASH_PREFIX,
        hex_lower(&digest)
    );
    ExitCode::SUCCESS
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
