//! Durable notification queues: one per channel, written in the same transaction as the state
//! change they announce, consumed by that channel's notifier alone, and dead letters.
//!
//! Layout (all in the `queues` and `dead_letters` trees):
//!
//! | tree           | key                          | value                                   |
//! |----------------|------------------------------|-----------------------------------------|
//! | `queues`       | channel byte ++ seq (BE u64) | [`QueueEntry`] (event, approval snapshot) |
//! | `dead_letters` | seq (BE u64)                 | channel, reason, time, the entry        |
//!
//! Sequence numbers come from sled's `generate_id`, unique and increasing across restarts, so a
//! channel drains in the order changes were made. An entry leaves its queue only when delivered
//! (or dead-lettered); what remains after a crash is replayed on start.

use serde::{Deserialize, Serialize};

use super::{StoreError, codec};
use crate::domain::{Approval, TelegramMessageRef};
use crate::notification::Event;

/// The channels that have a queue. The byte is the key prefix: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    Telegram,
    Console,
    File,
    Email,
    /// Strategy `first`: one entry walks the fallback chain and is done at the first success.
    FallbackChain,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Telegram,
        Channel::Console,
        Channel::File,
        Channel::Email,
        Channel::FallbackChain,
    ];

    pub fn byte(self) -> u8 {
        match self {
            Channel::Telegram => 0,
            Channel::Console => 1,
            Channel::File => 2,
            Channel::Email => 3,
            Channel::FallbackChain => 4,
        }
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        Channel::ALL.into_iter().find(|c| c.byte() == byte)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Telegram => "telegram",
            Channel::Console => "console",
            Channel::File => "file",
            Channel::Email => "email",
            Channel::FallbackChain => "fallback_chain",
        }
    }
}

/// One notification waiting for its channel: what happened, the approval as it was then.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub event: Event,
    pub approval: Approval,
    pub request_id: Option<String>,
    /// Telegram only: edit just this message (a copy revealed by a tap), not every known copy.
    pub only: Option<TelegramMessageRef>,
}

impl QueueEntry {
    /// When the change this entry announces happened (ms since the epoch): its creation, or
    /// its end. The queue's age metrics count from here.
    pub fn happened_ms(&self) -> i64 {
        let approval = &self.approval;
        match self.event {
            Event::Created => approval.created_at.timestamp_millis(),
            Event::Ended => approval
                .decided_at
                .unwrap_or(approval.created_at)
                .timestamp_millis(),
            Event::Updated => approval
                .votes
                .last()
                .map_or(approval.created_at.timestamp_millis(), |vote| vote.at_ms),
            // When the step was due: it fires at its time (a restart fires it late, and the
            // age then says so).
            Event::Escalated => approval.created_at.timestamp_millis(),
        }
    }

    /// Seconds since [`happened_ms`](Self::happened_ms), never negative.
    pub fn age_seconds(&self, now_ms: i64) -> f64 {
        seconds_since(self.happened_ms(), now_ms)
    }
}

/// Seconds from `then_ms` to `now_ms` (both ms since the epoch), never negative: the ages the
/// queue and pending-approval metrics report.
pub fn seconds_since(then_ms: i64, now_ms: i64) -> f64 {
    (now_ms - then_ms).max(0) as f64 / 1000.0
}

/// The first layout: a creation or an ending. Its first byte is the `ended` flag (0 or 1),
/// which is how [`decode`] tells it from a later layout.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    ended: bool,
    approval: Vec<u8>,
    request_id: Option<String>,
    only: Option<TelegramMessageRef>,
}

/// The second layout, behind the byte [`LAYOUT_2`]: any event, named. Written only for the
/// events the first layout cannot say (an update, an escalation), so creations and endings
/// stay readable by a binary that knows only the first.
#[derive(Serialize, Deserialize)]
struct StoredEntryV2 {
    event: u8,
    approval: Vec<u8>,
    request_id: Option<String>,
    only: Option<TelegramMessageRef>,
}

const LAYOUT_2: u8 = 2;

fn event_code(event: Event) -> u8 {
    match event {
        Event::Created => 0,
        Event::Ended => 1,
        Event::Updated => 2,
        Event::Escalated => 3,
    }
}

fn event_of(code: u8) -> Option<Event> {
    [
        Event::Created,
        Event::Ended,
        Event::Updated,
        Event::Escalated,
    ]
    .into_iter()
    .find(|&event| event_code(event) == code)
}

fn codec_error(key: &[u8], error: impl std::fmt::Display) -> StoreError {
    StoreError::Queue(format!("queue record {}: {error}", hex(key)))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encode with an already-encoded approval (the registry encodes each record once and reuses
/// the bytes for every queue it writes).
pub(super) fn encode_with(
    entry_event: Event,
    approval_bytes: &[u8],
    request_id: Option<&str>,
    only: Option<TelegramMessageRef>,
) -> Result<Vec<u8>, StoreError> {
    let config = bincode::config::standard();
    if matches!(entry_event, Event::Created | Event::Ended) {
        let stored = StoredEntry {
            ended: entry_event == Event::Ended,
            approval: approval_bytes.to_vec(),
            request_id: request_id.map(str::to_string),
            only,
        };
        return bincode::serde::encode_to_vec(&stored, config).map_err(|e| codec_error(b"", e));
    }
    let stored = StoredEntryV2 {
        event: event_code(entry_event),
        approval: approval_bytes.to_vec(),
        request_id: request_id.map(str::to_string),
        only,
    };
    let mut bytes = vec![LAYOUT_2];
    bytes.extend(bincode::serde::encode_to_vec(&stored, config).map_err(|e| codec_error(b"", e))?);
    Ok(bytes)
}

pub(super) fn encode(entry: &QueueEntry) -> Result<Vec<u8>, StoreError> {
    let approval = codec::encode(&entry.approval).map_err(|e| codec_error(b"", e))?;
    encode_with(
        entry.event,
        &approval,
        entry.request_id.as_deref(),
        entry.only,
    )
}

pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<QueueEntry, StoreError> {
    let config = bincode::config::standard();
    let stored = match bytes.split_first() {
        Some((&LAYOUT_2, body)) => {
            let (stored, _): (StoredEntryV2, usize) =
                bincode::serde::decode_from_slice(body, config).map_err(|e| codec_error(key, e))?;
            stored
        }
        _ => {
            let (stored, _): (StoredEntry, usize) =
                bincode::serde::decode_from_slice(bytes, config)
                    .map_err(|e| codec_error(key, e))?;
            StoredEntryV2 {
                event: event_code(if stored.ended {
                    Event::Ended
                } else {
                    Event::Created
                }),
                approval: stored.approval,
                request_id: stored.request_id,
                only: stored.only,
            }
        }
    };
    let event = event_of(stored.event)
        .ok_or_else(|| codec_error(key, format!("unknown event {}", stored.event)))?;
    Ok(QueueEntry {
        event,
        approval: codec::decode(&stored.approval).map_err(|e| codec_error(key, e))?,
        request_id: stored.request_id,
        only: stored.only,
    })
}

pub(super) fn key(channel: Channel, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = channel.byte();
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The first key past every key of `channel` (a range's end).
pub(super) fn key_after(channel: Channel) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = channel.byte() + 1;
    key
}

pub(super) fn parse_key(key: &[u8]) -> Option<(Channel, u64)> {
    let channel = Channel::from_byte(*key.first()?)?;
    let seq = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    Some((channel, seq))
}

/// A dead letter: an entry its channel could never deliver, kept with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: u64,
    pub channel: Channel,
    pub reason: String,
    pub dead_at_ms: i64,
    pub entry: QueueEntry,
}

#[derive(Serialize, Deserialize)]
struct StoredDead {
    channel: u8,
    reason: String,
    dead_at_ms: i64,
    entry: Vec<u8>,
}

pub(super) fn encode_dead(
    channel: Channel,
    reason: &str,
    entry_bytes: &[u8],
) -> Result<Vec<u8>, StoreError> {
    encode_dead_at(
        channel,
        reason,
        chrono::Utc::now().timestamp_millis(),
        entry_bytes,
    )
}

/// A dead letter that died at `dead_at_ms` (an export keeps when it died).
pub(super) fn encode_dead_at(
    channel: Channel,
    reason: &str,
    dead_at_ms: i64,
    entry_bytes: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let stored = StoredDead {
        channel: channel.byte(),
        reason: reason.to_string(),
        dead_at_ms,
        entry: entry_bytes.to_vec(),
    };
    bincode::serde::encode_to_vec(&stored, bincode::config::standard())
        .map_err(|e| codec_error(b"", e))
}

/// (channel, the entry's own bytes) of a dead letter, for requeueing.
pub(super) fn dead_parts(key: &[u8], bytes: &[u8]) -> Result<(Channel, Vec<u8>), StoreError> {
    let (stored, _): (StoredDead, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| codec_error(key, e))?;
    let channel = Channel::from_byte(stored.channel)
        .ok_or_else(|| codec_error(key, format!("unknown channel {}", stored.channel)))?;
    Ok((channel, stored.entry))
}

pub(super) fn decode_dead(key: &[u8], bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    let (stored, _): (StoredDead, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| codec_error(key, e))?;
    let id = u64::from_be_bytes(
        key.try_into()
            .map_err(|_| codec_error(key, "bad dead-letter key"))?,
    );
    let channel = Channel::from_byte(stored.channel)
        .ok_or_else(|| codec_error(key, format!("unknown channel {}", stored.channel)))?;
    Ok(DeadLetter {
        id,
        channel,
        reason: stored.reason,
        dead_at_ms: stored.dead_at_ms,
        entry: decode(key, &stored.entry)?,
    })
}
