//! `approval-gate backup` and `approval-gate restore`: take an online backup from a running
//! service (`GET /api/admin/backup`, operator token) into a file, and rebuild a store from one,
//! offline, into a new or empty folder. With `--from` / `--to` a PostgreSQL database is the
//! source or the target instead (`postgres.rs`): the way between the two backends.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::agent_client::{AgentClient, ServiceArgs, runtime};
use super::postgres::{PgArgs, backup_from, restore_into};

const OPERATOR_TOKEN_ENV: &str = "APPROVAL_GATE_OPERATOR_TOKEN";

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the backup (written to FILE.part, then renamed).
    pub file: PathBuf,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Back up a PostgreSQL database instead of a running service: its connection URL
    /// (postgres://user@host/db), or file:/path to read it from a file. One consistent
    /// snapshot; instances may keep running.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    #[command(flatten)]
    pub postgres: PgArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A file written by `approval-gate backup`.
    pub file: PathBuf,
    /// The store folder to create (must not exist, or be empty). The service must not run on it.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "to",
        conflicts_with = "to"
    )]
    pub store: Option<PathBuf>,
    /// Restore into PostgreSQL instead: its connection URL (postgres://user@host/db), or
    /// file:/path to read it from a file. The schema is created or upgraded; the database must
    /// hold no approvals yet.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    #[command(flatten)]
    pub postgres: PgArgs,
}

/// Prints what a command did, or the error; the exit code to match.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(done) => {
            eprintln!("{done}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

pub fn backup(args: BackupArgs) -> ExitCode {
    if let Some(from) = &args.from {
        return report(
            runtime().and_then(|rt| rt.block_on(backup_from(&args.file, from, &args.postgres))),
        );
    }
    let result = AgentClient::with_token_from(&args.service, None, OPERATOR_TOKEN_ENV)
        .and_then(|client| runtime()?.block_on(fetch(&client, &args.file)));
    match result {
        Ok((records, bytes)) => {
            eprintln!(
                "backup written to {}: {records} records, {bytes} bytes",
                args.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(client: &AgentClient, file: &std::path::Path) -> Result<(String, u64), String> {
    let mut response = client
        .http
        .get(client.url("/api/admin/backup"))
        .send()
        .await
        .map_err(|e| {
            format!(
                "the service at {} could not be reached: {e}",
                client.shown()
            )
        })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {body}"));
    }
    let records = response
        .headers()
        .get("x-backup-records")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let part = file.with_extension("part");
    let mut out = std::fs::File::create(&part)
        .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    let mut bytes = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the backup was cut off: {e}"))?
    {
        out.write_all(&chunk)
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        bytes += chunk.len() as u64;
    }
    out.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", part.display()))?;
    std::fs::rename(&part, file)
        .map_err(|e| format!("cannot rename to {}: {e}", file.display()))?;
    Ok((records, bytes))
}

pub fn restore(args: RestoreArgs) -> ExitCode {
    let result = match (&args.to, &args.store) {
        (Some(to), _) => {
            runtime().and_then(|rt| rt.block_on(restore_into(&args.file, to, &args.postgres)))
        }
        (None, Some(store)) => approval_gate_actors::store::backup::restore(&args.file, store)
            .map(|stats| {
                format!(
                    "restored {} records into {}; start the service with store.path = {}",
                    stats.records,
                    store.display(),
                    store.display()
                )
            })
            .map_err(|e| e.to_string()),
        // clap requires one of the two.
        (None, None) => Err("give --store PATH or --to URL".into()),
    };
    report(result)
}
