//! The single writer of staged changes: appends what is staged to the journal and applies the
//! same operations to sled's trees, under one lock, so the journal holds every staged write in
//! the order sled saw it. The group-commit thread drives it (and syncs the journal); a backup
//! takes the same lock to export with no batch half applied. A batch that fails puts its kept
//! writes back in the staging ([`Writer::restage`]). Besides it, only the registry's
//! undo of a refused change (applied at once, and staged for the journal) and the notifiers'
//! own queue bookkeeping (`queues.rs`, made durable by a full commit) write the staged trees.

use std::fs::File;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::journal::Journal;
use super::queue_tree::QueueTree;
use super::record;
use super::staging::{Batch, Op, Staging, Target, tag};

pub(super) struct Writer {
    staging: Arc<Staging>,
    /// sled's trees are safe to share; the lock orders batches and their journal records.
    trees: [sled::Tree; 6],
    /// The queues' writes go here rather than to their sled tree (see `queue_tree/`).
    queues: Arc<QueueTree>,
    state: Mutex<State>,
}

struct State {
    journal: Journal,
    /// Reused encoding buffer for journal records.
    scratch: Vec<u8>,
}

impl Writer {
    pub fn new(
        staging: Arc<Staging>,
        trees: [sled::Tree; 6],
        queues: Arc<QueueTree>,
        journal: Journal,
    ) -> Self {
        Self {
            staging,
            trees,
            queues,
            state: Mutex::new(State {
                journal,
                scratch: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while applying is caught inside; the state stays usable either way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append everything staged to the journal (not yet synced) and apply it to sled.
    /// `Ok(true)` if anything was staged. Fault injection: `panic` while applying as a bug in
    /// sled would, or `refuse` the writes as sled does once one of its writes failed.
    ///
    /// Also the journal's length before this append, read under the same lock: where to cut
    /// back to should the commit fail (records a backup appended just before are not this
    /// commit's to cut).
    ///
    /// The batch's record is appended before it is applied, and `appended` gets the journal
    /// file as soon as it is, so its sync can overlap the apply (`syncer.rs`). A batch that
    /// sled refuses is cut off the journal again.
    ///
    /// `Ok(Some(batch))` when something was written: should the batch's sync then fail, hand it
    /// to [`restage`](Self::restage) so its kept writes are not lost.
    pub fn write_staged(
        &self,
        panic: bool,
        refuse: bool,
        appended: impl FnOnce(Arc<File>),
    ) -> (u64, io::Result<Option<Batch>>) {
        let mut state = self.lock();
        let from = state.journal.len();
        let written = write_staged(&mut state, self, panic, refuse, false, appended);
        (from, written)
    }

    /// A written batch whose sync failed: its kept writes (hand-overs, edits, undos, history)
    /// go back to the staging for the next batch; its owners' changes are theirs to revert.
    pub fn restage(&self, batch: Batch) {
        self.staging.restage(batch.kept_ops());
    }

    /// Write everything staged, observed history entries still in their window included (the
    /// final flush).
    pub fn write_everything(&self) -> io::Result<bool> {
        write_staged(&mut self.lock(), self, false, false, true, drop).map(|b| b.is_some())
    }

    /// True if anything is waiting to be written.
    pub fn has_staged(&self) -> bool {
        self.staging.has_staged()
    }

    /// Write what is staged, then run `then` with no other batch landing meanwhile.
    pub fn quiesced<T>(&self, then: impl FnOnce() -> T) -> io::Result<T> {
        let mut state = self.lock();
        write_staged(&mut state, self, false, false, true, drop)?;
        Ok(then())
    }

    /// `fdatasync` of the journal: every batch written so far is on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        let file = self.lock().journal.syncer();
        file.sync_data()
    }

    /// Start a new journal file (see `journal/`); the old one's path if it held anything.
    pub fn rotate(&self) -> io::Result<Option<PathBuf>> {
        self.lock().journal.rotate()
    }

    /// Bytes in the current journal file (a large one is cut for a checkpoint).
    pub fn journal_len(&self) -> u64 {
        self.lock().journal.len()
    }

    /// Apply `ops` to sled now, without journaling them (the caller stages them too, so the
    /// next commit journals them): for undoing a refused change at once. Takes no lock, so the
    /// registry never waits here behind a commit or a backup.
    pub fn apply_now(&self, ops: &[Op]) -> sled::Result<()> {
        self.apply(ops, false)
    }

    /// Move the queue entries still in memory into sled: before sled is flushed to retire the
    /// journal files that hold them, at a graceful stop, and before a backup.
    pub fn spill(&self) -> sled::Result<usize> {
        self.queues.spill()
    }

    /// Plain inserts and removes, in order. No sled transaction: the journal record of the
    /// batch is what makes it atomic across a crash (replayed whole or, torn, not at all), and
    /// sled 0.34 rolls its IO buffer twice per transaction. Queue entries go to the queue tree,
    /// which keeps them in memory until a checkpoint spills them.
    fn apply(&self, ops: &[Op], panic: bool) -> sled::Result<()> {
        if panic {
            panic!("fault injection: a panic while applying the commit's writes");
        }
        for op in ops {
            // Records and history entries merge into the approval's value (`record.rs`).
            let approvals = self.tree(Target::Approvals);
            if let Some(applied) =
                record::apply(approvals, tag(op.target), &op.key, op.value.as_deref())
            {
                applied?;
                continue;
            }
            match (&op.value, op.target) {
                (Some(value), Target::Queues) => self.queues.insert(&op.key, value)?,
                (None, Target::Queues) => self.queues.remove(&op.key).map(drop)?,
                (Some(value), target) => self
                    .tree(target)
                    .insert(op.key.as_slice(), value.as_slice())
                    .map(drop)?,
                (None, target) => self.tree(target).remove(op.key.as_slice()).map(drop)?,
            }
        }
        Ok(())
    }

    fn tree(&self, target: Target) -> &sled::Tree {
        &self.trees[usize::from(tag(target))]
    }

    /// Cut the journal back to `len` bytes after a failed commit (see `Journal::cut_back`).
    pub fn cut_back(&self, len: u64) -> io::Result<()> {
        self.lock().journal.cut_back(len)
    }
}

/// Whatever happens, a panic included, the taken operations leave the staging overlay: a change
/// that never became durable must not stay readable (its caller is told 503). Kept writes of a
/// batch that fails here go back to the staging ([`Staging::restage`]).
fn write_staged(
    state: &mut State,
    writer: &Writer,
    panic: bool,
    refuse: bool,
    everything: bool,
    appended: impl FnOnce(Arc<File>),
) -> io::Result<Option<Batch>> {
    let staging = &writer.staging;
    let batch = staging.take_batch(everything);
    let ops = &batch.ops;
    if ops.is_empty() {
        return Ok(None);
    }
    let State { journal, scratch } = state;
    let from = journal.len();
    let journaled = if refuse {
        Err(io::Error::other("fault injection: sled refuses the write"))
    } else {
        journal.append(ops, scratch)
    };
    if let Err(error) = journaled {
        staging.settled(ops);
        writer.restage(batch);
        return Err(error);
    }
    // The record is written: its sync may run while sled catches up.
    appended(journal.syncer());
    let applied = catch_unwind(AssertUnwindSafe(|| writer.apply(ops, panic)));
    staging.settled(ops);
    let failed = match applied {
        Ok(Ok(())) => return Ok(Some(batch)),
        Ok(Err(error)) => format!("cannot apply staged writes: {error}"),
        Err(panic) => format!(
            "applying staged writes panicked: {}",
            crate::supervision::panic_message(&*panic)
        ),
    };
    // Not applied, so not journaled either: the caller is told the batch failed.
    if let Err(error) = journal.cut_back(from) {
        tracing::error!(%error, "cannot cut a batch sled refused off the journal");
    }
    writer.restage(batch);
    Err(io::Error::other(failed))
}
