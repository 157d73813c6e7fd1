//! The single writer of staged changes: applies what is staged to sled's trees and appends the
//! same operations to the journal, under one lock, so the journal holds every staged write in
//! the order sled saw it. The group-commit thread drives it (and syncs the journal); a backup
//! takes the same lock to export with no batch half applied. Besides it, only the registry's
//! undo of a refused change (applied at once, and staged for the journal) and the notifiers'
//! own queue bookkeeping (`queues.rs`, made durable by a full commit) write the staged trees.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::journal::Journal;
use super::staging::{Op, Staging, tag};

pub(super) struct Writer {
    staging: Arc<Staging>,
    /// sled's trees are safe to share; the lock orders batches and their journal records.
    trees: [sled::Tree; 6],
    state: Mutex<State>,
}

struct State {
    journal: Journal,
    /// Reused encoding buffer for journal records.
    scratch: Vec<u8>,
}

impl Writer {
    pub fn new(staging: Arc<Staging>, trees: [sled::Tree; 6], journal: Journal) -> Self {
        Self {
            staging,
            trees,
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

    /// Apply everything staged to sled and append it to the journal (not yet synced).
    /// `Ok(true)` if anything was staged. Fault injection: `panic` while applying as a bug in
    /// sled would, or `refuse` the writes as sled does once one of its writes failed.
    ///
    /// Also the journal's length before this append, read under the same lock: where to cut
    /// back to should the commit fail (records a backup appended just before are not this
    /// commit's to cut).
    pub fn write_staged(&self, panic: bool, refuse: bool) -> (u64, io::Result<bool>) {
        let mut state = self.lock();
        let from = state.journal.len();
        let written = write_staged(&mut state, &self.trees, &self.staging, panic, refuse);
        (from, written)
    }

    /// True if anything is waiting to be written.
    pub fn has_staged(&self) -> bool {
        self.staging.has_staged()
    }

    /// Write what is staged, then run `then` with no other batch landing meanwhile.
    pub fn quiesced<T>(&self, then: impl FnOnce() -> T) -> io::Result<T> {
        let mut state = self.lock();
        write_staged(&mut state, &self.trees, &self.staging, false, false)?;
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
        apply(&self.trees, ops, false)
    }

    /// Cut the journal back to `len` bytes after a failed commit (see `Journal::cut_back`).
    pub fn cut_back(&self, len: u64) -> io::Result<()> {
        self.lock().journal.cut_back(len)
    }
}

/// Whatever happens, a panic included, the taken operations leave the staging overlay: a change
/// that never became durable must not stay readable (its caller is told 503).
fn write_staged(
    state: &mut State,
    trees: &[sled::Tree; 6],
    staging: &Staging,
    panic: bool,
    refuse: bool,
) -> io::Result<bool> {
    let ops = staging.take();
    if ops.is_empty() {
        return Ok(false);
    }
    let applied = catch_unwind(AssertUnwindSafe(|| {
        if refuse {
            return Err(sled::Error::Io(io::Error::other(
                "fault injection: sled refuses the write",
            )));
        }
        apply(trees, &ops, panic)
    }));
    staging.settled(&ops);
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            return Err(io::Error::other(format!(
                "cannot apply staged writes: {error}"
            )));
        }
        Err(panic) => {
            return Err(io::Error::other(format!(
                "applying staged writes panicked: {}",
                crate::supervision::panic_message(&*panic)
            )));
        }
    }
    let State { journal, scratch } = state;
    journal.append(&ops, scratch)?;
    Ok(true)
}

/// Plain inserts and removes, in order. No sled transaction: the journal record of the batch is
/// what makes it atomic across a crash (replayed whole or, torn, not at all), and sled 0.34
/// rolls its IO buffer twice per transaction.
fn apply(trees: &[sled::Tree; 6], ops: &[Op], panic: bool) -> sled::Result<()> {
    if panic {
        panic!("fault injection: a panic while applying the commit's writes");
    }
    for op in ops {
        let tree = &trees[usize::from(tag(op.target))];
        match &op.value {
            Some(value) => tree.insert(op.key.as_slice(), value.as_slice())?,
            None => tree.remove(op.key.as_slice())?,
        };
    }
    Ok(())
}
