//! What sled 0.34 costs for one create's write set, without the service around it: the same
//! trees and value sizes the registry writes (a record, one queue entry per channel, a history
//! entry, a status-index key), applied the way the group commit applies them (one transaction
//! per batch, then `flush()`), on one thread. Variants drop parts of the write set or the
//! transaction, to show which part costs what. Most rows take no `fdatasync` (that is per batch,
//! not per create, and depends on the disk); the last three compare the group commit's durable
//! point (flush + fdatasync of sled's file) with a write-ahead journal in front of sled (the
//! batch appended to a file of its own and fdatasynced, sled never flushed per batch).
//!
//! `cargo run --release --example sled-probe` (about 10 s). Figures in docs/benchmarks.md.

use std::time::Instant;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

/// One create's writes: value sizes in bytes (0 = not written) and how many queue entries.
struct WriteSet {
    name: &'static str,
    record: usize,
    queue_entry: usize,
    channels: usize,
    history: usize,
    status_index: bool,
    transaction: bool,
    /// One tree, each logical tree a key prefix, and one atomic `apply_batch` per batch.
    one_tree: bool,
    /// Durable point per batch: `Flush` (sled flush + fdatasync of its file) or `Journal` (the
    /// batch appended to a journal file + fdatasync; sled never flushed per batch).
    durable: Durable,
    batch: usize,
}

const CREATES: usize = 30_000;

#[derive(Clone, Copy, PartialEq)]
enum Durable {
    None,
    Flush,
    Journal,
}

type Op = (usize, Vec<u8>, Vec<u8>);

/// The operations of one batch: (tree index, key, value), in the registry's order.
fn batch_ops(db: &sled::Db, set: &WriteSet) -> sled::Result<Vec<Op>> {
    let mut ops = Vec::new();
    for _ in 0..set.batch {
        let id = ulid::Ulid::new().to_bytes();
        ops.push((0, id.to_vec(), vec![7; set.record]));
        if set.status_index {
            let mut status = vec![0u8];
            status.extend_from_slice(&id);
            ops.push((1, status, Vec::new()));
        }
        for channel in 0..set.channels {
            let mut key = vec![channel as u8];
            key.extend_from_slice(&db.generate_id()?.to_be_bytes());
            ops.push((2, key, vec![9; set.queue_entry]));
        }
        if set.history > 0 {
            let mut key = id.to_vec();
            key.extend_from_slice(&db.generate_id()?.to_be_bytes());
            ops.push((3, key, vec![3; set.history]));
        }
    }
    Ok(ops)
}

/// Microseconds per create, flush included.
fn run(set: &WriteSet) -> Result<f64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let trees = ["approvals", "by_status", "queues", "events"]
        .map(|name| db.open_tree(name))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let data = std::fs::File::open(dir.path().join("db"))?;
    let mut journal = std::fs::File::create(dir.path().join("journal"))?;
    let started = Instant::now();
    let mut done = 0;
    while done < CREATES {
        let ops = batch_ops(&db, set)?;
        if set.durable == Durable::Journal {
            use std::io::Write;
            let mut buf = Vec::new();
            for (tree, key, value) in &ops {
                buf.push(*tree as u8);
                buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                buf.extend_from_slice(key);
                buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
                buf.extend_from_slice(value);
            }
            journal.write_all(&buf)?;
            journal.sync_data()?;
        }
        if set.one_tree {
            let mut batch = sled::Batch::default();
            for (tree, key, value) in ops {
                let mut prefixed = vec![tree as u8];
                prefixed.extend_from_slice(&key);
                batch.insert(prefixed, value);
            }
            trees[0].apply_batch(batch)?;
        } else if set.transaction {
            (&trees[0], &trees[1], &trees[2], &trees[3])
                .transaction(|(a, s, q, e)| {
                    for (tree, key, value) in &ops {
                        [a, s, q, e][*tree].insert(key.as_slice(), value.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| format!("transaction: {e:?}"))?;
        } else {
            for (tree, key, value) in ops {
                trees[tree].insert(key, value)?;
            }
        }
        match set.durable {
            Durable::None => {
                db.flush()?;
            }
            Durable::Flush => {
                db.flush()?;
                data.sync_data()?;
            }
            Durable::Journal => {}
        }
        done += set.batch;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = |name, batch| WriteSet {
        name,
        record: 600,
        queue_entry: 700,
        channels: 2,
        history: 200,
        status_index: true,
        transaction: true,
        one_tree: false,
        durable: Durable::None,
        batch,
    };
    let sets = [
        full("full write set (2 channels), batches of 20", 20),
        WriteSet {
            transaction: false,
            ..full("the same as plain inserts (not atomic)", 20)
        },
        WriteSet {
            one_tree: true,
            ..full("one tree, key prefixes, one apply_batch (atomic)", 20)
        },
        WriteSet {
            channels: 1,
            ..full("one channel", 20)
        },
        WriteSet {
            queue_entry: 100,
            ..full("queue entries of 100 B (no record copy)", 20)
        },
        WriteSet {
            channels: 0,
            ..full("no queue entries", 20)
        },
        WriteSet {
            channels: 0,
            history: 0,
            ..full("the record and its status key only", 20)
        },
        full("full write set, batches of 60", 60),
        WriteSet {
            durable: Durable::Flush,
            ..full("full, flush + fdatasync per batch", 20)
        },
        WriteSet {
            durable: Durable::Journal,
            transaction: false,
            ..full("full, plain inserts, journal + fdatasync per batch", 20)
        },
        WriteSet {
            durable: Durable::Journal,
            ..full("full, transaction, journal + fdatasync per batch", 20)
        },
        WriteSet {
            record: 200,
            channels: 0,
            history: 0,
            status_index: false,
            transaction: false,
            ..full("the baseline's: one plain 200 B insert, batches of 64", 64)
        },
    ];
    println!("sled 0.34 write set of one create, {CREATES} creates per row, one thread");
    for set in &sets {
        println!("  {:48} {:5.1} µs per create", set.name, run(set)?);
    }
    Ok(())
}
