//! Dead letters on PostgreSQL: an entry moved out of `outbox` into `dead_letters` with its
//! reason, listed for operators, and moved back (one, or all of a channel) in one statement
//! each. Keeps the count health shows (`Inner::dead_letters`) in step with what it changes.

use super::queues::{PgQueues, as_i64, channel_code, channel_of, seq_of};
use super::{client, db_error};
use crate::store::{Channel, DeadLetter, StoreError, queue};

impl PgQueues {
    pub(super) fn bury_entry(
        &self,
        channel: Channel,
        seq: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let pool = self.0.pool();
        let reason = reason.to_string();
        let dead_at_ms = self.0.inner.clock.now_ms();
        let buried = self.0.run_write(async move {
            client(&pool)
                .await?
                .execute(
                    "WITH d AS (DELETE FROM outbox WHERE channel = $1 AND seq = $2
                                RETURNING seq, channel, entry)
                     INSERT INTO dead_letters (seq, channel, reason, entry, dead_at_ms)
                     SELECT seq, channel, $3, entry, $4 FROM d
                     ON CONFLICT (seq) DO NOTHING",
                    &[&channel_code(channel), &as_i64(seq), &reason, &dead_at_ms],
                )
                .await
                .map_err(db_error)
        })?;
        self.dead_letters_changed(i64::try_from(buried).unwrap_or(0));
        Ok(())
    }

    pub(super) fn list_dead_letters(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let pool = self.0.pool();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, i16, String, Vec<u8>, i64)> = self.0.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT seq, channel, reason, entry, dead_at_ms FROM dead_letters
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&as_i64(after), &limit],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect())
        })?;
        rows.into_iter()
            .map(|(seq, channel, reason, entry, dead_at_ms)| {
                Ok(DeadLetter {
                    id: seq_of(seq),
                    channel: channel_of(channel)?,
                    reason,
                    dead_at_ms,
                    entry: queue::decode(&seq.to_be_bytes(), &entry)?,
                })
            })
            .collect()
    }

    pub(super) fn requeue_letter(&self, id: u64) -> Result<Option<(Channel, u64)>, StoreError> {
        let pool = self.0.pool();
        let row: Option<(i16, i64)> = self.0.run_write(async move {
            let row = client(&pool)
                .await?
                .query_opt(
                    "WITH d AS (DELETE FROM dead_letters WHERE seq = $1 RETURNING channel, entry)
                     INSERT INTO outbox (channel, entry) SELECT channel, entry FROM d
                     RETURNING channel, seq",
                    &[&as_i64(id)],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })?;
        if row.is_some() {
            self.dead_letters_changed(-1);
        }
        row.map(|(channel, seq)| Ok((channel_of(channel)?, seq_of(seq))))
            .transpose()
    }

    pub(super) fn requeue_letters_of(
        &self,
        channel: Channel,
    ) -> Result<Vec<(Channel, u64)>, StoreError> {
        let pool = self.0.pool();
        let seqs: Vec<i64> = self.0.run_write(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "WITH d AS (DELETE FROM dead_letters WHERE channel = $1
                                RETURNING seq, channel, entry)
                     INSERT INTO outbox (channel, entry)
                     SELECT channel, entry FROM d ORDER BY seq
                     RETURNING seq",
                    &[&channel_code(channel)],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })?;
        self.dead_letters_changed(-i64::try_from(seqs.len()).unwrap_or(0));
        let mut requeued: Vec<(Channel, u64)> =
            seqs.into_iter().map(|seq| (channel, seq_of(seq))).collect();
        requeued.sort_by_key(|&(_, seq)| seq);
        Ok(requeued)
    }
}
