//! Long-poll waiters: who is waiting for which approval, bounded by a configured limit.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::domain::{Approval, ApprovalId};

#[derive(Default)]
pub struct Waiters {
    by_approval: HashMap<ApprovalId, Vec<(u64, oneshot::Sender<Approval>)>>,
    count: usize,
    next: u64,
}

impl Waiters {
    pub fn len(&self) -> usize {
        self.count
    }

    /// Register a waiter; `None` when `limit` waiters are already registered.
    pub fn add(
        &mut self,
        id: ApprovalId,
        limit: usize,
    ) -> Option<(u64, oneshot::Receiver<Approval>)> {
        if self.count >= limit {
            self.reap_closed();
            if self.count >= limit {
                return None;
            }
        }
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.by_approval
            .entry(id)
            .or_default()
            .push((self.next, tx));
        self.count += 1;
        Some((self.next, rx))
    }

    /// Remove one waiter; true if it was still registered.
    pub fn remove(&mut self, id: ApprovalId, waiter: u64) -> bool {
        let Some(list) = self.by_approval.get_mut(&id) else {
            return false;
        };
        let before = list.len();
        list.retain(|(w, _)| *w != waiter);
        let removed = before != list.len();
        if list.is_empty() {
            self.by_approval.remove(&id);
        }
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Whether anyone still waits for `id` (a waiter whose long poll went away does not count).
    pub fn anyone_waits_for(&self, id: ApprovalId) -> bool {
        self.by_approval
            .get(&id)
            .is_some_and(|list| list.iter().any(|(_, tx)| !tx.is_closed()))
    }

    /// Hand the ended approval to everyone waiting for it; returns how many were woken.
    pub fn wake(&mut self, approval: &Approval) -> usize {
        let Some(list) = self.by_approval.remove(&approval.id) else {
            return 0;
        };
        self.count -= list.len();
        let woken = list.len();
        for (_, tx) in list {
            let _ = tx.send(approval.clone());
        }
        woken
    }

    /// Forget waiters whose long poll has already gone away.
    pub fn reap_closed(&mut self) {
        let mut removed = 0;
        self.by_approval.retain(|_, list| {
            let before = list.len();
            list.retain(|(_, tx)| !tx.is_closed());
            removed += before - list.len();
            !list.is_empty()
        });
        self.count -= removed;
    }

    pub fn clear(&mut self) {
        self.by_approval.clear();
        self.count = 0;
    }
}
