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

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A sync's outcome and how long it took.
type Synced = (io::Result<()>, Duration);

pub(super) struct Syncer {
    requests: Option<mpsc::Sender<Arc<File>>>,
    results: mpsc::Receiver<Synced>,
    thread: Option<thread::JoinHandle<()>>,
}

/// A sync under way: [`Syncer::finish`] waits for it.
#[must_use = "a started sync must be waited for"]
pub(super) struct Started(Option<Arc<File>>);

impl Syncer {
    pub fn start() -> io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<Arc<File>>();
        let (outcomes, results) = mpsc::channel::<Synced>();
        let thread = thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || {
                for file in inbox {
                    let started = Instant::now();
                    let synced = file.sync_data();
                    if outcomes.send((synced, started.elapsed())).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            results,
            thread: Some(thread),
        })
    }

    /// Start an `fdatasync` of `file` on the sync thread.
    pub fn begin(&self, file: Arc<File>) -> Started {
        match &self.requests {
            Some(requests) => match requests.send(Arc::clone(&file)) {
                Ok(()) => Started(None),
                // The thread is gone (it never panics, but should it end): sync inline.
                Err(_) => Started(Some(file)),
            },
            None => Started(Some(file)),
        }
    }

    /// Wait for the sync `started` (the only one under way: one commit at a time).
    pub fn finish(&self, started: Started) -> Synced {
        match started.0 {
            Some(file) => {
                let at = Instant::now();
                (file.sync_data(), at.elapsed())
            }
            None => self.results.recv().unwrap_or_else(|_| {
                (
                    Err(io::Error::other("the journal's sync thread has ended")),
                    Duration::ZERO,
                )
            }),
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
