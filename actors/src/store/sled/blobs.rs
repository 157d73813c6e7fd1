//! sled's blob files: a log item larger than about a quarter of a segment is written to a file
//! of its own under `<store>/blobs/`, and sled 0.34 never fsyncs that file or the folder (its
//! `flush()` covers the data file only, and not even that; `../shared/PITFALLS.md`). A
//! checkpoint retires the journal that holds such a record once sled has it, so before that
//! every blob file and the folder entries naming them must be on stable storage: this module
//! syncs them. It reads and syncs files under the store folder; it never writes or removes any.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The blob files made durable so far (each is written once and never changed, so it needs one
/// sync), and whether the store folder has been synced since `blobs/` appeared.
#[derive(Debug)]
pub(super) struct Blobs {
    store: PathBuf,
    synced: Mutex<Synced>,
}

#[derive(Debug, Default)]
struct Synced {
    files: HashSet<OsString>,
    folder_entry: bool,
}

impl Blobs {
    pub(super) fn new(store: &Path) -> Self {
        Self {
            store: store.to_path_buf(),
            synced: Mutex::new(Synced::default()),
        }
    }

    /// Sync every blob file not synced yet, then the folder (so their names survive too).
    /// Call after sled's `flush()` and before anything relies on sled alone (the journal
    /// retired, a full commit answered). Returns how many files it synced.
    pub(super) fn sync(&self) -> io::Result<usize> {
        let dir = self.store.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut new = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.files.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_all()?,
                    // Removed by sled's GC meanwhile: nothing to keep.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                }
                new += 1;
            }
            present.insert(name);
        }
        // Forget removed blobs, so the set stays as small as the folder.
        synced.files = present;
        if new > 0 {
            File::open(&dir)?.sync_all()?;
        }
        if !synced.folder_entry {
            File::open(&self.store)?.sync_all()?;
            synced.folder_entry = true;
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_blob_is_synced_once_and_removed_ones_are_forgotten() {
        let store = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(store.path());
        assert_eq!(blobs.sync().unwrap(), 0, "no blobs folder yet");
        let dir = store.path().join("blobs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("1"), b"large").unwrap();
        std::fs::write(dir.join("2"), b"larger").unwrap();
        assert_eq!(blobs.sync().unwrap(), 2);
        assert_eq!(blobs.sync().unwrap(), 0, "already durable");
        std::fs::remove_file(dir.join("1")).unwrap();
        std::fs::write(dir.join("3"), b"new").unwrap();
        assert_eq!(blobs.sync().unwrap(), 1);
        let kept = blobs.synced.lock().unwrap().files.len();
        assert_eq!(kept, 2, "the removed blob is forgotten");
    }
}
