//! Group commit: many writers, one durable point per batch, on a dedicated thread.
//!
//! Every caller that needs durability asks for a commit ticket; the commit thread takes all
//! tickets queued so far, makes everything written before them durable once, and answers them
//! together. A lone request is committed at once (no timer), a burst shares one sync. A ticket
//! is answered only after a sync that *started after* the ticket was taken.
//!
//! The durable point of staged writes (`staging.rs`) is the journal (`journal/`): the thread
//! applies what is staged to sled and appends it to the journal (`writer.rs`), then
//! `fdatasync`s the journal. sled itself is flushed at checkpoints, by a second thread
//! (`sled-checkpoint`, `checkpoint.rs`), every `store.checkpoint_every`: the journal is
//! rotated, sled's `flush()` and an `fdatasync` of its data file (`<store>/db`) run, and the
//! old journal file is retired. Writes made straight to sled rather than staged (the
//! notifiers' acknowledgements, a requeue, the Telegram message log and update offset) are not
//! journaled: a *full* ticket ([`GroupCommit::full_ticket`]) also
//! spills the queue entries kept in memory (`queue_tree/`), flushes sled and fsyncs its data
//! file before it is answered. (sled's `flush()` alone ends in
//! `sync_file_range` on Linux, which neither writes metadata nor empties the device's write
//! cache; fsync works per file whichever descriptor calls it, so our own handle syncs sled's
//! writes.)
//!
//! Why not `flush_async()` per request: in sled 0.34 it runs on sled's own small IO pool and
//! waits for work queued on that same pool, so seven concurrent flushes deadlock the process.
//!
//! Writes that nobody waits on (history entries from notifiers) take no ticket: they ride along
//! with the next batch, or are written and synced by the thread itself once it has been idle for
//! [`LAZY_APPLY`].
//!
//! Fault injection (`debug.fault_injection`, `faults.rs`) makes commits fail, panic or hang, to
//! prove that callers never acknowledge what did not reach the disk.
//! These threads touch nothing but the writer, the sled handle and the files they were given.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::commit_stats::spent;
pub use super::commit_stats::{CommitStats, CommitTotals};
use super::durable_point::{sync, synced};
use super::faults::FaultSwitch;
use super::journal;
use super::syncer::{Started, Syncer};
use super::writer::Writer;
use crate::supervision::panic_message;

/// Answer to one ticket: `Ok` once everything written before the ticket is on stable storage.
pub type CommitResult = Result<(), Arc<std::io::Error>>;

/// What the commit thread makes durable: sled, its data file, the store's directory (where
/// the journal lives) and the writer that applies and journals staged writes.
pub struct Durability {
    pub db: sled::Db,
    /// sled's blob files, synced with every flush that lets the journal go (`blobs.rs`).
    pub(super) blobs: Arc<super::blobs::Blobs>,
    pub data_file: PathBuf,
    pub dir: PathBuf,
    pub writer: Arc<Writer>,
}

/// One durability request: `full` also flushes sled and fsyncs its data file (for writes made
/// straight to sled, which the journal does not hold).
struct Ticket {
    full: bool,
    reply: oneshot::Sender<CommitResult>,
}

/// How often sled is flushed and the journal cut unless set (`store.checkpoint_every`): what a
/// restart replays is at most about this old.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// A journal file this large is cut at the next commit whatever its age.
const CHECKPOINT_BYTES: u64 = 64 << 20;

/// How long staged writes without a ticket may wait for a batch to carry them.
pub const LAZY_APPLY: std::time::Duration = std::time::Duration::from_millis(50);

pub struct GroupCommit {
    tickets: Option<mpsc::Sender<Ticket>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Closed by the thread when it ends (its final flush done), so a drop can wait with a limit.
    ended: Option<std::sync::Mutex<mpsc::Receiver<()>>>,
    stats: Arc<CommitStats>,
}

/// How long dropping the store waits for the final flush: a disk that hangs must not keep the
/// process from exiting (and its supervisor from restarting it).
const FINAL_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl GroupCommit {
    pub fn start(durability: Durability) -> std::io::Result<Self> {
        let file = File::open(&durability.data_file)?;
        let (tx, rx) = mpsc::channel::<Ticket>();
        let stats = Arc::new(CommitStats {
            healthy: AtomicBool::new(true),
            checkpoint_every_ms: AtomicU64::new(CHECKPOINT_EVERY.as_millis() as u64),
            ..Default::default()
        });
        let shared = Arc::clone(&stats);
        let (ended_tx, ended) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || {
                run(&durability, file, rx, shared);
                drop(ended_tx);
            })?;
        Ok(Self {
            tickets: Some(tx),
            thread: Some(thread),
            ended: Some(std::sync::Mutex::new(ended)),
            stats,
        })
    }

    /// A future that resolves once every write staged before this call is durable.
    pub fn ticket(&self) -> oneshot::Receiver<CommitResult> {
        self.request(false)
    }

    /// A future that resolves once every write made before this call is durable, those made
    /// straight to sled included.
    pub fn full_ticket(&self) -> oneshot::Receiver<CommitResult> {
        self.request(true)
    }

    fn request(&self, full: bool) -> oneshot::Receiver<CommitResult> {
        let (reply, rx) = oneshot::channel();
        if let Some(tickets) = &self.tickets {
            // A send error means the flusher is gone; dropping `reply` makes the receiver fail,
            // which callers report as an unavailable store.
            let _ = tickets.send(Ticket { full, reply });
        }
        rx
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    pub fn faults(&self) -> FaultSwitch {
        FaultSwitch(Arc::clone(&self.stats))
    }

    /// False once the commit thread has ended (it never should while the store is open).
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Close the queue, then wait for the final flush so the sled handle is released before
        // anyone reopens the same path.
        self.tickets.take();
        let ended = self.ended.take().map(|ended| {
            let ended = ended.into_inner().unwrap_or_else(|p| p.into_inner());
            ended.recv_timeout(FINAL_FLUSH_WAIT)
        });
        if let Some(Err(mpsc::RecvTimeoutError::Timeout)) = ended {
            // Still flushing: the disk hangs. Leave the thread to the process's exit.
            tracing::error!(
                wait_ms = FINAL_FLUSH_WAIT.as_millis() as u64,
                "the store's final flush did not finish; not waiting for it any longer"
            );
            return;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(durability: &Durability, file: File, rx: mpsc::Receiver<Ticket>, stats: Arc<CommitStats>) {
    let faults = FaultSwitch(Arc::clone(&stats));
    let syncer = match Syncer::start() {
        Ok(syncer) => Some(syncer),
        Err(error) => {
            // Commits still work, syncing after the apply instead of alongside it.
            tracing::error!(%error, "cannot start the journal's sync thread");
            None
        }
    };
    let syncer = syncer.as_ref();
    let checkpointer = Checkpointer::start(durability, &stats);
    let mut last_rotation = Instant::now();
    loop {
        let first = match rx.recv_timeout(LAZY_APPLY) {
            Ok(first) => Some(first),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(first) = first {
            // Every ticket taken so far is answered by the sync that starts now.
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let full = batch.iter().any(|ticket| ticket.full);
            let result =
                commit(durability, &file, &faults, syncer, batch.len(), full).unwrap_or(Ok(()));
            stats
                .tickets
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for ticket in batch {
                let _ = ticket.reply.send(result.clone());
            }
        } else {
            // Idle: make what was staged without a ticket durable; nobody waits on it.
            commit(durability, &file, &faults, syncer, 0, false);
        }
        let every = stats.checkpoint_every_ms.load(Ordering::Relaxed);
        let due = last_rotation.elapsed().as_millis() as u64 >= every
            || durability.writer.journal_len() >= CHECKPOINT_BYTES;
        if due {
            last_rotation = Instant::now();
            checkpointer.rotate(&durability.writer);
        }
    }
    checkpointer.stop();
    final_flush(durability, &file, &stats);
}

/// At shutdown: write and journal what is staged, spill the queue entries still in memory,
/// flush sled, and remove the journal files it now holds, so the next start has nothing to replay.
fn final_flush(durability: &Durability, file: &File, stats: &CommitStats) {
    let flushed = durability
        .writer
        .write_everything()
        .map_err(Arc::new)
        // A full sync: undelivered queue entries still in memory go into sled before its flush.
        .and_then(|_| sync(durability, file, stats, true))
        .and_then(|()| journal::remove_all(&durability.dir).map_err(Arc::new));
    if let Err(error) = flushed {
        tracing::error!(%error, "final store flush failed");
    }
}

/// Apply what is staged and sync it, recording the outcome (health, latency, failures) the
/// same way whoever asked. With `tickets` waiting it always syncs (a full ticket among them
/// also flushes sled, for writes made outside the staging). An idle pass (no tickets) syncs
/// only if it applied something, and returns `None` otherwise. A failed commit's records are
/// cut off the journal.
///
/// A panic inside sled (an assertion, a page it cannot read) is a failed commit like an I/O
/// error: caught here, so this thread lives on to commit the next batch, and health says the
/// store is failing until a commit succeeds. (Uncaught, it would end the thread: every later
/// write would fail while health still showed the last commit's success.)
fn commit(
    durability: &Durability,
    file: &File,
    faults: &FaultSwitch,
    syncer: Option<&Syncer>,
    tickets: usize,
    full: bool,
) -> Option<CommitResult> {
    let stats = &*faults.0;
    let started = Instant::now();
    stats
        .running_since_ms
        .store(stats.clock.now_ms(), Ordering::SeqCst);
    // Where this commit's journal records start; none if a panic came before the append.
    let mut journaled = None;
    // The journal's sync, started as soon as the batch's record is appended.
    let mut syncing: Option<Started> = None;
    // The batch written, whose kept writes go back to the staging should its sync fail.
    let mut written = None;
    let attempt = catch_unwind(AssertUnwindSafe(|| {
        // Injected panics go to commits someone waits for: while applying if anything is
        // staged, else right here.
        let panic = tickets > 0 && faults.take_panic();
        let refuse = durability.writer.has_staged() && faults.take_refusal();
        let (from, applied) = durability.writer.write_staged(panic, refuse, |journal| {
            syncing = syncer.map(|syncer| syncer.begin(journal));
        });
        journaled = Some(from);
        let applied = applied.map(|batch| {
            let any = batch.is_some();
            written = batch;
            any
        });
        if panic && matches!(applied, Ok(false)) {
            panic!("fault injection: a panic in the commit");
        }
        if !matches!(applied, Ok(false) if tickets == 0) {
            spent(&stats.apply_us, started);
        }
        match applied {
            Ok(false) if tickets == 0 => None,
            Ok(false) => Some(sync(durability, file, stats, full)),
            Ok(true) => Some(synced(
                durability,
                file,
                stats,
                full,
                syncer,
                syncing.take(),
            )),
            Err(error) => Some(Err(Arc::new(error))),
        }
    }));
    // A sync still under way (the apply failed or panicked) ends before the journal is cut.
    if let (Some(syncer), Some(started)) = (syncer, syncing.take()) {
        let _ = syncer.finish(started);
    }
    stats.running_since_ms.store(0, Ordering::SeqCst);
    let result = match attempt {
        Ok(None) => return None,
        Ok(Some(result)) => result,
        Err(panic) => Err(Arc::new(std::io::Error::other(format!(
            "the store commit panicked: {}",
            panic_message(&*panic)
        )))),
    };
    if let (Err(_), Some(from)) = (&result, journaled) {
        // Its callers are told the change failed (and the registry reverts it in sled): the
        // journal must not replay it after a crash either.
        if let Err(error) = durability.writer.cut_back(from) {
            tracing::error!(%error, "cannot cut a failed commit off the journal");
        }
        // The batch is in sled but no longer in the journal: its kept writes go again with
        // the next batch (a crash before then would lose them), its owners' changes are
        // reverted by their owners, who are told below.
        if let Some(batch) = written.take() {
            durability.writer.restage(batch);
        }
    }
    stats
        .last_sync_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match &result {
        Ok(()) => {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            stats.healthy.store(true, Ordering::SeqCst);
            stats
                .last_flush_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        }
        Err(error) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            stats.healthy.store(false, Ordering::SeqCst);
            tracing::error!(%error, tickets, "store commit failed");
        }
    }
    Some(result)
}
