use std::process::ExitCode;

use approval_gate::cli::{Cli, Command, approvals, check_config, serve};
use clap::Parser;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => serve::run(config),
        Command::CheckConfig { config } => check_config::run(config),
        Command::Approvals {
            command,
            url,
            token_file,
        } => approvals::run(command, url, token_file),
    }
}
