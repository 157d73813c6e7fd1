//! Moving from sled to PostgreSQL: a sled backup file (`approval-gate backup`) loaded into an
//! empty PostgreSQL schema, in one transaction.
//!
//! Owns the mapping from sled's trees to the tables and nothing else; the file format is the
//! sled backend's (`sled/backup.rs`, read with its [`Reader`]). Pending approvals keep their
//! deadlines (they are columns of the row), history, grants, queued notifications, dead letters,
//! the Telegram message log and `meta` (the update offset, the callback secret, the sequence
//! floor) come along; the two index trees (`idempotency`, `by_status`) are not copied, since
//! PostgreSQL indexes the approvals' own columns. The import refuses a database that holds
//! approvals already, and a file that is not a complete backup: either all of it is imported or
//! nothing.

use std::path::Path;

use tokio_postgres::{Client, Transaction};

use super::approvals::status_code;
use crate::domain::{ApprovalId, AuditEvent, Grant};
use crate::store::sled::backup::Reader;
use crate::store::{StoreError, codec, queue};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the database already holds {0} approvals: import only into an empty one")]
    NotEmpty(i64),
    #[error("{0}")]
    Backup(#[from] StoreError),
    #[error("record {key} of {tree} is unreadable: {reason}")]
    Record {
        tree: String,
        key: String,
        reason: String,
    },
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// What an import loaded, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub approvals: u64,
    pub events: u64,
    pub outbox: u64,
    pub dead_letters: u64,
    pub telegram_messages: u64,
    pub grants: u64,
    pub meta: u64,
    /// Records of the index trees, rebuilt by PostgreSQL rather than copied.
    pub skipped: u64,
}

/// Loads the backup at `path` into the (migrated, empty) database behind `client`. The file is
/// read on the calling thread: this is an offline, one-shot step, not a request path.
pub async fn import_backup(client: &mut Client, path: &Path) -> Result<Imported, ImportError> {
    let mut reader = Reader::open(path)?;
    let tx = client.transaction().await?;
    let existing: i64 = tx
        .query_one("SELECT count(*) FROM approvals", &[])
        .await?
        .get(0);
    if existing > 0 {
        return Err(ImportError::NotEmpty(existing));
    }
    let mut imported = Imported::default();
    while let Some((tree, key, value)) = reader.next_record()? {
        import_record(&tx, &tree, &key, &value, &mut imported).await?;
    }
    tx.commit().await?;
    Ok(imported)
}

async fn import_record(
    tx: &Transaction<'_>,
    tree: &str,
    key: &[u8],
    value: &[u8],
    imported: &mut Imported,
) -> Result<(), ImportError> {
    let unreadable = |reason: String| ImportError::Record {
        tree: tree.to_string(),
        key: queue::hex(key),
        reason,
    };
    match tree {
        "approvals" => {
            let approval = codec::decode(value).map_err(|e| unreadable(e.to_string()))?;
            tx.execute(
                "INSERT INTO approvals (id, status, requested_by, agent, session_id, tool_name,
                     tool_input, idempotency_key, created_at_ms, expires_at_ms, decided_at_ms,
                     record, next_step_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, ($7::text)::jsonb, $8, $9, $10, $11, $12, $13)",
                &[
                    &approval.id.to_bytes().as_slice(),
                    &status_code(approval.status),
                    &approval.requested_by,
                    &approval.agent.as_deref().unwrap_or(""),
                    &approval.session_id,
                    &approval.tool_name,
                    &super::jsonb_text(&approval.tool_input).as_ref(),
                    &approval.idempotency_key,
                    &approval.created_at.timestamp_millis(),
                    &approval.expires_at.timestamp_millis(),
                    &approval.decided_at.map(|at| at.timestamp_millis()),
                    &value,
                    &approval.next_escalation_ms,
                ],
            )
            .await?;
            imported.approvals += 1;
        }
        "events" => {
            let id = key
                .get(..16)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(ApprovalId::from_bytes)
                .ok_or_else(|| unreadable("a history key shorter than an id".into()))?;
            // One event, or several observed together (an array).
            let events: Vec<AuditEvent> = serde_json::from_slice::<Vec<AuditEvent>>(value)
                .or_else(|_| serde_json::from_slice::<AuditEvent>(value).map(|e| vec![e]))
                .map_err(|e| unreadable(e.to_string()))?;
            let at_ms = events.iter().map(|e| e.at_ms).max().unwrap_or(0);
            let json = serde_json::to_string(&events).map_err(|e| unreadable(e.to_string()))?;
            let json = super::jsonb_text(&json).into_owned();
            tx.execute(
                "INSERT INTO approval_events (approval_id, at_ms, events)
                 VALUES ($1, $2, ($3::text)::jsonb)",
                &[&id.to_bytes().as_slice(), &at_ms, &json],
            )
            .await?;
            imported.events += 1;
        }
        "queues" => {
            let channel = i16::from(
                *key.first()
                    .ok_or_else(|| unreadable("an empty queue key".into()))?,
            );
            // Keys are channel ++ sequence: the file lists each channel in order, and the
            // outbox's own sequence keeps that order.
            tx.execute(
                "INSERT INTO outbox (channel, entry) VALUES ($1, $2)",
                &[&channel, &value],
            )
            .await?;
            imported.outbox += 1;
        }
        "dead_letters" => {
            let dead = queue::decode_dead(key, value).map_err(|e| unreadable(e.to_string()))?;
            let entry = queue::encode(&dead.entry).map_err(|e| unreadable(e.to_string()))?;
            let seq = i64::try_from(dead.id).map_err(|e| unreadable(e.to_string()))?;
            tx.execute(
                "INSERT INTO dead_letters (seq, channel, reason, entry, dead_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &seq,
                    &i16::from(dead.channel.byte()),
                    &dead.reason,
                    &entry,
                    &dead.dead_at_ms,
                ],
            )
            .await?;
            imported.dead_letters += 1;
        }
        "telegram_messages" => {
            tx.execute(
                "INSERT INTO telegram_messages (approval_id, refs) VALUES ($1, $2)",
                &[&key, &value],
            )
            .await?;
            imported.telegram_messages += 1;
        }
        "grants" => {
            let grant: Grant =
                serde_json::from_slice(value).map_err(|e| unreadable(e.to_string()))?;
            let json = super::jsonb_text(&String::from_utf8_lossy(value)).into_owned();
            tx.execute(
                "INSERT INTO grants (id, grant_json, expires_at_ms)
                 VALUES ($1, ($2::text)::jsonb, $3)",
                &[&grant.id, &json, &grant.expires_at_ms],
            )
            .await?;
            imported.grants += 1;
        }
        "meta" => {
            let name = String::from_utf8(key.to_vec()).map_err(|e| unreadable(e.to_string()))?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2)",
                &[&name, &value],
            )
            .await?;
            imported.meta += 1;
        }
        "idempotency" | "by_status" => imported.skipped += 1,
        other => {
            return Err(ImportError::Record {
                tree: other.to_string(),
                key: queue::hex(key),
                reason: "a tree this version does not know (a backup of a newer version?)".into(),
            });
        }
    }
    Ok(())
}
