//! Command-line interface: one module per command; `main` only parses and dispatches.

pub mod agent_client;
pub mod approvals;
pub mod backup;
pub mod check_config;
pub mod hook;
pub mod mcp;
pub mod postgres;
pub mod request;
pub mod serve;
mod table;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use approvals::ApprovalsCommand;

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
    /// Operator commands: list, inspect, approve and reject approvals through the REST API.
    #[command(after_help = approvals::AUTH_HELP)]
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
        /// Base URL of the running service (a path prefix behind a reverse proxy is fine).
        #[arg(
            long,
            global = true,
            value_name = "URL",
            env = "APPROVAL_GATE_URL",
            default_value = "http://127.0.0.1:5284",
            value_parser = approvals::parse_url
        )]
        url: reqwest::Url,
        /// Read the operator token from FILE instead of APPROVAL_GATE_OPERATOR_TOKEN.
        #[arg(long, global = true, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// A command hook for an agent CLI: hook input on stdin, the agent's output JSON on stdout.
    /// Fails closed when the service cannot be asked. Token: APPROVAL_GATE_TOKEN.
    Hook(hook::HookArgs),
    /// Ask for an approval and wait: exit 0 approved, 1 rejected, 2 timed out or cancelled,
    /// 3 error. Token: APPROVAL_GATE_TOKEN.
    Request(request::RequestArgs),
    /// Take an online backup of a running service into FILE (operator token from
    /// APPROVAL_GATE_OPERATOR_TOKEN or --token-file), or of a PostgreSQL database (--from).
    Backup(backup::BackupArgs),
    /// Rebuild a store from a backup file, offline, into a new or empty folder, or into an
    /// empty PostgreSQL database (--to).
    Restore(backup::RestoreArgs),
    /// Print `sha256:<hex>` for the token on stdin, to configure a token by its hash
    /// (a leaked config file then leaks no token).
    HashToken,
    /// A stdio MCP server with the `approval_prompt` tool for Claude Code's
    /// --permission-prompt-tool. Token: APPROVAL_GATE_TOKEN.
    Mcp(mcp::McpArgs),
}
