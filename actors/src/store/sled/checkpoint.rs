//! The checkpoint thread (`sled-checkpoint`): makes sled itself durable, off the commit path,
//! and retires the journal files it then holds. It touches only sled, sled's data file and blob
//! files (synced, `blobs.rs`), the journal files handed to it and the queue entries it spills into sled (`queue_tree/`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;

use super::blobs::Blobs;
use super::commit::Durability;
use super::commit_stats::CommitStats;
use super::durable_point::{flush_sled, spill};
use super::faults;
use super::journal;
use super::writer::Writer;

/// The checkpoint thread: flushes sled and syncs its data file, then deletes the journal files
/// cut before that flush started. Off the commit thread, so a commit never waits for sled's
/// flush; a failed checkpoint keeps its files and is retried with the next one.
pub(super) struct Checkpointer {
    cut: Option<mpsc::Sender<PathBuf>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(durability: &Durability, stats: &Arc<CommitStats>) -> Self {
        let (cut, rx) = mpsc::channel::<PathBuf>();
        let db = durability.db.clone();
        let blobs = Arc::clone(&durability.blobs);
        let writer = Arc::clone(&durability.writer);
        let stats = Arc::clone(stats);
        let thread = File::open(&durability.data_file).and_then(|file| {
            thread::Builder::new()
                .name("sled-checkpoint".into())
                .spawn(move || checkpoints(&db, &blobs, &writer, &file, &rx, &stats))
        });
        match thread {
            Ok(thread) => Self {
                cut: Some(cut),
                thread: Some(thread),
            },
            Err(error) => {
                // Without it the journal only grows; the final flush at shutdown still cuts it.
                tracing::error!(%error, "cannot start the store's checkpoint thread");
                Self {
                    cut: None,
                    thread: None,
                }
            }
        }
    }

    /// Cut the journal here and hand the old file to the checkpoint thread.
    pub(super) fn rotate(&self, writer: &Writer) {
        let Some(cut) = &self.cut else { return };
        match writer.rotate() {
            Ok(Some(old)) => {
                let _ = cut.send(old);
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "cannot start a new journal file"),
        }
    }

    pub(super) fn stop(mut self) {
        self.cut.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoints(
    db: &sled::Db,
    blobs: &Blobs,
    writer: &Writer,
    file: &File,
    rx: &mpsc::Receiver<PathBuf>,
    stats: &CommitStats,
) {
    let mut done_with: Vec<PathBuf> = Vec::new();
    while let Ok(first) = rx.recv() {
        done_with.push(first);
        done_with.extend(rx.try_iter());
        // Everything journaled in these files was applied to sled before they were cut, but
        // for the queue entries still in memory: spilled first, then this flush covers it all.
        let result = faults::before_checkpoint(stats)
            .and_then(|()| spill(writer))
            .and_then(|()| flush_sled(db, blobs, file, stats))
            .and_then(|()| journal::retire(&done_with).map_err(Arc::new));
        match result {
            Ok(()) => {
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                done_with.clear();
            }
            Err(error) => {
                stats.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, files = done_with.len(), "store checkpoint failed; the journal keeps the writes and the next checkpoint retries");
            }
        }
    }
}
