//! The journal's sync thread (`journal-sync`): runs a batch's `fdatasync` of the journal while
//! the commit thread applies the same batch to sled's trees.
//!
//! Why: a commit used to apply its batch to sled (CPU), then append it to the journal and sync
//! it (the disk), one after the other, and the commit thread is the one serial stage every
//! acknowledged change goes through. The record is now appended first; its sync starts here
//! at once and overlaps the apply, so a commit takes about the longer of the two, not their
//! sum. Nothing is acknowledged before both have ended, and a failed apply still fails the
//! batch (its record is cut off the journal, `commit.rs`). This thread touches nothing but the
//! journal file handed to it.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A sync's outcome and how long it took.
type Synced = (io::Result<()>, Duration);

pub(super) struct Syncer {
    /// Each request is numbered, and its result comes back with its number.
    requests: Option<mpsc::Sender<(u64, Arc<File>)>>,
    results: mpsc::Receiver<(u64, Synced)>,
    started: Cell<u64>,
    thread: Option<thread::JoinHandle<()>>,
}

/// A sync under way: [`Syncer::finish`] waits for it.
#[must_use = "a started sync must be waited for"]
pub(super) enum Started {
    /// On the sync thread, with this number.
    Queued(u64),
    /// The thread is gone: to sync inline.
    Inline(Arc<File>),
}

impl Syncer {
    pub fn start() -> io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<(u64, Arc<File>)>();
        let (outcomes, results) = mpsc::channel::<(u64, Synced)>();
        let thread = thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || {
                for (number, file) in inbox {
                    let started = Instant::now();
                    let synced = file.sync_data();
                    if outcomes
                        .send((number, (synced, started.elapsed())))
                        .is_err()
                    {
                        break;
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            results,
            started: Cell::new(0),
            thread: Some(thread),
        })
    }

    /// Start an `fdatasync` of `file` on the sync thread.
    pub fn begin(&self, file: Arc<File>) -> Started {
        let number = self.started.get() + 1;
        let Some(requests) = &self.requests else {
            return Started::Inline(file);
        };
        match requests.send((number, Arc::clone(&file))) {
            Ok(()) => {
                self.started.set(number);
                Started::Queued(number)
            }
            // The thread is gone (it never panics, but should it end): sync inline.
            Err(_) => Started::Inline(file),
        }
    }

    /// Wait for the sync `started`. Results of earlier syncs nobody waited for are skipped, so
    /// an answer always belongs to the sync that started after its batch was written.
    pub fn finish(&self, started: Started) -> Synced {
        let number = match started {
            Started::Inline(file) => {
                let at = Instant::now();
                return (file.sync_data(), at.elapsed());
            }
            Started::Queued(number) => number,
        };
        loop {
            match self.results.recv() {
                Ok((done, synced)) if done == number => return synced,
                Ok(_) => continue,
                Err(_) => {
                    return (
                        Err(io::Error::other("the journal's sync thread has ended")),
                        Duration::ZERO,
                    );
                }
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_nobody_waited_for_is_skipped_not_taken_for_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Arc::new(File::create(dir.path().join("journal")).expect("file"));
        let syncer = Syncer::start().expect("sync thread");
        let forgotten = syncer.begin(Arc::clone(&file));
        let awaited = syncer.begin(Arc::clone(&file));
        assert!(matches!(awaited, Started::Queued(2)));
        drop(forgotten);
        let (synced, _) = syncer.finish(awaited);
        synced.expect("synced");
        // Nothing stale is left behind for a third one either.
        let third = syncer.begin(file);
        assert!(matches!(third, Started::Queued(3)));
        syncer.finish(third).0.expect("synced");
        assert!(syncer.results.try_recv().is_err());
    }
}
