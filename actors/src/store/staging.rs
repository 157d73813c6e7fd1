//! Staged writes: a change is not written to sled by the caller but staged here, and the
//! group-commit thread applies everything staged per batch (plain inserts, `writer.rs`) and
//! appends it as **one** journal record, just before the batch's fdatasync.
//!
//! Why: sled 0.34 makes every transaction (and every `apply_batch`) roll its IO buffer twice
//! (`PageCache::pin_log`, "HACK: we are rolling the io buffer before AND after"), so a
//! transaction per change cost two log writes per create on sled's IO pool and capped the
//! service at a fraction of its throughput. A change is still atomic: it is inside one journal
//! record, replayed whole or not at all.
//!
//! Until its batch is applied, a staged record is still visible to [`get`](Staging::record) and
//! idempotency lookups through the overlay, so the writer reads its own writes. Nothing here
//! touches sled; the flusher applies what [`take`](Staging::take) returns.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Which tree an operation writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Approvals,
    Idempotency,
    ByStatus,
    Queues,
    Grants,
    Events,
}

/// One insert (`Some`) or removal (`None`).
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub target: Target,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Default)]
pub(super) struct Staging(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    /// Latest staged value per key of the trees the writer reads back.
    overlay: HashMap<(u8, Vec<u8>), Option<Vec<u8>>>,
}

/// A tree's number: the overlay's key, and the tree index a journal record names (the order of
/// the writer's trees).
pub(super) fn tag(target: Target) -> u8 {
    match target {
        Target::Approvals => 0,
        Target::Idempotency => 1,
        Target::ByStatus => 2,
        Target::Queues => 3,
        Target::Grants => 4,
        Target::Events => 5,
    }
}

fn read_back(target: Target) -> bool {
    matches!(target, Target::Approvals | Target::Idempotency)
}

impl Staging {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it half-updated (plain pushes and map
        // inserts), so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stage one change's operations (applied together, in order, by the next batch).
    pub fn stage(&self, ops: Vec<Op>) {
        let mut inner = self.lock();
        for op in &ops {
            if read_back(op.target) {
                inner
                    .overlay
                    .insert((tag(op.target), op.key.clone()), op.value.clone());
            }
        }
        inner.ops.extend(ops);
    }

    /// The staged value of `key`: `Some(None)` if staged as removed, `None` if not staged.
    pub fn lookup(&self, target: Target, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.lock()
            .overlay
            .get(&(tag(target), key.to_vec()))
            .cloned()
    }

    pub fn has_staged(&self) -> bool {
        !self.lock().ops.is_empty()
    }

    /// Everything staged so far, for the flusher to apply.
    pub fn take(&self) -> Vec<Op> {
        std::mem::take(&mut self.lock().ops)
    }

    /// `ops` are now in sled (or failed to apply): drop their overlay entries unless a later
    /// change staged a newer value for the same key.
    pub fn settled(&self, ops: &[Op]) {
        let mut inner = self.lock();
        for op in ops.iter().filter(|op| read_back(op.target)) {
            let key = (tag(op.target), op.key.clone());
            if inner.overlay.get(&key) == Some(&op.value) {
                inner.overlay.remove(&key);
            }
        }
    }
}
