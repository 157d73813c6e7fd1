//! What the group commit reports about itself, lock-free: health (last success, failures, a
//! commit under way), fault-injection counters, and the totals behind `/metrics` and
//! diagnostics. Written by the commit and checkpoint threads; read by anyone.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

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
    /// Injected write refusals (commits with writes) still to come.
    pub refuse_next: AtomicU32,
    /// Injected stalls still to come, and how long each holds its commit before the sync.
    pub stall_next: AtomicU32,
    pub stall_ms: AtomicU64,
    /// When the commit under way started ([`Clock`] ms), 0 between commits: a disk that hangs
    /// shows here rather than as silence.
    pub running_since_ms: AtomicI64,
    pub clock: Clock,
    /// Durability requests answered, over all commits: the ratio to commits is the batch size.
    pub tickets: AtomicU64,
    /// Time spent in each phase, over all commits, microseconds: applying the staged writes
    /// (to sled and the journal), sled's `flush()` (full commits and checkpoints), and the
    /// `fdatasync`s (the journal's, and sled's data file's for full commits and checkpoints).
    pub apply_us: AtomicU64,
    pub flush_us: AtomicU64,
    pub fdatasync_us: AtomicU64,
    /// Checkpoints done (sled flushed and synced, old journal files removed), and failed.
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    /// Fault injection: checkpoints still to fail.
    pub checkpoint_fail_next: AtomicU32,
    /// How often to cut the journal for a checkpoint (`store.checkpoint_every`), ms.
    pub checkpoint_every_ms: AtomicU64,
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
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
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
    pub(super) fn now_ms(&self) -> i64 {
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
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: self.checkpoint_failures.load(Ordering::Relaxed),
        }
    }
}

/// Adds the time since `started` to a phase's total.
pub(super) fn spent(total: &AtomicU64, started: Instant) {
    total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}
