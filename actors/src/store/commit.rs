//! Group commit: many writers, one blocking `flush()` + `fdatasync` on a dedicated thread.
//!
//! Why not `flush_async()` per request: in sled 0.34 it runs on sled's own small IO pool and waits
//! for work queued on that same pool, so seven concurrent flushes deadlock the process for good.
//! Here every caller that needs durability asks for a commit ticket; the flusher thread takes all
//! tickets queued so far, makes them durable once, and answers them together. A lone request is
//! flushed at once (no timer), a burst shares one sync.
//!
//! Why the extra `fdatasync`: sled's `flush()` ends in `sync_file_range` on Linux, which neither
//! writes metadata nor empties the device's write cache, so it does not survive power loss. After
//! the flush we `sync_data()` sled's data file (`<store>/db`); fsync works per file whichever
//! descriptor calls it, so our own handle syncs sled's writes. A ticket is answered only after a
//! sync that *started after* the ticket was taken, so every write made before the ticket is on
//! stable storage when it resolves.
//!
//! Staged writes (`staging.rs`) are applied by this thread, as one sled transaction per batch,
//! right before the batch's sync: the `apply` closure it is started with does that. Writes that
//! nobody waits on (history entries from notifiers) take no ticket: they ride along with the next
//! batch, or are applied and synced by the thread itself once it has been idle for
//! [`LAZY_APPLY`], so they cost no sync of their own under load.
//!
//! Fault injection (`debug.fault_injection`, `faults.rs`) makes commits fail, panic or hang, to
//! prove that callers never acknowledge what did not reach the disk.
//! This thread never touches anything but the sled handle and the data file it was given.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::faults::{self, FaultSwitch};
use crate::supervision::panic_message;

/// Answer to one ticket: `Ok` once everything written before the ticket is on stable storage.
pub type CommitResult = Result<(), Arc<std::io::Error>>;

/// What the flusher reports about itself (read by health and diagnostics; lock-free).
#[derive(Default)]
pub struct CommitStats {
    /// Milliseconds since the epoch of the last successful sync (0 = none yet).
    pub last_flush_ms: AtomicI64,
    /// False from a failed sync until the next successful one.
    pub healthy: AtomicBool,
    pub syncs: AtomicU64,
    pub failures: AtomicU64,
    /// Duration of the last sync (flush + fdatasync), microseconds.
    pub last_sync_us: AtomicU64,
    /// Injected failures still to come.
    pub fail_next: AtomicU32,
    /// Injected panics (inside the transaction of a commit with staged writes) still to come.
    pub panic_next: AtomicU32,
    /// Injected stalls still to come, and how long each holds its commit before the sync.
    pub stall_next: AtomicU32,
    pub stall_ms: AtomicU64,
    /// When the commit under way started ([`Clock`] ms), 0 between commits: a disk that hangs
    /// shows here rather than as silence.
    pub running_since_ms: AtomicI64,
    pub clock: Clock,
    /// Durability requests answered, over all commits: the ratio to commits is the batch size.
    pub tickets: AtomicU64,
    /// Time spent in each phase, over all commits, microseconds: applying the staged writes,
    /// sled's `flush()`, and the `fdatasync`.
    pub apply_us: AtomicU64,
    pub flush_us: AtomicU64,
    pub fdatasync_us: AtomicU64,
}

/// What the group commit has done since start, for `/metrics` and diagnostics: where the time
/// of a durable write goes (a slow disk shows in `fdatasync_seconds`, a write-heavy batch in
/// `apply_seconds`) and how many requests share a commit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitTotals {
    /// Commits attempted (successful or not).
    pub commits: u64,
    /// Durability requests they answered.
    pub requests: u64,
    pub apply_seconds: f64,
    pub flush_seconds: f64,
    pub fdatasync_seconds: f64,
}

/// Monotonic milliseconds since the stats were made, never 0 (0 means "no commit under way"):
/// a wall clock stepped by NTP must not fake or hide a stall.
pub struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock {
    fn now_ms(&self) -> i64 {
        self.0.elapsed().as_millis() as i64 + 1
    }
}

impl CommitStats {
    /// How long the commit under way has been running, if one is.
    pub fn running_ms(&self) -> Option<u64> {
        match self.running_since_ms.load(Ordering::SeqCst) {
            0 => None,
            since => Some(self.clock.now_ms().saturating_sub(since).max(0) as u64),
        }
    }

    pub fn totals(&self) -> CommitTotals {
        let seconds = |us: &AtomicU64| us.load(Ordering::Relaxed) as f64 / 1e6;
        CommitTotals {
            commits: self.syncs.load(Ordering::Relaxed) + self.failures.load(Ordering::Relaxed),
            requests: self.tickets.load(Ordering::Relaxed),
            apply_seconds: seconds(&self.apply_us),
            flush_seconds: seconds(&self.flush_us),
            fdatasync_seconds: seconds(&self.fdatasync_us),
        }
    }
}

/// Adds the time since `started` to a phase's total.
fn spent(total: &AtomicU64, started: Instant) {
    total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// Applies the staged writes; runs on the flusher thread before every sync. `Ok(true)` if
/// anything was staged. `true`: fault injection wants its transaction to panic.
pub type ApplyStaged = Box<dyn Fn(bool) -> std::io::Result<bool> + Send>;

/// How long staged writes without a ticket may wait for a batch to carry them.
pub const LAZY_APPLY: std::time::Duration = std::time::Duration::from_millis(50);

pub struct GroupCommit {
    tickets: Option<mpsc::Sender<oneshot::Sender<CommitResult>>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Closed by the thread when it ends (its final flush done), so a drop can wait with a limit.
    ended: Option<std::sync::Mutex<mpsc::Receiver<()>>>,
    stats: Arc<CommitStats>,
}

/// How long dropping the store waits for the final flush: a disk that hangs must not keep the
/// process from exiting (and its supervisor from restarting it).
const FINAL_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl GroupCommit {
    pub fn start(db: sled::Db, data_file: &Path, apply: ApplyStaged) -> std::io::Result<Self> {
        let file = File::open(data_file)?;
        let (tx, rx) = mpsc::channel::<oneshot::Sender<CommitResult>>();
        let stats = Arc::new(CommitStats {
            healthy: AtomicBool::new(true),
            ..Default::default()
        });
        let shared = Arc::clone(&stats);
        let (ended_tx, ended) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || {
                run(db, file, apply, rx, shared);
                drop(ended_tx);
            })?;
        Ok(Self {
            tickets: Some(tx),
            thread: Some(thread),
            ended: Some(std::sync::Mutex::new(ended)),
            stats,
        })
    }

    /// A future that resolves once every write made before this call is durable.
    pub fn ticket(&self) -> oneshot::Receiver<CommitResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(tickets) = &self.tickets {
            // A send error means the flusher is gone; dropping `tx` makes the receiver fail,
            // which callers report as an unavailable store.
            let _ = tickets.send(tx);
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

/// One durable point: sled's flush (its log reaches the file), then fdatasync of that file.
fn sync(db: &sled::Db, file: &File, stats: &CommitStats) -> CommitResult {
    faults::before_sync(stats)?;
    let started = Instant::now();
    let flushed = db.flush();
    spent(&stats.flush_us, started);
    flushed.map_err(|e| Arc::new(std::io::Error::other(e.to_string())))?;
    let started = Instant::now();
    let synced = file.sync_data();
    spent(&stats.fdatasync_us, started);
    synced.map_err(Arc::new)
}

fn run(
    db: sled::Db,
    file: File,
    apply: ApplyStaged,
    rx: mpsc::Receiver<oneshot::Sender<CommitResult>>,
    stats: Arc<CommitStats>,
) {
    let faults = FaultSwitch(Arc::clone(&stats));
    loop {
        let first = match rx.recv_timeout(LAZY_APPLY) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Idle: make what was staged without a ticket durable; nobody waits on it.
                commit(&db, &file, &apply, &faults, 0);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // Every ticket taken so far is answered by the sync that starts now.
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = commit(&db, &file, &apply, &faults, batch.len()).unwrap_or(Ok(()));
        stats
            .tickets
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
    }
    if let Err(error) = apply(false)
        .map_err(Arc::new)
        .and_then(|_| sync(&db, &file, &stats))
    {
        tracing::error!(%error, "final store flush failed");
    }
}

/// Apply what is staged and sync it, recording the outcome (health, latency, failures) the
/// same way whoever asked. With `tickets` waiting it always syncs: writes made outside the
/// staging (acks) ride on it. An idle pass (no tickets) syncs only if it applied something, and
/// returns `None` otherwise.
///
/// A panic inside sled (an assertion, a page it cannot read) is a failed commit like an I/O
/// error: caught here, so this thread lives on to commit the next batch, and health says the
/// store is failing until a commit succeeds. (Uncaught, it would end the thread: every later
/// write would fail while health still showed the last commit's success.)
fn commit(
    db: &sled::Db,
    file: &File,
    apply: &ApplyStaged,
    faults: &FaultSwitch,
    tickets: usize,
) -> Option<CommitResult> {
    let stats = &*faults.0;
    let started = Instant::now();
    stats
        .running_since_ms
        .store(stats.clock.now_ms(), Ordering::SeqCst);
    let attempt = catch_unwind(AssertUnwindSafe(|| {
        // Injected panics go to commits someone waits for: inside the transaction if anything
        // is staged, else right here.
        let panic = tickets > 0 && faults.take_panic();
        let applied = apply(panic);
        if panic && matches!(applied, Ok(false)) {
            panic!("fault injection: a panic in the commit");
        }
        if !matches!(applied, Ok(false) if tickets == 0) {
            spent(&stats.apply_us, started);
        }
        match applied {
            Ok(false) if tickets == 0 => None,
            Ok(_) => Some(sync(db, file, stats)),
            Err(error) => Some(Err(Arc::new(error))),
        }
    }));
    stats.running_since_ms.store(0, Ordering::SeqCst);
    let result = match attempt {
        Ok(None) => return None,
        Ok(Some(result)) => result,
        Err(panic) => Err(Arc::new(std::io::Error::other(format!(
            "the store commit panicked: {}",
            panic_message(&*panic)
        )))),
    };
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
