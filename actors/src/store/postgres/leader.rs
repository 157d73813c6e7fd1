//! The Telegram poller's lease: which instance may call getUpdates, and the update offset it
//! alone may advance.
//!
//! Owns the one row of `telegram_leader`. A lease is taken or renewed by one conditional upsert,
//! timed by the database's clock (instances' clocks may disagree; the database's is the one they
//! share). Each new holder gets a higher epoch, and the offset is written only under the current
//! holder's epoch, so a leader that was paused past its lease (a GC pause, a frozen VM) and wakes
//! up cannot move the offset of the leader that replaced it: its write is fenced and it stops.
//! This is a lease row rather than a session advisory lock so that it also works behind a
//! transaction-pooling proxy (PgBouncer), where a session lock would be lost with the session.

use std::time::Duration;

use tokio_postgres::GenericClient;

/// The row's key: one poller per bot and database.
const ROW: &str = "poller";

/// A lease this instance holds, as the database granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    /// Raised each time the lease changes hands (or lapses and is taken again).
    pub epoch: i64,
    /// The database's clock, in milliseconds since the epoch, at which the lease lapses.
    pub until_ms: i64,
}

/// Who holds the lease now, as anyone may read it (for `/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub holder: String,
    pub epoch: i64,
    pub until_ms: i64,
    pub now_ms: i64,
    pub update_offset: i64,
}

/// The database's clock in milliseconds, as SQL.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Takes the lease if it is free or lapsed, or renews it if `holder` has it. `None`: another
/// instance holds a live lease.
pub async fn acquire(
    client: &impl GenericClient,
    holder: &str,
    lease: Duration,
) -> Result<Option<Lease>, tokio_postgres::Error> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let sql = format!(
        "INSERT INTO telegram_leader AS l (name, holder, epoch, lease_until_ms)
         VALUES ($1, $2, 1, {NOW_MS} + $3)
         ON CONFLICT (name) DO UPDATE
            SET holder = EXCLUDED.holder,
                epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.lease_until_ms > {NOW_MS}
                             THEN l.epoch ELSE l.epoch + 1 END,
                lease_until_ms = EXCLUDED.lease_until_ms
            WHERE l.holder = EXCLUDED.holder OR l.lease_until_ms <= {NOW_MS}
         RETURNING holder, epoch, lease_until_ms"
    );
    let row = client.query_opt(&sql, &[&ROW, &holder, &lease_ms]).await?;
    Ok(row.map(|row| Lease {
        holder: row.get(0),
        epoch: row.get(1),
        until_ms: row.get(2),
    }))
}

/// Advances the update offset under `lease`'s epoch; it never moves backwards. `false`: the
/// lease was lost (another instance took it), so the caller must stop polling.
pub async fn advance_offset(
    client: &impl GenericClient,
    lease: &Lease,
    offset: i64,
) -> Result<bool, tokio_postgres::Error> {
    let changed = client
        .execute(
            "UPDATE telegram_leader SET update_offset = GREATEST(update_offset, $4)
             WHERE name = $1 AND holder = $2 AND epoch = $3",
            &[&ROW, &lease.holder, &lease.epoch, &offset],
        )
        .await?;
    Ok(changed == 1)
}

/// Gives the lease up (on shutdown), so that another instance takes over at once instead of
/// after the lease lapses. A lease already lost is left alone.
pub async fn release(
    client: &impl GenericClient,
    lease: &Lease,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE telegram_leader SET lease_until_ms = 0
             WHERE name = $1 AND holder = $2 AND epoch = $3",
            &[&ROW, &lease.holder, &lease.epoch],
        )
        .await?;
    Ok(())
}

/// The lease as it stands, if it was ever taken.
pub async fn state(
    client: &impl GenericClient,
) -> Result<Option<LeaderState>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT holder, epoch, lease_until_ms, {NOW_MS}, update_offset
         FROM telegram_leader WHERE name = $1"
    );
    let row = client.query_opt(&sql, &[&ROW]).await?;
    Ok(row.map(|row| LeaderState {
        holder: row.get(0),
        epoch: row.get(1),
        until_ms: row.get(2),
        now_ms: row.get(3),
        update_offset: row.get(4),
    }))
}
