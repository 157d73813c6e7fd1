//! The PostgreSQL side of `approval-gate restore --to` and `approval-gate backup --from`:
//! moving a store between sled and PostgreSQL through a backup file.
//!
//! Owns the command-line form of a database connection (`--to`/`--from`, `--pg-tls`,
//! `--pg-ca-file`) and nothing of the mapping, which is the store's (`store/postgres/import.rs`,
//! `export.rs`). A URL on the command line is visible to other local users in the process list:
//! `file:/path` reads it from the first line of that file instead, as secrets in the
//! configuration do. The URL is never printed.

use std::path::{Path, PathBuf};

use approval_gate_actors::store::postgres::{self, PgSettings, PgTls, TlsMode, export, import};
use clap::Args;

use crate::settings::SECRET_FILE_PREFIX;

#[derive(Args, Debug, Clone)]
pub struct PgArgs {
    /// TLS to PostgreSQL: disable, require (encrypted; with --pg-ca-file the chain is checked,
    /// not the name) or verify-full (the chain and the host name).
    #[arg(long = "pg-tls", value_name = "MODE", default_value = "disable", value_parser = parse_tls)]
    pub tls: TlsMode,
    /// PEM file of the certificate authorities to check PostgreSQL's certificate against.
    #[arg(long = "pg-ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

fn parse_tls(value: &str) -> Result<TlsMode, String> {
    match value {
        "disable" => Ok(TlsMode::Disable),
        "require" => Ok(TlsMode::Require),
        "verify-full" => Ok(TlsMode::VerifyFull),
        other => Err(format!(
            "`{other}` is not a TLS mode: use disable, require or verify-full"
        )),
    }
}

/// The connection URL: as given, or read from the file a `file:` value names.
fn url(given: &str) -> Result<String, String> {
    let Some(path) = given.strip_prefix(SECRET_FILE_PREFIX) else {
        return Ok(given.to_string());
    };
    let path = Path::new(path.trim());
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the PostgreSQL URL from {}: {e}",
            path.display()
        )
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn settings(given: &str, args: &PgArgs) -> Result<PgSettings, String> {
    Ok(PgSettings {
        url: url(given)?,
        pool_size: 1,
        statement_timeout: std::time::Duration::from_secs(300),
        pool_wait: std::time::Duration::from_secs(30),
        tls: PgTls {
            mode: args.tls,
            ca_file: args.ca_file.clone(),
        },
    })
}

fn note_migration(migrated: postgres::migrations::Migrated) {
    if migrated.from != migrated.to {
        eprintln!(
            "PostgreSQL schema migrated from version {} to {}",
            migrated.from, migrated.to
        );
    }
}

/// `restore FILE --to URL`: the backup loaded into an empty PostgreSQL database.
pub async fn restore_into(file: &Path, to: &str, args: &PgArgs) -> Result<String, String> {
    let (mut client, migrated) = postgres::connect_once(&settings(to, args)?)
        .await
        .map_err(|e| e.to_string())?;
    note_migration(migrated);
    let imported = import::import_backup(&mut client, file)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "imported into PostgreSQL: {} approvals, {} history entries, {} queued notifications, \
         {} dead letters, {} grants ({} index records rebuilt by PostgreSQL)",
        imported.approvals,
        imported.events,
        imported.outbox,
        imported.dead_letters,
        imported.grants,
        imported.skipped
    ))
}

/// `backup FILE --from URL`: every table written as a backup file, from one snapshot.
pub async fn backup_from(file: &Path, from: &str, args: &PgArgs) -> Result<String, String> {
    let (mut client, migrated) = postgres::connect_once(&settings(from, args)?)
        .await
        .map_err(|e| e.to_string())?;
    note_migration(migrated);
    let part = file.with_extension("part");
    let stats = export::export_backup(&mut client, &part)
        .await
        .map_err(|e| e.to_string())?;
    std::fs::rename(&part, file)
        .map_err(|e| format!("cannot rename to {}: {e}", file.display()))?;
    Ok(format!(
        "backup of PostgreSQL written to {}: {} records, {} bytes",
        file.display(),
        stats.records,
        stats.bytes
    ))
}
