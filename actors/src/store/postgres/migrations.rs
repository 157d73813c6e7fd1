//! The PostgreSQL schema's versions: embedded SQL files, applied in order at start-up.
//!
//! Owns the `schema_migrations` table and nothing else. Every instance calls [`migrate`] when it
//! starts; the migrations run in one transaction that first takes a transaction-scoped advisory
//! lock, so of several instances starting together exactly one applies them and the others wait
//! and then find nothing to do. A transaction-scoped lock (not a session lock) is what works
//! behind a transaction-pooling proxy such as PgBouncer. A binary older than the schema refuses
//! to run on it rather than write rows it does not understand.

use tokio_postgres::Client;

/// One schema version: its number, a name for the log and `schema_migrations`, and its SQL.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    sql: &'static str,
}

/// Every version this binary knows, in order. Append only: a released file is never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "escalation steps",
        sql: include_str!("migrations/0002_escalation_steps.sql"),
    },
];

/// The advisory lock key all instances serialise their migrations on ("apgate-m" as bytes).
const LOCK_KEY: i64 = 0x6170_6761_7465_2d6d;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database's schema is version {found}, newer than this binary knows (up to \
         {supported}): run the newer approval-gate, or restore a backup taken before the upgrade"
    )]
    SchemaTooNew { found: i32, supported: i32 },
    #[error("migrating the schema to version {version} ({name}) failed: {source}")]
    Apply {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("cannot read or lock the schema version: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// What [`migrate`] did: the version found and the version left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// The newest version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema up to [`latest`], or refuses a newer one. Safe to call from any number of
/// instances at once.
pub async fn migrate(client: &mut Client) -> Result<Migrated, MigrationError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let from: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if from > latest() {
        return Err(MigrationError::SchemaTooNew {
            found: from,
            supported: latest(),
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        let failed = |source| MigrationError::Apply {
            version: migration.version,
            name: migration.name,
            source,
        };
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "PostgreSQL schema migrated"
        );
    }
    tx.commit().await?;
    Ok(Migrated {
        from,
        to: latest().max(from),
    })
}
