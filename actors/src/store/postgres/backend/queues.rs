//! [`QueueStore`] on PostgreSQL: the `outbox` table (one row per entry and channel, its
//! `bigserial` seq the order), `dead_letters`, `approval_events`, `telegram_messages`, `meta`
//! and the poller's lease row for the update offset.
//!
//! One instance delivers: the holder of the poller's lease ([`QueueStore::leading`]), so a
//! row needs no claim of its own, and Telegram's pacing, the group budget and the breaker live
//! in one process for the whole cluster. Should the leader die mid-delivery, the next one reads
//! the same rows: an entry delivered but not yet removed is delivered again (at least once),
//! none is lost. Rows are visible only once their transaction committed, so a notifier may
//! deliver whatever it reads ([`QueueStore::visible_is_durable`]).

use std::sync::atomic::Ordering;

use super::{PgStore, client, db_error};
use crate::domain::{ApprovalId, AuditEvent, TelegramMessageRef};
use crate::store::queues::{Durable, QueueStore};
use crate::store::{Channel, Commit, DeadLetter, QueueEntry, StoreError, queue};

/// The notifiers' handle on a [`PgStore`].
#[derive(Clone)]
pub struct PgQueues(pub(super) PgStore);

pub(super) fn seq_of(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

pub(super) fn channel_code(channel: Channel) -> i16 {
    i16::from(channel.byte())
}

pub(super) fn channel_of(code: i16) -> Result<Channel, StoreError> {
    u8::try_from(code)
        .ok()
        .and_then(Channel::from_byte)
        .ok_or_else(|| StoreError::Postgres(format!("unknown channel {code}")))
}

pub(super) fn as_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl PgQueues {
    /// Every entry queued for every channel, in one INSERT on `pool`: each entry's
    /// (channel, seq) list, in order.
    fn insert_entries(
        &self,
        pool: deadpool_postgres::Pool,
        channels: &[Channel],
        entries: &[&QueueEntry],
    ) -> Result<Vec<Vec<(Channel, u64)>>, StoreError> {
        let mut codes: Vec<i16> = Vec::with_capacity(channels.len() * entries.len());
        let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(codes.capacity());
        for entry in entries {
            let encoded = queue::encode(entry)?;
            for &channel in channels {
                codes.push(channel_code(channel));
                bytes.push(encoded.clone());
            }
        }
        let mut rows: Vec<(i16, i64)> = self.0.run_write(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "INSERT INTO outbox (channel, entry)
                     SELECT c, e FROM unnest($1::smallint[], $2::bytea[]) WITH ORDINALITY AS t(c, e, i)
                     ORDER BY i
                     RETURNING channel, seq",
                    &[&codes, &bytes],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })?;
        // Sequence numbers are issued in insertion order: sorted, they follow the input.
        rows.sort_by_key(|&(_, seq)| seq);
        rows.chunks(channels.len().max(1))
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|&(code, seq)| Ok((channel_of(code)?, seq_of(seq))))
                    .collect()
            })
            .collect()
    }

    /// The dead-letter count health shows, moved by `delta` at once (the background count
    /// catches up with other instances'); a background count that raced this is not stored.
    pub(super) fn dead_letters_changed(&self, delta: i64) {
        let inner = &self.0.inner;
        inner.dead_letter_changes.fetch_add(1, Ordering::SeqCst);
        inner.dead_letters.fetch_add(delta, Ordering::Relaxed);
    }

    fn record_rows(&self, rows: Vec<(ApprovalId, Vec<AuditEvent>)>) {
        let pool = self.0.pool();
        // Nobody waits on history: written in the background (one statement for the whole
        // batch), a failure logged.
        self.0.inner.handle.spawn(async move {
            let written = async {
                let mut ids: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
                let mut ats: Vec<i64> = Vec::with_capacity(rows.len());
                let mut texts: Vec<String> = Vec::with_capacity(rows.len());
                for (id, events) in rows {
                    ats.push(events.iter().map(|e| e.at_ms).max().unwrap_or(0));
                    let json = serde_json::to_string(&events)
                        .map_err(|e| StoreError::Postgres(e.to_string()))?;
                    texts.push(crate::store::postgres::jsonb_text(&json).into_owned());
                    ids.push(id.to_bytes().to_vec());
                }
                client(&pool)
                    .await?
                    .execute(
                        "INSERT INTO approval_events (approval_id, at_ms, events)
                         SELECT id, at, (ev::text)::jsonb
                         FROM unnest($1::bytea[], $2::bigint[], $3::text[]) WITH ORDINALITY
                             AS t(id, at, ev, i)
                         ORDER BY i",
                        &[&ids, &ats, &texts],
                    )
                    .await
                    .map_err(db_error)?;
                Ok::<(), StoreError>(())
            };
            if let Err(error) = written.await {
                tracing::error!(%error, "cannot record history entries");
            }
        });
    }
}

impl QueueStore for PgQueues {
    fn seqs_after(
        &self,
        channel: Channel,
        seq: u64,
        limit: usize,
        take: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<u64>, StoreError> {
        let pool = self.0.pool();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let seqs: Vec<u64> = self.0.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT seq FROM outbox WHERE channel = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&channel_code(channel), &as_i64(seq), &limit],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| seq_of(row.get(0))).collect())
        })?;
        Ok(seqs.into_iter().take_while(|&seq| take(seq)).collect())
    }

    fn visit(
        &self,
        channel: Channel,
        visit: &mut dyn FnMut(u64, QueueEntry),
    ) -> Result<(), StoreError> {
        let mut after = 0i64;
        loop {
            let pool = self.0.pool();
            let page: Vec<(i64, Vec<u8>)> = self.0.run(async move {
                let rows = client(&pool)
                    .await?
                    .query(
                        "SELECT seq, entry FROM outbox WHERE channel = $1 AND seq > $2
                         ORDER BY seq LIMIT 1000",
                        &[&channel_code(channel), &after],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            })?;
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            after = last;
            for (seq, entry) in page {
                visit(seq_of(seq), queue::decode(&seq.to_be_bytes(), &entry)?);
            }
        }
    }

    fn front(
        &self,
        channel: Channel,
        limit: usize,
        take: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, QueueEntry)>, StoreError> {
        let pool = self.0.pool();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>)> = self.0.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT seq, entry FROM outbox WHERE channel = $1 ORDER BY seq LIMIT $2",
                    &[&channel_code(channel), &limit],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, entry) in rows {
            if !take(seq_of(seq)) {
                break;
            }
            out.push((seq_of(seq), queue::decode(&seq.to_be_bytes(), &entry)?));
        }
        Ok(out)
    }

    fn clock(&self) -> crate::clock::Clock {
        self.0.inner.clock.clone()
    }

    fn scan(&self, channel: Channel) -> Result<(usize, u64), StoreError> {
        let pool = self.0.pool();
        self.0.run(async move {
            let row = client(&pool)
                .await?
                .query_one(
                    "SELECT count(*), coalesce(max(seq), 0) FROM outbox WHERE channel = $1",
                    &[&channel_code(channel)],
                )
                .await
                .map_err(db_error)?;
            let count: i64 = row.get(0);
            Ok((usize::try_from(count).unwrap_or(0), seq_of(row.get(1))))
        })
    }

    fn get(&self, channel: Channel, seq: u64) -> Result<Option<QueueEntry>, StoreError> {
        let pool = self.0.pool();
        let row: Option<Vec<u8>> = self.0.run(async move {
            let row = client(&pool)
                .await?
                .query_opt(
                    "SELECT entry FROM outbox WHERE channel = $1 AND seq = $2",
                    &[&channel_code(channel), &as_i64(seq)],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| row.get(0)))
        })?;
        row.map(|entry| queue::decode(&seq.to_be_bytes(), &entry))
            .transpose()
    }

    fn enqueue_to(
        &self,
        channels: &[Channel],
        entry: &QueueEntry,
    ) -> Result<Vec<(Channel, u64)>, StoreError> {
        self.insert_entries(self.0.pool(), channels, &[entry])?
            .pop()
            .ok_or_else(|| StoreError::Queue("nothing was queued".into()))
    }

    fn enqueue_many(
        &self,
        channels: &[Channel],
        entries: &[&QueueEntry],
    ) -> Result<Vec<Vec<(Channel, u64)>>, StoreError> {
        // A hand-over to the fallback channels: its Telegram entries stay queued until
        // Telegram delivers them, and a restarted leader hands over again whatever a database
        // crash lost, so this commit need not wait for the WAL flush (the relaxed pool).
        self.insert_entries(self.0.relaxed_pool(), channels, entries)
    }

    /// On the relaxed connections (see `Inner::relaxed`).
    fn ack(&self, channel: Channel, seqs: &[u64]) -> Result<(), StoreError> {
        let pool = self.0.relaxed_pool();
        let seqs: Vec<i64> = seqs.iter().map(|&s| as_i64(s)).collect();
        self.0.run_ack(async move {
            client(&pool)
                .await?
                .execute(
                    "DELETE FROM outbox WHERE channel = $1 AND seq = ANY($2)",
                    &[&channel_code(channel), &seqs],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn bury(&self, channel: Channel, seq: u64, reason: &str) -> Result<(), StoreError> {
        self.bury_entry(channel, seq, reason)
    }

    fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.list_dead_letters(after, limit)
    }

    fn requeue(&self, id: u64) -> Result<Option<(Channel, u64)>, StoreError> {
        self.requeue_letter(id)
    }

    fn requeue_channel(&self, channel: Channel) -> Result<Vec<(Channel, u64)>, StoreError> {
        self.requeue_letters_of(channel)
    }

    fn record(&self, id: ApprovalId, event: &AuditEvent) {
        self.record_rows(vec![(id, vec![event.clone()])]);
    }

    fn record_all(&self, events: Vec<(ApprovalId, AuditEvent)>) {
        self.record_rows(
            events
                .into_iter()
                .map(|(id, event)| (id, vec![event]))
                .collect(),
        );
    }

    fn oldest_ms(&self, channel: Channel) -> Result<Option<i64>, StoreError> {
        let Some(&seq) = self.front_seqs(channel, 1, &|_| true)?.first() else {
            return Ok(None);
        };
        Ok(self.get(channel, seq)?.map(|entry| entry.happened_ms()))
    }

    /// Counted in the background every second (health asks on every ping and must not wait
    /// on the database).
    fn dead_letter_count(&self) -> i64 {
        self.0.inner.dead_letters.load(Ordering::Relaxed)
    }

    /// Every write above committed before it returned.
    fn commit(&self) -> Commit {
        super::approvals::resolved(Ok(()))
    }

    fn until_durable(&self) -> Durable {
        Box::pin(async {})
    }

    fn until_enqueued(&self) -> Durable {
        Box::pin(async {})
    }

    fn message_refs(&self, id: ApprovalId) -> Vec<TelegramMessageRef> {
        self.messages_of(id)
    }

    fn add_message_ref(
        &self,
        id: ApprovalId,
        message: TelegramMessageRef,
    ) -> Result<bool, StoreError> {
        self.add_message(id, message)
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta_value(key)
    }

    fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.meta_first(key, value)
    }

    fn load_offset(&self) -> Result<i64, StoreError> {
        self.stored_offset()
    }

    fn save_offset(&self, offset: i64) -> Result<bool, StoreError> {
        self.fenced_offset(offset)
    }

    fn leading(&self) -> bool {
        self.0.inner.leading.load(Ordering::Relaxed)
    }

    fn shared(&self) -> bool {
        true
    }

    fn visible_is_durable(&self) -> bool {
        true
    }
}
