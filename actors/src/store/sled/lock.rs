//! One process per store: an exclusive advisory lock on `approval-gate.lock` in the store's
//! folder, taken before anything else opens it and held for as long as the store is open.
//!
//! sled locks its own data file too, but only says so as an untyped I/O error ("could not
//! acquire lock on …: Os { code: 11, kind: WouldBlock, … }"). A second `serve` on the same
//! store (a unit started twice, a container and a shell sharing a volume) must say plainly what
//! is wrong and which folder, before it touches the journal or sled. Owns only that file.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::StoreError;

const LOCK_FILE: &str = "approval-gate.lock";

/// Lock the store folder at `path` (created if missing) for this process; the lock is released
/// when the returned file is dropped (or the process ends, however it ends).
pub(super) fn lock(path: &Path) -> Result<File, StoreError> {
    let open_error = |error| StoreError::Open {
        path: path.to_path_buf(),
        source: sled::Error::Io(error),
    };
    std::fs::create_dir_all(path).map_err(open_error)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join(LOCK_FILE))
        .map_err(open_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::Error(error)) => Err(open_error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let first = lock(dir.path()).expect("first lock");
        match lock(dir.path()) {
            Err(StoreError::InUse { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected InUse, got {other:?}", other = other.map(drop)),
        }
        drop(first);
        lock(dir.path()).expect("free again once the first is dropped");
    }
}
