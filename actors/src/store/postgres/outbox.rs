//! The notification outboxes on PostgreSQL: entries written with the change they announce
//! (`approvals.rs`), claimed by whichever instance's notifier gets there first, and removed once
//! delivered.
//!
//! Owns the SQL of `outbox` and `dead_letters`. A claim is a lease, not a lock held open: the
//! rows are marked with the claimant and a deadline on the database's clock, chosen with
//! `FOR UPDATE SKIP LOCKED` so that concurrent claimants never take the same row, and a
//! claimant that dies mid-delivery leaves nothing claimed past its lease: another instance takes
//! the entries then. Delivery is therefore at least once; completing an entry whose lease was
//! lost says so, so the caller can tell a duplicate might have gone out.

use std::time::Duration;

use tokio_postgres::GenericClient;

/// The database's clock in milliseconds, as SQL.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// An entry this instance holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub seq: i64,
    pub entry: Vec<u8>,
    /// Claims so far, this one included.
    pub attempts: i32,
}

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub seq: i64,
    pub channel: i16,
    pub reason: String,
    pub entry: Vec<u8>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Leases up to `limit` deliverable entries of `channel` to `holder` for `lease`, oldest first.
pub async fn claim(
    client: &impl GenericClient,
    channel: i16,
    holder: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE outbox SET claimed_by = $2, lease_until_ms = {NOW_MS} + $3, attempts = attempts + 1
         WHERE seq IN (
             SELECT seq FROM outbox
             WHERE channel = $1 AND not_before_ms <= {NOW_MS}
               AND (lease_until_ms IS NULL OR lease_until_ms <= {NOW_MS})
             ORDER BY seq
             LIMIT $4
             FOR UPDATE SKIP LOCKED)
         RETURNING seq, entry, attempts"
    );
    let rows = client
        .query(&sql, &[&channel, &holder, &millis(lease), &limit])
        .await?;
    let mut claimed: Vec<Claimed> = rows
        .iter()
        .map(|row| Claimed {
            seq: row.get(0),
            entry: row.get(1),
            attempts: row.get(2),
        })
        .collect();
    claimed.sort_by_key(|c| c.seq);
    Ok(claimed)
}

/// Removes a delivered entry. `false`: this holder's lease had lapsed and another instance
/// holds the entry now (it may deliver it again).
pub async fn complete(
    client: &impl GenericClient,
    seq: i64,
    holder: &str,
) -> Result<bool, tokio_postgres::Error> {
    let removed = client
        .execute(
            "DELETE FROM outbox WHERE seq = $1 AND claimed_by = $2",
            &[&seq, &holder],
        )
        .await?;
    Ok(removed == 1)
}

/// Gives a failed entry back, deliverable again after `delay`. `false`: the lease was lost.
pub async fn retry_later(
    client: &impl GenericClient,
    seq: i64,
    holder: &str,
    delay: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE outbox SET claimed_by = NULL, lease_until_ms = NULL, not_before_ms = {NOW_MS} + $3
         WHERE seq = $1 AND claimed_by = $2"
    );
    let changed = client
        .execute(&sql, &[&seq, &holder, &millis(delay)])
        .await?;
    Ok(changed == 1)
}

/// Moves an entry that will not be delivered to the dead letters, with why. `false`: the
/// lease was lost (the entry stays where it is).
pub async fn dead_letter(
    client: &impl GenericClient,
    seq: i64,
    holder: &str,
    reason: &str,
) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "WITH gone AS (DELETE FROM outbox WHERE seq = $1 AND claimed_by = $2
                       RETURNING seq, channel, entry)
         INSERT INTO dead_letters (seq, channel, reason, entry, dead_at_ms)
         SELECT seq, channel, $3, entry, {NOW_MS} FROM gone"
    );
    let moved = client.execute(&sql, &[&seq, &holder, &reason]).await?;
    Ok(moved == 1)
}

/// Puts every dead letter of `channel` back in its outbox (new entries, fresh attempts), in one
/// statement; returns how many.
pub async fn requeue_channel(
    client: &impl GenericClient,
    channel: i16,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "WITH back AS (DELETE FROM dead_letters WHERE channel = $1 RETURNING seq, entry)
             INSERT INTO outbox (channel, entry)
             SELECT $1, entry FROM back ORDER BY seq",
            &[&channel],
        )
        .await
}

/// The dead letters of `channel`, oldest first.
pub async fn dead_letters(
    client: &impl GenericClient,
    channel: i16,
) -> Result<Vec<Dead>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT seq, channel, reason, entry FROM dead_letters WHERE channel = $1 ORDER BY seq",
            &[&channel],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Dead {
            seq: row.get(0),
            channel: row.get(1),
            reason: row.get(2),
            entry: row.get(3),
        })
        .collect())
}
