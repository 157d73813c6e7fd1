//! Changes written but not yet settled: their commit's fate is unknown, or known but not yet
//! applied on the actor (announced, or reverted). An answer that reveals such an approval must
//! wait for its changes to settle, and must not be given at all if one of them failed: the
//! state it read is about to be reverted. Waiting for *a* later commit is not enough, since a
//! failed batch is cut off the journal and a later commit succeeds without it.
//!
//! Kept across a restart of the registry: the commit futures of changes written before it still
//! settle them, so reads after the restart wait for them too.

use std::collections::HashMap;

use futures_util::future::{FutureExt, LocalBoxFuture};
use tokio::sync::oneshot;

use crate::domain::ApprovalId;

#[derive(Default)]
struct Changes {
    outstanding: u32,
    /// One of the outstanding changes' commits failed (since the count was last zero).
    failed: bool,
    /// Told `true` when every change settled durably, `false` when one failed.
    waiters: Vec<oneshot::Sender<bool>>,
}

#[derive(Default)]
pub(super) struct Unsettled {
    by_approval: HashMap<ApprovalId, Changes>,
}

impl Unsettled {
    /// No change is on its way: the store holds exactly what this registry wrote.
    pub(super) fn is_empty(&self) -> bool {
        self.by_approval.is_empty()
    }

    /// A change to `id` was written; its commit is under way.
    pub(super) fn written(&mut self, id: ApprovalId) {
        self.by_approval.entry(id).or_default().outstanding += 1;
    }

    /// A change to `id` settled: applied on the actor after a durable commit, or reverted.
    pub(super) fn settled(&mut self, id: ApprovalId, durable: bool) {
        let Some(changes) = self.by_approval.get_mut(&id) else {
            return;
        };
        changes.outstanding = changes.outstanding.saturating_sub(1);
        changes.failed |= !durable;
        if changes.outstanding == 0
            && let Some(changes) = self.by_approval.remove(&id)
        {
            for waiter in changes.waiters {
                let _ = waiter.send(!changes.failed);
            }
        }
    }

    /// Resolves `true` once every change to `ids` outstanding now has settled durably, `false`
    /// if one failed; `None` if nothing is outstanding (answer at once).
    pub(super) fn wait(
        &mut self,
        ids: impl IntoIterator<Item = ApprovalId>,
    ) -> Option<LocalBoxFuture<'static, bool>> {
        let receivers: Vec<oneshot::Receiver<bool>> = ids
            .into_iter()
            .filter_map(|id| {
                let changes = self.by_approval.get_mut(&id)?;
                let (tx, rx) = oneshot::channel();
                changes.waiters.push(tx);
                Some(rx)
            })
            .collect();
        if receivers.is_empty() {
            return None;
        }
        Some(
            async move {
                for receiver in receivers {
                    // A dropped sender (the registry gone) is no proof of durability.
                    if !receiver.await.unwrap_or(false) {
                        return false;
                    }
                }
                true
            }
            .boxed_local(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_resolves_when_every_outstanding_change_settled_and_says_if_one_failed() {
        let (a, b) = (ApprovalId::new(), ApprovalId::new());
        let mut unsettled = Unsettled::default();
        assert!(unsettled.wait([a]).is_none(), "nothing outstanding");
        unsettled.written(a);
        unsettled.written(a);
        unsettled.written(b);
        let mut both = unsettled.wait([a, b]).expect("outstanding");
        unsettled.settled(a, true);
        assert!((&mut both).now_or_never().is_none(), "one change of a left");
        unsettled.settled(a, false);
        unsettled.settled(b, true);
        assert_eq!(both.now_or_never(), Some(false), "a's second change failed");
        assert!(
            unsettled.by_approval.is_empty(),
            "settled entries are dropped"
        );
        unsettled.written(a);
        let fine = unsettled.wait([a]).expect("outstanding");
        unsettled.settled(a, true);
        assert_eq!(fine.now_or_never(), Some(true), "a new round starts clean");
    }
}
