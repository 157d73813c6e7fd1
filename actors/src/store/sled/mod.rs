//! The embedded backend: the sled database, its schema, and the group commit that makes writes
//! durable (flush + fdatasync, see `commit`). Nothing outside `store` knows these mechanics;
//! the registry sees [`ApprovalStore`](super::ApprovalStore), the notifiers [`QueueStore`](super::QueueStore).
//!
//! The store owns every tree; actors get narrow handles:
//!
//! | tree                | key                              | value                | written by         |
//! |---------------------|----------------------------------|----------------------|--------------------|
//! | `approvals`         | approval id (16-byte ULID)       | versioned record and its history (`record.rs`) | ApprovalRegistry; notifiers and Telegram append history |
//! | `idempotency`       | requested_by `\0` key            | approval id          | ApprovalRegistry   |
//! | `by_status`         | status byte ++ id, pending only; `\xffended` | empty; per ended status, its count | ApprovalRegistry   |
//! | `queues`            | channel byte ++ seq (BE)         | queued notification  | registry appends; each notifier consumes its channel |
//! | `dead_letters`      | seq (BE)                         | channel, reason, entry | notifiers; requeued by operators |
//! | `telegram_messages` | approval id                      | message refs         | TelegramGateway    |
//! | `grants`            | grant id (ULID text)             | grant as JSON        | ApprovalRegistry   |
//! | `events`            | `probe`                          | empty: the store's write probe (history lived here, a key per entry, before layout 3) | the store |
//! | `meta`              | name                             | bytes                | whoever named it (`seq_floor`: a restore's sequence floor) |
//!
//! A state change and the notifications announcing it are one staged change, applied and
//! journaled as part of one journal record ([`ApprovalStore::apply`](super::ApprovalStore::apply),
//! `writer.rs`).
//!
//! History entries are audit events as JSON (an array when several were observed together).
//!
//! Here: the schema, [`SledStore`]'s opening and staging. `record.rs`: the approvals' values.
//! `status_index.rs`: the pending index and the ended counts. `migrate.rs`: older layouts
//! brought up to this one at open. `retention.rs`: removing long-ended approvals. `approvals.rs`: the
//! trait's sled implementation. `queues.rs`: the notifiers' handle. `commit.rs`: the group
//! commit (`commit_stats.rs`: what it reports; `faults.rs`: its fault injection).
//! `checkpoint.rs`: the checkpoints. `staging.rs`: writes waiting for it. `writer.rs`: applies
//! and journals them. `journal/`: the write-ahead journal and its replay. `backup.rs`: snapshots
//! and restore. `lock.rs`: one process per store folder. `blobs.rs`: syncing sled's files for
//! large records. `queue_tree/`: the queues' tree and the entries not spilled into it yet.

mod approvals;
pub mod backup;
mod blobs;
mod checkpoint;
mod commit;
mod commit_stats;
mod durable_point;
mod faults;
mod journal;
mod lock;
mod migrate;
mod queue_tree;
mod queues;
mod record;
mod retention;
mod staging;
mod status_index;
mod syncer;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sled::transaction::TransactionError;

pub use commit::{CommitResult, CommitTotals};
use commit::{Durability, GroupCommit};
pub use faults::{CommitFault, FaultSwitch};
pub use journal::Replayed;
use queue_tree::QueueTree;
pub use queues::SledQueues;
use staging::{Op, Staging, Target};
use writer::Writer;

use super::{
    ApprovalStore, Change, Channel, Commit, DeadLetter, Landing, QueueEntry, StoreDiagnostics,
    StoreError, Written, codec, queue, status_code as status_byte,
};
use crate::domain::{Approval, ApprovalId, AuditEvent, Grant, Status};

/// The sled database and its group-commit flusher. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order matters on drop: the flusher joins (final flush) before the trees and db go.
    commit: GroupCommit,
    approvals: sled::Tree,
    idempotency: sled::Tree,
    by_status: sled::Tree,
    /// The notification queues: sled's tree and the entries not spilled into it yet.
    queues: Arc<QueueTree>,
    dead: sled::Tree,
    messages: sled::Tree,
    grants: sled::Tree,
    events: sled::Tree,
    /// How many approvals ended in each status, as `by_status` holds them (`status_index.rs`).
    ended: status_index::Ended,
    staging: Arc<Staging>,
    /// Applies staged writes to the trees and journals them (the commit thread, or a backup).
    writer: Arc<Writer>,
    /// What the journal held when the store was opened.
    replayed: Replayed,
    dead_count: AtomicI64,
    /// Added to every sequence number ([`SEQ_FLOOR_KEY`]).
    seq_floor: u64,
    /// A commit running longer than this (ms) makes the store report itself as not committing.
    stall_after_ms: AtomicU64,
    db: sled::Db,
    path: PathBuf,
    /// This process's lock on the folder (`lock.rs`); last, so it is released after sled closes.
    _lock: std::fs::File,
}

pub(super) const SCHEMA_KEY: &[u8] = b"store_schema";
/// `meta` key: added to every sequence number (queue, dead-letter and history keys). sled's
/// `generate_id` counter is not in a backup, so a restored store's counter starts again near 0;
/// a backup records a floor above every number issued so far (`backup::write`), and numbers in
/// the restored store start above it. Absent (0) in a store never restored.
pub(crate) const SEQ_FLOOR_KEY: &[u8] = b"seq_floor";
/// How long a commit may run before the store reports a stall (`store.commit_stall`).
pub const DEFAULT_STALL: std::time::Duration = std::time::Duration::from_secs(10);
/// 3: history a key per approval, ended approvals counted rather than indexed.
const SCHEMA_VERSION: u8 = 3;

pub(in crate::store) fn index_key(status: Status, id: ApprovalId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = status_byte(status);
    key[1..].copy_from_slice(&id.to_bytes());
    key
}

fn id_of_index(key: &[u8]) -> Option<ApprovalId> {
    Some(ApprovalId::from_bytes(key.get(1..17)?.try_into().ok()?))
}

/// Milliseconds of the ULID's timestamp: when the approval was created.
fn created_ms(id: ApprovalId) -> i64 {
    let bytes = id.to_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[..6]);
    i64::from_be_bytes(ms)
}

pub(in crate::store) fn idempotency_key(agent: &str, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(agent.len() + key.len() + 1);
    bytes.extend_from_slice(agent.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Approval, StoreError> {
    codec::decode(value).map_err(|source| StoreError::Corrupt {
        key: queue::hex(key),
        source,
    })
}

fn encode_record(approval: &Approval) -> Result<Vec<u8>, StoreError> {
    codec::encode(approval).map_err(|source| StoreError::Corrupt {
        key: approval.id.to_string(),
        source,
    })
}

/// Grants are few and small: JSON keeps them readable in a backup and free of bincode's
/// serde caveats.
/// Open sled, holding this process's folder lock (`lock.rs`). Another process cannot hold
/// the folder then, so sled's own lock still taken can only be this process's previous handle on
/// it, still closing: sled's background threads let go of it a moment after the handle is
/// dropped. Wait for that (up to `SLED_CLOSING`) rather than fail a reopen.
fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    const SLED_CLOSING: std::time::Duration = std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open();
        match opened {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < SLED_CLOSING =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn encode_grant(grant: &Grant) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(grant).map_err(|e| StoreError::Queue(format!("cannot encode grant: {e}")))
}

fn tx_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::Io(error),
    }
}

/// sled's page cache unless configured (`store.cache_mib`). sled's own default is 1 GiB, which
/// a store of a million approvals fills (RSS followed it); the hot part of this store (pending
/// approvals, the status index, the queues' fronts) is small. sled counts a node by its size on
/// disk and holds it decoded, about five times larger: 4 MiB is about 20 MB resident.
pub const DEFAULT_CACHE_BYTES: u64 = 4 * 1024 * 1024;

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Open with a page cache of `cache_bytes` (sled's `cache_capacity`).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let lock = lock::lock(path)?;
        let db = open_sled(path, cache_bytes).map_err(open_error)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_error);
        let (approvals, idempotency, by_status) =
            (tree("approvals")?, tree("idempotency")?, tree("by_status")?);
        let (queues, dead, messages) = (
            tree("queues")?,
            tree("dead_letters")?,
            tree("telegram_messages")?,
        );
        let grants = tree("grants")?;
        let events = tree("events")?;
        // Before anything is applied to it: the journal's replay merges records and history.
        record::attach(&approvals);
        let staging = Arc::new(Staging::default());
        let trees = [
            &approvals,
            &idempotency,
            &by_status,
            &queues,
            &grants,
            &events,
        ]
        .map(|t| t.clone());
        let data_file = path.join("db");
        // What an earlier run acknowledged but sled may not have made durable: replayed first.
        let (journal, replayed) =
            journal::Journal::recover(path, &db, &trees, &data_file).map_err(open_error)?;
        let queues = Arc::new(QueueTree::new(queues).map_err(open_error)?);
        let writer = Arc::new(Writer::new(
            Arc::clone(&staging),
            trees,
            Arc::clone(&queues),
            journal,
        ));
        let commit = GroupCommit::start(Durability {
            db: db.clone(),
            blobs: Arc::new(blobs::Blobs::new(path)),
            data_file,
            dir: path.to_path_buf(),
            writer: Arc::clone(&writer),
        })?;
        let store = Self {
            inner: Arc::new(Inner {
                commit,
                staging,
                dead_count: AtomicI64::new(dead.len() as i64),
                seq_floor: read_seq_floor(&db)?,
                stall_after_ms: AtomicU64::new(DEFAULT_STALL.as_millis() as u64),
                approvals,
                idempotency,
                by_status,
                queues,
                dead,
                messages,
                grants,
                events,
                ended: status_index::Ended::default(),
                writer,
                replayed,
                db,
                path: path.to_path_buf(),
                _lock: lock,
            }),
        };
        store.migrate()?;
        store.inner.ended.load(&store.inner.by_status)?;
        Ok(store)
    }

    /// A staged history entry for `id` (key: id ++ a unique increasing number).
    fn event_op(&self, id: ApprovalId, event: &AuditEvent) -> Result<Op, StoreError> {
        let mut key = id.to_bytes().to_vec();
        key.extend_from_slice(&self.next_seq()?.to_be_bytes());
        let value = serde_json::to_vec(event)
            .map_err(|e| StoreError::Queue(format!("cannot encode a history entry: {e}")))?;
        Ok(Op {
            target: Target::Events,
            key,
            value: Some(value),
        })
    }

    /// Append to an approval's history; durable with the next commit. For actors that observe
    /// rather than change an approval (notifiers, Telegram taps).
    pub fn record(&self, id: ApprovalId, event: &AuditEvent) {
        match self.event_op(id, event) {
            Ok(op) => self.inner.staging.stage_observed(id.to_bytes(), op),
            Err(error) => {
                tracing::error!(approval_id = %id, %error, "cannot record a history entry")
            }
        }
    }

    /// The next queue sequence number: unique and increasing across restarts, never 0 (0 is
    /// "nothing yet" to every consumer's watermark).
    fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.inner.seq_floor + self.inner.db.generate_id()? + 1)
    }

    /// Write a backup of every tree to `path`: a consistent snapshot of everything the registry
    /// wrote (whole batches, and no batch half in it). Notifier bookkeeping written
    /// outside batches (acks, the message log) may be a moment older or newer: a restored store
    /// may repeat a notification, never lose one.
    pub fn backup(&self, path: &Path) -> Result<backup::BackupStats, StoreError> {
        // Hold the writer: write what is staged, then export, with no batch landing in
        // between. Commits wait meanwhile; what this wrote is synced by the next one.
        self.inner
            .writer
            .quiesced(|| {
                // The queue entries still in memory belong in the snapshot.
                self.inner.writer.spill()?;
                // Above every sequence number issued so far, and every one issued while the
                // backup is written (they come from the same counter, later).
                let floor = self.next_seq()?;
                backup::write(&self.inner.db, path, floor)
            })
            .map_err(|e| StoreError::Queue(e.to_string()))?
    }

    /// What the journal held when the store was opened (replayed into sled).
    pub fn replayed(&self) -> Replayed {
        self.inner.replayed
    }

    /// A tree for an actor that owns it (`meta`). Only call this while wiring up.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// The queue handle notifiers use: their own channel's entries, dead letters, commits.
    pub fn queues(&self) -> crate::store::Queues {
        std::sync::Arc::new(SledQueues(self.clone()))
    }

    /// Fault injection: make the next commits fail.
    pub fn faults(&self) -> FaultSwitch {
        self.inner.commit.faults()
    }

    /// True unless the last commit failed, the commit under way has run longer than the stall
    /// limit (a disk that hangs), or the commit thread is gone.
    pub fn committing(&self) -> bool {
        let stats = self.inner.commit.stats();
        stats.healthy.load(Ordering::SeqCst)
            && !self.stalled(self.commit_running_ms())
            && self.inner.commit.running()
    }

    /// How long the commit under way has been running, if one is.
    pub fn commit_running_ms(&self) -> Option<u64> {
        self.inner.commit.stats().running_ms()
    }

    fn stalled(&self, running_ms: Option<u64>) -> bool {
        running_ms.is_some_and(|ms| ms > self.inner.stall_after_ms.load(Ordering::Relaxed))
    }

    /// Flush sled and cut the journal this often (`store.checkpoint_every`).
    pub fn checkpoint_every(&self, every: std::time::Duration) {
        self.inner
            .commit
            .stats()
            .checkpoint_every_ms
            .store(every.as_millis() as u64, Ordering::Relaxed);
    }

    /// From now on, a commit running longer than `limit` is reported as a stall.
    pub fn report_stalls_after(&self, limit: std::time::Duration) {
        self.inner
            .stall_after_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;

/// The sequence floor a restore left in `meta` (0 if none).
fn read_seq_floor(db: &sled::Db) -> Result<u64, StoreError> {
    let meta = db.open_tree("meta")?;
    Ok(meta
        .get(SEQ_FLOOR_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}
