//! Group commit: many writers, one blocking `flush()` on a dedicated thread.
//!
//! Why not `flush_async()` per request: in sled 0.34 it runs on sled's own small IO pool and waits
//! for work queued on that same pool, so seven concurrent flushes deadlock the process for good.
//! Here every caller that needs durability asks for a commit ticket; the flusher thread takes all
//! tickets queued so far, flushes once, and answers them together. A lone request is flushed at
//! once (no timer), a burst shares one fsync. This thread never touches anything but the sled
//! handle it was given.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

/// Answer to one ticket: `Ok` once everything written before the ticket is on disk.
pub type CommitResult = Result<(), Arc<sled::Error>>;

pub struct GroupCommit {
    tickets: Option<mpsc::Sender<oneshot::Sender<CommitResult>>>,
    thread: Option<thread::JoinHandle<()>>,
    last_flush_ms: Arc<AtomicI64>,
}

impl GroupCommit {
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<oneshot::Sender<CommitResult>>();
        let last_flush_ms = Arc::new(AtomicI64::new(0));
        let last = Arc::clone(&last_flush_ms);
        let thread = thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || run(db, rx, last))?;
        Ok(Self {
            tickets: Some(tx),
            thread: Some(thread),
            last_flush_ms,
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

    /// Milliseconds since the epoch of the last successful flush (0 = none yet).
    pub fn last_flush_ms(&self) -> i64 {
        self.last_flush_ms.load(Ordering::Relaxed)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Close the queue, then wait for the final flush so the sled handle is released before
        // anyone reopens the same path.
        self.tickets.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    db: sled::Db,
    rx: mpsc::Receiver<oneshot::Sender<CommitResult>>,
    last_flush: Arc<AtomicI64>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = db.flush().map(|_| ()).map_err(Arc::new);
        if result.is_ok() {
            last_flush.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        } else {
            tracing::error!(error = ?result, "sled flush failed");
        }
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
    }
    if let Err(error) = db.flush() {
        tracing::error!(%error, "final sled flush failed");
    }
}
