//! The content of durable queue entries a notifier was woken with, kept so that delivering them
//! does not read and decode them from the store again. Within a byte budget: while a channel is
//! down or behind (Telegram's outbox during an outage grows by every approval), entries past the
//! budget are read from the store when their turn comes, so a backlog costs disk, not memory.
//!
//! Owned by one notifier (one per Telegram gateway, one per fallback lane); holds no state of
//! anyone else's and never writes the store.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::QueueEntry;

/// Bytes of entry content one cache holds at most (an estimate: the approval's text fields
/// plus a fixed overhead per entry).
pub const BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// Per-entry overhead counted on top of its text: ids, timestamps, map and `Arc` bookkeeping.
const OVERHEAD_BYTES: usize = 256;

pub struct WakeCache {
    entries: HashMap<u64, (Arc<QueueEntry>, usize)>,
    bytes: usize,
    budget: usize,
}

impl Default for WakeCache {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

impl WakeCache {
    pub fn with_budget(budget: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// Keep `entry` if it fits the budget; otherwise it is read from the store when needed.
    pub fn insert(&mut self, seq: u64, entry: &Arc<QueueEntry>) {
        let size = size_of(entry);
        if self.bytes + size > self.budget {
            return;
        }
        if let Some((_, replaced)) = self.entries.insert(seq, (Arc::clone(entry), size)) {
            self.bytes -= replaced;
        }
        self.bytes += size;
    }

    pub fn get(&self, seq: &u64) -> Option<&Arc<QueueEntry>> {
        self.entries.get(seq).map(|(entry, _)| entry)
    }

    pub fn remove(&mut self, seq: &u64) {
        if let Some((_, size)) = self.entries.remove(seq) {
            self.bytes -= size;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The estimated bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn size_of(entry: &QueueEntry) -> usize {
    let a = &entry.approval;
    OVERHEAD_BYTES
        + a.tool_input.len()
        + a.tool_name.len()
        + a.session_id.len()
        + a.requested_by.len()
        + a.reason.as_ref().map_or(0, String::len)
        + a.comment.as_ref().map_or(0, String::len)
        + a.agent.as_ref().map_or(0, String::len)
        + a.idempotency_key.as_ref().map_or(0, String::len)
        + entry.request_id.as_ref().map_or(0, String::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Approval, ApprovalId, NewApproval};
    use crate::notification::Event;

    fn entry(input_bytes: usize) -> Arc<QueueEntry> {
        let new = NewApproval {
            tool_input: format!("\"{}\"", "x".repeat(input_bytes)),
            ..NewApproval::sample()
        };
        Arc::new(QueueEntry {
            event: Event::Created,
            approval: Approval::create(ApprovalId::new(), new, chrono::Utc::now()),
            request_id: None,
            only: None,
        })
    }

    #[test]
    fn holds_entries_within_its_budget_and_frees_what_leaves() {
        let mut cache = WakeCache::with_budget(10_000);
        let big = entry(4_000);
        for seq in 1..=10 {
            cache.insert(seq, &big);
        }
        assert_eq!(
            cache.len(),
            2,
            "two 4 kB entries fit in 10 kB, the rest are not kept"
        );
        assert!(cache.bytes() <= 10_000);
        assert!(cache.get(&1).is_some() && cache.get(&3).is_none());
        cache.remove(&1);
        cache.insert(3, &big);
        assert!(
            cache.get(&3).is_some(),
            "room freed by a removal is used again"
        );
        cache.insert(3, &big);
        assert_eq!(cache.len(), 2, "a repeated insert is counted once");
        cache.clear();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}
