//! Approvals with a durable "ended" entry queued for Telegram, by approval and by the entry's
//! seq: a first message still queued for such an approval is posted already decided, and the
//! ended entry is then moot. Indexed both ways so forgetting a delivered entry is O(1): a scan
//! of the map per delivery made draining a long outage's backlog quadratic.

use std::collections::HashMap;

use crate::domain::ApprovalId;

#[derive(Default)]
pub(super) struct Superseded {
    by_approval: HashMap<ApprovalId, u64>,
    by_seq: HashMap<u64, ApprovalId>,
}

impl Superseded {
    /// `id`'s ended entry is `seq` (a later one replaces an earlier).
    pub(super) fn insert(&mut self, id: ApprovalId, seq: u64) {
        if let Some(earlier) = self.by_approval.insert(id, seq) {
            self.by_seq.remove(&earlier);
        }
        self.by_seq.insert(seq, id);
    }

    pub(super) fn get(&self, id: &ApprovalId) -> Option<&u64> {
        self.by_approval.get(id)
    }

    /// The entry `seq` left the queue.
    pub(super) fn forget(&mut self, seq: u64) {
        if let Some(id) = self.by_seq.remove(&seq)
            && self.by_approval.get(&id) == Some(&seq)
        {
            self.by_approval.remove(&id);
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_approval.clear();
        self.by_seq.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_an_entry_forgets_its_approval_and_nothing_else() {
        let (a, b) = (ApprovalId::new(), ApprovalId::new());
        let mut superseded = Superseded::default();
        superseded.insert(a, 10);
        superseded.insert(b, 11);
        superseded.insert(a, 12);
        superseded.forget(10); // replaced already: a keeps 12
        assert_eq!(superseded.get(&a), Some(&12));
        superseded.forget(12);
        assert_eq!(superseded.get(&a), None);
        assert_eq!(superseded.get(&b), Some(&11));
        assert_eq!(superseded.by_seq.len(), 1);
    }
}
