//! A commit's durable point, for the commit and checkpoint threads: the journal's `fdatasync`
//! (started alongside the apply, `syncer.rs`), and for a full commit or a checkpoint the spill of
//! the queue entries kept in memory, sled's `flush()` and an `fdatasync` of its data file. It
//! touches only what it is handed: the writer, sled and the files.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::blobs::Blobs;
use super::commit::{CommitResult, Durability};
use super::commit_stats::{CommitStats, spent};
use super::faults;
use super::syncer::{Started, Syncer};
use super::writer::Writer;

/// sled's flush (its log reaches the file), then fsync of the blob files it wrote for large
/// records and fdatasync of its data file.
pub(super) fn flush_sled(
    db: &sled::Db,
    blobs: &Blobs,
    file: &File,
    stats: &CommitStats,
) -> CommitResult {
    let started = Instant::now();
    let flushed = db.flush();
    spent(&stats.flush_us, started);
    flushed.map_err(|e| Arc::new(std::io::Error::other(e.to_string())))?;
    let started = Instant::now();
    let synced = blobs.sync().and_then(|_| file.sync_data());
    spent(&stats.fdatasync_us, started);
    synced.map_err(Arc::new)
}

/// Everything written so far into sled, durably: the queue entries still in memory are spilled
/// first (one whose journal record a failed commit cut off is held by nothing else), then sled
/// is flushed and its data file synced.
fn flush_all(durability: &Durability, file: &File, stats: &CommitStats) -> CommitResult {
    spill(&durability.writer)?;
    flush_sled(&durability.db, &durability.blobs, file, stats)
}

/// Move the undelivered queue entries that only the journal holds into sled (before a flush
/// that lets the journal go: a checkpoint, a full commit).
pub(super) fn spill(writer: &Writer) -> CommitResult {
    writer.spill().map(drop).map_err(|e| {
        Arc::new(std::io::Error::other(format!(
            "cannot spill queue entries: {e}"
        )))
    })
}

/// A batch's durable point when its journal sync was started alongside the apply: wait for it
/// (or sync now without a sync thread), then, for a full commit, flush sled and sync it too.
pub(super) fn synced(
    durability: &Durability,
    file: &File,
    stats: &CommitStats,
    full: bool,
    syncer: Option<&Syncer>,
    started: Option<Started>,
) -> CommitResult {
    let (Some(syncer), Some(started)) = (syncer, started) else {
        return sync(durability, file, stats, full);
    };
    let injected = faults::before_sync(stats);
    let (synced, took) = syncer.finish(started);
    stats
        .fdatasync_us
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    injected?;
    synced.map_err(Arc::new)?;
    if full {
        flush_all(durability, file, stats)?;
    }
    Ok(())
}

/// One durable point: the journal's fdatasync, and for a full commit sled's flush and sync too.
pub(super) fn sync(
    durability: &Durability,
    file: &File,
    stats: &CommitStats,
    full: bool,
) -> CommitResult {
    faults::before_sync(stats)?;
    let started = Instant::now();
    let synced = durability.writer.sync();
    spent(&stats.fdatasync_us, started);
    synced.map_err(Arc::new)?;
    if full {
        flush_all(durability, file, stats)?;
    }
    Ok(())
}
