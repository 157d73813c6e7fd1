//! Moving back from PostgreSQL to sled: every table written as a sled backup file, which
//! `approval-gate restore` turns into a sled store.
//!
//! Owns the mapping from the tables to sled's trees (the reverse of `import.rs`), including the
//! two index trees sled needs and PostgreSQL does not keep (`by_status`, `idempotency`), and a
//! sequence floor above every outbox, history and dead-letter number, so the restored store
//! never issues a number its data already holds. Reads one snapshot (a repeatable-read,
//! read-only transaction), so the file is consistent while instances keep running.

use std::path::Path;

use tokio_postgres::{Client, IsolationLevel};

use super::import::ImportError;
use crate::store::sled::backup::{BackupStats, Writer};
use crate::store::sled::{idempotency_key, index_key};
use crate::store::{Channel, codec, queue};

/// `meta` key of sled's sequence floor (`sled/mod.rs`).
const SEQ_FLOOR: &str = "seq_floor";

/// Writes the database behind `client` to a sled backup file at `path`.
pub async fn export_backup(client: &mut Client, path: &Path) -> Result<BackupStats, ImportError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut out = Writer::create(path)?;
    let mut floor: u64 = 0;
    let mut raise = |seq: i64| floor = floor.max(u64::try_from(seq).unwrap_or(0));

    for row in tx
        .query("SELECT record FROM approvals ORDER BY id", &[])
        .await?
    {
        let record: Vec<u8> = row.get(0);
        let approval = codec::decode(&record).map_err(|e| ImportError::Record {
            tree: "approvals".into(),
            key: String::new(),
            reason: e.to_string(),
        })?;
        let id = approval.id.to_bytes();
        out.record("approvals", &id, &record)?;
        out.record("by_status", &index_key(approval.status, approval.id), &[])?;
        // sled holds a key for as long as the approval exists, ended or not.
        if let Some(key) = &approval.idempotency_key {
            out.record(
                "idempotency",
                &idempotency_key(&approval.requested_by, key),
                &id,
            )?;
        }
    }
    for row in tx
        .query(
            "SELECT approval_id, seq, events::text FROM approval_events ORDER BY approval_id, seq",
            &[],
        )
        .await?
    {
        let (id, seq, events): (Vec<u8>, i64, String) = (row.get(0), row.get(1), row.get(2));
        raise(seq);
        let mut key = id;
        key.extend_from_slice(&u64::try_from(seq).unwrap_or(0).to_be_bytes());
        out.record("events", &key, events.as_bytes())?;
    }
    for row in tx
        .query(
            "SELECT channel, seq, entry FROM outbox ORDER BY channel, seq",
            &[],
        )
        .await?
    {
        let (channel, seq, entry): (i16, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        raise(seq);
        let channel = channel_of(channel)?;
        let seq = u64::try_from(seq).unwrap_or(0);
        out.record("queues", &queue::key(channel, seq), &entry)?;
    }
    for row in tx
        .query(
            "SELECT seq, channel, reason, entry, dead_at_ms FROM dead_letters ORDER BY seq",
            &[],
        )
        .await?
    {
        let (seq, channel, reason, entry, dead_at_ms): (i64, i16, String, Vec<u8>, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        raise(seq);
        let value = queue::encode_dead_at(channel_of(channel)?, &reason, dead_at_ms, &entry)?;
        out.record(
            "dead_letters",
            &u64::try_from(seq).unwrap_or(0).to_be_bytes(),
            &value,
        )?;
    }
    for row in tx
        .query("SELECT approval_id, refs FROM telegram_messages", &[])
        .await?
    {
        let (id, refs): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
        out.record("telegram_messages", &id, &refs)?;
    }
    for row in tx
        .query("SELECT id, grant_json::text FROM grants ORDER BY id", &[])
        .await?
    {
        let (id, json): (String, String) = (row.get(0), row.get(1));
        out.record("grants", id.as_bytes(), json.as_bytes())?;
    }
    for row in tx.query("SELECT name, value FROM meta", &[]).await? {
        let (name, value): (String, Vec<u8>) = (row.get(0), row.get(1));
        if name == SEQ_FLOOR {
            let before = <[u8; 8]>::try_from(value.as_slice()).map_or(0, u64::from_be_bytes);
            floor = floor.max(before);
            continue;
        }
        out.record("meta", name.as_bytes(), &value)?;
    }
    out.record("meta", SEQ_FLOOR.as_bytes(), &(floor + 1).to_be_bytes())?;
    tx.commit().await?;
    Ok(out.finish()?)
}

fn channel_of(byte: i16) -> Result<Channel, ImportError> {
    u8::try_from(byte)
        .ok()
        .and_then(Channel::from_byte)
        .ok_or_else(|| ImportError::Record {
            tree: "outbox".into(),
            key: byte.to_string(),
            reason: "an unknown channel".into(),
        })
}
