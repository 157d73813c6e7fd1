//! The approval trees as the registry sees them: [`ApprovalStore`] for sled. A change is staged
//! (record, status index, idempotency key, queue entries, grant, history) and applied by the next
//! group commit as part of one journal record; reads see staged records through the overlay.
//! Nothing here consumes a queue: that is the notifiers' side ([`super::Queues`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::record;
use super::staging::{Op, Target};
use super::{
    ApprovalStore, Change, Commit, CommitFault, Landing, QueueEntry, SledStore, StoreDiagnostics,
    StoreError, Written, created_ms, decode_entry, encode_grant, encode_record, id_of_index,
    idempotency_key, index_key, queue, status_byte,
};
use crate::domain::{Approval, ApprovalId, AuditEvent, Grant, Status};

impl SledStore {
    /// Stage a change: reads see it at once, the next group commit makes it durable.
    pub fn apply(&self, change: &Change<'_>) -> Result<Written, StoreError> {
        let approval = change.approval;
        let record = encode_record(approval)?;
        let id = approval.id.to_bytes();
        let op = |target, key: &[u8], value: Option<Vec<u8>>| Op {
            target,
            key: key.to_vec(),
            value,
        };
        let mut ops = vec![op(Target::Approvals, &id, Some(record.clone()))];
        if let Some(key) = change.claimed_idempotency_key() {
            ops.push(op(Target::Idempotency, &key, Some(id.to_vec())));
        }
        let mut queued = Vec::with_capacity(change.channels.len());
        let entry = change.event.map(|event| {
            Arc::new(QueueEntry {
                event,
                approval: approval.clone(),
                request_id: change.request_id.map(str::to_string),
                only: None,
            })
        });
        if let Some(event) = change.event {
            let entry = queue::encode_with(event, &record, change.request_id, None)?;
            for &channel in change.channels {
                let seq = self.next_seq()?;
                queued.push((channel, seq));
                ops.push(op(
                    Target::Queues,
                    &queue::key(channel, seq),
                    Some(entry.clone()),
                ));
            }
        }
        if let Some(grant) = change.grant {
            ops.push(op(
                Target::Grants,
                grant.id.as_bytes(),
                Some(encode_grant(grant)?),
            ));
        }
        let mut event_keys = Vec::with_capacity(change.events.len());
        for event in change.events {
            let op = self.event_op(approval.id, event)?;
            event_keys.push(op.key.clone());
            ops.push(op);
        }
        // Last, nothing fallible after it: held until the ops are staged, so that the counts
        // reach the journal in the order they were computed.
        let mut ended = self.inner.ended.lock();
        ended.moved(
            approval.id,
            change.previous.map(|old| old.status),
            Some(approval.status),
            &mut ops,
        );
        // Applied with everything else staged before the next commit, in one journal record.
        self.inner.staging.stage(ops);
        drop(ended);
        Ok(Written {
            queued,
            event_keys,
            entry,
            record,
        })
    }
}

impl SledStore {
    /// The newest approvals older than `before` that `keep` accepts, up to `limit`, walking the
    /// records (staged versions win over the tree's, as in [`ApprovalStore::get`]): the list of
    /// every approval, and of those in an ended status, which are not indexed
    /// (`status_index.rs`).
    fn walk_newest(
        &self,
        before: Option<ApprovalId>,
        limit: usize,
        keep: impl Fn(&Approval) -> bool,
    ) -> Result<Vec<Approval>, StoreError> {
        let mut page = Vec::with_capacity(limit.min(1024));
        let range = match before {
            Some(id) => self.inner.approvals.range(..id.to_bytes()),
            None => self.inner.approvals.range::<&[u8], _>(..),
        };
        for entry in range.rev() {
            if page.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let Some(record) = self.visible_record(&key, || Ok(Some(value)))? else {
                continue;
            };
            let approval = decode_entry(&key, &record)?;
            if keep(&approval) {
                page.push(approval);
            }
        }
        Ok(page)
    }

    /// The record of `key` as readers see it: its staged version while one waits for the next
    /// commit, else the record in the tree's value (`stored`; a value holding only history,
    /// entries that came after their approval was removed, has none).
    fn visible_record(
        &self,
        key: &[u8],
        stored: impl FnOnce() -> sled::Result<Option<sled::IVec>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(staged) = self.inner.staging.lookup(Target::Approvals, key) {
            return Ok(staged);
        }
        let stored = stored()?;
        Ok(stored
            .as_deref()
            .and_then(record::record)
            .map(<[u8]>::to_vec))
    }
}

impl ApprovalStore for SledStore {
    fn write(&self, change: &Change<'_>) -> Result<(Written, Landing), StoreError> {
        let written = self.apply(change)?;
        Ok((written, Landing::at(self.commit())))
    }

    fn revert(&self, change: &Change<'_>, written: &Written) -> Result<(), StoreError> {
        let id = change.approval.id.to_bytes();
        let op = |target, key: &[u8], value: Option<Vec<u8>>| Op {
            target,
            key: key.to_vec(),
            value,
        };
        let mut ops = Vec::new();
        for (channel, seq) in &written.queued {
            ops.push(op(Target::Queues, &queue::key(*channel, *seq), None));
        }
        if let Some(grant) = change.grant {
            ops.push(op(Target::Grants, grant.id.as_bytes(), None));
        }
        for key in &written.event_keys {
            ops.push(op(Target::Events, key, None));
        }
        // Something newer already replaced this version (or it never reached sled): leave the
        // record alone.
        let current = self.visible_record(&id, || self.inner.approvals.get(id))?;
        let old_record = change.previous.map(encode_record).transpose()?;
        // Nothing fallible from here until the ops are staged (see `apply`).
        let mut ended = self.inner.ended.lock();
        if current.as_deref() == Some(written.record.as_slice()) {
            ended.moved(
                change.approval.id,
                Some(change.approval.status),
                change.previous.map(|old| old.status),
                &mut ops,
            );
            match old_record {
                Some(old) => ops.push(op(Target::Approvals, &id, Some(old))),
                None => {
                    ops.push(op(Target::Approvals, &id, None));
                    if let Some(key) = change.claimed_idempotency_key() {
                        ops.push(op(Target::Idempotency, &key, None));
                    }
                }
            }
        }
        // Undone in sled at once, so lists and counts never show the refused change; and staged
        // too, so the next commit journals the undo: the failed batch may already be in the
        // journal (an earlier commit can have carried it), and a replay must not restore it.
        let applied = self.inner.writer.apply_now(&ops);
        self.inner.staging.stage_kept(ops);
        drop(ended);
        applied.map_err(StoreError::Io)
    }

    fn get(&self, id: ApprovalId) -> Result<Option<Approval>, StoreError> {
        let key = id.to_bytes();
        let record = self.visible_record(&key, || self.inner.approvals.get(key))?;
        record.map(|record| decode_entry(&key, &record)).transpose()
    }

    fn find_idempotent(&self, agent: &str, key: &str) -> Result<Option<ApprovalId>, StoreError> {
        let key = idempotency_key(agent, key);
        let found = match self.inner.staging.lookup(Target::Idempotency, &key) {
            Some(staged) => staged,
            None => self.inner.idempotency.get(&key)?.map(|v| v.to_vec()),
        };
        Ok(found
            .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok())
            .map(ApprovalId::from_bytes))
    }

    fn list(
        &self,
        status: Option<Status>,
        before: Option<ApprovalId>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let Some(status) = status else {
            return self.walk_newest(before, limit, |_| true);
        };
        if status.is_terminal() {
            return self.walk_newest(before, limit, |a| a.status == status);
        }
        let mut page = Vec::with_capacity(limit.min(1024));
        let start = [status_byte(status)];
        let end = match before {
            Some(id) => index_key(status, id).to_vec(),
            None => vec![status_byte(status) + 1],
        };
        for item in self.inner.by_status.range(start.to_vec()..end).rev() {
            let (key, _) = item?;
            let Some(id) = id_of_index(&key) else {
                continue;
            };
            // An index key whose record is gone (retention mid-pass) is skipped.
            if let Some(approval) = self.get(id)?
                && approval.status == status
            {
                page.push(approval);
                if page.len() >= limit {
                    break;
                }
            }
        }
        Ok(page)
    }

    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        // Ids are ULIDs: the first pending index key is the oldest pending approval.
        let first = self
            .inner
            .by_status
            .scan_prefix([status_byte(Status::Pending)])
            .keys()
            .next()
            .transpose()?;
        Ok(first.and_then(|key| id_of_index(&key)).map(created_ms))
    }

    fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError> {
        // Ended approvals are counted as they end (`status_index.rs`), pending ones indexed.
        let mut counts = self.inner.ended.lock().by_status();
        let pending = self
            .inner
            .by_status
            .scan_prefix([status_byte(Status::Pending)])
            .keys()
            .try_fold(0u64, |n, key| key.map(|_| n + 1))?;
        counts.insert(Status::Pending, pending);
        Ok(counts)
    }

    fn for_each_pending(&self, visit: &mut dyn FnMut(Approval)) -> Result<(), StoreError> {
        for key in self
            .inner
            .by_status
            .scan_prefix([status_byte(Status::Pending)])
            .keys()
        {
            if let Some(id) = id_of_index(&key?)
                && let Some(approval) = self.get(id)?
            {
                visit(approval);
            }
        }
        Ok(())
    }

    fn remove_ended_before(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<Status>, StoreError> {
        self.remove_ended(cutoff_ms, limit)
    }

    fn commit(&self) -> Commit {
        Commit(self.inner.commit.ticket())
    }

    fn probe(&self) -> Commit {
        // Writing and removing a key of the `events` tree, which holds nothing else since
        // history moved into the approvals' values (a history entry's key is 24 bytes, id ++
        // seq, `record.rs`): writes sled and the journal must take, that change nothing. (A removal alone
        // of an absent key is no write to sled, and passes even once sled refuses writes.)
        let op = |value| Op {
            target: Target::Events,
            key: b"probe".to_vec(),
            value,
        };
        self.inner
            .staging
            .stage(vec![op(Some(Vec::new())), op(None)]);
        self.commit()
    }

    fn diagnostics(&self) -> StoreDiagnostics {
        let stats = self.inner.commit.stats();
        StoreDiagnostics {
            path: self.inner.path.clone(),
            size_on_disk: self.inner.db.size_on_disk().unwrap_or(0),
            last_flush_ms: stats.last_flush_ms.load(Ordering::Relaxed),
            committing: self.committing(),
            commit_failures: stats.failures.load(Ordering::Relaxed),
            last_sync_us: stats.last_sync_us.load(Ordering::Relaxed),
            commits: stats.totals(),
            commit_running_ms: self.commit_running_ms(),
            dead_letters: self.inner.dead_count.load(Ordering::Relaxed),
            queue_entries_unspilled: self.inner.queues.unspilled(),
            replayed: self.replayed(),
            postgres: None,
            database: None,
        }
    }

    fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        let mut grants = Vec::new();
        for entry in self.inner.grants.iter() {
            let (key, value) = entry?;
            match serde_json::from_slice::<Grant>(&value) {
                Ok(grant) => grants.push(grant),
                // One unreadable grant must not stop start-up; without it the request escalates.
                Err(error) => {
                    tracing::error!(key = %queue::hex(&key), %error, "skipping an unreadable grant")
                }
            }
        }
        Ok(grants)
    }

    fn events(&self, id: ApprovalId) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = Vec::new();
        let id = id.to_bytes();
        let stored = self.inner.approvals.get(id)?.unwrap_or_default();
        for (seq, value) in record::entries(&stored) {
            let key = record::key_of(&id, seq);
            // One entry, or several observed together (`Staging::stage_observed`).
            let decoded = match value.first() {
                Some(b'[') => serde_json::from_slice::<Vec<AuditEvent>>(value),
                _ => serde_json::from_slice::<AuditEvent>(value).map(|event| vec![event]),
            };
            match decoded {
                Ok(entries) => events.extend(entries),
                Err(error) => {
                    tracing::error!(key = %queue::hex(&key), %error, "skipping an unreadable history entry")
                }
            }
        }
        Ok(events)
    }

    fn restore_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let ops = vec![Op {
            target: Target::Grants,
            key: grant.id.as_bytes().to_vec(),
            value: Some(encode_grant(grant)?),
        }];
        let applied = self.inner.writer.apply_now(&ops);
        self.inner.staging.stage_kept(ops);
        applied.map_err(StoreError::Io)
    }

    fn remove_grant(&self, id: &str) {
        self.inner.staging.stage(vec![Op {
            target: Target::Grants,
            key: id.as_bytes().to_vec(),
            value: None,
        }]);
    }

    fn committing(&self) -> bool {
        SledStore::committing(self)
    }

    fn commit_running_ms(&self) -> Option<u64> {
        SledStore::commit_running_ms(self)
    }

    fn inject_fault(&self, count: u32, fault: CommitFault) {
        self.faults().inject(count, fault);
    }

    fn backup(&self, path: &std::path::Path) -> Result<super::backup::BackupStats, StoreError> {
        SledStore::backup(self, path)
    }
}
