//! Bringing a store written by an earlier version, or just restored from a backup, to this
//! version's layout ([`SCHEMA_VERSION`]), once, at open: before anything else reads it.
//! Owns nothing at run time; what the layout is lives in `record.rs` and `status_index.rs`.

use super::staging::{Target, tag};
use super::{
    SCHEMA_KEY, SCHEMA_VERSION, SledStore, StoreError, decode_entry, index_key, record,
    status_index,
};
use crate::domain::Status;

impl SledStore {
    /// Bring a store written by an earlier version (or just restored) to this layout, once:
    /// history in its approval's value (`record.rs`), only pending approvals in the status
    /// index and the ended ones counted (`status_index.rs`). Each step can run again over its
    /// own partial result, so a crash midway is finished by the next start; the schema mark
    /// comes last, after sled's data file is synced.
    pub(super) fn migrate(&self) -> Result<(), StoreError> {
        let meta = self.inner.db.open_tree("meta")?;
        if meta.get(SCHEMA_KEY)?.as_deref() == Some(&[SCHEMA_VERSION]) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let entries = self.migrate_history()?;
        let approvals = self.rebuild_status_index()?;
        meta.insert(SCHEMA_KEY, &[SCHEMA_VERSION])?;
        self.inner.db.flush()?;
        // flush() is not an fsync on Linux (PITFALLS.md); the data file is.
        std::fs::File::open(self.inner.path.join("db"))
            .and_then(|f| f.sync_all())
            .map_err(sled::Error::from)?;
        tracing::info!(
            approvals,
            history_entries = entries,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store layout brought up to date"
        );
        Ok(())
    }

    /// Move history kept in the `events` tree, a key per entry (`id ++ seq`), into the
    /// approvals' values. Records already there stay as they are (`record.rs` reads both forms).
    fn migrate_history(&self) -> Result<u64, StoreError> {
        let (events, approvals) = (&self.inner.events, &self.inner.approvals);
        let mut moved = 0;
        let mut from: Vec<u8> = Vec::new();
        loop {
            // In chunks, each read before it is written.
            let chunk: Vec<(sled::IVec, sled::IVec)> = events
                .range(from.clone()..)
                .take(4096)
                .collect::<Result<_, _>>()?;
            let Some((last, _)) = chunk.last() else {
                return Ok(moved);
            };
            from = last.to_vec();
            from.push(0);
            for (key, value) in &chunk {
                if let Some(merged) =
                    record::apply(approvals, tag(Target::Events), key, Some(value))
                {
                    merged?;
                    events.remove(key)?;
                    moved += 1;
                }
            }
        }
    }

    /// Index the pending approvals and count the ended ones, from the records.
    fn rebuild_status_index(&self) -> Result<u64, StoreError> {
        let by_status = &self.inner.by_status;
        by_status.clear()?;
        let mut counts = status_index::Counts::default();
        let mut seen = 0u64;
        for entry in self.inner.approvals.iter() {
            let (key, value) = entry?;
            let Some(record) = record::record(&value) else {
                continue; // history only
            };
            let approval = decode_entry(&key, record)?;
            seen += 1;
            // Plain inserts, no `apply_batch`: sled 0.34 takes a lock over every database in
            // the process for a batch (a test process holds many), and the schema mark,
            // written last, is what makes the step done.
            if approval.status == Status::Pending {
                by_status.insert(index_key(approval.status, approval.id), &[])?;
            }
            counts.add(approval.status);
        }
        by_status.insert(status_index::ENDED_KEY, counts.encode())?;
        Ok(seen)
    }
}

#[cfg(test)]
mod tests;
