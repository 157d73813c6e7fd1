//! What the registry sees of storage: the [`ApprovalStore`] trait, the [`Change`] it writes (an
//! approval, its queue entries, grant and history, atomically), what a write returns so it can
//! be announced or reverted ([`Written`]), and what became of it ([`Landing`]: durable, or lost
//! to a change another instance made first). sled implements it in `sled/approvals.rs`
//! (staged, durable at the group commit), PostgreSQL in `postgres/backend/` (one transaction).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::backup::BackupStats;
use super::sled::idempotency_key;
use super::{Channel, CommitFault, CommitResult, CommitTotals, QueueEntry, StoreError};
use crate::domain::{Approval, ApprovalId, AuditEvent, Grant, Status};
use crate::notification::Event;

/// One state change to write: the approval as it is now, as it was (`None` for a new one), and
/// the channels whose queues must hear of it.
pub struct Change<'a> {
    pub approval: &'a Approval,
    pub previous: Option<&'a Approval>,
    pub event: Option<Event>,
    pub channels: &'a [Channel],
    pub request_id: Option<&'a str>,
    /// A session grant created by this change (an "approve for this session" decision).
    pub grant: Option<&'a Grant>,
    /// History entries this change adds to the approval (same transaction).
    pub events: &'a [AuditEvent],
}

impl<'a> Change<'a> {
    /// A change that announces nothing and adds no grant or history: a record written as it
    /// is (imports, benchmarks and tests that load a store).
    pub fn quiet(approval: &'a Approval, previous: Option<&'a Approval>) -> Self {
        Change {
            approval,
            previous,
            event: None,
            channels: &[],
            request_id: None,
            grant: None,
            events: &[],
        }
    }
}

impl Change<'_> {
    /// The idempotency key a new approval claims (a change of an existing one claims none).
    pub(super) fn claimed_idempotency_key(&self) -> Option<Vec<u8>> {
        match (self.previous, &self.approval.idempotency_key) {
            (None, Some(key)) => Some(idempotency_key(&self.approval.requested_by, key)),
            _ => None,
        }
    }
}

/// What [`ApprovalStore::apply`] wrote, so the change can be announced or reverted.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub queued: Vec<(Channel, u64)>,
    /// Keys of the history entries written, so a revert removes them.
    pub(super) event_keys: Vec<Vec<u8>>,
    /// What the queue entries hold, for notifiers to deliver without reading sled.
    pub entry: Option<Arc<QueueEntry>>,
    pub(super) record: Vec<u8>,
}

/// What became of a written change.
#[derive(Debug)]
pub enum Landed {
    /// On stable storage: announce it. The queue entries it wrote, when the backend assigns
    /// their sequence numbers only as it commits (PostgreSQL); empty when [`Written`] knew them.
    Durable(Vec<(super::Channel, u64)>),
    /// Not written: the approval is no longer as the change found it (another instance decided
    /// it first), or a new approval's idempotency key was taken meanwhile. The approval as it
    /// is stored now: the winner, or the original of the idempotent repeat.
    Lost(Box<Approval>),
}

/// A written change's fate, as a future that does not borrow the store (it outlives a restart
/// of the registry that wrote it).
pub struct Landing(Pin<Box<dyn Future<Output = Result<Landed, StoreError>> + Send>>);

impl Landing {
    pub fn new(future: impl Future<Output = Result<Landed, StoreError>> + Send + 'static) -> Self {
        Self(Box::pin(future))
    }

    /// A backend whose changes land at its commit ([`ApprovalStore::commit`]).
    pub fn at(commit: Commit) -> Self {
        Self::new(async move { commit.wait().await.map(|()| Landed::Durable(Vec::new())) })
    }

    pub async fn wait(self) -> Result<Landed, StoreError> {
        self.0.await
    }
}

/// What the registry needs from storage: approvals, their indexes and history, grants, the
/// durability promise, and the store's own health. The registry holds it as
/// `Arc<dyn ApprovalStore>` and does not know which backend it runs on.
pub trait ApprovalStore: Send + Sync + 'static {
    /// Write the approval, its indexes, history, grant and queue entries as one atomic change;
    /// the [`Landing`] says when it is durable, or that it was lost to another writer. sled
    /// shows the change to reads at once (and reverts it if its commit fails); PostgreSQL once
    /// its transaction committed.
    fn write(&self, change: &Change<'_>) -> Result<(Written, Landing), StoreError>;
    /// Undo a [`write`](Self::write) whose commit failed, if nothing changed the approval since.
    fn revert(&self, change: &Change<'_>, written: &Written) -> Result<(), StoreError>;
    /// Pending approvals whose deadline (`expires_at`) is at or before `before_ms`, at most
    /// `limit`: on a store several instances share, approvals created elsewhere whose deadlines
    /// this instance's sweeper never armed. One process knows every deadline: none.
    fn due(&self, _before_ms: i64, _limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        Ok(Vec::new())
    }
    /// Pending approvals whose next escalation step was due at or before `before_ms`, at most
    /// `limit`: on a shared store, steps whose instance (which armed them) may be gone. One
    /// process arms every step itself: none.
    fn due_steps(&self, _before_ms: i64, _limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        Ok(Vec::new())
    }
    /// True when other instances write to the same store (PostgreSQL): the registry then looks
    /// for approvals they created whose deadlines passed, and hears of what they ended.
    fn shared(&self) -> bool {
        false
    }
    /// The clock deadlines are decided by: the host's own for an embedded store; corrected to
    /// the database's for a shared one, so that every instance decides by the same time.
    fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock::default()
    }
    /// What `/health` shows of a database behind the store (reachable, pool use, the poller's
    /// lease); nothing for an embedded store. Cheap: no query.
    fn health(&self) -> Option<serde_json::Value> {
        None
    }
    fn get(&self, id: ApprovalId) -> Result<Option<Approval>, StoreError>;
    fn find_idempotent(&self, agent: &str, key: &str) -> Result<Option<ApprovalId>, StoreError>;
    /// Newest first, strictly older than `before` when given. O(page) through the status index.
    fn list(
        &self,
        status: Option<Status>,
        before: Option<ApprovalId>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError>;
    /// How many approvals have each status (keys of the index only; no record is decoded).
    fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError>;
    /// When the oldest pending approval was created (ms), if any: one index key, no decoding.
    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError>;
    /// Visit every pending approval (start-up: re-arm deadlines).
    fn for_each_pending(&self, visit: &mut dyn FnMut(Approval)) -> Result<(), StoreError>;
    /// Remove up to `limit` approvals that ended before `cutoff_ms` (staged and journaled, so
    /// a crash's replay does not bring them back); returns their statuses.
    fn remove_ended_before(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<Status>, StoreError>;
    /// Resolves once everything written so far is on stable storage.
    fn commit(&self) -> Commit;
    /// A commit that writes something through the whole write path (sled and the journal), so
    /// it fails wherever a real change would: health probes a failing store with it. (An empty
    /// commit only syncs, which a full disk or a sled that lost a write still lets through.)
    fn probe(&self) -> Commit;
    fn diagnostics(&self) -> StoreDiagnostics;
    /// Every stored grant, expired ones included (start-up).
    fn grants(&self) -> Result<Vec<Grant>, StoreError>;
    /// Stage the removal of a grant (revoked or expired); durable with the next commit.
    fn remove_grant(&self, id: &str);
    /// Put back a grant whose removal's commit failed: in sled at once, and staged so the next
    /// commit journals it (the failed removal may have reached sled).
    fn restore_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// An approval's history, oldest first.
    fn events(&self, id: ApprovalId) -> Result<Vec<AuditEvent>, StoreError>;
    /// False while the store cannot commit: the last commit failed, one has run past the stall
    /// limit, or the committer is gone.
    fn committing(&self) -> bool;
    /// How long the commit under way has been running (ms), if one is.
    fn commit_running_ms(&self) -> Option<u64>;
    /// Fault injection (`debug.fault_injection`): the next `count` commits show `fault`.
    fn inject_fault(&self, count: u32, fault: CommitFault);
    /// Write a consistent backup of everything to `path`.
    fn backup(&self, path: &Path) -> Result<BackupStats, StoreError>;
}

/// A pending durability promise; await it with [`Commit::wait`].
pub struct Commit(pub(super) oneshot::Receiver<CommitResult>);

impl Commit {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Flush(error)),
            Err(_) => Err(StoreError::FlusherGone),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreDiagnostics {
    pub path: PathBuf,
    pub size_on_disk: u64,
    pub last_flush_ms: i64,
    /// False from a failed commit until the next one succeeds.
    pub committing: bool,
    pub commit_failures: u64,
    pub last_sync_us: u64,
    pub commits: CommitTotals,
    /// How long the commit under way has been running (ms), if one is.
    pub commit_running_ms: Option<u64>,
    pub dead_letters: i64,
    /// Undelivered queue entries that only the journal holds so far (the next checkpoint
    /// spills them into sled).
    pub queue_entries_unspilled: usize,
    /// What the journal held when the store was opened, replayed into sled.
    pub replayed: super::Replayed,
    /// PostgreSQL: the pool, the last error, the poller's lease (`None` on sled).
    pub postgres: Option<serde_json::Value>,
    /// PostgreSQL: what metrics show of the database (`None` on sled).
    pub database: Option<DatabaseStats>,
}

/// A database behind the store, as metrics show it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DatabaseStats {
    pub reachable: bool,
    pub pool_busy: usize,
    pub pool_idle: usize,
    /// Callers waiting for a connection now.
    pub pool_waiting: usize,
    /// Statements and transactions run, and the time callers waited for them (pool wait and
    /// round trips included), since start.
    pub statements: u64,
    pub statement_seconds: f64,
    /// From another instance's commit to this one hearing of it, last seen.
    pub notify_lag_seconds: f64,
    /// The database's clock minus this host's, as measured (what the instance's clock adds).
    pub clock_offset_seconds: f64,
    /// This instance holds the Telegram poller's lease.
    pub leader: bool,
}
