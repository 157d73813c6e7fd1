//! sled's side of the notifiers' contract ([`QueueStore`]): their own channel's queue entries,
//! dead letters, history entries, commits, the Telegram message log and the gateway's `meta`
//! values. Nothing here touches the approval trees.

use std::sync::atomic::Ordering;

use sled::Transactional;

use sled::transaction::ConflictableTransactionError;

use super::queue_tree::QueueTree;
use super::staging::{Op, Target};
use super::{Channel, Commit, DeadLetter, QueueEntry, SledStore, StoreError, queue, tx_error};
use crate::domain::{ApprovalId, AuditEvent, TelegramMessageRef};
use crate::store::queues::{Durable, QueueStore};

/// Where the Telegram update offset is kept in `meta` (a big-endian i32, as it always was).
const OFFSET_KEY: &str = "telegram_update_offset";

/// What a notifier may do: read and consume its own channel's queue, append (the Telegram
/// gateway hands failed deliveries to the fallback channels), dead-letter, and wait for commits.
#[derive(Clone)]
pub struct SledQueues(pub(super) SledStore);

impl SledQueues {
    fn tree(&self) -> &QueueTree {
        &self.0.inner.queues
    }

    /// Visit `channel`'s entries after `seq`, oldest first, while `visit` returns true (at most
    /// `limit`), from memory and sled alike (see `queue_tree/`).
    fn visit_after(
        &self,
        channel: Channel,
        seq: u64,
        limit: usize,
        mut visit: impl FnMut(u64, &[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let start = queue::key(channel, seq.saturating_add(1));
        let end = queue::key_after(channel);
        let mut failed = None;
        self.tree().visit_range(start, end, limit, |key, value| {
            let Some((_, seq)) = queue::parse_key(key) else {
                return false;
            };
            match visit(seq, key, value) {
                Ok(more) => more,
                Err(error) => {
                    failed = Some(error);
                    false
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Up to `limit` entries at the front of `channel`'s queue, oldest first.
    pub fn front(
        &self,
        channel: Channel,
        limit: usize,
    ) -> Result<Vec<(u64, QueueEntry)>, StoreError> {
        let mut out = Vec::new();
        self.visit_after(channel, 0, limit, |seq, key, value| {
            out.push((seq, queue::decode(key, value)?));
            Ok(true)
        })?;
        Ok(out)
    }

    fn until(&self, first: Commit) -> impl std::future::Future<Output = ()> + 'static {
        const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
        const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
        let queues = self.clone();
        async move {
            let mut commit = first;
            let mut retry_in = FIRST_RETRY;
            while let Err(error) = commit.wait().await {
                tracing::error!(%error, retry_in_ms = retry_in.as_millis() as u64, "queue writes not durable yet; retrying the commit");
                tokio::time::sleep(retry_in).await;
                retry_in = (retry_in * 2).min(MAX_RETRY);
                commit = queues.commit();
            }
        }
    }
}

impl QueueStore for SledQueues {
    fn seqs_after(
        &self,
        channel: Channel,
        seq: u64,
        limit: usize,
        take: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        self.visit_after(channel, seq, limit, |seq, _, _| {
            let more = take(seq);
            if more {
                out.push(seq);
            }
            Ok(more)
        })?;
        Ok(out)
    }

    fn visit(
        &self,
        channel: Channel,
        visit: &mut dyn FnMut(u64, QueueEntry),
    ) -> Result<(), StoreError> {
        self.visit_after(channel, 0, usize::MAX, |seq, key, value| {
            visit(seq, queue::decode(key, value)?);
            Ok(true)
        })
    }

    /// (entries, highest seq) of a channel's queue: read once when its notifier starts.
    fn scan(&self, channel: Channel) -> Result<(usize, u64), StoreError> {
        let mut count = 0;
        let mut last = 0;
        self.visit_after(channel, 0, usize::MAX, |seq, _, _| {
            count += 1;
            last = seq;
            Ok(true)
        })?;
        Ok((count, last))
    }

    fn get(&self, channel: Channel, seq: u64) -> Result<Option<QueueEntry>, StoreError> {
        let key = queue::key(channel, seq);
        self.tree()
            .get(&key)?
            .map(|v| queue::decode(&key, &v))
            .transpose()
    }

    /// Append one entry to several channels' queues, encoded once: each channel's seq.
    fn enqueue_to(
        &self,
        channels: &[Channel],
        entry: &QueueEntry,
    ) -> Result<Vec<(Channel, u64)>, StoreError> {
        let value = queue::encode(entry)?;
        let mut queued = Vec::with_capacity(channels.len());
        let mut ops = Vec::with_capacity(channels.len());
        for &channel in channels {
            let seq = self.0.next_seq()?;
            queued.push((channel, seq));
            ops.push(Op {
                target: Target::Queues,
                key: queue::key(channel, seq).to_vec(),
                value: Some(value.clone()),
            });
        }
        // Nobody reverts a hand-over or an edit: a failed batch puts it back (`stage_kept`).
        self.0.inner.staging.stage_kept(ops);
        Ok(queued)
    }

    /// Delivered: remove. Plain removes, not a sled batch (a batch rolls sled's IO buffer
    /// twice); losing one on a crash only repeats a notification.
    fn ack(&self, channel: Channel, seqs: &[u64]) -> Result<(), StoreError> {
        for &seq in seqs {
            self.tree().remove(&queue::key(channel, seq))?;
        }
        Ok(())
    }

    /// Never deliverable: move to the dead letters with the reason.
    fn bury(&self, channel: Channel, seq: u64, reason: &str) -> Result<(), StoreError> {
        let key = queue::key(channel, seq);
        let inner = &self.0.inner;
        if let Some(value) = self.tree().take_unspilled(&key) {
            // Only the journal holds it: should the dead letter not survive a crash, the
            // replay brings the entry back to be delivered or buried again.
            let dead = queue::encode_dead(channel, reason, &value)?;
            inner.dead.insert(seq.to_be_bytes(), dead)?;
            inner.dead_count.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let Some(value) = self.tree().get(&key)? else {
            return Ok(());
        };
        let dead = queue::encode_dead(channel, reason, &value)?;
        (self.tree().sled(), &inner.dead)
            .transaction(|(q, d)| {
                q.remove(&key[..])?;
                d.insert(&seq.to_be_bytes()[..], dead.as_slice())?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        inner.dead_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Dead letters oldest first, strictly after `after`.
    fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .0
            .inner
            .dead
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
        {
            let (key, value) = item?;
            out.push(queue::decode_dead(&key, &value)?);
        }
        Ok(out)
    }

    /// Put a dead letter back at the end of its channel's queue; `None` if there is no such id.
    fn requeue(&self, id: u64) -> Result<Option<(Channel, u64)>, StoreError> {
        let inner = &self.0.inner;
        let Some(value) = inner.dead.get(id.to_be_bytes())? else {
            return Ok(None);
        };
        let (channel, entry) = queue::dead_parts(&id.to_be_bytes(), &value)?;
        let seq = self.0.next_seq()?;
        self.tree().may_hold(&queue::key(channel, seq));
        (self.tree().sled(), &inner.dead)
            .transaction(|(q, d)| {
                d.remove(&id.to_be_bytes()[..])?;
                q.insert(&queue::key(channel, seq)[..], entry.as_slice())?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        inner.dead_count.fetch_sub(1, Ordering::Relaxed);
        Ok(Some((channel, seq)))
    }

    /// Every dead letter of `channel` back at the end of its queue, oldest first: the channel
    /// and new seq of each. Writes straight to sled (durable with the next full commit).
    fn requeue_channel(&self, channel: Channel) -> Result<Vec<(Channel, u64)>, StoreError> {
        let mut requeued = Vec::new();
        let mut after = 0;
        loop {
            let page = self.dead_letters(after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for letter in page.iter().filter(|letter| letter.channel == channel) {
                if let Some(entry) = self.requeue(letter.id)? {
                    requeued.push(entry);
                }
            }
        }
        Ok(requeued)
    }

    /// Append to an approval's history (a delivery, a tap, a dead letter). Made durable by the
    /// next group commit, or by the flusher within `LAZY_APPLY` when none comes: nobody waits
    /// on history, so it takes no sync of its own.
    fn record(&self, id: ApprovalId, event: &AuditEvent) {
        self.0.record(id, event);
    }

    /// When the change announced by the oldest entry of `channel`'s queue happened (ms), if
    /// the queue holds any: one entry decoded.
    fn oldest_ms(&self, channel: Channel) -> Result<Option<i64>, StoreError> {
        Ok(self
            .front(channel, 1)?
            .first()
            .map(|(_, entry)| entry.happened_ms()))
    }

    /// O(1): kept by the store as letters come and go.
    fn dead_letter_count(&self) -> i64 {
        self.0.inner.dead_count.load(Ordering::Relaxed)
    }

    /// Durable once everything written so far is: the notifiers write straight to sled (not
    /// through the journal), so this is a full commit that flushes sled too.
    fn commit(&self) -> Commit {
        Commit(self.0.inner.commit.full_ticket())
    }

    /// Resolves once everything written so far is durable, however many syncs fail first. A
    /// failed sync leaves the writes in sled and a later successful one covers them, so this
    /// waits for one (100 ms, doubling up to 5 s, between tries). For a notifier's own queue
    /// writes: whoever waits for their wake-up must get it once the store commits again, or a
    /// channel that drains in order would wait behind them until a restart.
    fn until_durable(&self) -> Durable {
        Box::pin(self.until(self.commit()))
    }

    /// [`until_durable`](Self::until_durable) for entries from [`enqueue`](Self::enqueue):
    /// the first wait is for the journal's commit alone; should it fail, the staged entry is
    /// applied (in memory, see `queue_tree/`) but not journaled, so the retries are full
    /// commits, which spill it into sled and flush sled.
    fn until_enqueued(&self) -> Durable {
        Box::pin(self.until(Commit(self.0.inner.commit.ticket())))
    }

    fn message_refs(&self, id: ApprovalId) -> Vec<TelegramMessageRef> {
        self.0
            .inner
            .messages
            .get(id.to_bytes())
            .ok()
            .flatten()
            .map(|bytes| crate::store::queues::decode_message_refs(&bytes))
            .unwrap_or_default()
    }

    fn add_message_ref(
        &self,
        id: ApprovalId,
        message: TelegramMessageRef,
    ) -> Result<bool, StoreError> {
        let mut refs = self.message_refs(id);
        if refs.contains(&message) {
            return Ok(false);
        }
        refs.push(message);
        let bytes = crate::store::queues::encode_message_refs(&refs)?;
        self.0.inner.messages.insert(id.to_bytes(), bytes)?;
        Ok(true)
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.tree("meta")?.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let meta = self.0.tree("meta")?;
        if let Some(stored) = meta.get(key)? {
            return Ok(stored.to_vec());
        }
        meta.insert(key, value)?;
        meta.flush()?;
        Ok(value.to_vec())
    }

    fn load_offset(&self) -> Result<i64, StoreError> {
        Ok(self
            .meta_get(OFFSET_KEY)?
            .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
            .map_or(0, |bytes| i64::from(i32::from_be_bytes(bytes))))
    }

    /// Written to sled now, durable with the next full commit (a lost offset only repeats
    /// taps, which the first-decision rule absorbs).
    fn save_offset(&self, offset: i64) -> Result<bool, StoreError> {
        let offset = i32::try_from(offset)
            .map_err(|_| StoreError::Queue(format!("update offset {offset} out of range")))?;
        self.0
            .tree("meta")?
            .insert(OFFSET_KEY, &offset.to_be_bytes())?;
        Ok(true)
    }
}
