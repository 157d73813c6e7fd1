//! Durable storage: the contract the registry and the notifiers write through, and its
//! backends.
//!
//! Here, shared by every backend: the [`ApprovalStore`] trait and the [`Change`] it writes
//! (`change.rs`), the approval record's versioned encoding (`codec.rs`), the notification queue
//! entries and channels (`queue.rs`) and [`StoreError`]. Each backend lives in a folder of its
//! own and keeps its mechanics there:
//!
//! - `sled/`: the embedded default. Its trees, the group commit (flush + fdatasync), the
//!   write-ahead journal, checkpoints, staging, the queue tree, backups and the one-process lock
//!   are sled's business; `sled/mod.rs` says how they fit.
//! - `postgres/`: the scale-out backend, under way (issue 23): the schema and its migrations,
//!   approval rows, outboxes, the Telegram poller's lease and the LISTEN connection. Not yet
//!   behind the trait.
//!
//! A state change and the notifications announcing it are one change, written together: either
//! the approval changed and every channel that must hear of it has its queue entry, or neither.
//! The registry sees the trait, so the state machine does not know which backend it runs on.
//! (The notifiers' queue handle, [`Queues`], is still sled's own: a queue trait is next.)

mod change;
mod codec;
pub mod postgres;
pub mod queue;
pub mod queues;
pub mod sled;

use std::path::PathBuf;
use std::sync::Arc;

pub use self::sled::backup;
pub use self::sled::{
    CommitFault, CommitResult, CommitTotals, DEFAULT_CACHE_BYTES, DEFAULT_STALL, FaultSwitch,
    Replayed, SledStore,
};
pub use change::{
    ApprovalStore, Change, Commit, DatabaseStats, Landed, Landing, StoreDiagnostics, Written,
};
pub use codec::{CodecError, decode as decode_approval, encode as encode_approval, millis};
pub use queue::{Channel, DeadLetter, QueueEntry};
pub use queues::{QueueStore, Queues};

/// A status as both backends store it (sled's index byte, PostgreSQL's `status` column); the
/// numbers are on disk, so they never change.
pub fn status_code(status: crate::domain::Status) -> u8 {
    use crate::domain::Status;
    match status {
        Status::Pending => 0,
        Status::Approved => 1,
        Status::Rejected => 2,
        Status::TimedOut => 3,
        Status::Cancelled => 4,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: PathBuf,
        source: ::sled::Error,
    },
    #[error(
        "the store at {path} is in use by another process (another approval-gate serving it?): \
         stop that one first, or give this one its own store.path"
    )]
    InUse { path: PathBuf },
    #[error("store I/O failed: {0}")]
    Io(#[from] ::sled::Error),
    #[error("store commit failed: {0}")]
    Flush(Arc<std::io::Error>),
    #[error("the store's flusher has stopped")]
    FlusherGone,
    #[error("record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: codec::CodecError,
    },
    #[error("{0}")]
    Queue(String),
    #[error("cannot start the flusher: {0}")]
    Thread(#[from] std::io::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The database cannot be reached (or every connection is busy): retry later.
    #[error("{0}")]
    Unavailable(String),
}
