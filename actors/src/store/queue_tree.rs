//! The notification queues' storage ([`QueueTree`]): sled's `queues` tree, plus the entries
//! that are journaled but not yet *spilled* into it.
//!
//! Why: most notifications are delivered, and removed, within milliseconds of their commit.
//! Writing each into sled's B-tree and removing it again cost two tree updates per channel per
//! change (node copies, leaf splits) for an entry that lived a few milliseconds, about a sixth
//! of the service's CPU per create. A queue entry is durable once its commit's journal record
//! is synced, whether or not sled holds it yet, so a new entry is kept in memory next to the
//! journal; the checkpoint thread spills whatever is still undelivered into sled before it
//! flushes sled and retires the journal files that held it (`checkpoint.rs`), and a graceful
//! stop or a backup spills first too. After a crash, the journal replay puts every entry it
//! holds into sled: a delivered entry whose removal was lost is delivered again (a repeat,
//! never a loss), exactly as with a removal that sled had not flushed yet.
//!
//! Invariant: an entry is in exactly one place, memory or sled. Spilling moves entries one at a
//! time under the lock, and every reader looks at memory before sled, so an entry moving during
//! a read is seen (twice at most, and merged), never missed. Nothing else lives here: the
//! queues' layout is `queue.rs`, their use by the notifiers `queues.rs`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use sled::IVec;

use super::StoreError;

/// A queue key: channel byte ++ sequence number (big-endian), see `queue.rs`.
pub(super) type Key = [u8; 9];

pub(super) struct QueueTree {
    tree: sled::Tree,
    unspilled: Mutex<BTreeMap<Key, IVec>>,
}

impl QueueTree {
    pub fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            unspilled: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, IVec>> {
        // Every update under this lock is a single map operation: a panic cannot leave it
        // half-done, so a poisoned lock is still usable.
        self.unspilled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new entry, journaled by the same commit that calls this. A key that is not a queue
    /// key (never written by this store) goes straight to sled.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> sled::Result<()> {
        match Key::try_from(key) {
            Ok(key) => {
                self.lock().insert(key, IVec::from(value));
                Ok(())
            }
            Err(_) => self.tree.insert(key, value).map(drop),
        }
    }

    /// Remove an entry wherever it is; its value if there was one.
    pub fn remove(&self, key: &[u8]) -> sled::Result<Option<IVec>> {
        if let Ok(key) = Key::try_from(key)
            && let Some(value) = self.lock().remove(&key)
        {
            return Ok(Some(value));
        }
        // Not in memory: then it is in sled or nowhere, and a spill cannot move it meanwhile.
        self.tree.remove(key)
    }

    /// Remove an entry only if it was never spilled; `None` if it is in sled (or nowhere).
    pub fn take_unspilled(&self, key: &Key) -> Option<IVec> {
        self.lock().remove(key)
    }

    pub fn get(&self, key: &Key) -> Result<Option<IVec>, StoreError> {
        if let Some(value) = self.lock().get(key) {
            return Ok(Some(value.clone()));
        }
        Ok(self.tree.get(key)?)
    }

    /// The entries with keys in `start..end`, in key order, from memory and sled merged, while
    /// `visit` returns true and at most `limit` of them.
    pub fn visit_range(
        &self,
        start: Key,
        end: Key,
        limit: usize,
        mut visit: impl FnMut(&[u8], &IVec) -> bool,
    ) -> Result<(), StoreError> {
        // Memory first: an entry spilled after this snapshot is still found in sled below.
        let unspilled: Vec<(Key, IVec)> = self
            .lock()
            .range(start..end)
            .take(limit)
            .map(|(key, value)| (*key, value.clone()))
            .collect();
        let mut memory = unspilled.into_iter().peekable();
        let mut sled = self.tree.range(start..end);
        let mut from_sled = sled.next().transpose()?;
        for _ in 0..limit {
            let order = match (memory.peek(), &from_sled) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((m, _)), Some((s, _))) => m.as_slice().cmp(s.as_ref()),
            };
            if order == Ordering::Equal {
                // Spilled while we read: the same entry twice.
                from_sled = sled.next().transpose()?;
            }
            let next = if order == Ordering::Greater {
                let next = from_sled.take();
                from_sled = sled.next().transpose()?;
                next
            } else {
                memory
                    .next()
                    .map(|(key, value)| (IVec::from(&key[..]), value))
            };
            let Some((key, value)) = next else { break };
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    /// Move every entry still in memory into sled (before sled is flushed and the journal files
    /// that hold them are retired). One at a time, so a failure leaves each entry in exactly
    /// one place; the entries not moved stay in memory and the journal keeps them.
    pub fn spill(&self) -> sled::Result<usize> {
        let mut unspilled = self.lock();
        let mut moved = 0;
        while let Some((key, value)) = unspilled.pop_first() {
            if let Err(error) = self.tree.insert(key, value.clone()) {
                unspilled.insert(key, value);
                return Err(error);
            }
            moved += 1;
        }
        Ok(moved)
    }

    /// sled's tree itself, for a transaction with another tree on entries already in it.
    pub fn sled(&self) -> &sled::Tree {
        &self.tree
    }

    /// Entries not spilled yet (diagnostics).
    pub fn unspilled(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> Key {
        super::super::queue::key(super::super::Channel::Console, seq)
    }

    fn keys(tree: &QueueTree, limit: usize) -> Vec<Key> {
        let mut out = Vec::new();
        tree.visit_range(key(0), key(u64::MAX), limit, |k, _| {
            out.push(Key::try_from(k).expect("queue key"));
            true
        })
        .expect("visit");
        out
    }

    #[test]
    fn reads_merge_memory_and_sled_in_key_order_and_spill_moves_each_entry_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open");
        let tree = QueueTree::new(db.open_tree("queues").expect("tree"));
        for seq in [1, 4] {
            tree.insert(&key(seq), b"spilled").expect("insert");
        }
        assert_eq!(tree.spill().expect("spill"), 2);
        for seq in [2, 3, 5] {
            tree.insert(&key(seq), b"memory").expect("insert");
        }
        assert_eq!(keys(&tree, 10), [1, 2, 3, 4, 5].map(key));
        assert_eq!(keys(&tree, 2), [1, 2].map(key));
        assert_eq!(tree.unspilled(), 3);

        assert_eq!(
            tree.remove(&key(2)).expect("remove").as_deref(),
            Some(&b"memory"[..])
        );
        assert_eq!(
            tree.remove(&key(4)).expect("remove").as_deref(),
            Some(&b"spilled"[..])
        );
        assert_eq!(tree.spill().expect("spill"), 2);
        assert_eq!(tree.unspilled(), 0);
        assert_eq!(db.open_tree("queues").expect("tree").len(), 3);
        assert_eq!(keys(&tree, 10), [1, 3, 5].map(key));
        assert_eq!(
            tree.get(&key(3)).expect("get").as_deref(),
            Some(&b"memory"[..])
        );
        assert_eq!(tree.take_unspilled(&key(3)), None);
    }
}
