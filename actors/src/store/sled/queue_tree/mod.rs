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
//! Invariant: outside a spill, an entry is in exactly one place, memory or sled. A spill copies
//! entries into sled, then drops them from memory under the lock (or from sled again, if they
//! were delivered meanwhile); every reader looks at memory before sled, so an entry moving
//! during a read is seen (twice at most, and merged), never missed. Nothing else lives here: the
//! queues' layout is `queue.rs`, their use by the notifiers `queues.rs`.
//!
//! Reads skip sled where it cannot hold the key: per channel, the tree keeps the largest key
//! sled may hold (read at start, raised *before* anything is put into sled: a spill, a requeue).
//! A notifier reading the newest end of its queue, or removing an entry that never left memory,
//! then costs no B-tree descent (each built a sled iterator, copying a leaf, per wake-up).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sled::IVec;

use super::StoreError;

/// A queue key: channel byte ++ sequence number (big-endian), see `queue.rs`.
pub(super) type Key = [u8; 9];

pub(super) struct QueueTree {
    tree: sled::Tree,
    unspilled: Mutex<Memory>,
    spilling: Mutex<()>,
    /// Per channel byte: the largest key sled may hold (an upper bound; no entry: none).
    in_sled: Mutex<BTreeMap<u8, Key>>,
}

/// What the tree keeps in memory, under one lock.
#[derive(Default)]
struct Memory {
    /// Entries journaled but not spilled into sled yet.
    entries: BTreeMap<Key, IVec>,
    /// A spill is copying entries into sled (between its snapshot and its clean-up).
    spilling: bool,
    /// Entries removed from memory while a spill was copying them: their copies in sled are
    /// not entries any more, and the spill's clean-up removes them. Until it has, reads skip
    /// them; without this an entry removed during a spill was read again from its copy (a
    /// notifier then found a delivered entry at the front of its queue, not ready, and
    /// stopped there).
    removed: BTreeSet<Key>,
}

impl Memory {
    /// Remove an entry from memory; a spill under way must not let its copy be read again.
    fn take(&mut self, key: &Key) -> Option<IVec> {
        let value = self.entries.remove(key)?;
        if self.spilling {
            self.removed.insert(*key);
        }
        Some(value)
    }
}

impl QueueTree {
    /// Over sled's `queues` tree as it is after the journal's replay.
    pub fn new(tree: sled::Tree) -> sled::Result<Self> {
        // One descent per channel byte: the last key of each (a key that is not a queue key,
        // never written by this store, bounds its channel at the top).
        let mut in_sled = BTreeMap::new();
        for channel in 0..=u8::MAX {
            let last = match channel.checked_add(1) {
                Some(next) => tree.range([channel]..[next]).next_back(),
                None => tree.range([channel]..).next_back(),
            };
            if let Some((key, _)) = last.transpose()? {
                let bound = Key::try_from(&key[..]).unwrap_or(channel_end(channel));
                in_sled.insert(channel, bound);
            }
        }
        Ok(Self {
            tree,
            unspilled: Mutex::new(Memory::default()),
            spilling: Mutex::new(()),
            in_sled: Mutex::new(in_sled),
        })
    }

    /// Before a key is put into sled: sled may hold it from now on.
    pub fn may_hold(&self, key: &[u8]) {
        let Some(&channel) = key.first() else { return };
        let bound = Key::try_from(key).unwrap_or(channel_end(channel));
        let mut in_sled = self.in_sled.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = in_sled.entry(channel).or_insert(bound);
        if *entry < bound {
            *entry = bound;
        }
    }

    /// False if sled cannot hold `key`.
    fn sled_may_hold_key(&self, key: &Key) -> bool {
        let in_sled = self.in_sled.lock().unwrap_or_else(PoisonError::into_inner);
        in_sled.get(&key[0]).is_some_and(|last| last >= key)
    }

    /// False if sled cannot hold any key in `start..end`.
    fn sled_may_hold(&self, start: &Key, end: &Key) -> bool {
        if start[0] > end[0] {
            return false;
        }
        let in_sled = self.in_sled.lock().unwrap_or_else(PoisonError::into_inner);
        // Channel c's keys in sled lie in [c ++ 0…0, its bound]: does that meet start..end?
        in_sled
            .range(start[0]..=end[0])
            .any(|(&channel, last)| last >= start && [channel, 0, 0, 0, 0, 0, 0, 0, 0] < *end)
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        // Every update under this lock is a single map operation: a panic cannot leave it
        // half-done, so a poisoned lock is still usable.
        self.unspilled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new entry, journaled by the same commit that calls this. A key that is not a queue
    /// key (never written by this store) goes straight to sled.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> sled::Result<()> {
        match Key::try_from(key) {
            Ok(key) => {
                self.lock().entries.insert(key, IVec::from(value));
                Ok(())
            }
            Err(_) => {
                self.may_hold(key);
                self.tree.insert(key, value).map(drop)
            }
        }
    }

    /// Remove an entry wherever it is; its value if there was one.
    pub fn remove(&self, key: &[u8]) -> sled::Result<Option<IVec>> {
        if let Ok(key) = Key::try_from(key) {
            let mut memory = self.lock();
            if let Some(value) = memory.take(&key) {
                return Ok(Some(value));
            }
            // Removed already; only its spilled copy is left, for the spill to remove.
            if memory.removed.contains(&key) {
                return Ok(None);
            }
            drop(memory);
            // Not in memory: then it is in sled or nowhere, and a spill cannot move it meanwhile.
            if !self.sled_may_hold_key(&key) {
                return Ok(None);
            }
        }
        self.tree.remove(key)
    }

    /// Remove an entry only if it was never spilled; `None` if it is in sled (or nowhere).
    pub fn take_unspilled(&self, key: &Key) -> Option<IVec> {
        self.lock().take(key)
    }

    pub fn get(&self, key: &Key) -> Result<Option<IVec>, StoreError> {
        {
            let memory = self.lock();
            if let Some(value) = memory.entries.get(key) {
                return Ok(Some(value.clone()));
            }
            if memory.removed.contains(key) {
                return Ok(None);
            }
        }
        if !self.sled_may_hold_key(key) {
            return Ok(None);
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
        // Memory first: an entry spilled after this snapshot is still found in sled below. The
        // copies in sled of entries removed during a spill are skipped: a removal after this
        // snapshot finds the entry in it, one before is in `removed` (the spill's clean-up
        // takes the copy out of sled before it forgets the key, both under this lock).
        let (unspilled, removed): (Vec<(Key, IVec)>, BTreeSet<Key>) = {
            let memory = self.lock();
            let entries = memory
                .entries
                .range(start..end)
                .take(limit)
                .map(|(key, value)| (*key, value.clone()))
                .collect();
            (entries, memory.removed.range(start..end).copied().collect())
        };
        let mut memory = unspilled.into_iter().peekable();
        // Asked after the memory snapshot: an entry spilled since was bounded before it left.
        let mut sled = self
            .sled_may_hold(&start, &end)
            .then(|| self.tree.range(start..end));
        let mut next_in_sled = || loop {
            match sled.as_mut().and_then(Iterator::next).transpose() {
                Ok(Some((key, _))) if removed.contains(&key[..]) => continue,
                other => break other,
            }
        };
        let mut from_sled = next_in_sled()?;
        for _ in 0..limit {
            let order = match (memory.peek(), &from_sled) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((m, _)), Some((s, _))) => m.as_slice().cmp(s.as_ref()),
            };
            if order == Ordering::Equal {
                // Spilled while we read: the same entry twice.
                from_sled = next_in_sled()?;
            }
            let next = if order == Ordering::Greater {
                let next = from_sled.take();
                from_sled = next_in_sled()?;
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
    /// that hold them are retired). The lock is not held while sled writes, so commits and
    /// acknowledgements never wait behind a long spill: the entries are copied into sled first
    /// (meanwhile in both places; readers merge the two), then, under the lock, dropped from
    /// memory, or from sled again if they were delivered in between. Should sled refuse a
    /// write, the entries not yet copied stay in memory and the journal keeps them.
    pub fn spill(&self) -> sled::Result<usize> {
        self.spill_with(
            |key, value| self.tree.insert(key, value).map(drop),
            |key| self.tree.remove(key).map(drop),
        )
    }

    /// [`spill`](Self::spill), copying each entry with `copy` and taking back the copy of one
    /// delivered meanwhile with `uncopy` (sled's insert and remove; in tests, ones that fail).
    fn spill_with(
        &self,
        mut copy: impl FnMut(&Key, IVec) -> sled::Result<()>,
        mut uncopy: impl FnMut(&Key) -> sled::Result<()>,
    ) -> sled::Result<usize> {
        // One spill at a time (checkpoints and full commits both spill): a second one would
        // take the first one's copies for entries delivered meanwhile.
        let _spilling = self.spilling.lock().unwrap_or_else(|p| p.into_inner());
        let (batch, carried): (Vec<(Key, IVec)>, BTreeSet<Key>) = {
            let mut memory = self.lock();
            memory.spilling = true;
            // Copies an earlier clean-up could not remove stay skipped.
            let carried = memory.removed.clone();
            let batch = memory
                .entries
                .iter()
                .map(|(key, value)| (*key, value.clone()))
                .collect();
            (batch, carried)
        };
        for (key, _) in &batch {
            self.may_hold(key);
        }
        let mut copied = 0;
        let mut failed = None;
        for (key, value) in &batch {
            if let Err(error) = copy(key, value.clone()) {
                failed = Some(error);
                break;
            }
            copied += 1;
        }
        let mut memory = self.lock();
        let mut left_in_sled = BTreeSet::new();
        for (key, _) in &batch[..copied] {
            if memory.entries.remove(key).is_none() {
                // Delivered while it was being copied: its removal only looked in memory. (If
                // sled refuses this, the entry may come back after a restart: a repeat; until
                // then reads keep skipping it.)
                if let Err(error) = uncopy(key) {
                    failed.get_or_insert(error);
                    left_in_sled.insert(*key);
                }
            }
        }
        // Every other copy of a removed entry is gone from sled (or was never made): reads
        // need no reminder of it any more.
        memory.spilling = false;
        memory
            .removed
            .retain(|key| carried.contains(key) || left_in_sled.contains(key));
        drop(memory);
        failed.map_or(Ok(copied), Err)
    }

    /// sled's tree itself, for a transaction with another tree on entries already in it.
    pub fn sled(&self) -> &sled::Tree {
        &self.tree
    }

    /// Entries not spilled yet (diagnostics).
    pub fn unspilled(&self) -> usize {
        self.lock().entries.len()
    }
}

/// The largest possible key of `channel`.
fn channel_end(channel: u8) -> Key {
    let mut key = [u8::MAX; 9];
    key[0] = channel;
    key
}

#[cfg(test)]
mod tests;
