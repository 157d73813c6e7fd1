//! The `by_status` tree: an index of the pending approvals (`status byte ++ id`, for the
//! sweeper's start-up and listings by status) and one record, [`ENDED_KEY`], of how many
//! approvals have ended in each status (for the start-up counts).
//!
//! Ended approvals are counted, not indexed: a store of a million decided approvals held a
//! million index keys, and sled 0.34 keeps a page-table entry per page of every tree whether
//! cached or not (docs/benchmarks.md, memory). Listing by an ended status walks the records
//! instead (`approvals.rs`). The counts record is written as absolute values with the change
//! that moves an approval, staged while the counts are held, so the journal carries the
//! records in the order they were computed and a replay ends on the right one.
//! Nothing here stages or applies: callers push the ops into their own change.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::index_key;
use super::staging::{Op, Target};
use crate::domain::{ApprovalId, Status};
use crate::store::{StoreError, status_code};

/// The counts record's key: no index key (17 bytes, a status byte first) can equal it.
pub(super) const ENDED_KEY: &[u8] = b"\xffended";

/// How many approvals have ended in each status, as stored; indexed by status code.
#[derive(Default)]
pub(super) struct Ended(Mutex<Counts>);

#[derive(Default, Clone, Copy, PartialEq, Debug)]
pub(super) struct Counts([u64; 5]);

impl Ended {
    /// Held while computing a change's ops and staging them (see the module's note).
    pub fn lock(&self) -> MutexGuard<'_, Counts> {
        // Plain numbers: a panic elsewhere cannot leave them half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Load what the tree holds (after a migration wrote it).
    pub fn load(&self, by_status: &sled::Tree) -> Result<(), StoreError> {
        let stored = by_status.get(ENDED_KEY)?;
        *self.lock() = stored.as_deref().map(Counts::decode).unwrap_or_default();
        Ok(())
    }
}

impl Counts {
    /// The index and count writes for approval `id` moving from `from` to `to` (`None`: it
    /// does not exist), pushed onto `ops`.
    pub fn moved(
        &mut self,
        id: ApprovalId,
        from: Option<Status>,
        to: Option<Status>,
        ops: &mut Vec<Op>,
    ) {
        if from == to {
            return;
        }
        let op = |key: &[u8], value: Option<Vec<u8>>| Op {
            target: Target::ByStatus,
            key: key.to_vec(),
            value,
        };
        if from == Some(Status::Pending) {
            ops.push(op(&index_key(Status::Pending, id), None));
        }
        if to == Some(Status::Pending) {
            ops.push(op(&index_key(Status::Pending, id), Some(Vec::new())));
        }
        let before = *self;
        if let Some(from) = from.filter(|s| s.is_terminal()) {
            let n = &mut self.0[usize::from(status_code(from))];
            *n = n.saturating_sub(1);
        }
        if let Some(to) = to.filter(|s| s.is_terminal()) {
            self.0[usize::from(status_code(to))] += 1;
        }
        if *self != before {
            ops.push(op(ENDED_KEY, Some(self.encode())));
        }
    }

    /// Count one ended approval (a migration's walk).
    pub fn add(&mut self, status: Status) {
        if status.is_terminal() {
            self.0[usize::from(status_code(status))] += 1;
        }
    }

    /// The ended statuses' counts.
    pub fn by_status(&self) -> HashMap<Status, u64> {
        Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| (s, self.0[usize::from(status_code(s))]))
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0.iter().flat_map(|n| n.to_be_bytes()).collect()
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut counts = Counts::default();
        for (n, chunk) in counts.0.iter_mut().zip(bytes.chunks_exact(8)) {
            *n = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_moves_an_approval_out_of_the_index_and_into_the_counts() {
        let id = ApprovalId::new();
        let mut counts = Counts::default();
        let mut ops = Vec::new();
        counts.moved(id, None, Some(Status::Pending), &mut ops);
        assert_eq!(ops.len(), 1, "a create indexes, counts nothing");
        assert_eq!(ops[0].key, index_key(Status::Pending, id));
        ops.clear();
        counts.moved(id, Some(Status::Pending), Some(Status::Approved), &mut ops);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].value, None, "out of the index");
        assert_eq!(ops[1].key, ENDED_KEY);
        assert_eq!(counts.by_status()[&Status::Approved], 1);
        assert_eq!(
            Counts::decode(ops[1].value.as_deref().unwrap_or_default()),
            counts
        );
        // Undone (a refused commit), then removed by retention: back to nothing.
        ops.clear();
        counts.moved(id, Some(Status::Approved), Some(Status::Pending), &mut ops);
        counts.moved(id, Some(Status::Pending), Some(Status::Rejected), &mut ops);
        counts.moved(id, Some(Status::Rejected), None, &mut ops);
        assert_eq!(counts, Counts::default());
    }
}
