//! Measuring this instance's offset from the database's clock, which every instance sharing the
//! database decides deadlines by ([`crate::clock`]): a few readings before the store is handed
//! to the actors, then one every few seconds. An offset past a second is logged when it
//! appears and when it goes (hosts kept by NTP are milliseconds apart; a second means one is
//! not).
//!
//! Owns the reading's statement and its schedule; the offset and its filter are `Inner`'s.

use std::sync::Arc;
use std::time::Duration;

use super::{Inner, PgStore, client, db_error};
use crate::clock::Reading;
use crate::store::StoreError;

/// How often the offset is measured again.
const EVERY: Duration = Duration::from_secs(5);

/// Readings taken at start, the shortest round trip's offset kept.
const AT_START: usize = 3;

/// An offset worth an operator's attention.
const WARN_MS: i64 = 1_000;

/// The database's clock, in one round trip (the statement prepared beforehand).
async fn read(pool: &deadpool_postgres::Pool) -> Result<Reading, StoreError> {
    let client = client(pool).await?;
    let statement = client
        .prepare_cached("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
        .await
        .map_err(db_error)?;
    let sent_ms = chrono::Utc::now().timestamp_millis();
    let row = client.query_one(&statement, &[]).await.map_err(db_error)?;
    let received_ms = chrono::Utc::now().timestamp_millis();
    Ok(Reading {
        sent_ms,
        received_ms,
        shared_ms: row.get(0),
    })
}

/// Filter `reading` in and move the clock to the offset it gives.
fn apply(inner: &Inner, reading: Reading) {
    let Ok(mut filter) = inner.clock_filter.lock() else {
        return;
    };
    let offset_ms = filter.add(reading);
    let before_ms = inner.clock.offset_ms();
    inner.clock.set_offset_ms(offset_ms);
    match (before_ms.abs() >= WARN_MS, offset_ms.abs() >= WARN_MS) {
        (false, true) => tracing::warn!(
            offset_ms,
            "this host's clock is {:.1} s {} the database's: deadlines here follow the \
             database's clock, but the host's clock wants fixing (NTP)",
            offset_ms.abs() as f64 / 1000.0,
            if offset_ms > 0 { "behind" } else { "ahead of" }
        ),
        (true, false) => tracing::info!(
            offset_ms,
            "this host's clock agrees with the database's again"
        ),
        _ => {}
    }
}

/// Before the store is used: a few readings, so that the first approval created here is
/// already stamped with the database's time. A database that does not answer leaves the
/// host's clock in use until the periodic readings succeed.
pub(super) fn measure_now(store: &PgStore) {
    let pool = store.pool();
    let readings = store.run_within(Duration::from_secs(10), async move {
        let mut readings = Vec::with_capacity(AT_START);
        for _ in 0..AT_START {
            readings.push(read(&pool).await?);
        }
        Ok(readings)
    });
    match readings {
        Ok(readings) => {
            for reading in readings {
                apply(&store.inner, reading);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the database's clock"),
    }
}

/// Keep measuring, every [`EVERY`], while the store lives.
pub(super) fn spawn(store: &PgStore) {
    let inner = Arc::downgrade(&store.inner);
    let pool = store.pool();
    store.inner.handle.spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            let reading = read(&pool).await;
            let Some(inner) = inner.upgrade() else { return };
            // A failed reading changes nothing: the last offset stays (an outage is reported
            // by the statements that fail).
            if let Ok(reading) = reading {
                apply(&inner, reading);
            }
        }
    });
}
