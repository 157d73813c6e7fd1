//! Fault injection for the group commit (`debug.fault_injection`): the next N commits report an
//! I/O error, panic while applying their writes, have their writes refused, or hang before
//! their sync, or the next N checkpoints fail, to prove that callers
//! are never told "durable" for what did not reach the disk and that health tells the truth.
//! The counters live in the commit thread's [`CommitStats`]; nothing here touches sled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::commit::{CommitResult, CommitStats};

/// Lets fault injection make the next commits fail.
#[derive(Clone)]
pub struct FaultSwitch(pub(super) Arc<CommitStats>);

/// How an injected commit fault shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CommitFault {
    /// The sync reports an I/O error, as a failing disk would.
    Error,
    /// The transaction panics, as a bug in sled would.
    Panic,
    /// The commit hangs this long before its sync, as a stalled disk would.
    Stall(std::time::Duration),
    /// sled refuses the commit's writes while a sync alone still succeeds, as after a write
    /// sled's IO threads lost (its error sticks): only commits with writes count down.
    Refuse,
    /// Checkpoints fail (sled's flush refused, as on a full disk): the journal keeps their
    /// files and the next checkpoint retries. Counts checkpoints, not commits.
    Checkpoint,
}

impl FaultSwitch {
    /// The next `count` commits show `fault`.
    pub fn inject(&self, count: u32, fault: CommitFault) {
        match fault {
            CommitFault::Error => self.fail_next(count),
            CommitFault::Panic => self.panic_next(count),
            CommitFault::Stall(each) => self.stall_next(count, each),
            CommitFault::Refuse => self.0.refuse_next.store(count, Ordering::SeqCst),
            CommitFault::Checkpoint => self.0.checkpoint_fail_next.store(count, Ordering::SeqCst),
        }
    }

    pub fn fail_next(&self, count: u32) {
        self.0.fail_next.store(count, Ordering::SeqCst);
    }

    pub fn panic_next(&self, count: u32) {
        self.0.panic_next.store(count, Ordering::SeqCst);
    }

    /// The next `count` commits hang for `each` before their sync, as a stalled disk would.
    pub fn stall_next(&self, count: u32, each: std::time::Duration) {
        self.0
            .stall_ms
            .store(each.as_millis() as u64, Ordering::SeqCst);
        self.0.stall_next.store(count, Ordering::SeqCst);
    }

    /// True if this commit's transaction is to panic (and one fewer is left to come).
    pub(super) fn take_panic(&self) -> bool {
        take_one(&self.0.panic_next)
    }

    /// True if this commit's writes are to be refused (and one fewer is left to come).
    pub(super) fn take_refusal(&self) -> bool {
        take_one(&self.0.refuse_next)
    }
}

/// What an injected fault does to a checkpoint about to flush sled: fail it if one is due.
pub(super) fn before_checkpoint(stats: &CommitStats) -> CommitResult {
    if take_one(&stats.checkpoint_fail_next) {
        return Err(Arc::new(std::io::Error::other(
            "fault injection: checkpoint failed",
        )));
    }
    Ok(())
}

pub(super) fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What an injected fault does to a sync about to start: hang first if a stall is due, then
/// fail if a failure is due.
pub(super) fn before_sync(stats: &CommitStats) -> CommitResult {
    if take_one(&stats.stall_next) {
        let each = stats.stall_ms.load(Ordering::SeqCst);
        tracing::warn!(ms = each, "fault injection: this commit stalls");
        std::thread::sleep(std::time::Duration::from_millis(each));
    }
    if take_one(&stats.fail_next) {
        return Err(Arc::new(std::io::Error::other(
            "fault injection: commit failed",
        )));
    }
    Ok(())
}
