//! Command-line interface: one module per command; `main` only parses and dispatches.

pub mod check_config;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "approval-gate",
    version,
    about = "Human-approval gateway for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service (REST API, actors, notifiers).
    Serve {
        /// An extra TOML file layered over config/default.toml and config/<env>.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective settings, secrets masked.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}
