//! The write-ahead journal: the durable point of every staged write.
//!
//! Each group commit appends the batch it applied to sled as one record to `journal-<gen>` in
//! the store's directory and `fdatasync`s that file; a ticket is answered after that sync. sled
//! itself is flushed (and its data file fsynced) only at checkpoints, off the commit path: sled
//! 0.34's flush and the transaction that made a batch atomic cost more than half of a create's
//! commit cycle (figures in docs/benchmarks.md), while an append and one `fdatasync` of a small
//! file cost little.
//!
//! Recovery: on open, every journal file left is replayed into sled in generation order, then
//! sled is flushed and fsynced and the files removed. A record is `len (u32 LE) ++ crc32 (u32
//! LE) ++ ops`; replay stops at the first record that is short or fails its checksum (a crash
//! in the middle of an append, never acknowledged) or belongs to an older generation (see below).
//! Replaying puts and removes in the order they
//! were made leaves every journaled key as the last acknowledged change left it, whatever sled
//! had already made durable itself.
//!
//! Files are recycled: a checkpointed file becomes `journal-spare` and the next generation
//! overwrites it from the start, because an `fdatasync` of writes inside a file's allocated size
//! need not commit the file system's metadata (an append that grows the file does; measured
//! about 1.7× slower on this machine). Each record carries its generation, so the previous
//! generation's records after the last new one end replay instead of being applied.
//!
//! Checkpoint (see `commit.rs`): [`rotate`](Journal::rotate) starts generation N+1 under the
//! writer's lock; once sled's flush and the fsync of its data file have finished after that,
//! generation N is deleted. A crash at any point replays N (if still there) and N+1, in order.
//!
//! This module owns the journal files and their format; it applies ops to the trees it is given
//! and touches nothing else.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record;
use super::staging::{Op, Target, tag};

const PREFIX: &str = "journal-";
const SPARE: &str = "journal-spare";
/// `len (u32 LE) ++ crc32 of generation ++ body (u32 LE) ++ generation (u64 LE)`.
const HEADER: usize = 16;

/// The journal file being appended to.
pub(super) struct Journal {
    dir: PathBuf,
    generation: u64,
    /// Shared so a sync can run without the writer's lock (see [`Journal::syncer`]).
    file: Arc<File>,
    /// Bytes of whole records in `file`: where the next append starts.
    len: u64,
    /// A failed append could not be cut back off: refuse appends until the next rotation, so
    /// no acknowledged record ever lands after a torn one (replay stops at the first).
    broken: bool,
}

/// What replay found on open.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Replayed {
    pub files: usize,
    pub records: u64,
    pub ops: u64,
    /// Files whose tail was a torn or corrupt record (skipped).
    pub torn: usize,
}

fn path_of(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{generation:020}"))
}

/// Journal files in `dir`, oldest generation first.
fn generations(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let generation = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(generation) = generation {
            found.push((generation, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Makes a file's creation or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode(generation: u64, ops: &[Op], out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; HEADER]);
    out[8..HEADER].copy_from_slice(&generation.to_le_bytes());
    for op in ops {
        out.push(tag(op.target));
        out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&op.key);
        match &op.value {
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            None => out.push(0),
        }
    }
    let body = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&body.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads `len` bytes at `*at`, advancing it; `None` past the end.
fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let slice = bytes.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(slice)
}

fn take_u32(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let raw: [u8; 4] = take(bytes, at, 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw) as usize)
}

/// One journaled operation: (tree index, key, value to put or `None` to remove).
type Decoded<'a> = (usize, &'a [u8], Option<&'a [u8]>);

/// One record's ops; `None` if the body does not parse.
fn decode(body: &[u8]) -> Option<Vec<Decoded<'_>>> {
    let mut ops = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let tree = *take(body, &mut at, 1)?.first()? as usize;
        let key_len = take_u32(body, &mut at)?;
        let key = take(body, &mut at, key_len)?;
        let value = match take(body, &mut at, 1)?.first()? {
            1 => {
                let len = take_u32(body, &mut at)?;
                Some(take(body, &mut at, len)?)
            }
            _ => None,
        };
        if tree >= 6 {
            return None;
        }
        ops.push((tree, key, value));
    }
    Some(ops)
}

/// Apply every whole record of generation `generation` at the start of one journal file to
/// `trees`; `(records, ops, torn)`.
fn replay_file(
    path: &Path,
    generation: u64,
    trees: &[sled::Tree; 6],
) -> Result<(u64, u64, bool), sled::Error> {
    let bytes = std::fs::read(path)?;
    let (mut at, mut records, mut ops) = (0, 0, 0);
    while at < bytes.len() {
        let mut cursor = at;
        let header = (take_u32(&bytes, &mut cursor), take_u32(&bytes, &mut cursor));
        let (Some(len), Some(crc)) = header else {
            return Ok((records, ops, true));
        };
        let Some(stamp) = take(&bytes, &mut cursor, 8) else {
            return Ok((records, ops, true));
        };
        if stamp != generation.to_le_bytes() {
            // A record of the generation that used this file before: the end of this one.
            return Ok((records, ops, false));
        }
        let Some(body) = take(&bytes, &mut cursor, len) else {
            return Ok((records, ops, true));
        };
        let decoded = (crc32fast::hash(&bytes[at + 8..cursor]) == crc as u32)
            .then(|| decode(body))
            .flatten();
        let Some(decoded) = decoded else {
            return Ok((records, ops, true));
        };
        for (tree, key, value) in decoded {
            // Records and history entries merge into the approval's value (`record.rs`).
            let approvals = &trees[usize::from(tag(Target::Approvals))];
            match record::apply(approvals, tree as u8, key, value) {
                Some(applied) => applied?,
                None => match value {
                    Some(value) => drop(trees[tree].insert(key, value)?),
                    None => drop(trees[tree].remove(key)?),
                },
            };
            ops += 1;
        }
        records += 1;
        at = cursor;
    }
    Ok((records, ops, false))
}

impl Journal {
    /// Replay what an earlier run left in `dir` into `trees`, make it durable in sled (flush,
    /// then fsync of `data_file`), remove the replayed files, and start a fresh journal.
    pub fn recover(
        dir: &Path,
        db: &sled::Db,
        trees: &[sled::Tree; 6],
        data_file: &Path,
    ) -> Result<(Self, Replayed), sled::Error> {
        let found = generations(dir)?;
        let mut replayed = Replayed::default();
        for (generation, path) in &found {
            let (records, ops, torn) = replay_file(path, *generation, trees)?;
            replayed.files += 1;
            replayed.records += records;
            replayed.ops += ops;
            replayed.torn += usize::from(torn);
        }
        let next = found.last().map_or(1, |(generation, _)| generation + 1);
        if !found.is_empty() {
            db.flush()?;
            super::blobs::Blobs::new(dir).sync()?;
            File::open(data_file)?.sync_data()?;
            for (_, path) in &found {
                std::fs::remove_file(path)?;
            }
            if replayed.records > 0 || replayed.torn > 0 {
                tracing::info!(
                    files = replayed.files,
                    records = replayed.records,
                    ops = replayed.ops,
                    torn = replayed.torn,
                    "replayed the store's journal"
                );
            }
        }
        // A spare left by an earlier run holds records stamped with an older generation; the
        // numbering restarts after the files found, so drop it rather than reason about whether
        // its stamps could match the next one.
        remove(&[dir.join(SPARE)])?;
        Ok((Self::create(dir, next)?, replayed))
    }

    /// The file for `generation`: the spare one if there is one (overwritten from the start),
    /// else a new one.
    fn create(dir: &Path, generation: u64) -> io::Result<Self> {
        let path = path_of(dir, generation);
        let recycled = std::fs::rename(dir.join(SPARE), &path).is_ok();
        let file = OpenOptions::new()
            .create(true)
            .truncate(!recycled)
            .write(true)
            .open(&path)?;
        // The file's name must survive a power loss before anything synced in it counts.
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            generation,
            file: Arc::new(file),
            len: 0,
            broken: false,
        })
    }

    /// Append one batch as a record: all of it or none of it (a partial write is cut back off).
    /// Durable after [`sync`](Self::sync).
    pub fn append(&mut self, ops: &[Op], scratch: &mut Vec<u8>) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "the journal could not cut back a failed append; waiting for the next file",
            ));
        }
        scratch.clear();
        encode(self.generation, ops, scratch);
        if let Err(error) = (&*self.file).write_all(scratch) {
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            // The cursor is past the cut: put it back where the next record starts.
            let _ = io::Seek::seek(&mut &*self.file, io::SeekFrom::Start(self.len));
            return Err(error);
        }
        self.len += scratch.len() as u64;
        Ok(())
    }

    /// Cut the file back to `len` bytes: the records after it belong to a commit that failed,
    /// whose callers were told so, and a replay must not bring them back. If the cut fails,
    /// appends are refused until the next file (a replay would find them after the refused ones).
    pub fn cut_back(&mut self, len: u64) -> io::Result<()> {
        if len >= self.len {
            return Ok(());
        }
        let cut = self
            .file
            .set_len(len)
            .and_then(|()| io::Seek::seek(&mut &*self.file, io::SeekFrom::Start(len)).map(drop));
        match cut {
            Ok(()) => self.len = len,
            Err(_) => self.broken = true,
        }
        cut
    }

    /// The current file, to `fdatasync` without holding the writer's lock: a disk that hangs
    /// in the sync must not block a revert or a backup behind it. Every record appended so far
    /// is in this file (appends and rotations happen only between commits, on one thread).
    pub fn syncer(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Start the next generation if this one holds anything; the old file's path, to delete
    /// once sled has made everything applied so far durable.
    pub fn rotate(&mut self) -> io::Result<Option<PathBuf>> {
        if self.len == 0 && !self.broken {
            return Ok(None);
        }
        let old = path_of(&self.dir, self.generation);
        *self = Self::create(&self.dir, self.generation + 1)?;
        Ok(Some(old))
    }

    /// Bytes in the current file.
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// Remove every journal file in `dir`, the spare included (sled holds all of it durably:
/// shutdown).
pub(super) fn remove_all(dir: &Path) -> io::Result<()> {
    let mut paths: Vec<PathBuf> = generations(dir)?.into_iter().map(|(_, p)| p).collect();
    paths.push(dir.join(SPARE));
    remove(&paths)
}

/// Journal files whose contents sled now holds durably: the first becomes the spare (unless
/// there is one), the others are removed. Only the checkpoint thread calls this; the writer only
/// takes the spare away, so the check cannot race with another spare appearing.
pub(super) fn retire(paths: &[PathBuf]) -> io::Result<()> {
    let Some((first, rest)) = paths.split_first() else {
        return Ok(());
    };
    let spare = first.with_file_name(SPARE);
    if !spare.exists() && std::fs::rename(first, &spare).is_ok() {
        return remove(rest);
    }
    remove(paths)
}

fn remove(paths: &[PathBuf]) -> io::Result<()> {
    for path in paths {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
