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
//! Until its batch is applied, a staged record is still visible to [`lookup`](Staging::lookup) and
//! idempotency lookups through the overlay, so the writer reads its own writes. Nothing here
//! touches sled; the flusher applies what [`take`](Staging::take) returns.
//!
//! History entries observed by notifiers (deliveries, taps) are held back for
//! [`OBSERVED_WINDOW`] and merged per approval ([`Staging::stage_observed`]): the one place
//! where two staged writes become one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// What the writer takes for one batch.
pub(super) struct Batch {
    pub ops: Vec<Op>,
    /// Per op: put back should the batch fail ([`Staging::stage_kept`]).
    pub kept: Vec<bool>,
}

impl Batch {
    /// The ops a failed batch puts back, in order.
    pub fn kept_ops(&self) -> Vec<Op> {
        self.ops
            .iter()
            .zip(&self.kept)
            .filter(|(_, kept)| **kept)
            .map(|(op, _)| op.clone())
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    /// Per op in `ops`: a failed batch puts it back (`stage_kept`), rather than leaving it to
    /// its owner to revert (`stage`).
    kept: Vec<bool>,
    /// Latest staged value per key of the trees the writer reads back.
    overlay: HashMap<(u8, Vec<u8>), Option<Vec<u8>>>,
    /// Observed history entries ([`Staging::stage_observed`]), one op per approval, held back
    /// for up to [`OBSERVED_WINDOW`] so that entries for one approval share a key.
    observed: Vec<Op>,
    /// Per approval, its op in `observed`.
    observed_at: HashMap<[u8; 16], usize>,
    /// When the oldest op in `observed` was staged.
    observed_since: Option<Instant>,
}

/// How long observed history entries wait to be applied, so that the entries one approval gets
/// from several places at about the same time (each fallback channel delivering its
/// notification) share one sled insert. Nobody waits on history (`commit.rs`, `LAZY_APPLY`).
pub(super) const OBSERVED_WINDOW: Duration = Duration::from_millis(20);

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

    /// Stage one change's operations (applied together, in order, by the next batch). Should
    /// their batch fail, they are dropped: the owner is told (its commit fails) and reverts
    /// the change itself (the registry's changes).
    pub fn stage(&self, ops: Vec<Op>) {
        self.stage_as(ops, false);
    }

    /// Stage writes whose owner does not revert them (a hand-over, an edit, an undo): should
    /// their batch fail, it puts them back to be written by the next one, so a failed commit
    /// never drops them silently (its owner still hears it failed, and waits for a later one).
    pub fn stage_kept(&self, ops: Vec<Op>) {
        self.stage_as(ops, true);
    }

    fn stage_as(&self, ops: Vec<Op>, kept: bool) {
        let mut inner = self.lock();
        for op in &ops {
            if read_back(op.target) {
                inner
                    .overlay
                    .insert((tag(op.target), op.key.clone()), op.value.clone());
            }
        }
        let n = ops.len();
        inner.ops.extend(ops);
        inner.kept.extend(std::iter::repeat_n(kept, n));
    }

    /// A failed batch's kept writes, back in front of whatever was staged since (so a newer
    /// write of the same key still lands after them). Read back only where nothing newer is.
    pub fn restage(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for op in &ops {
            if read_back(op.target) {
                inner
                    .overlay
                    .entry((tag(op.target), op.key.clone()))
                    .or_insert_with(|| op.value.clone());
            }
        }
        let n = ops.len();
        let later = std::mem::replace(&mut inner.ops, ops);
        inner.ops.extend(later);
        let later = std::mem::replace(&mut inner.kept, vec![true; n]);
        inner.kept.extend(later);
    }

    /// Stage a history entry observed by a notifier (a delivery, a tap): `op` writes the
    /// `events` tree at `id ++ seq`, its value one entry as JSON. Entries for the same approval
    /// staged within [`OBSERVED_WINDOW`] share one key, their value a JSON array in the order
    /// staged: both fallback channels' deliveries of a notification cost sled one insert, not
    /// two (each insert costs the commit thread, the service's one serial stage, about 4 µs).
    /// A change's own entries never merge here (`stage`): its revert removes them by key.
    pub fn stage_observed(&self, id: [u8; 16], op: Op) {
        let mut inner = self.lock();
        let Inner {
            observed,
            observed_at,
            observed_since,
            ..
        } = &mut *inner;
        match observed_at.get(&id).and_then(|&at| observed.get_mut(at)) {
            Some(Op {
                value: Some(value), ..
            }) if !value.is_empty() => merge_entries(value, op.value.as_deref().unwrap_or(b"")),
            _ => {
                observed_at.insert(id, observed.len());
                observed.push(op);
                observed_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// The staged value of `key`: `Some(None)` if staged as removed, `None` if not staged.
    pub fn lookup(&self, target: Target, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.lock()
            .overlay
            .get(&(tag(target), key.to_vec()))
            .cloned()
    }

    /// True if [`take`](Self::take) would return anything.
    pub fn has_staged(&self) -> bool {
        let inner = self.lock();
        !inner.ops.is_empty() || inner.observed_due()
    }

    /// Everything staged so far, for the flusher to apply; observed history entries once their
    /// window has passed, or with `everything` (a backup, the final flush).
    #[cfg(test)]
    pub fn take(&self, everything: bool) -> Vec<Op> {
        self.take_batch(everything).ops
    }

    /// [`take`](Self::take), with which of the ops a failed batch puts back.
    pub fn take_batch(&self, everything: bool) -> Batch {
        let mut inner = self.lock();
        let mut ops = std::mem::take(&mut inner.ops);
        let mut kept = std::mem::take(&mut inner.kept);
        if everything || inner.observed_due() {
            // Observed history: nobody reverts it.
            kept.extend(std::iter::repeat_n(true, inner.observed.len()));
            ops.append(&mut inner.observed);
            inner.observed_at.clear();
            inner.observed_since = None;
        }
        Batch { ops, kept }
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

impl Inner {
    fn observed_due(&self) -> bool {
        self.observed_since
            .is_some_and(|since| since.elapsed() >= OBSERVED_WINDOW)
    }
}

/// Append the JSON value `entry` to `value`, which holds one JSON value or an array of them.
fn merge_entries(value: &mut Vec<u8>, entry: &[u8]) {
    if value.first() == Some(&b'[') {
        value.pop(); // the closing bracket
    } else {
        value.insert(0, b'[');
    }
    value.push(b',');
    value.extend_from_slice(entry);
    value.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, seq: u8, value: &str) -> Op {
        let mut key = vec![id; 16];
        key.push(seq);
        Op {
            target: Target::Events,
            key,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn observed_entries_of_one_approval_share_a_key_within_the_window() {
        let staging = Staging::default();
        staging.stage_observed([1; 16], entry(1, 1, r#"{"a":1}"#));
        staging.stage_observed([2; 16], entry(2, 2, r#"{"b":1}"#));
        staging.stage_observed([1; 16], entry(1, 3, r#"{"a":2}"#));
        staging.stage_observed([1; 16], entry(1, 4, r#"{"a":3}"#));
        assert!(!staging.has_staged(), "held back for the window");
        assert!(staging.take(false).is_empty());
        let ops = staging.take(true);
        let values: Vec<_> = ops
            .iter()
            .map(|op| String::from_utf8_lossy(op.value.as_deref().unwrap_or(b"")).to_string())
            .collect();
        assert_eq!(values, [r#"[{"a":1},{"a":2},{"a":3}]"#, r#"{"b":1}"#]);
        assert_eq!(ops[0].key, entry(1, 1, "").key, "the first entry's key");
        // After a take, a new entry starts a key of its own, taken once the window has passed.
        staging.stage_observed([1; 16], entry(1, 5, r#"{"a":4}"#));
        std::thread::sleep(OBSERVED_WINDOW);
        assert!(staging.has_staged());
        let ops = staging.take(false);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].value.as_deref(), Some(&br#"{"a":4}"#[..]));
    }

    #[test]
    fn a_change_is_taken_at_once_and_never_merged() {
        let staging = Staging::default();
        staging.stage_observed([1; 16], entry(1, 1, r#"{"a":1}"#));
        staging.stage(vec![entry(1, 2, r#"{"a":2}"#)]);
        let ops = staging.take(false);
        assert_eq!(ops.len(), 1, "the observed entry waits for its window");
        assert_eq!(ops[0].value.as_deref(), Some(&br#"{"a":2}"#[..]));
    }
}
