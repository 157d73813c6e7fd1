//! What the notifiers see of storage: the [`QueueStore`] trait. Each channel's queue of
//! [`QueueEntry`]s (written by the registry with the change they announce), dead letters, the
//! history entries a delivery or a tap adds, the Telegram message log, the gateway's small
//! persistent settings (its secrets) and, on a store several instances share, who delivers.
//!
//! sled implements it in `sled/queues.rs` (per-channel trees, entries durable at the group
//! commit), PostgreSQL in `postgres/store/queues.rs` (the `outbox` table: a row is visible only
//! once its transaction committed, so whatever a notifier reads is durable). A notifier holds
//! [`Queues`] and never learns which it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Channel, Commit, DeadLetter, QueueEntry, StoreError};
use crate::domain::{ApprovalId, AuditEvent, TelegramMessageRef};

/// The notifiers' handle on the store.
pub type Queues = Arc<dyn QueueStore>;

/// A future the notifiers spawn; it resolves once their writes are durable.
pub type Durable = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait QueueStore: Send + Sync + 'static {
    /// Sequence numbers of `channel` after `seq`, oldest first, while `take` accepts them (at
    /// most `limit`). Keys only where the backend can: nothing is decoded.
    fn seqs_after(
        &self,
        channel: Channel,
        seq: u64,
        limit: usize,
        take: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<u64>, StoreError>;

    /// Sequence numbers at the front of `channel`'s queue (sequence numbers start at 1).
    fn front_seqs(
        &self,
        channel: Channel,
        limit: usize,
        take: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<u64>, StoreError> {
        self.seqs_after(channel, 0, limit, take)
    }

    /// Up to `limit` entries at the front of `channel`'s queue, oldest first, while `take`
    /// accepts their seq: one read where the backend can.
    fn front(
        &self,
        channel: Channel,
        limit: usize,
        take: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, QueueEntry)>, StoreError> {
        let mut out = Vec::new();
        for seq in self.front_seqs(channel, limit, take)? {
            if let Some(entry) = self.get(channel, seq)? {
                out.push((seq, entry));
            }
        }
        Ok(out)
    }

    /// Visit every entry of `channel`'s queue, oldest first, one at a time (a long backlog is
    /// not held in memory at once).
    fn visit(
        &self,
        channel: Channel,
        visit: &mut dyn FnMut(u64, QueueEntry),
    ) -> Result<(), StoreError>;

    /// (entries, highest seq) of a channel's queue: read when its notifier (re)starts.
    fn scan(&self, channel: Channel) -> Result<(usize, u64), StoreError>;

    fn get(&self, channel: Channel, seq: u64) -> Result<Option<QueueEntry>, StoreError>;

    /// Append one entry to several channels' queues: each channel's seq. Durable once
    /// [`until_enqueued`](Self::until_enqueued) resolves.
    fn enqueue_to(
        &self,
        channels: &[Channel],
        entry: &QueueEntry,
    ) -> Result<Vec<(Channel, u64)>, StoreError>;

    /// [`enqueue_to`](Self::enqueue_to) for several entries at once (a hand-over of a backlog):
    /// each entry's (channel, seq) list, in order. One write where the backend can.
    fn enqueue_many(
        &self,
        channels: &[Channel],
        entries: &[&QueueEntry],
    ) -> Result<Vec<Vec<(Channel, u64)>>, StoreError> {
        entries
            .iter()
            .map(|entry| self.enqueue_to(channels, entry))
            .collect()
    }

    fn enqueue(&self, channel: Channel, entry: &QueueEntry) -> Result<u64, StoreError> {
        self.enqueue_to(&[channel], entry)?
            .pop()
            .map(|(_, seq)| seq)
            .ok_or_else(|| StoreError::Queue("nothing was queued".into()))
    }

    /// Delivered: remove. Losing an ack to a crash only repeats a notification.
    fn ack(&self, channel: Channel, seqs: &[u64]) -> Result<(), StoreError>;

    /// Never deliverable: move to the dead letters with the reason.
    fn bury(&self, channel: Channel, seq: u64, reason: &str) -> Result<(), StoreError>;

    /// Dead letters oldest first, strictly after `after`.
    fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Put a dead letter back at the end of its channel's queue; `None` if there is no such id.
    fn requeue(&self, id: u64) -> Result<Option<(Channel, u64)>, StoreError>;

    /// Every dead letter of `channel` back at the end of its queue, oldest first.
    fn requeue_channel(&self, channel: Channel) -> Result<Vec<(Channel, u64)>, StoreError>;

    /// Append to an approval's history (a delivery, a tap, a dead letter). Nobody waits on
    /// history: it is durable with the store's next commit.
    fn record(&self, id: ApprovalId, event: &AuditEvent);

    /// Several history entries (a delivered batch), together.
    fn record_all(&self, events: Vec<(ApprovalId, AuditEvent)>) {
        for (id, event) in events {
            self.record(id, &event);
        }
    }

    /// When the change announced by the oldest entry of `channel`'s queue happened (ms).
    fn oldest_ms(&self, channel: Channel) -> Result<Option<i64>, StoreError>;

    /// How many dead letters there are (cheap: health and stats ask often).
    fn dead_letter_count(&self) -> i64;

    /// Durable once everything the notifiers wrote so far is.
    fn commit(&self) -> Commit;

    /// Resolves once everything written so far is durable, however many commits fail first.
    fn until_durable(&self) -> Durable;

    /// [`until_durable`](Self::until_durable) for entries from [`enqueue_to`](Self::enqueue_to).
    fn until_enqueued(&self) -> Durable;

    /// Which Telegram messages show the approval (so an ending edits every copy).
    fn message_refs(&self, id: ApprovalId) -> Vec<TelegramMessageRef>;

    /// Record a message showing the approval; false if it was already known.
    fn add_message_ref(
        &self,
        id: ApprovalId,
        message: TelegramMessageRef,
    ) -> Result<bool, StoreError>;

    /// A small persistent value of the gateway's (its generated secrets).
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Store `value` under `key` unless a value is stored already (another instance may have
    /// stored its own first), durably before this returns: the value now stored.
    fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// The Telegram update offset last saved.
    fn load_offset(&self) -> Result<i64, StoreError>;

    /// Save the update offset. `Ok(false)`: this instance no longer leads (another took the
    /// poller's lease), so it must stop polling; the offset was not written.
    fn save_offset(&self, offset: i64) -> Result<bool, StoreError>;

    /// Whether this instance delivers notifications and polls Telegram. Always on one process;
    /// on a shared store, the holder of the lease (`postgres/leader.rs`).
    fn leading(&self) -> bool {
        true
    }

    /// True when other instances share the queues (PostgreSQL): notifiers then check
    /// [`leading`](Self::leading) and read their queue's front on a timer, since entries
    /// written elsewhere come with no wake-up.
    fn shared(&self) -> bool {
        false
    }

    /// True when every entry a notifier can read is durable already (PostgreSQL: rows become
    /// visible at commit), so no wake-up is needed to confirm it.
    fn visible_is_durable(&self) -> bool {
        false
    }

    /// The clock the notifiers stamp history entries and reckon queue ages by: the same as
    /// the approvals' ([`ApprovalStore::clock`](super::ApprovalStore::clock)), so that a
    /// "delivered" entry written on one instance does not precede the decision it announces,
    /// stamped on another.
    fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock::default()
    }
}

/// Shared by both backends: the Telegram message log's record (the messages showing one
/// approval). An unreadable record reads as none: the worst is an edit not made.
pub fn decode_message_refs(bytes: &[u8]) -> Vec<TelegramMessageRef> {
    bincode::serde::decode_from_slice::<Vec<TelegramMessageRef>, _>(
        bytes,
        bincode::config::standard(),
    )
    .map(|(refs, _)| refs)
    .unwrap_or_default()
}

pub fn encode_message_refs(refs: &[TelegramMessageRef]) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(refs, bincode::config::standard())
        .map_err(|e| StoreError::Queue(format!("message log record: {e}")))
}

/// Shared by both backends: an entry's bytes as the queues store them.
pub fn encode_entry(entry: &QueueEntry) -> Result<Vec<u8>, StoreError> {
    super::queue::encode(entry)
}

/// The inverse of [`encode_entry`]; `what` names the record in an error.
pub fn decode_entry(what: &[u8], bytes: &[u8]) -> Result<QueueEntry, StoreError> {
    super::queue::decode(what, bytes)
}
