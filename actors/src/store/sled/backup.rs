//! Backups: every tree of the store written to one file, and a store rebuilt from one.
//!
//! Format (v1): the line `approval-gate backup v1\n`, then records `1, name_len u16, name,
//! key_len u32, key, value_len u32, value` (big-endian), then `0, record count u64`. The end
//! marker and its count let a restore refuse a truncated file. The store writes a snapshot while
//! the registry holds still (see `Backup` in the registry), so the approval trees are consistent.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::staging::{Target, tag};
use super::{StoreError, record, status_index};

const MAGIC: &[u8] = b"approval-gate backup v1\n";
/// Every tree a store has; a backup holds all of them (unknown ones in a file are restored too).
pub const TREES: &[&str] = &[
    "approvals",
    "idempotency",
    "by_status",
    "queues",
    "dead_letters",
    "telegram_messages",
    "grants",
    "events",
    "meta",
];

fn io(error: std::io::Error) -> StoreError {
    StoreError::Queue(format!("backup I/O failed: {error}"))
}

/// What a backup or a restore handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupStats {
    pub records: u64,
    pub bytes: u64,
}

/// A backup file being written: records in, then [`Writer::finish`] writes the end marker and
/// syncs the file. For a backup of sled, and for an export from another backend.
pub struct Writer {
    out: BufWriter<File>,
    records: u64,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let file = File::create(path).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC).map_err(io)?;
        Ok(Self { out, records: 0 })
    }

    pub fn record(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let out = &mut self.out;
        out.write_all(&[1]).map_err(io)?;
        out.write_all(&(name.len() as u16).to_be_bytes())
            .map_err(io)?;
        out.write_all(name.as_bytes()).map_err(io)?;
        out.write_all(&(key.len() as u32).to_be_bytes())
            .map_err(io)?;
        out.write_all(key).map_err(io)?;
        out.write_all(&(value.len() as u32).to_be_bytes())
            .map_err(io)?;
        out.write_all(value).map_err(io)?;
        self.records += 1;
        Ok(())
    }

    /// The end marker and the record count, then an fsync: a file that returned here is whole.
    pub fn finish(mut self) -> Result<BackupStats, StoreError> {
        self.out.write_all(&[0]).map_err(io)?;
        self.out
            .write_all(&self.records.to_be_bytes())
            .map_err(io)?;
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        Ok(BackupStats {
            records: self.records,
            bytes,
        })
    }
}

/// Write every tree of `db` to `path` (created; synced before returning), with `seq_floor`
/// (above every sequence number issued so far) as the `meta` tree's sequence floor, so a
/// restored store never issues a number its data already holds.
pub fn write(db: &sled::Db, path: &Path, seq_floor: u64) -> Result<BackupStats, StoreError> {
    let mut out = Writer::create(path)?;
    for name in TREES {
        let tree = db.open_tree(name)?;
        for entry in tree.iter() {
            let (key, value) = entry?;
            match (*name, key.as_ref()) {
                ("meta", super::SEQ_FLOOR_KEY) => continue, // written below, raised
                // Derived from the records, rebuilt by the restored store's first start
                // (`SledStore::migrate`): a backup holds what every version reads.
                ("meta", super::SCHEMA_KEY) | ("by_status", status_index::ENDED_KEY) => continue,
                // The record, and one record per history entry (`id ++ seq`) in `events`, as
                // backups always held them (`record.rs`).
                ("approvals", id) => {
                    // History without its record (entries observed after retention removed
                    // the approval) is left out: nothing reads it, and an import needs the
                    // approval its history belongs to.
                    let Some(record) = record::record(&value) else {
                        continue;
                    };
                    out.record(name, id, record)?;
                    for (seq, entry) in record::entries(&value) {
                        out.record("events", &record::key_of(id, seq), entry)?;
                    }
                }
                _ => out.record(name, &key, &value)?,
            }
        }
    }
    out.record("meta", super::SEQ_FLOOR_KEY, &seq_floor.to_be_bytes())?;
    out.finish()
}

fn read_exact<const N: usize>(input: &mut impl Read) -> Result<[u8; N], StoreError> {
    let mut buf = [0u8; N];
    input
        .read_exact(&mut buf)
        .map_err(|_| StoreError::Queue("the backup is truncated".into()))?;
    Ok(buf)
}

fn read_vec(input: &mut impl Read, len: usize) -> Result<Vec<u8>, StoreError> {
    let mut buf = vec![0u8; len];
    input
        .read_exact(&mut buf)
        .map_err(|_| StoreError::Queue("the backup is truncated".into()))?;
    Ok(buf)
}

/// One record of a backup: the tree it belongs to, its key and its value.
pub type Record = (String, Vec<u8>, Vec<u8>);

/// A backup file read record by record: `(tree, key, value)`, in the order they were written,
/// and at the end a check that the file is complete (its end marker and record count). For a
/// restore into sled, and for an import into another backend (`store/postgres/import.rs`).
pub struct Reader {
    input: BufReader<File>,
    records: u64,
    done: bool,
    /// The file's size.
    pub bytes: u64,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let magic = read_vec(&mut input, MAGIC.len())?;
        if magic != MAGIC {
            return Err(StoreError::Queue("not an approval-gate backup (v1)".into()));
        }
        Ok(Self {
            input,
            records: 0,
            done: false,
            bytes,
        })
    }

    /// The next record, or `None` once the end marker was read and its count matched.
    pub fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let input = &mut self.input;
        let [tag] = read_exact::<1>(input)?;
        if tag == 0 {
            let expected = u64::from_be_bytes(read_exact::<8>(input)?);
            if expected != self.records {
                return Err(StoreError::Queue(format!(
                    "the backup says {expected} records but holds {}",
                    self.records
                )));
            }
            self.done = true;
            return Ok(None);
        }
        let name_len = u16::from_be_bytes(read_exact::<2>(input)?) as usize;
        let name = String::from_utf8(read_vec(input, name_len)?)
            .map_err(|_| StoreError::Queue("a tree name is not UTF-8".into()))?;
        let key_len = u32::from_be_bytes(read_exact::<4>(input)?) as usize;
        let key = read_vec(input, key_len)?;
        let value_len = u32::from_be_bytes(read_exact::<4>(input)?) as usize;
        let value = read_vec(input, value_len)?;
        self.records += 1;
        Ok(Some((name, key, value)))
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// Rebuild a store at `store` from the backup at `path`. Refuses a store path that exists and is
/// not empty, and a file that is not a complete backup (nothing is left behind then).
pub fn restore(path: &Path, store: &Path) -> Result<BackupStats, StoreError> {
    if store.exists() && std::fs::read_dir(store).map_err(io)?.next().is_some() {
        return Err(StoreError::Queue(format!(
            "{} is not empty: restore only into a new or empty folder",
            store.display()
        )));
    }
    let mut reader = Reader::open(path)?;
    let bytes = reader.bytes;
    // No background flusher: it holds the database (and its file lock) past our drop, and a
    // store opened at once after the restore would find the lock still taken.
    let db = sled::Config::new()
        .path(store)
        .flush_every_ms(None)
        .open()
        .map_err(|source| StoreError::Open {
            path: store.to_path_buf(),
            source,
        })?;
    let result = (|| {
        let approvals = db.open_tree("approvals")?;
        record::attach(&approvals);
        while let Some((name, key, value)) = reader.next_record()? {
            let tree = match name.as_str() {
                "approvals" => tag(Target::Approvals),
                "events" => tag(Target::Events),
                _ => u8::MAX,
            };
            // Records and history entries merge into the approval's value (`record.rs`); the
            // store's first start rebuilds what depends on its layout (`SledStore::migrate`).
            match record::apply(&approvals, tree, &key, Some(&value)) {
                Some(merged) => merged?,
                None if name == "meta" && key == super::SCHEMA_KEY => continue,
                None => drop(db.open_tree(&name)?.insert(key, value)?),
            }
        }
        db.flush()?;
        // flush() is not an fsync on Linux; the data file is.
        File::open(store.join("db"))
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        Ok(reader.records())
    })();
    drop(db);
    match result {
        Ok(records) => Ok(BackupStats { records, bytes }),
        Err(error) => {
            // Leave no half-restored store behind.
            let _ = std::fs::remove_dir_all(store);
            Err(error)
        }
    }
}
