//! `approval-gate backup` and `approval-gate restore`: take an online backup from a running
//! service (`GET /api/admin/backup`, operator token) into a file, and rebuild a store from one,
//! offline, into a new or empty folder.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::agent_client::{AgentClient, ServiceArgs, runtime};

const OPERATOR_TOKEN_ENV: &str = "APPROVAL_GATE_OPERATOR_TOKEN";

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the backup (written to FILE.part, then renamed).
    pub file: PathBuf,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A file written by `approval-gate backup`.
    pub file: PathBuf,
    /// The store folder to create (must not exist, or be empty). The service must not run on it.
    #[arg(long, value_name = "PATH")]
    pub store: PathBuf,
}

pub fn backup(args: BackupArgs) -> ExitCode {
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
    match approval_gate_actors::store::backup::restore(&args.file, &args.store) {
        Ok(stats) => {
            eprintln!(
                "restored {} records into {}; start the service with store.path = {}",
                stats.records,
                args.store.display(),
                args.store.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
