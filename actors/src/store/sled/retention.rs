//! Retention on sled: removing approvals that ended long enough ago, oldest first, through
//! the journal like any change. Reads the approvals tree; writes only by staging.

use super::staging::{Op, Target};
use super::{SledStore, StoreError, created_ms, decode_entry, idempotency_key, record};
use crate::domain::{ApprovalId, Status};

impl SledStore {
    /// Remove up to `limit` approvals that ended before `cutoff_ms` (ms since the epoch), with
    /// their history, idempotency key and message log; what each had ended as.
    pub(super) fn remove_ended(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<Status>, StoreError> {
        let mut removed = Vec::new();
        let mut ops = Vec::new();
        let mut ended = self.inner.ended.lock();
        let mut counts = *ended;
        // Approvals created before the cutoff but ended after it (or still pending) are
        // skipped, each pass again: bound the walk, not only the removals.
        let (mut scanned, mut count_ops) = (0, Vec::new());
        for entry in self.inner.approvals.iter() {
            let (key, value) = entry?;
            let id = match <[u8; 16]>::try_from(key.as_ref()) {
                Ok(id) => ApprovalId::from_bytes(id),
                Err(_) => continue,
            };
            // Ids sort by creation time, and nothing ends before it was created: the first
            // one created after the cutoff ends the pass.
            if created_ms(id) >= cutoff_ms || removed.len() >= limit || scanned >= limit * 10 {
                break;
            }
            let op = |target, key: &[u8]| Op {
                target,
                key: key.to_vec(),
                value: None,
            };
            let approval = match self.inner.staging.lookup(Target::Approvals, &key) {
                Some(None) => continue, // removed by an earlier pass, on its way to disk
                Some(Some(staged)) => decode_entry(&key, &staged)?,
                None => match record::record(&value) {
                    Some(record) => decode_entry(&key, record)?,
                    // History that came after its approval was removed: goes too.
                    None => {
                        ops.push(op(Target::Approvals, &key));
                        continue;
                    }
                },
            };
            if approval.status.is_terminal() {
                scanned += 1;
            }
            // Kept for `retention` after it *ended*: a long-pending approval that ended a
            // moment ago still has its Telegram edit to go out (which needs the message log)
            // and its history to be read.
            let ended_before = approval
                .decided_at
                .is_some_and(|at| at.timestamp_millis() < cutoff_ms);
            if !approval.status.is_terminal() || !ended_before {
                continue;
            }
            if let Some(idem) = &approval.idempotency_key {
                let idem = idempotency_key(&approval.requested_by, idem);
                ops.push(op(Target::Idempotency, &idem));
            }
            // The record and its history: one key (`record.rs`).
            ops.push(op(Target::Approvals, &key));
            counts.moved(id, Some(approval.status), None, &mut count_ops);
            // The message log is the gateway's, written straight to sled.
            self.inner.messages.remove(&key)?;
            removed.push(approval.status);
        }
        // Each count record holds every count: the last one says it all.
        ops.extend(count_ops.pop());
        // Through the journal like every other change (kept: a failed batch puts the
        // removals back), or a crash's replay would bring back what retention removed.
        self.inner.staging.stage_kept(ops);
        *ended = counts;
        Ok(removed)
    }
}
